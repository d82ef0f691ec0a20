//! Messages, their per-recipient copies and receipts, on PostgreSQL.
//! Same semantics as `store::sqlite::messages` (the shared suite checks
//! it); a message is found by its unique `id`, and a repeated send by the
//! unique (mesh, sender member, client id). The writer stores messages
//! and receipts a batch at a time ([`super::bulk`]); this module reads
//! them (and deletes expired ones).

use claudemesh_protocol::wire::{Priority, RecipientState};
use deadpool_postgres::GenericClient;

use crate::store::states::{self, CopyRow, sessions_from_json};
use crate::store::{PendingPush, StoreError};

/// The message a sender already sent with this client id.
pub async fn find_by_client_id(
    c: &impl GenericClient,
    mesh_id: &str,
    sender_member_id: &str,
    client_id: &str,
) -> Result<Option<String>, StoreError> {
    let st = c
        .prepare_cached(
            "SELECT id FROM messages
             WHERE mesh_id = $1 AND sender_member_id = $2 AND client_id = $3",
        )
        .await?;
    let row = c
        .query_opt(&st, &[&mesh_id, &sender_member_id, &client_id])
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Per-recipient states of a message (see [`states::recipient_states`]).
pub async fn recipient_states(
    c: &impl GenericClient,
    message_id: &str,
) -> Result<Vec<RecipientState>, StoreError> {
    let (copies, seen) = copies_and_seen(c, message_id).await?;
    Ok(states::recipient_states(copies, &seen))
}

/// What the states of a message are made of: its copies in send order,
/// and the (member id, session id) pairs that have seen it.
pub async fn copies_and_seen(
    c: &impl GenericClient,
    message_id: &str,
) -> Result<(Vec<CopyRow>, Vec<(String, String)>), StoreError> {
    let st = c
        .prepare_cached(
            "SELECT r.member_id, r.pubkey, r.sessions, r.delivered_at IS NOT NULL
             FROM recipients r JOIN messages m ON m.seq = r.msg_seq
             WHERE m.id = $1 ORDER BY r.ord",
        )
        .await?;
    let copies = c
        .query(&st, &[&message_id])
        .await?
        .into_iter()
        .map(|r| CopyRow {
            member_id: r.get(0),
            pubkey: r.get(1),
            sessions: sessions_from_json(r.get(2)),
            delivered: r.get(3),
        })
        .collect();
    let st = c
        .prepare_cached(
            "SELECT s.member_id, s.session_id
             FROM seen s JOIN messages m ON m.seq = s.msg_seq WHERE m.id = $1",
        )
        .await?;
    let seen: Vec<(String, String)> = c
        .query(&st, &[&message_id])
        .await?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok((copies, seen))
}

/// Whether the message is in `mesh_id` and `member_id` sent or received it.
pub async fn involves_member(
    c: &impl GenericClient,
    message_id: &str,
    mesh_id: &str,
    member_id: &str,
) -> Result<bool, StoreError> {
    let st = c
        .prepare_cached(
            "SELECT m.mesh_id = $2 AND (m.sender_member_id = $3 OR EXISTS (
                 SELECT 1 FROM recipients r WHERE r.msg_seq = m.seq AND r.member_id = $3))
             FROM messages m WHERE m.id = $1",
        )
        .await?;
    let row = c
        .query_opt(&st, &[&message_id, &mesh_id, &member_id])
        .await?;
    Ok(row.is_some_and(|r| r.get(0)))
}

/// The undelivered, unexpired copies of messages `seqs`, with their mesh
/// and member, in number and send order.
pub async fn copies_of(
    c: &impl GenericClient,
    seqs: &[i64],
    now_ms: i64,
) -> Result<Vec<(String, String, PendingPush)>, StoreError> {
    // Delivered copies are left out here rather than in SQL: a condition
    // on `delivered_at` would let the planner pick the partial index of
    // every pending copy instead of the primary key (see
    // `PgStore::copies_of`).
    let st = c
        .prepare_cached(
            "SELECT m.id, r.sessions, r.nonce, r.ciphertext, m.sender_pubkey,
                    m.sender_session, m.sender_name, m.target, m.priority, m.sent_at,
                    m.mesh_id, r.member_id, r.delivered_at IS NULL
             FROM recipients r JOIN messages m ON m.seq = r.msg_seq
             WHERE r.msg_seq = ANY($1) AND m.seq = ANY($1) AND m.expires_at > $2
             ORDER BY r.msg_seq, r.ord",
        )
        .await?;
    let rows = c.query(&st, &[&seqs, &now_ms]).await?;
    Ok(undelivered(&rows))
}

/// The undelivered copies of the (message number, member id) pairs
/// `seqs` and `member_ids`, as [`copies_of`].
pub async fn copies_for(
    c: &impl GenericClient,
    seqs: &[i64],
    member_ids: &[&str],
    now_ms: i64,
) -> Result<Vec<(String, String, PendingPush)>, StoreError> {
    // Each pair is the primary key of its copy.
    let st = c
        .prepare_cached(
            "SELECT m.id, r.sessions, r.nonce, r.ciphertext, m.sender_pubkey,
                    m.sender_session, m.sender_name, m.target, m.priority, m.sent_at,
                    m.mesh_id, r.member_id, r.delivered_at IS NULL
             FROM UNNEST($1::BIGINT[], $2::TEXT[]) AS k(seq, member_id)
             JOIN recipients r ON r.msg_seq = k.seq AND r.member_id = k.member_id
             JOIN messages m ON m.seq = k.seq
             WHERE m.expires_at > $3
             ORDER BY r.msg_seq, r.ord",
        )
        .await?;
    let rows = c.query(&st, &[&seqs, &member_ids, &now_ms]).await?;
    Ok(undelivered(&rows))
}

/// The rows of [`copies_of`] and [`copies_for`] whose copy is not yet
/// delivered, as (mesh id, member id, copy).
fn undelivered(rows: &[tokio_postgres::Row]) -> Vec<(String, String, PendingPush)> {
    rows.iter()
        .filter(|r| r.get::<_, bool>(12))
        .map(|r| (r.get(10), r.get(11), pending(r)))
        .collect()
}

fn pending(r: &tokio_postgres::Row) -> PendingPush {
    let priority: &str = r.get(8);
    PendingPush {
        message_id: r.get(0),
        sessions: sessions_from_json(r.get(1)),
        nonce: r.get::<_, Option<String>>(2).unwrap_or_default(),
        ciphertext: r.get::<_, Option<String>>(3).unwrap_or_default(),
        sender_pubkey: r.get(4),
        sender_session: r.get(5),
        sender_name: r.get(6),
        target: r.get(7),
        priority: Priority::parse(priority).unwrap_or_default(),
        sent_at: r.get(9),
    }
}

pub async fn pending_for_member(
    c: &impl GenericClient,
    member_id: &str,
    now_ms: i64,
    max_seq: i64,
) -> Result<Vec<PendingPush>, StoreError> {
    let st = c
        .prepare_cached(
            "SELECT m.id, r.sessions, r.nonce, r.ciphertext, m.sender_pubkey,
                    m.sender_session, m.sender_name, m.target, m.priority, m.sent_at
             FROM recipients r JOIN messages m ON m.seq = r.msg_seq
             WHERE r.member_id = $1 AND r.delivered_at IS NULL AND m.expires_at > $2
                 AND r.msg_seq <= $3
             ORDER BY m.sent_at, r.msg_seq",
        )
        .await?;
    let rows = c.query(&st, &[&member_id, &now_ms, &max_seq]).await?;
    Ok(rows.iter().map(pending).collect())
}

/// Deletes messages past their life, with their copies and receipts
/// (`ON DELETE CASCADE`).
pub async fn purge_expired(c: &impl GenericClient, now_ms: i64) -> Result<u64, StoreError> {
    Ok(
        c.execute("DELETE FROM messages WHERE expires_at <= $1", &[&now_ms])
            .await?,
    )
}
