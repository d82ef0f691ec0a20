//! A session is addressable through every node of a cluster the moment
//! its node has acknowledged it (issue 24, part 1): its `hello_ack` or
//! `session_opened` is sent only once its presence row is committed, and
//! a node that does not know a target yet asks the presence table (the
//! store is the truth, the replicated view a cache). Real nodes on one
//! real PostgreSQL; every send comes straight after the acknowledgement
//! on another node, with no wait for the nodes to settle.

mod common;

use common::nodes::Nodes;
use common::*;

use serde_json::{Value, json};

/// Rounds per test: the window this closes is a race, so it is tried
/// many times.
const ROUNDS: usize = 15;

/// The ack of the send `id`; panics with the frame on an error.
async fn ack_of(c: &mut Client, id: &str) -> Value {
    loop {
        let f = c.recv().await;
        match f["type"].as_str() {
            Some("ack") if f["id"] == id => return f,
            Some("error") => panic!("send {id} was refused: {f}"),
            _ => {}
        }
    }
}

/// The recipients of an ack as (member, session) pairs, whatever their
/// state (`delivered`, or `queued` when the sending node did not yet know
/// the session's connection: either way the message is routed to it).
fn routed_to(ack: &Value) -> Vec<(String, Option<String>)> {
    recipients(ack)
        .into_iter()
        .map(|(m, s, state)| {
            assert!(
                state == "delivered" || state == "queued",
                "unexpected state {state} in {ack}"
            );
            (m, s)
        })
        .collect()
}

/// Waits for the pushes to session `sid` of the messages whose plaintexts
/// are `texts`, in any order (they come through different nodes), each
/// once. (Pushes for the member's earlier sessions are the redelivery of
/// copies the test never acknowledged: not this round's.)
async fn pushes_of(c: &mut Client, to: &Member, from: &Member, sid: &str, texts: &[&str]) {
    let mut got = vec![false; texts.len()];
    while got.iter().any(|g| !g) {
        let f = c.recv_type("push").await;
        if push_sessions(&f) != [sid] {
            continue;
        }
        let text = to.open(&f, from);
        let i = texts
            .iter()
            .position(|t| *t == text)
            .unwrap_or_else(|| panic!("an unexpected push: {text:?}"));
        assert!(!got[i], "{text:?} was pushed twice");
        got[i] = true;
    }
}

#[tokio::test]
async fn a_session_is_reachable_through_every_node_right_after_its_hello_ack() {
    let c = Nodes::start(3).await;
    let (alice, bob) = (c.member("alice"), c.member("bob"));
    let (mut a1, _) = c.n(1).session(&alice, "a1", "alice-one").await;
    let (mut a3, _) = c.n(3).session(&alice, "a3", "alice-three").await;
    for i in 0..ROUNDS {
        let sid = format!("b{i}");
        let name = format!("bob-{i}");
        let (mut b, ack) = c.n(2).session(&bob, &sid, &name).await;
        assert_eq!(ack["type"], "hello_ack", "{ack}");

        // pubkey/sessionId through node 1, display name through node 3,
        // `*` through node 1: each routed to the new session at once.
        let to = format!("{}/{sid}", bob.pubkey());
        let t1 = format!("direct {i}");
        a1.send(send_frame(
            &format!("d{i}"),
            &to,
            vec![alice.envelope(&bob, &t1)],
        ))
        .await;
        let t2 = format!("by name {i}");
        a3.send(send_frame(
            &format!("n{i}"),
            &name,
            vec![alice.envelope(&bob, &t2)],
        ))
        .await;
        let t3 = format!("everyone {i}");
        a1.send(send_frame(
            &format!("s{i}"),
            "*",
            vec![alice.envelope(&bob, &t3), alice.envelope(&alice, &t3)],
        ))
        .await;

        let mine = (bob.pubkey(), Some(sid.clone()));
        assert_eq!(
            routed_to(&ack_of(&mut a1, &format!("d{i}")).await),
            vec![mine.clone()]
        );
        assert_eq!(
            routed_to(&ack_of(&mut a3, &format!("n{i}")).await),
            vec![mine.clone()]
        );
        let everyone = routed_to(&ack_of(&mut a1, &format!("s{i}")).await);
        assert!(everyone.contains(&mine), "`*` missed {sid}: {everyone:?}");

        pushes_of(&mut b, &bob, &alice, &sid, &[&t1, &t2, &t3]).await;
        // Each once.
        let rest = b.sync().await;
        assert!(
            rest.iter()
                .all(|f| f["type"] != "push" || push_sessions(f) != [sid.as_str()]),
            "{rest:?}"
        );
    }

    // A session that does not exist is still no target, though its
    // member is online on another node.
    let to = format!("{}/nobody", bob.pubkey());
    a1.send(send_frame("x", &to, vec![alice.envelope(&bob, "lost")]))
        .await;
    let f = a1.recv_type("error").await;
    assert_eq!(f["code"], "unknown_target", "{f}");
}

#[tokio::test]
async fn a_session_a_daemon_opens_is_reachable_by_group_through_another_node_at_once() {
    let c = Nodes::start(3).await;
    let (alice, bob) = (c.member("alice"), c.member("bob"));
    let (mut a, _) = c.n(1).session(&alice, "a1", "alice").await;
    let mut d = c.n(2).daemon(&bob).await;
    for i in 0..ROUNDS {
        let sid = format!("s{i}");
        let group = format!("team{i}");
        d.send(
            json!({"type":"session_open","sessionId":sid,"displayName":format!("bob-{i}"),
                      "cwd":"/w","pid":1,"host":"h","summary":"","groups":[group]}),
        )
        .await;
        d.recv_type("session_opened").await;
        let text = format!("group {i}");
        a.send(send_frame(
            &format!("g{i}"),
            &format!("@{group}"),
            vec![alice.envelope(&bob, &text)],
        ))
        .await;
        assert_eq!(
            routed_to(&ack_of(&mut a, &format!("g{i}")).await),
            vec![(bob.pubkey(), Some(sid.clone()))]
        );
        pushes_of(&mut d, &bob, &alice, &sid, &[&text]).await;
    }
}

#[tokio::test]
async fn a_member_enrolled_a_moment_ago_is_a_target_on_every_node() {
    let c = Nodes::start(3).await;
    let alice = c.member("alice");
    let mut senders = Vec::new();
    for n in 1..=3 {
        senders.push(
            c.n(n)
                .session(&alice, &format!("a{n}"), &format!("alice-{n}"))
                .await
                .0,
        );
    }
    for i in 0..ROUNDS {
        let newcomer = c.member(&format!("new{i}"));
        let s = &mut senders[i % 3];
        s.send(send_frame(
            &format!("m{i}"),
            &newcomer.pubkey(),
            vec![alice.envelope(&newcomer, "welcome")],
        ))
        .await;
        let ack = ack_of(s, &format!("m{i}")).await;
        assert_eq!(
            recipients(&ack),
            vec![(newcomer.pubkey(), None, "queued".to_owned())]
        );
    }
}
