//! The real broker binary with its data directory and its log on a small
//! tmpfs that fills up (a real ENOSPC, not a mock): while the disk is full
//! sends are refused with `unavailable` and a sentence saying so, the
//! process stays up, and once space is freed the same connection's sends
//! succeed again with no restart. Every acked message reaches its
//! recipient.

mod common;
// The daemon's tests use the same tmpfs helper; the two test crates share
// no support crate, so this one includes the file by path.
#[path = "../../daemon/tests/support/tmpfs.rs"]
mod tmpfs;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

use claudemesh_broker::admin::Admin;
use claudemesh_protocol::wire::ConnectionRole;
use tmpfs::Tmpfs;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// As `install.sh` sets it up: the log file in the data directory.
fn spawn_broker(data: &Path, port: u16) -> Child {
    let log = std::fs::File::create(data.join("broker.log")).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_claudemesh-broker"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data")
        .arg(data)
        // Every line logged: the log keeps hitting the full disk.
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the broker binary starts")
}

async fn healthz(port: u16) -> u16 {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    http(addr, "GET", "/healthz", None).await.0
}

async fn wait_healthy(port: u16) {
    for _ in 0..300 {
        let up = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok();
        if up && healthz(port).await == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the broker did not become healthy");
}

/// Sends one message and returns the broker's answer to it (`ack` or
/// `error`), skipping anything else.
async fn send_one(a: &mut Client, alice: &Member, bob: &Member, id: &str, text: &str) -> Value {
    a.send(send_frame(
        id,
        &bob.pubkey(),
        vec![alice.envelope(bob, text)],
    ))
    .await;
    loop {
        let v = a.recv().await;
        if (v["type"] == "ack" || v["type"] == "error") && v["id"] == id {
            return v;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_sends_clearly_and_recovers_without_a_restart() {
    let Some(disk) = Tmpfs::mount("6m") else {
        return;
    };
    let data = disk.path().join("data");
    let admin = Admin::open(&data).unwrap();
    let mesh = admin.create_mesh("full").unwrap();
    let enroll = |name: &str| Member::enroll(&admin, &mesh, name);
    let (alice, bob) = (enroll("alice"), enroll("bob"));
    drop(admin);
    let port = free_port();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let mut child = spawn_broker(&data, port);
    wait_healthy(port).await;

    let mut b = Client::connect(&url).await;
    b.hello(&bob, "b1", Some("bob"), ConnectionRole::Session)
        .await;
    let mut a = Client::connect(&url).await;
    a.hello(&alice, "a1", Some("alice"), ConnectionRole::Session)
        .await;

    // 8 KiB of text per message: the WAL must grow, and cannot.
    let text = |i: usize| format!("{i}:{}", "x".repeat(8 * 1024));
    let mut acked: HashMap<String, usize> = HashMap::new();
    for i in 0..10 {
        let answer = send_one(&mut a, &alice, &bob, &format!("f{i}"), &text(i)).await;
        assert_eq!(answer["type"], "ack", "{answer}");
        acked.insert(answer["messageId"].as_str().unwrap().to_owned(), i);
    }
    let filler = disk.fill();
    let mut refused = None;
    for i in 10..2000 {
        let answer = send_one(&mut a, &alice, &bob, &format!("f{i}"), &text(i)).await;
        if answer["type"] == "ack" {
            acked.insert(answer["messageId"].as_str().unwrap().to_owned(), i);
        } else {
            refused = Some((i, answer));
            break;
        }
    }
    let (refused_at, error) = refused.expect("a send is refused once the disk is full");
    assert_eq!(error["code"], "unavailable", "{error}");
    let sentence = error["message"].as_str().unwrap();
    assert!(sentence.contains("disk is full"), "{sentence}");

    // Still full: still refused, clearly, and the process is up. Each
    // refusal is logged: the log, on the same disk, soon cannot be written
    // either (its last page fills up), which must change nothing.
    for i in 0..64 {
        let again = send_one(&mut a, &alice, &bob, &format!("still-{i}"), &text(9999)).await;
        assert_eq!(again["type"], "error", "{again}");
        assert_eq!(again["code"], "unavailable", "{again}");
    }
    // A new hello cannot record its signature (replay protection): it is
    // refused as "try again later", not as an internal error.
    let mut c = Client::connect(&url).await;
    c.send(bob.hello_frame(
        "b-full",
        Some("bob-full"),
        ConnectionRole::Session,
        fresh_ts(),
    ))
    .await;
    let (frames, closed) = c.recv_close().await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (1013, "unavailable"),
        "{frames:?}"
    );
    assert_eq!(frames[0]["code"], "unavailable", "{frames:?}");
    let log = std::fs::metadata(data.join("broker.log")).unwrap().len();
    assert!(
        log < 64 * 200,
        "the log kept growing on a full disk ({log} bytes)"
    );
    assert!(child.try_wait().unwrap().is_none(), "the broker exited");

    // Space returns: the refused message goes through on the same
    // connection, with the same id, no restart.
    disk.free(&filler);
    let mut recovered = None;
    for _ in 0..100 {
        let answer = send_one(
            &mut a,
            &alice,
            &bob,
            &format!("f{refused_at}"),
            &text(refused_at),
        )
        .await;
        if answer["type"] == "ack" {
            recovered = Some(answer);
            break;
        }
        assert_eq!(answer["code"], "unavailable", "{answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let recovered = recovered.expect("sends succeed again once space is freed");
    acked.insert(
        recovered["messageId"].as_str().unwrap().to_owned(),
        refused_at,
    );
    let after = send_one(&mut a, &alice, &bob, "after", "after the full disk").await;
    assert_eq!(after["type"], "ack", "{after}");
    assert_eq!(healthz(port).await, 200);

    // Every acked message reaches bob, with its text.
    let mut pushed = 0;
    while pushed < acked.len() {
        let p = b.recv_type("push").await;
        let mid = p["messageId"].as_str().unwrap();
        if let Some(i) = acked.get(mid) {
            assert_eq!(bob.open(&p, &alice), text(*i));
            pushed += 1;
        }
    }
    // A new hello is served as well.
    let mut c = Client::connect(&url).await;
    c.hello(&bob, "b2", Some("bob-2"), ConnectionRole::Session)
        .await;
    assert!(child.try_wait().unwrap().is_none(), "the broker exited");
    let _ = child.kill();
    let _ = child.wait();
}
