//! `wait_wake`: a Claude Code `Stop` hook waits here, on the daemon's
//! socket, for the next message that should wake its idle session
//! (`docs/ipc.md`, `docs/shim.md` "(e) Wake").
//!
//! The wait costs nothing while nothing happens: it sleeps on a
//! [`WakeWaiter`] that is notified where messages are stored
//! ([`Core::wake_waiters`], called by `on_pushes`), where the session ends,
//! and where a hook of the session shows its messages ([`Core::new_turn`]).
//! What it answers with is claimed like a channel push (`pushed_at` set),
//! so the other paths hold it back until the transcript confirms it or the
//! push window passes.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use claudemesh_protocol::ipc::{
    HookSessionInfo, InboxMessage, IpcError, IpcErrorCode, MAX_WAKE_WAIT_MS, WaitWakeArgs,
    WakeLevel, WakeOutcome,
};

use super::inbox::to_message;
use super::{Core, internal};
use crate::sessions::WakeWaiter;

/// After a message arrives, the wait gathers for this long before it
/// claims, so that messages sent together wake the session once.
const GATHER: Duration = Duration::from_millis(150);

/// At most this many messages in one answer (each at most 64 KiB: the
/// answer stays well under the IPC line limit); the rest wake the session
/// at the end of the turn they start.
pub const MAX_WAKE_MESSAGES: usize = 20;

/// The answer to one `wait_wake`.
#[derive(Debug)]
pub struct Woken {
    pub session: Option<String>,
    pub outcome: WakeOutcome,
    pub messages: Vec<InboxMessage>,
}

/// A waiter armed in every session of one Claude Code; disarmed on drop
/// (answered, timed out, or the connection closed and its task was
/// aborted).
struct Armed<'a> {
    core: &'a Core,
    waiter: Arc<WakeWaiter>,
    /// Each session and its `turns` when the wait was armed.
    sessions: Vec<(String, u64)>,
}

impl<'a> Armed<'a> {
    fn new(core: &'a Core, sessions: &[String], waiter: Arc<WakeWaiter>) -> Armed<'a> {
        let mut map = core.sessions.lock();
        let sessions = sessions
            .iter()
            .filter_map(|sid| {
                let s = map.get_mut(sid)?;
                s.wake.arm(&waiter);
                Some((sid.clone(), s.wake.turns))
            })
            .collect();
        drop(map);
        Armed {
            core,
            waiter,
            sessions,
        }
    }

    /// Whether the wait is over without messages: a session ended (or is
    /// only draining: its Claude Code exited), or a hook started a turn.
    fn over(&self) -> Option<WakeOutcome> {
        let map = self.core.sessions.lock();
        for (sid, turns) in &self.sessions {
            match map.get(sid) {
                None => return Some(WakeOutcome::Ended),
                Some(s) if s.draining => return Some(WakeOutcome::Ended),
                Some(s) if s.wake.turns != *turns => return Some(WakeOutcome::Turn),
                Some(_) => {}
            }
        }
        self.sessions.is_empty().then_some(WakeOutcome::Ended)
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        let mut map = self.core.sessions.lock();
        for (sid, _) in &self.sessions {
            if let Some(s) = map.get_mut(sid) {
                s.wake.disarm(&self.waiter);
            }
        }
    }
}

impl Core {
    /// Waits for the next messages that wake the sessions of the Claude
    /// Code process that is the nearest ancestor of `peer_pid`, and claims
    /// them. Answers at once when such messages already wait.
    pub async fn wait_wake(
        &self,
        peer_pid: Option<u32>,
        args: WaitWakeArgs,
    ) -> Result<Woken, IpcError> {
        if args.timeout_ms == 0 || args.timeout_ms > MAX_WAKE_WAIT_MS {
            return Err(IpcError::new(
                IpcErrorCode::Malformed,
                format!(
                    "timeoutMs must be between 1 and {MAX_WAKE_WAIT_MS} (got {}); wait again after a timeout",
                    args.timeout_ms
                ),
            ));
        }
        if let Some(path) = &args.transcript_path {
            crate::sessions::validate_transcript_path(path)?;
        }
        let sessions = self.hook_sessions(peer_pid);
        if let Some(path) = &args.transcript_path {
            self.note_transcript(&sessions, path);
        }
        // What the last wake (or a push) showed is seen: confirmed first.
        for sid in &sessions {
            self.confirm_from_transcript(sid).await?;
        }
        let Some(first) = sessions.first().cloned() else {
            return Ok(Woken {
                session: None,
                outcome: WakeOutcome::NoSession,
                messages: Vec::new(),
            });
        };
        let answer = |outcome, messages| Woken {
            session: Some(first.clone()),
            outcome,
            messages,
        };
        let armed = Armed::new(self, &sessions, WakeWaiter::new(args.wake));
        tracing::debug!(session = %first, wake = args.wake.as_str(), "a stop hook waits to wake the session");
        let deadline = tokio::time::Instant::now() + Duration::from_millis(args.timeout_ms);
        let mut notified = false;
        loop {
            if let Some(outcome) = armed.over() {
                return Ok(answer(outcome, Vec::new()));
            }
            if notified {
                // Let what was sent together arrive (still armed: no push
                // takes it meanwhile).
                tokio::time::sleep(GATHER).await;
                if let Some(outcome) = armed.over() {
                    return Ok(answer(outcome, Vec::new()));
                }
            }
            let messages = self.claim_wake(&sessions, args.wake).await?;
            if !messages.is_empty() {
                tracing::debug!(session = %first, messages = messages.len(), "woke a session");
                return Ok(answer(WakeOutcome::Messages, messages));
            }
            // `notify_one` keeps a permit when nobody waits yet, so nothing
            // that happened since the checks above is missed.
            tokio::select! {
                _ = armed.waiter.notify.notified() => notified = true,
                _ = tokio::time::sleep_until(deadline) => {
                    return Ok(answer(WakeOutcome::Timeout, Vec::new()));
                }
            }
        }
    }

    /// Marks pushed, and returns, the never shown, never pushed messages of
    /// `sessions` that wake at `level`, oldest first, at most
    /// [`MAX_WAKE_MESSAGES`].
    async fn claim_wake(
        &self,
        sessions: &[String],
        level: WakeLevel,
    ) -> Result<Vec<InboxMessage>, IpcError> {
        let sids = sessions.to_vec();
        let now = self.now_ms();
        let claimed = self
            .store
            .call(move |db| {
                let mut out = Vec::new();
                for sid in sids {
                    let room = MAX_WAKE_MESSAGES - out.len();
                    let rows: Vec<_> = db
                        .inbox_unpushed(&sid)?
                        .into_iter()
                        .filter(|r| level.wakes_for(r.priority))
                        .take(room)
                        .collect();
                    if rows.is_empty() {
                        continue;
                    }
                    let ids: Vec<String> = rows.iter().map(|r| r.message_id.clone()).collect();
                    let marked: HashSet<String> =
                        db.inbox_mark_pushed(&sid, &ids, now)?.into_iter().collect();
                    out.extend(
                        rows.into_iter()
                            .filter(|r| marked.contains(&r.message_id))
                            .map(|r| (sid.clone(), r)),
                    );
                    if out.len() >= MAX_WAKE_MESSAGES {
                        break;
                    }
                }
                Ok(out)
            })
            .await
            .map_err(internal)?;
        Ok(claimed
            .into_iter()
            .map(|(sid, row)| to_message(&row, &self.slug_of_session(&sid).unwrap_or_default()))
            .collect())
    }

    /// A message for session `sid` was stored: its armed waits look.
    pub(super) fn wake_waiters(&self, sid: &str) {
        if let Some(s) = self.sessions.lock().get(sid) {
            s.wake.notify_all();
        }
    }

    /// A hook of these sessions asked for their messages: they are in a
    /// turn, so the waits armed before it are over (`turn`).
    pub(super) fn new_turn(&self, sessions: &[String]) {
        let mut map = self.sessions.lock();
        for sid in sessions {
            if let Some(s) = map.get_mut(sid) {
                s.wake.turns += 1;
                s.wake.notify_all();
            }
        }
    }

    /// For a `SessionStart` hook: the first session of the caller's
    /// Claude Code, with its peers and how many messages wait.
    pub async fn hook_session(
        &self,
        peer_pid: Option<u32>,
    ) -> Result<Option<HookSessionInfo>, IpcError> {
        let Some(sid) = self.hook_sessions(peer_pid).into_iter().next() else {
            return Ok(None);
        };
        let Some(display_name) = self
            .sessions
            .lock()
            .get(&sid)
            .map(|s| s.row.display_name.clone())
        else {
            return Ok(None);
        };
        let mesh_slug = self.slug_of_session(&sid).unwrap_or_default();
        let peers = self.list_peers(&sid).await?;
        let pending = self.pending(&sid).await?;
        Ok(Some(HookSessionInfo {
            display_name,
            mesh_slug,
            peers,
            pending,
        }))
    }
}
