//! The group-commit writer's PostgreSQL side: a batch is one transaction
//! on a pooled connection. It runs on the writer's own OS thread, which
//! drives the async client with the runtime's handle.
//!
//! A batch costs the same few round trips whatever its size: BEGIN; one
//! pipelined flight of the message numbers, every receipt (a statement
//! each) and every hello signature (one statement); every message and its
//! copies in one statement; the notifications; COMMIT (see [`bulk`]). Only
//! sends repeated by client id take one more flight (for the first
//! message's recipient states), and housekeeping one of its own.
//!
//! Unlike SQLite, an error inside a PostgreSQL transaction aborts it. So
//! when a batch of several operations fails for any reason but a lost
//! database, each is applied again in a transaction of its own: the one
//! that fails is refused alone, as on SQLite, and the others go through
//! (the failed batch stored nothing; message numbers it took are skipped).

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::time::Instant;

use deadpool_postgres::{GenericClient, Pool};
use tokio::runtime::Handle;

use super::notify::{self, ClusterEvent};
use super::{bulk, messages};
use crate::store::states::{self, CopyRow};
use crate::store::{Applied, BatchOp, BatchOutcome, InsertOutcome, NewMessage, StoreError};

pub struct PgBatch {
    pool: Pool,
    handle: Handle,
    /// This node's id: other nodes skip what it announces about its own
    /// work (it has answered that itself).
    node: String,
}

/// An operation's outcome, and for a first receipt the recipient's
/// public key (the receipt notification names it).
type Outcome = (BatchOutcome, Option<String>);

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
        let mut done: Vec<Outcome> = Vec::with_capacity(ops.len());
        // Housekeeping deletes what expired: what comes before it in the
        // batch is applied before it, what comes after, after it.
        let mut start = 0;
        while start < ops.len() {
            let end = ops[start..]
                .iter()
                .position(|op| matches!(op, BatchOp::Housekeeping { .. }))
                .map_or(ops.len(), |p| start + p);
            done.extend(apply_set(&tx, &mut ops[start..end]).await?);
            if let Some(BatchOp::Housekeeping { now_ms }) = ops.get(end) {
                housekeeping(&tx, *now_ms).await?;
                done.push((BatchOutcome::Done, None));
            }
            start = end + 1;
        }
        let (outcomes, pubkeys): (Vec<_>, Vec<_>) = done.into_iter().unzip();
        // Delivered to the other nodes at commit, and only if it commits.
        notify::send(&tx, &self.events(ops, &outcomes, &pubkeys)).await?;
        let t = Instant::now();
        tx.commit().await?;
        Ok(Applied {
            outcomes,
            commit_time: t.elapsed(),
        })
    }
}

/// Applies operations that hold no housekeeping with the statements of
/// [`bulk`], with the outcomes the one-by-one order would give.
///
/// Receipts and inserts of one batch are independent: a message's id is
/// numbered in the batch that stores it, so a receipt can only name a
/// message committed before.
async fn apply_set(
    tx: &impl GenericClient,
    ops: &mut [BatchOp<'_>],
) -> Result<Vec<Outcome>, StoreError> {
    let plan = Plan::of(ops);
    let (seqs, delivered, seen, new_hellos) = tokio::try_join!(
        bulk::next_seqs(tx, plan.inserts.len()),
        bulk::mark_delivered(tx, &plan.deliveries),
        bulk::mark_seen(tx, &plan.sightings),
        bulk::remember_hellos(tx, &plan.hellos),
    )?;
    if seqs.len() != plan.inserts.len() {
        return Err(StoreError::Corrupt("too few message numbers".into()));
    }
    for (&i, seq) in plan.inserts.iter().zip(seqs) {
        if let BatchOp::Insert(m) = &mut ops[i] {
            m.seq = seq;
            m.message_id = crate::ids::message_id(seq);
        }
    }
    let inserts = insert_all(tx, ops, &plan.inserts).await?;
    let delivered: HashMap<usize, bulk::FirstReceipt> =
        delivered.into_iter().map(|r| (r.index, r)).collect();
    let seen: HashMap<usize, bulk::FirstReceipt> = seen.into_iter().map(|r| (r.index, r)).collect();
    let new_hellos: HashSet<usize> = new_hellos.into_iter().collect();
    let mut inserts = inserts.into_iter();
    let mut out = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let first = match op {
            BatchOp::Insert(_) => {
                let outcome = match inserts.next() {
                    Some(Inserted::Stored) => InsertOutcome::Stored,
                    Some(Inserted::Repeat(r)) => r.answer_at(i, ops, &delivered, &seen),
                    None => return Err(StoreError::Corrupt("an insert was not answered".into())),
                };
                out.push((BatchOutcome::Inserted(Ok(outcome)), None));
                continue;
            }
            // A `Seen` that delivers its copy folds that into the seen
            // receipt: only a `Delivered` answers a delivery.
            BatchOp::Delivered { .. } => delivered.get(&i),
            BatchOp::Seen { .. } => seen.get(&i),
            BatchOp::RememberHello { .. } => {
                let new = new_hellos.contains(&i);
                out.push((BatchOutcome::Remembered(Ok(new)), None));
                continue;
            }
            BatchOp::Housekeeping { .. } => {
                out.push((BatchOutcome::Done, None));
                continue;
            }
        };
        out.push(match first {
            Some(r) => (
                BatchOutcome::Receipt(Some(r.route.clone())),
                Some(r.pubkey.clone()),
            ),
            None => (BatchOutcome::Receipt(None), None),
        });
    }
    Ok(out)
}

/// What the set-based statements get of a run of operations: the first
/// of each repeated receipt or signature (the others are repeats).
struct Plan<'a> {
    /// The indexes of the inserts.
    inserts: Vec<usize>,
    /// A `Seen` also delivers its copy.
    deliveries: Vec<bulk::Delivery<'a>>,
    sightings: Vec<bulk::Sighting<'a>>,
    hellos: Vec<(usize, &'a str, i64)>,
}

impl<'a> Plan<'a> {
    fn of(ops: &[BatchOp<'a>]) -> Self {
        let mut plan = Self {
            inserts: Vec::new(),
            deliveries: Vec::new(),
            sightings: Vec::new(),
            hellos: Vec::new(),
        };
        let mut delivered = HashSet::new();
        let mut seen = HashSet::new();
        let mut signatures = HashSet::new();
        for (i, op) in ops.iter().enumerate() {
            match *op {
                BatchOp::Insert(_) => plan.inserts.push(i),
                BatchOp::Delivered {
                    message_id,
                    member_id,
                    at,
                } => {
                    if delivered.insert((message_id, member_id)) {
                        plan.deliveries.push((i, message_id, member_id, at));
                    }
                }
                BatchOp::Seen {
                    message_id,
                    member_id,
                    session_id,
                    at,
                } => {
                    if delivered.insert((message_id, member_id)) {
                        plan.deliveries.push((i, message_id, member_id, at));
                    }
                    if seen.insert((message_id, member_id, session_id)) {
                        plan.sightings
                            .push((i, message_id, member_id, session_id, at));
                    }
                }
                BatchOp::RememberHello {
                    signature,
                    expires_at,
                } => {
                    if signatures.insert(signature) {
                        plan.hellos.push((i, signature, expires_at));
                    }
                }
                BatchOp::Housekeeping { .. } => {}
            }
        }
        plan
    }
}

/// An insert's result before it is answered.
enum Inserted {
    Stored,
    Repeat(Repeat),
}

/// The first message of a repeated send id, read after the batch's
/// receipts were recorded.
struct Repeat {
    message_id: String,
    copies: Vec<CopyRow>,
    /// (member id, session id) pairs that have seen it.
    seen: Vec<(String, String)>,
}

impl Repeat {
    /// The answer to the repeat at `index` of `ops`: its states as the
    /// one-by-one order would read them, without the first receipts that
    /// come after it in the batch (`delivered`, `seen`: by index).
    fn answer_at(
        mut self,
        index: usize,
        ops: &[BatchOp<'_>],
        delivered: &HashMap<usize, bulk::FirstReceipt>,
        seen: &HashMap<usize, bulk::FirstReceipt>,
    ) -> InsertOutcome {
        let later = |receipts: &HashMap<usize, bulk::FirstReceipt>| {
            receipts
                .keys()
                .filter(|&&j| j > index)
                .filter_map(|&j| receipt_of(&ops[j]))
                .filter(|r| r.0 == self.message_id)
                .map(|(_, member, session)| (member.to_owned(), session.to_owned()))
                .collect::<Vec<_>>()
        };
        for (member, _) in later(delivered) {
            for copy in self.copies.iter_mut().filter(|c| c.member_id == member) {
                copy.delivered = false;
            }
        }
        for pair in later(seen) {
            self.seen.retain(|s| *s != pair);
        }
        InsertOutcome::Duplicate {
            recipients: states::recipient_states(self.copies, &self.seen),
            message_id: self.message_id,
        }
    }
}

/// (message id, member id, session id or "") of a receipt operation.
fn receipt_of<'a>(op: &BatchOp<'a>) -> Option<(&'a str, &'a str, &'a str)> {
    match *op {
        BatchOp::Delivered {
            message_id,
            member_id,
            ..
        } => Some((message_id, member_id, "")),
        BatchOp::Seen {
            message_id,
            member_id,
            session_id,
            ..
        } => Some((message_id, member_id, session_id)),
        _ => None,
    }
}

/// Stores the numbered messages at `indexes` of `ops`: each either
/// stored, or a repeat of the first message with its send id (stored
/// before, by another node meanwhile, or earlier in this batch).
async fn insert_all(
    tx: &impl GenericClient,
    ops: &[BatchOp<'_>],
    indexes: &[usize],
) -> Result<Vec<Inserted>, StoreError> {
    let msgs: Vec<&NewMessage> = indexes
        .iter()
        .filter_map(|&i| match &ops[i] {
            BatchOp::Insert(m) => Some(&**m),
            _ => None,
        })
        .collect();
    // One row per send id in the statement; a later repeat in the batch
    // is answered with the first.
    let mut keys = HashSet::new();
    let firsts: Vec<&NewMessage> = msgs
        .iter()
        .copied()
        .filter(|m| keys.insert((&m.mesh_id, &m.sender.member_id, &m.client_id)))
        .collect();
    let stored: HashSet<i64> = bulk::insert_messages(tx, &firsts)
        .await?
        .into_iter()
        .zip(&firsts)
        .filter_map(|(stored, m)| stored.then_some(m.seq))
        .collect();
    // Repeats are rare: their reads go out together, in one flight.
    let repeats = msgs
        .iter()
        .filter(|m| !stored.contains(&m.seq))
        .map(|m| repeat_of(tx, m));
    let mut repeats = futures_util::future::try_join_all(repeats)
        .await?
        .into_iter();
    msgs.iter()
        .map(|m| {
            if stored.contains(&m.seq) {
                Ok(Inserted::Stored)
            } else {
                repeats
                    .next()
                    .map(Inserted::Repeat)
                    .ok_or_else(|| StoreError::Corrupt("a repeat was not answered".into()))
            }
        })
        .collect()
}

/// The first message stored with the send id of `m`.
async fn repeat_of(tx: &impl GenericClient, m: &NewMessage) -> Result<Repeat, StoreError> {
    let message_id = messages::find_by_client_id(tx, &m.mesh_id, &m.sender.member_id, &m.client_id)
        .await?
        .ok_or_else(|| StoreError::Corrupt("a conflicting message vanished".into()))?;
    let (copies, seen) = messages::copies_and_seen(tx, &message_id).await?;
    Ok(Repeat {
        message_id,
        copies,
        seen,
    })
}

async fn housekeeping(tx: &impl GenericClient, now_ms: i64) -> Result<(), StoreError> {
    let n = messages::purge_expired(tx, now_ms).await?;
    if n > 0 {
        tracing::info!(expired = n, "expired messages deleted");
    }
    tx.execute(
        "DELETE FROM hello_signatures WHERE expires_at < $1",
        &[&now_ms],
    )
    .await?;
    Ok(())
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
    /// messages with their recipients, and each first receipt (`pubkeys`: its recipient's key).
    fn events(
        &self,
        ops: &[BatchOp<'_>],
        outcomes: &[BatchOutcome],
        pubkeys: &[Option<String>],
    ) -> Vec<ClusterEvent> {
        let mut stored = Vec::new();
        let mut notes = Vec::new();
        for ((op, outcome), pubkey) in ops.iter().zip(outcomes).zip(pubkeys) {
            let (message_id, session, at, route, member) = match (op, outcome, pubkey) {
                (BatchOp::Insert(m), BatchOutcome::Inserted(Ok(InsertOutcome::Stored)), _) => {
                    stored.push(notify::Announced {
                        seq: m.seq,
                        mesh_id: &m.mesh_id,
                        member_ids: m.recipients.iter().map(|r| r.member_id.as_str()).collect(),
                    });
                    continue;
                }
                (
                    BatchOp::Delivered { message_id, at, .. },
                    BatchOutcome::Receipt(Some(route)),
                    Some(member),
                ) => (message_id, None, at, route, member),
                (
                    BatchOp::Seen {
                        message_id,
                        session_id,
                        at,
                        ..
                    },
                    BatchOutcome::Receipt(Some(route)),
                    Some(member),
                ) => (message_id, Some(*session_id), at, route, member),
                _ => continue,
            };
            notes.push(notify::ReceiptNote {
                mesh: route.mesh_id.clone(),
                sender: route.sender_member_id.clone(),
                message_id: (*message_id).to_owned(),
                member: member.clone(),
                session: session.map(str::to_owned),
                sessions: route.sessions.clone(),
                seen: session.is_some(),
                at: *at,
            });
        }
        let mut all = notify::messages(&self.node, &stored);
        all.extend(notify::receipts(&self.node, notes));
        all
    }
}
