//! The schema and its migrations, versioned by `PRAGMA user_version`.
//!
//! Each entry of [`MIGRATIONS`] takes the database from version `i` to
//! `i + 1`. Migrating runs under `BEGIN IMMEDIATE` and re-reads the version
//! inside the transaction, so a server and an admin command that start at
//! the same moment cannot both apply the same step.

use rusqlite::{Connection, TransactionBehavior};

use crate::store::StoreError;

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

/// Version 2: the write path's tables keyed by integers, with fewer
/// indexes. A message is a rowid row whose `seq` is also the counter part
/// of its id (`msg_<process prefix>_<seq hex>`), so a `client_ack` finds it
/// without a text index; the send-id dedupe key is a 64-bit hash of (mesh,
/// sender member, client id) in a small integer index (the full triple is
/// compared on lookup); there is no expiry index (expiry scans the rowid
/// range from the oldest message). Messages stored by version 1 keep their
/// ids, mapped to their new `seq` by `message_legacy_ids`.
const V2: &str = r#"
CREATE TABLE messages_v2 (
    seq              INTEGER PRIMARY KEY,
    id               TEXT NOT NULL,
    dedupe           INTEGER NOT NULL,
    mesh_id          TEXT NOT NULL,
    sender_member_id TEXT NOT NULL,
    client_id        TEXT NOT NULL,
    sender_pubkey    TEXT NOT NULL,
    sender_session   TEXT NOT NULL,
    sender_name      TEXT NOT NULL,
    target           TEXT NOT NULL,
    priority         TEXT NOT NULL,
    sent_at          INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL
);
INSERT INTO messages_v2 (id, dedupe, mesh_id, sender_member_id, client_id, sender_pubkey,
        sender_session, sender_name, target, priority, sent_at, expires_at)
    SELECT id, 0, mesh_id, sender_member_id, client_id, sender_pubkey,
        sender_session, sender_name, target, priority, sent_at, expires_at
    FROM messages ORDER BY sent_at, id;
CREATE TABLE message_legacy_ids (
    id  TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO message_legacy_ids (id, seq) SELECT id, seq FROM messages_v2;
CREATE TABLE recipients_v2 (
    msg_seq      INTEGER NOT NULL,
    member_id    TEXT NOT NULL,
    pubkey       TEXT NOT NULL,
    sessions     TEXT NOT NULL,
    nonce        TEXT,
    ciphertext   TEXT,
    delivered_at INTEGER
);
INSERT INTO recipients_v2 (msg_seq, member_id, pubkey, sessions, nonce, ciphertext, delivered_at)
    SELECT l.seq, r.member_id, r.pubkey, r.sessions, r.nonce, r.ciphertext, r.delivered_at
    FROM recipients r JOIN message_legacy_ids l ON l.id = r.message_id ORDER BY r.rowid;
CREATE TABLE seen_v2 (
    msg_seq    INTEGER NOT NULL,
    member_id  TEXT NOT NULL,
    session_id TEXT NOT NULL,
    at         INTEGER NOT NULL,
    PRIMARY KEY (msg_seq, member_id, session_id)
) WITHOUT ROWID;
INSERT INTO seen_v2 (msg_seq, member_id, session_id, at)
    SELECT l.seq, s.member_id, s.session_id, s.at
    FROM seen s JOIN message_legacy_ids l ON l.id = s.message_id;
DROP TABLE seen;
DROP TABLE recipients;
DROP TABLE messages;
ALTER TABLE messages_v2 RENAME TO messages;
ALTER TABLE recipients_v2 RENAME TO recipients;
ALTER TABLE seen_v2 RENAME TO seen;
CREATE INDEX messages_dedupe ON messages(dedupe);
CREATE UNIQUE INDEX recipients_copy ON recipients(msg_seq, member_id);
CREATE INDEX recipients_pending ON recipients(member_id) WHERE delivered_at IS NULL;
"#;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[V1, V2];

/// The schema version this broker writes.
pub const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

/// The schema version the database is at.
pub fn version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
}

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
    for (i, step) in MIGRATIONS.iter().enumerate().skip(start) {
        tx.execute_batch(step)?;
        if i == 1 {
            super::messages::fill_dedupe_keys(&tx)?;
        }
    }
    tx.pragma_update(None, "user_version", CURRENT_VERSION)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::{CURRENT_VERSION, MIGRATIONS, migrate};
    use crate::store::sqlite::messages;

    /// A version-1 database holding one undelivered message (with a seen
    /// receipt) and one delivered message, as a broker of that version
    /// left it.
    fn version_1_database() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            r#"
            INSERT INTO messages VALUES ('msg_old_a', 'mesh1', 'alice', 'c1', 'pkA', 'sA',
                'alice', 'bob', 'now', 1000, 9999999999999);
            INSERT INTO messages VALUES ('msg_old_b', 'mesh1', 'alice', 'c2', 'pkA', 'sA',
                'alice', 'bob', 'next', 2000, 9999999999999);
            INSERT INTO recipients VALUES ('msg_old_a', 'bob', 'pkB', '["s1"]', 'n1', 'ct1', NULL);
            INSERT INTO recipients VALUES ('msg_old_b', 'bob', 'pkB', '[]', NULL, NULL, 2500);
            INSERT INTO seen VALUES ('msg_old_b', 'bob', 's1', 2600);
            "#,
        )
        .unwrap();
        conn
    }

    #[test]
    fn version_1_messages_survive_the_move_to_integer_keys() {
        let mut conn = version_1_database();
        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, CURRENT_VERSION);

        // The undelivered copy is still pending, under its old id.
        let pending =
            messages::pending_for_member(&conn, "bob", 0, messages::max_seq(&conn).unwrap())
                .unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].message_id, "msg_old_a");
        assert_eq!(pending[0].ciphertext, "ct1");
        assert_eq!(pending[0].sessions, vec!["s1".to_owned()]);

        // A resend of an old client id is still recognised as a repeat.
        assert_eq!(
            messages::find_by_client_id(&conn, "mesh1", "alice", "c2")
                .unwrap()
                .as_deref(),
            Some("msg_old_b")
        );

        // An ack by the old id is found, counts once, and empties the queue.
        assert!(
            messages::mark_delivered(&conn, "msg_old_a", "bob", 3000)
                .unwrap()
                .is_some()
        );
        assert!(
            messages::mark_delivered(&conn, "msg_old_a", "bob", 3001)
                .unwrap()
                .is_none()
        );
        assert_eq!(messages::queue_depth(&conn).unwrap(), 0);
    }

    #[test]
    fn migrating_twice_changes_nothing() {
        let mut conn = version_1_database();
        migrate(&mut conn).unwrap();
        let before = messages::max_seq(&conn).unwrap();
        migrate(&mut conn).unwrap();
        assert_eq!(messages::max_seq(&conn).unwrap(), before);
        assert_eq!(before, 2);
    }
}
