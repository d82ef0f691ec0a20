//! End to end, with every real binary: a standalone broker, two daemons
//! (each with its own HOME, config and runtime dirs, joined through real
//! invite links with `claudemesh-ctl join`), and shims driven as MCP
//! clients. Then the same on the local mesh of one daemon with three shims.

use claudemesh_e2e::broker::Broker;
use claudemesh_e2e::home::Home;
use claudemesh_e2e::inbox::receive;
use claudemesh_e2e::mcp::McpClient;
use claudemesh_e2e::scenario::{LIMIT, converse, send, wait_for_peers, wait_states};

#[test]
fn team_mesh_two_daemons_one_broker() {
    let broker = Broker::start();
    let link = broker.mesh_with_invite("team", 2);
    let (home_a, home_b) = (Home::new("a"), Home::new("b"));
    // Each answering before any shim or ctl call: a shim finding no daemon
    // would start one with the local mesh on, the default for new sessions.
    let _daemon_a = home_a.start_daemon_answering(&["--no-local"]);
    let mut daemon_b = home_b.start_daemon_answering(&["--no-local"]);
    // Joined while the daemons run: they pick the mesh up without a restart.
    home_a.ctl_ok(&["join", &link]);
    home_b.ctl_ok(&["join", &link]);

    let channel = [("CLAUDEMESH_CHANNEL", "1")];
    let mut alice = McpClient::start(&home_a, "alice", &channel);
    let mut bob = McpClient::start(
        &home_b,
        "bob",
        &[
            ("CLAUDEMESH_CHANNEL", "1"),
            ("CLAUDEMESH_GROUPS", "backend"),
        ],
    );
    // carol reads with check_messages only.
    let mut carol = McpClient::start(
        &home_b,
        "carol",
        &[
            ("CLAUDEMESH_CHANNEL", "0"),
            ("CLAUDEMESH_GROUPS", "backend"),
        ],
    );

    converse(&mut alice, &mut bob, &mut carol);

    // An offline recipient: bob's whole machine (daemon) is down; the
    // message waits at the broker and arrives when the daemon returns.
    daemon_b.terminate();
    let queued = send(&mut alice, "bob", "offline: while b was down", "now");
    let _daemon_b = home_b.start_daemon_answering(&["--no-local"]);
    let (path, _) = receive(&mut bob, "offline: while b was down", LIMIT);
    wait_states(&mut alice, &queued, &[path]);
}

#[test]
fn local_mesh_one_daemon_three_shims() {
    let home = Home::new("local");
    let _daemon = home.start_daemon(&[]);
    let mut xena = McpClient::start(&home, "xena", &[("CLAUDEMESH_CHANNEL", "1")]);
    let mut yann = McpClient::start(
        &home,
        "yann",
        &[
            ("CLAUDEMESH_CHANNEL", "1"),
            ("CLAUDEMESH_GROUPS", "backend"),
        ],
    );
    let mut zoe = McpClient::start(
        &home,
        "zoe",
        &[
            ("CLAUDEMESH_CHANNEL", "0"),
            ("CLAUDEMESH_GROUPS", "backend"),
        ],
    );

    converse(&mut xena, &mut yann, &mut zoe);

    // An offline recipient: yann's shim is down while its Claude Code
    // lives; the daemon keeps the message and the restarted shim, resuming
    // the same session, receives it.
    yann.suspend_shim();
    let queued = send(
        &mut xena,
        "yann",
        "offline: while yann's shim was down",
        "next",
    );
    yann.resume_shim();
    let (path, _) = receive(&mut yann, "offline: while yann's shim was down", LIMIT);
    wait_states(&mut xena, &queued, &[path]);
    wait_for_peers(&mut [&mut xena], &["xena", "yann", "zoe"]);
}
