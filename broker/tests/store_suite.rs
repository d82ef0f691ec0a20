//! One behaviour suite for both stores: every case is written once
//! against the `Store` interface (and the group-commit writer's
//! `BatchWriter`) and run on SQLite (a file in a temporary directory) and
//! on PostgreSQL (a fresh database on this binary's private server, see
//! common/postgres.rs), so that the two cannot drift apart.
//!
//! cargo test -p claudemesh-broker --test store_suite

mod common;

use std::sync::{Arc, Mutex};

use claudemesh_broker::metrics::Metrics;
use claudemesh_broker::store::{
    BatchOp, BatchOutcome, BatchWriter, InsertOutcome, InviteRow, JoinRefusal, JoinRequest,
    MemberInfo, MeshInfo, NewMessage, RecipientCopy, SenderInfo, Store, StoreError, StoreLocation,
};
use claudemesh_protocol::MemberSecretKey;
use claudemesh_protocol::invite::{Invite, InviteRole};
use claudemesh_protocol::wire::{DeliveryState, Priority, RecipientState};

const NOW: i64 = 1_800_000_000_000;
const DAY_MS: i64 = 86_400_000;

/// A store under test, with the writer connection the broker would use.
struct Fixture {
    location: StoreLocation,
    store: Arc<Store>,
    writer: Arc<Mutex<BatchWriter>>,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::open(StoreLocation::DataDir(dir.path().to_owned()), Some(dir)).await
    }

    async fn postgres() -> Self {
        let url = common::postgres::shared().fresh_database();
        Self::open(StoreLocation::Postgres(url), None).await
    }

    async fn open(location: StoreLocation, dir: Option<tempfile::TempDir>) -> Self {
        let store = Store::open(&location).await.unwrap();
        let writer = store.batch_writer(Arc::new(Metrics::new())).unwrap();
        Self {
            location,
            store: Arc::new(store),
            writer: Arc::new(Mutex::new(writer)),
            _dir: dir,
        }
    }

    /// Applies one operation in its own batch, as the writer thread does
    /// (off the async runtime).
    async fn apply(&self, op: Op) -> (BatchOutcome, Option<NewMessage>) {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = writer.lock().unwrap();
            match op {
                Op::Insert(mut m) => {
                    let mut ops = [BatchOp::Insert(&mut m)];
                    let mut applied = w.apply(&mut ops).unwrap();
                    (applied.outcomes.remove(0), Some(m))
                }
                Op::Delivered(mid, member, at) => {
                    let mut ops = [BatchOp::Delivered {
                        message_id: &mid,
                        member_id: &member,
                        at,
                    }];
                    (w.apply(&mut ops).unwrap().outcomes.remove(0), None)
                }
                Op::Seen(mid, member, session, at) => {
                    let mut ops = [BatchOp::Seen {
                        message_id: &mid,
                        member_id: &member,
                        session_id: &session,
                        at,
                    }];
                    (w.apply(&mut ops).unwrap().outcomes.remove(0), None)
                }
                Op::Remember(sig, expires_at) => {
                    let mut ops = [BatchOp::RememberHello {
                        signature: &sig,
                        expires_at,
                    }];
                    (w.apply(&mut ops).unwrap().outcomes.remove(0), None)
                }
                Op::Housekeeping(now_ms) => {
                    let mut ops = [BatchOp::Housekeeping { now_ms }];
                    (w.apply(&mut ops).unwrap().outcomes.remove(0), None)
                }
            }
        })
        .await
        .unwrap()
    }

    async fn insert(&self, m: NewMessage) -> (InsertOutcome, NewMessage) {
        match self.apply(Op::Insert(m)).await {
            (BatchOutcome::Inserted(r), Some(m)) => (r.unwrap(), m),
            other => panic!("not an insert outcome: {:?}", other.0),
        }
    }

    async fn receipt(&self, op: Op) -> bool {
        match self.apply(op).await.0 {
            BatchOutcome::Receipt(route) => route.is_some(),
            other => panic!("not a receipt outcome: {other:?}"),
        }
    }

    async fn remember(&self, sig: &str, expires_at: i64) -> bool {
        match self.apply(Op::Remember(sig.into(), expires_at)).await.0 {
            BatchOutcome::Remembered(r) => r.unwrap(),
            other => panic!("not a hello outcome: {other:?}"),
        }
    }

    /// Writes a schema version above what this broker knows, behind the
    /// store's back (as a newer broker would have).
    async fn bump_schema_version(&self, to: i64) {
        match &self.location {
            StoreLocation::DataDir(dir) => {
                let conn = rusqlite::Connection::open(dir.join(claudemesh_broker::store::DB_FILE))
                    .unwrap();
                conn.pragma_update(None, "user_version", to).unwrap();
            }
            StoreLocation::Postgres(url) => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                client
                    .execute("UPDATE schema_version SET version = $1", &[&to])
                    .await
                    .unwrap();
            }
        }
    }
}

enum Op {
    Insert(NewMessage),
    Delivered(String, String, i64),
    Seen(String, String, String, i64),
    Remember(String, i64),
    Housekeeping(i64),
}

fn mesh(slug: &str, owner: &MemberSecretKey) -> MeshInfo {
    MeshInfo {
        id: format!("mesh_{slug}"),
        slug: slug.to_owned(),
        owner_pubkey: owner.public_key().to_hex(),
    }
}

fn member(mesh_id: &str, name: &str) -> MemberInfo {
    MemberInfo {
        id: format!("mem_{name}"),
        mesh_id: mesh_id.to_owned(),
        pubkey: format!("pk_{name}"),
        display_name: name.to_owned(),
        role: "member".to_owned(),
        revoked: false,
    }
}

/// A mesh with members alice, bob and carol.
async fn populated(f: &Fixture) -> MeshInfo {
    let m = mesh("team", &MemberSecretKey::generate().unwrap());
    f.store.insert_mesh(&m, NOW).await.unwrap();
    for name in ["alice", "bob", "carol"] {
        assert!(
            f.store
                .insert_member(&member(&m.id, name), None, NOW)
                .await
                .unwrap()
        );
    }
    m
}

/// A message from alice: to bob's sessions s1 and s2, and to the whole of carol.
fn message(mesh_id: &str, client_id: &str, expires_at: i64) -> NewMessage {
    NewMessage {
        message_id: String::new(),
        seq: 0,
        mesh_id: mesh_id.to_owned(),
        client_id: client_id.to_owned(),
        sender: SenderInfo {
            member_id: "mem_alice".into(),
            pubkey: "pk_alice".into(),
            session_id: "sa".into(),
            display_name: "alice".into(),
        },
        target: "*".into(),
        priority: Priority::Now,
        sent_at: NOW,
        expires_at,
        recipients: vec![
            RecipientCopy {
                member_id: "mem_bob".into(),
                pubkey: "pk_bob".into(),
                sessions: vec!["s1".into(), "s2".into()],
                nonce: "nb".into(),
                ciphertext: "cb".into(),
            },
            RecipientCopy {
                member_id: "mem_carol".into(),
                pubkey: "pk_carol".into(),
                sessions: vec![],
                nonce: "nc".into(),
                ciphertext: "cc".into(),
            },
        ],
    }
}

fn state(member: &str, session: Option<&str>, state: DeliveryState) -> RecipientState {
    RecipientState {
        member: member.to_owned(),
        session_id: session.map(str::to_owned),
        state,
    }
}

// ---- the cases ----

async fn migrates_and_refuses_a_newer_schema(f: &Fixture) {
    let version = f.store.schema_version().await.unwrap();
    assert!(version >= 1);
    // Opening again (a second node, an admin command) migrates nothing.
    let again = Store::open(&f.location).await.unwrap();
    assert_eq!(again.schema_version().await.unwrap(), version);
    drop(again);
    f.bump_schema_version(version + 7).await;
    match Store::open(&f.location).await {
        Err(StoreError::TooNew { found, known }) => {
            assert_eq!((found, known), (version + 7, version));
        }
        Err(other) => panic!("expected TooNew, got {other}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

async fn meshes_and_members(f: &Fixture) {
    let owner = MemberSecretKey::generate().unwrap();
    let m = mesh("team", &owner);
    f.store.insert_mesh(&m, NOW).await.unwrap();
    assert!(
        f.store
            .insert_mesh(
                &MeshInfo {
                    id: "mesh_other".into(),
                    ..m.clone()
                },
                NOW
            )
            .await
            .is_err(),
        "a taken slug must be refused"
    );
    assert_eq!(f.store.find_mesh("team").await.unwrap(), Some(m.clone()));
    assert_eq!(f.store.find_mesh(&m.id).await.unwrap(), Some(m.clone()));
    assert_eq!(f.store.find_mesh("nope").await.unwrap(), None);
    assert_eq!(f.store.list_meshes().await.unwrap(), vec![m.clone()]);

    let alice = member(&m.id, "alice");
    assert!(f.store.insert_member(&alice, None, NOW).await.unwrap());
    let again = MemberInfo {
        id: "mem_other".into(),
        ..alice.clone()
    };
    assert!(!f.store.insert_member(&again, None, NOW).await.unwrap());
    let mut twin = member(&m.id, "bob");
    twin.display_name = "alice".into();
    assert!(f.store.insert_member(&twin, None, NOW + 1).await.unwrap());

    assert_eq!(
        f.store.member_by_pubkey(&m.id, "pk_alice").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(f.store.member_by_pubkey(&m.id, "pk_x").await.unwrap(), None);
    let mut named = f.store.members_by_name(&m.id, "alice").await.unwrap();
    named.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(named, vec![alice.clone(), twin.clone()]);
    assert_eq!(
        f.store.list_members(&m.id).await.unwrap(),
        vec![alice, twin]
    );
}

struct InviteSetup {
    owner: MemberSecretKey,
    mesh: MeshInfo,
}

async fn invite_setup(f: &Fixture) -> InviteSetup {
    let owner = MemberSecretKey::generate().unwrap();
    let m = mesh("team", &owner);
    f.store.insert_mesh(&m, NOW).await.unwrap();
    InviteSetup { owner, mesh: m }
}

async fn invite(f: &Fixture, s: &InviteSetup, id: &str, uses: Option<u32>) -> Invite {
    let expires_at = NOW / 1000 + 3600;
    f.store
        .insert_invite(
            &InviteRow {
                id: id.to_owned(),
                mesh_id: s.mesh.id.clone(),
                role: "member".into(),
                max_uses: uses,
                uses: 0,
                expires_at,
                revoked: false,
            },
            NOW,
        )
        .await
        .unwrap();
    Invite::signed(
        &s.owner,
        &s.mesh.id,
        &s.mesh.slug,
        "ws://127.0.0.1:1/ws",
        id,
        InviteRole::Member,
        expires_at,
    )
}

fn join_request(inv: &Invite, who: &str, now_ms: i64) -> JoinRequest {
    JoinRequest {
        invite: inv.clone(),
        pubkey: format!("pk_{who}"),
        display_name: who.to_owned(),
        new_member_id: format!("mem_{who}"),
        now_ms,
    }
}

async fn enrollment_by_invite(f: &Fixture) {
    let s = invite_setup(f).await;
    let inv = invite(f, &s, "inv_two", Some(2)).await;
    let alice = f
        .store
        .join(join_request(&inv, "alice", NOW))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(alice.id, "mem_alice");
    // The same key again: its member back, no use taken.
    let mut again = join_request(&inv, "alice", NOW);
    again.new_member_id = "mem_alice2".into();
    assert_eq!(f.store.join(again).await.unwrap().unwrap().id, "mem_alice");
    assert_eq!(
        f.store.find_invite("inv_two").await.unwrap().unwrap().uses,
        1
    );
    f.store
        .join(join_request(&inv, "bob", NOW))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        f.store
            .join(join_request(&inv, "carol", NOW))
            .await
            .unwrap(),
        Err(JoinRefusal::Exhausted)
    );
    assert_eq!(
        f.store
            .member_by_pubkey(&s.mesh.id, "pk_carol")
            .await
            .unwrap(),
        None,
        "a refused join creates no member"
    );

    // Expired, revoked, unknown.
    let late = invite(f, &s, "inv_late", None).await;
    assert_eq!(
        f.store
            .join(join_request(&late, "dave", NOW + 2 * 3_600_000))
            .await
            .unwrap(),
        Err(JoinRefusal::Expired)
    );
    let gone = invite(f, &s, "inv_gone", None).await;
    assert!(f.store.revoke_invite("inv_gone", NOW).await.unwrap());
    assert!(!f.store.revoke_invite("inv_none", NOW).await.unwrap());
    assert_eq!(
        f.store
            .join(join_request(&gone, "dave", NOW))
            .await
            .unwrap(),
        Err(JoinRefusal::Revoked)
    );
    let mut stranger = gone.clone();
    stranger.mesh_id = "mesh_nope".into();
    assert_eq!(
        f.store
            .join(join_request(&stranger, "dave", NOW))
            .await
            .unwrap(),
        Err(JoinRefusal::UnknownMesh)
    );
    let mut forged = inv.clone();
    forged.owner_pubkey = MemberSecretKey::generate().unwrap().public_key().to_hex();
    assert_eq!(
        f.store
            .join(join_request(&forged, "dave", NOW))
            .await
            .unwrap(),
        Err(JoinRefusal::BadSignature)
    );
    // A revoked member cannot come back with a valid invite.
    f.store
        .revoke_member(&s.mesh.id, "mem_alice", NOW)
        .await
        .unwrap();
    let fresh = invite(f, &s, "inv_fresh", None).await;
    assert_eq!(
        f.store
            .join(join_request(&fresh, "alice", NOW))
            .await
            .unwrap(),
        Err(JoinRefusal::Revoked)
    );
}

async fn fifty_parallel_joins_on_a_one_use_invite(f: &Fixture) {
    let s = invite_setup(f).await;
    let inv = invite(f, &s, "inv_one", Some(1)).await;
    let joins: Vec<_> = (0..50)
        .map(|i| {
            let store = f.store.clone();
            let req = join_request(&inv, &format!("m{i}"), NOW);
            tokio::spawn(async move { store.join(req).await })
        })
        .collect();
    let mut joined = 0;
    let mut exhausted = 0;
    for j in joins {
        match j.await.unwrap().unwrap() {
            Ok(_) => joined += 1,
            Err(JoinRefusal::Exhausted) => exhausted += 1,
            Err(other) => panic!("unexpected refusal {other:?}"),
        }
    }
    assert_eq!((joined, exhausted), (1, 49));
    assert_eq!(f.store.list_members(&s.mesh.id).await.unwrap().len(), 1);
    assert_eq!(
        f.store.find_invite("inv_one").await.unwrap().unwrap().uses,
        1
    );
}

async fn revocations(f: &Fixture) {
    let m = populated(f).await;
    assert_eq!(f.store.last_revocation_seq().await.unwrap(), 0);
    f.store.revoke_member(&m.id, "mem_bob", NOW).await.unwrap();
    let bob = f.store.member_by_pubkey(&m.id, "pk_bob").await.unwrap();
    assert!(bob.unwrap().revoked);
    // Leave: only with the member's own id.
    assert!(
        !f.store
            .leave(&m.id, "mem_bob", "pk_carol", NOW)
            .await
            .unwrap()
    );
    assert!(
        f.store
            .leave(&m.id, "mem_carol", "pk_carol", NOW)
            .await
            .unwrap()
    );
    let all = f.store.revocations_since(0).await.unwrap();
    let who: Vec<&str> = all.iter().map(|r| r.member_id.as_str()).collect();
    assert_eq!(who, ["mem_bob", "mem_carol"]);
    assert!(all[0].seq < all[1].seq);
    assert_eq!(f.store.last_revocation_seq().await.unwrap(), all[1].seq);
    let later = f.store.revocations_since(all[0].seq).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].member_id, "mem_carol");
}

async fn messages_duplicates_and_pending_copies(f: &Fixture) {
    let m = populated(f).await;
    let (outcome, first) = f.insert(message(&m.id, "c1", NOW + DAY_MS)).await;
    assert!(matches!(outcome, InsertOutcome::Stored));
    assert!(first.seq > 0);
    assert!(first.message_id.ends_with(&format!("{:x}", first.seq)));

    // The same client id from the same sender: the first message, queued.
    let (outcome, _) = f.insert(message(&m.id, "c1", NOW + DAY_MS)).await;
    match outcome {
        InsertOutcome::Duplicate {
            message_id,
            recipients,
        } => {
            assert_eq!(message_id, first.message_id);
            assert_eq!(
                recipients,
                vec![
                    state("pk_bob", Some("s1"), DeliveryState::Queued),
                    state("pk_bob", Some("s2"), DeliveryState::Queued),
                    state("pk_carol", None, DeliveryState::Queued),
                ]
            );
        }
        InsertOutcome::Stored => panic!("a repeated send id was stored twice"),
    }
    let (dup, _) = f
        .store
        .sent_before(&m.id, "mem_alice", "c1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dup, first.message_id);
    assert!(
        f.store
            .sent_before(&m.id, "mem_bob", "c1")
            .await
            .unwrap()
            .is_none(),
        "the dedupe key includes the sender"
    );

    let (_, second) = f.insert(message(&m.id, "c2", NOW + DAY_MS)).await;
    assert!(second.seq > first.seq);
    let pending = f
        .store
        .pending_for_member("mem_bob", NOW, i64::MAX)
        .await
        .unwrap();
    let ids: Vec<&str> = pending.iter().map(|p| p.message_id.as_str()).collect();
    assert_eq!(ids, [first.message_id.as_str(), second.message_id.as_str()]);
    assert_eq!(pending[0].sessions, ["s1", "s2"]);
    assert_eq!(pending[0].ciphertext, "cb");
    assert_eq!(pending[0].sender_pubkey, "pk_alice");
    assert_eq!(pending[0].priority, Priority::Now);
    // Only what was numbered up to the watermark.
    let upto = f
        .store
        .pending_for_member("mem_bob", NOW, first.seq)
        .await
        .unwrap();
    assert_eq!(upto.len(), 1);
    assert_eq!(f.store.queue_depth().await.unwrap(), 4);
    assert_eq!(f.store.max_message_seq().await.unwrap(), second.seq);
}

async fn a_failing_send_fails_alone(f: &Fixture) {
    let m = populated(f).await;
    let mut bad = message(&m.id, "bad", NOW + DAY_MS);
    // Two copies for one member: the store refuses the message.
    let twin = bad.recipients[0].clone();
    bad.recipients.push(twin);
    let writer = f.writer.clone();
    let mesh_id = m.id.clone();
    let outcomes = tokio::task::spawn_blocking(move || {
        let mut good1 = message(&mesh_id, "good1", NOW + DAY_MS);
        let mut good2 = message(&mesh_id, "good2", NOW + DAY_MS);
        let mut ops = [
            BatchOp::Insert(&mut good1),
            BatchOp::Insert(&mut bad),
            BatchOp::Insert(&mut good2),
        ];
        writer.lock().unwrap().apply(&mut ops).unwrap().outcomes
    })
    .await
    .unwrap();
    let verdicts: Vec<&str> = outcomes
        .iter()
        .map(|o| match o {
            BatchOutcome::Inserted(Ok(InsertOutcome::Stored)) => "stored",
            BatchOutcome::Inserted(Err(_)) => "refused",
            other => panic!("unexpected outcome {other:?}"),
        })
        .collect();
    assert_eq!(verdicts, ["stored", "refused", "stored"]);
    for (client_id, stored) in [("good1", true), ("bad", false), ("good2", true)] {
        let found = f
            .store
            .sent_before(&m.id, "mem_alice", client_id)
            .await
            .unwrap();
        assert_eq!(found.is_some(), stored, "{client_id}");
    }
    // Nothing of the refused message is left: two messages, four copies.
    assert_eq!(f.store.queue_depth().await.unwrap(), 4);
}

/// A verdict per operation of a batch, for comparing with the one-by-one
/// order: a stored message's id, a repeat's first id with its states, a
/// receipt's first time, a signature's novelty.
#[derive(Debug, PartialEq)]
enum Verdict {
    Stored(String),
    Repeat(String, Vec<RecipientState>),
    Receipt(bool),
    NewHello(bool),
    Done,
}

fn verdict(outcome: BatchOutcome, m: Option<&NewMessage>) -> Verdict {
    match outcome {
        BatchOutcome::Inserted(Ok(InsertOutcome::Stored)) => {
            Verdict::Stored(m.map(|m| m.message_id.clone()).unwrap_or_default())
        }
        BatchOutcome::Inserted(Ok(InsertOutcome::Duplicate {
            message_id,
            recipients,
        })) => Verdict::Repeat(message_id, recipients),
        BatchOutcome::Receipt(route) => Verdict::Receipt(route.is_some()),
        BatchOutcome::Remembered(r) => Verdict::NewHello(r.unwrap()),
        BatchOutcome::Done => Verdict::Done,
        other => panic!("unexpected outcome {other:?}"),
    }
}

/// Many operations of every kind in one batch, repeats among them: each
/// is answered as if the batch had been applied one operation after the
/// other (the PostgreSQL writer applies a batch with set-based statements).
async fn a_batch_answers_as_one_by_one(f: &Fixture) {
    let m = populated(f).await;
    let (_, earlier) = f.insert(message(&m.id, "earlier", NOW + DAY_MS)).await;
    let p = earlier.message_id.clone();
    let writer = f.writer.clone();
    let mesh_id = m.id.clone();
    let earlier_id = p.clone();
    let (verdicts, seqs) = tokio::task::spawn_blocking(move || {
        let p = earlier_id;
        let mut c1 = message(&mesh_id, "c1", NOW + DAY_MS);
        let mut c1_again = message(&mesh_id, "c1", NOW + DAY_MS);
        let mut earlier_again = message(&mesh_id, "earlier", NOW + DAY_MS);
        let mut c2 = message(&mesh_id, "c2", NOW + DAY_MS);
        let mut earlier_late = message(&mesh_id, "earlier", NOW + DAY_MS);
        let delivered = |member| BatchOp::Delivered {
            message_id: &p,
            member_id: member,
            at: NOW + 1,
        };
        let seen = |member, session| BatchOp::Seen {
            message_id: &p,
            member_id: member,
            session_id: session,
            at: NOW + 2,
        };
        let hello = BatchOp::RememberHello {
            signature: "sig-batch",
            expires_at: NOW + DAY_MS,
        };
        let mut ops = [
            BatchOp::Insert(&mut c1),
            BatchOp::Insert(&mut c1_again),
            BatchOp::Insert(&mut earlier_again),
            delivered("mem_bob"),
            delivered("mem_bob"),
            seen("mem_carol", "sc"),
            delivered("mem_carol"),
            seen("mem_carol", "sc"),
            seen("mem_alice", "sa"),
            BatchOp::Delivered {
                message_id: "msg_unknown_1",
                member_id: "mem_bob",
                at: NOW,
            },
            hello,
            BatchOp::RememberHello {
                signature: "sig-batch",
                expires_at: NOW + DAY_MS,
            },
            BatchOp::Insert(&mut c2),
            BatchOp::Insert(&mut earlier_late),
        ];
        let outcomes = writer.lock().unwrap().apply(&mut ops).unwrap().outcomes;
        let inserted = [
            Some(&c1),
            Some(&c1_again),
            Some(&earlier_again),
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            Some(&c2),
            Some(&earlier_late),
        ];
        let verdicts: Vec<Verdict> = outcomes
            .into_iter()
            .zip(inserted)
            .map(|(o, m)| verdict(o, m))
            .collect();
        (verdicts, [c1.seq, c1_again.seq, c2.seq])
    })
    .await
    .unwrap();
    let Verdict::Stored(c1) = &verdicts[0] else {
        panic!("the first c1 was not stored: {:?}", verdicts[0]);
    };
    let queued = vec![
        state("pk_bob", Some("s1"), DeliveryState::Queued),
        state("pk_bob", Some("s2"), DeliveryState::Queued),
        state("pk_carol", None, DeliveryState::Queued),
    ];
    assert_eq!(verdicts[1], Verdict::Repeat(c1.clone(), queued.clone()));
    // Read as before the receipts that come after it in the batch.
    assert_eq!(verdicts[2], Verdict::Repeat(p.clone(), queued));
    assert_eq!(
        verdicts[3..12],
        [
            Verdict::Receipt(true),
            Verdict::Receipt(false),
            Verdict::Receipt(true),
            Verdict::Receipt(false),
            Verdict::Receipt(false),
            Verdict::Receipt(false),
            Verdict::Receipt(false),
            Verdict::NewHello(true),
            Verdict::NewHello(false),
        ]
    );
    assert!(matches!(verdicts[12], Verdict::Stored(_)));
    // ... and as after those that come before it.
    let receipted = vec![
        state("pk_bob", Some("s1"), DeliveryState::Delivered),
        state("pk_bob", Some("s2"), DeliveryState::Delivered),
        state("pk_carol", Some("sc"), DeliveryState::Seen),
    ];
    assert_eq!(verdicts[13], Verdict::Repeat(p.clone(), receipted.clone()));
    assert!(seqs.is_sorted(), "numbered in batch order: {seqs:?}");
    assert_eq!(f.store.queue_depth().await.unwrap(), 4, "c1 and c2 queued");
    // The seen receipt delivered carol's copy of the earlier message.
    assert_eq!(
        f.store
            .message_status(&p, &m.id, "mem_alice")
            .await
            .unwrap()
            .unwrap(),
        receipted
    );
    assert!(!f.remember("sig-batch", NOW + DAY_MS).await);
}

/// Housekeeping inside a batch purges what expired before it, and not
/// what the batch stores after it.
async fn housekeeping_in_a_batch(f: &Fixture) {
    let m = populated(f).await;
    let writer = f.writer.clone();
    let mesh_id = m.id.clone();
    let outcomes = tokio::task::spawn_blocking(move || {
        let mut doomed = message(&mesh_id, "doomed", NOW + 10);
        let mut late = message(&mesh_id, "late", NOW + 10);
        let mut ops = [
            BatchOp::Insert(&mut doomed),
            BatchOp::Housekeeping { now_ms: NOW + 10 },
            BatchOp::Insert(&mut late),
        ];
        let outcomes = writer.lock().unwrap().apply(&mut ops).unwrap().outcomes;
        outcomes
            .into_iter()
            .map(|o| verdict(o, None))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert_eq!(
        outcomes,
        [
            Verdict::Stored(String::new()),
            Verdict::Done,
            Verdict::Stored(String::new())
        ]
    );
    for (client_id, kept) in [("doomed", false), ("late", true)] {
        let found = f
            .store
            .sent_before(&m.id, "mem_alice", client_id)
            .await
            .unwrap();
        assert_eq!(found.is_some(), kept, "{client_id}");
    }
}

async fn receipts_and_message_status(f: &Fixture) {
    let m = populated(f).await;
    let (_, msg) = f.insert(message(&m.id, "c1", NOW + DAY_MS)).await;
    let mid = msg.message_id.clone();
    let status = |who: &'static str| {
        let store = f.store.clone();
        let (mid, mesh) = (mid.clone(), m.id.clone());
        async move { store.message_status(&mid, &mesh, who).await.unwrap() }
    };
    assert!(status("mem_alice").await.is_some(), "the sender may ask");
    assert!(status("mem_bob").await.is_some(), "a recipient may ask");
    assert!(status("mem_nobody").await.is_none());
    assert!(
        f.store
            .message_status("msg_unknown_1", &m.id, "mem_alice")
            .await
            .unwrap()
            .is_none()
    );

    // Delivered: once.
    let delivered = Op::Delivered(mid.clone(), "mem_bob".into(), NOW + 1);
    assert!(f.receipt(delivered).await);
    let again = Op::Delivered(mid.clone(), "mem_bob".into(), NOW + 2);
    assert!(!f.receipt(again).await);
    assert!(
        f.store
            .pending_for_member("mem_bob", NOW, i64::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(f.store.queue_depth().await.unwrap(), 1);

    // Seen by a session: once; it also delivers carol's copy.
    let seen = Op::Seen(mid.clone(), "mem_carol".into(), "sc".into(), NOW + 3);
    assert!(f.receipt(seen).await);
    let seen = Op::Seen(mid.clone(), "mem_carol".into(), "sc".into(), NOW + 4);
    assert!(!f.receipt(seen).await);
    let stranger = Op::Seen(mid.clone(), "mem_alice".into(), "sa".into(), NOW + 5);
    assert!(!f.receipt(stranger).await, "the sender is no recipient");
    let unknown = Op::Delivered("msg_unknown_1".into(), "mem_bob".into(), NOW);
    assert!(!f.receipt(unknown).await);
    assert_eq!(f.store.queue_depth().await.unwrap(), 0);
    let seen_s2 = Op::Seen(mid.clone(), "mem_bob".into(), "s2".into(), NOW + 6);
    assert!(f.receipt(seen_s2).await);

    assert_eq!(
        status("mem_alice").await.unwrap(),
        vec![
            state("pk_bob", Some("s1"), DeliveryState::Delivered),
            state("pk_bob", Some("s2"), DeliveryState::Seen),
            state("pk_carol", Some("sc"), DeliveryState::Seen),
        ]
    );
}

async fn expiry_purge(f: &Fixture) {
    let m = populated(f).await;
    let (_, old) = f.insert(message(&m.id, "old", NOW + 10)).await;
    let (_, live) = f.insert(message(&m.id, "live", NOW + DAY_MS)).await;
    // An expired copy is never pushed, even before the purge.
    let pending = f
        .store
        .pending_for_member("mem_carol", NOW + 10, i64::MAX)
        .await
        .unwrap();
    let ids: Vec<&str> = pending.iter().map(|p| p.message_id.as_str()).collect();
    assert_eq!(ids, [live.message_id.as_str()]);
    f.apply(Op::Housekeeping(NOW + 10)).await;
    assert!(
        f.store
            .message_status(&old.message_id, &m.id, "mem_alice")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        f.store
            .message_status(&live.message_id, &m.id, "mem_alice")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(f.store.queue_depth().await.unwrap(), 2);
    // The expired send id is forgotten with its message.
    assert!(
        f.store
            .sent_before(&m.id, "mem_alice", "old")
            .await
            .unwrap()
            .is_none()
    );
}

async fn replay_signatures(f: &Fixture) {
    assert!(f.remember("sig1", NOW + 100).await);
    assert!(
        !f.remember("sig1", NOW + 100).await,
        "the second time is a replay"
    );
    assert!(f.remember("sig2", NOW + 300).await);
    // Pruned once past their window: sig1 goes, sig2 stays.
    f.apply(Op::Housekeeping(NOW + 200)).await;
    assert!(f.remember("sig1", NOW + 400).await);
    assert!(!f.remember("sig2", NOW + 300).await);
}

async fn settings_and_health(f: &Fixture) {
    assert_eq!(f.store.setting("broker_url").await.unwrap(), None);
    f.store
        .set_setting("broker_url", "ws://a/ws")
        .await
        .unwrap();
    f.store
        .set_setting("broker_url", "ws://b/ws")
        .await
        .unwrap();
    assert_eq!(
        f.store.setting("broker_url").await.unwrap().as_deref(),
        Some("ws://b/ws")
    );
    f.store.health().await.unwrap();
}

/// Each case, once per store: `<case>::sqlite` and `<case>::postgres`.
macro_rules! both_stores {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$case(&super::Fixture::sqlite().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$case(&super::Fixture::postgres().await).await;
            }
        }
    )*};
}

both_stores!(
    migrates_and_refuses_a_newer_schema,
    meshes_and_members,
    enrollment_by_invite,
    fifty_parallel_joins_on_a_one_use_invite,
    revocations,
    messages_duplicates_and_pending_copies,
    a_failing_send_fails_alone,
    a_batch_answers_as_one_by_one,
    housekeeping_in_a_batch,
    receipts_and_message_status,
    expiry_purge,
    replay_signatures,
    settings_and_health,
);

/// Nodes (and admin commands) starting together on a new database: each
/// opens it, the schema is created once, and nobody fails.
async fn concurrent_first_opens(location: StoreLocation) {
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let l = location.clone();
            tokio::spawn(async move { Store::open(&l).await.map(|s| s.describe()) })
        })
        .collect();
    for o in opens {
        o.await.unwrap().unwrap();
    }
    let store = Store::open(&location).await.unwrap();
    assert!(store.schema_version().await.unwrap() >= 1);
    store.health().await.unwrap();
}

mod concurrent_first_opens_migrate_once {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let dir = tempfile::tempdir().unwrap();
        concurrent_first_opens(StoreLocation::DataDir(dir.path().to_owned())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let url = common::postgres::shared().fresh_database();
        concurrent_first_opens(StoreLocation::Postgres(url)).await;
    }
}
