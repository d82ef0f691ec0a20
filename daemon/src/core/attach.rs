//! Sessions coming and going: attach (new or resumed), detach, the
//! connection closing, the Claude Code process exiting, and the session
//! changing its status, summary or groups.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use claudemesh_protocol::ipc::{
    AttachArgs, AttachedInfo, DaemonFrame, Event, IpcError, IpcErrorCode,
};
use claudemesh_protocol::limits;
use claudemesh_protocol::wire::{ClientFrame, PeerStatus, ServerFrame, SessionOpen};
use tokio::sync::mpsc;

use super::{Core, SessionHandle, internal};
use crate::ids;
use crate::link::ReplyKey;
use crate::mesh::Mesh;
use crate::process_info;
use crate::sessions::{Attachment, Session, default_display_name, validate_attach};
use crate::store::SessionRow;

/// How long attach waits for the broker to name a new session.
const OPEN_WAIT: Duration = Duration::from_secs(2);

/// A change a session makes to how it appears to its peers.
#[derive(Debug, Clone)]
pub enum SessionChange {
    Status(PeerStatus),
    Summary(String),
    JoinGroup(String),
    LeaveGroup(String),
}

pub fn not_attached() -> IpcError {
    IpcError::new(
        IpcErrorCode::NotAttached,
        "this connection has no session; send `attach` first (or it was taken over by a newer connection of the same Claude Code)",
    )
}

impl Core {
    /// Makes connection `conn_id` the session of the Claude Code process
    /// `args.claude_pid`, which must be the connecting process or one of its
    /// ancestors. The connection keeps the handle for the session's
    /// requests.
    pub async fn attach(
        self: &Arc<Self>,
        conn_id: u64,
        peer_pid: Option<u32>,
        args: AttachArgs,
        frames: mpsc::Sender<DaemonFrame>,
    ) -> Result<(SessionHandle, AttachedInfo), IpcError> {
        validate_attach(&args)?;
        let peer = peer_pid.ok_or_else(|| {
            IpcError::new(
                IpcErrorCode::NotAClaudeProcess,
                "the daemon cannot tell which process is connecting, so it cannot tie a session to it",
            )
        })?;
        if args.claude_pid <= 1 {
            return Err(IpcError::new(
                IpcErrorCode::NotAClaudeProcess,
                "claudePid must be the Claude Code process that started the client, not init",
            ));
        }
        let claude = process_info::is_ancestor_or_self(args.claude_pid, peer).ok_or_else(|| {
            IpcError::new(
                IpcErrorCode::NotAClaudeProcess,
                format!(
                    "process {} is not this client (pid {peer}) or one of its ancestors; claudePid must be the Claude Code process that started the client",
                    args.claude_pid
                ),
            )
        })?;
        let mesh = self.resolve_mesh(args.mesh.as_deref()).ok_or_else(|| {
            IpcError::new(
                IpcErrorCode::UnknownMesh,
                match &args.mesh {
                    Some(m) => format!("no joined mesh is called {m:?}; `claudemesh-ctl list` shows the joined meshes"),
                    None => "no mesh is joined and the local mesh is off; join a mesh with `claudemesh-ctl join`".into(),
                },
            )
        })?;
        let session_id = ids::session_id(mesh.id(), &self.install_id, claude);
        let named = args
            .display_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        let groups: Vec<String> = args
            .groups
            .iter()
            .map(|g| g.trim().trim_start_matches('@').to_owned())
            .filter(|g| !g.is_empty())
            .collect();

        let (row, resumed, reopen) = {
            let mut map = self.sessions.lock();
            let attachment = Attachment {
                conn_id,
                frames,
                pushed: HashSet::new(),
                missed: false,
            };
            match map.get_mut(&session_id) {
                Some(s) => {
                    let mut reopen = s.row.cwd != args.cwd;
                    if let Some(name) = &named
                        && *name != s.row.requested_name
                    {
                        s.row.requested_name = name.clone();
                        s.row.display_name = name.clone();
                        reopen = true;
                    }
                    if !groups.is_empty() && groups != s.row.groups {
                        s.row.groups = groups;
                        reopen = true;
                    }
                    s.row.cwd = args.cwd.clone();
                    if let Some(path) = &args.transcript_path {
                        s.set_transcript(path);
                    }
                    s.attachment = Some(attachment);
                    s.draining = false;
                    (s.row.clone(), true, reopen)
                }
                None => {
                    let name = named.unwrap_or_else(|| default_display_name(&args.cwd));
                    let row = SessionRow {
                        session_id: session_id.clone(),
                        mesh_id: mesh.id().to_owned(),
                        claude_pid: claude.pid,
                        claude_start: claude.start_time,
                        requested_name: name.clone(),
                        display_name: name,
                        cwd: args.cwd.clone(),
                        groups,
                        summary: String::new(),
                        status: PeerStatus::Idle,
                        created_at: self.now_ms(),
                    };
                    let mut session = Session {
                        row: row.clone(),
                        attachment: Some(attachment),
                        transcript: None,
                        draining: false,
                        wake: Default::default(),
                    };
                    if let Some(path) = &args.transcript_path {
                        session.set_transcript(path);
                    }
                    map.insert(session_id.clone(), session);
                    (row, false, true)
                }
            }
        };
        // The reaper watches the session's Claude Code from now on.
        self.sessions.note_change();

        // Session ids are stable: a close still owed for an earlier life of
        // this session must not follow its new open.
        mesh.cancel_pending_close(&session_id);
        let saved = row.clone();
        let mesh_id = mesh.id().to_owned();
        let sid = session_id.clone();
        let transient = args.transient;
        self.store
            .call(move |db| {
                db.save_session(&saved)?;
                // A short-lived client (ctl send, peers) would take them
                // and end before showing them to anyone.
                if transient {
                    Ok(0)
                } else {
                    db.assign_unassigned(&mesh_id, &sid)
                }
            })
            .await
            .map_err(internal)?;

        if reopen {
            self.open_at_broker(&mesh, &row).await;
        }
        if !resumed {
            tracing::info!(session = %session_id, mesh = %mesh.slug(), claude_pid = claude.pid, "session attached");
            self.broadcast_self(&mesh, &session_id, |peer| Event::PeerJoined { peer });
        } else {
            tracing::info!(session = %session_id, mesh = %mesh.slug(), "session resumed");
        }
        let sid = session_id.clone();
        let before = super::inbox::pushed_before(self.now_ms());
        let pending = self
            .store
            .call(move |db| db.inbox_pending(&sid, before))
            .await
            .map_err(internal)?;
        let display_name = self
            .sessions
            .lock()
            .get(&session_id)
            .map(|s| s.row.display_name.clone())
            .unwrap_or(row.display_name);
        let info = AttachedInfo {
            session_id: session_id.clone(),
            mesh_id: mesh.id().to_owned(),
            mesh_slug: mesh.slug().to_owned(),
            display_name,
            member: mesh.pubkey.clone(),
            resumed,
            pending,
            link: mesh.link_status().state,
        };
        // Messages already due are pushed after the reply (the connection
        // writes frames in order).
        let handle = SessionHandle::new(self.clone(), conn_id, session_id.clone());
        let core = self.clone();
        tokio::spawn(async move { core.release(&session_id).await });
        Ok((handle, info))
    }

    /// `session_open` for `row`, waiting briefly for the broker's name.
    pub(super) async fn open_at_broker(&self, mesh: &Mesh, row: &SessionRow) {
        if !mesh.link.is_connected() {
            return; // opened by the resync on connect
        }
        let frame = session_open_frame(row, &self.host);
        let key = ReplyKey::SessionOpened(row.session_id.clone());
        if let Some(ServerFrame::SessionOpened { display_name, .. }) =
            mesh.link.request(frame, key, OPEN_WAIT).await
        {
            self.set_display_name(&row.session_id, display_name).await;
        }
    }

    /// Records the name the broker gave a session.
    pub(super) async fn set_display_name(&self, session_id: &str, name: String) {
        let row = {
            let mut map = self.sessions.lock();
            match map.get_mut(session_id) {
                Some(s) if s.row.display_name != name => {
                    s.row.display_name = name;
                    s.row.clone()
                }
                _ => return,
            }
        };
        if let Err(e) = self.store.call(move |db| db.save_session(&row)).await {
            internal(e);
        }
    }

    /// The connection is gone; its session (if still its own) waits for a
    /// new shim or for its Claude Code to exit.
    pub(super) fn connection_closed(&self, conn_id: u64, sid: &str) {
        if let Some(s) = self.sessions.lock().get_mut(sid)
            && s.is_attached_to(conn_id)
        {
            s.attachment = None;
            tracing::debug!(session = %sid, "session detached from its connection");
            // The reaper watches detached sessions.
            self.sessions.note_change();
        }
    }

    /// Checks that `conn_id` still holds `sid`.
    pub(super) fn check_attached(&self, conn_id: u64, sid: &str) -> Result<(), IpcError> {
        match self.sessions.lock().get(sid) {
            Some(s) if s.is_attached_to(conn_id) => Ok(()),
            _ => Err(not_attached()),
        }
    }

    /// The mesh of an attached session.
    pub fn session_mesh(&self, session_id: &str) -> Result<Arc<Mesh>, IpcError> {
        let mesh_id = self
            .sessions
            .lock()
            .get(session_id)
            .map(|s| s.row.mesh_id.clone())
            .ok_or_else(not_attached)?;
        self.mesh(&mesh_id).ok_or_else(|| {
            IpcError::new(
                IpcErrorCode::UnknownMesh,
                "this session's mesh is no longer joined",
            )
        })
    }

    /// Ends a session for good: closed at the broker, its undelivered
    /// copies dropped.
    ///
    /// A session with messages still waiting for the broker is only
    /// detached and marked draining; it ends when they are settled
    /// ([`Core::settle_draining`]).
    pub async fn end_session(&self, session_id: &str, why: &str) {
        let sid = session_id.to_owned();
        let unsent = match self
            .store
            .call(move |db| db.outbox_pending_for_session(&sid))
            .await
        {
            Ok(n) => n,
            Err(e) => {
                internal(e);
                0
            }
        };
        let session = {
            let mut map = self.sessions.lock();
            if unsent > 0 {
                if let Some(s) = map.get_mut(session_id) {
                    s.attachment = None;
                    // Its Claude Code is gone: its armed waits are over.
                    s.wake.notify_all();
                    self.sessions.note_change();
                    if !s.draining {
                        s.draining = true;
                        tracing::info!(session = %session_id, unsent, reason = why, "session kept open until the broker accepts its messages");
                    }
                }
                return;
            }
            match map.remove(session_id) {
                Some(s) => s,
                None => return,
            }
        };
        // Its armed waits see it gone and answer `ended`.
        session.wake.notify_all();
        tracing::info!(session = %session_id, reason = why, "session ended");
        if let Some(mesh) = self.mesh(&session.row.mesh_id) {
            if mesh.link.is_connected() {
                mesh.link.send(ClientFrame::SessionClose {
                    session_id: session_id.to_owned(),
                });
            } else {
                mesh.add_pending_close(session_id);
            }
            let peer = session.as_peer(&mesh.pubkey, &self.host);
            self.sessions
                .broadcast(mesh.id(), None, &Event::PeerLeft { peer });
        }
        let sid = session_id.to_owned();
        if let Err(e) = self.store.call(move |db| db.delete_session(&sid)).await {
            internal(e);
        }
    }

    /// Ends the draining sessions whose messages have all been settled
    /// (accepted by the broker, or failed for good).
    pub async fn settle_draining(&self) {
        let draining: Vec<String> = self
            .sessions
            .lock()
            .values()
            .filter(|s| s.draining)
            .map(|s| s.row.session_id.clone())
            .collect();
        for sid in draining {
            self.end_session(&sid, "its last message was settled").await;
        }
    }

    /// Ends every session whose Claude Code process has exited (the pid is
    /// gone, or now belongs to a process that started later). Draining
    /// sessions are left to [`Core::settle_draining`].
    pub async fn reap(&self) -> usize {
        let candidates: Vec<(String, process_info::ProcessId)> = self
            .sessions
            .lock()
            .values()
            .filter(|s| !s.draining)
            .map(|s| (s.row.session_id.clone(), s.claude()))
            .collect();
        let dead: Vec<String> = candidates
            .into_iter()
            .filter(|(_, claude)| !process_info::is_alive(*claude))
            .map(|(sid, _)| sid)
            .collect();
        for sid in &dead {
            self.end_session(sid, "its Claude Code process exited")
                .await;
        }
        dead.len()
    }

    /// Loads the sessions saved by the previous run; those whose Claude
    /// Code still lives are carried on, those with sends still waiting for
    /// the broker are kept draining, the others closed.
    ///
    /// Until this has run, mesh workers handle no broker frame (see
    /// `Core::restored`).
    pub async fn restore_sessions(&self) -> Result<(), crate::store::StoreError> {
        let result = self.restore_saved_sessions().await;
        self.restored.send_replace(true);
        result
    }

    async fn restore_saved_sessions(&self) -> Result<(), crate::store::StoreError> {
        let rows = self.store.call(|db| db.load_sessions()).await?;
        let mut gone = Vec::new();
        for row in rows {
            let claude = process_info::ProcessId {
                pid: row.claude_pid,
                start_time: row.claude_start,
            };
            let mesh = self.mesh(&row.mesh_id);
            let alive = process_info::is_alive(claude);
            let sid = row.session_id.clone();
            let unsent = if alive || mesh.is_none() {
                0
            } else {
                self.store
                    .call(move |db| db.outbox_pending_for_session(&sid))
                    .await?
            };
            match mesh {
                Some(mesh) if alive || unsent > 0 => {
                    // In the map first: a link that connects from now on
                    // reopens it; one already connected is told here.
                    self.sessions.lock().insert(
                        row.session_id.clone(),
                        Session {
                            row: row.clone(),
                            attachment: None,
                            transcript: None,
                            draining: !alive,
                            wake: Default::default(),
                        },
                    );
                    if mesh.link.is_connected() {
                        mesh.link.send(session_open_frame(&row, &self.host));
                    }
                }
                Some(mesh) => {
                    mesh.add_pending_close(&row.session_id);
                    gone.push(row.session_id);
                }
                None => gone.push(row.session_id),
            }
        }
        let restored = self.sessions.lock().len();
        tracing::info!(
            restored,
            ended = gone.len(),
            "sessions restored from the previous run"
        );
        self.store
            .call(move |db| {
                for sid in &gone {
                    db.delete_session(sid)?;
                }
                Ok(())
            })
            .await
    }

    /// Applies a status, summary or group change made by the session.
    pub(super) async fn change_session(
        self: &Arc<Self>,
        sid: &str,
        change: SessionChange,
    ) -> Result<(), IpcError> {
        let sid = sid.to_owned();
        match &change {
            // The broker's limit, so that a summary taken here is never
            // refused there.
            SessionChange::Summary(s) => {
                limits::check_text_bytes("summary", s, limits::MAX_SUMMARY_BYTES)
                    .map_err(|e| IpcError::new(e.code().as_str(), e.to_string()))?;
            }
            SessionChange::JoinGroup(g) | SessionChange::LeaveGroup(g) => {
                crate::sessions::validate_group(g.trim().trim_start_matches('@'))?;
            }
            _ => {}
        }
        let (row, frame) = {
            let mut map = self.sessions.lock();
            let s = map.get_mut(&sid).ok_or_else(not_attached)?;
            let sid_opt = Some(sid.clone());
            let frame = match change.clone() {
                SessionChange::Status(status) => {
                    s.row.status = status;
                    ClientFrame::SetStatus {
                        session_id: sid_opt,
                        status,
                    }
                }
                SessionChange::Summary(summary) => {
                    s.row.summary = summary.clone();
                    ClientFrame::SetSummary {
                        session_id: sid_opt,
                        summary,
                    }
                }
                SessionChange::JoinGroup(group) => {
                    let group = group.trim().trim_start_matches('@').to_owned();
                    if !s.row.groups.contains(&group) {
                        s.row.groups.push(group.clone());
                    }
                    ClientFrame::JoinGroup {
                        session_id: sid_opt,
                        group,
                    }
                }
                SessionChange::LeaveGroup(group) => {
                    let group = group.trim().trim_start_matches('@').to_owned();
                    s.row.groups.retain(|g| *g != group);
                    ClientFrame::LeaveGroup {
                        session_id: sid_opt,
                        group,
                    }
                }
            };
            (s.row.clone(), frame)
        };
        let saved = row.clone();
        self.store
            .call(move |db| db.save_session(&saved))
            .await
            .map_err(internal)?;
        if let Some(mesh) = self.mesh(&row.mesh_id) {
            mesh.link.send(frame);
            self.broadcast_self(&mesh, &sid, |peer| Event::PeerUpdated { peer });
        }
        if matches!(change, SessionChange::Status(s) if s != PeerStatus::Working) {
            self.release(&sid).await;
        }
        Ok(())
    }

    /// Tells the other local sessions of the mesh about `session_id` (the
    /// broker does not echo a daemon's own sessions back to it).
    fn broadcast_self(
        &self,
        mesh: &Mesh,
        session_id: &str,
        event: impl FnOnce(claudemesh_protocol::wire::Peer) -> Event,
    ) {
        let peer = self
            .sessions
            .lock()
            .get(session_id)
            .map(|s| s.as_peer(&mesh.pubkey, &self.host));
        if let Some(peer) = peer {
            self.sessions
                .broadcast(mesh.id(), Some(session_id), &event(peer));
        }
    }
}

/// The `session_open` that (re)creates `row` at the broker, status and all.
pub fn session_open_frame(row: &SessionRow, host: &str) -> ClientFrame {
    ClientFrame::SessionOpen(SessionOpen {
        session_id: row.session_id.clone(),
        display_name: Some(row.requested_name.clone()),
        cwd: row.cwd.clone(),
        pid: row.claude_pid,
        host: host.to_owned(),
        summary: row.summary.clone(),
        groups: row.groups.clone(),
        status: row.status,
    })
}
