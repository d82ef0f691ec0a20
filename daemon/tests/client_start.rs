//! Starting the daemon on demand: `DaemonClient::connect_or_start`.
//!
//! The "daemon" started here is a fake: this very test executable, run
//! through a small script as `<script> run`, serving the socket under an
//! exclusive file lock the way `claudemeshd` enforces a single instance
//! (`fake_daemon_entry` below is that process's entry point; in a normal
//! test run it does nothing). A fake keeps the client's start-up rules
//! testable while the daemon crate's server features are built separately;
//! the shim's tests start the real `claudemeshd` through the same code.
//!
//! Run with `cargo test -p claudemesh-daemon --no-default-features --test
//! client_start`.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use claudemesh_daemon::client::{ClientError, DaemonClient};
use claudemesh_daemon::paths::Paths;
use claudemesh_protocol::ipc::{DaemonFrame, IPC_VERSION, Request, RequestFrame, Response};

const FAKE_SOCKET_ENV: &str = "CLIENT_TEST_FAKE_DAEMON_SOCKET";

/// The fake daemon's body when this executable is started as one.
#[test]
fn fake_daemon_entry() {
    let Some(socket) = std::env::var_os(FAKE_SOCKET_ENV) else {
        return;
    };
    let socket = PathBuf::from(socket);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(socket.with_extension("lock"))
        .unwrap();
    if lock.try_lock().is_err() {
        eprintln!("fake daemon {}: another instance runs", std::process::id());
        std::process::exit(3);
    }
    // Take a moment, as a real daemon opening its database would.
    std::thread::sleep(Duration::from_millis(300));
    let _ = std::fs::remove_file(&socket);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(serve(socket));
}

async fn serve(socket: PathBuf) {
    use interprocess::local_socket::tokio::prelude::*;
    use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let name = socket.as_path().to_fs_name::<GenericFilePath>().unwrap();
    let listener = ListenerOptions::new().name(name).create_tokio().unwrap();
    let stop = socket.with_extension("stop");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if stop.exists() || Instant::now() > deadline {
            return;
        }
        let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_millis(100), listener.accept()).await
        else {
            continue;
        };
        tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(stream);
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let frame = RequestFrame::parse(&line).unwrap();
                let result = match frame.request {
                    Request::Hello { .. } => Response::Welcome {
                        protocol: IPC_VERSION,
                        daemon_version: "fake".into(),
                        pid: std::process::id(),
                    },
                    _ => Response::Done,
                };
                let out = DaemonFrame::Ok {
                    id: frame.id,
                    result,
                };
                if w.write_all(out.to_line().as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn paths(dir: &Path) -> Paths {
    Paths {
        config_dir: dir.join("config"),
        data_dir: dir.join("data"),
        runtime_dir: dir.join("run"),
    }
}

/// A `claudemeshd`-like script: `<script> run` starts the fake daemon.
fn fake_daemon_exe(dir: &Path, socket: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let me = std::env::current_exe().unwrap();
    let script = dir.join("fake-claudemeshd");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = run ] || exit 64\n{FAKE_SOCKET_ENV}='{}' exec '{}' --exact fake_daemon_entry --nocapture --test-threads=1\n",
            socket.display(),
            me.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_clients_starting_at_once_share_one_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let paths = paths(dir.path());
    std::fs::create_dir_all(&paths.runtime_dir).unwrap();
    let socket = paths.socket_path();
    let exe = fake_daemon_exe(dir.path(), &socket);

    let started = Instant::now();
    let clients = futures_join_all((0..10).map(|_| {
        let paths = paths.clone();
        let exe = exe.clone();
        tokio::spawn(async move { DaemonClient::connect_or_start(&paths, "test/1", &exe).await })
    }))
    .await;
    let mut pids = Vec::new();
    for c in clients {
        let client = c.unwrap().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            client.request(Request::Pending).await.unwrap(),
            Response::Done
        );
        pids.push(client.welcome().pid);
    }
    eprintln!("10 clients connected in {:?}", started.elapsed());
    pids.sort();
    pids.dedup();
    assert_eq!(
        pids.len(),
        1,
        "every client reached the same daemon: {pids:?}"
    );
    // The started daemon logs to data_dir/claudemeshd.log.
    assert!(paths.data_dir.join("claudemeshd.log").exists());
    std::fs::write(socket.with_extension("stop"), b"").unwrap();
}

#[tokio::test]
async fn a_daemon_that_cannot_start_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let paths = paths(dir.path());
    let script = dir.path().join("broken-claudemeshd");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'cannot open the database: disk full' >&2\nexit 1\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let started = Instant::now();
    let err = DaemonClient::connect_or_start(&paths, "test/1", &script)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(6), "bounded wait");
    assert!(matches!(err, ClientError::StartFailed { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("could not start the claudemesh daemon"),
        "{text}"
    );
    assert!(text.contains("claudemeshd.log"), "{text}");
    assert!(
        text.contains("disk full"),
        "the log's last line is quoted: {text}"
    );

    let missing = dir.path().join("no-such-claudemeshd");
    let err = DaemonClient::connect_or_start(&paths, "test/1", &missing)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot run"), "{err}");
}

#[test]
fn find_daemon_exe_honours_the_env_override() {
    // Only the override is checked here: the other lookups depend on where
    // the test runs. (Reading an env var set by the test harness itself.)
    if let Some(v) = std::env::var_os("CLAUDEMESH_DAEMON").filter(|v| !v.is_empty()) {
        assert_eq!(
            claudemesh_daemon::client::find_daemon_exe().unwrap(),
            PathBuf::from(v)
        );
    } else if let Err(e) = claudemesh_daemon::client::find_daemon_exe() {
        assert!(matches!(e, ClientError::DaemonNotFound { .. }));
        assert!(e.to_string().contains("CLAUDEMESH_DAEMON"), "{e}");
    }
}

async fn futures_join_all<T>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await);
    }
    out
}
