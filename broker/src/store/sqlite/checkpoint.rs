//! The background WAL checkpoint, a SQLite matter: with
//! `wal_autocheckpoint` off on the writer's connection, nothing else copies
//! the WAL back into the database file.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::Connection;

use crate::metrics::Metrics;

/// How often the background thread checkpoints the WAL.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// WAL size (in 4 KiB frames, so 128 MiB) past which the background
/// checkpoint makes the WAL start over, at the first pause in the writes.
pub(crate) const WAL_RESTART_FRAMES: i64 = 32 * 1024;

/// WAL size (1 GiB) past which it starts over even under unbroken load.
pub(crate) const WAL_FORCE_RESTART_FRAMES: i64 = 256 * 1024;

/// Starts the checkpoint thread on its own connection; it runs until
/// `stop` is set.
pub fn spawn(
    conn: Connection,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    // Without checkpoints the WAL grows until the disk is full.
    claudemesh_protocol::critical_thread::spawn("claudemesh-db-checkpoint", move || {
        checkpoint_loop(conn, &stop, &metrics)
    })?;
    Ok(())
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
