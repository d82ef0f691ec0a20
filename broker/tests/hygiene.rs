//! What reaches terminals and logs: names with control characters are
//! refused at the door and printed escaped; frame contents never reach a
//! log, whatever `RUST_LOG` says.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::json;

use claudemesh_broker::admin::{Admin, InviteRole};
use claudemesh_protocol::MemberSecretKey;
use claudemesh_protocol::wire::ConnectionRole;
use common::*;

const BROKER: &str = env!("CARGO_BIN_EXE_claudemesh-broker");

#[tokio::test]
async fn join_refuses_control_characters_in_display_names() {
    let b = TestBroker::start().await;
    let (_, link) = b
        .admin()
        .create_invite(&b.mesh.slug, InviteRole::Member, None, 3600, "")
        .unwrap();
    for name in [
        "evil\u{1b}[2J",
        "two\nlines",
        "nul\u{0}byte",
        &"n".repeat(65),
    ] {
        let key = MemberSecretKey::generate().unwrap();
        let body =
            json!({"invite": link, "pubkey": key.public_key().to_hex(), "displayName": name});
        let (status, answer) = post(b.addr, "/v1/join", &body).await;
        assert_eq!(status, 400, "{name:?}: {answer}");
        assert_eq!(answer["error"], "malformed", "{name:?}: {answer}");
        assert!(answer["message"].as_str().unwrap().contains("displayName"));
    }
    // Nothing was enrolled and the invite was not consumed.
    assert!(b.admin().list_members(&b.mesh.slug).unwrap().is_empty());
    let key = MemberSecretKey::generate().unwrap();
    let body =
        json!({"invite": link, "pubkey": key.public_key().to_hex(), "displayName": "fine name"});
    assert_eq!(post(b.addr, "/v1/join", &body).await.0, 200);
}

#[test]
fn member_list_prints_stored_names_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::open(dir.path()).unwrap();
    let mesh = admin.create_mesh("team").unwrap();
    let key = MemberSecretKey::generate().unwrap();
    // Enrolled directly, as a database written before joins refused such
    // names could hold it.
    admin
        .enroll_member(
            &mesh.id,
            &key.public_key().to_hex(),
            "evil\u{1b}]0;pwned\u{7}\nname",
        )
        .unwrap();
    let out = Command::new(BROKER)
        .arg("--data")
        .arg(dir.path())
        .args(["member", "list", "team"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
    assert!(text.contains("evil\\u{1b}]0;pwned\\u{7}\\nname"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[tokio::test]
async fn trace_logs_never_hold_frame_contents() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::open(dir.path()).unwrap();
    let mesh = admin.create_mesh("team").unwrap();
    let mut child = Command::new(BROKER)
        .arg("--data")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "trace")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let addr = loop {
        let line = lines_rx
            .recv_timeout(WAIT)
            .expect("the broker did not start");
        log.push(line.clone());
        if line.contains("broker listening") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            break v["listen"].as_str().unwrap().to_owned();
        }
    };
    let m = {
        let key = MemberSecretKey::generate().unwrap();
        let info = admin
            .enroll_member(&mesh.id, &key.public_key().to_hex(), "m")
            .unwrap();
        Member {
            key,
            info,
            mesh_id: mesh.id.clone(),
        }
    };
    let mut c = Client::connect(&format!("ws://{addr}/ws")).await;
    c.hello(&m, "s1", Some("m"), ConnectionRole::Session).await;
    let env = m.envelope(&m, "secret text");
    let nonce = env["nonce"].as_str().unwrap().to_owned();
    let ciphertext = env["ciphertext"].as_str().unwrap().to_owned();
    c.send(send_frame("x1", &m.pubkey(), vec![env])).await;
    c.recv_type("push").await;
    c.close().await;
    let _ = child.kill();
    let _ = child.wait();
    log.extend(lines_rx.try_iter());
    let text = log.join("\n");
    assert!(text.contains("connection accepted"), "{text}");
    assert!(!text.contains(&nonce), "a nonce was logged");
    assert!(!text.contains(&ciphertext[..40]), "ciphertext was logged");
}
