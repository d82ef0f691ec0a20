//! The daemon going away mid-session: a clear tool error while it cannot
//! come back, and recovery on the next call once it can.
//!
//! Needs the real daemon. The shim is pointed at a wrapper script that
//! starts the real `claudemeshd` unless a "blocked" file exists, so that
//! the test decides when the daemon may return.

mod common;

use std::time::Duration;

use common::{Home, Shim, daemon_exe};
use serde_json::json;

#[test]
fn the_shim_recovers_when_the_daemon_returns() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = tempfile::tempdir().unwrap();
    let blocked = scratch.path().join("blocked");
    let wrapper = scratch.path().join("claudemeshd-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ -e '{}' ]; then echo 'claudemeshd: blocked by the test' >&2; exit 1; fi\nexec '{}' \"$@\"\n",
            blocked.display(),
            daemon_exe().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = Home::with_daemon(wrapper);

    let mut alice = Shim::start(&home, "alice", &[]);
    let (_, data) = alice.ok("list_peers", json!({}));
    let me = data["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["self"] == true)
        .unwrap()
        .clone();
    assert_eq!(me["name"], "alice");

    // The daemon dies and cannot come back.
    std::fs::write(&blocked, b"").unwrap();
    home.kill_daemon();
    let (is_error, text, result) = alice.call("list_peers", json!({}));
    assert!(is_error, "{result}");
    assert!(text.contains("not reachable"), "{text}");
    assert!(text.contains("claudemesh-ctl doctor"), "{text}");
    assert!(
        text.contains("blocked by the test"),
        "quotes the daemon's log: {text}"
    );
    assert_eq!(result["structuredContent"]["error"], "daemon_unreachable");

    // It may come back: the next call starts it and re-attaches.
    std::fs::remove_file(&blocked).unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let (_, data) = alice.ok("list_peers", json!({}));
    let again = data["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["self"] == true)
        .unwrap()
        .clone();
    assert_eq!(again["name"], "alice");
    let (text, _) = alice.ok("set_summary", json!({"summary": "back"}));
    assert!(text.contains("back"), "{text}");
}
