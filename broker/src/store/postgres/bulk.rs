//! The group-commit writer's statements, so that a batch costs the same
//! few round trips whatever its size: messages with their copies, and
//! hello signatures, one statement for the whole batch (arrays bound as
//! parameters and expanded with `UNNEST`); receipts one statement each,
//! all sent in one flight (pipelined; see [`mark_delivered`] for why).
//!
//! Each takes its operations in batch order with their index in the
//! batch, and leaves out what would make a row appear twice in one
//! statement (a repeated send id, receipt or signature): the caller
//! answers a repeat as the one-by-one order would have (the first of a
//! kind wins, later ones are repeats).

use deadpool_postgres::GenericClient;

use crate::store::states::{sessions_from_json, sessions_to_json};
use crate::store::{NewMessage, ReceiptRoute, StoreError};

/// `n` message numbers from `message_seq`, ascending.
pub async fn next_seqs(c: &impl GenericClient, n: usize) -> Result<Vec<i64>, StoreError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let st = c
        .prepare_cached("SELECT nextval('message_seq') FROM generate_series(1, $1::BIGINT)")
        .await?;
    let mut seqs: Vec<i64> = c
        .query(&st, &[&n])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// Stores numbered messages and all their copies in one statement; a
/// message whose (mesh, sender member, client id) is already there (from
/// an earlier batch, or another node meanwhile) is skipped with its
/// copies. The messages must have distinct send ids. Returns, for each,
/// whether it was stored.
pub async fn insert_messages(
    c: &impl GenericClient,
    msgs: &[&NewMessage],
) -> Result<Vec<bool>, StoreError> {
    if msgs.is_empty() {
        return Ok(Vec::new());
    }
    let seqs: Vec<i64> = msgs.iter().map(|m| m.seq).collect();
    let ids: Vec<&str> = msgs.iter().map(|m| m.message_id.as_str()).collect();
    let meshes: Vec<&str> = msgs.iter().map(|m| m.mesh_id.as_str()).collect();
    let senders: Vec<&str> = msgs.iter().map(|m| m.sender.member_id.as_str()).collect();
    let client_ids: Vec<&str> = msgs.iter().map(|m| m.client_id.as_str()).collect();
    let pubkeys: Vec<&str> = msgs.iter().map(|m| m.sender.pubkey.as_str()).collect();
    let sessions: Vec<&str> = msgs.iter().map(|m| m.sender.session_id.as_str()).collect();
    let names: Vec<&str> = msgs
        .iter()
        .map(|m| m.sender.display_name.as_str())
        .collect();
    let targets: Vec<&str> = msgs.iter().map(|m| m.target.as_str()).collect();
    let priorities: Vec<&str> = msgs.iter().map(|m| m.priority.as_str()).collect();
    let sent: Vec<i64> = msgs.iter().map(|m| m.sent_at).collect();
    let expires: Vec<i64> = msgs.iter().map(|m| m.expires_at).collect();
    let copies = Copies::of(msgs);
    // The copies are kept only for the messages the first insert
    // returned: a skipped repeat leaves no stray copy.
    let st = c
        .prepare_cached(
            "WITH stored AS (
                 INSERT INTO messages (seq, id, mesh_id, sender_member_id, client_id,
                     sender_pubkey, sender_session, sender_name, target, priority, sent_at,
                     expires_at)
                 SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::TEXT[],
                     $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[],
                     $11::BIGINT[], $12::BIGINT[])
                 ON CONFLICT (mesh_id, sender_member_id, client_id) DO NOTHING
                 RETURNING seq
             ), copies AS (
                 INSERT INTO recipients (msg_seq, ord, member_id, pubkey, sessions, nonce,
                     ciphertext)
                 SELECT r.* FROM UNNEST($13::BIGINT[], $14::INTEGER[], $15::TEXT[],
                     $16::TEXT[], $17::TEXT[], $18::TEXT[], $19::TEXT[])
                     AS r(msg_seq, ord, member_id, pubkey, sessions, nonce, ciphertext)
                 WHERE r.msg_seq IN (SELECT seq FROM stored)
             )
             SELECT seq FROM stored",
        )
        .await?;
    let stored: std::collections::HashSet<i64> = c
        .query(
            &st,
            &[
                &seqs,
                &ids,
                &meshes,
                &senders,
                &client_ids,
                &pubkeys,
                &sessions,
                &names,
                &targets,
                &priorities,
                &sent,
                &expires,
                &copies.seqs,
                &copies.ords,
                &copies.member_ids,
                &copies.pubkeys,
                &copies.sessions,
                &copies.nonces,
                &copies.ciphertexts,
            ],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(msgs.iter().map(|m| stored.contains(&m.seq)).collect())
}

/// Every copy of a set of messages, as the columns of `recipients`.
struct Copies<'a> {
    seqs: Vec<i64>,
    ords: Vec<i32>,
    member_ids: Vec<&'a str>,
    pubkeys: Vec<&'a str>,
    sessions: Vec<String>,
    nonces: Vec<&'a str>,
    ciphertexts: Vec<&'a str>,
}

impl<'a> Copies<'a> {
    fn of(msgs: &[&'a NewMessage]) -> Self {
        let n = msgs.iter().map(|m| m.recipients.len()).sum();
        let mut c = Self {
            seqs: Vec::with_capacity(n),
            ords: Vec::with_capacity(n),
            member_ids: Vec::with_capacity(n),
            pubkeys: Vec::with_capacity(n),
            sessions: Vec::with_capacity(n),
            nonces: Vec::with_capacity(n),
            ciphertexts: Vec::with_capacity(n),
        };
        for m in msgs {
            for (ord, r) in m.recipients.iter().enumerate() {
                c.seqs.push(m.seq);
                c.ords.push(i32::try_from(ord).unwrap_or(i32::MAX));
                c.member_ids.push(&r.member_id);
                c.pubkeys.push(&r.pubkey);
                c.sessions.push(sessions_to_json(&r.sessions));
                c.nonces.push(&r.nonce);
                c.ciphertexts.push(&r.ciphertext);
            }
        }
        c
    }
}

/// A copy that reached a state for the first time: where its receipt
/// goes, and the recipient's public key (which the receipt names).
pub struct FirstReceipt {
    /// The operation's index in the batch.
    pub index: usize,
    pub route: ReceiptRoute,
    pub pubkey: String,
}

/// One copy to mark delivered: (index in the batch, message id, member
/// id, time). At most one per (message, member).
pub type Delivery<'a> = (usize, &'a str, &'a str, i64);

/// Marks copies delivered and drops their ciphertext; returns those that
/// were not delivered yet.
///
/// One statement per copy, all sent in one flight (pipelined), each with
/// the message number taken from the id: equalities on both primary keys
/// leave the planner nothing to get wrong. (A set-based UPDATE joining an
/// array to `recipients`, or one finding the message by id, was planned
/// as a scan of every pending copy while the tables had no statistics
/// yet, as in a new cluster's first minute.)
pub async fn mark_delivered(
    c: &impl GenericClient,
    ops: &[Delivery<'_>],
) -> Result<Vec<FirstReceipt>, StoreError> {
    if ops.is_empty() {
        return Ok(Vec::new());
    }
    let st = c
        .prepare_cached(
            "UPDATE recipients r SET delivered_at = $3, nonce = NULL, ciphertext = NULL
             FROM messages m
             WHERE m.seq = $4 AND m.id = $1 AND r.msg_seq = $4 AND r.member_id = $2
                 AND r.delivered_at IS NULL
             RETURNING m.mesh_id, m.sender_member_id, r.sessions, r.pubkey",
        )
        .await?;
    let updates = ops.iter().map(|&(index, message_id, member_id, at)| {
        let st = &st;
        async move {
            // Not an id of this store: no such message.
            let Some(seq) = crate::ids::seq_in_message_id(message_id) else {
                return Ok(None);
            };
            let row = c
                .query_opt(st, &[&message_id, &member_id, &at, &seq])
                .await?;
            Ok::<_, StoreError>(row.map(|r| first_receipt(index, &r)))
        }
    });
    Ok(futures_util::future::try_join_all(updates)
        .await?
        .into_iter()
        .flatten()
        .collect())
}

/// One session's seen receipt: (index in the batch, message id, member
/// id, session id, time). At most one per (message, member, session).
pub type Sighting<'a> = (usize, &'a str, &'a str, &'a str, i64);

/// Records seen receipts of recipients; returns those recorded for the
/// first time (a receipt from a member the message was not for records
/// nothing). Pipelined one statement per receipt, by primary keys, as
/// [`mark_delivered`].
pub async fn mark_seen(
    c: &impl GenericClient,
    ops: &[Sighting<'_>],
) -> Result<Vec<FirstReceipt>, StoreError> {
    if ops.is_empty() {
        return Ok(Vec::new());
    }
    let st = c
        .prepare_cached(
            "WITH copy AS (
                 SELECT m.seq, m.mesh_id, m.sender_member_id, r.sessions, r.pubkey
                 FROM messages m JOIN recipients r ON r.msg_seq = $5 AND r.member_id = $2
                 WHERE m.seq = $5 AND m.id = $1
             ), recorded AS (
                 INSERT INTO seen (msg_seq, member_id, session_id, at)
                 SELECT seq, $2::TEXT, $3::TEXT, $4::BIGINT FROM copy
                 ON CONFLICT DO NOTHING
                 RETURNING msg_seq
             )
             SELECT copy.mesh_id, copy.sender_member_id, copy.sessions, copy.pubkey
             FROM copy JOIN recorded ON recorded.msg_seq = copy.seq",
        )
        .await?;
    let inserts = ops
        .iter()
        .map(|&(index, message_id, member_id, session_id, at)| {
            let st = &st;
            async move {
                let Some(seq) = crate::ids::seq_in_message_id(message_id) else {
                    return Ok(None);
                };
                let row = c
                    .query_opt(st, &[&message_id, &member_id, &session_id, &at, &seq])
                    .await?;
                Ok::<_, StoreError>(row.map(|r| first_receipt(index, &r)))
            }
        });
    Ok(futures_util::future::try_join_all(inserts)
        .await?
        .into_iter()
        .flatten()
        .collect())
}

fn first_receipt(index: usize, r: &tokio_postgres::Row) -> FirstReceipt {
    FirstReceipt {
        index,
        route: ReceiptRoute {
            mesh_id: r.get(0),
            sender_member_id: r.get(1),
            sessions: sessions_from_json(r.get(2)),
        },
        pubkey: r.get(3),
    }
}

/// Records hello signatures (distinct); returns the indexes (as given)
/// of those that were new.
pub async fn remember_hellos(
    c: &impl GenericClient,
    ops: &[(usize, &str, i64)],
) -> Result<Vec<usize>, StoreError> {
    if ops.is_empty() {
        return Ok(Vec::new());
    }
    let index: Vec<i64> = ops.iter().map(|o| as_i64(o.0)).collect();
    let signatures: Vec<&str> = ops.iter().map(|o| o.1).collect();
    let expires: Vec<i64> = ops.iter().map(|o| o.2).collect();
    let st = c
        .prepare_cached(
            "WITH new AS (
                 INSERT INTO hello_signatures (signature, expires_at)
                 SELECT * FROM UNNEST($2::TEXT[], $3::BIGINT[])
                 ON CONFLICT (signature) DO NOTHING
                 RETURNING signature
             )
             SELECT u.i FROM UNNEST($1::BIGINT[], $2::TEXT[]) AS u(i, signature)
             JOIN new ON new.signature = u.signature",
        )
        .await?;
    Ok(c.query(&st, &[&index, &signatures, &expires])
        .await?
        .iter()
        .map(|r| usize::try_from(r.get::<_, i64>(0)).unwrap_or(usize::MAX))
        .collect())
}

fn as_i64(i: usize) -> i64 {
    i64::try_from(i).unwrap_or(i64::MAX)
}
