//! A connection's attached session: what [`Core::attach`] hands back and
//! the connection keeps. The requests a session makes are its methods, so
//! the check that the connection still holds the session is made here,
//! once, rather than by every operation of [`Core`].
//!
//! The check stays per request (not per handle) because a session can be
//! taken over: a newer connection of the same Claude Code attaches, and
//! from then on this handle's requests get `not_attached`, as before.

use std::future::Future;
use std::sync::Arc;

use claudemesh_protocol::ipc::{InboxMessage, IpcError, PeerView, SendArgs, SentInfo};
use claudemesh_protocol::wire::MemberPresence;

use super::{Core, SessionChange};

/// The session a connection attached; dropping it (the connection closed)
/// leaves the session waiting for a new shim or for its Claude Code to
/// exit, while [`SessionHandle::detach`] ends it.
pub struct SessionHandle {
    core: Arc<Core>,
    conn_id: u64,
    session_id: String,
}

impl SessionHandle {
    pub(super) fn new(core: Arc<Core>, conn_id: u64, session_id: String) -> SessionHandle {
        SessionHandle {
            core,
            conn_id,
            session_id,
        }
    }

    /// Whether this connection still holds the session (no newer
    /// connection took it over, it was not detached).
    pub fn is_attached(&self) -> bool {
        self.checked().is_ok()
    }

    /// The session id, if this connection still holds the session.
    fn checked(&self) -> Result<&str, IpcError> {
        self.core
            .check_attached(self.conn_id, &self.session_id)
            .map(|()| self.session_id.as_str())
    }

    /// `send`. Returned as an owned future: the wait for the broker's ack
    /// runs beside the connection's other requests.
    pub fn send(
        &self,
        args: SendArgs,
    ) -> impl Future<Output = Result<SentInfo, IpcError>> + Send + 'static {
        let (core, conn_id, sid) = (self.core.clone(), self.conn_id, self.session_id.clone());
        async move {
            core.check_attached(conn_id, &sid)?;
            core.send(sid, args).await
        }
    }

    pub async fn list_peers(&self) -> Result<Vec<PeerView>, IpcError> {
        self.core.list_peers(self.checked()?).await
    }

    pub async fn list_members(&self) -> Result<Vec<MemberPresence>, IpcError> {
        self.core.list_members(self.checked()?).await
    }

    pub async fn fetch_inbox(&self, mark_seen: bool) -> Result<Vec<InboxMessage>, IpcError> {
        self.core.fetch_inbox(self.checked()?, mark_seen).await
    }

    pub async fn pending(&self) -> Result<u32, IpcError> {
        self.core.pending(self.checked()?).await
    }

    pub async fn mark_seen(&self, message_ids: Vec<String>) -> Result<(), IpcError> {
        self.core.mark_seen(self.checked()?, message_ids).await
    }

    pub async fn mark_pushed(&self, message_ids: Vec<String>) -> Result<Vec<String>, IpcError> {
        self.core.mark_pushed(self.checked()?, message_ids).await
    }

    /// `set_status`, `set_summary`, `join_group`, `leave_group`.
    pub async fn change(&self, change: SessionChange) -> Result<(), IpcError> {
        self.core.change_session(self.checked()?, change).await
    }

    /// `detach`: the session ends now rather than when its Claude Code
    /// exits. On `not_attached` the handle is spent all the same (the
    /// session is no longer this connection's).
    pub async fn detach(self) -> Result<(), IpcError> {
        let sid = self.checked()?;
        self.core.end_session(sid, "detached by its client").await;
        Ok(())
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        self.core.connection_closed(self.conn_id, &self.session_id);
    }
}
