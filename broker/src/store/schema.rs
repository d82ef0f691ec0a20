//! The schema and its migrations, versioned by `PRAGMA user_version`.
//!
//! Each entry of [`MIGRATIONS`] takes the database from version `i` to
//! `i + 1`. Migrating runs under `BEGIN IMMEDIATE` and re-reads the version
//! inside the transaction, so a server and an admin command that start at
//! the same moment cannot both apply the same step.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

const V1: &str = r#"
CREATE TABLE meshes (
    id           TEXT PRIMARY KEY,
    slug         TEXT NOT NULL UNIQUE,
    owner_pubkey TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE TABLE members (
    id           TEXT PRIMARY KEY,
    mesh_id      TEXT NOT NULL REFERENCES meshes(id),
    pubkey       TEXT NOT NULL,
    display_name TEXT NOT NULL,
    role         TEXT NOT NULL,
    invite_id    TEXT,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    UNIQUE (mesh_id, pubkey)
);
CREATE TABLE invites (
    id          TEXT PRIMARY KEY,
    mesh_id     TEXT NOT NULL REFERENCES meshes(id),
    role        TEXT NOT NULL,
    max_uses    INTEGER,
    uses        INTEGER NOT NULL DEFAULT 0,
    expires_at  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
-- Every revocation (CLI, leave) appends a row; the running server polls
-- for rows past the last one it handled and closes those connections.
CREATE TABLE revocations (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    mesh_id   TEXT NOT NULL,
    member_id TEXT NOT NULL,
    at        INTEGER NOT NULL
);
-- Accepted hello signatures, kept until their timestamp leaves the skew
-- window, so that a replay is refused even after a restart.
CREATE TABLE hello_signatures (
    signature  TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE messages (
    id               TEXT PRIMARY KEY,
    mesh_id          TEXT NOT NULL,
    sender_member_id TEXT NOT NULL,
    client_id        TEXT NOT NULL,
    sender_pubkey    TEXT NOT NULL,
    sender_session   TEXT NOT NULL,
    sender_name      TEXT NOT NULL,
    target           TEXT NOT NULL,
    priority         TEXT NOT NULL,
    sent_at          INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    UNIQUE (mesh_id, sender_member_id, client_id)
) WITHOUT ROWID;
CREATE INDEX messages_expiry ON messages(expires_at);
-- One row per recipient member: its envelope until delivery, then only
-- the delivery time (the ciphertext is dropped once it has arrived).
CREATE TABLE recipients (
    message_id   TEXT NOT NULL,
    member_id    TEXT NOT NULL,
    pubkey       TEXT NOT NULL,
    sessions     TEXT NOT NULL,
    nonce        TEXT,
    ciphertext   TEXT,
    delivered_at INTEGER,
    PRIMARY KEY (message_id, member_id)
);
CREATE INDEX recipients_pending ON recipients(member_id) WHERE delivered_at IS NULL;
CREATE TABLE seen (
    message_id TEXT NOT NULL,
    member_id  TEXT NOT NULL,
    session_id TEXT NOT NULL,
    at         INTEGER NOT NULL,
    PRIMARY KEY (message_id, member_id, session_id)
) WITHOUT ROWID;
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1];

/// The schema version this broker writes.
pub const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`CURRENT_VERSION`].
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version == CURRENT_VERSION {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > CURRENT_VERSION {
        return Err(StoreError::TooNew {
            found: version,
            known: CURRENT_VERSION,
        });
    }
    let start = usize::try_from(version).unwrap_or(0);
    for step in &MIGRATIONS[start..] {
        tx.execute_batch(step)?;
    }
    tx.pragma_update(None, "user_version", CURRENT_VERSION)?;
    tx.commit()?;
    Ok(())
}
