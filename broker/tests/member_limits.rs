//! What one member can make the broker hold: sessions, free-text fields,
//! peer lists, unread frames and receipts. Each test pushes past a cap,
//! checks the clear error, that memory stays bounded (RSS of this process,
//! which runs the broker, read from /proc) and that another member is
//! still served meanwhile.

mod common;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use claudemesh_protocol::limits::{
    MAX_CIPHERTEXT_CHARS, MAX_CWD_BYTES, MAX_FRAME_BYTES, MAX_GROUP_CHARS, MAX_GROUPS_PER_SESSION,
    MAX_HOST_BYTES, MAX_PEERS_LIST_BYTES, MAX_SESSIONS_PER_CONNECTION, MAX_SESSIONS_PER_MEMBER,
    MAX_SUMMARY_BYTES, RECEIPT_BURST,
};
use claudemesh_protocol::wire::ConnectionRole;
use common::*;

/// A session as big as the limits allow.
fn fat_session(sid: &str) -> Value {
    let groups: Vec<String> = (0..MAX_GROUPS_PER_SESSION)
        .map(|i| format!("{i:0>width$}", width = MAX_GROUP_CHARS))
        .collect();
    json!({
        "type": "session_open",
        "sessionId": sid,
        "displayName": sid,
        "cwd": "c".repeat(MAX_CWD_BYTES),
        "host": "h".repeat(MAX_HOST_BYTES),
        "summary": "s".repeat(MAX_SUMMARY_BYTES),
        "groups": groups,
    })
}

/// Opens `n` fat sessions on a daemon connection, pipelined, and waits for
/// every answer. Returns the answers that are not `session_opened`.
async fn open_sessions(d: &mut Client, prefix: &str, n: usize) -> Vec<Value> {
    for i in 0..n {
        d.send(fat_session(&format!("{prefix}{i}"))).await;
    }
    let mut others = Vec::new();
    let mut answered = 0;
    while answered < n {
        let v = d.recv().await;
        match v["type"].as_str() {
            Some("session_opened") => answered += 1,
            Some("error") => {
                answered += 1;
                others.push(v);
            }
            _ => {}
        }
    }
    others
}

/// Another member is still served: its `list_peers` and a send to itself
/// get their answers.
async fn still_served(b: &TestBroker, bystander: &Member, c: &mut Client) {
    c.sync().await;
    let env = bystander.envelope(bystander, "still here");
    c.send(send_frame(
        &format!("ok-{}", now_ms()),
        &bystander.pubkey(),
        vec![env],
    ))
    .await;
    let ack = c.recv_type("ack").await;
    assert_eq!(ack["duplicate"], false, "{ack}");
    let _ = b;
}

async fn sessions_are_capped_per_connection_and_per_member(store: Backend) {
    let b = TestBroker::on(store).await;
    let bystander = b.member("bystander");
    let (mut other, _) = b.session(&bystander, "b1", "bystander").await;
    let m = b.member("many");
    let before = rss_bytes();
    let mut d1 = b.daemon(&m).await;
    let refused = open_sessions(&mut d1, "s", MAX_SESSIONS_PER_CONNECTION + 1).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["code"], "too_many_sessions");
    let msg = refused[0]["message"].as_str().unwrap();
    assert!(
        msg.contains(&MAX_SESSIONS_PER_CONNECTION.to_string()),
        "{msg}"
    );
    b.settle().await;

    // The member's other connections share its allowance (in a cluster,
    // also on another node: the sessions listed there count).
    let mut d2 = b.daemon(&m).await;
    b.assert_apart(&[&d1, &d2]);
    let refused = open_sessions(&mut d2, "t", 1).await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["code"], "too_many_sessions");
    assert!(
        refused[0]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("at most {MAX_SESSIONS_PER_MEMBER} sessions")),
        "{}",
        refused[0]
    );
    // A session connection of that member is refused at its hello.
    let mut c = b.connect().await;
    c.send(m.hello_frame("one-more", None, ConnectionRole::Session, fresh_ts()))
        .await;
    let (frames, closed) = c.recv_close().await;
    assert_eq!(frames[0]["code"], "too_many_sessions", "{frames:?}");
    assert_eq!(closed.reason, "too_many_sessions");

    // Past the cap, more attempts cost nothing.
    let refused = open_sessions(&mut d2, "more", 500).await;
    assert_eq!(refused.len(), 500);
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 100 << 20, "RSS grew by {} MB", grown >> 20);

    // Closing one makes room again.
    d1.send(json!({"type":"session_close","sessionId":"s0"}))
        .await;
    d1.sync().await;
    b.settle().await;
    assert!(open_sessions(&mut d2, "u", 1).await.is_empty());
    still_served(&b, &bystander, &mut other).await;
}

async fn free_text_fields_are_capped_with_errors_naming_the_limit(store: Backend) {
    let b = TestBroker::on(store).await;
    let m = b.member("m");
    let mut d = b.daemon(&m).await;
    let cases = [
        (
            "cwd",
            json!("c".repeat(MAX_CWD_BYTES + 1)),
            "too_large",
            MAX_CWD_BYTES,
        ),
        (
            "host",
            json!("h".repeat(MAX_HOST_BYTES + 1)),
            "too_large",
            MAX_HOST_BYTES,
        ),
        (
            "summary",
            json!("s".repeat(MAX_SUMMARY_BYTES + 1)),
            "too_large",
            MAX_SUMMARY_BYTES,
        ),
        ("displayName", json!("n".repeat(65)), "too_large", 64),
        ("displayName", json!("evil\u{1b}[2Jname"), "malformed", 0),
        ("displayName", json!("two\nlines"), "malformed", 0),
        ("cwd", json!("/tmp/\u{0}x"), "malformed", 0),
        (
            "groups",
            json!(
                (0..=MAX_GROUPS_PER_SESSION)
                    .map(|i| format!("g{i}"))
                    .collect::<Vec<_>>()
            ),
            "too_large",
            MAX_GROUPS_PER_SESSION,
        ),
        (
            "groups",
            json!(["g".repeat(MAX_GROUP_CHARS + 2)]),
            "too_large",
            MAX_GROUP_CHARS + 1,
        ),
    ];
    for (field, value, code, limit) in cases {
        let mut open = json!({"type":"session_open","sessionId":"s1"});
        open[field] = value;
        d.send(open).await;
        let err = d.recv_type("error").await;
        assert_eq!(err["code"], code, "{field}: {err}");
        let msg = err["message"].as_str().unwrap();
        assert!(msg.contains(&format!("`{field}`")), "{field}: {msg}");
        if limit > 0 {
            assert!(msg.contains(&limit.to_string()), "{field}: {msg}");
        }
    }
    // sessionId with control bytes.
    d.send(json!({"type":"session_open","sessionId":"s\u{7}1"}))
        .await;
    assert_eq!(d.recv_type("error").await["code"], "malformed");
    // Nothing of the refused opens was listed.
    let peers = d.sync().await;
    assert!(peers.iter().all(|f| f["type"] != "event"), "{peers:?}");

    // Changes after the open are held to the same limits.
    d.send(json!({"type":"session_open","sessionId":"s1"}))
        .await;
    d.recv_type("session_opened").await;
    d.send(
        json!({"type":"set_summary","sessionId":"s1","summary":"x".repeat(MAX_SUMMARY_BYTES + 1)}),
    )
    .await;
    assert_eq!(d.recv_type("error").await["code"], "too_large");
    for i in 0..MAX_GROUPS_PER_SESSION {
        d.send(json!({"type":"join_group","sessionId":"s1","group":format!("g{i}")}))
            .await;
    }
    d.send(json!({"type":"join_group","sessionId":"s1","group":"one-too-many"}))
        .await;
    let err = d.recv_type("error").await;
    assert_eq!(err["code"], "too_large", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains(&MAX_GROUPS_PER_SESSION.to_string())
    );
    d.send(json!({"type":"join_group","sessionId":"s1","group":"bad\u{1b}group"}))
        .await;
    assert_eq!(d.recv_type("error").await["code"], "malformed");
}

async fn hellos_with_control_bytes_or_oversized_fields_are_malformed(store: Backend) {
    let b = TestBroker::on(store).await;
    let m = b.member("m");
    let refused = [
        ("cwd", json!("c".repeat(MAX_CWD_BYTES + 1))),
        ("displayName", json!("bell\u{7}")),
        ("client", json!("x".repeat(1000))),
    ];
    for (i, (field, value)) in refused.into_iter().enumerate() {
        let mut c = b.connect().await;
        let mut h = m.hello_frame(&format!("s{i}"), None, ConnectionRole::Session, fresh_ts());
        h[field] = value;
        c.send(h).await;
        let (frames, closed) = c.recv_close().await;
        assert_eq!(frames[0]["code"], "malformed", "{field}: {frames:?}");
        assert_eq!(closed.code, 1008);
    }
    // The same hellos within the limits pass.
    let mut c = b.connect().await;
    let mut h = m.hello_frame("ok", Some("fine"), ConnectionRole::Session, fresh_ts());
    h["cwd"] = json!("c".repeat(MAX_CWD_BYTES));
    c.send(h).await;
    assert_eq!(c.recv().await["type"], "hello_ack");
    // A sessionId with control bytes (it is not signed: the check is the
    // broker's own).
    let mut c = b.connect().await;
    c.send(m.hello_frame("sess\u{1b}[31m", None, ConnectionRole::Session, fresh_ts()))
        .await;
    let (frames, _) = c.recv_close().await;
    assert_eq!(frames[0]["code"], "malformed", "{frames:?}");
}

/// A client with the daemon link's frame limit (1 MiB).
async fn daemon_link_client(
    url: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .unwrap()
        .0
}

async fn peer_lists_stay_within_a_frame_and_every_member_is_listed(store: Backend) {
    let b = TestBroker::on(store).await;
    let quiet = b.member("quiet");
    let (_q, _) = b.session(&quiet, "q1", "quiet-one").await;
    // Two members, each with every session it may have, as large as allowed.
    let mut hogs = Vec::new();
    for name in ["hog-a", "hog-b"] {
        let m = b.member(name);
        let mut d = b.daemon(&m).await;
        assert!(
            open_sessions(&mut d, name, MAX_SESSIONS_PER_CONNECTION)
                .await
                .is_empty()
        );
        hogs.push((m, d));
    }
    b.settle().await;

    // A daemon of a fourth member connects with the link's 1 MiB limit.
    let late = b.member("late");
    let mut ws = daemon_link_client(&b.next_ws_url()).await;
    let hello = late.hello_frame("daemon", None, ConnectionRole::Daemon, fresh_ts());
    ws.send(Message::Text(hello.to_string().into()))
        .await
        .unwrap();
    let ack = loop {
        match ws
            .next()
            .await
            .expect("open")
            .expect("the hello_ack fits the link's limit")
        {
            Message::Text(t) => break t.to_string(),
            _ => continue,
        }
    };
    assert!(ack.len() < MAX_FRAME_BYTES, "{} bytes", ack.len());
    let ack: Value = serde_json::from_str(&ack).unwrap();
    assert_eq!(ack["type"], "hello_ack");
    assert_eq!(ack["truncated"], true);
    let peers = ack["peers"].as_array().unwrap();
    let listed = |name: &str| peers.iter().any(|p| p["member"] == name);
    assert!(listed(&quiet.pubkey()), "the quiet member was pushed out");
    assert!(listed(&hogs[0].0.pubkey()) && listed(&hogs[1].0.pubkey()));
    let peers_json: usize = peers.iter().map(|p| p.to_string().len() + 1).sum();
    assert!(peers_json <= MAX_PEERS_LIST_BYTES, "{peers_json}");

    // list_peers is bounded the same way.
    ws.send(Message::Text(
        json!({"type":"list_peers","id":"l1"}).to_string().into(),
    ))
    .await
    .unwrap();
    let list = loop {
        if let Message::Text(t) = ws.next().await.unwrap().unwrap() {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "peers_list" {
                break v;
            }
        }
    };
    assert_eq!(list["truncated"], true);
    // A small list says nothing of truncation.
    let small = TestBroker::start().await;
    let a = small.member("a");
    let (_, ack) = small.session(&a, "s", "a").await;
    assert!(ack.get("truncated").is_none(), "{ack}");
}

async fn every_push_fits_the_frame_limit_of_a_daemon_link(store: Backend) {
    let b = TestBroker::on(store).await;
    let alice = b.member("alice");
    let bob = b.member("bob");
    let (mut a, _) = b.session(&alice, "a1", "alice").await;
    // Bob's daemon link carries as many sessions, with ids as long, as
    // allowed, all in one group: a push to the group names them all.
    let mut ws = daemon_link_client(&b.next_ws_url()).await;
    let hello = bob.hello_frame("daemon", None, ConnectionRole::Daemon, fresh_ts());
    ws.send(Message::Text(hello.to_string().into()))
        .await
        .unwrap();
    for i in 0..MAX_SESSIONS_PER_CONNECTION {
        let sid = format!("{i:0>64}");
        let open = json!({"type":"session_open","sessionId":sid,"groups":["g"]});
        ws.send(Message::Text(open.to_string().into()))
            .await
            .unwrap();
    }
    let mut opened = 0;
    while opened < MAX_SESSIONS_PER_CONNECTION {
        if let Message::Text(t) = ws.next().await.unwrap().unwrap()
            && t.as_str().contains("session_opened")
        {
            opened += 1;
        }
    }
    b.settle().await;
    let nonce = alice.envelope(&bob, "x")["nonce"].clone();
    let envelope = |chars: usize| json!({"member": bob.pubkey(), "nonce": nonce, "ciphertext": "A".repeat(chars)});

    // One past the cap: refused, naming it.
    let over = (MAX_CIPHERTEXT_CHARS / 4 + 1) * 4;
    a.send(send_frame("big", "@g", vec![envelope(over)])).await;
    let err = a.recv_type("error").await;
    assert_eq!(err["code"], "too_large", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains(&MAX_CIPHERTEXT_CHARS.to_string())
    );

    // At the cap: the push reaches the 1 MiB link.
    let at = MAX_CIPHERTEXT_CHARS / 4 * 4;
    a.send(send_frame("max", "@g", vec![envelope(at)])).await;
    assert_eq!(a.recv_type("ack").await["id"], "max");
    let push = loop {
        match ws
            .next()
            .await
            .unwrap()
            .expect("the push fits the link's limit")
        {
            Message::Text(t) if t.as_str().contains("\"push\"") => break t,
            _ => {}
        }
    };
    assert!(push.len() <= MAX_FRAME_BYTES, "{}", push.len());
}

/// One node's by nature (a connection's outbound queue on the node that
/// serves it): on SQLite only.
#[tokio::test]
async fn a_connection_that_does_not_read_is_closed_and_memory_stays_bounded() {
    let b = TestBroker::start().await;
    let bystander = b.member("bystander");
    let (mut other, _) = b.session(&bystander, "b1", "bystander").await;
    let m = b.member("reader-not");
    let mut d = b.daemon(&m).await;
    assert!(open_sessions(&mut d, "s", 200).await.is_empty());

    let before = rss_bytes();
    // Hundreds of large answers asked for, none read.
    let requests = 600;
    for i in 0..requests {
        d.send(json!({"type":"list_peers","id":format!("r{i}")}))
            .await;
    }
    // Everything asked for before the close is read back now, then the
    // connection must end: the broker stopped buffering for it.
    let mut answers = 0;
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match d.ws.next().await {
                Some(Ok(Message::Text(t))) if t.as_str().contains("\"peers_list\"") => answers += 1,
                Some(Ok(Message::Close(c))) => return c.map(|c| u16::from(c.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the unread connection was not closed");
    assert!(answers < requests, "all {answers} answers were buffered");
    if let Ok(Some(code)) = ended {
        assert_eq!(code, 1013);
    }
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 200 << 20, "RSS grew by {} MB", grown >> 20);
    still_served(&b, &bystander, &mut other).await;
}

async fn seen_receipts_need_a_listed_session_and_are_rate_limited(store: Backend) {
    let b = TestBroker::on(store).await;
    let alice = b.member("alice");
    let bob = b.member("bob");
    let (mut a, _) = b.session(&alice, "a1", "alice").await;
    let mut d = b.daemon(&bob).await;
    d.send(json!({"type":"session_open","sessionId":"bob-1","displayName":"bob"}))
        .await;
    d.recv_type("session_opened").await;
    b.settle().await;
    b.assert_apart(&[&a, &d]);
    a.send(send_frame(
        "m1",
        &bob.pubkey(),
        vec![alice.envelope(&bob, "hi")],
    ))
    .await;
    let ack = a.recv_type("ack").await;
    let mid = ack["messageId"].as_str().unwrap().to_owned();
    d.recv_type("push").await;

    // Made-up sessions are refused and nothing is recorded for them.
    for i in 0..20 {
        d.send(json!({"type":"receipt","messageId":mid,"sessionId":format!("fake-{i}"),"state":"seen"}))
            .await;
        let err = d.recv_type("error").await;
        assert_eq!(err["code"], "unknown_session", "{err}");
    }
    // The real session's receipt is relayed once, however often it is sent.
    for _ in 0..3 {
        d.send(json!({"type":"receipt","messageId":mid,"sessionId":"bob-1","state":"seen"}))
            .await;
    }
    d.sync().await;
    let r = a.recv_type("receipt").await;
    assert_eq!(r["sessionId"], "bob-1");
    let frames = a.sync().await;
    assert!(frames.iter().all(|f| f["type"] != "receipt"), "{frames:?}");
    a.send(json!({"type":"message_status","id":"q","messageId":mid}))
        .await;
    let status = a.recv_type("message_status_result").await;
    let recipients = status["recipients"].as_array().unwrap();
    assert_eq!(recipients.len(), 1, "{status}");
    assert_eq!(recipients[0]["sessionId"], "bob-1");

    // Past the burst, receipts are refused with rate_limited.
    let burst = RECEIPT_BURST as usize;
    for _ in 0..burst + 50 {
        d.send(json!({"type":"receipt","messageId":mid,"sessionId":"bob-1","state":"seen"}))
            .await;
    }
    let frames = d.sync().await;
    let limited = frames
        .iter()
        .filter(|f| f["type"] == "error" && f["code"] == "rate_limited")
        .count();
    assert!(limited > 0, "no receipt was rate limited");
    assert!(frames.iter().any(|f| {
        f["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("{burst}")))
    }));
    // Sending is not affected by the receipt rate.
    still_served(&b, &alice, &mut a).await;
}

all_backends!(
    sessions_are_capped_per_connection_and_per_member,
    free_text_fields_are_capped_with_errors_naming_the_limit,
    hellos_with_control_bytes_or_oversized_fields_are_malformed,
    peer_lists_stay_within_a_frame_and_every_member_is_listed,
    every_push_fits_the_frame_limit_of_a_daemon_link,
    seen_receipts_need_a_listed_session_and_are_rate_limited,
);
