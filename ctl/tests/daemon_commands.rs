//! The commands that talk to the daemon (`status`, `list`, `peers`, `send`,
//! `outbox`, `hook`, and the reload after `join`/`leave`), against a
//! stand-in daemon that speaks the IPC frames and records what ctl asked.

#![cfg(unix)]

mod common;

use claudemesh_protocol::ipc::{
    AttachedInfo, DaemonStatus, HookContextArgs, InboxMessage, IpcError, LinkState, MeshStatus,
    OutboxEntry, PeerView, RecipientView, Request, Response, SentInfo, SessionInfo,
};
use claudemesh_protocol::wire::{DeliveryState, MessageSender, Peer, PeerStatus, Priority};
use common::{FakeDaemon, Home, TestBroker};

fn mesh_status() -> MeshStatus {
    MeshStatus {
        slug: "local".into(),
        mesh_id: "mesh_local".into(),
        member_id: "mem_1".into(),
        member: "ab".repeat(32),
        broker: "ws://127.0.0.1:1/ws".into(),
        local: true,
        link: LinkState::Connected,
        link_detail: None,
        outbox_depth: 2,
        inbox_depth: 1,
        sessions: 1,
    }
}

fn daemon_status() -> DaemonStatus {
    DaemonStatus {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: 4242,
        keystore: "file".into(),
        keystore_durable: true,
        socket: "/run/x.sock".into(),
        meshes: vec![mesh_status()],
        sessions: vec![SessionInfo {
            session_id: "s1".into(),
            mesh_slug: "local".into(),
            display_name: "api@laptop".into(),
            claude_pid: 99,
            cwd: "/src/api".into(),
            status: PeerStatus::Working,
            attached: true,
            wake_waits: 1,
        }],
    }
}

fn attached(name: &str) -> AttachedInfo {
    AttachedInfo {
        session_id: "ctl-session".into(),
        mesh_id: "mesh_local".into(),
        mesh_slug: "local".into(),
        display_name: name.into(),
        member: "ab".repeat(32),
        resumed: false,
        pending: 0,
        link: LinkState::Connected,
    }
}

fn peer(name: &str, is_self: bool) -> PeerView {
    PeerView {
        peer: Peer {
            member: "cd".repeat(32),
            session_id: format!("sess-{name}"),
            display_name: name.into(),
            status: PeerStatus::Idle,
            summary: "working on the API".into(),
            groups: vec!["backend".into()],
            cwd: "/src".into(),
            host: "laptop".into(),
            connected_at: 1_764_168_000_000,
        },
        is_self,
    }
}

fn inbox_message() -> InboxMessage {
    InboxMessage {
        message_id: "msg_1".into(),
        mesh_slug: "local".into(),
        from: MessageSender {
            member: "cd".repeat(32),
            session_id: "sess-api".into(),
            display_name: "api@laptop".into(),
        },
        to: "web@desk".into(),
        priority: Priority::Now,
        text: "the schema changed".into(),
        sent_at: 1_764_168_000_000,
        received_at: 1_764_168_000_100,
    }
}

/// A daemon that answers every request the way a healthy one would.
fn healthy(home: &Home) -> FakeDaemon {
    FakeDaemon::start(
        home,
        Box::new(|r| match r {
            Request::DaemonStatus => Ok(Response::DaemonStatus(daemon_status())),
            Request::Attach(a) => Ok(Response::Attached(attached(
                a.display_name.as_deref().unwrap_or("?"),
            ))),
            Request::ListPeers => Ok(Response::Peers {
                peers: vec![peer("ctl@host", true), peer("api@laptop", false)],
            }),
            Request::Send(s) if s.to == "nobody" => Err(IpcError::new(
                "unknown_target",
                "no session is called `nobody` in mesh local",
            )),
            Request::Send(_) => Ok(Response::Sent(SentInfo {
                message_id: "msg_42".into(),
                recipients: vec![RecipientView {
                    member: "cd".repeat(32),
                    session_id: Some("sess-api".into()),
                    display_name: Some("api@laptop".into()),
                    state: DeliveryState::Delivered,
                }],
            })),
            Request::ListOutbox => Ok(Response::Outbox {
                messages: vec![OutboxEntry {
                    message_id: "msg_stuck".into(),
                    mesh_slug: "team".into(),
                    to: "@backend".into(),
                    created_at: 1_764_168_000_000,
                    attempts: 7,
                    last_error: Some("broker unreachable".into()),
                }],
            }),
            Request::HookContext(_) => Ok(Response::HookContext {
                session: Some("sess-web".into()),
                messages: vec![inbox_message()],
            }),
            Request::Detach | Request::ReloadConfig | Request::HookConfirm { .. } => {
                Ok(Response::Done)
            }
            other => Err(IpcError::new("unknown_op", format!("{other:?}"))),
        }),
    )
}

#[test]
fn status_and_list_show_the_daemon_view() {
    let home = Home::new();
    let _d = healthy(&home);
    let run = home.run(["status"]);
    run.assert_code(0);
    for needle in ["running", "api@laptop", "connected", "local", "attached"] {
        assert!(run.stdout.contains(needle), "{needle}: {}", run.stdout);
    }
    let v = home.run(["status", "--json"]);
    v.assert_code(0);
    let v = v.json();
    assert_eq!(v["daemon"]["running"], true);
    assert_eq!(v["daemon"]["meshes"][0]["outboxDepth"], 2);
    assert_eq!(v["daemon"]["sessions"][0]["claudePid"], 99);

    // The local mesh is not in the config, but the daemon runs it.
    let list = home.run(["list", "--json"]);
    list.assert_code(0);
    let l = list.json();
    assert_eq!(l["daemonRunning"], true);
    assert_eq!(l["meshes"][0]["slug"], "local");
    assert_eq!(l["meshes"][0]["link"], "connected");
    assert_eq!(l["meshes"][0]["sessions"], 1);
}

#[test]
fn send_attaches_as_ctl_with_its_own_pid_sends_and_detaches() {
    let home = Home::new();
    let d = healthy(&home);
    let child = home
        .cmd([
            "send",
            "--mesh",
            "local",
            "--priority",
            "now",
            "api@laptop",
            "tests",
            "are",
            "green",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = common::Run::from(child.wait_with_output().unwrap());
    out.assert_code(0);
    assert!(out.stdout.contains("msg_42"), "{}", out.stdout);
    assert!(
        out.stdout.contains("api@laptop delivered"),
        "{}",
        out.stdout
    );
    let reqs = d.requests();
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    match &reqs[0] {
        Request::Attach(a) => {
            assert_eq!(a.claude_pid, pid, "claudePid is ctl's own pid");
            assert_eq!(a.mesh.as_deref(), Some("local"));
            // The member's name: no local entry in this config, so user@host.
            let name = a.display_name.as_deref().unwrap();
            assert!(!name.starts_with("ctl@") && name.contains('@'), "{name}");
        }
        other => panic!("first request {other:?}"),
    }
    match &reqs[1] {
        Request::Send(s) => {
            assert_eq!(s.to, "api@laptop");
            assert_eq!(s.text, "tests are green");
            assert_eq!(s.priority, Priority::Now);
        }
        other => panic!("second request {other:?}"),
    }
    assert_eq!(reqs[2], Request::Detach);

    // A refused send still detaches, and says why.
    let bad = home.run(["send", "nobody", "hi"]);
    bad.assert_code(1);
    assert!(
        bad.stderr.contains("no session is called `nobody`"),
        "{}",
        bad.stderr
    );
    assert_eq!(d.requests().last(), Some(&Request::Detach));
}

#[test]
fn peers_lists_the_others_and_outbox_the_stuck_messages() {
    let home = Home::new();
    let _d = healthy(&home);
    let run = home.run(["peers", "--json"]);
    run.assert_code(0);
    let v = run.json();
    let peers = v["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "self is left out: {v}");
    assert_eq!(peers[0]["displayName"], "api@laptop");
    assert_eq!(v["mesh"], "local", "{v}");
    assert_eq!(v["default"], true, "no mesh named: the default: {v}");
    let table = home.run(["peers"]);
    table.assert_code(0);
    assert!(table.stdout.contains("NAME"), "{}", table.stdout);
    // Which mesh this is, as `status` would say it.
    assert!(
        table
            .stdout
            .lines()
            .next()
            .is_some_and(|l| l.contains("mesh: local, the default mesh (link ")),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("@backend"), "{}", table.stdout);

    let out = home.run(["outbox"]);
    out.assert_code(0);
    assert!(out.stdout.contains("msg_stuck"), "{}", out.stdout);
    assert!(out.stdout.contains("broker unreachable"), "{}", out.stdout);
    let j = home.run(["outbox", "--json"]);
    assert_eq!(j.json()["messages"][0]["attempts"], 7);
}

#[test]
fn the_hook_prints_pending_messages_as_additional_context() {
    use std::io::Write;
    let home = Home::new();
    let d = healthy(&home);
    let mut child = home
        .cmd(["hook"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"session_id":"x","hook_event_name":"PostToolUse","tool_name":"Bash"}"#)
        .unwrap();
    let out = common::Run::from(child.wait_with_output().unwrap());
    out.assert_code(0);
    let v = out.json();
    assert_eq!(v["hookSpecificOutput"]["hookEventName"], "PostToolUse");
    let ctx = v["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap();
    assert!(ctx.contains("from api@laptop"), "{ctx}");
    assert!(ctx.contains("the schema changed"), "{ctx}");
    assert_eq!(
        d.requests(),
        vec![Request::HookContext(HookContextArgs::default())]
    );
}

/// Runs `hook` with `input` on its stdin.
fn run_hook(home: &Home, input: &str) -> common::Run {
    home.run_with_stdin(["hook"], input)
}

#[test]
fn the_hook_passes_the_transcript_to_the_daemon() {
    let home = Home::new();
    let d = healthy(&home);
    let dir = tempfile::tempdir().unwrap();
    let transcript = dir.path().join("sess-1.jsonl");
    let input = serde_json::json!({
        "session_id": "sess-1",
        "hook_event_name": "PostToolUse",
        "transcript_path": transcript,
    })
    .to_string();
    run_hook(&home, &input).assert_code(0);
    // One request: the daemon confirms the transcript's channel messages
    // before it hands anything out.
    assert_eq!(
        d.requests(),
        vec![Request::HookContext(HookContextArgs {
            transcript_path: Some(transcript.display().to_string())
        })]
    );
    // A relative path is not Claude Code's: left out, the hook still runs.
    let input = r#"{"hook_event_name":"PostToolUse","transcript_path":"t.jsonl"}"#;
    run_hook(&home, input).assert_code(0);
    assert_eq!(
        d.requests().last(),
        Some(&Request::HookContext(HookContextArgs::default()))
    );
}

#[test]
fn the_hook_stays_silent_when_the_daemon_refuses() {
    let home = Home::new();
    let _d = FakeDaemon::start(
        &home,
        Box::new(|_| {
            Err(IpcError::new(
                "not_a_claude_process",
                "no session's Claude Code is an ancestor of this process",
            ))
        }),
    );
    let out = home.run(["hook"]);
    out.assert_code(0);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

#[test]
fn join_and_leave_tell_the_running_daemon_to_reload() {
    let broker = TestBroker::start();
    let (_, _, link) = broker.mesh_and_invite("team", None);
    let home = Home::new();
    let d = healthy(&home);
    let run = home.run(["join", &link]);
    run.assert_code(0);
    assert!(run.stdout.contains("told to reload"), "{}", run.stdout);
    assert_eq!(d.requests(), vec![Request::ReloadConfig]);
    let left = home.run(["leave", "team", "--json"]);
    left.assert_code(0);
    let v = left.json();
    assert_eq!(v["broker"], "left");
    assert_eq!(v["daemon"], "reloaded");
    assert_eq!(
        d.requests(),
        vec![Request::ReloadConfig, Request::ReloadConfig]
    );
}
