//! The daemon's clocks: the reaper (sessions whose Claude Code exited),
//! the config watcher (joins and leaves made by ctl), and retention.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::core::Core;

/// How often sessions are checked against their Claude Code process: a
/// dead session leaves the peer list within about this long.
pub const REAP_EVERY: Duration = Duration::from_secs(2);
/// How often the config file's modification time is looked at.
pub const CONFIG_POLL_EVERY: Duration = Duration::from_secs(2);
/// How often old messages are deleted.
pub const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Starts the timers; they end when `stop` turns true.
pub fn spawn(core: Arc<Core>, stop: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(every(REAP_EVERY, stop.clone(), {
            let core = core.clone();
            move || {
                let core = core.clone();
                async move {
                    core.reap().await;
                    // Also closes the window where a session's last send
                    // was settled while it was being marked draining.
                    core.settle_draining().await;
                    core.release_missed().await;
                }
            }
        })),
        tokio::spawn(every(CONFIG_POLL_EVERY, stop.clone(), {
            let core = core.clone();
            move || {
                let core = core.clone();
                async move {
                    if core.config_changed().await
                        && let Err(e) = core.reload_config().await
                    {
                        tracing::error!(error = %e, "the changed config could not be loaded; keeping the meshes running as they are");
                    }
                }
            }
        })),
        tokio::spawn(every(PURGE_EVERY, stop, move || {
            let core = core.clone();
            async move { core.purge().await }
        })),
    ]
}

async fn every<F, Fut>(period: Duration, mut stop: watch::Receiver<bool>, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = interval.tick() => tick().await,
        }
    }
}
