//! Idle sessions wake (issue 23), with real Claude Code in interactive
//! mode under tmux, offline against the scripted Messages API (the model
//! is the one stand-in: `tests/claude/scripted_api.py` answers from a
//! script and records every request, so the test reads what the model was
//! shown and when). Nobody types to wake a session: a message sent with
//! `claudemesh-ctl send` reaches the model of a session whose turn has
//! ended through the `Stop` hook that `claudemesh-ctl install` adds
//! (`async`, `asyncRewake`: its exit code 2 wakes the session).
//!
//! Each scenario prints its duration; `wake_latency_figures` prints the
//! time from `claudemesh-ctl send` to the woken session's request:
//! `cargo test -p claudemesh-e2e --test claude_wake -- --nocapture --test-threads 1`.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use claudemesh_e2e::bins;
use claudemesh_e2e::claude::{
    CHANNELS_FLAG, ClaudeCode, Machine, PrintSession, TmuxSession, occurrences, pinned, short_host,
};
use serde_json::{Value, json};

const PUSH_CONFIRM_MS: u64 = 2000;
const LIMIT: Duration = Duration::from_secs(120);
/// How long the test watches to be sure no request came.
const QUIET: Duration = Duration::from_secs(4);

/// One tmux scenario at a time in this binary (two cores).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn texts(n: usize, label: &str) -> Value {
    json!(
        (0..n)
            .map(|i| json!({"text": format!("{label} {i}.")}))
            .collect::<Vec<_>>()
    )
}

/// The main-loop requests (the model's turns) the session made so far.
fn main_requests(s: &TmuxSession) -> Vec<Value> {
    s.api
        .requests()
        .into_iter()
        .filter(|r| r["main"] == true)
        .collect()
}

/// The `wait_wake` requests the daemon armed so far (its debug log).
fn armed(machine: &Machine) -> usize {
    occurrences(
        &machine.daemon_log(),
        "a stop hook waits to wake the session",
    )
}

fn wait_armed(machine: &Machine, beyond: usize, tag: &str) -> usize {
    claudemesh_e2e::wait::until(&format!("{tag}: a Stop hook waiting"), LIMIT, || {
        let n = armed(machine);
        (n > beyond).then_some(n)
    })
}

/// `claudemesh-ctl send` started (not awaited).
fn send(machine: &Machine, to: &str, text: &str, priority: &str) -> Child {
    machine
        .command(&bins::bin(bins::CTL))
        .args(["send", to, text, "--priority", priority])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ctl send starts")
}

fn sent(child: Child) {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ctl send: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits for the session to make more than `n` main requests; the new ones.
fn wait_requests(s: &mut TmuxSession, n: usize, tag: &str) -> Vec<Value> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let all = main_requests(s);
        if all.len() > n {
            return all[n..].to_vec();
        }
        if Instant::now() > deadline {
            let screen = s.screen();
            panic!("{tag}: no new request after {n}; screen:\n{screen}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A session of `claude` on `machine`, its first turn done (its `Stop`
/// hook then runs), on the mesh as `beta@host`.
fn idle_beta(machine: &Machine, claude: &ClaudeCode, flag: bool, steps: Value) -> TmuxSession {
    let host = short_host();
    let args: &[&str] = if flag { &CHANNELS_FLAG } else { &[] };
    let mut beta = TmuxSession::start(machine, claude, "beta", steps, args);
    claudemesh_e2e::wait::until("beta on the mesh", LIMIT, || {
        let _ = beta.screen();
        machine
            .daemon_log()
            .contains(&format!("\"name\":\"beta@{host}\""))
            .then_some(())
    });
    beta.type_line("hello");
    beta.wait_for_screen("Turn 0.", LIMIT);
    beta
}

fn tag_of(claude: &ClaudeCode, flag: bool) -> String {
    format!("{}-{}", claude.version.replace('.', "-"), flag)
}

/// A `next` message wakes the idle session: one new request with the
/// message, once, stated to come from a peer. A `low` one does not, and
/// is in the next typed turn's context once. Two messages sent together:
/// one wake with both, each once.
fn wakes(claude: &ClaudeCode, flag: bool) {
    let started = Instant::now();
    let tag = tag_of(claude, flag);
    let machine = Machine::new(claude, PUSH_CONFIRM_MS);
    let to = format!("beta@{}", short_host());
    let mut beta = idle_beta(&machine, claude, flag, texts(10, "Turn"));
    // The SessionStart hook told the model where it is.
    let first = main_requests(&beta)[0].to_string();
    assert!(
        first.contains(&format!(
            "claudemesh: you are \\\"{to}\\\" on the mesh \\\"local\\\"."
        )),
        "{tag}: the SessionStart context: {first}"
    );

    // A `next` message, nobody typing.
    let mut n_armed = wait_armed(&machine, 0, &tag);
    let next = format!("please-review-the-api-{tag}");
    let n = main_requests(&beta).len();
    sent(send(&machine, &to, &next, "next"));
    let woken = wait_requests(&mut beta, n, &tag);
    std::thread::sleep(QUIET);
    let after = main_requests(&beta);
    assert_eq!(after.len(), n + 1, "{tag}: exactly one wake request");
    let body = woken[0]["body"]["messages"].to_string();
    assert_eq!(
        occurrences(&body, &next),
        1,
        "{tag}: the message, once: {body}"
    );
    assert!(
        body.contains("not by your user") && body.contains("grants no permission"),
        "{tag}: the model is told who wrote it: {body}"
    );

    // A `low` message: no request until someone types.
    n_armed = wait_armed(&machine, n_armed, &tag);
    let low = format!("fyi-docs-moved-{tag}");
    let n = main_requests(&beta).len();
    sent(send(&machine, &to, &low, "low"));
    std::thread::sleep(QUIET);
    assert_eq!(main_requests(&beta).len(), n, "{tag}: low does not wake");
    beta.type_line("anything new?");
    let typed = wait_requests(&mut beta, n, &tag);
    assert_eq!(
        occurrences(&typed[0]["body"]["messages"].to_string(), &low),
        1,
        "{tag}: low shown with the typed prompt"
    );

    // Two messages within 100 ms: one wake, both.
    wait_armed(&machine, n_armed, &tag);
    let (one, two) = (
        format!("first-of-two-{tag}"),
        format!("second-of-two-{tag}"),
    );
    let n = main_requests(&beta).len();
    let a = send(&machine, &to, &one, "next");
    let b = send(&machine, &to, &two, "now");
    sent(a);
    sent(b);
    let woken = wait_requests(&mut beta, n, &tag);
    std::thread::sleep(QUIET);
    assert_eq!(main_requests(&beta).len(), n + 1, "{tag}: one wake for two");
    let body = woken[0]["body"]["messages"].to_string();
    assert_eq!(occurrences(&body, &one), 1, "{tag}: {body}");
    assert_eq!(occurrences(&body, &two), 1, "{tag}: {body}");

    // Every message once in what the model was shown last.
    let saw = beta.api.last_conversation();
    for text in [&next, &low, &one, &two] {
        assert_eq!(occurrences(&saw, text), 1, "{tag}: {text} once:\n{saw}");
    }
    // With the flag the shim pushes (the `low` message: an armed wake
    // takes only what wakes), and Claude Code drops it offline; each
    // message was still shown once.
    assert_eq!(
        machine.daemon_log().contains("messages marked pushed"),
        flag,
        "{tag}: pushed iff the flag is on"
    );
    println!(
        "wake scenario on Claude Code {} ({}): {:.1} s",
        claude.version,
        if flag { "channels flag" } else { "no flag" },
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn an_idle_session_wakes_on_a_next_message_not_on_a_low_one() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    for claude in pinned() {
        wakes(&claude, false);
    }
    let current = pinned().into_iter().next().unwrap();
    wakes(&current, true);
}

fn tool(name: &str, input: Value) -> Value {
    json!({"tool": format!("mcp__claudemesh__{name}"), "input": input})
}

/// Messages the daemon stored so far (its debug log).
fn stored(machine: &Machine) -> usize {
    occurrences(&machine.daemon_log(), "message stored")
}

/// Another Claude Code session's `send_message` wakes the idle session; a
/// `now` message that arrives while it is busy is shown once, in that
/// turn, and does not wake it again after; a message sent at the moment a
/// person types is shown once.
fn busy_peer_and_typed(claude: &ClaudeCode) {
    let started = Instant::now();
    let tag = tag_of(claude, false);
    let machine = Machine::new(claude, PUSH_CONFIRM_MS);
    let host = short_host();
    let to = format!("beta@{host}");
    let sync = machine.home().join("sync");
    std::fs::create_dir_all(&sync).unwrap();
    let m = |n: &str| sync.join(n).display().to_string();
    let mut steps = vec![
        json!({"text": "Turn 0."}),
        json!({"text": "Turn 1."}),
        json!({"tool": "mcp__claudemesh__list_peers", "input": {},
               "touch": m("beta_busy"), "wait_for": [m("now_sent")]}),
        json!({"text": "Turn 3."}),
    ];
    steps.extend((4..10).map(|i| json!({"text": format!("Turn {i}.")})));
    let mut beta = idle_beta(&machine, claude, false, json!(steps));

    // Another session's send_message, nobody typing.
    let mut n_armed = wait_armed(&machine, 0, &tag);
    let peer = format!("from-alpha-by-tool-{tag}");
    let n = main_requests(&beta).len();
    let alpha_steps = json!([
        tool("send_message", json!({"to": to, "text": peer, "priority": "next"})),
        {"text": "Sent."}
    ]);
    let mut alpha = PrintSession::start(&machine, claude, "alpha", alpha_steps, "Tell beta.", &[]);
    alpha.finish(LIMIT);
    let woken = wait_requests(&mut beta, n, &tag);
    std::thread::sleep(QUIET);
    assert_eq!(main_requests(&beta).len(), n + 1, "{tag}: one wake");
    assert_eq!(
        occurrences(&woken[0]["body"]["messages"].to_string(), &peer),
        1,
        "{tag}: alpha's message in the wake"
    );

    // A `now` message while beta works: shown in that turn, once.
    n_armed = wait_armed(&machine, n_armed, &tag);
    let now = format!("urgent-while-busy-{tag}");
    beta.type_line("work");
    claudemesh_e2e::wait::until("beta busy", LIMIT, || {
        std::path::Path::new(&m("beta_busy")).exists().then_some(())
    });
    let before = stored(&machine);
    sent(send(&machine, &to, &now, "now"));
    claudemesh_e2e::wait::until("the message stored", LIMIT, || {
        (stored(&machine) > before).then_some(())
    });
    std::fs::write(m("now_sent"), "").unwrap();
    beta.wait_for_screen("Turn 3.", LIMIT);
    let n = main_requests(&beta).len();
    let last = main_requests(&beta).pop().unwrap();
    assert_eq!(
        occurrences(&last["body"]["messages"].to_string(), &now),
        1,
        "{tag}: the now message before the busy turn stopped"
    );
    wait_armed(&machine, n_armed, &tag);
    std::thread::sleep(QUIET);
    assert_eq!(
        main_requests(&beta).len(),
        n,
        "{tag}: nothing left to wake for"
    );

    // A message sent as a person types.
    let typed = format!("sent-as-you-type-{tag}");
    let child = send(&machine, &to, &typed, "next");
    beta.type_line("again");
    sent(child);
    wait_requests(&mut beta, n, &tag);
    std::thread::sleep(QUIET);
    let saw = beta.api.last_conversation();
    for text in [&peer, &now, &typed] {
        assert_eq!(occurrences(&saw, text), 1, "{tag}: {text} once:\n{saw}");
    }
    println!(
        "busy, peer and typed scenario on Claude Code {}: {:.1} s",
        claude.version,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_peer_session_wakes_it_a_busy_turn_shows_now_once_a_typed_prompt_races() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    for claude in pinned() {
        busy_peer_and_typed(&claude);
    }
}

/// `install --wake off`: nothing wakes; the message is shown at the next
/// typed turn, once.
#[test]
fn wake_off_wakes_nothing() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let claude = pinned().into_iter().next().unwrap();
    let tag = tag_of(&claude, false);
    let machine = Machine::new(&claude, PUSH_CONFIRM_MS);
    let out = machine
        .command(&bins::bin(bins::CTL))
        .args(["install", "--wake", "off"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let to = format!("beta@{}", short_host());
    let mut beta = idle_beta(&machine, &claude, false, texts(4, "Turn"));
    // The Stop hook ran and ended without waiting.
    std::thread::sleep(QUIET);
    let text = format!("nobody-wakes-{tag}");
    let n = main_requests(&beta).len();
    sent(send(&machine, &to, &text, "now"));
    std::thread::sleep(QUIET);
    assert_eq!(main_requests(&beta).len(), n, "--wake off: no request");
    assert_eq!(armed(&machine), 0, "no Stop hook waited");
    beta.type_line("anything new?");
    let typed = wait_requests(&mut beta, n, &tag);
    assert_eq!(
        occurrences(&typed[0]["body"]["messages"].to_string(), &text),
        1
    );
}

/// The time from `claudemesh-ctl send` to the woken session's Messages
/// API request, over 20 wakes of one idle session (printed, not asserted).
#[test]
fn wake_latency_figures() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let claude = pinned().into_iter().next().unwrap();
    let tag = tag_of(&claude, false);
    let machine = Machine::new(&claude, PUSH_CONFIRM_MS);
    let to = format!("beta@{}", short_host());
    let mut beta = idle_beta(&machine, &claude, false, texts(30, "Turn"));
    let mut n_armed = 0;
    let mut times = Vec::new();
    for i in 0..20 {
        n_armed = wait_armed(&machine, n_armed, &tag);
        let n = main_requests(&beta).len();
        let t0 = Instant::now();
        let child = send(&machine, &to, &format!("wake-{i}-{tag}"), "next");
        wait_requests(&mut beta, n, &tag);
        times.push(t0.elapsed());
        sent(child);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    println!(
        "wake latency, ctl send -> woken request, Claude Code {}, {} wakes: p50 {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms",
        claude.version,
        times.len(),
        ms(p(0.50)),
        ms(p(0.99)),
        ms(times[0]),
        ms(times[times.len() - 1])
    );
    let saw = beta.api.last_conversation();
    for i in 0..20 {
        assert_eq!(
            occurrences(&saw, &format!("wake-{i}-{tag}")),
            1,
            "wake {i} once"
        );
    }
}
