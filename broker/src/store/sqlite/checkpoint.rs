//! The background WAL checkpoint, a SQLite matter: with
//! `wal_autocheckpoint` off on the writer's connection, nothing else copies
//! the WAL back into the database file.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::Connection;

use crate::metrics::Metrics;

/// How long the background thread waits after a commit before it
/// checkpoints (under load: at most one checkpoint per interval).
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// WAL size (in 4 KiB frames, so 128 MiB) past which the background
/// checkpoint makes the WAL start over, at the first pause in the writes.
pub(crate) const WAL_RESTART_FRAMES: i64 = 32 * 1024;

/// WAL size (1 GiB) past which it starts over even under unbroken load.
pub(crate) const WAL_FORCE_RESTART_FRAMES: i64 = 256 * 1024;

/// The writer's end of the checkpoint thread: a commit kicks it, and it
/// sleeps, using no CPU, while nothing is committed.
pub struct Checkpointer {
    thread: std::thread::Thread,
    stop: Arc<AtomicBool>,
}

impl Checkpointer {
    /// Something was committed: the WAL has frames to copy back.
    pub fn kick(&self) {
        self.thread.unpark();
    }

    /// Ends the thread (after the checkpoint it may be running).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// Starts the checkpoint thread on its own connection; it runs until
/// [`Checkpointer::stop`].
pub fn spawn(conn: Connection, metrics: Arc<Metrics>) -> std::io::Result<Checkpointer> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // Without checkpoints the WAL grows until the disk is full.
    let handle =
        claudemesh_protocol::critical_thread::spawn("claudemesh-db-checkpoint", move || {
            checkpoint_loop(conn, &flag, &metrics)
        })?;
    Ok(Checkpointer {
        thread: handle.thread().clone(),
        stop,
    })
}

/// Copies the WAL back into the database file in the background, so that
/// the writer never pays for a checkpoint's fsyncs.
///
/// The thread parks until a commit kicks it, then waits one interval (so
/// that a burst of commits costs one checkpoint) and checkpoints; an idle
/// broker (or daemon, which embeds one for its local mesh) wakes it never.
/// Before, it woke every 250 ms whatever happened: 4 wakeups a second of
/// an idle daemon. It comes back without a kick only while work is left:
/// a WAL not wholly copied (a reader held frames), or one waiting for a
/// pause to start over.
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
    // A WAL left by the previous run is copied back once at start.
    let mut work_left = true;
    while !stop.load(Ordering::SeqCst) {
        if !work_left {
            std::thread::park();
            if stop.load(Ordering::SeqCst) {
                break;
            }
        }
        std::thread::sleep(CHECKPOINT_EVERY);
        let now = commits();
        let writer_paused = now == seen;
        seen = now;
        let passive = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        work_left = match passive {
            Ok((log, _)) if should_restart(log, writer_paused) => {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())) {
                    tracing::debug!(error = %e, "restart checkpoint skipped");
                    true
                } else {
                    false
                }
            }
            Ok((log, copied)) => copied < log || log > WAL_RESTART_FRAMES,
            Err(e) => {
                tracing::debug!(error = %e, "background checkpoint skipped");
                true
            }
        };
    }
}

/// Whether a WAL of `frames` frames should start over now.
pub(crate) fn should_restart(frames: i64, writer_paused: bool) -> bool {
    frames > WAL_FORCE_RESTART_FRAMES || (frames > WAL_RESTART_FRAMES && writer_paused)
}

#[cfg(test)]
mod tests {
    use super::{WAL_FORCE_RESTART_FRAMES, WAL_RESTART_FRAMES, should_restart};

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
