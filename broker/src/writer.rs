//! The group-commit writer: one OS thread owns the database's hot write
//! path.
//!
//! Connections hand it [`WriteOp`]s through a bounded channel (a full
//! channel makes senders wait: backpressure instead of unbounded memory).
//! The thread takes everything waiting, up to `max_batch`, applies it in one
//! transaction and commits once; only then does it answer: a `send`'s `ack`
//! and its pushes, receipts, a hello's replay verdict. So an `ack` always
//! means "in the database", and one commit (one WAL append, no fsync under
//! `synchronous=NORMAL`) pays for a whole batch of messages.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use claudemesh_protocol::wire::DeliveryState;

use crate::delivery::{self, ReceiptJob, SendJob};
use crate::metrics::Metrics;
use crate::store::{self, ReceiptRoute, StoreError, messages, replay};

/// How often the background thread checkpoints the WAL.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// WAL size (in 4 KiB frames, so 128 MiB) past which the background
/// checkpoint makes the WAL start over, at the first pause in the writes.
const WAL_RESTART_FRAMES: i64 = 32 * 1024;

/// WAL size (1 GiB) past which it starts over even under unbroken load.
const WAL_FORCE_RESTART_FRAMES: i64 = 256 * 1024;

/// Page cache of the writer's connection, in KiB: the pages it touches
/// stay in memory instead of being read back from the WAL.
const WRITER_CACHE_KIB: i64 = 32 * 1024;

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
    /// Commit what came before, checkpoint the WAL and stop.
    Shutdown(oneshot::Sender<()>),
}

enum Done {
    Send(SendJob, Result<messages::InsertOutcome, StoreError>),
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
    stop_checkpoints: Arc<AtomicBool>,
    /// The highest message number whose pushes have been planned (see
    /// [`Writer::dispatched`]).
    dispatched: Arc<AtomicI64>,
}

impl Writer {
    /// Opens a connection to `db_path` and starts the thread.
    pub fn spawn(
        db_path: &Path,
        metrics: Arc<Metrics>,
        max_batch: usize,
    ) -> Result<Self, StoreError> {
        let conn = store::open_connection(db_path)?;
        // Checkpoints (which fsync) run on their own thread, never inside a
        // commit that connections are waiting for.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        let next_seq = messages::max_seq(&conn)? + 1;
        let checkpointer = store::open_connection(db_path)?;
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
        let commits = metrics.clone();
        // Without its writer the broker can only refuse: a panic there
        // ends the process so that it is restarted.
        let thread =
            claudemesh_protocol::critical_thread::spawn("claudemesh-db-writer", move || {
                run(
                    conn,
                    next_seq,
                    rx,
                    done_tx,
                    metrics,
                    max_batch.max(1),
                    &fallback_watermark,
                )
            })
            .map_err(|source| StoreError::Io {
                path: db_path.to_owned(),
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_checkpoints = stop.clone();
        // Without checkpoints the WAL grows until the disk is full.
        claudemesh_protocol::critical_thread::spawn("claudemesh-db-checkpoint", move || {
            checkpoint_loop(checkpointer, &stop_checkpoints, &commits)
        })
        .map_err(|source| StoreError::Io {
            path: db_path.to_owned(),
            source,
        })?;
        Ok(Self {
            tx,
            thread: Mutex::new(Some(thread)),
            stop_checkpoints: stop,
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

    /// Commits what is queued, checkpoints and stops the thread.
    pub async fn shutdown(&self) {
        self.stop_checkpoints.store(true, Ordering::SeqCst);
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

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop_checkpoints.store(true, Ordering::SeqCst);
    }
}

/// Copies the WAL back into the database file in the background, so that
/// the writer never pays for a checkpoint's fsyncs.
///
/// PASSIVE checkpoints never block the writer, but under sustained load
/// they never catch up with it either, and SQLite only rewinds a WAL that
/// was fully copied: the WAL would grow without bound. So once it passes
/// [`WAL_RESTART_FRAMES`], one RESTART checkpoint lets the WAL start over.
/// A RESTART holds the writer off while it runs (tens of milliseconds
/// here, which showed as the load test's p99), so it waits for a
/// checkpoint interval with no commit, unless the WAL has passed
/// [`WAL_FORCE_RESTART_FRAMES`].
fn checkpoint_loop(conn: Connection, stop: &AtomicBool, metrics: &Metrics) {
    let commits = || metrics.db_commits.get();
    let mut seen = commits();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(CHECKPOINT_EVERY);
        let now = commits();
        let writer_paused = now == seen;
        seen = now;
        let passive = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match passive {
            Ok((log, _)) if should_restart(log, writer_paused) => {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())) {
                    tracing::debug!(error = %e, "restart checkpoint skipped");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "background checkpoint skipped"),
        }
    }
}

/// Whether a WAL of `frames` frames should start over now.
fn should_restart(frames: i64, writer_paused: bool) -> bool {
    frames > WAL_FORCE_RESTART_FRAMES || (frames > WAL_RESTART_FRAMES && writer_paused)
}

fn run(
    mut conn: Connection,
    mut next_seq: i64,
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
        let (done, stop) = apply_batch(&mut conn, &mut next_seq, &mut batch, &metrics);
        if let Err(mpsc::error::SendError(done)) = done_tx.send(done) {
            // No runtime to dispatch on (it is shutting down): answer here.
            for d in done {
                complete(d, &metrics, watermark);
            }
        }
        if let Some(stop) = stop {
            if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
                tracing::warn!(error = %e, "final WAL checkpoint failed");
            }
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
    conn: &mut Connection,
    next_seq: &mut i64,
    batch: &mut Vec<WriteOp>,
    metrics: &Metrics,
) -> (Vec<Done>, Option<oneshot::Sender<()>>) {
    let mut done = Vec::with_capacity(batch.len());
    let mut stop = None;
    let t0 = std::time::Instant::now();
    let began = conn.execute_batch("BEGIN IMMEDIATE");
    let n = batch.len() as u64;
    for op in batch.drain(..) {
        if let WriteOp::Shutdown(reply) = op {
            stop = Some(reply);
            continue;
        }
        if let Err(e) = &began {
            done.push(fail(op, StoreError::Commit(e.to_string())));
            continue;
        }
        done.push(apply(conn, next_seq, op));
    }
    let t1 = std::time::Instant::now();
    if began.is_ok() {
        let committed = conn.execute_batch("COMMIT");
        Metrics::add_time(&metrics.db_apply_seconds, t1 - t0);
        Metrics::add_time(&metrics.db_commit_seconds, t1.elapsed());
        if let Err(e) = committed {
            tracing::error!(error = %e, "group commit failed; the batch is refused");
            let _ = conn.execute_batch("ROLLBACK");
            done = done
                .into_iter()
                .map(|d| poison(d, &e.to_string()))
                .collect();
        } else {
            Metrics::inc(&metrics.db_commits);
            Metrics::add(&metrics.db_ops, n);
        }
    }
    (done, stop)
}

fn apply(conn: &Connection, next_seq: &mut i64, op: WriteOp) -> Done {
    match op {
        WriteOp::Send(mut job) => {
            // Numbers of a failed batch are skipped, never reused.
            let seq = *next_seq;
            *next_seq += 1;
            job.message.message_id = crate::ids::message_id(seq);
            job.message.seq = seq;
            let outcome = messages::insert(conn, seq, &job.message);
            Done::Send(job, outcome)
        }
        WriteOp::Delivered(job) => {
            match messages::mark_delivered(conn, &job.message_id, &job.member_id, job.at) {
                Ok(route) => Done::Receipt(job, DeliveryState::Delivered, route),
                Err(e) => {
                    tracing::warn!(error = %e, "recording a delivery failed");
                    Done::Nothing
                }
            }
        }
        WriteOp::Seen(job) => {
            let session = job.session_id.clone().unwrap_or_default();
            // A seen copy is also a delivered one; its delivered receipt, if
            // it was still missing, is folded into the seen receipt.
            let _ = messages::mark_delivered(conn, &job.message_id, &job.member_id, job.at);
            match messages::mark_seen(conn, &job.message_id, &job.member_id, &session, job.at) {
                Ok(route) => Done::Receipt(job, DeliveryState::Seen, route),
                Err(e) => {
                    tracing::warn!(error = %e, "recording a seen receipt failed");
                    Done::Nothing
                }
            }
        }
        WriteOp::RememberHello {
            signature,
            expires_at,
            reply,
        } => Done::Hello(reply, replay::remember(conn, &signature, expires_at)),
        WriteOp::Housekeeping { now_ms } => {
            match messages::purge_expired(conn, now_ms) {
                Ok(n) if n > 0 => tracing::info!(expired = n, "expired messages deleted"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "deleting expired messages failed"),
            }
            if let Err(e) = replay::prune(conn, now_ms) {
                tracing::warn!(error = %e, "pruning hello signatures failed");
            }
            Done::Nothing
        }
        WriteOp::Shutdown(reply) => Done::Barrier(reply),
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

fn poison(d: Done, why: &str) -> Done {
    match d {
        Done::Send(job, _) => Done::Send(job, Err(StoreError::Commit(why.to_owned()))),
        Done::Hello(reply, _) => Done::Hello(reply, Err(StoreError::Commit(why.to_owned()))),
        Done::Receipt(..) => Done::Nothing,
        other => other,
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

    use super::{WAL_FORCE_RESTART_FRAMES, WAL_RESTART_FRAMES, Writer, should_restart};
    use crate::metrics::Metrics;
    use crate::store::{self, DB_FILE};

    #[tokio::test]
    async fn the_writer_is_alive_until_it_stops() {
        // What `/healthz` reads: a stopped writer must not look alive.
        let dir = tempfile::tempdir().unwrap();
        drop(store::open_data_dir(dir.path()).unwrap());
        let writer = Writer::spawn(&dir.path().join(DB_FILE), Arc::new(Metrics::new()), 8).unwrap();
        assert!(writer.is_alive());
        writer.shutdown().await;
        assert!(!writer.is_alive());
    }

    #[test]
    fn the_wal_starts_over_at_a_pause_or_when_far_too_large() {
        // Small WALs are left to passive checkpoints.
        assert!(!should_restart(WAL_RESTART_FRAMES, true));
        // Past the soft limit: only while the writer pauses.
        assert!(should_restart(WAL_RESTART_FRAMES + 1, true));
        assert!(!should_restart(WAL_RESTART_FRAMES + 1, false));
        assert!(!should_restart(WAL_FORCE_RESTART_FRAMES, false));
        // Past the hard limit: even under unbroken load.
        assert!(should_restart(WAL_FORCE_RESTART_FRAMES + 1, false));
    }
}
