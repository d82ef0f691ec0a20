//! `wait_wake` against a real daemon on the local mesh: what a Claude Code
//! `Stop` hook waits on to wake its idle session (`docs/ipc.md`). The test
//! process plays the Claude Code of the woken session (a hook is one of
//! its descendants: here, itself); a relay helper process is the sender's.

mod support;

use std::time::Duration;

use claudemesh_protocol::ipc::{
    Event, InboxMessage, IpcError, Request, Response, SendArgs, WaitWakeArgs, WakeLevel,
    WakeOutcome,
};
use claudemesh_protocol::wire::Priority;
use support::client::{TestClient, WAIT};
use support::{Daemon, Home, Relay, RelayMode};

#[test]
fn relay_helper() {
    support::relay::helper_main();
}

/// How long a test waits to be sure something did not happen.
const QUIET: Duration = Duration::from_millis(800);

fn wait_wake(wake: WakeLevel, timeout_ms: u64) -> Request {
    Request::WaitWake(WaitWakeArgs {
        wake,
        timeout_ms,
        transcript_path: None,
    })
}

fn woken(answer: Option<Result<Response, IpcError>>) -> (WakeOutcome, Vec<InboxMessage>) {
    match answer {
        Some(Ok(Response::Woken {
            outcome, messages, ..
        })) => (outcome, messages),
        other => panic!("wait_wake answered {other:?}"),
    }
}

/// Arms a `wait_wake` on `hook` and checks that nothing answers it yet;
/// its request id.
async fn arm(hook: &mut TestClient, wake: WakeLevel) -> u64 {
    let id = hook.request_id(wait_wake(wake, 60_000)).await;
    assert!(
        hook.try_answer(id, Duration::from_millis(300))
            .await
            .is_none(),
        "answered before anything happened"
    );
    id
}

/// A daemon, the idle session `target` (of the test process), and a
/// sender session of another process.
struct World {
    daemon: Daemon,
    _home: Home,
    target: TestClient,
    sender: Relay,
}

impl World {
    async fn new() -> World {
        let home = Home::new();
        let daemon = Daemon::start_ready(&home, &[]).await;
        let mut target = daemon.client().await;
        target.attach(std::process::id(), "idle", None).await;
        let mut sender = Relay::spawn(&home.socket(), RelayMode::SelfIsClaude).await;
        sender.client.attach(sender.claude_pid, "asker", None).await;
        World {
            daemon,
            _home: home,
            target,
            sender,
        }
    }

    async fn send(&mut self, text: &str, priority: Priority) {
        let r = self
            .sender
            .client
            .request(Request::Send(SendArgs {
                to: "idle".into(),
                text: text.into(),
                priority,
            }))
            .await;
        assert!(matches!(r, Ok(Response::Sent(_))), "send answered {r:?}");
    }

    async fn pending(&mut self) -> u32 {
        match self.target.request(Request::Pending).await {
            Ok(Response::Pending { count }) => count,
            other => panic!("pending answered {other:?}"),
        }
    }

    /// The waits armed for the target (`daemon_status`).
    async fn wake_waits(&mut self) -> u32 {
        match self.target.request(Request::DaemonStatus).await {
            Ok(Response::DaemonStatus(s)) => s
                .sessions
                .iter()
                .find(|s| s.display_name == "idle")
                .map_or(0, |s| s.wake_waits),
            other => panic!("daemon_status answered {other:?}"),
        }
    }

    /// The message events pushed to the target's shim so far.
    async fn pushed_texts(&mut self) -> Vec<String> {
        let mut texts = Vec::new();
        while let Some(e) = self.target.next_event(Duration::from_millis(100)).await {
            if let Event::Message(m) = e {
                texts.push(m.text);
            }
        }
        texts
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_message_wakes_the_waiting_hook_and_is_claimed_like_a_push() {
    let mut w = World::new().await;
    let mut hook = w.daemon.client().await;
    let id = hook.request_id(wait_wake(WakeLevel::Next, 60_000)).await;
    assert!(
        hook.try_answer(id, QUIET).await.is_none(),
        "nothing to wake for yet"
    );
    w.send("please review the api", Priority::Next).await;
    let (outcome, messages) = woken(hook.try_answer(id, WAIT).await);
    assert_eq!(outcome, WakeOutcome::Messages);
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].text, "please review the api");
    assert_eq!(messages[0].from.display_name, "asker");
    assert_eq!(messages[0].priority, Priority::Next);
    // Claimed: held back from the other paths (pending, fetch, hooks), and
    // not pushed as a channel event (the wake shows it).
    assert_eq!(w.pending().await, 0);
    assert!(w.target.fetch(false).await.is_empty());
    assert!(w.pushed_texts().await.is_empty());
    // Confirmed by the transcript like a push: then seen.
    hook.request(Request::HookConfirm {
        message_ids: vec![messages[0].message_id.clone()],
    })
    .await
    .expect("hook_confirm");
    let mut again = w.daemon.client().await;
    let id = again.request_id(wait_wake(WakeLevel::Next, 60_000)).await;
    assert!(
        again.try_answer(id, QUIET).await.is_none(),
        "a claimed message does not wake twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_already_wait_answer_at_once() {
    let mut w = World::new().await;
    w.send("sent while you worked", Priority::Now).await;
    // Stored, not yet shown (it was pushed as an event: no wait was armed,
    // but the shim did not claim it).
    support::eventually(WAIT, async || (w.pending().await == 1).then_some(())).await;
    let mut hook = w.daemon.client().await;
    let (outcome, messages) = woken(Some(hook.request(wait_wake(WakeLevel::Now, 60_000)).await));
    assert_eq!(outcome, WakeOutcome::Messages);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].text, "sent while you worked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_messages_sent_together_are_one_answer() {
    let mut w = World::new().await;
    let mut hook = w.daemon.client().await;
    let id = arm(&mut hook, WakeLevel::Next).await;
    w.send("first of two", Priority::Next).await;
    w.send("second of two", Priority::Now).await;
    let (outcome, messages) = woken(hook.try_answer(id, WAIT).await);
    assert_eq!(outcome, WakeOutcome::Messages);
    let texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["first of two", "second of two"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_never_wakes_and_now_level_ignores_next() {
    let mut w = World::new().await;
    let mut hook = w.daemon.client().await;
    let id = hook.request_id(wait_wake(WakeLevel::Now, 60_000)).await;
    w.send("fyi, low", Priority::Low).await;
    w.send("when you can", Priority::Next).await;
    assert!(
        hook.try_answer(id, QUIET).await.is_none(),
        "neither low nor next wakes at level now"
    );
    // Still there for the next turn, and pushed as events as before.
    assert_eq!(w.pending().await, 2);
    assert_eq!(w.pushed_texts().await, ["fyi, low", "when you can"]);
    w.send("urgent", Priority::Now).await;
    let (outcome, messages) = woken(hook.try_answer(id, WAIT).await);
    assert_eq!(outcome, WakeOutcome::Messages);
    let texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["urgent"], "only what wakes is claimed");
    assert_eq!(w.pending().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_times_out_and_the_caller_waits_again() {
    let mut w = World::new().await;
    let mut hook = w.daemon.client().await;
    w.send("low stays", Priority::Low).await;
    let (outcome, messages) = woken(Some(hook.request(wait_wake(WakeLevel::Next, 500)).await));
    assert_eq!(outcome, WakeOutcome::Timeout);
    assert!(messages.is_empty());
    let id = hook.request_id(wait_wake(WakeLevel::Next, 60_000)).await;
    w.send("after the re-arm", Priority::Next).await;
    let (outcome, messages) = woken(hook.try_answer(id, WAIT).await);
    assert_eq!(outcome, WakeOutcome::Messages);
    assert_eq!(messages[0].text, "after the re-arm");
    // Out of range: a structured error, nothing armed.
    for bad in [0, 3_600_001] {
        let e = hook
            .request(wait_wake(WakeLevel::Next, bad))
            .await
            .expect_err("refused");
        assert_eq!(e.code, "malformed", "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_ends_when_the_session_leaves() {
    let mut w = World::new().await;
    let mut hook = w.daemon.client().await;
    let id = arm(&mut hook, WakeLevel::Next).await;
    w.target.request(Request::Detach).await.expect("detach");
    let (outcome, messages) = woken(hook.try_answer(id, WAIT).await);
    assert_eq!(outcome, WakeOutcome::Ended);
    assert!(messages.is_empty());
    // No session at all: said at once.
    let (outcome, _) = woken(Some(hook.request(wait_wake(WakeLevel::Next, 60_000)).await));
    assert_eq!(outcome, WakeOutcome::NoSession);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_of_a_new_turn_ends_the_wait_and_shows_the_message() {
    let mut w = World::new().await;
    let mut hook = w.daemon.client().await;
    let id = hook.request_id(wait_wake(WakeLevel::Now, 60_000)).await;
    w.send("shown by the prompt", Priority::Next).await;
    assert!(
        hook.try_answer(id, Duration::from_millis(300))
            .await
            .is_none()
    );
    // A person typed: the UserPromptSubmit hook shows it, the wait is over.
    let mut prompt = w.daemon.client().await;
    match prompt
        .request(Request::HookContext(Default::default()))
        .await
    {
        Ok(Response::HookContext { messages, .. }) => {
            assert_eq!(messages.len(), 1);
            assert_eq!(messages[0].text, "shown by the prompt");
        }
        other => panic!("hook_context answered {other:?}"),
    }
    let (outcome, messages) = woken(hook.try_answer(id, WAIT).await);
    assert_eq!(outcome, WakeOutcome::Turn);
    assert!(messages.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_hook_connection_disarms_its_wait() {
    let mut w = World::new().await;
    let mut hook = w.daemon.client().await;
    arm(&mut hook, WakeLevel::Next).await;
    assert_eq!(w.wake_waits().await, 1, "daemon_status shows the wait");
    drop(hook);
    support::eventually(WAIT, async || (w.wake_waits().await == 0).then_some(()))
        .await
        .expect("the wait is disarmed once its connection closes");
    // Nothing claims it: it is pushed to the shim as before, and unread.
    w.send("nobody waits", Priority::Next).await;
    let pushed = support::eventually(WAIT, async || {
        let texts = w.pushed_texts().await;
        (!texts.is_empty()).then_some(texts)
    })
    .await
    .expect("pushed");
    assert_eq!(pushed, ["nobody waits"]);
    assert_eq!(w.pending().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_start_hook_learns_name_mesh_peers_and_pending() {
    let mut w = World::new().await;
    w.send("waiting for you", Priority::Low).await;
    support::eventually(WAIT, async || (w.pending().await == 1).then_some(())).await;
    let mut hook = w.daemon.client().await;
    match hook.request(Request::HookSession).await {
        Ok(Response::HookSession { session: Some(s) }) => {
            assert_eq!(s.display_name, "idle");
            assert_eq!(s.mesh_slug, "local");
            assert_eq!(s.pending, 1);
            let names: Vec<(&str, bool)> = s
                .peers
                .iter()
                .map(|p| (p.peer.display_name.as_str(), p.is_self))
                .collect();
            assert!(names.contains(&("idle", true)), "{names:?}");
            assert!(names.contains(&("asker", false)), "{names:?}");
        }
        other => panic!("hook_session answered {other:?}"),
    }
    // It marks nothing.
    assert_eq!(w.pending().await, 1);
}
