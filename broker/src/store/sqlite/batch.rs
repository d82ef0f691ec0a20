//! The group-commit writer's SQLite connection: a batch is one
//! `BEGIN IMMEDIATE` … `COMMIT`; message numbers are counted here, from
//! the highest one stored when the writer started (one writer per file).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rusqlite::Connection;

use super::{checkpoint, messages, open_connection, replay};
use crate::metrics::Metrics;
use crate::store::{Applied, BatchOp, BatchOutcome, StoreError};

/// Page cache of the writer's connection, in KiB: the pages it touches
/// stay in memory instead of being read back from the WAL.
const WRITER_CACHE_KIB: i64 = 32 * 1024;

pub struct SqliteBatch {
    conn: Connection,
    next_seq: i64,
    checkpoints: checkpoint::Checkpointer,
}

impl SqliteBatch {
    /// Opens the writer's connection and starts the checkpoint thread.
    pub fn open(db_path: &Path, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
        let conn = open_connection(db_path)?;
        // Checkpoints (which fsync) run on their own thread, never inside a
        // commit that connections are waiting for.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        let next_seq = messages::max_seq(&conn)? + 1;
        let checkpoints =
            checkpoint::spawn(open_connection(db_path)?, metrics).map_err(|source| {
                StoreError::Io {
                    path: db_path.to_owned(),
                    source,
                }
            })?;
        Ok(Self {
            conn,
            next_seq,
            checkpoints,
        })
    }

    pub fn apply(&mut self, ops: &mut [BatchOp<'_>]) -> Result<Applied, StoreError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| StoreError::Commit(e.to_string()))?;
        let outcomes = ops.iter_mut().map(|op| self.apply_one(op)).collect();
        let t = Instant::now();
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(StoreError::Commit(e.to_string()));
        }
        self.checkpoints.kick();
        Ok(Applied {
            outcomes,
            commit_time: t.elapsed(),
        })
    }

    fn apply_one(&mut self, op: &mut BatchOp<'_>) -> BatchOutcome {
        let conn = &self.conn;
        match op {
            BatchOp::Insert(m) => {
                // Numbers of a failed batch are skipped, never reused.
                let seq = self.next_seq;
                self.next_seq += 1;
                m.seq = seq;
                m.message_id = crate::ids::message_id(seq);
                BatchOutcome::Inserted(insert_whole(conn, seq, m))
            }
            BatchOp::Delivered {
                message_id,
                member_id,
                at,
            } => match messages::mark_delivered(conn, message_id, member_id, *at) {
                Ok(route) => BatchOutcome::Receipt(route),
                Err(e) => {
                    tracing::warn!(error = %e, "recording a delivery failed");
                    BatchOutcome::Receipt(None)
                }
            },
            BatchOp::Seen {
                message_id,
                member_id,
                session_id,
                at,
            } => {
                // A seen copy is also a delivered one; its delivered receipt, if
                // it was still missing, is folded into the seen receipt.
                let _ = messages::mark_delivered(conn, message_id, member_id, *at);
                match messages::mark_seen(conn, message_id, member_id, session_id, *at) {
                    Ok(route) => BatchOutcome::Receipt(route),
                    Err(e) => {
                        tracing::warn!(error = %e, "recording a seen receipt failed");
                        BatchOutcome::Receipt(None)
                    }
                }
            }
            BatchOp::RememberHello {
                signature,
                expires_at,
            } => BatchOutcome::Remembered(replay::remember(conn, signature, *expires_at)),
            BatchOp::Housekeeping { now_ms } => {
                match messages::purge_expired(conn, *now_ms) {
                    Ok(n) if n > 0 => tracing::info!(expired = n, "expired messages deleted"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "deleting expired messages failed"),
                }
                if let Err(e) = replay::prune(conn, *now_ms) {
                    tracing::warn!(error = %e, "pruning hello signatures failed");
                }
                BatchOutcome::Done
            }
        }
    }

    /// Stops the checkpoint thread and empties the WAL into the file.
    pub fn finish(&mut self) {
        self.checkpoints.stop();
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::warn!(error = %e, "final WAL checkpoint failed");
        }
    }
}

/// Stores a message with all its copies or nothing of it: a copy that
/// fails leaves no message without its other copies behind.
fn insert_whole(
    conn: &Connection,
    seq: i64,
    m: &crate::store::NewMessage,
) -> Result<crate::store::InsertOutcome, StoreError> {
    conn.execute_batch("SAVEPOINT send")?;
    let outcome = messages::insert(conn, seq, m);
    if outcome.is_err() {
        conn.execute_batch("ROLLBACK TO send")?;
    }
    conn.execute_batch("RELEASE send")?;
    outcome
}

impl Drop for SqliteBatch {
    fn drop(&mut self) {
        self.checkpoints.stop();
    }
}
