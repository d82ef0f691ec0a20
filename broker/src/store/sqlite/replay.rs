//! Accepted hello signatures (check 5, `replayed`).

use rusqlite::{Connection, params};

use crate::store::StoreError;

/// Records `signature` until `expires_at`; false when it was already there,
/// which means the hello is a replay.
pub fn remember(conn: &Connection, signature: &str, expires_at: i64) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "INSERT INTO hello_signatures (signature, expires_at) VALUES (?1, ?2)
             ON CONFLICT (signature) DO NOTHING",
        )?
        .execute(params![signature, expires_at])?;
    Ok(n == 1)
}

/// Forgets signatures whose hello can no longer pass the skew check.
pub fn prune(conn: &Connection, now_ms: i64) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached("DELETE FROM hello_signatures WHERE expires_at < ?1")?
        .execute([now_ms])?)
}
