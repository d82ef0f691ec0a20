//! Failover with real processes (issue 10, "Losing a node"): 3 broker
//! nodes on one private PostgreSQL behind HAProxy; 2 `claudemeshd`
//! daemons with 3 shim sessions and 4 direct protocol clients, spread
//! over the nodes, exchange DMs, `@group`, `<pubkey>` and `*` messages
//! without pause while a node is killed with SIGKILL and restarted
//! (scenario A), or while PostgreSQL is stopped and started again
//! (scenario B). Afterwards every acknowledged message has reached every
//! recipient session exactly once with its text, presence is what it was,
//! and the daemons kept their session ids. Nothing is mocked; harness in
//! `failover/`, cluster in `common/cluster.rs`.
//!
//! cargo build --bins && cargo test -p claudemesh-broker --test cluster_failover

mod common;
mod failover;

use std::sync::Mutex;
use std::time::Instant;

use common::cluster::wait_for;
use failover::check;
use failover::world::{World, signal, stop_postgres};

/// One scenario at a time: each runs 3 nodes, PostgreSQL, HAProxy, two
/// daemons and three shims, which is all two cores can carry.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn a_node_killed_mid_traffic_and_restarted_loses_and_duplicates_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut w = World::start("kill");
    w.rounds_until("before", 3, "", |_| true);

    let victim = w.victim();
    let placement = w.placement();
    let moved: Vec<String> = placement[&victim].iter().cloned().collect();
    eprintln!("placement {placement:?}; killing {victim} (carrying {moved:?})");
    let pid = w.cluster.node(&victim).pid().expect("the victim runs");
    w.round_during("down", move || signal(pid, "KILL"));
    let killed_at = Instant::now();
    // Reaps it.
    w.cluster.node(&victim).kill9();
    let survivors: Vec<String> = w
        .cluster
        .nodes
        .iter()
        .map(|n| n.id.clone())
        .filter(|id| *id != victim)
        .collect();
    w.rounds_until(
        "down",
        5,
        "the victim's sessions moving and a survivor claiming it",
        |w| {
            let now = w.placement();
            let all_moved = moved.iter().all(|s| {
                survivors
                    .iter()
                    .any(|n| now.get(n).is_some_and(|on| on.contains(s)))
            });
            let claimed = w
                .cluster
                .nodes
                .iter()
                .any(|n| n.id != victim && n.log().contains("a node went silent"));
            all_moved && claimed && w.all_directs_connected()
        },
    );

    w.cluster.node(&victim).restart();
    check::wait_whole(&w);
    w.rounds_until("restarted", 4, "", |_| true);
    check::settle_and_verify(&mut w, None, killed_at);
}

#[test]
fn postgresql_restarted_mid_traffic_loses_nothing_acknowledged() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut w = World::start("pg");
    w.rounds_until("before", 3, "", |_| true);

    let root = w.cluster.pg.root().to_owned();
    w.round_during("outage", move || stop_postgres(&root));
    // Longer than a node takes to call another dead (5 s without a
    // heartbeat): every node's heartbeat is stale when the database
    // returns.
    let stopped = Instant::now();
    w.rounds_until("outage", 3, "", |_| {
        stopped.elapsed() > std::time::Duration::from_secs(7)
    });
    w.cluster.pg.resume();
    let resumed = Instant::now();
    check::wait_whole(&w);
    w.rounds_until("recovered", 4, "", |_| true);
    check::settle_and_verify(&mut w, Some("outage"), resumed);
}

#[test]
fn a_node_stalled_past_the_stale_window_takes_its_sessions_back() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut w = World::start("stall");
    w.rounds_until("before", 3, "", |_| true);

    // SIGSTOP: alive, its connections open, but silent in the database
    // for longer than the stale window, so that a survivor claims it.
    let victim = w.victim();
    let pid = w.cluster.node(&victim).pid().expect("the victim runs");
    w.round_during("stalled", move || signal(pid, "STOP"));
    let claimed = wait_for(|| {
        w.cluster
            .nodes
            .iter()
            .any(|n| n.id != victim && n.log().contains("a node went silent"))
            .then_some(())
    });
    assert!(
        claimed.is_some(),
        "no survivor claimed {victim}:\n{}",
        w.logs()
    );
    // Sent while its sessions are in their grace (acked `queued`), from
    // the direct clients only, whose sends never wait: it must go on well
    // before the grace ends (its sessions would then rightly leave).
    w.direct_round("claimed");
    signal(pid, "CONT");
    let resumed = Instant::now();
    check::wait_whole(&w);
    w.rounds_until("recovered", 4, "", |_| true);
    check::settle_and_verify(&mut w, None, resumed);
}
