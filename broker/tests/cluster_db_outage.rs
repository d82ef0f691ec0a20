//! A PostgreSQL outage longer than a node takes to call another dead:
//! when the database returns, every node's last heartbeat in it is stale,
//! yet every node is alive and still holds its connections. None may take
//! another over (its sessions would leave after their grace while
//! connected, and messages for them would be acked `queued`).
//!
//! In-process nodes on a private PostgreSQL that the test stops and
//! starts (not the shared one: other tests use it meanwhile).
//!
//! cargo test -p claudemesh-broker --test cluster_db_outage

mod common;

use std::time::Duration;

use claudemesh_broker::BrokerConfig;
use claudemesh_broker::admin::{Admin, MeshInfo};
use common::postgres::PgServer;
use common::*;

const HEARTBEAT: Duration = Duration::from_millis(100);
const STALE: Duration = Duration::from_millis(600);
const GRACE: Duration = Duration::from_millis(1500);

fn config(dir: &std::path::Path, url: &str, id: &str) -> BrokerConfig {
    let mut c = test_config(dir);
    c.database_url = Some(url.to_owned());
    c.node_id = Some(id.to_owned());
    c.heartbeat_every = HEARTBEAT;
    c.node_stale_after = STALE;
    c.presence_grace = GRACE;
    c
}

async fn node(url: &str, mesh: &MeshInfo, id: &str) -> TestBroker {
    let dir = tempfile::tempdir().unwrap();
    TestBroker::node(config(dir.path(), url, id), mesh).await
}

async fn await_health(t: &TestBroker, status: &str) {
    for _ in 0..300 {
        let (_, body) = http(t.addr, "GET", "/healthz", None).await;
        if body.starts_with(status) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/healthz never said {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_alive_through_a_database_outage_take_none_of_each_other_over() {
    let pg = PgServer::start();
    let url = pg.fresh_database();
    let admin_dir = tempfile::tempdir().unwrap();
    let admin = Admin::open_store(admin_dir.path(), Some(&url)).unwrap();
    let mesh = admin.create_mesh("team").unwrap();
    let (alice, bob) = (
        Member::enroll(&admin, &mesh, "alice"),
        Member::enroll(&admin, &mesh, "bob"),
    );
    drop(admin);
    let n1 = node(&url, &mesh, "node-1").await;
    let n2 = node(&url, &mesh, "node-2").await;
    let (mut a, _) = n1.session(&alice, "a1", "alice").await;
    let (mut b, _) = n2.session(&bob, "b1", "bob").await;
    await_peers(&mut a, &[("bob", &[])]).await;
    await_peers(&mut b, &[("alice", &[])]).await;
    a.sync().await;
    b.sync().await;

    tokio::task::block_in_place(|| pg.stop());
    await_health(&n1, "unhealthy").await;
    // Down for longer than a node may stay silent before it is called
    // dead: every heartbeat in the database is stale when it returns.
    tokio::time::sleep(STALE * 3).await;
    tokio::task::block_in_place(|| pg.resume());
    await_health(&n1, "ok").await;
    await_health(&n2, "ok").await;
    // Unmeasured: a session wrongly put into its grace would leave once
    // the grace has run out, after a few beats.
    tokio::time::sleep(STALE + GRACE + HEARTBEAT * 10).await;

    for (name, c) in [("alice", &mut a), ("bob", &mut b)] {
        let frames = c.sync().await;
        let noise: Vec<_> = frames.iter().filter(|f| f["type"] == "event").collect();
        assert!(noise.is_empty(), "{name} saw {noise:?}");
    }
    await_peers(&mut a, &[("bob", &[])]).await;
    await_peers(&mut b, &[("alice", &[])]).await;
    a.send(send_frame(
        "after",
        "bob",
        vec![alice.envelope(&bob, "after the outage")],
    ))
    .await;
    let ack = a.recv_type("ack").await;
    assert_eq!(
        recipients(&ack),
        vec![(bob.pubkey(), Some("b1".to_owned()), "delivered".to_owned())],
        "{ack}"
    );
    let push = b.recv_type("push").await;
    assert_eq!(bob.open(&push, &alice), "after the outage");
}
