//! Several broker nodes on one PostgreSQL database (real sockets, a real
//! database server), with clients attached to different nodes: what one
//! node does must reach the clients of every other node, as on one node.

mod common;

use common::*;
use serde_json::{Value, json};

use claudemesh_broker::admin::InviteRole;
use claudemesh_protocol::MemberSecretKey;
use claudemesh_protocol::wire::ConnectionRole;

/// `n` nodes on one fresh database (node 1 made the mesh and enrolls the
/// members), each with its own node id.
struct Cluster {
    nodes: Vec<TestBroker>,
}

impl Cluster {
    async fn start(n: usize) -> Self {
        let first = TestBroker::start_on(Backend::Postgres, |c| {
            c.node_id = Some("node-1".into());
        })
        .await;
        let mut nodes = vec![first];
        for i in 2..=n {
            nodes.push(Self::node(&nodes[0], i).await);
        }
        Self { nodes }
    }

    /// Another node on `first`'s database.
    async fn node(first: &TestBroker, i: usize) -> TestBroker {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        config.database_url = first.database_url.clone();
        config.node_id = Some(format!("node-{i}"));
        let broker = claudemesh_broker::start(config).await.unwrap();
        TestBroker {
            addr: broker.local_addr(),
            broker: Some(broker),
            dir,
            mesh: first.mesh.clone(),
            database_url: first.database_url.clone(),
        }
    }

    /// Node `i`, counting from 1.
    fn n(&self, i: usize) -> &TestBroker {
        &self.nodes[i - 1]
    }

    fn member(&self, name: &str) -> Member {
        self.nodes[0].member(name)
    }
}

fn sent(v: &Value) -> String {
    v["messageId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_message_reaches_a_member_on_another_node_with_its_receipts_and_status() {
    let c = Cluster::start(3).await;
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
}

#[tokio::test]
async fn queued_messages_reach_a_member_that_connects_to_another_node_once() {
    let c = Cluster::start(3).await;
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
    let c = Cluster::start(3).await;
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
    let c = Cluster::start(2).await;
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
    let c = Cluster::start(3).await;
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
