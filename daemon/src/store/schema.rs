//! The schema, versioned with `PRAGMA user_version` so that a newer daemon
//! can migrate an older file in place.

use rusqlite::Connection;

const VERSION: i64 = 4;

const V1: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row per live session. A session outlives a daemon restart for as
-- long as its Claude Code process (pid + start time) lives.
CREATE TABLE IF NOT EXISTS sessions (
    session_id     TEXT PRIMARY KEY,
    mesh_id        TEXT NOT NULL,
    claude_pid     INTEGER NOT NULL,
    claude_start   INTEGER NOT NULL,
    requested_name TEXT NOT NULL,
    display_name   TEXT NOT NULL,
    cwd            TEXT NOT NULL,
    groups_json    TEXT NOT NULL,
    summary        TEXT NOT NULL DEFAULT '',
    status         TEXT NOT NULL DEFAULT 'idle',
    created_at     INTEGER NOT NULL
);

-- Sends, from the moment a client is told `accepted` until retention
-- drops them. `body` (the plaintext) is kept only while the message may
-- still have to be sealed again; it is cleared on ack or failure.
CREATE TABLE IF NOT EXISTS outbox (
    id                TEXT PRIMARY KEY,
    mesh_id           TEXT NOT NULL,
    session_id        TEXT NOT NULL,
    to_target         TEXT NOT NULL,
    priority          TEXT NOT NULL,
    body              TEXT,
    extra_members     TEXT NOT NULL DEFAULT '[]',
    state             TEXT NOT NULL,
    broker_message_id TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_by_state ON outbox (mesh_id, state, created_at);
CREATE INDEX IF NOT EXISTS outbox_by_message ON outbox (broker_message_id);

-- Per recipient of a sent message, the furthest state heard of.
CREATE TABLE IF NOT EXISTS recipients (
    outbox_id  TEXT NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    member     TEXT NOT NULL,
    session_id TEXT NOT NULL DEFAULT '',
    state      TEXT NOT NULL,
    PRIMARY KEY (outbox_id, member, session_id)
);

-- Received messages, decrypted. (mesh_id, message_id) is also the
-- repeat filter for pushes.
CREATE TABLE IF NOT EXISTS inbox (
    mesh_id      TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    from_member  TEXT NOT NULL,
    from_session TEXT NOT NULL,
    from_name    TEXT NOT NULL,
    to_target    TEXT NOT NULL,
    priority     TEXT NOT NULL,
    body         TEXT NOT NULL,
    sent_at      INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    PRIMARY KEY (mesh_id, message_id)
);
CREATE INDEX IF NOT EXISTS inbox_by_age ON inbox (received_at);

-- Each message is handed to each recipient session once: one row per
-- (message, session); `seen_at` is set by whichever path showed it first.
CREATE TABLE IF NOT EXISTS deliveries (
    mesh_id      TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    session_id   TEXT NOT NULL,
    seen_at      INTEGER,
    receipt_sent INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (mesh_id, message_id, session_id),
    FOREIGN KEY (mesh_id, message_id) REFERENCES inbox (mesh_id, message_id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS deliveries_by_session ON deliveries (session_id, seen_at);

-- Messages for this member that name no session living here: the next
-- session to attach in that mesh takes them.
CREATE TABLE IF NOT EXISTS unassigned (
    mesh_id    TEXT NOT NULL,
    message_id TEXT NOT NULL,
    PRIMARY KEY (mesh_id, message_id),
    FOREIGN KEY (mesh_id, message_id) REFERENCES inbox (mesh_id, message_id) ON DELETE CASCADE
);
";

/// Version 2: a session that ends with messages not yet accepted by the
/// broker stays open until they are, so ending a session counts them.
const V2: &str = "
CREATE INDEX IF NOT EXISTS outbox_pending_by_session ON outbox (session_id) WHERE state = 'pending';
";

/// Version 3: a delivery taken from the "no session" pool goes back to it
/// when its session ends without having seen it.
const V3: &str = "
ALTER TABLE deliveries ADD COLUMN from_pool INTEGER NOT NULL DEFAULT 0;
";

/// Version 4: a channel push is not proof that the model saw a message:
/// `pushed_at` holds it back from the other paths for a short window while
/// the transcript may confirm it; unconfirmed, it is unread again.
const V4: &str = "
ALTER TABLE deliveries ADD COLUMN pushed_at INTEGER;
";

/// Creates or upgrades the schema. Refuses a file from a newer daemon
/// rather than guessing at it.
pub fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > VERSION {
        return Err(rusqlite::Error::InvalidParameterName(format!(
            "the database was written by a newer claudemeshd (schema {version}, this one knows {VERSION}); upgrade claudemeshd"
        )));
    }
    // Step `i` takes the schema from version `i` to `i + 1`.
    let steps = [V1, V2, V3, V4];
    let from = usize::try_from(version).unwrap_or(0);
    if from < steps.len() {
        let todo = steps[from..].concat();
        conn.execute_batch(&format!(
            "BEGIN; {todo} PRAGMA user_version = {VERSION}; COMMIT;"
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::{V1, V2, V3, VERSION, migrate};

    fn user_version(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_version_1_file_is_brought_up_to_date_keeping_its_rows() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&format!("{V1} PRAGMA user_version = 1;"))
            .unwrap();
        conn.execute_batch(
            "INSERT INTO inbox (mesh_id, message_id, from_member, from_session, from_name,
                 to_target, priority, body, sent_at, received_at)
             VALUES ('m', 'x', 'pk', 's', 'n', 'me', 'now', 'hi', 1, 1);
             INSERT INTO deliveries (mesh_id, message_id, session_id) VALUES ('m', 'x', 's1');",
        )
        .unwrap();
        migrate(&conn).unwrap();
        assert_eq!(user_version(&conn), VERSION);
        let from_pool: i64 = conn
            .query_row(
                "SELECT from_pool FROM deliveries WHERE message_id = 'x'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(from_pool, 0);
        let pushed_at: Option<i64> = conn
            .query_row(
                "SELECT pushed_at FROM deliveries WHERE message_id = 'x'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(pushed_at, None, "a migrated delivery is plain unread");
        // Running it again changes nothing.
        migrate(&conn).unwrap();
        assert_eq!(user_version(&conn), VERSION);
    }

    #[test]
    fn a_version_3_file_gains_the_push_column() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&format!("{V1} {V2} {V3} PRAGMA user_version = 3;"))
            .unwrap();
        conn.execute_batch(
            "INSERT INTO inbox (mesh_id, message_id, from_member, from_session, from_name,
                 to_target, priority, body, sent_at, received_at)
             VALUES ('m', 'x', 'pk', 's', 'n', 'me', 'now', 'hi', 1, 1);
             INSERT INTO deliveries (mesh_id, message_id, session_id, seen_at)
                 VALUES ('m', 'x', 's1', 5);",
        )
        .unwrap();
        migrate(&conn).unwrap();
        assert_eq!(user_version(&conn), VERSION);
        let (seen, pushed): (Option<i64>, Option<i64>) = conn
            .query_row(
                "SELECT seen_at, pushed_at FROM deliveries WHERE message_id = 'x'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((seen, pushed), (Some(5), None));
    }

    #[test]
    fn a_file_from_a_newer_daemon_is_refused() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(&format!("PRAGMA user_version = {};", VERSION + 1))
            .unwrap();
        let err = migrate(&conn).unwrap_err().to_string();
        assert!(err.contains("newer claudemeshd"), "{err}");
    }
}
