//! The conversation every end-to-end run plays, whatever the mesh: peers,
//! direct messages both ways, a group message, a broadcast, and receipts
//! reaching `seen`. The offline part differs per setup and lives in the
//! tests themselves.

use std::time::Duration;

use serde_json::{Value, json};

use crate::inbox::{Path, assert_not_shown_again, receive};
use crate::mcp::McpClient;
use crate::wait;

pub const LIMIT: Duration = Duration::from_secs(30);

/// The names `client` sees, and which one it is.
pub fn peers(client: &mut McpClient) -> (Vec<String>, Option<String>) {
    let (_, result) = client.tool_ok("list_peers", json!({}));
    let list = result["structuredContent"]["peers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let me = list
        .iter()
        .find(|p| p["self"] == true)
        .and_then(|p| p["name"].as_str())
        .map(str::to_owned);
    let names = list
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    (names, me)
}

/// Waits until every client sees all of `names` (itself included, marked).
pub fn wait_for_peers(clients: &mut [&mut McpClient], names: &[&str]) {
    for client in clients.iter_mut() {
        let own = client.name.clone();
        wait::until(&format!("{own} to see {names:?}"), LIMIT, || {
            let (seen, me) = peers(client);
            let all = names.iter().all(|n| seen.iter().any(|s| s == n));
            (all && me.as_deref() == Some(own.as_str())).then_some(())
        });
    }
}

/// Sends and returns the message id.
pub fn send(from: &mut McpClient, to: &str, text: &str, priority: &str) -> String {
    let (_, result) = from.tool_ok(
        "send_message",
        json!({"to": to, "text": text, "priority": priority}),
    );
    result["structuredContent"]["messageId"]
        .as_str()
        .unwrap_or_else(|| panic!("send_message returned no messageId: {result}"))
        .to_owned()
}

/// Each recipient gets `text` exactly once, from `sender`; how each got it.
pub fn expect_once(recipients: &mut [&mut McpClient], sender: &str, text: &str) -> Vec<Path> {
    let mut paths = Vec::new();
    for r in recipients.iter_mut() {
        let (path, from) = receive(r, text, LIMIT);
        assert_eq!(
            from, sender,
            "{} got {text:?} from the wrong sender",
            r.name
        );
        assert_not_shown_again(r, text);
        paths.push(path);
    }
    paths
}

/// The recipients' states of `message_id`, as the sender sees them.
pub fn status(sender: &mut McpClient, message_id: &str) -> Vec<Value> {
    let (_, result) = sender.tool_ok("message_status", json!({"message_id": message_id}));
    result["structuredContent"]["recipients"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until `message_id` is `seen` by `count` recipients.
pub fn wait_seen(sender: &mut McpClient, message_id: &str, count: usize) {
    wait::until(&format!("{message_id} to be seen"), LIMIT, || {
        let r = status(sender, message_id);
        (r.len() == count && r.iter().all(|x| x["state"] == "seen")).then_some(())
    });
}

/// Waits until the sender sees the truth about `message_id` for recipients
/// that got it by `paths`: `seen` either way. When `check_messages` showed
/// it, at once; when it was pushed, once the transcript the client wrote
/// (as Claude Code does) confirmed it, which the daemon reads when the
/// next path shows messages (`assert_not_shown_again` calls
/// `check_messages`; `docs/shim.md`).
pub fn wait_states(sender: &mut McpClient, message_id: &str, paths: &[Path]) {
    let want = vec!["seen"; paths.len()];
    wait::until(&format!("{message_id} to be {want:?}"), LIMIT, || {
        let r = status(sender, message_id);
        let mut got: Vec<&str> = r.iter().filter_map(|x| x["state"].as_str()).collect();
        got.sort_unstable();
        (got == want).then_some(())
    });
}

/// Runs the shared conversation. `a` is alone on its side; `b` and `c`
/// are in the group `@backend`.
pub fn converse(a: &mut McpClient, b: &mut McpClient, c: &mut McpClient) {
    let (an, bn, cn) = (a.name.clone(), b.name.clone(), c.name.clone());
    wait_for_peers(&mut [a, b, c], &[&an, &bn, &cn]);

    // Direct messages, both ways.
    let dm = send(a, &bn, "dm: a to b", "now");
    let paths = expect_once(&mut [b], &an, "dm: a to b");
    wait_states(a, &dm, &paths);
    let reply = send(b, &an, "dm: b to a", "next");
    let paths = expect_once(&mut [a], &bn, "dm: b to a");
    wait_states(b, &reply, &paths);

    // A group: both members, not the sender.
    let group = send(a, "@backend", "group: to backend", "now");
    let paths = expect_once(&mut [b, c], &an, "group: to backend");
    wait_states(a, &group, &paths);

    // A broadcast: everyone but the sender itself.
    let all = send(c, "*", "broadcast: from c", "low");
    let paths = expect_once(&mut [a, b], &cn, "broadcast: from c");
    assert_not_shown_again(c, "broadcast: from c");
    wait_states(c, &all, &paths);
}
