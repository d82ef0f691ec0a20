//! A session whose node is killed with SIGKILL resumes on another node and
//! gets every copy addressed to it that it has not acknowledged (issue
//! 24, part 4): the push it had from the dead node and never
//! `client_ack`ed, and the messages sent to it while the dead node still
//! looked alive (acked `delivered` to their sender), whether it resumes
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
/// connection, a daemon's session) twice.
const ROUNDS: usize = 8;

/// bob's session `sid` on the node at `url`: its own connection, or one
/// opened by bob's daemon (as `claudemeshd` carries sessions).
async fn bob_session(url: &str, bob: &Member, sid: &str, via_daemon: bool) -> Client {
    let mut c = Client::connect(url).await;
    if via_daemon {
        c.hello(bob, "daemon", None, ConnectionRole::Daemon).await;
        c.send(
            serde_json::json!({"type":"session_open","sessionId":sid,"displayName":"bob",
                      "cwd":"/w","pid":1,"host":"h","summary":"","groups":[]}),
        )
        .await;
        c.recv_type("session_opened").await;
    } else {
        c.hello(bob, sid, Some("bob"), ConnectionRole::Session)
            .await;
    }
    c
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
/// is read too, up to a `list_peers` round trip. A session connection
/// gets each message once. A daemon's connection may get a message twice
/// (the redelivery of its hello and that of its `session_open` both read
/// the unacknowledged copies): receivers drop repeats by `messageId`
/// (PROTOCOL.md, `push`), so a repeat must carry the same id; how many
/// there were is printed.
async fn receive_all(
    c: &mut Client,
    bob: &Member,
    alice: &Member,
    texts: &[String],
    repeats_allowed: bool,
) -> usize {
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut repeats = 0;
    let take = |p: &serde_json::Value, ids: &mut HashMap<String, String>, repeats: &mut usize| {
        let text = bob.open(p, alice);
        assert!(texts.contains(&text), "an unexpected push: {text:?}");
        let id = p["messageId"].as_str().unwrap().to_owned();
        match ids.get(&text) {
            None => {
                ids.insert(text, id);
            }
            Some(first) => {
                assert!(repeats_allowed, "{text:?} was pushed twice");
                assert_eq!(*first, id, "{text:?} came twice under two ids");
                *repeats += 1;
            }
        }
    };
    while ids.len() < texts.len() {
        let p = c.recv_type("push").await;
        take(&p, &mut ids, &mut repeats);
        c.send(serde_json::json!({"type":"client_ack","messageId": p["messageId"]}))
            .await;
    }
    for f in c.sync().await {
        if f["type"] == "push" {
            take(&f, &mut ids, &mut repeats);
        }
    }
    repeats
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

    for round in 0..ROUNDS {
        let before_claim = round % 2 == 0;
        let via_daemon = (round / 2) % 2 == 1;
        let sid = format!("b{round}");
        // bob's session on node 2, the one that dies.
        let mut b = bob_session(&url(&cluster, 1), &bob, &sid, via_daemon).await;
        let to = format!("{}/{sid}", bob.pubkey());
        let texts: Vec<String> = (0..6)
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
        a.recv_type("ack").await;
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
            a.send(send(i)).await;
            let ack = a.recv_type("ack").await;
            assert_eq!(ack["type"], "ack", "{ack}");
        }

        let resume = async |u: String| bob_session(&u, &bob, &sid, via_daemon).await;
        let (mut b, later) = if before_claim {
            let b = resume(url(&cluster, 2)).await;
            assert!(
                !claimed(&cluster.database_url, "n2").await,
                "the claim came before the resume: this round tests nothing"
            );
            wait_claimed(&cluster.database_url, "n2").await;
            (b, Instant::now())
        } else {
            wait_claimed(&cluster.database_url, "n2").await;
            (resume(url(&cluster, 2)).await, Instant::now())
        };
        let repeats = receive_all(&mut b, &bob, &alice, &texts, via_daemon).await;
        eprintln!(
            "round {round} ({}, resumed {} the claim): all six {:.2} s after the later, \
             {repeats} repeated push(es) of one id",
            if via_daemon { "daemon" } else { "session" },
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
