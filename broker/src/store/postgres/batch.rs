//! The group-commit writer's PostgreSQL side: a batch is one transaction
//! on a pooled connection. It runs on the writer's own OS thread, which
//! drives the async client with the runtime's handle.
//!
//! Unlike SQLite, an error inside a PostgreSQL transaction aborts it. So
//! when a batch of several operations fails for any reason but a lost
//! database, each is applied again in a transaction of its own: the one
//! that fails is refused alone, as on SQLite, and the others go through
//! (the failed batch stored nothing; message numbers it took are skipped).

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use deadpool_postgres::{GenericClient, Pool};
use tokio::runtime::Handle;

use super::messages;
use super::notify::{self, ClusterEvent};
use crate::store::{Applied, BatchOp, BatchOutcome, InsertOutcome, StoreError};

pub struct PgBatch {
    pool: Pool,
    handle: Handle,
    /// This node's id: other nodes skip what it announces about its own
    /// work (it has answered that itself).
    node: String,
}

impl PgBatch {
    /// Must be called on the async runtime (it keeps its handle).
    pub fn new(pool: Pool, node: String) -> Self {
        Self {
            pool,
            handle: Handle::current(),
            node,
        }
    }

    pub fn apply(&mut self, ops: &mut [BatchOp<'_>]) -> Result<Applied, StoreError> {
        let handle = self.handle.clone();
        // `block_on` panics when the runtime has shut down under a batch
        // (the process is stopping): that batch is refused, not a crash.
        std::panic::catch_unwind(AssertUnwindSafe(|| handle.block_on(self.apply_all(ops))))
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "the async runtime stopped during a write".into(),
                ))
            })
    }

    /// The batch in one transaction, or else one by one (see the module doc).
    async fn apply_all(&self, ops: &mut [BatchOp<'_>]) -> Result<Applied, StoreError> {
        let e = match self.apply_async(ops).await {
            Ok(applied) => return Ok(applied),
            Err(e) if e.is_unavailable() || ops.len() < 2 => return Err(e),
            Err(e) => e,
        };
        tracing::warn!(error = %e, "a batch failed; applying its operations one by one");
        let t = Instant::now();
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops.iter_mut() {
            let outcome = match self.apply_async(std::slice::from_mut(op)).await {
                Ok(mut applied) => applied.outcomes.remove(0),
                Err(e) if e.is_unavailable() => return Err(e),
                Err(e) => refused(op, e),
            };
            outcomes.push(outcome);
        }
        Ok(Applied {
            outcomes,
            commit_time: t.elapsed(),
        })
    }

    async fn apply_async(&self, ops: &mut [BatchOp<'_>]) -> Result<Applied, StoreError> {
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let tx = client.transaction().await?;
        let inserts = ops
            .iter()
            .filter(|op| matches!(op, BatchOp::Insert(_)))
            .count();
        // One round trip numbers every message of the batch.
        let mut seqs: Vec<i64> = if inserts == 0 {
            Vec::new()
        } else {
            let n = i64::try_from(inserts).unwrap_or(i64::MAX);
            tx.query(
                "SELECT nextval('message_seq') FROM generate_series(1, $1::BIGINT)",
                &[&n],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect()
        };
        seqs.sort_unstable();
        let mut seqs = seqs.into_iter();
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops.iter_mut() {
            outcomes.push(apply_one(&tx, op, &mut seqs).await?);
        }
        // Delivered to the other nodes at commit, and only if it commits.
        notify::send(&tx, &self.events(&tx, ops, &outcomes).await?).await?;
        let t = Instant::now();
        tx.commit().await?;
        Ok(Applied {
            outcomes,
            commit_time: t.elapsed(),
        })
    }
}

/// The outcome of an operation that failed on its own.
fn refused(op: &BatchOp<'_>, e: StoreError) -> BatchOutcome {
    match op {
        BatchOp::Insert(_) => BatchOutcome::Inserted(Err(e)),
        BatchOp::RememberHello { .. } => BatchOutcome::Remembered(Err(e)),
        BatchOp::Delivered { .. } | BatchOp::Seen { .. } => {
            tracing::warn!(error = %e, "recording a receipt failed");
            BatchOutcome::Receipt(None)
        }
        BatchOp::Housekeeping { .. } => {
            tracing::warn!(error = %e, "housekeeping failed");
            BatchOutcome::Done
        }
    }
}

impl PgBatch {
    /// What this batch tells the other nodes: the numbers of the new
    /// messages, and each first receipt.
    async fn events(
        &self,
        tx: &impl GenericClient,
        ops: &[BatchOp<'_>],
        outcomes: &[BatchOutcome],
    ) -> Result<Vec<ClusterEvent>, StoreError> {
        let mut seqs = Vec::new();
        let mut receipts = Vec::new();
        for (op, outcome) in ops.iter().zip(outcomes) {
            match (op, outcome) {
                (BatchOp::Insert(m), BatchOutcome::Inserted(Ok(InsertOutcome::Stored))) => {
                    seqs.push(m.seq);
                }
                (
                    BatchOp::Delivered {
                        message_id,
                        member_id,
                        at,
                    },
                    BatchOutcome::Receipt(Some(route)),
                ) => receipts.push((*message_id, *member_id, None, *at, route)),
                (
                    BatchOp::Seen {
                        message_id,
                        member_id,
                        session_id,
                        at,
                    },
                    BatchOutcome::Receipt(Some(route)),
                ) => receipts.push((*message_id, *member_id, Some(*session_id), *at, route)),
                _ => {}
            }
        }
        let mut events = notify::messages(&self.node, &seqs);
        if receipts.is_empty() {
            return Ok(events);
        }
        // The receipt frame names the recipient by public key.
        let ids: Vec<&str> = receipts.iter().map(|r| r.1).collect();
        let st = tx
            .prepare_cached("SELECT id, pubkey FROM members WHERE id = ANY($1)")
            .await?;
        let keys: std::collections::HashMap<String, String> = tx
            .query(&st, &[&ids])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for (message_id, member_id, session, at, route) in receipts {
            let Some(member) = keys.get(member_id) else {
                continue;
            };
            events.extend(notify::receipts(ClusterEvent::Receipt {
                node: self.node.clone(),
                mesh: route.mesh_id.clone(),
                sender: route.sender_member_id.clone(),
                message_id: message_id.to_owned(),
                member: member.clone(),
                session: session.map(str::to_owned),
                sessions: route.sessions.clone(),
                seen: session.is_some(),
                at,
            }));
        }
        Ok(events)
    }
}

async fn apply_one(
    tx: &impl GenericClient,
    op: &mut BatchOp<'_>,
    seqs: &mut impl Iterator<Item = i64>,
) -> Result<BatchOutcome, StoreError> {
    Ok(match op {
        BatchOp::Insert(m) => {
            let seq = seqs
                .next()
                .ok_or_else(|| StoreError::Corrupt("too few message numbers".into()))?;
            m.seq = seq;
            m.message_id = crate::ids::message_id(seq);
            BatchOutcome::Inserted(Ok(messages::insert(tx, m).await?))
        }
        BatchOp::Delivered {
            message_id,
            member_id,
            at,
        } => BatchOutcome::Receipt(messages::mark_delivered(tx, message_id, member_id, *at).await?),
        BatchOp::Seen {
            message_id,
            member_id,
            session_id,
            at,
        } => {
            // A seen copy is also a delivered one (see the SQLite side).
            messages::mark_delivered(tx, message_id, member_id, *at).await?;
            BatchOutcome::Receipt(
                messages::mark_seen(tx, message_id, member_id, session_id, *at).await?,
            )
        }
        BatchOp::RememberHello {
            signature,
            expires_at,
        } => {
            let st = tx
                .prepare_cached(
                    "INSERT INTO hello_signatures (signature, expires_at) VALUES ($1, $2)
                     ON CONFLICT (signature) DO NOTHING",
                )
                .await?;
            BatchOutcome::Remembered(Ok(tx.execute(&st, &[signature, expires_at]).await? == 1))
        }
        BatchOp::Housekeeping { now_ms } => {
            let n = messages::purge_expired(tx, *now_ms).await?;
            if n > 0 {
                tracing::info!(expired = n, "expired messages deleted");
            }
            tx.execute(
                "DELETE FROM hello_signatures WHERE expires_at < $1",
                &[now_ms],
            )
            .await?;
            BatchOutcome::Done
        }
    })
}
