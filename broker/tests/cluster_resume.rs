//! A session whose node is killed with SIGKILL resumes on another node and
//! gets every copy addressed to it that it has not acknowledged (issue
//! 24, part 4): the push it had from the dead node and never
//! `client_ack`ed, and the messages sent to it while the dead node still
//! looked alive (acked `delivered` to their sender), through a survivor
//! and through the node it resumes on, whether it resumes
//! before the survivors claim the dead node or after. Real broker
//! processes on a real PostgreSQL, nothing mocked. It is a race, so each
//! order is tried several times; each round prints how long after the
//! later of (resume, claim) the last message arrived.
//!
//! cargo build --bins && cargo test -p claudemesh-broker --test cluster_resume

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, ClusterSpec, wait_for};
use common::*;

use claudemesh_broker::admin::Admin;
use claudemesh_protocol::wire::ConnectionRole;

const BIN: &str = env!("CARGO_BIN_EXE_claudemesh-broker");
/// Rounds: each of (resume before the claim, after it) × (a session
/// connection, a daemon's session) × (the first send straight after the
/// session's acknowledgement, or once node 1 lists it) twice.
const ROUNDS: usize = 16;

/// bob's session `sid` on the node at `url`: its own connection, or one
/// opened by bob's daemon (as `claudemeshd` carries sessions), with the
/// pushes that came before `session_opened` (the hello's redelivery).
async fn bob_session(
    url: &str,
    bob: &Member,
    sid: &str,
    via_daemon: bool,
) -> (Client, Vec<serde_json::Value>) {
    let mut c = Client::connect(url).await;
    let mut early = Vec::new();
    if via_daemon {
        c.hello(bob, "daemon", None, ConnectionRole::Daemon).await;
        c.send(
            serde_json::json!({"type":"session_open","sessionId":sid,"displayName":"bob",
                      "cwd":"/w","pid":1,"host":"h","summary":"","groups":[]}),
        )
        .await;
        early = c.recv_until("session_opened").await;
        early.retain(|f| f["type"] == "push");
    } else {
        c.hello(bob, sid, Some("bob"), ConnectionRole::Session)
            .await;
    }
    (c, early)
}

/// Whether another node has claimed `node` (taken it for dead).
async fn claimed(database_url: &str, node: &str) -> bool {
    let (client, conn) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .expect("the test's own database connection");
    tokio::spawn(conn);
    client
        .query_opt(
            "SELECT claimed_by IS NOT NULL FROM nodes WHERE id = $1",
            &[&node],
        )
        .await
        .unwrap()
        .is_some_and(|r| r.get::<_, bool>(0))
}

async fn wait_claimed(database_url: &str, node: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !claimed(database_url, node).await {
        assert!(Instant::now() < deadline, "no node claimed {node}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads pushes until every text of `texts` has come, acknowledging each
/// (as a daemon does, so the next round starts clean); what comes after
/// is read too, up to a `list_peers` round trip. Each message must come
/// once, on a session's own connection and on a daemon's alike (the
/// redeliveries of a daemon's hello and of its `session_open` both read
/// the unacknowledged copies; the connection's record of pushes, with
/// the sessions each named, keeps the second from repeating the first).
/// `early`: the pushes that came before `session_opened`.
async fn receive_all(
    c: &mut Client,
    early: Vec<serde_json::Value>,
    bob: &Member,
    alice: &Member,
    texts: &[String],
) {
    let mut ids: HashMap<String, String> = HashMap::new();
    let take = |p: &serde_json::Value, ids: &mut HashMap<String, String>| {
        let text = bob.open(p, alice);
        assert!(texts.contains(&text), "an unexpected push: {text:?}");
        let id = p["messageId"].as_str().unwrap().to_owned();
        match ids.get(&text) {
            None => {
                ids.insert(text, id);
            }
            Some(first) => panic!("{text:?} was pushed twice (ids {first}, {id})"),
        }
    };
    for p in early {
        take(&p, &mut ids);
        c.send(serde_json::json!({"type":"client_ack","messageId": p["messageId"]}))
            .await;
    }
    while ids.len() < texts.len() {
        let p = c.recv_type("push").await;
        take(&p, &mut ids);
        c.send(serde_json::json!({"type":"client_ack","messageId": p["messageId"]}))
            .await;
    }
    for f in c.sync().await {
        if f["type"] == "push" {
            take(&f, &mut ids);
        }
    }
}

/// The next `ack`; panics on an `error` (a refused send is a lost one).
async fn ack_of(c: &mut Client) -> serde_json::Value {
    loop {
        let f = c.recv().await;
        match f["type"].as_str() {
            Some("ack") => return f,
            Some("error") => panic!("a send was refused: {f}"),
            _ => {}
        }
    }
}

/// Waits until `c`'s peer list holds the session `sid`.
async fn await_session(c: &mut Client, sid: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        c.send(serde_json::json!({"type":"list_peers","id":"await"}))
            .await;
        let list = loop {
            let v = c.recv().await;
            if v["type"] == "peers_list" && v["id"] == "await" {
                break v;
            }
        };
        let listed = list["peers"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["sessionId"] == sid));
        if listed {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node 1 never listed {sid}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumed_on_another_node_gets_every_unacknowledged_copy_once() {
    let mut cluster = Cluster::start(
        BIN.as_ref(),
        ClusterSpec {
            nodes: 3,
            haproxy: false,
            serve_flags: vec!["--presence-grace".into(), "60".into()],
        },
    );
    let admin = Admin::open_store(cluster.dir.path(), Some(&cluster.database_url)).unwrap();
    let mesh = admin.create_mesh("team").unwrap();
    let alice = Member::enroll(&admin, &mesh, "alice");
    let bob = Member::enroll(&admin, &mesh, "bob");
    let url = |c: &Cluster, i: usize| c.nodes[i].ws_url();
    let mut a = Client::connect(&url(&cluster, 0)).await;
    a.hello(&alice, "a1", Some("alice"), ConnectionRole::Session)
        .await;
    // alice also sends from node 3, where bob resumes.
    let mut a3 = Client::connect(&url(&cluster, 2)).await;
    a3.hello(&alice, "a3", Some("alice-3"), ConnectionRole::Session)
        .await;

    for round in 0..ROUNDS {
        let before_claim = round % 2 == 0;
        let via_daemon = (round / 2) % 2 == 1;
        let settled = (round / 4) % 2 == 1;
        let sid = format!("b{round}");
        // bob's session on node 2, the one that dies.
        let (mut b, _) = bob_session(&url(&cluster, 1), &bob, &sid, via_daemon).await;
        if settled {
            // Node 1 and 3 know the session before anything is sent (so
            // that only the resume is tested, not the first moments after
            // a hello).
            await_session(&mut a, &sid).await;
            await_session(&mut a3, &sid).await;
        }
        let to = format!("{}/{sid}", bob.pubkey());
        // 0: pushed by node 2 and never acknowledged; 1-3 through node 1
        // and 4-5 through node 3 while node 2 is dead but not yet
        // claimed; 6 (node 1) and 7 (node 3) after a resume that comes
        // before the claim.
        let count = if before_claim { 8 } else { 6 };
        let texts: Vec<String> = (0..count)
            .map(|i| format!("round {round} message {i}"))
            .collect();
        let send = |i: usize| {
            send_frame(
                &format!("r{round}m{i}"),
                &to,
                vec![alice.envelope(&bob, &texts[i])],
            )
        };
        // Pushed, and never acknowledged.
        a.send(send(0)).await;
        ack_of(&mut a).await;
        let p = b.recv_type("push").await;
        assert_eq!(bob.open(&p, &alice), texts[0]);

        let pid = cluster.nodes[1].pid().expect("node 2 runs");
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        drop(b);
        // During the stale window node 1 still takes bob's session for
        // live on node 2.
        for i in 1..=5 {
            let from = if i <= 3 { &mut a } else { &mut a3 };
            from.send(send(i)).await;
            ack_of(from).await;
        }

        let resume = async |u: String| bob_session(&u, &bob, &sid, via_daemon).await;
        let ((mut b, early), later) = if before_claim {
            let b = resume(url(&cluster, 2)).await;
            for (i, from) in [(6, &mut a), (7, &mut a3)] {
                from.send(send(i)).await;
                ack_of(from).await;
            }
            assert!(
                !claimed(&cluster.database_url, "n2").await,
                "the claim came before the resume and its sends: this round tests nothing"
            );
            wait_claimed(&cluster.database_url, "n2").await;
            (b, Instant::now())
        } else {
            wait_claimed(&cluster.database_url, "n2").await;
            (resume(url(&cluster, 2)).await, Instant::now())
        };
        receive_all(&mut b, early, &bob, &alice, &texts).await;
        eprintln!(
            "round {round} ({}, {}, resumed {} the claim): all {count}, each once, {:.2} s after the later",
            if via_daemon { "daemon" } else { "session" },
            if settled { "settled" } else { "sent at once" },
            if before_claim { "before" } else { "after" },
            later.elapsed().as_secs_f64()
        );
        b.close().await;
        // Node 2 comes back for the next round.
        cluster.nodes[1].restart();
        let n2 = cluster.nodes[1].addr;
        wait_for(|| common::cluster::health_at(n2).filter(|h| h.0 == 200)).expect("node 2 is back");
    }
}
