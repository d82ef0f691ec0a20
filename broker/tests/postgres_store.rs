//! The broker on PostgreSQL from the outside: the real binary's `serve`
//! and admin commands with `--database-url` (and its environment
//! variable), and a broker whose database goes away and comes back.
//!
//! cargo test -p claudemesh-broker --test postgres_store

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

use claudemesh_broker::admin::Admin;
use claudemesh_protocol::MemberSecretKey;
use claudemesh_protocol::wire::ConnectionRole;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs an admin command of the binary; its stdout.
fn admin_cmd(keys: &Path, url: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_claudemesh-broker"))
        .arg("--data")
        .arg(keys)
        .args(["--database-url", url])
        .args(args)
        .env_remove("CLAUDEMESH_BROKER_DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `serve` with the database given by the environment variable and no
/// data directory at all.
fn spawn_serve(url: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_claudemesh-broker"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("CLAUDEMESH_BROKER_DATABASE_URL", url)
        .env_remove("CLAUDEMESH_BROKER_DATA")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the broker binary starts")
}

async fn healthz(addr: std::net::SocketAddr) -> Option<(u16, String)> {
    tokio::net::TcpStream::connect(addr).await.ok()?;
    Some(http(addr, "GET", "/healthz", None).await)
}

/// Waits (at most [`WAIT`]) until `/healthz` answers `status`; its body.
async fn wait_health(addr: std::net::SocketAddr, status: u16) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some((s, body)) = healthz(addr).await
            && s == status
        {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/healthz never answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Joins with an invite link over HTTP; the new member.
async fn join(addr: std::net::SocketAddr, link: &str, name: &str, mesh_id: &str) -> Member {
    let key = MemberSecretKey::generate().unwrap();
    let body = json!({"invite": link, "pubkey": key.public_key().to_hex(), "displayName": name});
    let (status, reply) = post(addr, "/v1/join", &body).await;
    assert_eq!(status, 200, "{reply}");
    Member {
        info: claudemesh_broker::admin::MemberInfo {
            id: reply["memberId"].as_str().unwrap().to_owned(),
            mesh_id: mesh_id.to_owned(),
            pubkey: key.public_key().to_hex(),
            display_name: name.to_owned(),
            role: "member".into(),
            revoked: false,
        },
        key,
        mesh_id: mesh_id.to_owned(),
    }
}

async fn session(url: &str, m: &Member, name: &str) -> Client {
    let mut c = Client::connect(url).await;
    c.hello(m, &format!("s-{name}"), Some(name), ConnectionRole::Session)
        .await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_and_administers_a_postgresql_store() {
    let db = postgres::shared().fresh_database();
    let keys = tempfile::tempdir().unwrap();
    let created = admin_cmd(keys.path(), &db, &["mesh", "create", "team"]);
    let mesh_id = created
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .unwrap()
        .trim()
        .to_owned();
    // The owner key stays with the admin; the database is PostgreSQL's.
    assert!(
        keys.path()
            .join("owner-keys")
            .join(format!("{mesh_id}.key"))
            .is_file()
    );
    assert!(!keys.path().join("broker.db").exists());

    let port = free_port();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = spawn_serve(&db, port);
    wait_health(addr, 200).await;

    // `invite` reads the broker URL that `serve` recorded in the database.
    let link_a = admin_cmd(keys.path(), &db, &["invite", "team", "--uses", "1"]);
    let link_b = admin_cmd(keys.path(), &db, &["invite", "team", "--uses", "1"]);
    let alice = join(addr, link_a.trim(), "alice", &mesh_id).await;
    let bob = join(addr, link_b.trim(), "bob", &mesh_id).await;
    // A spent invite is refused.
    let again = json!({"invite": link_a.trim(), "pubkey":
        MemberSecretKey::generate().unwrap().public_key().to_hex(), "displayName": "eve"});
    let (status, reply) = post(addr, "/v1/join", &again).await;
    assert_eq!(
        (status, reply["error"].as_str()),
        (410, Some("exhausted")),
        "{reply}"
    );

    let listed = admin_cmd(keys.path(), &db, &["member", "list", "team"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");

    let ws = format!("ws://{addr}/ws");
    let mut a = session(&ws, &alice, "alice").await;
    let mut b = session(&ws, &bob, "bob").await;
    a.sync().await;
    a.send(send_frame(
        "m1",
        "bob",
        vec![alice.envelope(&bob, "over postgres")],
    ))
    .await;
    let ack = a.recv_type("ack").await;
    assert_eq!(ack["recipients"][0]["state"], "delivered");
    let push = b.recv_type("push").await;
    assert_eq!(push["messageId"], ack["messageId"]);
    assert_eq!(bob.open(&push, &alice), "over postgres");

    // A revocation by the admin command closes bob's connection.
    admin_cmd(keys.path(), &db, &["member", "revoke", "team", "bob"]);
    let (_, closed) = b.recv_close().await;
    assert_eq!(closed.code, 1008, "{closed:?}");

    child.kill().unwrap();
    child.wait().unwrap();
}

fn error_of(frame: &Value) -> (&str, &str) {
    (
        frame["code"].as_str().unwrap_or_default(),
        frame["message"].as_str().unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_are_refused_while_the_database_is_down_and_flow_again_after() {
    // A server of its own: this test stops it.
    let pg = postgres::PgServer::start();
    let db = pg.fresh_database();
    let keys = tempfile::tempdir().unwrap();
    let admin = Admin::open_store(keys.path(), Some(&db)).unwrap();
    let mesh = admin.create_mesh("team").unwrap();
    let enroll = |name: &str| Member::enroll(&admin, &mesh, name);
    let (alice, bob) = (enroll("alice"), enroll("bob"));
    drop(admin);
    let mut config = test_config(keys.path());
    config.database_url = Some(db.clone());
    let broker = claudemesh_broker::start(config).await.unwrap();
    let addr = broker.local_addr();
    let ws = format!("ws://{addr}/ws");
    let mut a = session(&ws, &alice, "alice").await;
    let mut b = session(&ws, &bob, "bob").await;
    a.sync().await;
    a.send(send_frame(
        "m1",
        "bob",
        vec![alice.envelope(&bob, "before")],
    ))
    .await;
    a.recv_type("ack").await;
    assert_eq!(bob.open(&b.recv_type("push").await, &alice), "before");

    pg.stop();
    let body = wait_health(addr, 503).await;
    assert!(
        body.contains("PostgreSQL") && body.contains(&format!("127.0.0.1:{}", pg.port())),
        "the health check names the database: {body}"
    );
    a.send(send_frame(
        "m2",
        "bob",
        vec![alice.envelope(&bob, "during")],
    ))
    .await;
    let refused = a.recv_type("error").await;
    assert_eq!(refused["id"], "m2");
    let (code, message) = error_of(&refused);
    assert_eq!(code, "unavailable");
    assert!(message.contains("database"), "{message}");
    // A new connection is told to come back later (1013), not failed.
    let mut late = Client::connect(&ws).await;
    let hello = bob.hello_frame("s-late", None, ConnectionRole::Session, fresh_ts());
    late.send(hello).await;
    let (frames, closed) = late.recv_close().await;
    assert_eq!((closed.code, closed.reason.as_str()), (1013, "unavailable"));
    assert_eq!(error_of(&frames[0]).0, "unavailable", "{frames:?}");

    pg.resume();
    wait_health(addr, 200).await;
    // The refused message was not stored: the same id is new, and goes through.
    a.send(send_frame("m2", "bob", vec![alice.envelope(&bob, "after")]))
        .await;
    let ack = a.recv_type("ack").await;
    assert_eq!(ack["id"], "m2");
    assert_eq!(ack["duplicate"], false);
    let push = b.recv_type("push").await;
    assert_eq!(
        bob.open(&push, &alice),
        "after",
        "nothing from the outage is pushed"
    );
    broker.shutdown().await;
}
