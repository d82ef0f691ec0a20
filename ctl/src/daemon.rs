//! Talking to a running claudemeshd. ctl never starts the daemon: a command
//! that needs it says it is not running (exit 3) and how to start it.

use std::future::Future;
use std::time::Duration;

use claudemesh_daemon::client::{ClientError, DaemonClient};
use claudemesh_daemon::paths::Paths;
use claudemesh_protocol::ipc::{AttachArgs, DaemonStatus, IpcErrorCode, Request, Response};
use serde_json::{Value, json};

use crate::error::{CtlError, Result};
use crate::output;

pub const CLIENT_NAME: &str = concat!("claudemesh-ctl/", env!("CARGO_PKG_VERSION"));

/// How long ctl waits for the daemon in commands a person runs.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `f` on a small single-threaded runtime.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
        .block_on(f)
}

fn client_error(e: ClientError) -> CtlError {
    match e {
        ClientError::NotRunning { .. } => CtlError::daemon_down(),
        ClientError::Daemon(ipc) => CtlError {
            daemon_code: Some(ipc.code.clone()),
            ..CtlError::failure(format!(
                "the daemon refused: {} ({})",
                ipc.message, ipc.code
            ))
        },
        other => CtlError::failure(other.to_string()),
    }
}

/// Connects to the daemon; `Ok(None)` when it is not running.
pub async fn connect(paths: &Paths, timeout: Duration) -> Result<Option<DaemonClient>> {
    let socket = paths.socket_path();
    output::debug(format_args!("connecting to {}", socket.display()));
    match tokio::time::timeout(timeout, DaemonClient::connect(&socket, CLIENT_NAME)).await {
        Err(_) => Err(CtlError::failure(format!(
            "the daemon at {} did not answer within {timeout:?}",
            socket.display()
        ))
        .hint("run `claudemesh-ctl doctor`")),
        Ok(Ok(client)) => Ok(Some(client)),
        Ok(Err(ClientError::NotRunning { .. })) => Ok(None),
        Ok(Err(e)) => Err(client_error(e)),
    }
}

/// Connects, or fails with "not running" (exit 3).
pub async fn require(paths: &Paths) -> Result<DaemonClient> {
    connect(paths, TIMEOUT)
        .await?
        .ok_or_else(CtlError::daemon_down)
}

pub async fn request(client: &DaemonClient, request: Request) -> Result<Response> {
    match tokio::time::timeout(TIMEOUT, client.request(request)).await {
        Err(_) => Err(
            CtlError::failure(format!("the daemon did not answer within {TIMEOUT:?}"))
                .hint("run `claudemesh-ctl doctor`"),
        ),
        Ok(r) => r.map_err(client_error),
    }
}

fn unexpected(what: &str, got: &Response) -> CtlError {
    CtlError::failure(format!(
        "unexpected answer from the daemon to {what}: {}",
        serde_json::to_value(got)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "?".into())
    ))
}

pub async fn status(client: &DaemonClient) -> Result<DaemonStatus> {
    match request(client, Request::DaemonStatus).await? {
        Response::DaemonStatus(s) => Ok(s),
        other => Err(unexpected("daemon_status", &other)),
    }
}

/// What became of telling the daemon to re-read the config.
pub enum Reload {
    Done,
    NotRunning,
    Failed(String),
}

/// Asks a running daemon to re-read the config (after join/leave).
pub fn reload(paths: &Paths) -> Reload {
    block_on(async {
        let client = match connect(paths, TIMEOUT).await {
            Ok(Some(c)) => c,
            Ok(None) => return Reload::NotRunning,
            Err(e) => return Reload::Failed(e.message),
        };
        match request(&client, Request::ReloadConfig).await {
            Ok(_) => Reload::Done,
            Err(e) => Reload::Failed(e.message),
        }
    })
}

/// Attaches this connection as a short-lived session of ctl itself
/// (`claudePid` = our own pid: the daemon accepts ancestor-or-self), under
/// the member's name unless told otherwise (see `terminal`).
pub async fn attach_self(
    client: &DaemonClient,
    mesh: Option<&str>,
    display_name: Option<&str>,
) -> Result<claudemesh_protocol::ipc::AttachedInfo> {
    let name = match display_name {
        Some(n) => n.to_owned(),
        None => crate::ctx::name_in(&crate::ctx::load_config(&crate::ctx::paths()?)?, mesh),
    };
    let cwd = std::env::current_dir()
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "/".into());
    let args = AttachArgs {
        mesh: mesh.map(str::to_owned),
        display_name: Some(name),
        cwd,
        claude_pid: std::process::id(),
        groups: Vec::new(),
        transient: true,
        transcript_path: None,
    };
    match request(client, Request::Attach(args)).await {
        Ok(Response::Attached(info)) => Ok(info),
        Ok(other) => Err(unexpected("attach", &other)),
        Err(mut e) if e.daemon_code == Some(IpcErrorCode::UnknownMesh) => {
            e.exit = crate::error::Exit::NotJoined;
            Err(e.hint("see `claudemesh-ctl list` for the joined meshes"))
        }
        Err(e) => Err(e),
    }
}

/// Ends the short-lived session; errors are only logged.
pub async fn detach(client: &DaemonClient) {
    if let Err(e) = request(client, Request::Detach).await {
        output::debug(format_args!("detach: {}", e.message));
    }
}

/// `claudemesh-ctl daemon start`: connects, or starts the daemon detached
/// exactly as the shim does, and says where it logs.
pub fn start(json_out: bool) -> Result<()> {
    let paths = crate::ctx::paths()?;
    let log = claudemesh_daemon::client::daemon_log_path(&paths);
    let already = block_on(connect(&paths, TIMEOUT))?.is_some();
    let pid = block_on(async {
        let client = if already {
            require(&paths).await?
        } else {
            let exe = claudemesh_daemon::client::find_daemon_exe().map_err(client_error)?;
            DaemonClient::connect_or_start(&paths, CLIENT_NAME, &exe)
                .await
                .map_err(client_error)?
        };
        Ok::<_, CtlError>(client.welcome().pid)
    })?;
    if json_out {
        output::json(&serde_json::json!({
            "running": true, "started": !already, "pid": pid, "log": log,
        }));
    } else if already {
        output::line(format!(
            "claudemeshd already runs (pid {pid}); log: {}",
            log.display()
        ));
    } else {
        output::line(format!(
            "claudemeshd started (pid {pid}); log: {}",
            log.display()
        ));
    }
    Ok(())
}

/// What `join`, `leave` and `default` say of the daemon's reload, in JSON.
pub fn reload_json(r: &Reload) -> Value {
    match r {
        Reload::Done => json!("reloaded"),
        Reload::NotRunning => json!("not_running"),
        Reload::Failed(e) => json!({"error": e}),
    }
}

pub fn report_reload(r: &Reload, slug: &str) {
    match r {
        Reload::Done => output::line("  daemon:   told to reload its config"),
        Reload::NotRunning => output::line(format!(
            "  daemon:   not running; it will pick up `{slug}` when it starts \
             (claudemesh-ctl daemon start)"
        )),
        Reload::Failed(e) => output::warn(format!(
            "could not tell the daemon to reload ({e}); it picks up config changes by itself \
             shortly, or restart it"
        )),
    }
}
