//! The local socket under hostile or confused clients: garbage, crafted
//! frames, another user, a second daemon; and config changes picked up
//! while running.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use claudemesh_protocol::ipc::{
    DaemonFrame, Event, IPC_VERSION, LinkState, MAX_IPC_LINE_BYTES, Request, Response, SendArgs,
};
use claudemesh_protocol::wire::Priority;
use support::client::{TestClient, WAIT};
use support::{Daemon, Home, RelayMode, TestBroker, eventually};

#[test]
fn relay_helper() {
    support::relay::helper_main();
}

/// Sends `raw` and returns the error code of the answer.
async fn error_code(c: &mut TestClient, raw: &[u8]) -> String {
    c.send_raw(raw).await.expect("write");
    match c.next_frame(WAIT).await {
        Some(DaemonFrame::Err { error, .. }) => error.code.to_string(),
        other => panic!(
            "{:?} was answered with {other:?}",
            String::from_utf8_lossy(raw)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_crafted_frames_get_errors_and_never_crash_the_daemon() {
    let home = Home::new();
    let mut daemon = Daemon::start_ready(&home, &["--no-local"]).await;
    let mut c = TestClient::connect(&home.socket()).await.expect("connect");

    // Before hello, every op is refused, and so is a wrong version.
    assert_eq!(
        error_code(&mut c, b"{\"id\":1,\"op\":\"daemon_status\"}\n").await,
        "no_hello"
    );
    assert_eq!(
        error_code(
            &mut c,
            b"{\"id\":2,\"op\":\"send\",\"args\":{\"to\":\"*\",\"text\":\"x\"}}\n"
        )
        .await,
        "no_hello"
    );
    let wrong = format!(
        "{{\"id\":3,\"op\":\"hello\",\"args\":{{\"protocol\":{},\"client\":\"future\"}}}}\n",
        IPC_VERSION + 1
    );
    c.send_raw(wrong.as_bytes()).await.unwrap();
    match c.next_frame(WAIT).await {
        Some(DaemonFrame::Err { id: Some(3), error }) => {
            assert_eq!(error.code, "version_mismatch");
            assert!(error.message.contains(&IPC_VERSION.to_string()));
            assert!(error.message.contains(&(IPC_VERSION + 1).to_string()));
        }
        other => panic!("{other:?}"),
    }

    // Garbage of every kind, before and after hello.
    let cases: Vec<Vec<u8>> = vec![
        b"not json\n".to_vec(),
        b"\xff\xfe\xfd\n".to_vec(),
        b"[1,2,3]\n".to_vec(),
        b"{}\n".to_vec(),
        b"{\"op\":\"pending\"}\n".to_vec(),
        b"{\"id\":-5,\"op\":\"pending\"}\n".to_vec(),
        b"{\"id\":1e400,\"op\":\"pending\"}\n".to_vec(),
        b"{\"id\":4,\"op\":\"launch_missiles\"}\n".to_vec(),
        b"{\"id\":5,\"op\":\"attach\",\"args\":{\"claudePid\":\"x\"}}\n".to_vec(),
        format!("{}\n", "[".repeat(10_000)).into_bytes(),
        b"{\"id\":6,\"op\":\"hello\",\"args\":null}\n".to_vec(),
    ];
    for raw in &cases {
        let code = error_code(&mut c, raw).await;
        assert!(
            ["malformed", "unknown_op", "no_hello"].contains(&code.as_str()),
            "{:?} -> {code}",
            String::from_utf8_lossy(raw)
        );
    }
    c.hello().await;
    for raw in &cases {
        error_code(&mut c, raw).await;
    }
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..200 {
        let mut junk = Vec::new();
        for _ in 0..(seed % 300) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let b = (seed & 0xff) as u8;
            junk.push(if b == b'\n' { b' ' } else { b });
        }
        if junk.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        junk.push(b'\n');
        error_code(&mut c, &junk).await;
    }

    // Session ops without a session, and a bogus Claude Code.
    for op in [Request::Pending, Request::ListPeers, Request::Detach] {
        assert_eq!(c.request(op).await.unwrap_err().code, "not_attached");
    }
    for pid in [0, 1, u32::MAX] {
        let e = c.try_attach(pid, "x", None).await.unwrap_err();
        assert_eq!(e.code, "not_a_claude_process", "pid {pid}");
    }
    // No mesh at all (local mesh off, nothing joined).
    let e = c
        .try_attach(std::process::id(), "x", None)
        .await
        .unwrap_err();
    assert_eq!(e.code, "unknown_mesh");
    assert_eq!(
        c.request(Request::MessageStatus {
            message_id: "m-nope".into()
        })
        .await
        .unwrap_err()
        .code,
        "unknown_message"
    );

    // An endless line is cut off and the connection closed.
    let huge = vec![b'x'; MAX_IPC_LINE_BYTES + 10];
    let _ = c.send_raw(&huge).await;
    match c.next_frame(WAIT).await {
        Some(DaemonFrame::Err { error, .. }) => assert_eq!(error.code, "too_large"),
        other => panic!("{other:?}"),
    }
    assert!(c.closed(WAIT).await);

    // A client that vanishes mid-line does no harm either.
    let mut half = TestClient::connect(&home.socket()).await.unwrap();
    half.send_raw(b"{\"id\":1,\"op\":\"hel").await.unwrap();
    drop(half);

    assert!(
        daemon.is_running(),
        "the daemon died; log:\n{}",
        daemon.log()
    );
    let mut fresh = daemon.client().await;
    match fresh.request(Request::DaemonStatus).await {
        Ok(Response::DaemonStatus(s)) => assert_eq!(s.pid, daemon.pid()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_refuses_a_claude_pid_that_is_not_an_ancestor() {
    let home = Home::new();
    let daemon = Daemon::start_ready(&home, &[]).await;
    let mut c = daemon.client().await;
    // The daemon is not this test's ancestor.
    let e = c.try_attach(daemon.pid(), "x", None).await.unwrap_err();
    assert_eq!(e.code, "not_a_claude_process");
    // One connection, one session.
    c.attach(std::process::id(), "one", None).await;
    let e = c
        .try_attach(std::process::id(), "two", None)
        .await
        .unwrap_err();
    assert_eq!(e.code, "already_attached");
    // Bad sends change nothing.
    let e = c
        .request(Request::Send(SendArgs {
            to: "one".into(),
            text: "x".repeat(claudemesh_protocol::ipc::MAX_TEXT_BYTES + 1),
            priority: Priority::Now,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code, "too_large");
    let e = c
        .request(Request::Send(SendArgs {
            to: "nobody-here".into(),
            text: "x".into(),
            priority: Priority::Now,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code, "unknown_target");
    match c.request(Request::ListOutbox).await {
        Ok(Response::Outbox { messages }) => assert!(messages.is_empty()),
        other => panic!("{other:?}"),
    }
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_user_is_refused() {
    if !running_as_root() || !std::path::Path::new("/usr/bin/setpriv").exists() {
        // CI runs as root with util-linux installed: there the check must run.
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI this test needs root and /usr/bin/setpriv"
        );
        eprintln!("skipped: needs root and setpriv to act as another user");
        return;
    }
    let home = Home::new();
    let mut daemon = Daemon::start_ready(&home, &[]).await;
    let as_nobody = [
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
    ];
    // The test binary must be reachable by `nobody`.
    let (_child, _pipes, first) =
        support::relay::start(&home.socket(), RelayMode::SelfIsClaude, &as_nobody).await;
    assert!(
        first.starts_with("RELAY-FAILED"),
        "nobody reached a socket in a 0700 directory: {first}"
    );

    // Loosen the directory and the socket: the uid check still refuses.
    let dir = home.paths.runtime_dir.clone();
    let socket = home.socket();
    let set = |p: &std::path::Path, mode| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    set(home.dir.path(), 0o755);
    set(&dir, 0o755);
    set(&socket, 0o777);
    let (mut child, (reader, _stdin), first) =
        support::relay::start(&socket, RelayMode::SelfIsClaude, &as_nobody).await;
    assert!(first.starts_with("RELAY-READY"), "{first}");
    let mut lines = tokio::io::AsyncBufReadExt::lines(reader);
    let refusal = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("an answer")
        .expect("read")
        .expect("a refusal line");
    match DaemonFrame::parse(&refusal) {
        Ok(DaemonFrame::Err { error, .. }) => assert_eq!(error.code, "forbidden"),
        other => panic!("{other:?}"),
    }
    let _ = child.kill().await;
    set(&dir, 0o700);
    set(&socket, 0o600);

    assert!(daemon.is_running());
    let mut c = daemon.client().await;
    assert!(c.request(Request::DaemonStatus).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_exits_with_a_clear_message() {
    let home = Home::new();
    let mut first = Daemon::start_ready(&home, &["--no-local"]).await;
    let out = home
        .command(&["run", "--no-local"])
        .output()
        .expect("run a second daemon");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already running"), "{stderr}");
    assert!(first.is_running());
    let mut c = first.client().await;
    assert!(c.request(Request::DaemonStatus).await.is_ok());
    // The lock goes with the process, even on kill -9.
    first.kill9();
    let _again = Daemon::start_ready(&home, &["--no-local"]).await;
}

async fn mesh_slugs(c: &mut TestClient) -> Vec<(String, LinkState)> {
    match c.request(Request::DaemonStatus).await {
        Ok(Response::DaemonStatus(s)) => s.meshes.into_iter().map(|m| (m.slug, m.link)).collect(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_and_leaves_are_picked_up_without_a_restart() {
    let broker = TestBroker::start().await;
    let home = Home::new();
    let daemon = Daemon::start_ready(&home, &["--no-local"]).await;
    let mut c = daemon.client().await;
    assert!(mesh_slugs(&mut c).await.is_empty());

    // ctl writes the config; the daemon notices by itself.
    broker.enroll(&home, "alpha", "me");
    let up = eventually(Duration::from_secs(15), async || {
        let m = mesh_slugs(&mut c).await;
        (m == [("alpha".to_owned(), LinkState::Connected)]).then_some(())
    })
    .await;
    assert!(
        up.is_some(),
        "alpha never connected; log:\n{}",
        daemon.log()
    );

    // ... or when told.
    broker.enroll(&home, "beta", "me");
    c.request(Request::ReloadConfig).await.expect("reload");
    let both = eventually(WAIT, async || {
        let m = mesh_slugs(&mut c).await;
        (m.len() == 2 && m.iter().all(|(_, l)| *l == LinkState::Connected)).then_some(())
    })
    .await;
    assert!(both.is_some());

    // Leave alpha.
    let path = home.paths.config_file();
    let mut config = claudemesh_daemon::config::Config::load(&path).unwrap();
    config.remove("alpha");
    config.save(&path).unwrap();
    c.request(Request::ReloadConfig).await.expect("reload");
    let left = mesh_slugs(&mut c).await;
    assert_eq!(left, [("beta".to_owned(), LinkState::Connected)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_is_final_and_reported() {
    let broker = TestBroker::start().await;
    let home = Home::new();
    let mesh = broker.enroll(&home, "team", "me");
    let daemon = Daemon::start_ready(&home, &["--no-local"]).await;
    let mut c = daemon.client().await;
    c.attach(std::process::id(), "me", None).await;
    eventually(WAIT, async || {
        (mesh_slugs(&mut c).await == [("team".to_owned(), LinkState::Connected)]).then_some(())
    })
    .await
    .expect("connected");
    broker.revoke(&mesh.mesh_id, &mesh.pubkey);
    let event = eventually(WAIT, async || {
        match c.next_event(Duration::from_millis(200)).await {
            Some(Event::LinkState {
                state: LinkState::Revoked,
                detail,
                ..
            }) => Some(detail),
            _ => None,
        }
    })
    .await;
    assert!(event.is_some(), "no revoked event; log:\n{}", daemon.log());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        mesh_slugs(&mut c).await,
        [("team".to_owned(), LinkState::Revoked)],
        "not retried"
    );
    let e = c
        .request(Request::Send(SendArgs {
            to: "*".into(),
            text: "x".into(),
            priority: Priority::Now,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code, "revoked");
}
