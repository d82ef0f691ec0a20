//! The binary's own surface: `--version`, `--help`, and what a model sees
//! when no daemon can be started. No daemon runs in these tests.

mod common;

use std::process::Command;

use common::{Home, SHIM, Shim};
use serde_json::json;

#[test]
fn version_and_help() {
    let out = Command::new(SHIM).arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.trim(),
        format!("claudemesh-shim {}", env!("CARGO_PKG_VERSION"))
    );

    let out = Command::new(SHIM).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("claude mcp add claudemesh -- claudemesh-shim"),
        "{text}"
    );
    assert!(text.contains("CLAUDEMESH_DISPLAY_NAME"), "{text}");

    let out = Command::new(SHIM).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--help"));
}

#[test]
fn initialize_declares_tools_and_the_channel_without_a_daemon() {
    let home = Home::with_daemon(std::path::PathBuf::from("/nonexistent/claudemeshd"));
    let mut shim = Shim::spawn(&home, "lonely", &[]);
    let init = shim.initialize();
    let result = &init["result"];
    assert_eq!(
        result["capabilities"]["experimental"]["claude/channel"],
        json!({})
    );
    assert!(result["capabilities"]["tools"].is_object());
    assert_eq!(result["serverInfo"]["name"], "claudemesh");

    let tools = shim.request("tools/list", json!({}));
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "list_peers",
            "send_message",
            "check_messages",
            "message_status",
            "set_summary",
            "set_status"
        ]
    );
    for tool in tools["result"]["tools"].as_array().unwrap() {
        assert!(tool["description"].as_str().unwrap().len() > 80, "{tool}");
        assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
    }
}

#[test]
fn a_tool_call_without_a_daemon_is_a_clear_tool_error() {
    let home = Home::with_daemon(std::path::PathBuf::from("/nonexistent/claudemeshd"));
    let mut shim = Shim::start(&home, "lonely", &[]);
    let (is_error, text, result) = shim.call("list_peers", json!({}));
    assert!(is_error, "{result}");
    assert!(text.contains("not reachable"), "{text}");
    assert!(text.contains("claudemesh-ctl doctor"), "{text}");
    assert!(
        text.contains("/nonexistent/claudemeshd"),
        "names the executable: {text}"
    );
    assert_eq!(result["structuredContent"]["error"], "daemon_unreachable");

    // An unknown tool is a protocol error, not a tool result.
    let response = shim.request("tools/call", json!({"name": "nope", "arguments": {}}));
    assert!(
        response["error"]["message"]
            .as_str()
            .unwrap()
            .contains("list_peers")
    );
}
