//! What the group-commit writer hands a backend: a batch of typed
//! operations to apply in one transaction, and the outcome of each.
//!
//! The writer (`crate::writer`) keeps the batching and the answering; a
//! backend only applies. Its `apply` returns `Err` when the transaction as
//! a whole did not commit (nothing of the batch is stored), and otherwise
//! one outcome per operation, in order.

use std::time::Duration;

use super::{InsertOutcome, NewMessage, ReceiptRoute, StoreError};

/// One operation of a batch.
pub enum BatchOp<'a> {
    /// Store a message. The backend numbers it: it sets `seq` and the
    /// `message_id` that ends with it.
    Insert(&'a mut NewMessage),
    /// A recipient's `client_ack`.
    Delivered {
        message_id: &'a str,
        member_id: &'a str,
        at: i64,
    },
    /// A recipient session's `seen` receipt (which also counts as
    /// delivered, if that was still missing).
    Seen {
        message_id: &'a str,
        member_id: &'a str,
        session_id: &'a str,
        at: i64,
    },
    /// Record an accepted hello signature.
    RememberHello { signature: &'a str, expires_at: i64 },
    /// Delete expired messages and hello signatures.
    Housekeeping { now_ms: i64 },
}

/// What one operation did.
#[derive(Debug)]
pub enum BatchOutcome {
    Inserted(Result<InsertOutcome, StoreError>),
    /// `Some` the first time a copy reaches this state, with where the
    /// receipt goes; `None` for a repeat or an unknown message.
    Receipt(Option<ReceiptRoute>),
    /// False when the signature was already there (a replay).
    Remembered(Result<bool, StoreError>),
    Done,
}

/// A batch that committed: its outcomes and how long the commit took.
pub struct Applied {
    pub outcomes: Vec<BatchOutcome>,
    pub commit_time: Duration,
}

/// The writer's connection to one backend.
pub enum BatchWriter {
    Sqlite(super::sqlite::SqliteBatch),
    Postgres(super::postgres::PgBatch),
}

impl BatchWriter {
    /// Applies `ops` in one transaction (see the module doc).
    pub fn apply(&mut self, ops: &mut [BatchOp<'_>]) -> Result<Applied, StoreError> {
        match self {
            Self::Sqlite(b) => b.apply(ops),
            Self::Postgres(b) => b.apply(ops),
        }
    }

    /// Called once after the last batch (SQLite checkpoints its WAL).
    pub fn finish(&mut self) {
        match self {
            Self::Sqlite(b) => b.finish(),
            Self::Postgres(_) => {}
        }
    }
}
