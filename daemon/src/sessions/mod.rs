//! The sessions this daemon carries: one per Claude Code process and mesh.
//!
//! A session is named by its Claude Code process (pid + start time), not by
//! the socket connection that attached it: the shim may restart and attach
//! again, and finds the same session and inbox. At most one connection is
//! attached to a session at a time; a new attach takes it over and the old
//! connection loses it.

mod names;
mod wake;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use claudemesh_protocol::ipc::{DaemonFrame, Event};
use claudemesh_protocol::wire::Peer;
use tokio::sync::mpsc;

use crate::process_info::ProcessId;
use crate::store::SessionRow;

pub use names::{default_display_name, validate_attach, validate_group, validate_transcript_path};
pub use wake::{WakeState, WakeWaiter};

/// The connection a session is attached to.
pub struct Attachment {
    pub conn_id: u64,
    pub frames: mpsc::Sender<DaemonFrame>,
    /// Messages already pushed as events on this connection: pushed once
    /// per connection, until the client marks them seen.
    pub pushed: HashSet<String>,
    /// A message event could not be queued (the client is not reading):
    /// the next tick offers the session its due messages again.
    pub missed: bool,
}

/// Where a session's Claude Code writes its transcript, and how far the
/// daemon has read it for channel messages (in memory: after a restart it
/// is read again from the start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptCursor {
    pub path: PathBuf,
    pub offset: u64,
}

pub struct Session {
    pub row: SessionRow,
    pub attachment: Option<Attachment>,
    /// The session's transcript, once the shim or a hook has named it.
    pub transcript: Option<TranscriptCursor>,
    /// Its owner ended it (detach, or Claude Code exited) while messages
    /// it sent were not yet accepted by the broker: it stays open there,
    /// unattached, until they are, because the broker takes a `send` only
    /// from an open session.
    pub draining: bool,
    /// The `wait_wake` requests armed for it.
    pub wake: WakeState,
}

impl Session {
    pub fn claude(&self) -> ProcessId {
        ProcessId {
            pid: self.row.claude_pid,
            start_time: self.row.claude_start,
        }
    }

    /// Names the session's transcript; a new path is read from its start.
    pub fn set_transcript(&mut self, path: &str) {
        let path = PathBuf::from(path);
        if self.transcript.as_ref().is_none_or(|t| t.path != path) {
            tracing::debug!(session = %self.row.session_id, transcript = %path.display(), "session transcript named");
            self.transcript = Some(TranscriptCursor { path, offset: 0 });
        }
    }

    pub fn is_attached_to(&self, conn_id: u64) -> bool {
        self.attachment
            .as_ref()
            .is_some_and(|a| a.conn_id == conn_id)
    }

    /// Queues an event for the attached connection, if any. A client that
    /// does not read loses events rather than stalling the daemon; message
    /// events are pushed again later (they stay unseen in the inbox).
    ///
    /// Peer events are the first to go: they only take the free half of
    /// the queue, keeping room for messages, receipts and answers.
    pub fn push(&self, event: Event) -> bool {
        let Some(a) = &self.attachment else {
            return false;
        };
        let is_peer_event = matches!(
            event,
            Event::PeerJoined { .. } | Event::PeerLeft { .. } | Event::PeerUpdated { .. }
        );
        if is_peer_event && a.frames.capacity() <= a.frames.max_capacity() / 2 {
            return false;
        }
        a.frames.try_send(DaemonFrame::Event { event }).is_ok()
    }

    /// How other sessions see this one.
    pub fn as_peer(&self, member: &str, host: &str) -> Peer {
        Peer {
            member: member.to_owned(),
            session_id: self.row.session_id.clone(),
            display_name: self.row.display_name.clone(),
            status: self.row.status,
            summary: self.row.summary.clone(),
            groups: self.row.groups.clone(),
            cwd: self.row.cwd.clone(),
            host: host.to_owned(),
            connected_at: self.row.created_at,
        }
    }
}

/// Every live session, by session id.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    /// Something the reaper watches may have changed (a client connected,
    /// a session detached or began draining, a push found its queue full).
    changed: tokio::sync::Notify,
}

impl Sessions {
    /// See [`Sessions::changed`].
    pub fn note_change(&self) {
        self.changed.notify_one();
    }

    /// Resolves at the next [`Sessions::note_change`] (or at once if one
    /// came since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Whether the reaper has work: a session detached (its Claude Code
    /// may have exited, which nothing else tells), draining, or with a
    /// push its full queue missed. Attached sessions end by their
    /// connection closing (the shim exits with its Claude Code).
    pub fn need_reaping(&self) -> bool {
        self.lock()
            .values()
            .any(|s| s.draining || s.attachment.as_ref().is_none_or(|a| a.missed))
    }

    /// The map, for short critical sections that never await.
    pub fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copies of the rows of every session (of one mesh, if given).
    pub fn rows(&self, mesh_id: Option<&str>) -> Vec<SessionRow> {
        self.lock()
            .values()
            .filter(|s| mesh_id.is_none_or(|m| s.row.mesh_id == m))
            .map(|s| s.row.clone())
            .collect()
    }

    /// Pushes `event` to every attached session of `mesh_id` except `skip`.
    pub fn broadcast(&self, mesh_id: &str, skip: Option<&str>, event: &Event) {
        for s in self.lock().values() {
            if s.row.mesh_id == mesh_id && skip != Some(s.row.session_id.as_str()) {
                s.push(event.clone());
            }
        }
    }
}
