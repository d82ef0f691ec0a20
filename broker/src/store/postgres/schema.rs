//! The PostgreSQL schema and its migrations, versioned in the
//! `schema_version` table (one row).
//!
//! Migrating runs in one transaction holding an advisory lock, so that
//! nodes (and admin commands) starting at the same moment apply each step
//! once; a database at a newer version than this broker knows is refused
//! with the same error as SQLite's ([`StoreError::TooNew`]).
//!
//! Built for several nodes on one database: message numbers come from a
//! sequence (never from a process's counter), the hello replay check is a
//! primary key (`INSERT … ON CONFLICT DO NOTHING`), the send-id dedupe is
//! a unique constraint, and invite uses are consumed by one conditional
//! `UPDATE`.

use deadpool_postgres::Client;

use crate::store::StoreError;

const V1: &str = r#"
CREATE TABLE meshes (
    id           TEXT PRIMARY KEY,
    slug         TEXT NOT NULL UNIQUE,
    owner_pubkey TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE TABLE members (
    id           TEXT PRIMARY KEY,
    mesh_id      TEXT NOT NULL REFERENCES meshes(id),
    pubkey       TEXT NOT NULL,
    display_name TEXT NOT NULL,
    role         TEXT NOT NULL,
    invite_id    TEXT,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    UNIQUE (mesh_id, pubkey)
);
CREATE INDEX members_by_name ON members(mesh_id, display_name);
CREATE TABLE invites (
    id          TEXT PRIMARY KEY,
    mesh_id     TEXT NOT NULL REFERENCES meshes(id),
    role        TEXT NOT NULL,
    max_uses    BIGINT,
    uses        BIGINT NOT NULL DEFAULT 0,
    expires_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
-- Every revocation (CLI, leave) appends a row; running servers poll for
-- rows past the last one they handled and close those connections.
CREATE TABLE revocations (
    seq       BIGSERIAL PRIMARY KEY,
    mesh_id   TEXT NOT NULL,
    member_id TEXT NOT NULL,
    at        BIGINT NOT NULL
);
-- Accepted hello signatures, kept until their timestamp leaves the skew
-- window: the primary key makes the replay check one for every node.
CREATE TABLE hello_signatures (
    signature  TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX hello_signatures_expiry ON hello_signatures(expires_at);
-- Message numbers for the whole database, whichever node stores them.
CREATE SEQUENCE message_seq;
CREATE TABLE messages (
    seq              BIGINT PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    mesh_id          TEXT NOT NULL,
    sender_member_id TEXT NOT NULL,
    client_id        TEXT NOT NULL,
    sender_pubkey    TEXT NOT NULL,
    sender_session   TEXT NOT NULL,
    sender_name      TEXT NOT NULL,
    target           TEXT NOT NULL,
    priority         TEXT NOT NULL,
    sent_at          BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    UNIQUE (mesh_id, sender_member_id, client_id)
);
CREATE INDEX messages_expiry ON messages(expires_at);
-- One row per recipient member (in the order of the send): its envelope
-- until delivery, then only the delivery time.
CREATE TABLE recipients (
    msg_seq      BIGINT NOT NULL REFERENCES messages(seq) ON DELETE CASCADE,
    ord          INTEGER NOT NULL,
    member_id    TEXT NOT NULL,
    pubkey       TEXT NOT NULL,
    sessions     TEXT NOT NULL,
    nonce        TEXT,
    ciphertext   TEXT,
    delivered_at BIGINT,
    PRIMARY KEY (msg_seq, member_id)
);
CREATE INDEX recipients_pending ON recipients(member_id, msg_seq) WHERE delivered_at IS NULL;
CREATE TABLE seen (
    msg_seq    BIGINT NOT NULL REFERENCES messages(seq) ON DELETE CASCADE,
    member_id  TEXT NOT NULL,
    session_id TEXT NOT NULL,
    at         BIGINT NOT NULL,
    PRIMARY KEY (msg_seq, member_id, session_id)
);
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#;

/// The cluster's shared presence: one row per session, written by the
/// node carrying it (`live` false during its grace period).
const V2: &str = r#"
CREATE TABLE presence (
    mesh_id    TEXT NOT NULL,
    member_id  TEXT NOT NULL,
    session_id TEXT NOT NULL,
    node       TEXT NOT NULL,
    peer       TEXT NOT NULL,
    live       BOOLEAN NOT NULL,
    PRIMARY KEY (mesh_id, member_id, session_id)
);
CREATE INDEX presence_by_node ON presence(node);
"#;

/// Node liveness and live connections: each node's heartbeat (database time, ms), and which
/// surviving node claimed it once the heartbeat went stale. A presence
/// row with a `grace_until` belongs to a node that is gone: it leaves at
/// that time unless its session comes back (on any node) first.
const V3: &str = r#"
CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    heartbeat_at BIGINT NOT NULL,
    claimed_by   TEXT
);
ALTER TABLE presence ADD COLUMN grace_until BIGINT;
CREATE INDEX presence_orphans ON presence(grace_until) WHERE grace_until IS NOT NULL;
-- Live connections by node: the per-member connection limit is counted
-- over the cluster. A dead node's rows go when it is claimed.
CREATE TABLE connections (
    node      TEXT NOT NULL,
    conn_id   BIGINT NOT NULL,
    mesh_id   TEXT NOT NULL,
    member_id TEXT NOT NULL,
    PRIMARY KEY (node, conn_id)
);
CREATE INDEX connections_by_member ON connections(mesh_id, member_id);
"#;

/// When each member's last connection on any node closed (database time,
/// ms): `list_peers`' `lastSeen` is the same on every node.
const V4: &str = r#"
CREATE TABLE last_seen (
    mesh_id   TEXT NOT NULL,
    member_id TEXT NOT NULL,
    at        BIGINT NOT NULL,
    PRIMARY KEY (mesh_id, member_id)
);
"#;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4];

/// The schema version this broker writes.
pub const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

/// Any fixed number: the advisory lock every migrating process takes.
const MIGRATION_LOCK: i64 = 0x636c_6175_6465_6d73; // "claudems"

const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)";

/// The version a migrated database is at (a read only: the health check
/// calls it).
pub async fn version(client: &Client) -> Result<i64, StoreError> {
    let row = client
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .await?;
    Ok(row.get(0))
}

/// Brings the database to [`CURRENT_VERSION`].
pub async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    // The usual case, without a lock. (An empty database has no version
    // table yet: that error sends it down the migrating path.)
    if matches!(version(client).await, Ok(CURRENT_VERSION)) {
        return Ok(());
    }
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    // Under the lock: two processes creating it at once could collide.
    tx.batch_execute(VERSION_TABLE).await?;
    let found: i64 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .await?
        .get(0);
    if found > CURRENT_VERSION {
        return Err(StoreError::TooNew {
            found,
            known: CURRENT_VERSION,
        });
    }
    let start = usize::try_from(found).unwrap_or(0);
    for step in MIGRATIONS.iter().skip(start) {
        tx.batch_execute(step).await?;
    }
    tx.execute("DELETE FROM schema_version", &[]).await?;
    tx.execute(
        "INSERT INTO schema_version (version) VALUES ($1)",
        &[&CURRENT_VERSION],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
