//! Session rows: what is needed to resume a session after a daemon restart
//! and to reopen it at the broker after a reconnect.

use claudemesh_protocol::wire::PeerStatus;
use rusqlite::{Row, params};

use super::{Db, StoreResult, corrupt};

#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    pub session_id: String,
    pub mesh_id: String,
    pub claude_pid: u32,
    pub claude_start: u64,
    /// What the session asked to be called.
    pub requested_name: String,
    /// What the broker made of it (unique in the mesh).
    pub display_name: String,
    pub cwd: String,
    pub groups: Vec<String>,
    pub summary: String,
    pub status: PeerStatus,
    pub created_at: i64,
}

pub(super) fn parse_status(s: &str) -> Option<PeerStatus> {
    match s {
        "idle" => Some(PeerStatus::Idle),
        "working" => Some(PeerStatus::Working),
        "dnd" => Some(PeerStatus::Dnd),
        _ => None,
    }
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<(SessionRow, String, String)> {
    Ok((
        SessionRow {
            session_id: r.get(0)?,
            mesh_id: r.get(1)?,
            claude_pid: r.get::<_, i64>(2)? as u32,
            claude_start: r.get::<_, i64>(3)? as u64,
            requested_name: r.get(4)?,
            display_name: r.get(5)?,
            cwd: r.get(6)?,
            groups: Vec::new(),
            summary: r.get(8)?,
            status: PeerStatus::Idle,
            created_at: r.get(10)?,
        },
        r.get(7)?,
        r.get(9)?,
    ))
}

impl Db {
    /// Inserts or replaces a session row.
    pub fn save_session(&self, s: &SessionRow) -> StoreResult<()> {
        let groups = serde_json::to_string(&s.groups).unwrap_or_else(|_| "[]".into());
        self.conn.execute(
            "INSERT INTO sessions (session_id, mesh_id, claude_pid, claude_start, requested_name,
                 display_name, cwd, groups_json, summary, status, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (session_id) DO UPDATE SET
                 requested_name = excluded.requested_name, display_name = excluded.display_name,
                 cwd = excluded.cwd, groups_json = excluded.groups_json,
                 summary = excluded.summary, status = excluded.status",
            params![
                s.session_id,
                s.mesh_id,
                i64::from(s.claude_pid),
                s.claude_start as i64,
                s.requested_name,
                s.display_name,
                s.cwd,
                groups,
                s.summary,
                s.status.as_str(),
                s.created_at
            ],
        )?;
        Ok(())
    }

    pub fn load_sessions(&self) -> StoreResult<Vec<SessionRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT session_id, mesh_id, claude_pid, claude_start, requested_name, display_name,
                    cwd, groups_json, summary, status, created_at
             FROM sessions ORDER BY created_at",
        )?;
        let rows = stmt.query_map([], from_row)?;
        let mut out = Vec::new();
        for row in rows {
            let (mut s, groups, status) = row?;
            // One damaged row costs that session, not the daemon's start.
            match (serde_json::from_str(&groups), parse_status(&status)) {
                (Ok(g), Some(st)) => {
                    s.groups = g;
                    s.status = st;
                    out.push(s);
                }
                (Err(_), _) => {
                    tracing::warn!(session = %s.session_id, error = %corrupt("groups", &groups), "skipping a damaged session row")
                }
                (_, None) => {
                    tracing::warn!(session = %s.session_id, error = %corrupt("status", &status), "skipping a damaged session row")
                }
            }
        }
        Ok(out)
    }

    /// Deletes a session with its undelivered inbox rows (a session that
    /// ended will never show them). Those it took from the "no session"
    /// pool go back to it, for the next session of the mesh.
    pub fn delete_session(&mut self, session_id: &str) -> StoreResult<()> {
        let tx = self.conn.savepoint()?;
        tx.execute(
            "INSERT OR IGNORE INTO unassigned (mesh_id, message_id)
             SELECT mesh_id, message_id FROM deliveries
             WHERE session_id = ?1 AND seen_at IS NULL AND from_pool = 1",
            [session_id],
        )?;
        tx.execute("DELETE FROM deliveries WHERE session_id = ?1", [session_id])?;
        tx.execute("DELETE FROM sessions WHERE session_id = ?1", [session_id])?;
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    pub(crate) fn row(id: &str, mesh: &str) -> SessionRow {
        SessionRow {
            session_id: id.into(),
            mesh_id: mesh.into(),
            claude_pid: 42,
            claude_start: u64::MAX / 2,
            requested_name: "api".into(),
            display_name: "api".into(),
            cwd: "/tmp".into(),
            groups: vec!["backend".into()],
            summary: String::new(),
            status: PeerStatus::Idle,
            created_at: 1,
        }
    }

    #[test]
    fn sessions_round_trip_and_update_in_place() {
        let store = Store::open_in_memory().unwrap();
        store
            .call_sync(|db| {
                let mut s = row("s1", "m");
                db.save_session(&s)?;
                s.status = PeerStatus::Working;
                s.display_name = "api-2".into();
                db.save_session(&s)?;
                assert_eq!(db.load_sessions()?, vec![s.clone()]);
                db.delete_session("s1")?;
                assert!(db.load_sessions()?.is_empty());
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn a_damaged_row_is_skipped_and_the_others_load() {
        let store = Store::open_in_memory().unwrap();
        store
            .call_sync(|db| {
                db.save_session(&row("good", "m"))?;
                db.save_session(&row("bad", "m"))?;
                db.conn.execute(
                    "UPDATE sessions SET status = 'sleepy' WHERE session_id = 'bad'",
                    [],
                )?;
                let loaded: Vec<String> = db
                    .load_sessions()?
                    .into_iter()
                    .map(|s| s.session_id)
                    .collect();
                assert_eq!(loaded, ["good"]);
                Ok(())
            })
            .unwrap();
    }
}
