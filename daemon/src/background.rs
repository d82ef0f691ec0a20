//! The daemon's background work: the reaper (sessions whose Claude Code
//! exited), the config watcher (joins and leaves made by ctl), and
//! retention.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config_watch::ConfigWatch;
use crate::core::Core;
use crate::process_info::ProcessId;

/// How often sessions are checked against their Claude Code process: a
/// dead session leaves the peer list within about this long.
pub const REAP_EVERY: Duration = Duration::from_secs(2);
/// How often the config file's modification time is looked at where it
/// cannot be watched.
pub const CONFIG_POLL_EVERY: Duration = Duration::from_secs(2);
/// How often old messages are deleted.
pub const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Starts the timers; they end when `stop` turns true. None wakes an idle
/// daemon on a clock: the reaper runs only while a session needs it, the
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

/// Ends the sessions whose Claude Code exited, and catches up on what
/// raced. It hears each session's Claude Code exit (a pidfd each,
/// `crate::exit_watch`) and the changes `Sessions::note_change` names;
/// it looks every `REAP_EVERY` only while a session is detached, draining
/// or missed a push, or its process cannot be watched.
async fn reaper(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(REAP_EVERY);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watched: HashMap<ProcessId, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        let unwatched = watch_processes(&core, &mut watched);
        let periodic = unwatched || core.sessions.need_reaping();
        tokio::select! {
            _ = stop.changed() => break,
            _ = interval.tick(), if periodic => {}
            () = core.sessions.changed(), if !periodic => {}
        }
        core.reap().await;
        // Also closes the window where a session's last send was settled
        // while it was being marked draining.
        core.settle_draining().await;
        core.release_missed().await;
    }
    for (_, task) in watched {
        task.abort();
    }
}

/// Watches the Claude Code process of every session not watched yet and
/// stops watching those no session names; true when one cannot be
/// watched (then the reaper looks on its clock).
fn watch_processes(
    core: &Arc<Core>,
    watched: &mut HashMap<ProcessId, tokio::task::JoinHandle<()>>,
) -> bool {
    let live: HashSet<ProcessId> = core
        .sessions
        .lock()
        .values()
        .filter(|s| !s.draining)
        .map(|s| s.claude())
        .collect();
    watched.retain(|id, task| {
        let keep = live.contains(id) && !task.is_finished();
        if !keep {
            task.abort();
        }
        keep
    });
    let mut unwatched = false;
    for id in live {
        if watched.contains_key(&id) {
            continue;
        }
        match crate::exit_watch::watch(id) {
            Some(exited) => {
                let core = core.clone();
                watched.insert(
                    id,
                    tokio::spawn(async move {
                        exited.await;
                        core.sessions.note_change();
                    }),
                );
            }
            None => unwatched = true,
        }
    }
    unwatched
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
