//! A node whose read of the copies another node announced fails tries it
//! again with backoff until it succeeds (issue 24, part 5). Before, the
//! failure was only logged, and the copies waited until the recipient
//! reconnected or the node's `LISTEN` connection was re-established.
//!
//! Real nodes on one real PostgreSQL. The fault is injected into the
//! store (`Faults::fail_copies_reads`): exactly that read fails, as if
//! the database had not answered it, while the hellos, sends and the
//! `LISTEN` connection go on (a real outage would take those down too,
//! and the daemon's reconnect would hide the missing retry).

mod common;

use std::time::{Duration, Instant};

use common::nodes::Nodes;
use common::*;

/// Long enough for several retries, were the reads answered.
const OUTAGE: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn a_failed_cross_node_read_is_retried_and_the_message_arrives_once() {
    let c = Nodes::start(2).await;
    let (alice, bob) = (c.member("alice"), c.member("bob"));
    let (mut a, _) = c.n(1).session(&alice, "a1", "alice").await;
    let (mut b, _) = c.n(2).session(&bob, "b1", "bob").await;
    let faults = c.n(2).broker.as_ref().unwrap().pg_faults().unwrap();

    for round in 0..3 {
        // Every read of announced copies on node 2 fails until cleared.
        faults.fail_copies_reads(u32::MAX);
        let text = format!("while node 2 cannot read {round}");
        a.send(send_frame(
            &format!("m{round}"),
            "bob",
            vec![alice.envelope(&bob, &text)],
        ))
        .await;
        let ack = a.recv_type("ack").await;
        let state = &recipients(&ack)[0].2;
        assert!(state == "delivered" || state == "queued", "{ack}");

        // Nothing can arrive while the read fails.
        let early = tokio::time::timeout(OUTAGE, b.recv_type("push")).await;
        assert!(early.is_err(), "pushed while the read failed: {early:?}");
        assert!(
            faults.copies_reads_to_fail() < u32::MAX,
            "the read was never tried"
        );

        // The database answers again: the retry reads and pushes it.
        faults.fail_copies_reads(0);
        let answered = Instant::now();
        let push = b.recv_type("push").await;
        println!(
            "round {round}: pushed {} ms after the reads were answered again",
            answered.elapsed().as_millis()
        );
        assert_eq!(bob.open(&push, &alice), text);

        // Once: nothing more for bob, after a further retry period.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rest = b.sync().await;
        assert!(
            rest.iter().all(|f| f["type"] != "push"),
            "pushed again: {rest:?}"
        );
        b.send(serde_json::json!({"type":"client_ack","messageId":push["messageId"]}))
            .await;
    }

    let m = c.n(2).metrics().await;
    let failed = metric(&m, "claudemesh_broker_cluster_reads_failed_total").unwrap_or(0.0);
    let retried = metric(&m, "claudemesh_broker_cluster_reads_retried_total").unwrap_or(0.0);
    println!("node 2: {failed} failed reads, {retried} completed by a retry");
    assert!(failed >= 3.0, "{m}");
    assert_eq!(retried, 3.0, "{m}");
}
