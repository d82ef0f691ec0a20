//! Several broker nodes on one PostgreSQL database (real sockets, a real
//! database server), with clients attached to different nodes: what one
//! node does must reach the clients of every other node, as on one node.

mod common;

use common::nodes::Nodes;
use common::*;
use std::time::Duration;

use serde_json::{Value, json};

use claudemesh_broker::admin::InviteRole;
use claudemesh_protocol::MemberSecretKey;
use claudemesh_protocol::wire::ConnectionRole;

fn delivered(m: &Member, session: &str) -> (String, Option<String>, String) {
    (m.pubkey(), Some(session.to_owned()), "delivered".to_owned())
}

fn sent(v: &Value) -> String {
    v["messageId"].as_str().unwrap().to_owned()
}

/// The `Backend::Cluster` harness that routing.rs and hello.rs run on
/// really spreads a test's connections: consecutive ones land on the 3
/// nodes in turn, as each node itself counts.
#[tokio::test]
async fn the_cluster_backend_puts_consecutive_connections_on_different_nodes() {
    let b = TestBroker::on(Backend::Cluster).await;
    let members: Vec<Member> = (0..4).map(|i| b.member(&format!("m{i}"))).collect();
    let mut clients = Vec::new();
    for (i, m) in members.iter().enumerate() {
        clients.push(b.session(m, &format!("s{i}"), &format!("m{i}")).await.0);
    }
    let nodes: Vec<usize> = clients.iter().map(|c| b.node_of(c)).collect();
    assert_eq!(nodes, vec![0, 1, 2, 0]);
    let mut per_node = Vec::new();
    for node in b.nodes() {
        let (_, text) = http(node.addr, "GET", "/metrics", None).await;
        assert!(text.contains(&format!("node=\"{}\"", node_id(per_node.len() + 1))));
        per_node.push(metric(&text, "claudemesh_broker_connections_active").unwrap());
    }
    assert_eq!(per_node, vec![2.0, 1.0, 1.0]);
    // The summed view the suites read counts every node's.
    assert_eq!(
        metric(&b.metrics().await, "claudemesh_broker_connections_active"),
        Some(4.0)
    );
}

#[tokio::test]
async fn a_message_reaches_a_member_on_another_node_with_its_receipts_and_status() {
    let c = Nodes::start(3).await;
    let (alice, bob) = (c.member("alice"), c.member("bob"));
    let (mut a, _) = c.n(1).session(&alice, "a1", "alice").await;
    let (mut b, _) = c.n(2).session(&bob, "b1", "bob").await;

    a.send(send_frame(
        "s1",
        &bob.pubkey(),
        vec![alice.envelope(&bob, "hi bob")],
    ))
    .await;
    let ack = a.recv_type("ack").await;
    let mid = sent(&ack);
    let push = b.recv_type("push").await;
    assert_eq!(push["messageId"], mid.as_str());
    assert_eq!(bob.open(&push, &alice), "hi bob");

    b.send(json!({"type":"client_ack","messageId": mid})).await;
    let r = a.recv_type("receipt").await;
    assert_eq!(
        (r["messageId"].as_str(), r["state"].as_str()),
        (Some(mid.as_str()), Some("delivered"))
    );
    assert_eq!(r["member"], bob.pubkey().as_str());

    b.send(json!({"type":"receipt","messageId": mid,"state":"seen"}))
        .await;
    let r = a.recv_type("receipt").await;
    assert_eq!(
        (r["state"].as_str(), r["sessionId"].as_str()),
        (Some("seen"), Some("b1"))
    );

    a.send(json!({"type":"message_status","id":"q","messageId":mid}))
        .await;
    let st = a.recv_type("message_status_result").await;
    assert_eq!(st["recipients"][0]["state"], "seen");

    // Pushed once: nothing else arrives for bob.
    let rest = b.sync().await;
    assert!(rest.iter().all(|f| f["type"] != "push"), "{rest:?}");

    // Each node counts what it told the others and what it heard, and
    // times the cross-node push (node 2) and receipt relays (node 1). A
    // node hears its own notifications back on its own LISTEN connection,
    // in no order with the other nodes: so the counts are awaited.
    for node in [1, 2] {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = c.n(node).metrics().await;
            let missing: Vec<&str> = [
                "claudemesh_broker_cluster_notifications_sent_total",
                "claudemesh_broker_cluster_notifications_received_total",
                "claudemesh_broker_cluster_notify_lag_seconds_count",
            ]
            .into_iter()
            .filter(|series| metric(&text, series).unwrap_or(0.0) < 1.0)
            .collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {node}: {missing:?} never counted\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn queued_messages_reach_a_member_that_connects_to_another_node_once() {
    let c = Nodes::start(3).await;
    let (alice, bob) = (c.member("alice"), c.member("bob"));
    let (mut a, _) = c.n(1).session(&alice, "a1", "alice").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        a.send(send_frame(
            &format!("s{i}"),
            &bob.pubkey(),
            vec![alice.envelope(&bob, &format!("m{i}"))],
        ))
        .await;
        ids.push(sent(&a.recv_type("ack").await));
    }
    // Bob comes to node 3 while alice keeps sending from node 1: each
    // message reaches him once, whether read back or pushed live.
    let mut b = c.n(3).daemon(&bob).await;
    for i in 5..10 {
        a.send(send_frame(
            &format!("s{i}"),
            &bob.pubkey(),
            vec![alice.envelope(&bob, &format!("m{i}"))],
        ))
        .await;
        ids.push(sent(&a.recv_type("ack").await));
    }
    let mut got = Vec::new();
    while got.len() < ids.len() {
        let p = b.recv_type("push").await;
        got.push(p["messageId"].as_str().unwrap().to_owned());
    }
    let rest = b.sync().await;
    assert!(rest.iter().all(|f| f["type"] != "push"), "{rest:?}");
    got.sort();
    ids.sort();
    assert_eq!(got, ids);
}

#[tokio::test]
async fn revoking_a_member_closes_its_connections_on_every_node() {
    let c = Nodes::start(3).await;
    let bob = c.member("bob");
    let mut conns = Vec::new();
    for i in 1..=3 {
        conns.push(c.n(i).daemon(&bob).await);
    }
    // From the admin CLI's API, a process of its own on the database.
    c.n(1)
        .admin()
        .revoke_member(&c.n(1).mesh.slug, &bob.pubkey())
        .unwrap();
    for mut conn in conns {
        let (_, closed) = conn.recv_close().await;
        assert_eq!(
            closed,
            Closed {
                code: 1008,
                reason: "revoked".into()
            }
        );
    }
}

#[tokio::test]
async fn a_hello_accepted_by_one_node_is_replayed_on_another() {
    let c = Nodes::start(2).await;
    let bob = c.member("bob");
    let hello = bob.hello_frame("b1", Some("bob"), ConnectionRole::Session, fresh_ts());
    let mut first = c.n(1).connect().await;
    first.send(hello.clone()).await;
    assert_eq!(first.recv().await["type"], "hello_ack");

    let mut again = c.n(2).connect().await;
    again.send(hello).await;
    let (frames, closed) = again.recv_close().await;
    assert_eq!(
        closed,
        Closed {
            code: 1008,
            reason: "replayed".into()
        }
    );
    assert_eq!(frames[0]["code"], "replayed");
}

#[tokio::test]
async fn fifty_parallel_joins_on_a_one_use_invite_over_three_nodes_enroll_one() {
    let c = Nodes::start(3).await;
    let (_, link) = c
        .n(1)
        .admin()
        .create_invite(&c.n(1).mesh.slug, InviteRole::Member, Some(1), 3600, "")
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let addr = c.n(1 + i % 3).addr;
        let link = link.clone();
        tasks.push(tokio::spawn(async move {
            let key = MemberSecretKey::generate().unwrap();
            let body = json!({"invite": link, "pubkey": key.public_key().to_hex(),
                              "displayName": format!("p{i}")});
            post(addr, "/v1/join", &body).await.0
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || (400..500).contains(s)),
        "{statuses:?}"
    );
    assert_eq!(c.n(2).admin().list_members("team").unwrap().len(), 1);
}

#[tokio::test]
async fn every_target_form_reaches_sessions_on_other_nodes_with_the_ack_states() {
    let c = Nodes::start(3).await;
    let (alice, bob, carol) = (c.member("alice"), c.member("bob"), c.member("carol"));
    let (mut a, _) = c.n(1).session(&alice, "a1", "alice").await;
    let mut d = c.n(2).daemon(&bob).await;
    for (sid, name, groups) in [("b1", "bob", vec!["backend"]), ("b2", "bobby", vec![])] {
        d.send(
            json!({"type":"session_open","sessionId":sid,"displayName":name,
                      "cwd":"/w","pid":1,"host":"h","summary":"","groups":groups}),
        )
        .await;
        d.recv_type("session_opened").await;
    }
    let (mut k, _) = c.n(3).session(&carol, "c1", "carol").await;
    k.send(json!({"type":"join_group","group":"backend"})).await;
    await_peers(
        &mut a,
        &[
            ("bob", &["backend"]),
            ("bobby", &[]),
            ("carol", &["backend"]),
        ],
    )
    .await;
    await_peers(
        &mut k,
        &[("alice", &[]), ("bob", &["backend"]), ("bobby", &[])],
    )
    .await;

    // display name
    a.send(send_frame(
        "m1",
        "carol",
        vec![alice.envelope(&carol, "by name")],
    ))
    .await;
    let ack = a.recv_type("ack").await;
    assert_eq!(recipients(&ack), vec![delivered(&carol, "c1")]);
    let p = k.recv_type("push").await;
    assert_eq!(push_sessions(&p), vec!["c1"]);
    assert_eq!(carol.open(&p, &alice), "by name");

    // pubkey/sessionId
    let to = format!("{}/b2", bob.pubkey());
    a.send(send_frame("m2", &to, vec![alice.envelope(&bob, "to b2")]))
        .await;
    assert_eq!(
        recipients(&a.recv_type("ack").await),
        vec![delivered(&bob, "b2")]
    );
    let p = d.recv_type("push").await;
    assert_eq!(push_sessions(&p), vec!["b2"]);
    assert_eq!(bob.open(&p, &alice), "to b2");

    // pubkey: the whole member
    a.send(send_frame(
        "m3",
        &bob.pubkey(),
        vec![alice.envelope(&bob, "all of bob")],
    ))
    .await;
    assert_eq!(
        recipients(&a.recv_type("ack").await),
        vec![delivered(&bob, "b1"), delivered(&bob, "b2")]
    );
    let p = d.recv_type("push").await;
    assert_eq!(push_sessions(&p), Vec::<String>::new());
    assert_eq!(bob.open(&p, &alice), "all of bob");

    // @group
    a.send(send_frame(
        "m4",
        "@backend",
        vec![alice.envelope(&bob, "g"), alice.envelope(&carol, "g")],
    ))
    .await;
    assert_eq!(recipients(&a.recv_type("ack").await), {
        let mut v = vec![delivered(&bob, "b1"), delivered(&carol, "c1")];
        v.sort();
        v
    });
    assert_eq!(push_sessions(&d.recv_type("push").await), vec!["b1"]);
    assert_eq!(push_sessions(&k.recv_type("push").await), vec!["c1"]);

    // *
    a.send(send_frame(
        "m5",
        "*",
        vec![alice.envelope(&bob, "all"), alice.envelope(&carol, "all")],
    ))
    .await;
    assert_eq!(recipients(&a.recv_type("ack").await), {
        let mut v = vec![
            delivered(&bob, "b1"),
            delivered(&bob, "b2"),
            delivered(&carol, "c1"),
        ];
        v.sort();
        v
    });
    assert_eq!(push_sessions(&d.recv_type("push").await), vec!["b1", "b2"]);
    assert_eq!(push_sessions(&k.recv_type("push").await), vec!["c1"]);

    // Each push went out once.
    for client in [&mut d, &mut k] {
        let rest = client.sync().await;
        assert!(rest.iter().all(|f| f["type"] != "push"), "{rest:?}");
    }
}

/// A message with more recipients than its notification lists (see
/// `notify::messages`) is announced by number only: every node reads all
/// its copies and pushes those of its own members, once each.
#[tokio::test]
async fn a_message_to_more_members_than_a_notification_lists_reaches_each_on_its_node_once() {
    let c = Nodes::start(3).await;
    let alice = c.member("alice");
    let (mut a, _) = c.n(1).session(&alice, "a1", "alice").await;
    let members: Vec<Member> = (0..30).map(|i| c.member(&format!("m{i}"))).collect();
    let mut clients = Vec::new();
    for (i, m) in members.iter().enumerate() {
        // Half on node 2, half on node 3.
        let node = 2 + i % 2;
        let (client, _) = c
            .n(node)
            .session(m, &format!("s{i}"), &format!("m{i}"))
            .await;
        clients.push(client);
    }
    // Node 1 learns of the other nodes' sessions through the database.
    let mut names: Vec<String> = (0..members.len()).map(|i| format!("m{i}")).collect();
    names.sort();
    let no_groups: &[&str] = &[];
    let expected: Vec<(&str, &[&str])> = names.iter().map(|n| (n.as_str(), no_groups)).collect();
    await_peers(&mut a, &expected).await;
    let envelopes = members
        .iter()
        .map(|m| alice.envelope(m, "to all"))
        .collect();
    a.send(send_frame("wide", "*", envelopes)).await;
    let ack = a.recv_type("ack").await;
    // Enough recipients that the notification cannot list them; every
    // session is known on node 1 (awaited above).
    let named: Vec<String> = recipients(&ack).into_iter().map(|r| r.0).collect();
    assert_eq!(named.len(), members.len(), "{ack}");
    let mid = sent(&ack);
    for (m, client) in members.iter().zip(clients.iter_mut()) {
        assert!(
            named.contains(&m.pubkey()),
            "{} is not named: {ack}",
            m.pubkey()
        );
        let p = client.recv_type("push").await;
        assert_eq!(p["messageId"], mid.as_str());
        assert_eq!(m.open(&p, &alice), "to all");
    }
    for client in &mut clients {
        let rest = client.sync().await;
        assert!(rest.iter().all(|f| f["type"] != "push"), "{rest:?}");
    }
}

#[tokio::test]
async fn presence_events_and_peer_lists_span_the_nodes() {
    let c = Nodes::start_with(2, Duration::from_millis(300)).await;
    let (alice, bob, carol) = (c.member("alice"), c.member("bob"), c.member("carol"));
    let (mut a, _) = c.n(1).session(&alice, "a1", "alice").await;
    // Node 2 has heard of alice (a daemon without sessions watches).
    let mut probe = c.n(2).daemon(&carol).await;
    await_peers(&mut probe, &[("alice", &[])]).await;
    let (mut b, ack) = c.n(2).session(&bob, "b1", "bob").await;
    // Bob's node already knows alice.
    let names: Vec<&str> = ack["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["displayName"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["alice"]);

    let joined = a.recv_type("event").await;
    assert_eq!(
        (
            joined["event"].as_str(),
            joined["peer"]["displayName"].as_str()
        ),
        (Some("peer_joined"), Some("bob"))
    );
    b.send(json!({"type":"set_summary","sessionId":"b1","summary":"fixing the build"}))
        .await;
    let updated = a.recv_type("event").await;
    assert_eq!(updated["event"], "peer_updated");
    assert_eq!(updated["peer"]["summary"], "fixing the build");

    // Bob drops; after the grace his node says he left, once.
    b.close().await;
    let left = a.recv_type("event").await;
    assert_eq!(
        (left["event"].as_str(), left["peer"]["displayName"].as_str()),
        (Some("peer_left"), Some("bob"))
    );
    assert_eq!(peers(&mut a).await, Vec::<(String, Vec<String>)>::new());
}

#[tokio::test]
async fn a_session_that_moves_to_another_node_within_its_grace_makes_no_noise() {
    let c = Nodes::start(3).await;
    let (alice, bob, carol) = (c.member("alice"), c.member("bob"), c.member("carol"));
    let (mut a, _) = c.n(1).session(&alice, "a1", "alice").await;
    let (mut k, _) = c.n(3).session(&carol, "c1", "carol").await;
    let (b, _) = c.n(2).session(&bob, "b1", "bob").await;
    await_peers(&mut a, &[("bob", &[]), ("carol", &[])]).await;
    await_peers(&mut k, &[("alice", &[]), ("bob", &[])]).await;
    a.sync().await;
    k.sync().await;

    // Node 2 goes away for bob; he comes back through node 3.
    b.close().await;
    let (mut b, _) = c.n(3).session(&bob, "b1", "bob").await;
    b.send(json!({"type":"set_summary","sessionId":"b1","summary":"back"}))
        .await;
    for observer in [&mut a, &mut k] {
        let frames = observer.recv_until("event").await;
        let last = frames.last().unwrap();
        assert_eq!(last["event"], "peer_updated", "{frames:?}");
        assert_eq!(last["peer"]["summary"], "back");
        assert!(
            frames
                .iter()
                .all(|f| f["type"] != "event" || f["event"] == "peer_updated"),
            "{frames:?}"
        );
    }
    // Routed to the live session on node 3 (not queued for node 2's).
    a.send(send_frame("m", "bob", vec![alice.envelope(&bob, "hi")]))
        .await;
    assert_eq!(
        recipients(&a.recv_type("ack").await),
        vec![delivered(&bob, "b1")]
    );
    assert_eq!(bob.open(&b.recv_type("push").await, &alice), "hi");
    // And node 2, whose grace timer for b1 runs out later, says nothing:
    // its copy became node 3's.
    assert_eq!(
        peers(&mut a).await,
        vec![("bob".to_owned(), vec![]), ("carol".to_owned(), vec![])]
    );
}

/// A node in a runtime of its own, on a thread of its own, so that it can
/// be stopped the way `kill -9` stops a process: every task and socket of
/// it dropped at once, nothing closed gracefully, nothing written after.
/// (In-process stand-in for a killed process: the broker binary is not
/// built by these tests.)
struct KillableNode {
    addr: std::net::SocketAddr,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KillableNode {
    fn start(
        first: &TestBroker,
        id: &str,
        tweak: fn(&mut claudemesh_broker::config::BrokerConfig),
    ) -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (kill, killed) = tokio::sync::oneshot::channel::<()>();
        let url = first.database_url.clone();
        let id = id.to_owned();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            rt.block_on(async {
                let mut config = test_config(dir.path());
                config.database_url = url;
                config.node_id = Some(id);
                tweak(&mut config);
                let broker = claudemesh_broker::start(config).await.unwrap();
                addr_tx.send(broker.local_addr()).unwrap();
                let _ = killed.await;
                // No graceful anything: the runtime goes with every task.
                std::mem::forget(broker);
            });
            rt.shutdown_background();
        });
        let addr = addr_rx.recv().unwrap();
        Self {
            addr,
            kill: Some(kill),
            thread: Some(thread),
        }
    }

    async fn session(&self, m: &Member, session_id: &str, name: &str) -> Client {
        let mut c = Client::connect(&format!("ws://{}/ws", self.addr)).await;
        c.hello(m, session_id, Some(name), ConnectionRole::Session)
            .await;
        c
    }

    fn kill(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn fast_failover(c: &mut claudemesh_broker::config::BrokerConfig) {
    c.heartbeat_every = Duration::from_millis(100);
    c.node_stale_after = Duration::from_millis(600);
    c.presence_grace = Duration::from_millis(2500);
}

#[tokio::test]
async fn a_killed_node_is_taken_over_its_sessions_resume_silently_and_its_messages_arrive_once() {
    let n1 = TestBroker::start_on(Backend::Postgres, |c| {
        c.node_id = Some("node-1".into());
        fast_failover(c);
    })
    .await;
    let mut n2 = KillableNode::start(&n1, "node-2", fast_failover);
    let n3 = {
        let mut config = test_config(n1.dir.path());
        config.node_id = Some("node-3".into());
        fast_failover(&mut config);
        n1.join(config).await
    };
    let (alice, bob, dave, carol) = (
        n1.member("alice"),
        n1.member("bob"),
        n1.member("dave"),
        n1.member("carol"),
    );
    let (mut a, _) = n1.session(&alice, "a1", "alice").await;
    let (mut k, _) = n3.session(&carol, "c1", "carol").await;
    let _b = n2.session(&bob, "b1", "bob").await;
    let _d = n2.session(&dave, "d1", "dave").await;
    await_peers(&mut a, &[("bob", &[]), ("carol", &[]), ("dave", &[])]).await;
    await_peers(&mut k, &[("alice", &[]), ("bob", &[]), ("dave", &[])]).await;
    a.sync().await;
    k.sync().await;

    n2.kill();
    // Sent while bob's node is dead: stored, and delivered when he is back.
    let mut ids = Vec::new();
    for i in 0..5 {
        a.send(send_frame(
            &format!("k{i}"),
            "bob",
            vec![alice.envelope(&bob, &format!("m{i}"))],
        ))
        .await;
        ids.push(sent(&a.recv_type("ack").await));
    }
    // Bob's daemon reconnects through the load balancer to node 3.
    let (mut b, _) = n3.session(&bob, "b1", "bob").await;
    // Each once, and each decrypts to what was sent (the live pushes and
    // the read-back may interleave: the protocol promises no order).
    let mut got = Vec::new();
    while got.len() < ids.len() {
        let p = b.recv_type("push").await;
        let i = ids.iter().position(|id| *id == sent(&p)).unwrap();
        assert_eq!(bob.open(&p, &alice), format!("m{i}"));
        got.push(sent(&p));
    }
    got.sort();
    ids.sort();
    assert_eq!(got, ids);
    // Dave never comes back: after the grace, exactly one node says he
    // left; bob's move made no noise anywhere.
    for observer in [&mut a, &mut k] {
        let frames = observer.recv_until("event").await;
        let left = frames.last().unwrap();
        assert_eq!(
            (left["event"].as_str(), left["peer"]["displayName"].as_str()),
            (Some("peer_left"), Some("dave")),
            "{frames:?}"
        );
        let rest = observer.sync().await;
        assert!(rest.iter().all(|f| f["type"] != "event"), "{rest:?}");
    }
    let rest = b.sync().await;
    assert!(rest.iter().all(|f| f["type"] != "push"), "{rest:?}");
    await_peers(&mut a, &[("bob", &[]), ("carol", &[])]).await;
}

#[tokio::test]
async fn the_connection_limit_per_member_holds_over_the_cluster() {
    let c = {
        let first = TestBroker::start_on(Backend::Postgres, |c| {
            c.node_id = Some("node-1".into());
            c.max_connections_per_member = 2;
        })
        .await;
        let mut config = test_config(first.dir.path());
        config.node_id = Some("node-2".into());
        config.max_connections_per_member = 2;
        let second = first.join(config).await;
        Nodes {
            nodes: vec![first, second],
        }
    };
    let bob = c.member("bob");
    let _one = c.n(1).daemon(&bob).await;
    let two = c.n(2).daemon(&bob).await;
    // A third, on either node, is one too many.
    for i in [1, 2] {
        let mut third = c.n(i).connect().await;
        third
            .send(bob.hello_frame("daemon", None, ConnectionRole::Daemon, fresh_ts()))
            .await;
        let (frames, closed) = third.recv_close().await;
        assert_eq!(closed.reason, "too_many_connections", "{frames:?}");
    }
    // Once one closes, there is room again (its row goes a moment later).
    two.close().await;
    let mut admitted = false;
    for _ in 0..100 {
        let mut again = c.n(1).connect().await;
        again
            .send(bob.hello_frame("daemon", None, ConnectionRole::Daemon, fresh_ts()))
            .await;
        if again.recv().await["type"] == "hello_ack" {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted);
}

#[tokio::test]
async fn nodes_listen_again_after_their_listen_connection_is_cut_and_miss_nothing() {
    let c = Nodes::start(2).await;
    let (alice, bob) = (c.member("alice"), c.member("bob"));
    let (mut a, _) = c.n(1).session(&alice, "a1", "alice").await;
    let mut b = c.n(2).daemon(&bob).await;

    // The database ends every node's LISTEN connection (as a restart of
    // the server, or a network cut, would).
    let url = c.n(1).database_url.clone().unwrap();
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let cut = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'
                 AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(cut.len(), 2, "one LISTEN connection per node");

    // Sent while node 2 may not be listening: it reaches bob once, live or
    // through node 2's catch-up once it listens again; and so does the next.
    let mut ids = Vec::new();
    for i in 0..2 {
        a.send(send_frame(
            &format!("l{i}"),
            &bob.pubkey(),
            vec![alice.envelope(&bob, "x")],
        ))
        .await;
        ids.push(sent(&a.recv_type("ack").await));
        let p = b.recv_type("push").await;
        assert_eq!(sent(&p), ids[i]);
        b.send(json!({"type":"client_ack","messageId": ids[i]}))
            .await;
    }
    let rest = b.sync().await;
    assert!(rest.iter().all(|f| f["type"] != "push"), "{rest:?}");
}

#[tokio::test]
async fn a_node_restarting_under_its_id_duplicates_nothing() {
    let n1 = TestBroker::start_on(Backend::Postgres, |c| {
        c.node_id = Some("node-1".into());
        fast_failover(c);
    })
    .await;
    let mut old = KillableNode::start(&n1, "node-2", fast_failover);
    let (alice, bob, dave) = (n1.member("alice"), n1.member("bob"), n1.member("dave"));
    let (mut a, _) = n1.session(&alice, "a1", "alice").await;
    let _b = old.session(&bob, "b1", "bob").await;
    let _d = old.session(&dave, "d1", "dave").await;
    await_peers(&mut a, &[("bob", &[]), ("dave", &[])]).await;
    a.sync().await;

    old.kill();
    let mut new = KillableNode::start(&n1, "node-2", fast_failover);
    // Bob comes back to the restarted node, under his name; dave does not.
    let b = new.session(&bob, "b1", "bob").await;
    let frames = a.recv_until("event").await;
    let left = frames.last().unwrap();
    assert_eq!(
        (left["event"].as_str(), left["peer"]["displayName"].as_str()),
        (Some("peer_left"), Some("dave")),
        "{frames:?}"
    );
    assert!(
        frames.iter().filter(|f| f["type"] == "event").count() == 1,
        "{frames:?}"
    );
    await_peers(&mut a, &[("bob", &[])]).await;
    drop(b);
    new.kill();
}

#[tokio::test]
async fn display_names_stay_unique_when_two_nodes_give_one_at_once() {
    let c = Nodes::start(2).await;
    let (alice, bob, carol) = (c.member("alice"), c.member("bob"), c.member("carol"));
    let (mut a1, _) = c.n(1).session(&alice, "a1", "alice").await;
    let (mut a2, _) = c.n(2).session(&alice, "a2", "alice-two").await;
    // Both ask for "twin" on different nodes at the same moment.
    let ((_b, _), (_k, _)) = tokio::join!(
        c.n(1).session(&bob, "b1", "twin"),
        c.n(2).session(&carol, "k1", "twin")
    );
    // (A session's own list leaves it out.)
    let twins: [(&str, &[&str]); 2] = [("twin", &[]), ("twin-2", &[])];
    await_peers(&mut a1, &[("alice-two", &[]), twins[0], twins[1]]).await;
    await_peers(&mut a2, &[("alice", &[]), twins[0], twins[1]]).await;
    // "twin" names the same session on both nodes.
    let mut owners = Vec::new();
    for (a, i) in [(&mut a1, 1), (&mut a2, 2)] {
        let to = "twin";
        let env = vec![alice.envelope(&bob, "?"), alice.envelope(&carol, "?")];
        a.send(send_frame(&format!("t{i}"), to, env)).await;
        let ack = a.recv_type("ack").await;
        owners.push(recipients(&ack)[0].0.clone());
    }
    assert_eq!(owners[0], owners[1]);
}

#[tokio::test]
async fn a_node_shut_down_gracefully_hands_its_sessions_over_silently() {
    let mut c = Nodes::start(2).await;
    let (alice, bob) = (c.member("alice"), c.member("bob"));
    let (mut a, _) = c.n(1).session(&alice, "a1", "alice").await;
    let (mut b, _) = c.n(2).session(&bob, "b1", "bob").await;
    await_peers(&mut a, &[("bob", &[])]).await;
    a.sync().await;

    c.nodes[1].shutdown().await;
    let (_, closed) = b.recv_close().await;
    assert_eq!(closed.code, 1001);
    let (mut b, _) = c.n(1).session(&bob, "b1", "bob").await;
    b.send(json!({"type":"set_summary","sessionId":"b1","summary":"moved"}))
        .await;
    let frames = a.recv_until("event").await;
    let last = frames.last().unwrap();
    assert_eq!(
        (last["event"].as_str(), last["peer"]["summary"].as_str()),
        (Some("peer_updated"), Some("moved")),
        "{frames:?}"
    );
    assert_eq!(peers(&mut a).await, vec![("bob".to_owned(), vec![])]);
}
