//! Starting the daemon on demand.
//!
//! When nothing answers on the socket, a client starts `claudemeshd run`
//! detached (its own process group, stdin from /dev/null, stdout and stderr
//! appended to `claudemeshd.log` in the data dir) and retries connecting with
//! backoff until the daemon answers or [`START_TIMEOUT`] passes.
//!
//! Ten shims starting at once is safe without any locking here: the daemon
//! itself holds an OS lock so that exactly one instance runs; the others
//! exit, and every client keeps retrying until the one that won answers.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use super::connection::DaemonClient;
use super::error::ClientError;
use crate::paths::Paths;

/// Overrides where the daemon executable is (tests, wrappers, packaging).
pub const DAEMON_EXE_ENV: &str = "CLAUDEMESH_DAEMON";

/// How long a client waits for a daemon it started to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// `claudemeshd run` exits with this code when another daemon already runs
/// for this user (it holds the instance lock).
pub const EXIT_ALREADY_RUNNING: u8 = 3;

/// How long to keep trying after the started process failed for another
/// reason: a daemon started by someone else may still be about to answer.
const GRACE_AFTER_EXIT: Duration = Duration::from_millis(1500);

const DAEMON_EXE_NAME: &str = "claudemeshd";

/// The file a started daemon's stdout and stderr go to.
pub fn daemon_log_path(paths: &Paths) -> PathBuf {
    paths.data_dir.join("claudemeshd.log")
}

/// Finds the daemon executable: `$CLAUDEMESH_DAEMON`, else `claudemeshd`
/// beside the current executable, else on `PATH`.
pub fn find_daemon_exe() -> Result<PathBuf, ClientError> {
    if let Some(exe) = std::env::var_os(DAEMON_EXE_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(exe));
    }
    let file_name = format!("{DAEMON_EXE_NAME}{}", std::env::consts::EXE_SUFFIX);
    let beside = std::env::current_exe()
        .ok()
        .and_then(|me| Some(me.parent()?.join(&file_name)));
    if let Some(beside) = &beside
        && beside.is_file()
    {
        return Ok(beside.clone());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(found) = std::env::split_paths(&path)
        .map(|dir| dir.join(&file_name))
        .find(|candidate| candidate.is_file())
    {
        return Ok(found);
    }
    let beside = beside.map_or_else(
        || "beside this program".to_owned(),
        |b| b.display().to_string(),
    );
    Err(ClientError::DaemonNotFound {
        looked: format!("${DAEMON_EXE_ENV} is unset, not at {beside}, not on PATH"),
    })
}

impl DaemonClient {
    /// Connects to the daemon at `paths.socket_path()`; if nothing answers,
    /// starts `daemon_exe run` detached and waits (at most
    /// [`START_TIMEOUT`]) until it answers.
    pub async fn connect_or_start(
        paths: &Paths,
        client_name: &str,
        daemon_exe: &Path,
    ) -> Result<DaemonClient, ClientError> {
        connect_or_start_at(
            &paths.socket_path(),
            &daemon_log_path(paths),
            client_name,
            daemon_exe,
        )
        .await
    }
}

/// [`DaemonClient::connect_or_start`] with the socket and log paths given.
pub(crate) async fn connect_or_start_at(
    socket: &Path,
    log: &Path,
    client_name: &str,
    daemon_exe: &Path,
) -> Result<DaemonClient, ClientError> {
    match DaemonClient::connect(socket, client_name).await {
        Err(ClientError::NotRunning { .. }) => {}
        other => return other,
    }
    let failed = |detail: String| ClientError::StartFailed {
        exe: daemon_exe.to_owned(),
        log: log.to_owned(),
        detail,
    };
    let mut child = spawn_detached(daemon_exe, log).map_err(failed)?;
    tracing::info!(exe = %daemon_exe.display(), "started the claudemesh daemon");

    let started = Instant::now();
    let mut deadline = started + START_TIMEOUT;
    let mut exited: Option<ExitStatus> = None;
    let mut delay = Duration::from_millis(10);
    loop {
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
        match DaemonClient::connect(socket, client_name).await {
            Ok(client) => {
                tracing::debug!(after = ?started.elapsed(), "the started daemon answers");
                return Ok(client);
            }
            Err(ClientError::NotRunning { .. }) => {}
            Err(e) => return Err(e),
        }
        if exited.is_none()
            && let Ok(Some(status)) = child.try_wait()
        {
            exited = Some(status);
            // Losing the race to another client's daemon is the normal case
            // when shims start together: that daemon holds the lock and will
            // answer once it has started, so keep waiting for it.
            let lost_the_race = status.code() == Some(i32::from(EXIT_ALREADY_RUNNING));
            if !status.success() && !lost_the_race {
                deadline = deadline.min(Instant::now() + GRACE_AFTER_EXIT);
            }
        }
        if Instant::now() >= deadline {
            let detail = match exited {
                Some(status) => format!("it exited ({status}) and nothing answers"),
                None => format!("it did not answer within {START_TIMEOUT:?}"),
            };
            let tail = log_tail(log);
            return Err(failed(if tail.is_empty() {
                detail
            } else {
                format!("{detail}; its log ends: {tail}")
            }));
        }
    }
}

/// Spawns `exe run` in its own process group, so that a terminal's Ctrl-C
/// or hang-up aimed at Claude Code does not reach the daemon. The child is
/// reaped by tokio once dropped.
fn spawn_detached(exe: &Path, log: &Path) -> Result<tokio::process::Child, String> {
    let dir = log.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open its log {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("cannot open its log {}: {e}", log.display()))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("run")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(false);
    #[cfg(unix)]
    cmd.process_group(0);
    #[cfg(windows)]
    {
        const DETACHED_PROCESS: u32 = 0x0000_0008;
        const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
        cmd.creation_flags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP);
    }
    cmd.spawn()
        .map_err(|e| format!("cannot run `{} run`: {e}", exe.display()))
}

/// The last non-empty line of the log, for the error message.
fn log_tail(log: &Path) -> String {
    let Ok(bytes) = std::fs::read(log) else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(4096);
    let text = String::from_utf8_lossy(&bytes[start..]);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().chars().take(300).collect())
        .unwrap_or_default()
}
