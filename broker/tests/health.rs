//! `/healthz` checks what serving needs: a damaged database file makes it
//! answer 503 with the reason, though the broker's long-lived connections
//! could still answer from their caches.

mod common;

use std::io::{Seek, SeekFrom, Write};

use claudemesh_broker::store::DB_FILE;
use common::*;

#[tokio::test]
async fn a_damaged_database_fails_healthz_with_the_reason() {
    let b = TestBroker::start().await;
    let alice = b.member("alice");
    let (_a, _) = b.session(&alice, "a1", "alice").await;
    let (status, body) = http(b.addr, "GET", "/healthz", None).await;
    assert_eq!((status, body.trim()), (200, "ok"));

    // The file's header overwritten: SQLite no longer knows it as a
    // database.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(b.data_dir().join(DB_FILE))
        .unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.write_all(&[0x5a; 100]).unwrap();
    file.sync_all().unwrap();

    let (status, body) = http(b.addr, "GET", "/healthz", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("unhealthy: "), "{body}");
    assert!(body.contains("database"), "{body}");
}
