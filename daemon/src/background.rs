//! The daemon's background work: the reaper (sessions whose Claude Code
//! exited), the config watcher (joins and leaves made by ctl), and
//! retention.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config_watch::ConfigWatch;
use crate::core::Core;

/// How often sessions are checked against their Claude Code process: a
/// dead session leaves the peer list within about this long.
pub const REAP_EVERY: Duration = Duration::from_secs(2);
/// How often the config file's modification time is looked at where it
/// cannot be watched.
pub const CONFIG_POLL_EVERY: Duration = Duration::from_secs(2);
/// How often old messages are deleted.
pub const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Starts the timers; they end when `stop` turns true. None wakes an idle
/// daemon on a clock: the reaper runs only while sessions exist, the
/// config is watched (inotify on Linux), and retention runs hourly.
pub fn spawn(core: Arc<Core>, stop: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(reaper(core.clone(), stop.clone())),
        tokio::spawn(watch_config(core.clone(), stop.clone())),
        tokio::spawn(every(PURGE_EVERY, stop, move || {
            let core = core.clone();
            async move { core.purge().await }
        })),
    ]
}

/// Every `REAP_EVERY` while sessions exist; with none, it waits for a
/// client of the socket (a session attaches only after connecting).
async fn reaper(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(REAP_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = interval.tick() => {
                core.reap().await;
                // Also closes the window where a session's last send
                // was settled while it was being marked draining.
                core.settle_draining().await;
                core.release_missed().await;
            }
        }
        if core.sessions.is_empty() {
            tokio::select! {
                _ = stop.changed() => return,
                () = core.sessions.client_arrived() => interval.reset(),
            }
        }
    }
}

/// Reloads the config when ctl (or a person) changed the file.
async fn watch_config(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let mut watch = ConfigWatch::new(&core.paths.config_dir, CONFIG_POLL_EVERY);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = watch.changed() => {
                if core.config_changed().await
                    && let Err(e) = core.reload_config().await
                {
                    tracing::error!(error = %e, "the changed config could not be loaded; keeping the meshes running as they are");
                }
            }
        }
    }
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
