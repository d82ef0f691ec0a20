//! Operating a cluster: `claudemesh-broker serve` nodes as real processes
//! on one private PostgreSQL, behind a real HAProxy running the shipped
//! `deploy/haproxy.cfg` (its `@test-…` lines replaced, see
//! `common/cluster.rs`). Nodes are killed with SIGKILL and restarted;
//! PostgreSQL is stopped and started again.
//!
//! Delivery between nodes is the cluster core's and is not asserted here:
//! these tests only rely on what one node does on its own.
//!
//! cargo test -p claudemesh-broker --test cluster_ops

mod common;

use std::collections::HashSet;

use claudemesh_broker::admin::{Admin, InviteRole, MemberInfo};
use claudemesh_protocol::MemberSecretKey;
use claudemesh_protocol::wire::ConnectionRole;
use common::cluster::{Cluster, ClusterSpec, get, health_at};
use common::*;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_claudemesh-broker");

fn three_nodes_behind_haproxy() -> Cluster {
    Cluster::start(
        BIN.as_ref(),
        ClusterSpec {
            nodes: 3,
            haproxy: true,
            serve_flags: Vec::new(),
        },
    )
}

/// The admin API on the cluster's database (owner keys in its directory).
fn admin(c: &Cluster) -> Admin {
    Admin::open_store(c.dir.path(), Some(&c.database_url)).unwrap()
}

fn enroll(admin: &Admin, mesh_id: &str, name: &str) -> Member {
    let key = MemberSecretKey::generate().unwrap();
    let info = admin
        .enroll_member("team", &key.public_key().to_hex(), name)
        .unwrap();
    Member {
        key,
        info,
        mesh_id: mesh_id.to_owned(),
    }
}

/// A session through `url`, with its hello accepted.
async fn session(url: &str, m: &Member, session_id: &str) -> Client {
    let mut c = Client::connect(url).await;
    c.hello(m, session_id, Some(session_id), ConnectionRole::Session)
        .await;
    c
}

/// `connections_active` of node `id`'s own page.
fn active_connections(c: &Cluster, id: &str) -> f64 {
    let page = c.nodes.iter().find(|n| n.id == id).unwrap().metrics();
    metric(
        &page,
        &format!("claudemesh_broker_connections_active{{node=\"{id}\"}}"),
    )
    .unwrap_or_else(|| panic!("no connections_active for {id} in\n{page}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_is_redeemed_and_a_hello_accepted_through_haproxy() {
    let c = three_nodes_behind_haproxy();
    let proxy = c.proxy();
    let admin = admin(&c);
    let mesh = admin.create_mesh("team").unwrap();
    // Invites name the balancer: the public URL each node recorded.
    let (_, link) = admin
        .create_invite("team", InviteRole::Member, Some(1), 3600, "")
        .unwrap();
    let key = MemberSecretKey::generate().unwrap();
    let body = json!({"invite": link, "pubkey": key.public_key().to_hex(), "displayName": "alice"});
    let (status, reply) = post(proxy.addr, "/v1/join", &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["meshId"], mesh.id.as_str(), "{reply}");
    assert_eq!(
        reply["broker"].as_str(),
        Some(proxy.ws_url().as_str()),
        "{reply}"
    );
    let alice = Member {
        info: MemberInfo {
            id: reply["memberId"].as_str().unwrap().to_owned(),
            mesh_id: mesh.id.clone(),
            pubkey: key.public_key().to_hex(),
            display_name: "alice".into(),
            role: "member".into(),
            revoked: false,
        },
        key,
        mesh_id: mesh.id.clone(),
    };
    // The spent invite is refused through the balancer too, whichever
    // node answers.
    let again = json!({"invite": link, "pubkey":
        MemberSecretKey::generate().unwrap().public_key().to_hex(), "displayName": "eve"});
    let (status, reply) = post(proxy.addr, "/v1/join", &again).await;
    assert_eq!((status, reply["error"].as_str()), (410, Some("exhausted")));

    let mut a = session(&proxy.ws_url(), &alice, "a1").await;
    // A message to herself: handled on the node she is on.
    a.send(send_frame(
        "m1",
        &alice.pubkey(),
        vec![alice.envelope(&alice, "hello through haproxy")],
    ))
    .await;
    let ack = a.recv_type("ack").await;
    assert_eq!(ack["id"], "m1", "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_taken_out_and_comes_back_under_the_same_id() {
    let mut c = three_nodes_behind_haproxy();
    let admin = admin(&c);
    let mesh = admin.create_mesh("team").unwrap();
    let alice = enroll(&admin, &mesh.id, "alice");
    let url = c.proxy().ws_url();

    c.node("n2").kill9();
    c.proxy().wait_status("n2", "DOWN");
    // New requests and connections land on the live nodes only.
    let mut answered = HashSet::new();
    for _ in 0..12 {
        let (status, body, node) = health_at(c.proxy().addr).expect("HAProxy answers");
        assert_eq!(status, 200, "{body}");
        answered.insert(node.expect("the node header"));
    }
    assert_eq!(
        answered,
        HashSet::from(["n1".to_owned(), "n3".to_owned()]),
        "round robin over health checks reaches both live nodes and never n2"
    );
    let mut held = Vec::new();
    for k in 0..4 {
        held.push(session(&url, &alice, &format!("s{k}")).await);
    }
    assert_eq!(active_connections(&c, "n1"), 2.0);
    assert_eq!(active_connections(&c, "n3"), 2.0);

    // The same id, the same port, the same database.
    c.node("n2").restart();
    c.proxy().wait_status("n2", "UP");
    let (_, _, node) = c.nodes[1].health().unwrap();
    assert_eq!(node.as_deref(), Some("n2"));
    // leastconn: the next connection goes to the node holding none.
    held.push(session(&url, &alice, "s-after").await);
    assert_eq!(active_connections(&c, "n2"), 1.0);
    let page = c.nodes[1].metrics();
    assert!(
        metric(
            &page,
            "claudemesh_broker_connections_accepted_total{node=\"n2\"}"
        ) == Some(1.0),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_postgresql_every_node_is_unhealthy_and_refuses_sends_until_it_returns() {
    let c = three_nodes_behind_haproxy();
    let admin = admin(&c);
    let mesh = admin.create_mesh("team").unwrap();
    let alice = enroll(&admin, &mesh.id, "alice");
    drop(admin);
    let mut a = session(&c.proxy().ws_url(), &alice, "a1").await;

    c.pg.stop();
    for node in &c.nodes {
        let body = node.wait_health(503);
        assert!(
            body.contains("PostgreSQL") && body.contains(&format!("127.0.0.1:{}", c.pg.port())),
            "{} names the database: {body}",
            node.id
        );
    }
    for node in &c.nodes {
        c.proxy().wait_status(&node.id, "DOWN");
    }
    // With every node down HAProxy has nowhere to send a new request.
    let (status, _, _) = get(c.proxy().addr, "/healthz").expect("HAProxy answers");
    assert_eq!(status, 503);
    // The open connection stays; its send is refused, not lost.
    a.send(send_frame(
        "m1",
        &alice.pubkey(),
        vec![alice.envelope(&alice, "during")],
    ))
    .await;
    let refused = a.recv_type("error").await;
    assert_eq!(refused["id"], "m1");
    assert_eq!(refused["code"], "unavailable", "{refused}");

    c.pg.resume();
    for node in &c.nodes {
        node.wait_health(200);
        c.proxy().wait_status(&node.id, "UP");
    }
    a.send(send_frame(
        "m1",
        &alice.pubkey(),
        vec![alice.envelope(&alice, "after")],
    ))
    .await;
    let ack = a.recv_type("ack").await;
    assert_eq!(
        (ack["id"].as_str(), ack["duplicate"].as_bool()),
        (Some("m1"), Some(false)),
        "the refused send was not stored: {ack}"
    );
    // Sent to herself (one node's work): it arrives once, and the refused
    // text never does.
    let push = a.recv_type("push").await;
    assert_eq!(alice.open(&push, &alice), "after");
    let later = a.sync().await;
    assert!(
        later.iter().all(|f| f["type"] != "push"),
        "one copy only: {later:?}"
    );
}

#[test]
fn the_test_configuration_is_the_shipped_one_with_only_the_marked_lines_replaced() {
    use common::cluster::{HAPROXY_TEMPLATE, haproxy_config};
    let servers = vec![
        ("n1".to_owned(), "127.0.0.1:7001".parse().unwrap()),
        ("n2".to_owned(), "127.0.0.1:7002".parse().unwrap()),
    ];
    let text = haproxy_config(
        HAPROXY_TEMPLATE,
        "127.0.0.1:7000".parse().unwrap(),
        std::path::Path::new("/tmp/x.sock"),
        &servers,
    );
    let unmarked: Vec<&str> = HAPROXY_TEMPLATE
        .lines()
        .filter(|l| !l.contains("# @test-"))
        .collect();
    let kept: Vec<&str> = text.lines().filter(|l| unmarked.contains(l)).collect();
    assert_eq!(kept, unmarked, "every unmarked line is kept, in order");
    for needed in [
        "    option httpchk GET /healthz",
        "    timeout tunnel 1h",
        "    balance leastconn",
        "    bind 127.0.0.1:7000",
        "    server n1 127.0.0.1:7001",
        "    server n2 127.0.0.1:7002",
    ] {
        assert!(text.lines().any(|l| l == needed), "{needed:?} in\n{text}");
    }
    assert!(!text.contains("10.0.0."), "{text}");
    assert!(!text.contains("user haproxy"), "{text}");
}
