//! Messages, their per-recipient copies, and receipts.
//!
//! Writes here run inside the group-commit writer's transaction; reads run
//! on the store's read connection.

use rusqlite::{Connection, OptionalExtension, params};

use claudemesh_protocol::wire::{Priority, RecipientState};

use crate::store::states::{CopyRow, sessions_from_json, sessions_to_json};
use crate::store::{InsertOutcome, NewMessage, PendingPush, ReceiptRoute, StoreError};

/// The send-id dedupe key: FNV-1a (64-bit) of (mesh, sender member, client
/// id). Stored in the database, so it must never change: it is written out
/// here rather than taken from `std`, whose hashers are not stable.
pub fn dedupe_key(mesh_id: &str, sender_member_id: &str, client_id: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in [mesh_id, sender_member_id, client_id].iter().enumerate() {
        if i > 0 {
            // A separator no id contains, so ("a", "bc") and ("ab", "c") differ.
            h ^= 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h as i64
}

/// Fills the dedupe keys of messages carried over from schema version 1.
pub(crate) fn fill_dedupe_keys(conn: &Connection) -> Result<(), StoreError> {
    let rows: Vec<(i64, String, String, String)> = conn
        .prepare("SELECT seq, mesh_id, sender_member_id, client_id FROM messages")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare("UPDATE messages SET dedupe = ?2 WHERE seq = ?1")?;
    for (seq, mesh, member, client) in rows {
        stmt.execute(params![seq, dedupe_key(&mesh, &member, &client)])?;
    }
    Ok(())
}

/// The highest message sequence number stored (0 when there is none).
pub fn max_seq(conn: &Connection) -> Result<i64, StoreError> {
    Ok(
        conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM messages", [], |r| {
            r.get(0)
        })?,
    )
}

/// A stored message found by its id.
struct Found {
    seq: i64,
    mesh_id: String,
    sender_member_id: String,
}

/// Finds a message by id: by the sequence number in the id (a rowid
/// lookup, checked against the full stored id), else among the ids
/// carried over from schema version 1.
fn find(conn: &Connection, message_id: &str) -> Result<Option<Found>, StoreError> {
    let mut by_seq = conn.prepare_cached(
        "SELECT seq, mesh_id, sender_member_id FROM messages WHERE seq = ?1 AND id = ?2",
    )?;
    let read = |r: &rusqlite::Row<'_>| {
        Ok(Found {
            seq: r.get(0)?,
            mesh_id: r.get(1)?,
            sender_member_id: r.get(2)?,
        })
    };
    if let Some(seq) = crate::ids::seq_in_message_id(message_id)
        && let Some(found) = by_seq
            .query_row(params![seq, message_id], read)
            .optional()?
    {
        return Ok(Some(found));
    }
    let legacy: Option<i64> = conn
        .prepare_cached("SELECT seq FROM message_legacy_ids WHERE id = ?1")?
        .query_row([message_id], |r| r.get(0))
        .optional()?;
    match legacy {
        Some(seq) => Ok(by_seq
            .query_row(params![seq, message_id], read)
            .optional()?),
        None => Ok(None),
    }
}

/// Stores a message (as sequence number `seq`, which its id ends with)
/// and its copies, unless (mesh, sender member, client id) is already there.
pub fn insert(conn: &Connection, seq: i64, m: &NewMessage) -> Result<InsertOutcome, StoreError> {
    let dedupe = dedupe_key(&m.mesh_id, &m.sender.member_id, &m.client_id);
    if let Some(message_id) =
        find_by_key(conn, dedupe, &m.mesh_id, &m.sender.member_id, &m.client_id)?
    {
        let recipients = recipient_states(conn, &message_id)?;
        return Ok(InsertOutcome::Duplicate {
            message_id,
            recipients,
        });
    }
    conn.prepare_cached(
        "INSERT INTO messages (seq, id, dedupe, mesh_id, sender_member_id, client_id, sender_pubkey,
             sender_session, sender_name, target, priority, sent_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        seq,
        m.message_id,
        dedupe,
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
    let mut stmt = conn.prepare_cached(
        "INSERT INTO recipients (msg_seq, member_id, pubkey, sessions, nonce, ciphertext)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for r in &m.recipients {
        stmt.execute(params![
            seq,
            r.member_id,
            r.pubkey,
            sessions_to_json(&r.sessions),
            r.nonce,
            r.ciphertext
        ])?;
    }
    Ok(InsertOutcome::Stored)
}

fn find_by_key(
    conn: &Connection,
    dedupe: i64,
    mesh_id: &str,
    sender_member_id: &str,
    client_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT id FROM messages WHERE dedupe = ?1 AND mesh_id = ?2
                 AND sender_member_id = ?3 AND client_id = ?4",
        )?
        .query_row(params![dedupe, mesh_id, sender_member_id, client_id], |r| {
            r.get(0)
        })
        .optional()?)
}

/// The message a sender already sent with this client id.
pub fn find_by_client_id(
    conn: &Connection,
    mesh_id: &str,
    sender_member_id: &str,
    client_id: &str,
) -> Result<Option<String>, StoreError> {
    let dedupe = dedupe_key(mesh_id, sender_member_id, client_id);
    find_by_key(conn, dedupe, mesh_id, sender_member_id, client_id)
}

fn route(found: Found, sessions: &str) -> ReceiptRoute {
    ReceiptRoute {
        mesh_id: found.mesh_id,
        sender_member_id: found.sender_member_id,
        sessions: sessions_from_json(sessions),
    }
}

/// Marks `member_id`'s copy delivered (a `client_ack`) and drops its
/// ciphertext. `Some` only the first time, with where to send the receipt.
pub fn mark_delivered(
    conn: &Connection,
    message_id: &str,
    member_id: &str,
    at: i64,
) -> Result<Option<ReceiptRoute>, StoreError> {
    let Some(found) = find(conn, message_id)? else {
        return Ok(None);
    };
    let sessions: Option<String> = conn
        .prepare_cached(
            "UPDATE recipients SET delivered_at = ?3, nonce = NULL, ciphertext = NULL
             WHERE msg_seq = ?1 AND member_id = ?2 AND delivered_at IS NULL
             RETURNING sessions",
        )?
        .query_row(params![found.seq, member_id, at], |r| r.get(0))
        .optional()?;
    Ok(sessions.map(|s| route(found, &s)))
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
    let Some(found) = find(conn, message_id)? else {
        return Ok(None);
    };
    let sessions: Option<String> = conn
        .prepare_cached("SELECT sessions FROM recipients WHERE msg_seq = ?1 AND member_id = ?2")?
        .query_row(params![found.seq, member_id], |r| r.get(0))
        .optional()?;
    let Some(sessions) = sessions else {
        return Ok(None);
    };
    let n = conn
        .prepare_cached(
            "INSERT INTO seen (msg_seq, member_id, session_id, at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![found.seq, member_id, session_id, at])?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(route(found, &sessions)))
}

/// Per-recipient states of a message, as `ack` (for a duplicate) and
/// `message_status_result` report them. A copy addressed to named sessions
/// gives one entry per session; a copy for the whole member gives one entry
/// without `sessionId`, or one per session that has seen it.
pub fn recipient_states(
    conn: &Connection,
    message_id: &str,
) -> Result<Vec<RecipientState>, StoreError> {
    let Some(found) = find(conn, message_id)? else {
        return Ok(Vec::new());
    };
    let mut seen_stmt =
        conn.prepare_cached("SELECT member_id, session_id FROM seen WHERE msg_seq = ?1")?;
    let seen: Vec<(String, String)> = seen_stmt
        .query_map([found.seq], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT member_id, pubkey, sessions, delivered_at IS NOT NULL
         FROM recipients WHERE msg_seq = ?1 ORDER BY rowid",
    )?;
    let rows = stmt.query_map([found.seq], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, bool>(3)?,
        ))
    })?;
    let copies = rows
        .map(|row| {
            row.map(|(member_id, pubkey, sessions, delivered)| CopyRow {
                member_id,
                pubkey,
                sessions: sessions_from_json(&sessions),
                delivered,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(crate::store::states::recipient_states(copies, &seen))
}

/// Who sent a message and who received it, for access checks on
/// `message_status`.
pub fn involves_member(
    conn: &Connection,
    message_id: &str,
    mesh_id: &str,
    member_id: &str,
) -> Result<bool, StoreError> {
    let Some(found) = find(conn, message_id)? else {
        return Ok(false);
    };
    if found.mesh_id != mesh_id {
        return Ok(false);
    }
    if found.sender_member_id == member_id {
        return Ok(true);
    }
    Ok(conn
        .prepare_cached("SELECT 1 FROM recipients WHERE msg_seq = ?1 AND member_id = ?2")?
        .query_row(params![found.seq, member_id], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Undelivered, unexpired copies for `member_id` numbered up to `max_seq`,
/// oldest first.
pub fn pending_for_member(
    conn: &Connection,
    member_id: &str,
    now_ms: i64,
    max_seq: i64,
) -> Result<Vec<PendingPush>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.id, r.sessions, r.nonce, r.ciphertext, m.sender_pubkey,
                m.sender_session, m.sender_name, m.target, m.priority, m.sent_at
         FROM recipients r JOIN messages m ON m.seq = r.msg_seq
         WHERE r.member_id = ?1 AND r.delivered_at IS NULL AND m.expires_at > ?2
             AND r.msg_seq <= ?3
         ORDER BY m.sent_at, r.rowid",
    )?;
    let rows = stmt.query_map(params![member_id, now_ms, max_seq], |r| {
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
///
/// There is no expiry index (one less B-tree insert per message): message
/// sequence numbers grow with time, so this walks the rowid range from the
/// oldest message to the first one still alive and deletes everything
/// before it. (A message stored while the clock stood further back than an
/// older one waits for that older one; it is never pushed once expired.)
pub fn purge_expired(conn: &Connection, now_ms: i64) -> Result<usize, StoreError> {
    let alive: Option<i64> = conn
        .prepare_cached("SELECT seq FROM messages WHERE expires_at > ?1 ORDER BY seq LIMIT 1")?
        .query_row([now_ms], |r| r.get(0))
        .optional()?;
    let cutoff = match alive {
        Some(seq) => seq,
        None => max_seq(conn)?.saturating_add(1),
    };
    conn.execute("DELETE FROM recipients WHERE msg_seq < ?1", [cutoff])?;
    conn.execute("DELETE FROM seen WHERE msg_seq < ?1", [cutoff])?;
    conn.execute("DELETE FROM message_legacy_ids WHERE seq < ?1", [cutoff])?;
    Ok(conn.execute("DELETE FROM messages WHERE seq < ?1", [cutoff])?)
}
