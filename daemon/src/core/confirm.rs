//! Confirming pushes against the session's transcript: before a path shows
//! a session's messages (`check_messages`, a hook), the channel messages
//! its Claude Code wrote into the transcript since the last read are
//! marked seen, so that a push the model was shown is not shown again,
//! and everything else unseen is shown at once, pushed or not
//! (`docs/shim.md`, "Message states").
//!
//! The transcript is named by the shim at attach (found from Claude Code's
//! environment) and by every hook run (`transcript_path` in its input; the
//! latest wins: it follows `/clear` and `--resume`). With none known,
//! nothing is confirmed, and a push is shown again rather than hidden.

use std::time::Duration;

use claudemesh_protocol::ipc::IpcError;
use tokio::time::Instant;

use super::{Core, internal};
use crate::transcript;

/// How long a push may take to reach the transcript (the shim sends it,
/// Claude Code queues it and writes the line). `check_messages` waits up
/// to this long past a push it is about to show, re-reading the transcript,
/// so that a push the model was shown a moment ago is not shown twice.
pub(super) const FETCH_SETTLE: Duration = Duration::from_millis(1000);
/// The same for a hook, whose whole exchange with the daemon has a 1 s
/// budget (`claudemesh-ctl hook`).
pub(super) const HOOK_SETTLE: Duration = Duration::from_millis(300);
/// How often the transcript is read again while waiting.
const SETTLE_POLL: Duration = Duration::from_millis(50);

impl Core {
    /// Confirms the session's pushes from its transcript; while a push
    /// made before `began` is unconfirmed and younger than `settle`, waits
    /// and reads again (never past `deadline`). Without a known transcript
    /// nothing could confirm it: no wait.
    pub(super) async fn settle_pushes(
        &self,
        sid: &str,
        began: i64,
        settle: Duration,
        deadline: Instant,
    ) -> Result<(), IpcError> {
        let settle_ms = i64::try_from(settle.as_millis()).unwrap_or(i64::MAX);
        loop {
            self.confirm_from_transcript(sid).await?;
            let known = self
                .sessions
                .lock()
                .get(sid)
                .is_some_and(|s| s.transcript.is_some());
            if !known || Instant::now() >= deadline {
                return Ok(());
            }
            let owned = sid.to_owned();
            let since = began.saturating_sub(settle_ms);
            let latest = self
                .store
                .call(move |db| db.inbox_latest_unseen_push(&owned, since, began))
                .await
                .map_err(internal)?;
            let Some(latest) = latest else {
                return Ok(());
            };
            let left = latest.saturating_add(settle_ms) - self.now_ms();
            if left <= 0 {
                return Ok(());
            }
            let pause = SETTLE_POLL.min(Duration::from_millis(left.unsigned_abs()));
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// A hook named the transcript of the sessions it is for.
    pub(super) fn note_transcript(&self, sessions: &[String], path: &str) {
        let mut map = self.sessions.lock();
        for sid in sessions {
            if let Some(s) = map.get_mut(sid) {
                s.set_transcript(path);
            }
        }
    }

    /// Marks seen the session's pushes that its transcript shows as channel
    /// messages, reading the part written since the last call. A transcript
    /// that is not there (yet) or cannot be read confirms nothing.
    pub(super) async fn confirm_from_transcript(&self, sid: &str) -> Result<(), IpcError> {
        let cursor = self
            .sessions
            .lock()
            .get(sid)
            .and_then(|s| s.transcript.clone());
        let Some(cursor) = cursor else {
            return Ok(());
        };
        let path = cursor.path.clone();
        let read =
            tokio::task::spawn_blocking(move || transcript::read_from(&cursor.path, cursor.offset))
                .await;
        let (ids, offset) = match read {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                // Claude Code writes the transcript only from the first prompt.
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(session = %sid, transcript = %path.display(), error = %e, "cannot read the session's transcript");
                }
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(session = %sid, error = %e, "the transcript read did not finish");
                return Ok(());
            }
        };
        if !ids.is_empty() {
            let ids: Vec<String> = ids.into_iter().collect();
            let owned = sid.to_owned();
            let now = self.now_ms();
            let due = self
                .store
                .call(move |db| db.inbox_confirm_pushed(&owned, &ids, now))
                .await
                .map_err(internal)?;
            if !due.is_empty() {
                tracing::debug!(session = %sid, confirmed = due.len(), "pushes confirmed by the transcript");
            }
            self.send_receipts(due).await;
        }
        // Read on from here next time, unless another transcript was named
        // meanwhile (it is read from its start).
        if let Some(t) = self
            .sessions
            .lock()
            .get_mut(sid)
            .and_then(|s| s.transcript.as_mut())
            .filter(|t| t.path == path)
        {
            t.offset = offset;
        }
        Ok(())
    }
}
