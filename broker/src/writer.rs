//! The group-commit writer: one OS thread owns the database's hot write
//! path.
//!
//! Connections hand it [`WriteOp`]s through a bounded channel (a full
//! channel makes senders wait: backpressure instead of unbounded memory).
//! The thread takes everything waiting, up to `max_batch`, applies it in one
//! transaction and commits once; only then does it answer: a `send`'s `ack`
//! and its pushes, receipts, a hello's replay verdict. So an `ack` always
//! means "in the database", and one commit pays for a whole batch of
//! messages. The SQL is the backend's ([`crate::store::BatchWriter`]):
//! this module only batches and answers.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use claudemesh_protocol::wire::DeliveryState;

use crate::delivery::{self, ReceiptJob, SendJob};
use crate::metrics::Metrics;
use crate::store::{BatchOp, BatchOutcome, BatchWriter, ReceiptRoute, Store, StoreError};

/// One unit of work for the writer.
pub enum WriteOp {
    /// Store a message, then ack and push it.
    Send(SendJob),
    /// A recipient's `client_ack`.
    Delivered(ReceiptJob),
    /// A recipient session's `seen` receipt.
    Seen(ReceiptJob),
    /// Record an accepted hello signature; answers false for a replay.
    RememberHello {
        signature: String,
        expires_at: i64,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// Delete expired messages and hello signatures.
    Housekeeping { now_ms: i64 },
    /// Commit what came before, let the backend finish (SQLite checkpoints
    /// its WAL) and stop.
    Shutdown(oneshot::Sender<()>),
}

enum Done {
    Send(SendJob, Result<crate::store::InsertOutcome, StoreError>),
    Receipt(ReceiptJob, DeliveryState, Option<ReceiptRoute>),
    Hello(
        oneshot::Sender<Result<bool, StoreError>>,
        Result<bool, StoreError>,
    ),
    Barrier(oneshot::Sender<()>),
    Nothing,
}

/// The handle the server keeps on the writer thread.
pub struct Writer {
    tx: mpsc::Sender<WriteOp>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The highest message number whose pushes have been planned (see
    /// [`Writer::dispatched`]).
    dispatched: Arc<AtomicI64>,
}

impl Writer {
    /// Opens the backend's writer connection and starts the thread.
    pub async fn spawn(
        store: &Store,
        metrics: Arc<Metrics>,
        max_batch: usize,
    ) -> Result<Self, StoreError> {
        let next_seq = store.max_message_seq().await? + 1;
        let backend = store.batch_writer(metrics.clone())?;
        let (tx, rx) = mpsc::channel(max_batch.max(1) * 8);
        // Answers (acks, pushes, receipts) are sent by a task on the async
        // runtime, so the writer thread only writes: batch n+1 commits
        // while batch n is being fanned out.
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Vec<Done>>();
        let dispatch_metrics = metrics.clone();
        // Messages stored before this start are all "planned": a
        // connection's redelivery read covers them.
        let dispatched = Arc::new(AtomicI64::new(next_seq - 1));
        let watermark = dispatched.clone();
        tokio::runtime::Handle::current().spawn(async move {
            while let Some(batch) = done_rx.recv().await {
                for d in batch {
                    complete(d, &dispatch_metrics, &watermark);
                }
            }
        });
        let fallback_watermark = dispatched.clone();
        // Without its writer the broker can only refuse: a panic there
        // ends the process so that it is restarted.
        let thread =
            claudemesh_protocol::critical_thread::spawn("claudemesh-db-writer", move || {
                run(
                    backend,
                    rx,
                    done_tx,
                    metrics,
                    max_batch.max(1),
                    &fallback_watermark,
                )
            })
            .map_err(|source| StoreError::Io {
                path: "claudemesh-db-writer thread".into(),
                source,
            })?;
        Ok(Self {
            tx,
            thread: Mutex::new(Some(thread)),
            dispatched,
        })
    }

    /// The dispatch watermark: every message numbered up to it has had its
    /// pushes planned, in number order, each under its mesh's lock. Read
    /// under a mesh lock, it splits that mesh's messages into those planned
    /// before (at or below: a new connection must read them from the
    /// store) and those planned after (pushed to it live).
    pub fn dispatched(&self) -> i64 {
        self.dispatched.load(Ordering::SeqCst)
    }

    /// False once the writer thread has ended (shut down, or died).
    pub fn is_alive(&self) -> bool {
        let finished = self
            .thread
            .lock()
            .map(|t| t.as_ref().is_none_or(JoinHandle::is_finished))
            .unwrap_or(true);
        !finished && !self.tx.is_closed()
    }

    /// Queues an operation, waiting for room. False when the writer has
    /// stopped.
    pub async fn submit(&self, op: WriteOp) -> bool {
        self.tx.send(op).await.is_ok()
    }

    /// Records a hello signature; `Ok(false)` means it was already there.
    pub async fn remember_hello(
        &self,
        signature: String,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let (reply, rx) = oneshot::channel();
        let op = WriteOp::RememberHello {
            signature,
            expires_at,
            reply,
        };
        if !self.submit(op).await {
            return Err(StoreError::WriterGone);
        }
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Commits what is queued, lets the backend finish and stops the thread.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.submit(WriteOp::Shutdown(tx)).await {
            let _ = rx.await;
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn run(
    mut backend: BatchWriter,
    mut rx: mpsc::Receiver<WriteOp>,
    done_tx: mpsc::UnboundedSender<Vec<Done>>,
    metrics: Arc<Metrics>,
    max_batch: usize,
    watermark: &AtomicI64,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let (done, stop) = apply_batch(&mut backend, &mut batch, &metrics);
        if let Err(mpsc::error::SendError(done)) = done_tx.send(done) {
            // No runtime to dispatch on (it is shutting down): answer here.
            for d in done {
                complete(d, &metrics, watermark);
            }
        }
        if let Some(stop) = stop {
            backend.finish();
            // After the completions queued above, so that every answer to an
            // earlier write is out before shutdown goes on.
            if done_tx.send(vec![Done::Barrier(stop)]).is_err() {
                tracing::debug!("no dispatcher for the shutdown reply");
            }
            tracing::debug!("database writer stopped");
            return;
        }
    }
}

/// Applies and commits one batch. Returns its completions, and the
/// shutdown reply when the batch held a shutdown.
fn apply_batch(
    backend: &mut BatchWriter,
    batch: &mut Vec<WriteOp>,
    metrics: &Metrics,
) -> (Vec<Done>, Option<oneshot::Sender<()>>) {
    let mut stop = None;
    let mut jobs = Vec::with_capacity(batch.len());
    for op in batch.drain(..) {
        match op {
            WriteOp::Shutdown(reply) => stop = Some(reply),
            other => jobs.push(other),
        }
    }
    let n = jobs.len() as u64;
    if jobs.is_empty() {
        return (Vec::new(), stop);
    }
    let t0 = Instant::now();
    let applied = {
        let mut ops: Vec<BatchOp<'_>> = jobs.iter_mut().map(as_batch_op).collect();
        backend.apply(&mut ops)
    };
    match applied {
        Ok(applied) => {
            Metrics::add_time(
                &metrics.db_apply_seconds,
                t0.elapsed().saturating_sub(applied.commit_time),
            );
            Metrics::add_time(&metrics.db_commit_seconds, applied.commit_time);
            metrics.db_round_trip(crate::metrics::DbOp::Commit, applied.commit_time);
            Metrics::inc(&metrics.db_commits);
            Metrics::add(&metrics.db_ops, n);
            let done = jobs
                .into_iter()
                .zip(applied.outcomes)
                .map(|(op, outcome)| answer(op, outcome))
                .collect();
            (done, stop)
        }
        Err(e) => {
            tracing::error!(error = %e, "group commit failed; the batch is refused");
            let why = e.to_string();
            let unavailable = e.is_unavailable();
            let done = jobs
                .into_iter()
                .map(|op| {
                    let e = if unavailable {
                        StoreError::Unavailable(why.clone())
                    } else {
                        StoreError::Commit(why.clone())
                    };
                    fail(op, e)
                })
                .collect();
            (done, stop)
        }
    }
}

/// The backend's view of a queued operation.
fn as_batch_op(op: &mut WriteOp) -> BatchOp<'_> {
    match op {
        WriteOp::Send(job) => BatchOp::Insert(&mut job.message),
        WriteOp::Delivered(job) => BatchOp::Delivered {
            message_id: &job.message_id,
            member_id: &job.member_id,
            at: job.at,
        },
        WriteOp::Seen(job) => BatchOp::Seen {
            message_id: &job.message_id,
            member_id: &job.member_id,
            session_id: job.session_id.as_deref().unwrap_or_default(),
            at: job.at,
        },
        WriteOp::RememberHello {
            signature,
            expires_at,
            ..
        } => BatchOp::RememberHello {
            signature,
            expires_at: *expires_at,
        },
        WriteOp::Housekeeping { now_ms } => BatchOp::Housekeeping { now_ms: *now_ms },
        // Taken out of the batch before it is applied.
        WriteOp::Shutdown(_) => BatchOp::Housekeeping { now_ms: i64::MIN },
    }
}

/// Pairs a committed operation with its outcome.
fn answer(op: WriteOp, outcome: BatchOutcome) -> Done {
    match (op, outcome) {
        (WriteOp::Send(job), BatchOutcome::Inserted(result)) => Done::Send(job, result),
        (WriteOp::Delivered(job), BatchOutcome::Receipt(route)) => {
            Done::Receipt(job, DeliveryState::Delivered, route)
        }
        (WriteOp::Seen(job), BatchOutcome::Receipt(route)) => {
            Done::Receipt(job, DeliveryState::Seen, route)
        }
        (WriteOp::RememberHello { reply, .. }, BatchOutcome::Remembered(result)) => {
            Done::Hello(reply, result)
        }
        (WriteOp::Shutdown(reply), _) => Done::Barrier(reply),
        (op, _) => fail(
            op,
            StoreError::Corrupt("the store answered another operation".into()),
        ),
    }
}

fn fail(op: WriteOp, e: StoreError) -> Done {
    match op {
        WriteOp::Send(job) => Done::Send(job, Err(e)),
        WriteOp::RememberHello { reply, .. } => Done::Hello(reply, Err(e)),
        WriteOp::Shutdown(reply) => Done::Barrier(reply),
        _ => Done::Nothing,
    }
}

fn complete(d: Done, metrics: &Metrics, watermark: &AtomicI64) {
    match d {
        Done::Send(job, outcome) => delivery::send_committed(job, outcome, metrics, watermark),
        Done::Receipt(job, state, Some(route)) => {
            if state == DeliveryState::Delivered {
                Metrics::inc(&metrics.messages_delivered);
            }
            delivery::relay_receipt(&job, state, &route);
        }
        Done::Receipt(_, _, None) | Done::Nothing => {}
        Done::Hello(reply, result) => {
            let _ = reply.send(result);
        }
        Done::Barrier(reply) => {
            let _ = reply.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::Writer;
    use crate::metrics::Metrics;
    use crate::store::{Store, StoreLocation};

    #[tokio::test]
    async fn the_writer_is_alive_until_it_stops() {
        // What `/healthz` reads: a stopped writer must not look alive.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreLocation::DataDir(dir.path().to_owned()))
            .await
            .unwrap();
        let writer = Writer::spawn(&store, Arc::new(Metrics::new()), 8)
            .await
            .unwrap();
        assert!(writer.is_alive());
        writer.shutdown().await;
        assert!(!writer.is_alive());
    }
}
