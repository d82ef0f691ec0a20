//! A person on the terminal, through the real binaries: a standalone
//! broker, two daemons (each with its own HOME) joined with `claudemesh-ctl
//! join --name`, and only `claudemesh-ctl` on top. A sends with `ctl send`,
//! B reads with `ctl inbox` (following, then once) and replies to the name
//! the message came from, A reads the reply. Then a member whose daemon is
//! down is addressed by name, from the terminal and from a Claude Code
//! session's `send_message`, and finds both when it is back.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use claudemesh_e2e::bins;
use claudemesh_e2e::broker::Broker;
use claudemesh_e2e::home::Home;
use claudemesh_e2e::mcp::McpClient;
use claudemesh_e2e::process::Guarded;
use claudemesh_e2e::scenario::{LIMIT, send};
use claudemesh_e2e::wait;
use serde_json::Value;

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// `ctl inbox --mesh team --json`: the messages as (from, text).
fn read(home: &Home) -> Vec<(String, String)> {
    let v = json(&home.ctl_ok(&["inbox", "--mesh", "team", "--json"]));
    v["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages array: {v}"))
        .iter()
        .map(|m| {
            (
                m["from"]["displayName"].as_str().unwrap_or("?").to_owned(),
                m["text"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

/// Reads until `text` arrives; returns every message read on the way.
fn read_until(home: &Home, text: &str) -> Vec<(String, String)> {
    let mut all = Vec::new();
    wait::until(&format!("{} to read {text:?}", home.name), LIMIT, || {
        all.extend(read(home));
        all.iter().any(|(_, t)| t == text).then_some(())
    });
    all
}

/// Starts the home's daemon and waits until it answers.
fn start_daemon(home: &Home) -> Guarded {
    let daemon = home.start_daemon(&["--no-local"]);
    wait::until(&format!("{}'s daemon to answer", home.name), LIMIT, || {
        home.ctl(&["status"]).status.success().then_some(())
    });
    daemon
}

fn joined_pair(broker: &Broker) -> (Home, Home) {
    let link = broker.mesh_with_invite("team", 2);
    let (a, b) = (Home::new("a"), Home::new("b"));
    let joined = a.ctl_ok(&["join", &link, "--name", "alice"]);
    // join says which mesh is now the default and under which name.
    assert!(
        joined.contains("default:  mesh team") && joined.contains("name:     alice"),
        "{joined}"
    );
    b.ctl_ok(&["join", &link, "--name", "bob"]);
    (a, b)
}

#[test]
fn a_terminal_conversation_send_read_reply_read() {
    let broker = Broker::start();
    let (home_a, home_b) = joined_pair(&broker);
    let _daemon_a = start_daemon(&home_a);
    let _daemon_b = start_daemon(&home_b);
    let status = json(&home_a.ctl_ok(&["status", "--json"]));
    assert_eq!(status["daemon"]["defaultMesh"], "team", "{status}");
    assert_eq!(status["daemon"]["name"], "alice", "{status}");

    // B follows its inbox; A writes to B's member name.
    let mut cmd = home_b.command(bins::CTL);
    cmd.args(["inbox", "--mesh", "team", "--follow", "--json"])
        .stdout(Stdio::piped());
    let mut follower = Guarded::spawn("ctl inbox --follow (b)", &mut cmd);
    let stdout = follower.child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let sent = json(&home_a.ctl_ok(&[
        "send",
        "--mesh",
        "team",
        "--json",
        "bob",
        "hello from a terminal",
    ]));
    assert_eq!(
        sent["from"], "alice",
        "ctl sends under the member's name: {sent}"
    );
    let line = lines.recv_timeout(LIMIT).unwrap_or_else(|e| {
        panic!(
            "the follower printed nothing ({e}):\n{}",
            home_b.daemon_log()
        )
    });
    let m = json(&line);
    assert_eq!(m["text"], "hello from a terminal");
    assert_eq!(m["from"]["displayName"], "alice");
    // Ctrl-C: the follower ends cleanly, having marked what it printed.
    let _ = std::process::Command::new("kill")
        .args(["-INT", &follower.pid().to_string()])
        .status();
    assert!(follower.child.wait().unwrap().success());
    assert_eq!(
        read(&home_b),
        Vec::new(),
        "a printed message is not shown again"
    );

    // B answers the name the message came from; A reads the answer.
    let reply = json(&home_b.ctl_ok(&[
        "send",
        "--mesh",
        "team",
        "--json",
        "alice",
        "got it, thanks",
    ]));
    assert_eq!(reply["from"], "bob");
    let got = read_until(&home_a, "got it, thanks");
    assert_eq!(got, vec![("bob".to_owned(), "got it, thanks".to_owned())]);
    assert_eq!(read(&home_a), Vec::new());

    // The human output says who wrote and how to answer.
    home_b.ctl_ok(&["send", "--mesh", "team", "alice", "one more"]);
    wait::until("a to print the message", LIMIT, || {
        let out = home_a.ctl_ok(&["inbox", "--mesh", "team"]);
        out.contains("one more").then_some(out)
    });
}

#[test]
fn an_offline_member_addressed_by_name_gets_it_when_back() {
    let broker = Broker::start();
    let (home_a, home_b) = joined_pair(&broker);
    let _daemon_a = start_daemon(&home_a);
    // B's machine is off: no daemon, no session anywhere.
    let mut alice = McpClient::start(&home_a, "alice-session", &[]);
    let from_tool = send(&mut alice, "bob", "from a Claude Code session", "next");
    assert!(!from_tool.is_empty());
    home_a.ctl_ok(&["send", "--mesh", "team", "bob", "from the terminal"]);
    // A name nobody has is still refused (once the link is up, the broker
    // answers at once), with no MCP tool suggested.
    wait::until("a's link to the broker", LIMIT, || {
        let v = json(&home_a.ctl_ok(&["status", "--json"]));
        let meshes = v["daemon"]["meshes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        meshes
            .iter()
            .any(|m| m["slug"] == "team" && m["link"] == "connected")
            .then_some(())
    });
    let out = home_a.ctl(&["send", "--mesh", "team", "nobody", "x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nobody") && !err.contains("list_peers"),
        "{err}"
    );

    // peers lists bob as a member though no session of his is open.
    let peers = json(&home_a.ctl_ok(&["peers", "team", "--json"]));
    let members: Vec<(Value, Value)> = peers["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members: {peers}"))
        .iter()
        .map(|m| (m["displayName"].clone(), m["online"].clone()))
        .collect();
    assert!(members.contains(&("bob".into(), false.into())), "{peers}");
    assert!(members.contains(&("alice".into(), true.into())), "{peers}");

    let _daemon_b = start_daemon(&home_b);
    let mut got = read_until(&home_b, "from a Claude Code session");
    if !got.iter().any(|(_, t)| t == "from the terminal") {
        got.extend(read_until(&home_b, "from the terminal"));
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("alice".to_owned(), "from the terminal".to_owned()),
            (
                "alice-session".to_owned(),
                "from a Claude Code session".to_owned()
            ),
        ]
    );

    // A voluntary leave is no revocation: the daemon logs no error.
    home_b.ctl_ok(&["leave", "team"]);
    let status = json(&home_b.ctl_ok(&["status", "--json"]));
    assert_eq!(
        status["daemon"]["meshes"],
        serde_json::json!([]),
        "{status}"
    );
    let log = home_b.daemon_log();
    assert!(!log.contains("revoked"), "{log}");
    assert!(!log.contains("\"level\":\"ERROR\""), "{log}");
}

/// Stops a daemon that `ctl daemon start` detached, whatever the test does.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.to_string()])
            .status();
    }
}

#[test]
fn daemon_start_runs_it_detached_and_the_hint_names_it() {
    let home = Home::new("start");
    let down = home.ctl(&["status"]);
    assert_eq!(down.status.code(), Some(3));
    let err = String::from_utf8_lossy(&down.stderr);
    assert!(err.contains("claudemesh-ctl daemon start"), "{err}");
    // With --json the error is JSON on stdout, with the exit code.
    let down = home.ctl(&["peers", "--json"]);
    assert_eq!(down.status.code(), Some(3));
    let v = json(&String::from_utf8_lossy(&down.stdout));
    assert_eq!(v["error"]["exitCode"], 3, "{v}");
    assert!(
        v["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("daemon start"),
        "{v}"
    );

    let first = json(&home.ctl_ok(&["daemon", "start", "--json"]));
    let pid = first["pid"].as_u64().expect("a pid") as u32;
    let _stop = KillOnDrop(pid);
    assert_eq!(first["started"], true, "{first}");
    assert!(first["log"].as_str().unwrap().ends_with("claudemeshd.log"));
    // ctl has exited; the daemon it started still answers.
    let status = json(&home.ctl_ok(&["status", "--json"]));
    assert_eq!(status["daemon"]["pid"], pid);
    // Its log is where status says, and `logs` reads it as text.
    let log = first["log"].as_str().unwrap().to_owned();
    assert!(home.ctl_ok(&["status"]).contains(&log));
    assert_eq!(status["daemon"]["log"], log.as_str());
    let text = home.ctl_ok(&["logs"]);
    assert!(
        text.contains("INFO") && !text.contains("\"timestamp\""),
        "{text}"
    );
    let again = json(&home.ctl_ok(&["daemon", "start", "--json"]));
    assert_eq!(
        (again["started"].clone(), again["pid"].clone()),
        (false.into(), pid.into())
    );
}
