//! The shim against the official MCP TypeScript SDK client
//! (`tests/js/sdk_client.mjs`, npm `@modelcontextprotocol/sdk`, installed by
//! `.ci/run`): tools listed and called, and a channel notification received
//! for an inbound message (not seen until shown: after the push window
//! `check_messages` shows it once), over the real daemon's local mesh.

use std::path::Path;
use std::process::Command;

use claudemesh_e2e::bins;
use claudemesh_e2e::home::Home;

#[test]
fn the_typescript_sdk_lists_calls_and_receives_notifications() {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
    assert!(
        js.join("node_modules/@modelcontextprotocol/sdk").exists(),
        "the MCP SDK is not installed for the tests: run `npm ci --prefix tests/js` (see .ci/run)"
    );
    let home = Home::new("sdk");
    // A short push window: the SDK client is not Claude Code, no transcript
    // confirms its pushes, so they are unread again after it.
    let mut daemon = home.start_daemon_with_env(&[], &[("CLAUDEMESH_PUSH_CONFIRM_MS", "1000")]);
    // Answering before the shim starts: one it started would lack the window.
    home.wait_answering(&mut daemon);
    let mut cmd = Command::new("node");
    cmd.arg(js.join("sdk_client.mjs"))
        .arg(bins::bin(bins::SHIM))
        .env("CLAUDEMESH_CHANNEL", "1");
    for (k, v) in home.env() {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the SDK client failed:\n{stdout}\n{}\n--- daemon log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        home.daemon_log()
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("no JSON summary ({e}): {stdout}"));
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["status"], serde_json::json!(["seen"]));
    daemon.terminate();
}
