//! `claudemeshd run`: the whole life of the daemon, in order.
//!
//! 1. logs; directories (0700); file-descriptor limit raised;
//! 2. the single-instance lock — before touching anything shared, so that a
//!    second daemon exits without disturbing the first;
//! 3. the stale socket file of a dead daemon removed (safe only now);
//! 4. database, keystore, local mesh, config, sessions restored;
//! 5. the socket bound, timers started; wait for SIGTERM or SIGINT;
//! 6. stop accepting, close links and the local broker, checkpoint the
//!    database. Sessions stay in the store for the next start.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use crate::core::{Core, CoreOptions};
use crate::instance_lock::{InstanceLock, LockError};
use crate::keystore::Keystore;
use crate::local_mesh::LocalMesh;
use crate::paths::Paths;
use crate::store::Store;

pub use crate::client::EXIT_ALREADY_RUNNING;

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Run the embedded local mesh.
    pub local: bool,
    /// A fixed port for the local broker (else the last one, else any).
    pub local_port: Option<u16>,
}

/// Runs the daemon in the foreground until a signal; the exit code says
/// how it ended.
pub fn run(options: RunOptions) -> ExitCode {
    crate::logging::init();
    let paths = match prepare() {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let lock = match InstanceLock::acquire(&paths.lock_path()) {
        Ok(lock) => lock,
        Err(e @ LockError::AlreadyRunning { .. }) => {
            eprintln!("claudemeshd: {e}");
            tracing::warn!("{e}");
            return ExitCode::from(EXIT_ALREADY_RUNNING);
        }
        Err(e) => return fail(&e.into()),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("claudemeshd")
        // The database has its own thread; the blocking pool only serves
        // the keystore and config reads, and each idle thread costs memory.
        .max_blocking_threads(8)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::new(e).context("starting the async runtime")),
    };
    let result = runtime.block_on(serve(paths, options));
    drop(lock);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("claudemeshd: {e:#}");
    tracing::error!("{e:#}");
    ExitCode::FAILURE
}

fn prepare() -> anyhow::Result<Paths> {
    // The database holds message text: every file the daemon creates is
    // for this user alone.
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe { libc::umask(0o077) };
    let paths = Paths::from_env()?;
    for dir in [&paths.runtime_dir, &paths.data_dir, &paths.config_dir] {
        Paths::ensure_private_dir(dir)?;
    }
    raise_fd_limit();
    Ok(paths)
}

/// Each session holds a socket: raise the soft descriptor limit to the
/// hard one so that a thousand sessions fit.
fn raise_fd_limit() {
    claudemesh_broker::net::fdlimit::raise_nofile();
}

async fn serve(paths: Paths, options: RunOptions) -> anyhow::Result<()> {
    let socket = paths.socket_path();
    crate::server::remove_stale_socket(&socket)
        .with_context(|| format!("cleaning up the socket path {}", socket.display()))?;
    let store = {
        let db = paths.database_path();
        tokio::task::spawn_blocking(move || Store::open(&db))
            .await
            .context("opening the database")?
            .with_context(|| format!("opening the database {}", paths.database_path().display()))?
    };
    let keystore = {
        let p = paths.clone();
        tokio::task::spawn_blocking(move || Keystore::open(&p))
            .await
            .context("opening the keystore")??
    };
    tracing::info!(keystore = %keystore.kind(), location = %keystore.location(), durable = keystore.durable(), "keystore open");
    let core = Core::new(
        paths.clone(),
        store,
        keystore,
        CoreOptions {
            local_enabled: options.local,
            clock: crate::clock::Clock::system(),
        },
    )?;

    let local = if options.local {
        match LocalMesh::start(&paths, core.keystore.clone(), options.local_port).await {
            Ok(local) => Some(local),
            Err(e) => {
                tracing::error!("the local mesh could not start: {e:#}");
                None
            }
        }
    } else {
        None
    };
    if let Err(e) = core.reload_config().await {
        tracing::error!(error = %e, "the config could not be loaded; no joined mesh is connected until it is fixed");
    }
    core.restore_sessions().await?;

    let listener = crate::server::bind(&socket)
        .with_context(|| format!("listening on {}", socket.display()))?;
    let (stop_tx, stop) = watch::channel(false);
    let server = tokio::spawn(crate::server::serve(
        core.clone(),
        listener,
        socket.clone(),
        stop.clone(),
    ));
    let timers = crate::background::spawn(core.clone(), stop);
    tracing::info!(socket = %socket.display(), pid = std::process::id(), version = env!("CARGO_PKG_VERSION"), "claudemeshd ready");

    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = server.await;
    for t in timers {
        let _ = t.await;
    }
    shutdown(core, local).await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown(core: Arc<Core>, local: Option<LocalMesh>) {
    core.shutdown().await;
    if let Some(local) = local {
        local.shutdown().await;
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for signals; stop the daemon with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
