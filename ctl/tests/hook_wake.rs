//! `claudemesh-ctl hook` for `Stop` (the wake) and `SessionStart`,
//! against a scripted fake daemon: the sequences of answers (a timeout and
//! then messages, an ended session) are chosen here, which the real daemon
//! does not do on request. The real daemon's side is
//! `daemon/tests/daemon_wake.rs`; both with the real Claude Code,
//! `tests/tests/claude_wake.rs`.

#![cfg(unix)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use claudemesh_protocol::ipc::{
    HookSessionInfo, InboxMessage, PeerView, Request, Response, WakeLevel, WakeOutcome,
};
use claudemesh_protocol::wire::{MessageSender, Peer, PeerStatus, Priority};
use common::{FakeDaemon, Home};

const STOP: &str = r#"{"session_id":"s-1","hook_event_name":"Stop","stop_hook_active":false}"#;

fn message(text: &str) -> InboxMessage {
    InboxMessage {
        message_id: "msg_77".into(),
        mesh_slug: "team".into(),
        from: MessageSender {
            member: "cd".repeat(32),
            session_id: "sess-api".into(),
            display_name: "api@laptop".into(),
        },
        to: "web@desk".into(),
        priority: Priority::Next,
        text: text.into(),
        sent_at: 0,
        received_at: 0,
    }
}

/// Runs `hook ARGS…` with `input` on its stdin.
fn run_hook(home: &Home, args: &[&str], input: &str) -> common::Run {
    home.run_with_stdin(std::iter::once(&"hook").chain(args), input)
}

fn waits(d: &FakeDaemon) -> Vec<(WakeLevel, u64)> {
    d.requests()
        .into_iter()
        .filter_map(|r| match r {
            Request::WaitWake(a) => Some((a.wake, a.timeout_ms)),
            _ => None,
        })
        .collect()
}

/// Answers `wait_wake` with `timeout` the first time, then with `last`.
fn daemon_answering(home: &Home, last: WakeOutcome) -> FakeDaemon {
    let asked = Arc::new(AtomicUsize::new(0));
    FakeDaemon::start(
        home,
        Box::new(move |r| match r {
            Request::WaitWake(_) => {
                let first = asked.fetch_add(1, Ordering::SeqCst) == 0;
                let outcome = if first { WakeOutcome::Timeout } else { last };
                Ok(Response::Woken {
                    session: Some("sess-web".into()),
                    outcome,
                    messages: if outcome == WakeOutcome::Messages {
                        vec![message("please review the api")]
                    } else {
                        vec![]
                    },
                })
            }
            other => panic!("unexpected request {other:?}"),
        }),
    )
}

#[test]
fn a_stop_hook_waits_again_after_a_timeout_and_wakes_with_exit_2() {
    let home = Home::new();
    let d = daemon_answering(&home, WakeOutcome::Messages);
    let out = run_hook(&home, &["--wake", "next"], STOP);
    out.assert_code(2);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("written by a peer session, not by your user"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "<channel source=\"claudemesh\" from=\"api@laptop\" mesh=\"team\" to=\"web@desk\" \
             message_id=\"msg_77\" priority=\"next\""
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("please review the api"),
        "{}",
        out.stderr
    );
    let w = waits(&d);
    assert_eq!(w.len(), 2, "re-armed after the timeout: {w:?}");
    assert!(
        w.iter()
            .all(|(level, ms)| *level == WakeLevel::Next && *ms > 0)
    );
}

#[test]
fn a_stop_hook_ends_quietly_when_the_session_ends() {
    let home = Home::new();
    let _d = daemon_answering(&home, WakeOutcome::Ended);
    let out = run_hook(&home, &["--wake", "now"], STOP);
    out.assert_code(0);
    assert!(
        out.stderr.is_empty(),
        "nothing reaches the model: {}",
        out.stderr
    );
}

#[test]
fn claudemesh_wake_overrides_the_installed_setting() {
    let mut home = Home::new();
    home.env("CLAUDEMESH_WAKE", "off");
    let d = daemon_answering(&home, WakeOutcome::Messages);
    run_hook(&home, &["--wake", "next"], STOP).assert_code(0);
    assert!(waits(&d).is_empty(), "off: no wait");

    home.env("CLAUDEMESH_WAKE", "now");
    run_hook(&home, &["--wake", "next"], STOP).assert_code(2);
    assert!(waits(&d).iter().all(|(level, _)| *level == WakeLevel::Now));
}

#[test]
fn a_stop_hook_of_print_mode_does_not_wait() {
    // `claude -p` waits up to 30 s for a background hook before it exits.
    let mut home = Home::new();
    home.env("CLAUDE_CODE_ENTRYPOINT", "sdk-cli");
    let d = daemon_answering(&home, WakeOutcome::Messages);
    run_hook(&home, &["--wake", "next"], STOP).assert_code(0);
    assert!(waits(&d).is_empty(), "no wait in print mode");
}

#[test]
fn a_stop_hook_without_a_daemon_exits_0() {
    let home = Home::new();
    let out = run_hook(&home, &[], STOP);
    out.assert_code(0);
    assert!(out.stderr.is_empty(), "{}", out.stderr);
}

#[test]
fn a_session_start_hook_says_where_the_session_is() {
    let home = Home::new();
    let peer = |name: &str, me: bool| PeerView {
        peer: Peer {
            member: "ab".repeat(32),
            session_id: name.into(),
            display_name: name.into(),
            status: PeerStatus::Working,
            summary: String::new(),
            groups: vec![],
            cwd: "/w".into(),
            host: "laptop".into(),
            connected_at: 0,
        },
        is_self: me,
    };
    let asked = Arc::new(AtomicUsize::new(0));
    let _d = FakeDaemon::start(
        &home,
        Box::new(move |r| match r {
            // The shim has not attached yet the first time.
            Request::HookSession if asked.fetch_add(1, Ordering::SeqCst) == 0 => {
                Ok(Response::HookSession { session: None })
            }
            Request::HookSession => Ok(Response::HookSession {
                session: Some(HookSessionInfo {
                    display_name: "web@desk".into(),
                    mesh_slug: "team".into(),
                    peers: vec![peer("web@desk", true), peer("api@laptop", false)],
                    pending: 1,
                }),
            }),
            other => panic!("unexpected request {other:?}"),
        }),
    );
    let out = run_hook(
        &home,
        &["--wake", "next"],
        r#"{"session_id":"s-1","hook_event_name":"SessionStart","source":"startup"}"#,
    );
    out.assert_code(0);
    let v = out.json();
    assert_eq!(v["hookSpecificOutput"]["hookEventName"], "SessionStart");
    let ctx = v["hookSpecificOutput"]["additionalContext"]
        .as_str()
        .unwrap();
    assert!(
        ctx.contains("you are \"web@desk\" on the mesh \"team\""),
        "{ctx}"
    );
    assert!(ctx.contains("api@laptop (working, on laptop)"), "{ctx}");
    assert!(ctx.contains("1 message waits for you"), "{ctx}");
    assert!(ctx.contains("ListAgents"), "{ctx}");
}
