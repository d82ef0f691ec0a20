//! The outbox: a send is a row here before the client hears `accepted`,
//! and stays `pending` until its broker acknowledges it.

use claudemesh_protocol::wire::{DeliveryState, Priority, RecipientState};
use rusqlite::{OptionalExtension, Row, params};

use super::{Db, StoreResult, corrupt, count};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxState {
    /// Not yet acknowledged by the broker: sent (again) on every connect.
    Pending,
    /// The broker stored it; `broker_message_id` is known.
    Acked,
    /// The broker refused it for good (`unknown_target`, `too_large`, …).
    Failed,
}

impl OutboxState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Acked => "acked",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "acked" => Some(Self::Acked),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// The local id, also the broker `send.id` (so a resend is a repeat).
    pub id: String,
    pub mesh_id: String,
    /// The sending session.
    pub session_id: String,
    pub to: String,
    pub priority: Priority,
    /// The plaintext message body (JSON); `None` once acked or failed.
    pub body: Option<String>,
    /// Recipient members named by a `missing_envelope` error, sealed to
    /// in addition to those the target resolves to.
    pub extra_members: Vec<String>,
    pub state: OutboxState,
    pub broker_message_id: Option<String>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: i64,
    /// The last change (insert, transmission, error).
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientRow {
    pub member: String,
    /// Empty when the message waits for a member with no live session.
    pub session_id: String,
    pub state: DeliveryState,
}

const COLUMNS: &str = "id, mesh_id, session_id, to_target, priority, body, extra_members, state,
    broker_message_id, attempts, last_error, created_at, updated_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<(OutboxRow, String, String, String)> {
    Ok((
        OutboxRow {
            id: r.get(0)?,
            mesh_id: r.get(1)?,
            session_id: r.get(2)?,
            to: r.get(3)?,
            priority: Priority::Next,
            body: r.get(5)?,
            extra_members: Vec::new(),
            state: OutboxState::Pending,
            broker_message_id: r.get(8)?,
            attempts: count(r.get(9)?),
            last_error: r.get(10)?,
            created_at: r.get(11)?,
            updated_at: r.get(12)?,
        },
        r.get(4)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn finish(raw: (OutboxRow, String, String, String)) -> StoreResult<OutboxRow> {
    let (mut row, priority, extra, state) = raw;
    row.priority = Priority::parse(&priority).ok_or_else(|| corrupt("priority", &priority))?;
    row.extra_members = serde_json::from_str(&extra).map_err(|_| corrupt("members", &extra))?;
    row.state = OutboxState::parse(&state).ok_or_else(|| corrupt("outbox state", &state))?;
    Ok(row)
}

impl Db {
    pub fn insert_outbox(&self, row: &OutboxRow) -> StoreResult<()> {
        let extra = serde_json::to_string(&row.extra_members).unwrap_or_else(|_| "[]".into());
        self.conn.execute(
            "INSERT INTO outbox (id, mesh_id, session_id, to_target, priority, body, extra_members,
                 state, broker_message_id, attempts, last_error, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                row.id,
                row.mesh_id,
                row.session_id,
                row.to,
                row.priority.as_str(),
                row.body,
                extra,
                row.state.as_str(),
                row.broker_message_id,
                i64::from(row.attempts),
                row.last_error,
                row.created_at,
                row.updated_at
            ],
        )?;
        Ok(())
    }

    pub fn outbox_get(&self, id: &str) -> StoreResult<Option<OutboxRow>> {
        let raw = self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM outbox WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()?;
        raw.map(finish).transpose()
    }

    /// By local id or by the broker's `messageId`: clients may hold either.
    pub fn outbox_find(&self, any_id: &str) -> StoreResult<Option<OutboxRow>> {
        if let Some(row) = self.outbox_get(any_id)? {
            return Ok(Some(row));
        }
        let raw = self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM outbox WHERE broker_message_id = ?1 LIMIT 1"),
                [any_id],
                from_row,
            )
            .optional()?;
        raw.map(finish).transpose()
    }

    /// Every message of `mesh_id` still waiting for its broker, oldest first.
    pub fn outbox_pending(&self, mesh_id: &str) -> StoreResult<Vec<OutboxRow>> {
        self.outbox_query(
            &format!(
                "SELECT {COLUMNS} FROM outbox WHERE mesh_id = ?1 AND state = 'pending'
                 ORDER BY created_at, rowid"
            ),
            &[&mesh_id],
        )
    }

    /// Pending and failed messages of every mesh: what `list_outbox` shows.
    pub fn outbox_stuck(&self) -> StoreResult<Vec<OutboxRow>> {
        self.outbox_query(
            &format!(
                "SELECT {COLUMNS} FROM outbox WHERE state IN ('pending', 'failed')
                 ORDER BY created_at, rowid"
            ),
            &[],
        )
    }

    fn outbox_query(
        &self,
        sql: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> StoreResult<Vec<OutboxRow>> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map(args, from_row)?;
        let mut out = Vec::new();
        for raw in rows {
            out.push(finish(raw?)?);
        }
        Ok(out)
    }

    /// How many messages sent by `session_id` wait for their broker.
    pub fn outbox_pending_for_session(&self, session_id: &str) -> StoreResult<u32> {
        self.count_pending("session_id", session_id)
    }

    /// How many messages of `mesh_id` wait for their broker.
    pub fn outbox_depth(&self, mesh_id: &str) -> StoreResult<u32> {
        self.count_pending("mesh_id", mesh_id)
    }

    /// Pending rows whose `column` (one of ours, never user input) is `value`.
    fn count_pending(&self, column: &'static str, value: &str) -> StoreResult<u32> {
        let n: i64 = self.conn.query_row(
            &format!("SELECT COUNT(*) FROM outbox WHERE {column} = ?1 AND state = 'pending'"),
            [value],
            |r| r.get(0),
        )?;
        Ok(count(n))
    }

    /// Counts one more transmission of a pending message.
    pub fn outbox_attempted(&self, id: &str, now: i64) -> StoreResult<()> {
        self.conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, updated_at = ?2
             WHERE id = ?1 AND state = 'pending'",
            params![id, now],
        )?;
        Ok(())
    }

    /// Records the broker's ack: the message is stored there, the
    /// plaintext is no longer needed here. Returns false when the row was
    /// no longer pending (a repeat ack).
    pub fn outbox_acked(
        &mut self,
        id: &str,
        broker_message_id: &str,
        recipients: &[RecipientState],
        now: i64,
    ) -> StoreResult<bool> {
        let tx = self.conn.savepoint()?;
        let changed = tx.execute(
            "UPDATE outbox SET state = 'acked', broker_message_id = ?2, body = NULL,
                 last_error = NULL, updated_at = ?3
             WHERE id = ?1 AND state = 'pending'",
            params![id, broker_message_id, now],
        )?;
        if changed > 0 {
            for r in recipients {
                upsert_recipient(&tx, id, &r.member, r.session_id.as_deref(), r.state)?;
            }
        }
        tx.commit()?;
        Ok(changed > 0)
    }

    /// The broker refused the message for good.
    pub fn outbox_failed(&self, id: &str, error: &str, now: i64) -> StoreResult<()> {
        self.conn.execute(
            "UPDATE outbox SET state = 'failed', body = NULL, last_error = ?2, updated_at = ?3
             WHERE id = ?1 AND state = 'pending'",
            params![id, error, now],
        )?;
        Ok(())
    }

    /// A pending message the broker refused while its sender still waited
    /// for the answer: the sender gets the error, so nothing is kept.
    pub fn outbox_withdraw(&self, id: &str) -> StoreResult<()> {
        self.conn.execute(
            "DELETE FROM outbox WHERE id = ?1 AND state = 'pending'",
            [id],
        )?;
        Ok(())
    }

    /// A transient error: kept pending, the error shown in `list_outbox`.
    pub fn outbox_note_error(
        &self,
        id: &str,
        error: &str,
        extra_members: Option<&[String]>,
        now: i64,
    ) -> StoreResult<()> {
        match extra_members {
            Some(members) => {
                let json = serde_json::to_string(members).unwrap_or_else(|_| "[]".into());
                self.conn.execute(
                    "UPDATE outbox SET last_error = ?2, extra_members = ?3, updated_at = ?4
                     WHERE id = ?1 AND state = 'pending'",
                    params![id, error, json, now],
                )?;
            }
            None => {
                self.conn.execute(
                    "UPDATE outbox SET last_error = ?2, updated_at = ?3
                     WHERE id = ?1 AND state = 'pending'",
                    params![id, error, now],
                )?;
            }
        }
        Ok(())
    }

    /// A relayed receipt for a message this daemon sent. Returns the
    /// outbox row it belongs to (for telling the sending session).
    pub fn outbox_receipt(
        &mut self,
        broker_message_id: &str,
        member: &str,
        session_id: &str,
        state: DeliveryState,
    ) -> StoreResult<Option<OutboxRow>> {
        let Some(row) = self.outbox_find(broker_message_id)? else {
            return Ok(None);
        };
        let tx = self.conn.savepoint()?;
        upsert_recipient(&tx, &row.id, member, Some(session_id), state)?;
        // The member's queued placeholder (no session yet) is now moot.
        if !session_id.is_empty() {
            tx.execute(
                "DELETE FROM recipients WHERE outbox_id = ?1 AND member = ?2 AND session_id = ''",
                params![row.id, member],
            )?;
        }
        tx.commit()?;
        Ok(Some(row))
    }

    pub fn outbox_recipients(&self, id: &str) -> StoreResult<Vec<RecipientRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT member, session_id, state FROM recipients WHERE outbox_id = ?1
             ORDER BY member, session_id",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (member, session_id, state) = row?;
            let state = DeliveryState::parse(&state).ok_or_else(|| corrupt("state", &state))?;
            out.push(RecipientRow {
                member,
                session_id,
                state,
            });
        }
        Ok(out)
    }

    /// Replaces the recipients with the broker's authoritative answer.
    pub fn outbox_set_recipients(
        &mut self,
        id: &str,
        recipients: &[RecipientState],
    ) -> StoreResult<()> {
        let tx = self.conn.savepoint()?;
        for r in recipients {
            upsert_recipient(&tx, id, &r.member, r.session_id.as_deref(), r.state)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Drops acknowledged or failed messages older than `before`.
    pub fn purge_outbox(&self, before: i64) -> StoreResult<usize> {
        Ok(self.conn.execute(
            "DELETE FROM outbox WHERE state != 'pending' AND updated_at < ?1",
            [before],
        )?)
    }
}

/// States only move forward (queued → delivered → seen).
fn upsert_recipient(
    tx: &rusqlite::Connection,
    outbox_id: &str,
    member: &str,
    session_id: Option<&str>,
    state: DeliveryState,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO recipients (outbox_id, member, session_id, state) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (outbox_id, member, session_id) DO UPDATE SET state =
             CASE WHEN (CASE excluded.state WHEN 'seen' THEN 2 WHEN 'delivered' THEN 1 ELSE 0 END)
                     > (CASE recipients.state WHEN 'seen' THEN 2 WHEN 'delivered' THEN 1 ELSE 0 END)
                  THEN excluded.state ELSE recipients.state END",
        params![outbox_id, member, session_id.unwrap_or(""), state.as_str()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn row(id: &str) -> OutboxRow {
        OutboxRow {
            id: id.into(),
            mesh_id: "mesh".into(),
            session_id: "s1".into(),
            to: "*".into(),
            priority: Priority::Now,
            body: Some(r#"{"text":"hi"}"#.into()),
            extra_members: vec![],
            state: OutboxState::Pending,
            broker_message_id: None,
            attempts: 0,
            last_error: None,
            created_at: 10,
            updated_at: 10,
        }
    }

    #[test]
    fn pending_then_acked_then_receipts_move_forward_only() {
        let store = Store::open_in_memory().unwrap();
        store
            .call_sync(|db| {
                db.insert_outbox(&row("a"))?;
                db.insert_outbox(&row("b"))?;
                assert_eq!(db.outbox_pending("mesh")?.len(), 2);
                assert_eq!(db.outbox_depth("mesh")?, 2);
                db.outbox_attempted("a", 11)?;
                let rs = [RecipientState {
                    member: "pk".into(),
                    session_id: Some("x".into()),
                    state: DeliveryState::Delivered,
                }];
                assert!(db.outbox_acked("a", "bm1", &rs, 12)?);
                assert!(!db.outbox_acked("a", "bm1", &rs, 13)?);
                let a = db.outbox_find("bm1")?.unwrap();
                assert_eq!((a.state, a.body, a.attempts), (OutboxState::Acked, None, 1));
                db.outbox_receipt("bm1", "pk", "x", DeliveryState::Seen)?;
                db.outbox_receipt("bm1", "pk", "x", DeliveryState::Delivered)?;
                let r = db.outbox_recipients("a")?;
                assert_eq!(r[0].state, DeliveryState::Seen);
                db.outbox_note_error("b", "rate_limited", Some(&["pk2".into()]), 14)?;
                db.outbox_failed("b", "unknown_target: nobody", 15)?;
                let stuck = db.outbox_stuck()?;
                assert_eq!(stuck.len(), 1);
                assert_eq!(stuck[0].extra_members, vec!["pk2".to_owned()]);
                assert_eq!(db.outbox_depth("mesh")?, 0);
                assert_eq!(db.purge_outbox(100)?, 2);
                Ok(())
            })
            .unwrap();
    }
}
