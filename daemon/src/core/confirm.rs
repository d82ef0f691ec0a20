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

use claudemesh_protocol::ipc::IpcError;

use super::{Core, internal};
use crate::transcript;

impl Core {
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
