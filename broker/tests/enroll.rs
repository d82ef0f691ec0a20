//! `POST /v1/join`, `POST /v1/leave`, and revocation from the admin API
//! while the server runs.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;
use serde_json::{Value, json};

use claudemesh_broker::admin::{Admin, InviteRole};
use claudemesh_protocol::MemberSecretKey;
use claudemesh_protocol::leave::LeaveRequest;
use claudemesh_protocol::wire::ConnectionRole;

fn join_body(link: &str, key: &MemberSecretKey, name: &str) -> Value {
    json!({"invite": link, "pubkey": key.public_key().to_hex(), "displayName": name})
}

fn invite(b: &TestBroker, uses: Option<u32>) -> (String, String) {
    b.admin()
        .create_invite(&b.mesh.slug, InviteRole::Member, uses, 3600, "")
        .unwrap()
}

#[tokio::test]
async fn join_enrolls_and_the_member_can_say_hello() {
    let b = TestBroker::start().await;
    let (_, link) = invite(&b, Some(1));
    let key = MemberSecretKey::generate().unwrap();
    let (status, body) = post(b.addr, "/v1/join", &join_body(&link, &key, "carol")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["meshId"], b.mesh.id.as_str());
    assert_eq!(body["meshSlug"], "team");
    assert_eq!(body["broker"], b.ws_url().as_str());
    let member_id = body["memberId"].as_str().unwrap().to_owned();
    let members = b.admin().list_members("team").unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].id, member_id);
    assert_eq!(members[0].display_name, "carol");
    assert_eq!(members[0].role, "member");

    let m = Member {
        key,
        info: members[0].clone(),
        mesh_id: b.mesh.id.clone(),
    };
    let (_c, ack) = b.session(&m, "s", "carol").await;
    assert_eq!(ack["memberId"], member_id.as_str());
}

#[tokio::test]
async fn rejoining_with_the_same_key_uses_no_invite() {
    let b = TestBroker::start().await;
    let (_, link) = invite(&b, Some(1));
    let key = MemberSecretKey::generate().unwrap();
    let (s1, first) = post(b.addr, "/v1/join", &join_body(&link, &key, "carol")).await;
    let (s2, again) = post(b.addr, "/v1/join", &join_body(&link, &key, "carol")).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first["memberId"], again["memberId"]);
    // The single use was consumed once: another key finds it exhausted.
    let other = MemberSecretKey::generate().unwrap();
    let (s3, body) = post(b.addr, "/v1/join", &join_body(&link, &other, "dave")).await;
    assert_eq!(s3, 410);
    assert_eq!(body["error"], "exhausted");
    assert!(body["message"].as_str().is_some());
}

#[tokio::test]
async fn concurrent_joins_on_a_single_use_invite_have_exactly_one_winner() {
    let b = TestBroker::start().await;
    for round in 0..3 {
        let (_, link) = invite(&b, Some(1));
        let mut tasks = Vec::new();
        for i in 0..8 {
            let link = link.clone();
            let addr = b.addr;
            tasks.push(tokio::spawn(async move {
                let key = MemberSecretKey::generate().unwrap();
                post(
                    addr,
                    "/v1/join",
                    &join_body(&link, &key, &format!("p{round}-{i}")),
                )
                .await
            }));
        }
        let mut wins = 0;
        for t in tasks {
            let (status, body) = t.await.unwrap();
            match status {
                200 => wins += 1,
                410 => assert_eq!(body["error"], "exhausted"),
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(wins, 1, "round {round}");
    }
    assert_eq!(b.admin().list_members("team").unwrap().len(), 3);
}

#[tokio::test]
async fn multi_use_invites_count_their_uses() {
    let b = TestBroker::start().await;
    let (_, link) = invite(&b, Some(3));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let link = link.clone();
        let addr = b.addr;
        tasks.push(tokio::spawn(async move {
            let key = MemberSecretKey::generate().unwrap();
            post(addr, "/v1/join", &join_body(&link, &key, &format!("p{i}")))
                .await
                .0
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 3);
}

#[tokio::test]
async fn join_refusals() {
    let b = TestBroker::start().await;
    let key = MemberSecretKey::generate().unwrap();

    // Not a link at all.
    let (s, body) = post(b.addr, "/v1/join", &join_body("https://x", &key, "x")).await;
    assert_eq!((s, body["error"].as_str()), (400, Some("bad_invite")));

    // A tampered payload: the role changed after signing.
    let (_, link) = invite(&b, None);
    let payload = link.strip_prefix("ic://join/").unwrap();
    let mut inv: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    inv["role"] = json!("admin");
    let forged = format!("ic://join/{}", URL_SAFE_NO_PAD.encode(inv.to_string()));
    let (s, body) = post(b.addr, "/v1/join", &join_body(&forged, &key, "x")).await;
    assert_eq!((s, body["error"].as_str()), (403, Some("bad_signature")));

    // Revoked.
    let (id, link) = invite(&b, None);
    b.admin().revoke_invite(&id).unwrap();
    let (s, body) = post(b.addr, "/v1/join", &join_body(&link, &key, "x")).await;
    assert_eq!((s, body["error"].as_str()), (403, Some("revoked")));

    // Expired: a broker whose clock is two hours ahead.
    let (_, link) = invite(&b, None);
    let ahead = TestClock::pinned(now_ms() + 7_200_000);
    let data = b.data_dir();
    let mut cfg = test_config(&data);
    cfg.clock = ahead.clock();
    let late = claudemesh_broker::start(cfg).await.unwrap();
    let (s, body) = post(late.local_addr(), "/v1/join", &join_body(&link, &key, "x")).await;
    assert_eq!((s, body["error"].as_str()), (410, Some("expired")));
    late.shutdown().await;

    // A mesh this broker does not have: an invite from another data dir.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Admin::open(other_dir.path()).unwrap();
    other.create_mesh("elsewhere").unwrap();
    let (_, link) = other
        .create_invite(
            "elsewhere",
            InviteRole::Member,
            None,
            3600,
            "ws://127.0.0.1:1/ws",
        )
        .unwrap();
    let (s, body) = post(b.addr, "/v1/join", &join_body(&link, &key, "x")).await;
    assert_eq!((s, body["error"].as_str()), (404, Some("unknown_mesh")));

    // Not JSON.
    let (s, text) = http(b.addr, "POST", "/v1/join", None).await;
    assert_eq!(s, 400, "{text}");
    assert!(b.admin().list_members("team").unwrap().is_empty());
}

/// In a cluster the connections are on nodes 2 and 3 and the leave
/// requests go to nodes 1, 2 and 3: a revocation through any node closes
/// the member's connections on every node.
async fn leave_revokes_and_closes_connections(store: Backend) {
    let b = TestBroker::on(store).await;
    let m = b.member("m");
    let watcher = b.member("w");
    let (mut wc, _) = b.session(&watcher, "w", "watcher").await;
    let (mut c1, _) = b.session(&m, "s1", "one").await;
    let mut c2 = b.daemon(&m).await;
    wc.recv_type("event").await;
    b.assert_apart(&[&wc, &c1, &c2]);

    let bad = LeaveRequest::signed(&watcher.key, &b.mesh.id, &m.info.id, now_ms());
    let (s, body) = post(
        b.next_addr(),
        "/v1/leave",
        &serde_json::to_value(&bad).unwrap(),
    )
    .await;
    assert_eq!((s, body["error"].as_str()), (403, Some("unauthorized")));

    let stale = LeaveRequest::signed(&m.key, &b.mesh.id, &m.info.id, now_ms() - 120_000);
    let (s, body) = post(
        b.next_addr(),
        "/v1/leave",
        &serde_json::to_value(&stale).unwrap(),
    )
    .await;
    assert_eq!((s, body["error"].as_str()), (400, Some("timestamp_skew")));

    let req = LeaveRequest::signed(&m.key, &b.mesh.id, &m.info.id, now_ms());
    let (s, body) = post(
        b.next_addr(),
        "/v1/leave",
        &serde_json::to_value(&req).unwrap(),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    for c in [&mut c1, &mut c2] {
        let (_, closed) = c.recv_close().await;
        assert_eq!(
            closed,
            Closed {
                code: 1008,
                reason: "revoked".into()
            }
        );
    }
    let left = wc.recv_type("event").await;
    assert_eq!(left["event"], "peer_left");
    assert_eq!(left["peer"]["sessionId"], "s1");

    let mut again = b.connect().await;
    again
        .send(m.hello_frame("s1", None, ConnectionRole::Session, fresh_ts()))
        .await;
    let (frames, closed) = again.recv_close().await;
    assert_eq!(frames[0]["code"], "unauthorized");
    assert_eq!(closed.code, 1008);
    assert!(
        b.admin()
            .list_members("team")
            .unwrap()
            .iter()
            .any(|x| x.id == m.info.id && x.revoked)
    );
}

#[tokio::test]
async fn a_revoke_by_another_process_closes_live_connections() {
    let b = TestBroker::start().await;
    let m = b.member("mallory");
    let (mut c, _) = b.session(&m, "s1", "mallory").await;
    // A separate Admin on the same directory, as the CLI would be.
    let cli = Admin::open(&b.data_dir()).unwrap();
    let revoked = cli.revoke_member("team", "mallory").unwrap();
    assert!(revoked.revoked);
    let (_, closed) = c.recv_close().await;
    assert_eq!(
        closed,
        Closed {
            code: 1008,
            reason: "revoked".into()
        }
    );
    let mut again = b.connect().await;
    again
        .send(m.hello_frame("s1", None, ConnectionRole::Session, fresh_ts()))
        .await;
    let (frames, _) = again.recv_close().await;
    assert_eq!(frames[0]["code"], "unauthorized");
}

#[tokio::test]
async fn admin_api_basics() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Admin::open(dir.path()).unwrap();
    let mesh = admin.create_mesh("ops").unwrap();
    assert!(admin.create_mesh("ops").is_err());
    assert!(admin.create_mesh("Bad Slug").is_err());
    assert_eq!(admin.find_mesh("ops").unwrap().unwrap(), mesh);
    assert_eq!(admin.find_mesh(&mesh.id).unwrap().unwrap(), mesh);
    assert!(admin.find_mesh("nope").unwrap().is_none());
    // No URL recorded yet (no server ran here) and none given.
    assert!(
        admin
            .create_invite("ops", InviteRole::Member, None, 60, "")
            .is_err()
    );
    let (_, link) = admin
        .create_invite(
            "ops",
            InviteRole::Admin,
            Some(2),
            60,
            "wss://mesh.example.com/ws",
        )
        .unwrap();
    let inv = claudemesh_protocol::invite::decode_and_verify(&link, now_ms() / 1000).unwrap();
    assert_eq!(inv.owner_pubkey, mesh.owner_pubkey);
    assert_eq!(inv.broker, "wss://mesh.example.com/ws");
    let key = MemberSecretKey::generate().unwrap();
    let a = admin
        .enroll_member("ops", &key.public_key().to_hex(), "a")
        .unwrap();
    let again = admin
        .enroll_member(&mesh.id, &key.public_key().to_hex(), "other")
        .unwrap();
    assert_eq!(a, again);
    assert!(admin.enroll_member("ops", "zz", "x").is_err());

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let keys = dir.path().join("owner-keys");
        let file = keys.join(format!("{}.key", mesh.id));
        assert_eq!(
            std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

all_backends!(leave_revokes_and_closes_connections);
