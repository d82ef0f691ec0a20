//! Receiving: a push is opened, stored and only then acknowledged; each
//! recipient session is offered it once; whichever path shows it first
//! (event, fetch, hook) marks it seen and owes the sender a receipt.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use claudemesh_protocol::MemberPublicKey;
use claudemesh_protocol::envelope;
use claudemesh_protocol::ipc::{Event, InboxMessage, IpcError, IpcErrorCode};
use claudemesh_protocol::limits::MAX_MESSAGE_IDS_PER_REQUEST;
use claudemesh_protocol::wire::{
    ClientFrame, DeliveryState, MessageBody, PeerStatus, Priority, Push,
};

use super::{Core, internal};
use crate::mesh::Mesh;
use crate::process_info;
use crate::store::{InboxRow, ReceiptDue};

/// The most message bytes one inbox answer carries: well under the
/// client's line limit (`MAX_IPC_LINE_BYTES`), leaving room for the frame.
const ANSWER_BUDGET_BYTES: usize = claudemesh_protocol::ipc::MAX_IPC_LINE_BYTES * 3 / 4;

/// How long a pushed message waits for the session's transcript to
/// confirm that its model was shown it (`docs/shim.md`, "Message states");
/// unconfirmed after this, it is unread again for the hooks, the pending
/// note and `check_messages`. `CLAUDEMESH_PUSH_CONFIRM_MS` overrides it.
const PUSH_CONFIRM_MS: i64 = 20_000;
pub const ENV_PUSH_CONFIRM_MS: &str = "CLAUDEMESH_PUSH_CONFIRM_MS";

fn push_confirm_ms() -> i64 {
    static MS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *MS.get_or_init(|| {
        std::env::var(ENV_PUSH_CONFIRM_MS)
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|ms| (0..=3_600_000).contains(ms))
            .unwrap_or(PUSH_CONFIRM_MS)
    })
}

/// Pushes at or before this instant are past their window.
pub(super) fn pushed_before(now: i64) -> i64 {
    now - push_confirm_ms()
}

impl Core {
    /// Pushes from the broker, as many as arrived together. Each is
    /// opened, all are committed in one write, and only then acknowledged
    /// (repeats included: a repeat is acknowledged and dropped).
    ///
    /// When the write fails (a full disk) nothing is acknowledged and the
    /// pushes are given back: the worker keeps them and stores them again
    /// on its retry tick, so they arrive once space returns, with no wait
    /// for a reconnect.
    pub(super) async fn on_pushes(&self, mesh: &Mesh, pushes: Vec<Push>) -> Vec<Push> {
        if pushes.is_empty() {
            return pushes;
        }
        let received_at = self.now_ms();
        let mut acks = Vec::with_capacity(pushes.len());
        let mut batch = Vec::with_capacity(pushes.len());
        for push in &pushes {
            acks.push(ClientFrame::ClientAck {
                message_id: push.message_id.clone(),
            });
            // One that can never be opened is acknowledged so that it is
            // not pushed forever.
            let Some(text) = open_push(mesh, push) else {
                continue;
            };
            let row = InboxRow {
                mesh_id: mesh.id().to_owned(),
                message_id: push.message_id.clone(),
                from: push.from.clone(),
                to: push.to.clone(),
                priority: push.priority,
                text,
                sent_at: push.sent_at,
                received_at,
            };
            batch.push((row, self.recipients_of(mesh, push)));
        }
        let stored = match self
            .store
            .call(move |db| {
                let mut fresh = Vec::with_capacity(batch.len());
                for (row, sessions) in batch {
                    if db.inbox_insert(&row, &sessions)? {
                        fresh.push((row, sessions));
                    }
                }
                Ok(fresh)
            })
            .await
        {
            Ok(fresh) => fresh,
            Err(e) => {
                // Not acknowledged: the sender is not told `delivered`.
                internal(e);
                return pushes;
            }
        };
        for ack in acks {
            mesh.link.send(ack);
        }
        for (row, recipients) in &stored {
            tracing::debug!(message = %row.message_id, recipients = recipients.len(), "message stored");
            for sid in recipients {
                self.offer(sid, std::slice::from_ref(row), mesh.slug());
                self.wake_waiters(sid);
            }
        }
        Vec::new()
    }

    /// The local sessions a push is for: those it names that live here, or
    /// (when it names none) every session of the mesh but the sender's own.
    /// Empty means "whichever session attaches next". A whole-member copy
    /// sent to the member's name (a reply to `claudemesh-ctl send`, or a
    /// member addressed while offline) is for the person rather than for
    /// the Claude Code sessions that happen to run: it goes to the sessions
    /// reading under that name (`claudemesh-ctl inbox`), else waits for the
    /// next session, whichever comes first.
    fn recipients_of(&self, mesh: &Mesh, push: &Push) -> Vec<String> {
        let map = self.sessions.lock();
        if push.sessions.is_empty() && is_name_target(&push.to) {
            return map
                .values()
                .filter(|s| s.row.mesh_id == mesh.id() && s.row.display_name == push.to)
                .map(|s| s.row.session_id.clone())
                .collect();
        }
        let local: Vec<&str> = map
            .values()
            .filter(|s| s.row.mesh_id == mesh.id())
            .map(|s| s.row.session_id.as_str())
            .collect();
        let from_self = push.from.member == mesh.pubkey;
        let chosen: Vec<String> = if push.sessions.is_empty() {
            local
                .iter()
                .filter(|sid| !(from_self && **sid == push.from.session_id))
                .map(|s| (*s).to_owned())
                .collect()
        } else {
            push.sessions
                .iter()
                .filter(|sid| local.contains(&sid.as_str()))
                .cloned()
                .collect()
        };
        chosen
    }

    /// Pushes the due ones of `rows` to session `sid` if it is attached:
    /// `now` at once, `next` and `low` only while it is not `working`; each
    /// at most once per connection; none that an armed `wait_wake` takes.
    fn offer(&self, sid: &str, rows: &[InboxRow], mesh_slug: &str) {
        let mut map = self.sessions.lock();
        let Some(session) = map.get_mut(sid) else {
            return;
        };
        let working = session.row.status == PeerStatus::Working;
        let wake = &session.wake;
        let Some(attachment) = session.attachment.as_mut() else {
            return;
        };
        for row in rows {
            let due = row.priority == Priority::Now || !working;
            // An armed wake shows it instead (`docs/shim.md`, "(e) Wake").
            if !due || attachment.pushed.contains(&row.message_id) || wake.takes(row.priority) {
                continue;
            }
            let event = Event::Message(to_message(row, mesh_slug));
            if attachment
                .frames
                .try_send(claudemesh_protocol::ipc::DaemonFrame::Event { event })
                .is_ok()
            {
                attachment.pushed.insert(row.message_id.clone());
            } else {
                attachment.missed = true;
                self.sessions.note_change();
            }
        }
    }

    /// Offers their due messages again to the sessions whose queue was
    /// full when one arrived (called every couple of seconds).
    pub async fn release_missed(&self) {
        let missed: Vec<String> = self
            .sessions
            .lock()
            .values_mut()
            .filter_map(|s| {
                let a = s.attachment.as_mut()?;
                std::mem::take(&mut a.missed).then(|| s.row.session_id.clone())
            })
            .collect();
        for sid in missed {
            self.release(&sid).await;
        }
    }

    /// Offers a session every unseen message that is due (after attach, and
    /// when it stops `working`).
    pub async fn release(&self, session_id: &str) {
        let Some(slug) = self.slug_of_session(session_id) else {
            return;
        };
        let sid = session_id.to_owned();
        match self.store.call(move |db| db.inbox_unpushed(&sid)).await {
            Ok(rows) => self.offer(session_id, &rows, &slug),
            Err(e) => {
                internal(e);
            }
        }
    }

    pub(super) fn slug_of_session(&self, session_id: &str) -> Option<String> {
        let mesh_id = self.sessions.lock().get(session_id)?.row.mesh_id.clone();
        self.mesh(&mesh_id).map(|m| m.slug().to_owned())
    }

    /// Every unread message of the session, whatever its priority.
    pub(super) async fn fetch_inbox(
        &self,
        sid: &str,
        mark_seen: bool,
    ) -> Result<Vec<InboxMessage>, IpcError> {
        let mut budget = ANSWER_BUDGET_BYTES;
        let settle = (
            super::confirm::FETCH_SETTLE,
            Instant::now() + super::confirm::FETCH_SETTLE,
        );
        self.take_unseen(sid, mark_seen, settle, &mut budget).await
    }

    /// The session's unread messages, oldest first, as many as fit in
    /// `budget` bytes of answer (at least one); only those returned are
    /// marked seen, the rest stay pending for the next call.
    ///
    /// To show them (`mark_seen`), the pushes the session's transcript
    /// shows are confirmed first (a push younger than `settle.0` is given
    /// that long to appear there, never past `settle.1`); then every
    /// message not seen is returned, pushed or not, but for a push made
    /// after this call began (it raced the call; the next one shows it). A
    /// look without `mark_seen` holds a push back for its window, as
    /// `pending` does.
    async fn take_unseen(
        &self,
        sid: &str,
        mark_seen: bool,
        settle: (Duration, Instant),
        budget: &mut usize,
    ) -> Result<Vec<InboxMessage>, IpcError> {
        let slug = self.slug_of_session(sid).unwrap_or_default();
        let owned = sid.to_owned();
        let before = if mark_seen {
            let began = self.now_ms();
            self.settle_pushes(sid, began, settle.0, settle.1).await?;
            began
        } else {
            pushed_before(self.now_ms())
        };
        let rows = self
            .store
            .call(move |db| db.inbox_unread(&owned, before))
            .await
            .map_err(internal)?;
        let mut messages = Vec::new();
        for row in &rows {
            let message = to_message(row, &slug);
            let size = serde_json::to_string(&message).map_or(usize::MAX, |j| j.len() + 1);
            // One message always fits in an answer that holds nothing else.
            let answer_is_empty = messages.is_empty() && *budget == ANSWER_BUDGET_BYTES;
            if size > *budget && !answer_is_empty {
                break;
            }
            *budget = budget.saturating_sub(size);
            messages.push(message);
        }
        if mark_seen && !messages.is_empty() {
            // Marked and shown only if no push claimed them meanwhile.
            let ids: Vec<String> = messages.iter().map(|m| m.message_id.clone()).collect();
            let owned = sid.to_owned();
            let now = self.now_ms();
            let due = self
                .store
                .call(move |db| db.inbox_mark_seen_if_pushed_before(&owned, &ids, now, before))
                .await
                .map_err(internal)?;
            let marked: std::collections::HashSet<&str> =
                due.iter().map(|r| r.message_id.as_str()).collect();
            messages.retain(|m| marked.contains(m.message_id.as_str()));
            self.send_receipts(due).await;
        }
        Ok(messages)
    }

    pub(super) async fn pending(&self, sid: &str) -> Result<u32, IpcError> {
        let sid = sid.to_owned();
        let before = pushed_before(self.now_ms());
        self.store
            .call(move |db| db.inbox_pending(&sid, before))
            .await
            .map_err(internal)
    }

    pub(super) async fn mark_seen(
        &self,
        sid: &str,
        message_ids: Vec<String>,
    ) -> Result<(), IpcError> {
        check_id_count("mark", &message_ids)?;
        self.mark_seen_ids(sid, message_ids).await
    }

    /// The shim is about to push these as channel notifications: held back
    /// from the other paths until the transcript confirms them or the
    /// window passes. Returns those it may push (not shown or pushed yet).
    pub(super) async fn mark_pushed(
        &self,
        sid: &str,
        message_ids: Vec<String>,
    ) -> Result<Vec<String>, IpcError> {
        let sid = sid.to_owned();
        check_id_count("mark", &message_ids)?;
        let session = sid.clone();
        let now = self.now_ms();
        let marked = self
            .store
            .call(move |db| db.inbox_mark_pushed(&sid, &message_ids, now))
            .await
            .map_err(internal)?;
        tracing::debug!(%session, marked = marked.len(), "messages marked pushed");
        Ok(marked)
    }

    async fn mark_seen_ids(&self, sid: &str, ids: Vec<String>) -> Result<(), IpcError> {
        let owned = sid.to_owned();
        let now = self.now_ms();
        let due = self
            .store
            .call(move |db| db.inbox_mark_seen(&owned, &ids, now))
            .await
            .map_err(internal)?;
        self.send_receipts(due).await;
        Ok(())
    }

    /// Reports `seen` receipts to the brokers that are connected; the rest
    /// stay owed and go out on the next connect.
    pub(super) async fn send_receipts(&self, due: Vec<ReceiptDue>) {
        let mut by_mesh: HashMap<String, Vec<ReceiptDue>> = HashMap::new();
        for r in due {
            by_mesh.entry(r.mesh_id.clone()).or_default().push(r);
        }
        let mut sent = Vec::new();
        for (mesh_id, receipts) in by_mesh {
            let Some(mesh) = self.mesh(&mesh_id) else {
                continue;
            };
            if !mesh.link.is_connected() {
                continue;
            }
            for r in receipts {
                mesh.link.send(ClientFrame::Receipt {
                    message_id: r.message_id.clone(),
                    session_id: Some(r.session_id.clone()),
                    state: DeliveryState::Seen,
                });
                sent.push(r);
            }
        }
        if !sent.is_empty()
            && let Err(e) = self.store.call(move |db| db.receipts_sent(&sent)).await
        {
            internal(e);
        }
    }

    /// For a Claude Code hook: the unread messages of the session(s) whose
    /// Claude Code process is the nearest ancestor of the caller, marked
    /// seen.
    /// `transcript_path` (from the hook's input) names the sessions'
    /// transcript, read first to confirm the pushes it shows.
    pub async fn hook_context(
        &self,
        peer_pid: Option<u32>,
        transcript_path: Option<&str>,
    ) -> Result<(Option<String>, Vec<InboxMessage>), IpcError> {
        if let Some(path) = transcript_path {
            crate::sessions::validate_transcript_path(path)?;
        }
        let sessions = self.hook_sessions(peer_pid);
        // A hook runs: the session is in a turn, its armed waits are over.
        self.new_turn(&sessions);
        if let Some(path) = transcript_path {
            self.note_transcript(&sessions, path);
        }
        let mut messages = Vec::new();
        let mut budget = ANSWER_BUDGET_BYTES;
        let settle = (
            super::confirm::HOOK_SETTLE,
            Instant::now() + super::confirm::HOOK_SETTLE,
        );
        for sid in &sessions {
            if budget == 0 {
                break;
            }
            messages.extend(self.take_unseen(sid, true, settle, &mut budget).await?);
        }
        Ok((sessions.into_iter().next(), messages))
    }

    /// For a Claude Code hook: these messages are in the session's
    /// transcript (pushed and shown as channel messages), so they are seen.
    /// Ids that are not the caller's sessions' change nothing.
    pub async fn hook_confirm(
        &self,
        peer_pid: Option<u32>,
        message_ids: Vec<String>,
    ) -> Result<(), IpcError> {
        check_id_count("confirm", &message_ids)?;
        for sid in self.hook_sessions(peer_pid) {
            let ids = message_ids.clone();
            let now = self.now_ms();
            let due = self
                .store
                .call(move |db| db.inbox_confirm_pushed(&sid, &ids, now))
                .await
                .map_err(internal)?;
            self.send_receipts(due).await;
        }
        Ok(())
    }

    /// The sessions of the nearest ancestor of `peer_pid` that is a Claude
    /// Code process with sessions here, oldest first.
    pub(super) fn hook_sessions(&self, peer_pid: Option<u32>) -> Vec<String> {
        let Some(pid) = peer_pid else {
            return Vec::new();
        };
        let ancestry = process_info::ancestry(pid);
        let map = self.sessions.lock();
        ancestry
            .iter()
            .find_map(|p| {
                let mut found: Vec<&crate::sessions::Session> =
                    map.values().filter(|s| s.claude() == *p).collect();
                found.sort_by_key(|s| s.row.created_at);
                (!found.is_empty())
                    .then(|| found.iter().map(|s| s.row.session_id.clone()).collect())
            })
            .unwrap_or_default()
    }
}

/// At most [`MAX_MESSAGE_IDS_PER_REQUEST`] ids in one request (`verb` says
/// what the request does with them).
fn check_id_count(verb: &str, message_ids: &[String]) -> Result<(), IpcError> {
    if message_ids.len() > MAX_MESSAGE_IDS_PER_REQUEST {
        return Err(IpcError::new(
            IpcErrorCode::TooLarge,
            format!("{verb} at most {MAX_MESSAGE_IDS_PER_REQUEST} messages at once"),
        ));
    }
    Ok(())
}

/// `to` is a display name (not `*`, `@group`, a key or key/session).
fn is_name_target(to: &str) -> bool {
    let is_key = |s: &str| claudemesh_protocol::encoding::is_lower_hex(s, 64);
    !(to == "*"
        || to.starts_with('@')
        || is_key(to)
        || to.split_once('/').is_some_and(|(pk, _)| is_key(pk)))
}

/// Opens and parses a push; `None` (logged without content) if it is
/// forged, not for this key, or not a message body.
fn open_push(mesh: &Mesh, push: &Push) -> Option<String> {
    let Ok(sender) = MemberPublicKey::from_hex(&push.from.member) else {
        tracing::warn!(message = %push.message_id, "dropping a push whose sender key is invalid");
        return None;
    };
    let plain = match envelope::open(&push.nonce, &push.ciphertext, &sender, &mesh.key) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(message = %push.message_id, error = %e, "dropping a push that does not open");
            return None;
        }
    };
    match serde_json::from_slice::<MessageBody>(&plain) {
        Ok(body) => Some(body.text),
        Err(_) => {
            tracing::warn!(message = %push.message_id, "dropping a push whose plaintext is not a message body");
            None
        }
    }
}

pub fn to_message(row: &InboxRow, mesh_slug: &str) -> InboxMessage {
    InboxMessage {
        message_id: row.message_id.clone(),
        mesh_slug: mesh_slug.to_owned(),
        from: row.from.clone(),
        to: row.to.clone(),
        priority: row.priority,
        text: row.text.clone(),
        sent_at: row.sent_at,
        received_at: row.received_at,
    }
}
