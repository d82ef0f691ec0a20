//! Every message reaches the model exactly once, with real Claude Code
//! sessions on the local mesh and on a broker mesh between two users
//! (`tests/src/claude.rs`: each session's model is a scripted Messages API,
//! `tests/claude/scripted_api.py`, that records what the model was shown;
//! it is the one stand-in here), in print mode and interactive mode (tmux),
//! with and without the channels flag.
//!
//! Every scenario runs on every pinned Claude Code release. The assertion
//! of each: the text of each message appears exactly once in the last
//! conversation its recipient's model was shown, and never in the requests
//! of a session it was not meant for. Each scenario prints its duration.

use std::path::Path;
use std::time::{Duration, Instant};

use claudemesh_e2e::broker::Broker;
use claudemesh_e2e::claude::{
    CHANNELS_FLAG, ClaudeCode, Machine, PrintSession, TmuxSession, occurrences, pinned, short_host,
};
use serde_json::{Value, json};

/// The daemon's push window in these tests: the default. Nothing that
/// shows messages waits for it (a push Claude Code dropped is shown at
/// once); only the pending note does.
const PUSH_CONFIRM_MS: u64 = 20_000;
const SESSION_LIMIT: Duration = Duration::from_secs(150);

fn tool(name: &str, input: Value) -> Value {
    json!({"tool": format!("mcp__claudemesh__{name}"), "input": input})
}

fn marker(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// Runs `scenario` for every pinned release, two at a time, and prints
/// how long each took.
fn on_every_release(label: &str, scenario: fn(&ClaudeCode, bool), flags: &[bool]) {
    // One scenario pair at a time in this binary (CI has two cores; each
    // run is three Claude Code processes).
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut runs = Vec::new();
    for claude in pinned() {
        for &flag in flags {
            runs.push((claude.clone(), flag));
        }
    }
    for pair in runs.chunks(2) {
        let handles: Vec<_> = pair
            .iter()
            .cloned()
            .map(|(claude, flag)| {
                let label = label.to_owned();
                std::thread::spawn(move || {
                    let started = Instant::now();
                    scenario(&claude, flag);
                    println!(
                        "{label} on Claude Code {} ({}): {:.1} s",
                        claude.version,
                        if flag { "channels flag" } else { "no flag" },
                        started.elapsed().as_secs_f64()
                    );
                })
            })
            .collect();
        for h in handles {
            h.join().expect("the scenario passed");
        }
    }
}

/// alpha sends beta (which is `working`) a `now`, a `next` and a `low`
/// message; gamma looks on. beta is shown each once, replies to alpha by
/// name, and alpha is shown the reply once; alpha's message_status says
/// `delivered` while beta's model has not been shown the message and
/// `seen` after. gamma is shown none of it.
fn priorities_and_reply_on_the_local_mesh(claude: &ClaudeCode, flag: bool) {
    let machine = Machine::new(claude, PUSH_CONFIRM_MS);
    priorities_and_reply(claude, flag, &machine, &machine, "local");
}

/// The same between two users (two daemons) on a standalone broker: alpha
/// and gamma on one machine, beta on the other.
fn priorities_and_reply_on_a_broker_mesh(claude: &ClaudeCode, flag: bool) {
    let broker = Broker::start();
    let link = broker.mesh_with_invite("team", 2);
    let (one, two) = (
        Machine::new(claude, PUSH_CONFIRM_MS),
        Machine::new(claude, PUSH_CONFIRM_MS),
    );
    one.join(&link);
    two.join(&link);
    priorities_and_reply(claude, flag, &one, &two, "broker");
}

fn priorities_and_reply(
    claude: &ClaudeCode,
    flag: bool,
    machine: &Machine,
    beta_machine: &Machine,
    mesh: &str,
) {
    let sync = machine.home().join("sync");
    std::fs::create_dir_all(&sync).unwrap();
    let m = |n: &str| marker(&sync, n);
    let host = short_host();
    let tag = format!("{}-{}-{mesh}", claude.version.replace('.', "-"), flag);
    let now = format!("urgent-schema-change-{tag}");
    let next = format!("please-review-the-api-{tag}");
    let low = format!("fyi-docs-moved-{tag}");
    let reply = format!("thanks-alpha-done-{tag}");

    let beta_steps = json!([
        tool("set_status", json!({"status": "working"})),
        {"tool": "mcp__claudemesh__list_peers", "input": {},
         "touch": m("beta_working"), "wait_for": [m("alpha_sent")]},
        tool("send_message", json!({"to": format!("alpha@{host}"), "text": reply})),
        {"tool": "mcp__claudemesh__set_status", "input": {"status": "idle"},
         "touch": m("beta_replied")},
        tool("check_messages", json!({})),
        {"text": "Done."}
    ]);
    let alpha_steps = json!([
        {"tool": "mcp__claudemesh__list_peers", "input": {},
         "wait_for": [m("beta_working"), m("gamma_ready")]},
        tool("send_message", json!({"to": format!("beta@{host}"), "text": now, "priority": "now"})),
        tool("send_message", json!({"to": format!("beta@{host}"), "text": next, "priority": "next"})),
        tool("send_message", json!({"to": format!("beta@{host}"), "text": low, "priority": "low"})),
        tool("message_status", json!({"message_id": "$FIRST_MESSAGE_ID"})),
        {"tool": "mcp__claudemesh__list_peers", "input": {},
         "touch": m("alpha_sent"), "wait_for": [m("beta_replied")]},
        tool("message_status", json!({"message_id": "$FIRST_MESSAGE_ID"})),
        {"text": "Done."}
    ]);
    let gamma_steps = json!([
        tool("list_peers", json!({})),
        {"tool": "mcp__claudemesh__list_peers", "input": {},
         "touch": m("gamma_ready"), "wait_for": [m("beta_replied")]},
        tool("check_messages", json!({})),
        {"text": "Done."}
    ]);
    let beta_args: &[&str] = if flag { &CHANNELS_FLAG } else { &[] };
    let prompt = "Work on your task; coordinate with the other sessions.";
    let mut beta = PrintSession::start(beta_machine, claude, "beta", beta_steps, prompt, beta_args);
    let mut gamma = PrintSession::start(machine, claude, "gamma", gamma_steps, prompt, &[]);
    let mut alpha = PrintSession::start(machine, claude, "alpha", alpha_steps, prompt, &[]);
    for s in [&mut alpha, &mut beta, &mut gamma] {
        s.finish(SESSION_LIMIT);
    }

    let beta_saw = beta.api.last_conversation();
    for text in [&now, &next, &low] {
        assert_eq!(
            occurrences(&beta_saw, text),
            1,
            "{tag}: beta's model was shown {text:?} once (daemon log:\n{})",
            beta_machine.daemon_log()
        );
        assert_eq!(
            occurrences(&gamma.api.everything(), text),
            0,
            "{tag}: {text}"
        );
    }
    let alpha_saw = alpha.api.last_conversation();
    assert_eq!(
        occurrences(&alpha_saw, &reply),
        1,
        "{tag}: alpha was shown the reply once"
    );
    assert_eq!(occurrences(&gamma.api.everything(), &reply), 0);

    let results = alpha.api.tool_results();
    assert_eq!(results.len(), 7, "{tag}: {results:#?}");
    assert!(
        results[4].contains("delivered") && !results[4].contains("seen"),
        "{tag}: before beta's model was shown it: {}",
        results[4]
    );
    assert!(results[6].contains("seen"), "{tag}: after: {}", results[6]);

    // With the flag the shim pushed (Claude Code dropped it offline, and
    // the hook showed it at once, within the window); without it, it did
    // not.
    let shim_log = beta_machine.mcp_log("beta");
    assert_eq!(
        beta_machine.daemon_log().contains("messages marked pushed"),
        flag,
        "{tag}: pushed iff the flag is on"
    );
    if flag && claude.version == "2.1.332" {
        // The shim sent `server/discover` back to `initialize`: the era in
        // which Claude Code delivers channel messages.
        assert!(shim_log.contains("server/discover refused"), "{tag}");
        assert!(
            shim_log.contains(r#"\"protocolEra\":\"legacy\""#),
            "{tag}: {shim_log}"
        );
    }
}

#[test]
fn print_mode_priorities_against_a_working_recipient_and_a_reply_by_name() {
    on_every_release(
        "print mode, priorities and reply, local mesh",
        priorities_and_reply_on_the_local_mesh,
        &[false, true],
    );
}

#[test]
fn print_mode_on_a_broker_mesh_between_two_users() {
    on_every_release(
        "print mode, priorities and reply, broker mesh",
        priorities_and_reply_on_a_broker_mesh,
        &[false, true],
    );
}

/// Interactive mode: messages that wait before the first prompt are shown
/// with it by the `UserPromptSubmit` hook, each once; with the channels
/// flag, Claude Code 2.1.332 gets past the era gate (the shim sent it back
/// to `initialize`) and stops, offline, at the switch it cannot fetch: the
/// push it drops is shown once by the hook, at once (within the window).
fn interactive_messages_waiting_before_the_first_prompt(claude: &ClaudeCode, flag: bool) {
    let machine = Machine::new(claude, PUSH_CONFIRM_MS);
    let host = short_host();
    let tag = format!("{}-{}-tmux", claude.version.replace('.', "-"), flag);
    let now = format!("interrupt-please-{tag}");
    let next = format!("when-you-can-{tag}");
    let args: &[&str] = if flag { &CHANNELS_FLAG } else { &[] };
    let mut beta = TmuxSession::start(&machine, claude, "beta", json!([{"text": "Noted."}]), args);
    // Its shim attached: the session is on the mesh.
    claudemesh_e2e::wait::until("beta on the mesh", SESSION_LIMIT, || {
        let _ = beta.screen();
        machine
            .daemon_log()
            .contains(&format!("\"name\":\"beta@{host}\""))
            .then_some(())
    });
    let steps = json!([
        tool("send_message", json!({"to": format!("beta@{host}"), "text": now, "priority": "now"})),
        tool("send_message", json!({"to": format!("beta@{host}"), "text": next})),
        {"text": "Sent."}
    ]);
    let mut alpha = PrintSession::start(&machine, claude, "alpha", steps, "Tell beta.", &[]);
    alpha.finish(SESSION_LIMIT);
    let _ = beta.screen();

    beta.type_line("What is new?");
    beta.wait_for_screen("Noted.", SESSION_LIMIT);
    let saw = beta.api.last_conversation();
    for text in [&now, &next] {
        assert_eq!(
            occurrences(&saw, text),
            1,
            "{tag}: {text} shown once:\n{saw}"
        );
    }
    assert_eq!(
        machine.daemon_log().contains("messages marked pushed"),
        flag,
        "{tag}: pushed iff the flag is on"
    );
    if claude.version == "2.1.332" {
        // Why Claude Code did not register the channel: with the flag, the
        // shim kept the `initialize` era and Claude Code stopped, offline,
        // at the switch it cannot fetch; without it, the modern era.
        let skipped: Vec<String> = beta
            .debug()
            .lines()
            .filter(|l| l.contains("Channel notifications skipped"))
            .map(str::to_owned)
            .collect();
        let gate = if flag {
            "channels feature is not currently available"
        } else {
            "modern protocol revision"
        };
        assert!(
            skipped.iter().any(|l| l.contains(gate)) && !skipped.is_empty(),
            "{tag}: expected the {gate:?} gate: {skipped:#?}"
        );
        if flag {
            assert!(
                !skipped.iter().any(|l| l.contains("protocol revision")),
                "{tag}: the era gate blocked channels: {skipped:#?}"
            );
        }
    }
}

#[test]
fn interactive_mode_messages_waiting_before_the_first_prompt() {
    on_every_release(
        "interactive mode, messages waiting before the first prompt",
        interactive_messages_waiting_before_the_first_prompt,
        &[false, true],
    );
}

/// With the channels flag where channels are not available (here: offline;
/// for a user, an API key or an organisation that has not opted in),
/// Claude Code drops the push. The recipient's model calls `check_messages`
/// right after the push, well within the push window, and is shown the
/// message once, by that tool result.
fn check_messages_right_after_a_dropped_push(claude: &ClaudeCode, _flag: bool) {
    let machine = Machine::new(claude, PUSH_CONFIRM_MS);
    let sync = machine.home().join("sync");
    std::fs::create_dir_all(&sync).unwrap();
    let m = |n: &str| marker(&sync, n);
    let host = short_host();
    let tag = claude.version.replace('.', "-");
    let text = format!("pushed-then-asked-{tag}");
    let steps = json!([
        tool("list_peers", json!({})),
        {"tool": "mcp__claudemesh__check_messages", "input": {},
         "touch": m("beta_ready"), "wait_for": [m("pushed")]},
        {"text": "Done."}
    ]);
    let mut beta = PrintSession::start(
        &machine,
        claude,
        "beta",
        steps,
        "Check your mesh messages.",
        &CHANNELS_FLAG,
    );
    claudemesh_e2e::wait::until("beta on the mesh", SESSION_LIMIT, || {
        Path::new(&m("beta_ready")).exists().then_some(())
    });
    let sent = machine
        .command(&claudemesh_e2e::bins::bin(claudemesh_e2e::bins::CTL))
        .args(["send", &format!("beta@{host}"), &text, "--priority", "now"])
        .output()
        .unwrap();
    assert!(
        sent.status.success(),
        "ctl send: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    // The shim pushed it (Claude Code drops it): only then may the model ask.
    claudemesh_e2e::wait::until("the push", SESSION_LIMIT, || {
        machine
            .daemon_log()
            .contains("messages marked pushed")
            .then_some(())
    });
    let pushed = Instant::now();
    std::fs::write(m("pushed"), "").unwrap();
    beta.finish(SESSION_LIMIT);
    println!(
        "{tag}: from the push to the end of the session (check_messages and the last answer): {:.2} s",
        pushed.elapsed().as_secs_f64()
    );

    let results = beta.api.tool_results();
    assert_eq!(results.len(), 2, "{tag}: {results:#?}");
    assert_eq!(
        occurrences(&results[1], &text),
        1,
        "{tag}: check_messages showed it: {results:#?}\ndaemon log:\n{}",
        machine.daemon_log()
    );
    assert_eq!(
        occurrences(&beta.api.last_conversation(), &text),
        1,
        "{tag}: shown once in all"
    );
    // Claude Code did drop the push: no request carried it as a channel
    // message (the server instructions mention the tag, so look for the
    // message's own).
    assert!(
        !beta.api.everything().contains(&format!("{text}</channel>")),
        "{tag}: the push reached the model"
    );
    // The transcript the daemon reads is the one Claude Code wrote: named
    // by the shim from Claude Code's environment, and by the hooks.
    let named: Vec<String> = machine
        .daemon_log()
        .lines()
        .filter(|l| l.contains("session transcript named"))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["transcript"].as_str().map(str::to_owned))
        .collect();
    let projects = machine.home().join(".claude/projects");
    assert_eq!(
        named.len(),
        1,
        "{tag}: one path, from the shim and the hooks alike: {named:?}"
    );
    assert!(
        Path::new(&named[0]).starts_with(&projects) && Path::new(&named[0]).is_file(),
        "{tag}: {named:?} is not a transcript Claude Code wrote"
    );
}

#[test]
fn print_mode_check_messages_right_after_a_push_claude_code_dropped() {
    on_every_release(
        "print mode, check_messages right after a dropped push",
        check_messages_right_after_a_dropped_push,
        &[true],
    );
}

/// Claude Code 2.1.332 defers MCP tools behind its ToolSearch tool: a
/// model that searches in its own words finds the right tool first.
#[test]
fn tool_search_finds_each_tool_by_what_the_model_wants() {
    let claude = pinned()
        .into_iter()
        .find(|c| c.version == "2.1.332")
        .unwrap();
    let machine = Machine::new(&claude, PUSH_CONFIRM_MS);
    let searches = [
        ("message another session", "mcp__claudemesh__send_message"),
        ("who else is working", "mcp__claudemesh__list_peers"),
        ("unread messages", "mcp__claudemesh__check_messages"),
    ];
    let mut steps: Vec<Value> = searches
        .iter()
        .map(|(q, _)| json!({"tool": "ToolSearch", "input": {"query": q}}))
        .collect();
    steps.push(json!({"text": "Found them."}));
    let mut s = PrintSession::start(&machine, &claude, "searcher", json!(steps), "Look.", &[]);
    s.finish(SESSION_LIMIT);
    let results = s.api.tool_results();
    assert_eq!(results.len(), searches.len(), "{results:#?}");
    for ((query, tool), result) in searches.iter().zip(&results) {
        let first = result
            .find("mcp__")
            .map(|at| &result[at..])
            .unwrap_or_default();
        assert!(
            first.starts_with(tool),
            "searching {query:?} found first: {result}"
        );
    }
}
