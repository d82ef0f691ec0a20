//! Messages, their per-recipient copies, and receipts.
//!
//! Writes here run inside the group-commit writer's transaction; reads run
//! on the store's read connection.

use rusqlite::{Connection, OptionalExtension, params};

use claudemesh_protocol::wire::{DeliveryState, Priority, RecipientState};

use super::{NewMessage, PendingPush, ReceiptRoute, StoreError};

fn sessions_to_json(sessions: &[String]) -> String {
    serde_json::to_string(sessions).unwrap_or_else(|_| "[]".to_owned())
}

fn sessions_from_json(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

/// Result of storing a `send`.
#[derive(Debug, Clone)]
pub enum InsertOutcome {
    Stored,
    /// The sender already sent this `id`: here is the first message.
    Duplicate {
        message_id: String,
        recipients: Vec<RecipientState>,
    },
}

/// Stores a message and its copies, unless (mesh, sender member, client id)
/// is already there.
pub fn insert(conn: &Connection, m: &NewMessage) -> Result<InsertOutcome, StoreError> {
    let n = conn
        .prepare_cached(
            "INSERT INTO messages (id, mesh_id, sender_member_id, client_id, sender_pubkey,
                 sender_session, sender_name, target, priority, sent_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (mesh_id, sender_member_id, client_id) DO NOTHING",
        )?
        .execute(params![
            m.message_id,
            m.mesh_id,
            m.sender.member_id,
            m.client_id,
            m.sender.pubkey,
            m.sender.session_id,
            m.sender.display_name,
            m.target,
            m.priority.as_str(),
            m.sent_at,
            m.expires_at
        ])?;
    if n == 0 {
        return match find_by_client_id(conn, &m.mesh_id, &m.sender.member_id, &m.client_id)? {
            Some(message_id) => {
                let recipients = recipient_states(conn, &message_id)?;
                Ok(InsertOutcome::Duplicate {
                    message_id,
                    recipients,
                })
            }
            None => Err(StoreError::Corrupt(
                "a send id conflicted but its message is missing".into(),
            )),
        };
    }
    let mut stmt = conn.prepare_cached(
        "INSERT INTO recipients (message_id, member_id, pubkey, sessions, nonce, ciphertext)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for r in &m.recipients {
        stmt.execute(params![
            m.message_id,
            r.member_id,
            r.pubkey,
            sessions_to_json(&r.sessions),
            r.nonce,
            r.ciphertext
        ])?;
    }
    Ok(InsertOutcome::Stored)
}

/// The message a sender already sent with this client id.
pub fn find_by_client_id(
    conn: &Connection,
    mesh_id: &str,
    sender_member_id: &str,
    client_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT id FROM messages WHERE mesh_id = ?1 AND sender_member_id = ?2 AND client_id = ?3",
        )?
        .query_row([mesh_id, sender_member_id, client_id], |r| r.get(0))
        .optional()?)
}

fn route_for(
    conn: &Connection,
    message_id: &str,
    sessions: String,
) -> Result<Option<ReceiptRoute>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT mesh_id, sender_member_id FROM messages WHERE id = ?1")?
        .query_row([message_id], |r| {
            Ok(ReceiptRoute {
                mesh_id: r.get(0)?,
                sender_member_id: r.get(1)?,
                sessions: sessions_from_json(&sessions),
            })
        })
        .optional()?)
}

/// Marks `member_id`'s copy delivered (a `client_ack`) and drops its
/// ciphertext. `Some` only the first time, with where to send the receipt.
pub fn mark_delivered(
    conn: &Connection,
    message_id: &str,
    member_id: &str,
    at: i64,
) -> Result<Option<ReceiptRoute>, StoreError> {
    let sessions: Option<String> = conn
        .prepare_cached(
            "UPDATE recipients SET delivered_at = ?3, nonce = NULL, ciphertext = NULL
             WHERE message_id = ?1 AND member_id = ?2 AND delivered_at IS NULL
             RETURNING sessions",
        )?
        .query_row(params![message_id, member_id, at], |r| r.get(0))
        .optional()?;
    match sessions {
        Some(s) => route_for(conn, message_id, s),
        None => Ok(None),
    }
}

/// Records that `session_id` of `member_id` has seen the message. `Some`
/// only the first time, and only when the member is a recipient.
pub fn mark_seen(
    conn: &Connection,
    message_id: &str,
    member_id: &str,
    session_id: &str,
    at: i64,
) -> Result<Option<ReceiptRoute>, StoreError> {
    let sessions: Option<String> = conn
        .prepare_cached("SELECT sessions FROM recipients WHERE message_id = ?1 AND member_id = ?2")?
        .query_row([message_id, member_id], |r| r.get(0))
        .optional()?;
    let Some(sessions) = sessions else {
        return Ok(None);
    };
    let n = conn
        .prepare_cached(
            "INSERT INTO seen (message_id, member_id, session_id, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![message_id, member_id, session_id, at])?;
    if n == 0 {
        return Ok(None);
    }
    route_for(conn, message_id, sessions)
}

/// Per-recipient states of a message, as `ack` (for a duplicate) and
/// `message_status_result` report them. A copy addressed to named sessions
/// gives one entry per session; a copy for the whole member gives one entry
/// without `sessionId`, or one per session that has seen it.
pub fn recipient_states(
    conn: &Connection,
    message_id: &str,
) -> Result<Vec<RecipientState>, StoreError> {
    let mut seen_stmt =
        conn.prepare_cached("SELECT member_id, session_id FROM seen WHERE message_id = ?1")?;
    let seen: Vec<(String, String)> = seen_stmt
        .query_map([message_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT member_id, pubkey, sessions, delivered_at IS NOT NULL
         FROM recipients WHERE message_id = ?1 ORDER BY rowid",
    )?;
    let rows = stmt.query_map([message_id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, bool>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (member_id, pubkey, sessions, delivered) = row?;
        let base = if delivered {
            DeliveryState::Delivered
        } else {
            DeliveryState::Queued
        };
        let seen_by: Vec<&str> = seen
            .iter()
            .filter(|(m, _)| *m == member_id)
            .map(|(_, s)| s.as_str())
            .collect();
        let sessions = sessions_from_json(&sessions);
        if sessions.is_empty() {
            if seen_by.is_empty() {
                out.push(RecipientState {
                    member: pubkey.clone(),
                    session_id: None,
                    state: base,
                });
            }
            for s in seen_by {
                out.push(RecipientState {
                    member: pubkey.clone(),
                    session_id: Some(s.to_owned()),
                    state: DeliveryState::Seen,
                });
            }
        } else {
            for s in sessions {
                let state = if seen_by.contains(&s.as_str()) {
                    DeliveryState::Seen
                } else {
                    base
                };
                out.push(RecipientState {
                    member: pubkey.clone(),
                    session_id: Some(s),
                    state,
                });
            }
        }
    }
    Ok(out)
}

/// Who sent a message and who received it, for access checks on
/// `message_status`.
pub fn involves_member(
    conn: &Connection,
    message_id: &str,
    mesh_id: &str,
    member_id: &str,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM messages m WHERE m.id = ?1 AND m.mesh_id = ?2 AND (m.sender_member_id = ?3
               OR EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.member_id = ?3))",
        )?
        .query_row([message_id, mesh_id, member_id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Undelivered, unexpired copies for `member_id`, oldest first.
pub fn pending_for_member(
    conn: &Connection,
    member_id: &str,
    now_ms: i64,
) -> Result<Vec<PendingPush>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.message_id, r.sessions, r.nonce, r.ciphertext, m.sender_pubkey,
                m.sender_session, m.sender_name, m.target, m.priority, m.sent_at
         FROM recipients r JOIN messages m ON m.id = r.message_id
         WHERE r.member_id = ?1 AND r.delivered_at IS NULL AND m.expires_at > ?2
         ORDER BY m.sent_at, r.rowid",
    )?;
    let rows = stmt.query_map(params![member_id, now_ms], |r| {
        let priority: String = r.get(8)?;
        Ok(PendingPush {
            message_id: r.get(0)?,
            sessions: sessions_from_json(&r.get::<_, String>(1)?),
            nonce: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
            ciphertext: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
            sender_pubkey: r.get(4)?,
            sender_session: r.get(5)?,
            sender_name: r.get(6)?,
            target: r.get(7)?,
            priority: Priority::parse(&priority).unwrap_or_default(),
            sent_at: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Undelivered copies in the database (the `queue_depth` gauge).
pub fn queue_depth(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT COUNT(*) FROM recipients WHERE delivered_at IS NULL")?
        .query_row([], |r| r.get(0))?)
}

/// Deletes messages past their 7-day life, with their copies and receipts.
pub fn purge_expired(conn: &Connection, now_ms: i64) -> Result<usize, StoreError> {
    conn.execute(
        "DELETE FROM recipients WHERE message_id IN (SELECT id FROM messages WHERE expires_at <= ?1)",
        [now_ms],
    )?;
    conn.execute(
        "DELETE FROM seen WHERE message_id IN (SELECT id FROM messages WHERE expires_at <= ?1)",
        [now_ms],
    )?;
    Ok(conn.execute("DELETE FROM messages WHERE expires_at <= ?1", [now_ms])?)
}
