//! A channel push is not proof that the model saw a message: before a path
//! shows a session's messages (`fetch_inbox` with `mark_seen`, which
//! `check_messages` is, and `hook_context`), the daemon confirms the
//! pushes the session's transcript shows (seen, not shown again), then
//! shows every other unseen message at once, pushed or not.
//!
//! The transcript is a file the test writes the way Claude Code does (one
//! JSON line per entry, the channel message as a `<channel …>` tag): the
//! stand-in for Claude Code here. Real daemon; the push window is the
//! default 20 s, far longer than any of these tests.

mod support;

use std::path::Path;

use claudemesh_protocol::ipc::{
    AttachArgs, HookContextArgs, InboxMessage, IpcErrorCode, Request, Response, SendArgs,
};
use claudemesh_protocol::wire::{DeliveryState, Priority};
use support::client::{TestClient, WAIT};
use support::{Daemon, Home, Relay, RelayMode, eventually};

#[test]
fn relay_helper() {
    support::relay::helper_main();
}

/// A session named `target` (the test process is its Claude Code) that
/// names `transcript` at attach, and a peer that sends it messages.
struct Pair {
    _home: Home,
    daemon: Daemon,
    target: TestClient,
    sender: Relay,
}

impl Pair {
    async fn new(transcript: Option<&Path>) -> Pair {
        let home = Home::new();
        let daemon = Daemon::start_ready(&home, &[]).await;
        let mut target = daemon.client().await;
        match target
            .request(Request::Attach(AttachArgs {
                mesh: None,
                display_name: Some("target".into()),
                cwd: "/tmp/target".into(),
                claude_pid: std::process::id(),
                groups: vec![],
                transient: false,
                transcript_path: transcript.map(|p| p.display().to_string()),
            }))
            .await
        {
            Ok(Response::Attached(_)) => {}
            other => panic!("attach answered {other:?}"),
        }
        let mut sender = Relay::spawn(&home.socket(), RelayMode::SelfIsClaude).await;
        sender
            .client
            .attach(sender.claude_pid, "pusher", None)
            .await;
        Pair {
            _home: home,
            daemon,
            target,
            sender,
        }
    }

    /// Sends `text` to the target, which gets it as an event and marks it
    /// pushed, as the shim does before the channel notification. The
    /// sender's id and the pushed message.
    async fn push(&mut self, text: &str) -> (String, InboxMessage) {
        let sent = match self
            .sender
            .client
            .request(Request::Send(SendArgs {
                to: "target".into(),
                text: text.into(),
                priority: Priority::Now,
            }))
            .await
        {
            Ok(Response::Sent(info)) => info.message_id,
            other => panic!("send answered {other:?}"),
        };
        let event = self
            .target
            .next_message(WAIT)
            .await
            .expect("the push event");
        assert_eq!(event.text, text);
        match self
            .target
            .request(Request::MarkPushed {
                message_ids: vec![event.message_id.clone()],
            })
            .await
        {
            Ok(Response::MarkedPushed { message_ids }) => {
                assert_eq!(message_ids, std::slice::from_ref(&event.message_id));
            }
            other => panic!("mark_pushed answered {other:?}"),
        }
        (sent, event)
    }

    async fn state(&mut self, sent: &str) -> Option<DeliveryState> {
        self.sender.client.first_recipient_state(sent).await
    }

    /// Waits (bounded) for the sender to hear `seen`.
    async fn seen(&mut self, sent: &str) -> bool {
        eventually(WAIT, async || {
            self.sender
                .client
                .first_recipient_state(sent)
                .await
                .filter(|s| *s == DeliveryState::Seen)
        })
        .await
        .is_some()
    }

    /// A hook of the target's Claude Code (the test process).
    async fn hook(&self, transcript: Option<&Path>) -> Result<Vec<InboxMessage>, IpcErrorCode> {
        let mut hook = self.daemon.client().await;
        let args = HookContextArgs {
            transcript_path: transcript.map(|p| p.display().to_string()),
        };
        match hook.request(Request::HookContext(args)).await {
            Ok(Response::HookContext { messages, .. }) => Ok(messages),
            Ok(other) => panic!("hook_context answered {other:?}"),
            Err(e) => Err(e.code),
        }
    }
}

/// Appends one transcript line showing `id` as a channel message, as
/// Claude Code records it.
fn record_channel_message(transcript: &Path, id: &str, text: &str) {
    use std::io::Write;
    let tag = format!(
        "<channel source=\"claudemesh\" from=\"pusher\" message_id=\"{id}\" priority=\"now\">{text}</channel>"
    );
    let line = serde_json::json!({"type": "user", "message": {"role": "user", "content": tag}});
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(transcript)
        .unwrap();
    writeln!(f, "{line}").unwrap();
}

fn texts(messages: &[InboxMessage]) -> Vec<&str> {
    messages.iter().map(|m| m.text.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_not_in_the_transcript_is_shown_by_check_messages_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let transcript = dir.path().join("session.jsonl");
    // Claude Code wrote the session so far, but dropped the push.
    std::fs::write(
        &transcript,
        "{\"type\":\"user\",\"message\":{\"content\":\"hi\"}}\n",
    )
    .unwrap();
    let mut pair = Pair::new(Some(&transcript)).await;
    let (sent, _) = pair.push("dropped by Claude Code").await;

    // `pending` and a look that marks nothing still hold it back.
    match pair.target.request(Request::Pending).await {
        Ok(Response::Pending { count }) => assert_eq!(count, 0),
        other => panic!("pending answered {other:?}"),
    }
    assert!(pair.target.fetch(false).await.is_empty());
    // Shown at once (after at most a second for the transcript to catch
    // up), well within its window, and once.
    let shown = pair.target.fetch(true).await;
    assert_eq!(texts(&shown), ["dropped by Claude Code"]);
    assert!(pair.seen(&sent).await, "the sender hears seen");
    assert!(pair.target.fetch(true).await.is_empty());
    assert!(pair.hook(Some(&transcript)).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_in_the_transcript_is_confirmed_and_not_shown_again() {
    let dir = tempfile::tempdir().unwrap();
    let transcript = dir.path().join("session.jsonl");
    let mut pair = Pair::new(Some(&transcript)).await;
    let (sent, pushed) = pair.push("shown as a channel message").await;
    assert_ne!(pair.state(&sent).await, Some(DeliveryState::Seen));
    // Claude Code showed it: the transcript holds the tag.
    record_channel_message(&transcript, &pushed.message_id, &pushed.text);

    assert!(pair.target.fetch(true).await.is_empty(), "not shown again");
    assert!(pair.seen(&sent).await, "confirmed: the sender hears seen");
    assert!(pair.hook(None).await.unwrap().is_empty());

    // The next one is dropped: shown at once, the confirmed one not again.
    let (_, _) = pair.push("the next one").await;
    assert_eq!(texts(&pair.target.fetch(true).await), ["the next one"]);
}

/// Claude Code writes the channel message a moment after the push; a
/// `check_messages` already under way waits for it rather than showing
/// the message a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_reaches_the_transcript_a_moment_later_is_not_shown_twice() {
    let dir = tempfile::tempdir().unwrap();
    let transcript = dir.path().join("session.jsonl");
    std::fs::write(&transcript, "").unwrap();
    let mut pair = Pair::new(Some(&transcript)).await;
    let (sent, pushed) = pair.push("written a moment later").await;
    let late = transcript.clone();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        record_channel_message(&late, &pushed.message_id, &pushed.text);
    });
    assert!(
        pair.target.fetch(true).await.is_empty(),
        "shown once, as a channel message"
    );
    writer.join().unwrap();
    assert!(pair.seen(&sent).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_names_the_transcript_and_shows_a_dropped_push_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let transcript = dir.path().join("hooked.jsonl");
    // No transcript at attach (an older Claude Code, a wrapper).
    let mut pair = Pair::new(None).await;
    let (sent, pushed) = pair.push("seen in the transcript").await;
    record_channel_message(&transcript, &pushed.message_id, &pushed.text);
    let (_, _) = pair.push("dropped").await;

    // The hook names the transcript: the first is confirmed, the second
    // shown at once.
    let shown = pair.hook(Some(&transcript)).await.unwrap();
    assert_eq!(texts(&shown), ["dropped"]);
    assert!(pair.seen(&sent).await);
    // The daemon keeps the path for check_messages.
    let (_, pushed) = pair.push("third").await;
    record_channel_message(&transcript, &pushed.message_id, &pushed.text);
    assert!(pair.target.fetch(true).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_transcript_a_push_is_shown_rather_than_hidden() {
    let mut pair = Pair::new(None).await;
    let (sent, _) = pair.push("no transcript anywhere").await;
    assert_eq!(
        texts(&pair.hook(None).await.unwrap()),
        ["no transcript anywhere"]
    );
    assert!(pair.seen(&sent).await);
    let missing = Path::new("/nonexistent/claudemesh/t.jsonl");
    let (_, _) = pair.push("a transcript not written yet").await;
    assert_eq!(
        texts(&pair.hook(Some(missing)).await.unwrap()),
        ["a transcript not written yet"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_transcript_path_is_refused_and_changes_nothing() {
    let mut pair = Pair::new(None).await;
    let (_, _) = pair.push("kept").await;
    for bad in [
        "relative.jsonl",
        "/with\nnewline",
        &format!("/{}", "x".repeat(5000)),
    ] {
        assert_eq!(
            pair.hook(Some(Path::new(bad))).await,
            Err(IpcErrorCode::Malformed),
            "{bad:?}"
        );
    }
    let mut other = pair.daemon.client().await;
    let refused = other
        .request(Request::Attach(AttachArgs {
            mesh: None,
            display_name: Some("bad".into()),
            cwd: "/tmp/bad".into(),
            claude_pid: std::process::id(),
            groups: vec![],
            transient: false,
            transcript_path: Some("relative.jsonl".into()),
        }))
        .await;
    assert_eq!(refused.err().map(|e| e.code), Some(IpcErrorCode::Malformed));
    // Nothing was marked: the message is still there to show.
    assert_eq!(texts(&pair.target.fetch(true).await), ["kept"]);
}

/// An older hook confirms with `hook_confirm` (it read the transcript
/// itself): still honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_confirm_from_an_older_hook_marks_a_push_seen() {
    let mut pair = Pair::new(None).await;
    let (sent, pushed) = pair.push("pushed text").await;
    let mut hook = pair.daemon.client().await;
    hook.request(Request::HookConfirm {
        message_ids: vec![pushed.message_id.clone(), "not-ours".into()],
    })
    .await
    .expect("hook_confirm");
    assert!(pair.seen(&sent).await);
    assert!(pair.hook(None).await.unwrap().is_empty());
    assert!(pair.target.fetch(true).await.is_empty());
}
