//! Messages, their per-recipient copies and receipts, on PostgreSQL.
//! Same semantics as `store::sqlite::messages` (the shared suite checks
//! it); a message is found by its unique `id`, and a repeated send by the
//! unique (mesh, sender member, client id).

use claudemesh_protocol::wire::{Priority, RecipientState};
use deadpool_postgres::GenericClient;

use crate::store::states::{self, CopyRow, sessions_from_json, sessions_to_json};
use crate::store::{InsertOutcome, NewMessage, PendingPush, ReceiptRoute, StoreError};

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

/// Stores a message numbered `seq` (its `seq` and `message_id` are set
/// by the caller) and its copies, unless (mesh, sender member, client id)
/// is already there.
pub async fn insert(c: &impl GenericClient, m: &NewMessage) -> Result<InsertOutcome, StoreError> {
    if let Some(first) = find_by_client_id(c, &m.mesh_id, &m.sender.member_id, &m.client_id).await?
    {
        return duplicate(c, first).await;
    }
    let st = c
        .prepare_cached(
            "INSERT INTO messages (seq, id, mesh_id, sender_member_id, client_id, sender_pubkey,
                 sender_session, sender_name, target, priority, sent_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (mesh_id, sender_member_id, client_id) DO NOTHING",
        )
        .await?;
    let n = c
        .execute(
            &st,
            &[
                &m.seq,
                &m.message_id,
                &m.mesh_id,
                &m.sender.member_id,
                &m.client_id,
                &m.sender.pubkey,
                &m.sender.session_id,
                &m.sender.display_name,
                &m.target,
                &m.priority.as_str(),
                &m.sent_at,
                &m.expires_at,
            ],
        )
        .await?;
    if n == 0 {
        // Stored meanwhile by another node: answer as a repeat.
        let first = find_by_client_id(c, &m.mesh_id, &m.sender.member_id, &m.client_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a conflicting message vanished".into()))?;
        return duplicate(c, first).await;
    }
    let ord: Vec<i32> = (0..m.recipients.len())
        .map(|i| i32::try_from(i).unwrap_or(i32::MAX))
        .collect();
    let member_ids: Vec<&str> = m.recipients.iter().map(|r| r.member_id.as_str()).collect();
    let pubkeys: Vec<&str> = m.recipients.iter().map(|r| r.pubkey.as_str()).collect();
    let sessions: Vec<String> = m
        .recipients
        .iter()
        .map(|r| sessions_to_json(&r.sessions))
        .collect();
    let nonces: Vec<&str> = m.recipients.iter().map(|r| r.nonce.as_str()).collect();
    let cts: Vec<&str> = m.recipients.iter().map(|r| r.ciphertext.as_str()).collect();
    // All copies in one statement: one round trip whatever the fan-out.
    let st = c
        .prepare_cached(
            "INSERT INTO recipients (msg_seq, ord, member_id, pubkey, sessions, nonce, ciphertext)
             SELECT $1, * FROM UNNEST($2::INTEGER[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                                      $6::TEXT[], $7::TEXT[])",
        )
        .await?;
    c.execute(
        &st,
        &[
            &m.seq,
            &ord,
            &member_ids,
            &pubkeys,
            &sessions,
            &nonces,
            &cts,
        ],
    )
    .await?;
    Ok(InsertOutcome::Stored)
}

async fn duplicate(
    c: &impl GenericClient,
    message_id: String,
) -> Result<InsertOutcome, StoreError> {
    let recipients = recipient_states(c, &message_id).await?;
    Ok(InsertOutcome::Duplicate {
        message_id,
        recipients,
    })
}

/// Marks `member_id`'s copy delivered and drops its ciphertext. `Some`
/// only the first time, with where to send the receipt.
pub async fn mark_delivered(
    c: &impl GenericClient,
    message_id: &str,
    member_id: &str,
    at: i64,
) -> Result<Option<ReceiptRoute>, StoreError> {
    let st = c
        .prepare_cached(
            "UPDATE recipients r SET delivered_at = $3, nonce = NULL, ciphertext = NULL
             FROM messages m
             WHERE m.id = $1 AND r.msg_seq = m.seq AND r.member_id = $2
                 AND r.delivered_at IS NULL
             RETURNING m.mesh_id, m.sender_member_id, r.sessions",
        )
        .await?;
    let row = c.query_opt(&st, &[&message_id, &member_id, &at]).await?;
    Ok(row.map(|r| ReceiptRoute {
        mesh_id: r.get(0),
        sender_member_id: r.get(1),
        sessions: sessions_from_json(r.get(2)),
    }))
}

/// Records that `session_id` of `member_id` has seen the message. `Some`
/// only the first time, and only when the member is a recipient.
pub async fn mark_seen(
    c: &impl GenericClient,
    message_id: &str,
    member_id: &str,
    session_id: &str,
    at: i64,
) -> Result<Option<ReceiptRoute>, StoreError> {
    let st = c
        .prepare_cached(
            "SELECT m.seq, m.mesh_id, m.sender_member_id, r.sessions
             FROM messages m JOIN recipients r ON r.msg_seq = m.seq AND r.member_id = $2
             WHERE m.id = $1",
        )
        .await?;
    let Some(row) = c.query_opt(&st, &[&message_id, &member_id]).await? else {
        return Ok(None);
    };
    let seq: i64 = row.get(0);
    let st = c
        .prepare_cached(
            "INSERT INTO seen (msg_seq, member_id, session_id, at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .await?;
    if c.execute(&st, &[&seq, &member_id, &session_id, &at])
        .await?
        == 0
    {
        return Ok(None);
    }
    Ok(Some(ReceiptRoute {
        mesh_id: row.get(1),
        sender_member_id: row.get(2),
        sessions: sessions_from_json(row.get(3)),
    }))
}

/// Per-recipient states of a message (see [`states::recipient_states`]).
pub async fn recipient_states(
    c: &impl GenericClient,
    message_id: &str,
) -> Result<Vec<RecipientState>, StoreError> {
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
    Ok(states::recipient_states(copies, &seen))
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

/// Undelivered, unexpired copies for `member_id` numbered up to
/// `max_seq`, oldest first.
pub async fn copies_of(
    c: &impl GenericClient,
    seqs: &[i64],
    now_ms: i64,
) -> Result<Vec<(String, String, PendingPush)>, StoreError> {
    let st = c
        .prepare_cached(
            "SELECT m.id, r.sessions, r.nonce, r.ciphertext, m.sender_pubkey,
                    m.sender_session, m.sender_name, m.target, m.priority, m.sent_at,
                    m.mesh_id, r.member_id
             FROM recipients r JOIN messages m ON m.seq = r.msg_seq
             WHERE r.msg_seq = ANY($1) AND r.delivered_at IS NULL AND m.expires_at > $2
             ORDER BY r.msg_seq, r.ord",
        )
        .await?;
    let rows = c.query(&st, &[&seqs, &now_ms]).await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(10), r.get(11), pending(r)))
        .collect())
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
