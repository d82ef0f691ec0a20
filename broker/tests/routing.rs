//! Sessions, presence and routing over real WebSockets: every target form,
//! the daemon role, display names, grace period, takeover, receipts.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// A daemon connection with sessions opened on it.
async fn daemon_with(b: &TestBroker, m: &Member, sessions: &[(&str, &str, &[&str])]) -> Client {
    let mut d = b.daemon(m).await;
    for (sid, name, groups) in sessions {
        d.send(
            json!({"type":"session_open","sessionId":sid,"displayName":name,
                      "cwd":"/w","pid":1,"host":"h","summary":"","groups":groups}),
        )
        .await;
        let opened = d.recv_type("session_opened").await;
        assert_eq!(opened["sessionId"], *sid);
    }
    b.settle().await;
    d
}

async fn every_target_form(store: Backend) {
    let b = TestBroker::on(store).await;
    let (alice, bob, carol) = (b.member("alice"), b.member("bob"), b.member("carol"));
    let (mut a, _) = b.session(&alice, "a1", "alice").await;
    let mut d = daemon_with(
        &b,
        &bob,
        &[("b1", "bob", &["backend"]), ("b2", "bobby", &[])],
    )
    .await;
    let (mut c, _) = b.session(&carol, "c1", "carol").await;
    b.assert_apart(&[&a, &d, &c]);
    c.send(json!({"type":"join_group","group":"backend"})).await;
    assert!(c.sync().await.is_empty());
    b.settle().await;
    a.sync().await;
    d.sync().await;

    // displayName
    a.send(send_frame(
        "m1",
        "carol",
        vec![alice.envelope(&carol, "by name")],
    ))
    .await;
    let ack = a.recv_type("ack").await;
    assert_eq!(ack["id"], "m1");
    assert_eq!(ack["duplicate"], false);
    assert_eq!(
        recipients(&ack),
        vec![(carol.pubkey(), Some("c1".into()), "delivered".into())]
    );
    let p = c.recv_type("push").await;
    assert_eq!(p["messageId"], ack["messageId"]);
    assert_eq!(p["from"]["member"], alice.pubkey());
    assert_eq!(p["from"]["sessionId"], "a1");
    assert_eq!(p["from"]["displayName"], "alice");
    assert_eq!(p["to"], "carol");
    assert_eq!(p["priority"], "now");
    assert_eq!(push_sessions(&p), vec!["c1"]);
    assert!(p["sentAt"].as_i64().is_some());
    assert_eq!(carol.open(&p, &alice), "by name");

    // pubkey/sessionId
    let to = format!("{}/b2", bob.pubkey());
    a.send(send_frame("m2", &to, vec![alice.envelope(&bob, "to b2")]))
        .await;
    let ack = a.recv_type("ack").await;
    assert_eq!(
        recipients(&ack),
        vec![(bob.pubkey(), Some("b2".into()), "delivered".into())]
    );
    let p = d.recv_type("push").await;
    assert_eq!(push_sessions(&p), vec!["b2"]);
    assert_eq!(p["to"], to.as_str());
    assert_eq!(bob.open(&p, &alice), "to b2");

    // pubkey: the whole member
    a.send(send_frame(
        "m3",
        &bob.pubkey(),
        vec![alice.envelope(&bob, "all of bob")],
    ))
    .await;
    let ack = a.recv_type("ack").await;
    assert_eq!(
        recipients(&ack),
        vec![
            (bob.pubkey(), Some("b1".into()), "delivered".into()),
            (bob.pubkey(), Some("b2".into()), "delivered".into())
        ]
    );
    let p = d.recv_type("push").await;
    assert_eq!(push_sessions(&p), Vec::<String>::new());

    // @group
    a.send(send_frame(
        "m4",
        "@backend",
        vec![alice.envelope(&bob, "g"), alice.envelope(&carol, "g")],
    ))
    .await;
    let ack = a.recv_type("ack").await;
    assert_eq!(ack["recipients"].as_array().unwrap().len(), 2);
    assert_eq!(push_sessions(&d.recv_type("push").await), vec!["b1"]);
    assert_eq!(push_sessions(&c.recv_type("push").await), vec!["c1"]);

    // *: from bob's b1 — alice, carol, and bob's *other* session b2.
    let mut all = send_frame(
        "m5",
        "*",
        vec![
            bob.envelope(&alice, "hi all"),
            bob.envelope(&carol, "hi all"),
            bob.envelope(&bob, "hi all"),
        ],
    );
    all["sessionId"] = json!("b1");
    d.send(all).await;
    let ack = d.recv_type("ack").await;
    assert_eq!(recipients(&ack), {
        let mut v = vec![
            (alice.pubkey(), Some("a1".into()), "delivered".into()),
            (bob.pubkey(), Some("b2".into()), "delivered".into()),
            (carol.pubkey(), Some("c1".into()), "delivered".into()),
        ];
        v.sort();
        v
    });
    let own = d.recv_type("push").await;
    assert_eq!(push_sessions(&own), vec!["b2"]);
    assert_eq!(bob.open(&own, &bob), "hi all");
    assert_eq!(alice.open(&a.recv_type("push").await, &bob), "hi all");
    assert_eq!(carol.open(&c.recv_type("push").await, &bob), "hi all");
}

async fn unknown_targets_and_missing_envelopes_are_refused(store: Backend) {
    let b = TestBroker::on(store).await;
    let (alice, bob, carol) = (b.member("alice"), b.member("bob"), b.member("carol"));
    let (mut a, _) = b.session(&alice, "a1", "alice").await;
    let (_bc, _) = b.session(&bob, "b1", "bob").await;
    let (mut cc, _) = b.session(&carol, "c1", "carol").await;
    b.assert_apart(&[&a, &_bc, &cc]);
    cc.send(json!({"type":"join_group","group":"ops"})).await;
    cc.sync().await;
    b.settle().await;
    let (_, bob_sess) = b.session(&bob, "b2", "bob2").await;
    let _ = bob_sess;
    let stranger = claudemesh_protocol::MemberSecretKey::generate()
        .unwrap()
        .public_key()
        .to_hex();
    for (i, to) in [
        "nobody".to_owned(),
        "@nogroup".to_owned(),
        stranger.clone(),
        format!("{stranger}/s1"),
        format!("{}/no-such-session", bob.pubkey()),
    ]
    .iter()
    .enumerate()
    {
        let id = format!("u{i}");
        a.send(send_frame(&id, to, vec![alice.envelope(&bob, "x")]))
            .await;
        let e = a.recv_type("error").await;
        assert_eq!(e["code"], "unknown_target", "{to}");
        assert_eq!(e["id"], id.as_str());
    }
    a.send(send_frame(
        "me1",
        "@ops",
        vec![alice.envelope(&bob, "only bob")],
    ))
    .await;
    let e = a.recv_type("error").await;
    assert_eq!(e["code"], "missing_envelope");
    assert_eq!(e["id"], "me1");
    assert!(e["message"].as_str().unwrap().contains(&carol.pubkey()));
    assert_eq!(e["members"], json!([carol.pubkey()]));
    let m = b.metrics().await;
    assert_eq!(
        metric(
            &m,
            "claudemesh_broker_messages_rejected_total{reason=\"unknown_target\"}"
        ),
        Some(5.0)
    );
    assert_eq!(
        metric(
            &m,
            "claudemesh_broker_messages_rejected_total{reason=\"missing_envelope\"}"
        ),
        Some(1.0)
    );
}

async fn broadcast_to_an_empty_mesh_is_acked_with_no_recipients(store: Backend) {
    let b = TestBroker::on(store).await;
    let alice = b.member("alice");
    let (mut a, _) = b.session(&alice, "a1", "alice").await;
    a.send(send_frame("b1", "*", vec![])).await;
    let ack = a.recv_type("ack").await;
    assert_eq!(ack["recipients"], json!([]));
}

async fn malformed_frames_get_errors_and_the_connection_lives(store: Backend) {
    let b = TestBroker::on(store).await;
    let alice = b.member("alice");
    let (mut a, _) = b.session(&alice, "a1", "alice").await;
    a.send_text("garbage".into()).await;
    assert_eq!(a.recv().await["code"], "malformed");
    a.send(json!({"type":"send","id":"x1"})).await;
    let e = a.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("malformed"), Some("x1"))
    );
    a.send(json!({"type":"bogus","id":"r9"})).await;
    let e = a.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("unknown_type"), Some("r9"))
    );
    a.send(send_frame(
        "x2",
        "*",
        vec![json!({"member":"ab","nonce":"AA==","ciphertext":"AA=="})],
    ))
    .await;
    let e = a.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("malformed"), Some("x2"))
    );
    a.send(json!({"type":"set_status","sessionId":"not-mine","status":"working"}))
        .await;
    assert_eq!(a.recv().await["code"], "unknown_session");
    a.send(json!({"type":"hello"})).await;
    assert_eq!(a.recv().await["code"], "malformed");
    a.send(alice.hello_frame(
        "a1",
        None,
        claudemesh_protocol::wire::ConnectionRole::Session,
        fresh_ts(),
    ))
    .await;
    assert_eq!(a.recv().await["code"], "unexpected_hello");
    a.send(json!({"type":"list_peers","id":"p"})).await;
    assert_eq!(a.recv().await["type"], "peers_list");
}

async fn frames_over_one_mebibyte_close_with_1009(store: Backend) {
    let b = TestBroker::on(store).await;
    let alice = b.member("alice");
    // Through each node: in a cluster the sessions land on nodes 1, 3, 2
    // and the connections without a hello on nodes 2, 1, 3.
    for (i, _) in b.nodes().enumerate() {
        let (mut a, _) = b.session(&alice, &format!("a{i}"), "alice").await;
        // Exactly 1 MiB is allowed (it is not JSON, so it gets an error).
        a.send_text("x".repeat(1024 * 1024)).await;
        assert_eq!(a.recv().await["code"], "malformed");
        a.send_text("x".repeat(1024 * 1024 + 1)).await;
        let (_, closed) = a.recv_close().await;
        assert_eq!(closed.code, 1009);
        // Also before the hello.
        let mut c = b.connect().await;
        c.send_text("y".repeat(1024 * 1024 + 1)).await;
        let (_, closed) = c.recv_close().await;
        assert_eq!(closed.code, 1009);
    }
}

async fn send_rate_is_limited_per_member_without_disconnecting(store: Backend) {
    let b = TestBroker::start_on(store, |c| {
        c.send_burst = 3.0;
        c.send_rate_per_sec = 0.001;
    })
    .await;
    let (alice, bob) = (b.member("alice"), b.member("bob"));
    let (mut a, _) = b.session(&alice, "a1", "alice").await;
    let (_bc, _) = b.session(&bob, "b1", "bob").await;
    b.assert_apart(&[&a, &_bc]);
    for i in 0..3 {
        a.send(send_frame(
            &format!("r{i}"),
            "bob",
            vec![alice.envelope(&bob, "x")],
        ))
        .await;
        assert_eq!(a.recv_type("ack").await["id"], format!("r{i}").as_str());
    }
    a.send(send_frame("r3", "bob", vec![alice.envelope(&bob, "x")]))
        .await;
    let e = a.recv_type("error").await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("rate_limited"), Some("r3"))
    );
    assert!(a.sync().await.is_empty());

    // Another connection of alice. On one node it draws on her bucket,
    // empty now. In a cluster it is on another node, whose bucket for her
    // is its own (docs/broker.md: the send rate is a token bucket per
    // node, so a member on k nodes may send k times the rate).
    let (mut a2, _) = b.session(&alice, "a2", "alice-2").await;
    a2.send(send_frame("r4", "bob", vec![alice.envelope(&bob, "x")]))
        .await;
    let answer = loop {
        let v = a2.recv().await;
        if v["type"] == "ack" || v["type"] == "error" {
            break v;
        }
    };
    assert_eq!(answer["id"], "r4");
    if store == Backend::Cluster {
        b.assert_apart(&[&a, &a2]);
        assert_eq!(answer["type"], "ack", "{answer}");
        // That node's bucket empties the same way.
        for i in 5..7 {
            a2.send(send_frame(
                &format!("r{i}"),
                "bob",
                vec![alice.envelope(&bob, "x")],
            ))
            .await;
            assert_eq!(a2.recv_type("ack").await["id"], format!("r{i}").as_str());
        }
        a2.send(send_frame("r7", "bob", vec![alice.envelope(&bob, "x")]))
            .await;
        assert_eq!(a2.recv_type("error").await["code"], "rate_limited");
    } else {
        assert_eq!(answer["code"], "rate_limited", "{answer}");
    }
}

async fn presence_events_reach_every_other_connection(store: Backend) {
    let b = TestBroker::on(store).await;
    let (alice, bob) = (b.member("alice"), b.member("bob"));
    let (mut a, _) = b.session(&alice, "a1", "alice").await;
    let (mut bc, ack) = b.session(&bob, "b1", "bob").await;
    b.assert_apart(&[&a, &bc]);
    assert_eq!(ack["peers"].as_array().unwrap().len(), 1);
    let j = a.recv_type("event").await;
    assert_eq!(
        (j["event"].as_str(), j["peer"]["displayName"].as_str()),
        (Some("peer_joined"), Some("bob"))
    );
    assert_eq!(j["peer"]["member"], bob.pubkey());
    assert!(j["peer"]["connectedAt"].as_i64().is_some());

    bc.send(json!({"type":"set_status","status":"working"}))
        .await;
    let u = a.recv_type("event").await;
    assert_eq!(
        (u["event"].as_str(), u["peer"]["status"].as_str()),
        (Some("peer_updated"), Some("working"))
    );
    bc.send(json!({"type":"set_summary","sessionId":"b1","summary":"fixing the API"}))
        .await;
    assert_eq!(
        a.recv_type("event").await["peer"]["summary"],
        "fixing the API"
    );
    bc.send(json!({"type":"join_group","group":"@backend"}))
        .await;
    assert_eq!(
        a.recv_type("event").await["peer"]["groups"],
        json!(["backend"])
    );
    bc.send(json!({"type":"leave_group","group":"backend"}))
        .await;
    assert_eq!(a.recv_type("event").await["peer"]["groups"], json!([]));
    // The actor itself gets no event about its own change.
    assert!(bc.sync().await.is_empty());

    a.send(json!({"type":"list_peers","id":"r1"})).await;
    let list = a.recv_type("peers_list").await;
    assert_eq!(list["id"], "r1");
    let peers = list["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0]["sessionId"], "b1");
}

async fn display_names_are_unique_in_the_mesh(store: Backend) {
    let b = TestBroker::on(store).await;
    let (m1, m2) = (b.member("x"), b.member("y"));
    let (_c1, a1) = b.session(&m1, "s1", "dev").await;
    let (_c2, a2) = b.session(&m2, "s2", "dev").await;
    let (_c3, a3) = b.session(&m1, "s3", "dev").await;
    b.assert_apart(&[&_c1, &_c2, &_c3]);
    let names: Vec<_> = [a1, a2, a3]
        .iter()
        .map(|a| a["displayName"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, vec!["dev", "dev-2", "dev-3"]);
    // A name is freed when its session leaves for good.
    let mut d = daemon_with(&b, &m2, &[("d1", "dev", &[])]).await;
    d.send(json!({"type":"session_close","sessionId":"d1"}))
        .await;
    d.sync().await;
    let mut d2 = b.daemon(&m2).await;
    d2.send(json!({"type":"session_open","sessionId":"d9","displayName":"dev-4"}))
        .await;
    assert_eq!(d2.recv_type("session_opened").await["displayName"], "dev-4");
}

async fn a_reconnect_inside_the_grace_period_makes_no_noise(store: Backend) {
    let b = TestBroker::on(store).await; // 60 s grace
    let (alice, bob) = (b.member("alice"), b.member("bob"));
    let (mut a, _) = b.session(&alice, "a1", "alice").await;
    let (bc, _) = b.session(&bob, "b1", "bob").await;
    assert_eq!(a.recv_type("event").await["event"], "peer_joined");
    bc.close().await;
    // Still listed, no peer_left.
    assert!(a.sync().await.is_empty());
    a.send(json!({"type":"list_peers","id":"l"})).await;
    assert_eq!(
        a.recv_type("peers_list").await["peers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (_bc2, ack) = b.session(&bob, "b1", "bob").await;
    b.assert_apart(&[&a, &_bc2]);
    assert_eq!(ack["displayName"], "bob");
    assert!(
        a.sync().await.is_empty(),
        "a reconnect inside the grace period is silent"
    );
}

async fn after_the_grace_period_the_session_leaves(store: Backend) {
    let b = TestBroker::start_on(store, |c| c.presence_grace = Duration::from_millis(200)).await;
    let (alice, bob) = (b.member("alice"), b.member("bob"));
    let (mut a, _) = b.session(&alice, "a1", "alice").await;
    let (bc, _) = b.session(&bob, "b1", "bob").await;
    b.assert_apart(&[&a, &bc]);
    assert_eq!(a.recv_type("event").await["event"], "peer_joined");
    bc.close().await;
    let left = a.recv_type("event").await;
    assert_eq!(
        (left["event"].as_str(), left["peer"]["sessionId"].as_str()),
        (Some("peer_left"), Some("b1"))
    );
    a.send(json!({"type":"list_peers","id":"l"})).await;
    assert_eq!(a.recv_type("peers_list").await["peers"], json!([]));
}

async fn session_takeover_leaves_no_ghost(store: Backend) {
    let b = TestBroker::on(store).await;
    let (alice, bob) = (b.member("alice"), b.member("bob"));
    let (mut a, _) = b.session(&alice, "a1", "alice").await;
    let (mut old, _) = b.session(&bob, "b1", "bob").await;
    assert_eq!(a.recv_type("event").await["event"], "peer_joined");
    let (_new, ack) = b.session(&bob, "b1", "bob").await;
    b.assert_apart(&[&a, &old, &_new]);
    assert_eq!(ack["displayName"], "bob");
    let (_, closed) = old.recv_close().await;
    assert_eq!(
        closed,
        Closed {
            code: 1000,
            reason: "session_taken_over".into()
        }
    );
    assert!(a.sync().await.is_empty(), "no leave/join noise on takeover");
    a.send(json!({"type":"list_peers","id":"l"})).await;
    let peers = a.recv_type("peers_list").await;
    assert_eq!(peers["peers"].as_array().unwrap().len(), 1);
    // The old connection closing does not start a grace period for the
    // session it no longer carries: messages still reach the new one.
    a.send(send_frame(
        "t1",
        "bob",
        vec![alice.envelope(&bob, "still here?")],
    ))
    .await;
    let ack = a.recv_type("ack").await;
    assert_eq!(ack["recipients"][0]["state"], "delivered");
}

async fn daemon_sessions_open_close_and_take_over(store: Backend) {
    let b = TestBroker::on(store).await;
    let (alice, bob) = (b.member("alice"), b.member("bob"));
    let (mut a, _) = b.session(&alice, "a1", "alice").await;
    let mut d = daemon_with(&b, &bob, &[("b1", "bob", &["x"])]).await;
    let j = a.recv_type("event").await;
    assert_eq!(
        (j["event"].as_str(), j["peer"]["groups"][0].as_str()),
        (Some("peer_joined"), Some("x"))
    );
    // The daemon is not itself a peer.
    a.send(json!({"type":"list_peers","id":"l"})).await;
    assert_eq!(
        a.recv_type("peers_list").await["peers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A second daemon of the same member takes b1 over silently.
    let mut d2 = daemon_with(&b, &bob, &[("b1", "bob", &["x"])]).await;
    b.assert_apart(&[&a, &d, &d2]);
    let e = d.recv_type("error").await;
    assert_eq!(e["code"], "session_taken_over");
    assert!(a.sync().await.is_empty());
    // The old daemon can no longer act for it.
    d.send(json!({"type":"set_status","sessionId":"b1","status":"dnd"}))
        .await;
    assert_eq!(d.recv_type("error").await["code"], "unknown_session");
    d2.send(json!({"type":"session_close","sessionId":"b1"}))
        .await;
    let left = a.recv_type("event").await;
    assert_eq!(left["event"], "peer_left");
    // session_open on a session connection is refused.
    a.send(json!({"type":"session_open","sessionId":"zz"}))
        .await;
    assert_eq!(a.recv_type("error").await["code"], "wrong_role");
}

async fn receipts_and_message_status(store: Backend) {
    let b = TestBroker::on(store).await;
    let (alice, bob, eve) = (b.member("alice"), b.member("bob"), b.member("eve"));
    let (mut a, _) = b.session(&alice, "a1", "alice").await;
    let (mut bc, _) = b.session(&bob, "b1", "bob").await;
    let (mut ec, _) = b.session(&eve, "e1", "eve").await;
    b.assert_apart(&[&a, &bc, &ec]);
    a.send(send_frame(
        "s1",
        "bob",
        vec![alice.envelope(&bob, "read me")],
    ))
    .await;
    let ack = a.recv_type("ack").await;
    let mid = ack["messageId"].as_str().unwrap().to_owned();
    let status = |id: &str| json!({"type":"message_status","id":id,"messageId":mid});

    a.send(status("q1")).await;
    let st = a.recv_type("message_status_result").await;
    assert_eq!(st["id"], "q1");
    assert_eq!(st["messageId"], mid.as_str());
    assert_eq!(
        st["recipients"],
        json!([{"member": bob.pubkey(), "sessionId": "b1", "state": "queued"}])
    );

    let p = bc.recv_type("push").await;
    bc.send(json!({"type":"client_ack","messageId": p["messageId"]}))
        .await;
    let r = a.recv_type("receipt").await;
    assert_eq!(r["messageId"], mid.as_str());
    assert_eq!(r["member"], bob.pubkey());
    assert_eq!(r["sessionId"], "b1");
    assert_eq!(r["state"], "delivered");
    assert!(r["at"].as_i64().is_some());
    a.send(status("q2")).await;
    assert_eq!(
        a.recv_type("message_status_result").await["recipients"][0]["state"],
        "delivered"
    );

    // A repeated client_ack makes no second receipt.
    bc.send(json!({"type":"client_ack","messageId": mid})).await;
    bc.send(json!({"type":"receipt","messageId": mid,"state":"seen"}))
        .await;
    let r = a.recv_type("receipt").await;
    assert_eq!(
        (r["state"].as_str(), r["sessionId"].as_str()),
        (Some("seen"), Some("b1"))
    );
    a.send(status("q3")).await;
    assert_eq!(
        a.recv_type("message_status_result").await["recipients"][0]["state"],
        "seen"
    );
    assert!(a.sync().await.is_empty());

    // Someone who neither sent nor received it learns nothing.
    ec.send(json!({"type":"message_status","id":"x","messageId":mid}))
        .await;
    let e = ec.recv_type("error").await;
    assert_eq!(
        (e["code"].as_str(), e["id"].as_str()),
        (Some("unknown_message"), Some("x"))
    );
    // The recipient may ask too.
    bc.send(json!({"type":"message_status","id":"y","messageId":mid}))
        .await;
    assert_eq!(
        bc.recv_type("message_status_result").await["recipients"][0]["state"],
        "seen"
    );
}

/// A display name with no listed session falls back to the active member
/// enrolled with that name: one whole-member copy, queued while the member
/// is offline and pushed when it comes back. A name two active members
/// share addresses neither; a revoked member's name addresses no one.
async fn a_name_without_a_session_reaches_the_member_enrolled_with_it(store: Backend) {
    let b = TestBroker::on(store).await;
    let (alice, bob) = (b.member("alice"), b.member("bob"));
    let (_twin1, _twin2) = (b.member("twin"), b.member("twin"));
    let (mut a, _) = b.session(&alice, "a1", "alice").await;
    // The members extension: every active member, online or not.
    let members = |list: &Value| -> Vec<(String, bool)> {
        let mut v: Vec<(String, bool)> = list["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["displayName"].as_str().unwrap().to_owned(),
                    m["online"] == true,
                )
            })
            .collect();
        v.sort();
        v
    };
    a.send(json!({"type":"list_peers","id":"l1","members":true}))
        .await;
    let list = a.recv_type("peers_list").await;
    assert_eq!(
        members(&list),
        vec![
            ("alice".to_owned(), true),
            ("bob".to_owned(), false),
            ("twin".to_owned(), false),
            ("twin".to_owned(), false)
        ]
    );
    a.send(json!({"type":"list_peers","id":"l2"})).await;
    assert!(a.recv_type("peers_list").await.get("members").is_none());

    a.send(send_frame(
        "n1",
        "bob",
        vec![alice.envelope(&bob, "while away")],
    ))
    .await;
    let ack = a.recv_type("ack").await;
    assert_eq!(
        ack["recipients"],
        json!([{"member": bob.pubkey(), "state": "queued"}])
    );
    // Without its envelope the named member is reported missing.
    a.send(send_frame("n2", "bob", vec![])).await;
    let e = a.recv_type("error").await;
    assert_eq!(e["code"], "missing_envelope");
    assert_eq!(e["members"], json!([bob.pubkey()]));

    let (mut bc, _) = b.session(&bob, "b1", "bob-laptop").await;
    b.assert_apart(&[&a, &bc]);
    let push = bc.recv_type("push").await;
    assert_eq!(push["messageId"], ack["messageId"]);
    assert_eq!(push["sessions"], json!([]));
    assert_eq!(push["to"], "bob");
    bc.close().await;
    // The broker notes the departure after the close: ask until it has.
    let mut bob_row = Value::Null;
    for _ in 0..200 {
        a.send(json!({"type":"list_peers","id":"l3","members":true}))
            .await;
        let list = a.recv_type("peers_list").await;
        bob_row = list["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["displayName"] == "bob")
            .cloned()
            .unwrap();
        if bob_row["online"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(bob_row["member"], bob.pubkey().as_str());
    assert_eq!(bob_row["online"], false, "{bob_row}");
    assert!(bob_row["lastSeen"].as_i64().is_some(), "{bob_row}");
    assert_eq!(bob.open(&push, &alice), "while away");

    a.send(send_frame("n3", "twin", vec![])).await;
    let e = a.recv_type("error").await;
    assert_eq!(e["code"], "unknown_target");
    assert_eq!(e["id"], "n3");
}

all_backends!(
    every_target_form,
    unknown_targets_and_missing_envelopes_are_refused,
    broadcast_to_an_empty_mesh_is_acked_with_no_recipients,
    malformed_frames_get_errors_and_the_connection_lives,
    frames_over_one_mebibyte_close_with_1009,
    send_rate_is_limited_per_member_without_disconnecting,
    presence_events_reach_every_other_connection,
    display_names_are_unique_in_the_mesh,
    a_reconnect_inside_the_grace_period_makes_no_noise,
    after_the_grace_period_the_session_leaves,
    session_takeover_leaves_no_ghost,
    daemon_sessions_open_close_and_take_over,
    receipts_and_message_status,
    a_name_without_a_session_reaches_the_member_enrolled_with_it,
);
