//! The inbox: a push is decrypted and committed here before the broker
//! hears `client_ack`, with one delivery row per recipient session so that
//! each session is handed each message once.

use claudemesh_protocol::wire::{MessageSender, Priority};
use rusqlite::{Row, params};

use super::{Db, StoreResult, corrupt, count};

#[derive(Debug, Clone, PartialEq)]
pub struct InboxRow {
    pub mesh_id: String,
    pub message_id: String,
    pub from: MessageSender,
    pub to: String,
    pub priority: Priority,
    pub text: String,
    pub sent_at: i64,
    pub received_at: i64,
}

/// A `seen` receipt owed to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptDue {
    pub mesh_id: String,
    pub message_id: String,
    pub session_id: String,
}

/// Received messages older than this are deleted, seen or not.
pub const INBOX_RETENTION_MS: i64 = 30 * 24 * 60 * 60 * 1000;
/// Seen messages older than this are deleted.
pub const SEEN_RETENTION_MS: i64 = 7 * 24 * 60 * 60 * 1000;

const SELECT: &str = "SELECT i.mesh_id, i.message_id, i.from_member, i.from_session, i.from_name,
    i.to_target, i.priority, i.body, i.sent_at, i.received_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<(InboxRow, String)> {
    Ok((
        InboxRow {
            mesh_id: r.get(0)?,
            message_id: r.get(1)?,
            from: MessageSender {
                member: r.get(2)?,
                session_id: r.get(3)?,
                display_name: r.get(4)?,
            },
            to: r.get(5)?,
            priority: Priority::Next,
            text: r.get(7)?,
            sent_at: r.get(8)?,
            received_at: r.get(9)?,
        },
        r.get(6)?,
    ))
}

fn finish(raw: (InboxRow, String)) -> StoreResult<InboxRow> {
    let (mut row, priority) = raw;
    row.priority = Priority::parse(&priority).ok_or_else(|| corrupt("priority", &priority))?;
    Ok(row)
}

impl Db {
    pub fn inbox_has(&self, mesh_id: &str, message_id: &str) -> StoreResult<bool> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM inbox WHERE mesh_id = ?1 AND message_id = ?2",
            params![mesh_id, message_id],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Stores a message for `sessions` (or, when empty, for whichever
    /// session attaches next). Returns false, changing nothing, for a
    /// repeat.
    pub fn inbox_insert(&mut self, row: &InboxRow, sessions: &[String]) -> StoreResult<bool> {
        let tx = self.conn.savepoint()?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO inbox (mesh_id, message_id, from_member, from_session,
                 from_name, to_target, priority, body, sent_at, received_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                row.mesh_id,
                row.message_id,
                row.from.member,
                row.from.session_id,
                row.from.display_name,
                row.to,
                row.priority.as_str(),
                row.text,
                row.sent_at,
                row.received_at
            ],
        )?;
        if inserted == 0 {
            return Ok(false);
        }
        if sessions.is_empty() {
            tx.execute(
                "INSERT OR IGNORE INTO unassigned (mesh_id, message_id) VALUES (?1, ?2)",
                params![row.mesh_id, row.message_id],
            )?;
        }
        for session in sessions {
            tx.execute(
                "INSERT OR IGNORE INTO deliveries (mesh_id, message_id, session_id) VALUES (?1, ?2, ?3)",
                params![row.mesh_id, row.message_id, session],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// Hands the mesh's messages that had no session to `session_id`.
    pub fn assign_unassigned(&mut self, mesh_id: &str, session_id: &str) -> StoreResult<usize> {
        let tx = self.conn.savepoint()?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO deliveries (mesh_id, message_id, session_id, from_pool)
             SELECT mesh_id, message_id, ?2, 1 FROM unassigned WHERE mesh_id = ?1",
            params![mesh_id, session_id],
        )?;
        tx.execute("DELETE FROM unassigned WHERE mesh_id = ?1", [mesh_id])?;
        tx.commit()?;
        Ok(n)
    }

    /// The session's messages that may be pushed, oldest first: never
    /// shown and never pushed (a message is pushed at most once).
    pub fn inbox_unpushed(&self, session_id: &str) -> StoreResult<Vec<InboxRow>> {
        // `?2` is bound for the shared query; it plays no part here.
        self.inbox_select(
            session_id,
            "d.pushed_at IS NULL AND ?2 IS NOT NULL",
            i64::MAX,
        )
    }

    /// The session's unread messages, oldest first: not seen, and not
    /// pushed after `pushed_before` (a push still waiting for the
    /// transcript to confirm it is held back from the other paths).
    pub fn inbox_unread(&self, session_id: &str, pushed_before: i64) -> StoreResult<Vec<InboxRow>> {
        self.inbox_select(
            session_id,
            "(d.pushed_at IS NULL OR d.pushed_at <= ?2)",
            pushed_before,
        )
    }

    fn inbox_select(
        &self,
        session_id: &str,
        condition: &str,
        pushed_before: i64,
    ) -> StoreResult<Vec<InboxRow>> {
        let mut stmt = self.conn.prepare(&format!(
            "{SELECT} FROM deliveries d JOIN inbox i
                 ON i.mesh_id = d.mesh_id AND i.message_id = d.message_id
             WHERE d.session_id = ?1 AND d.seen_at IS NULL AND {condition}
             ORDER BY i.received_at, i.rowid"
        ))?;
        let rows = stmt.query_map(params![session_id, pushed_before], from_row)?;
        let mut out = Vec::new();
        for raw in rows {
            out.push(finish(raw?)?);
        }
        Ok(out)
    }

    /// When the session's latest push that is still unseen was made, if it
    /// was made after `since` and at or before `until`.
    pub fn inbox_latest_unseen_push(
        &self,
        session_id: &str,
        since: i64,
        until: i64,
    ) -> StoreResult<Option<i64>> {
        Ok(self.conn.query_row(
            "SELECT MAX(pushed_at) FROM deliveries
             WHERE session_id = ?1 AND seen_at IS NULL AND pushed_at > ?2 AND pushed_at <= ?3",
            params![session_id, since, until],
            |r| r.get(0),
        )?)
    }

    /// How many messages `inbox_unread` would return.
    pub fn inbox_pending(&self, session_id: &str, pushed_before: i64) -> StoreResult<u32> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM deliveries WHERE session_id = ?1 AND seen_at IS NULL
                 AND (pushed_at IS NULL OR pushed_at <= ?2)",
            params![session_id, pushed_before],
            |r| r.get(0),
        )?;
        Ok(count(n))
    }

    /// Records that the session's copies of `message_ids` are being pushed
    /// as channel notifications (not that the model saw them). Seen or
    /// already pushed copies change nothing. Returns the ids now marked:
    /// only those may be pushed, so that no other path showed them first.
    pub fn inbox_mark_pushed(
        &mut self,
        session_id: &str,
        message_ids: &[String],
        now: i64,
    ) -> StoreResult<Vec<String>> {
        let tx = self.conn.savepoint()?;
        let mut marked = Vec::new();
        {
            let mut mark = tx.prepare(
                "UPDATE deliveries SET pushed_at = ?3
                 WHERE session_id = ?1 AND message_id = ?2
                   AND seen_at IS NULL AND pushed_at IS NULL",
            )?;
            for id in message_ids {
                if mark.execute(params![session_id, id, now])? > 0 {
                    marked.push(id.clone());
                }
            }
        }
        tx.commit()?;
        Ok(marked)
    }

    /// Unseen deliveries plus unassigned messages of a mesh.
    pub fn inbox_depth(&self, mesh_id: &str) -> StoreResult<u32> {
        let n: i64 = self.conn.query_row(
            "SELECT (SELECT COUNT(*) FROM deliveries WHERE mesh_id = ?1 AND seen_at IS NULL)
                  + (SELECT COUNT(*) FROM unassigned WHERE mesh_id = ?1)",
            [mesh_id],
            |r| r.get(0),
        )?;
        Ok(count(n))
    }

    /// Marks the session's copies of `message_ids` seen. Ids that are not
    /// this session's, or already seen, change nothing. Returns the
    /// receipts now owed.
    pub fn inbox_mark_seen(
        &mut self,
        session_id: &str,
        message_ids: &[String],
        now: i64,
    ) -> StoreResult<Vec<ReceiptDue>> {
        self.inbox_mark_seen_if_pushed_before(session_id, message_ids, now, i64::MAX)
    }

    /// `inbox_mark_seen`, but a copy pushed after `pushed_before` (still in
    /// its window: the push may have shown it) is left alone. Whoever shows
    /// messages marks them so and shows only those it marked.
    pub fn inbox_mark_seen_if_pushed_before(
        &mut self,
        session_id: &str,
        message_ids: &[String],
        now: i64,
        pushed_before: i64,
    ) -> StoreResult<Vec<ReceiptDue>> {
        self.mark_seen_where(session_id, message_ids, now, pushed_before, false)
    }

    /// Marks seen the session's copies of `message_ids` that were pushed
    /// (the transcript showed them as channel messages). A copy never
    /// pushed cannot have arrived as a channel message: a tag naming it
    /// was written by someone else (a peer's text, the model), and
    /// changes nothing.
    pub fn inbox_confirm_pushed(
        &mut self,
        session_id: &str,
        message_ids: &[String],
        now: i64,
    ) -> StoreResult<Vec<ReceiptDue>> {
        self.mark_seen_where(session_id, message_ids, now, i64::MAX, true)
    }

    fn mark_seen_where(
        &mut self,
        session_id: &str,
        message_ids: &[String],
        now: i64,
        pushed_before: i64,
        only_pushed: bool,
    ) -> StoreResult<Vec<ReceiptDue>> {
        let tx = self.conn.savepoint()?;
        let mut due = Vec::new();
        {
            let mut find = tx.prepare(
                "SELECT mesh_id FROM deliveries
                 WHERE session_id = ?1 AND message_id = ?2 AND seen_at IS NULL
                   AND (pushed_at IS NULL OR pushed_at <= ?3)
                   AND (?4 = 0 OR pushed_at IS NOT NULL)",
            )?;
            let mut mark = tx.prepare(
                "UPDATE deliveries SET seen_at = ?4
                 WHERE mesh_id = ?1 AND message_id = ?2 AND session_id = ?3",
            )?;
            for id in message_ids {
                let meshes: Vec<String> = find
                    .query_map(params![session_id, id, pushed_before, only_pushed], |r| {
                        r.get(0)
                    })?
                    .collect::<Result<_, _>>()?;
                for mesh_id in meshes {
                    mark.execute(params![mesh_id, id, session_id, now])?;
                    due.push(ReceiptDue {
                        mesh_id,
                        message_id: id.clone(),
                        session_id: session_id.to_owned(),
                    });
                }
            }
        }
        tx.commit()?;
        Ok(due)
    }

    /// Seen receipts not yet reported to the broker (after a disconnect).
    pub fn receipts_due(&self, mesh_id: &str) -> StoreResult<Vec<ReceiptDue>> {
        let mut stmt = self.conn.prepare(
            "SELECT mesh_id, message_id, session_id FROM deliveries
             WHERE mesh_id = ?1 AND seen_at IS NOT NULL AND receipt_sent = 0",
        )?;
        let rows = stmt.query_map([mesh_id], |r| {
            Ok(ReceiptDue {
                mesh_id: r.get(0)?,
                message_id: r.get(1)?,
                session_id: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn receipts_sent(&mut self, sent: &[ReceiptDue]) -> StoreResult<()> {
        let tx = self.conn.savepoint()?;
        {
            let mut stmt = tx.prepare(
                "UPDATE deliveries SET receipt_sent = 1
                 WHERE mesh_id = ?1 AND message_id = ?2 AND session_id = ?3",
            )?;
            for r in sent {
                stmt.execute(params![r.mesh_id, r.message_id, r.session_id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Retention: every message older than 30 days, and seen copies older
    /// than 7 days. A message row is kept while any copy is, and for 7
    /// days in any case so that a late repeat of a push is still caught.
    pub fn purge_inbox(&mut self, now: i64) -> StoreResult<usize> {
        let tx = self.conn.savepoint()?;
        let old = now - INBOX_RETENTION_MS;
        let seen = now - SEEN_RETENTION_MS;
        let mut n = tx.execute("DELETE FROM inbox WHERE received_at < ?1", [old])?;
        n += tx.execute(
            "DELETE FROM deliveries WHERE seen_at IS NOT NULL AND seen_at < ?1",
            [seen],
        )?;
        n += tx.execute(
            "DELETE FROM inbox WHERE received_at < ?1
               AND NOT EXISTS (SELECT 1 FROM deliveries d
                               WHERE d.mesh_id = inbox.mesh_id AND d.message_id = inbox.message_id)
               AND NOT EXISTS (SELECT 1 FROM unassigned u
                               WHERE u.mesh_id = inbox.mesh_id AND u.message_id = inbox.message_id)",
            [seen],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// Drops everything of a mesh that was left.
    pub fn forget_mesh(&mut self, mesh_id: &str) -> StoreResult<()> {
        let tx = self.conn.savepoint()?;
        tx.execute("DELETE FROM deliveries WHERE mesh_id = ?1", [mesh_id])?;
        tx.execute("DELETE FROM unassigned WHERE mesh_id = ?1", [mesh_id])?;
        tx.execute("DELETE FROM inbox WHERE mesh_id = ?1", [mesh_id])?;
        tx.execute("DELETE FROM sessions WHERE mesh_id = ?1", [mesh_id])?;
        // Nothing will send them now: drop their plaintext, keep the row
        // so that `list_outbox` says what happened.
        tx.execute(
            "UPDATE outbox SET state = 'failed', body = NULL,
                 last_error = 'left: the mesh was left before its broker accepted the message'
             WHERE mesh_id = ?1 AND state = 'pending'",
            [mesh_id],
        )?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn msg(id: &str, at: i64) -> InboxRow {
        InboxRow {
            mesh_id: "mesh".into(),
            message_id: id.into(),
            from: MessageSender {
                member: "pk".into(),
                session_id: "s0".into(),
                display_name: "alice".into(),
            },
            to: "*".into(),
            priority: Priority::Next,
            text: "hello".into(),
            sent_at: at,
            received_at: at,
        }
    }

    #[test]
    fn each_session_gets_each_message_once() {
        let store = Store::open_in_memory().unwrap();
        store
            .call_sync(|db| {
                let both = ["s1".to_owned(), "s2".to_owned()];
                assert!(db.inbox_insert(&msg("m1", 1), &both)?);
                assert!(!db.inbox_insert(&msg("m1", 1), &both)?, "repeat dropped");
                assert!(db.inbox_has("mesh", "m1")?);
                assert_eq!(db.inbox_pending("s1", 0)?, 1);
                let due = db.inbox_mark_seen("s1", &["m1".into(), "nope".into()], 5)?;
                assert_eq!(due.len(), 1);
                assert!(db.inbox_mark_seen("s1", &["m1".into()], 6)?.is_empty());
                assert!(db.inbox_mark_seen("s3", &["m1".into()], 6)?.is_empty());
                assert_eq!(db.inbox_pending("s1", 0)?, 0);
                assert_eq!(db.inbox_unread("s2", 0)?.len(), 1);
                assert_eq!(db.receipts_due("mesh")?, due);
                db.receipts_sent(&due)?;
                assert!(db.receipts_due("mesh")?.is_empty());
                assert_eq!(db.inbox_depth("mesh")?, 1);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn unassigned_messages_go_to_the_next_session_and_retention_applies() {
        let store = Store::open_in_memory().unwrap();
        store
            .call_sync(|db| {
                db.inbox_insert(&msg("m1", 1), &[])?;
                assert_eq!(db.inbox_depth("mesh")?, 1);
                assert_eq!(db.assign_unassigned("mesh", "s9")?, 1);
                assert_eq!(db.assign_unassigned("mesh", "s10")?, 0);
                assert_eq!(db.inbox_unread("s9", 0)?[0].text, "hello");
                let now = 1 + INBOX_RETENTION_MS + 1;
                db.purge_inbox(now)?;
                assert!(!db.inbox_has("mesh", "m1")?);
                assert_eq!(db.inbox_pending("s9", 0)?, 0);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn pool_messages_a_session_never_saw_go_back_when_it_ends() {
        let store = Store::open_in_memory().unwrap();
        store
            .call_sync(|db| {
                db.inbox_insert(&msg("m1", 1), &[])?;
                db.inbox_insert(&msg("m2", 2), &[])?;
                assert_eq!(db.assign_unassigned("mesh", "brief")?, 2);
                db.inbox_mark_seen("brief", &["m1".to_owned()], 3)?;
                db.delete_session("brief")?;
                // m1 was shown; m2 waits for whoever comes next.
                assert_eq!(db.assign_unassigned("mesh", "next")?, 1);
                let unseen: Vec<String> = db
                    .inbox_unread("next", 0)?
                    .into_iter()
                    .map(|m| m.message_id)
                    .collect();
                assert_eq!(unseen, ["m2"]);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn a_push_is_held_back_then_unread_again_until_confirmed() {
        let store = Store::open_in_memory().unwrap();
        store
            .call_sync(|db| {
                db.inbox_insert(&msg("m1", 1), &["s1".to_owned()])?;
                db.inbox_insert(&msg("m2", 2), &["s1".to_owned()])?;
                let ids = |rows: Vec<InboxRow>| -> Vec<String> {
                    rows.into_iter().map(|r| r.message_id).collect()
                };
                assert_eq!(ids(db.inbox_unpushed("s1")?), ["m1", "m2"]);
                // unread -> pushed at 100
                assert_eq!(db.inbox_mark_pushed("s1", &["m1".to_owned()], 100)?, ["m1"]);
                assert_eq!(db.inbox_latest_unseen_push("s1", 0, i64::MAX)?, Some(100));
                assert_eq!(db.inbox_latest_unseen_push("s1", 100, i64::MAX)?, None);
                assert_eq!(db.inbox_latest_unseen_push("s1", 0, 99)?, None);
                assert!(
                    db.inbox_mark_pushed("s1", &["m1".to_owned()], 150)?
                        .is_empty()
                );
                // A path that fetched it before the push cannot mark it seen
                // now that it is pushed (within the window).
                assert!(
                    db.inbox_mark_seen_if_pushed_before("s1", &["m1".to_owned()], 110, 90)?
                        .is_empty()
                );
                assert_eq!(ids(db.inbox_unpushed("s1")?), ["m2"], "pushed once only");
                // Within the window (pushes after 90 held back): not unread.
                assert_eq!(ids(db.inbox_unread("s1", 90)?), ["m2"]);
                assert_eq!(db.inbox_pending("s1", 90)?, 1);
                // The window passed unconfirmed: unread again.
                assert_eq!(ids(db.inbox_unread("s1", 100)?), ["m1", "m2"]);
                assert_eq!(db.inbox_pending("s1", 100)?, 2);
                // A confirmation names only pushed copies: m2 was never
                // pushed, so a tag naming it changes nothing.
                assert!(
                    db.inbox_confirm_pushed("s1", &["m2".to_owned()], 115)?
                        .is_empty()
                );
                // pushed -> seen (confirmed): a seen receipt is owed.
                let due = db.inbox_confirm_pushed("s1", &["m1".to_owned()], 120)?;
                assert_eq!(due.len(), 1);
                assert_eq!(
                    db.inbox_latest_unseen_push("s1", 0, i64::MAX)?,
                    None,
                    "seen now"
                );
                assert_eq!(ids(db.inbox_unread("s1", i64::MAX)?), ["m2"]);
                // A seen message cannot be marked pushed.
                assert!(
                    db.inbox_mark_pushed("s1", &["m1".to_owned()], 130)?
                        .is_empty()
                );
                Ok(())
            })
            .unwrap();
    }
}
