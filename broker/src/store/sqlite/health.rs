//! What `/healthz` asks of the database: that a fresh connection can open
//! the file and read the tables serving needs. The long-lived read
//! connection is not used for this: its page cache can keep answering
//! after the file on disk was damaged.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::schema::CURRENT_VERSION;

/// `Ok` when the database at `path` opens and its tables read; otherwise
/// one sentence saying what failed.
pub fn check(path: &Path) -> Result<(), String> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("the database cannot be opened: {e}"))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| format!("the database cannot be read: {e}"))?;
    if version != CURRENT_VERSION {
        return Err(format!(
            "the database schema is version {version}, expected {CURRENT_VERSION}"
        ));
    }
    // One read of each table a hello and a send touch: the first pages of
    // their b-trees, not a full scan (the file may hold gigabytes).
    for table in [
        "meshes",
        "members",
        "messages",
        "recipients",
        "hello_signatures",
    ] {
        conn.query_row(
            &format!("SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT 1)"),
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(|e| format!("the {table} table cannot be read: {e}"))?;
    }
    Ok(())
}
