//! What clients can ask about: peers, where a sent message is, the outbox,
//! and the daemon as a whole.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use claudemesh_protocol::ipc::{
    DaemonStatus, IpcError, IpcErrorCode, LinkState, MeshStatus, OutboxEntry, PeerView,
    RecipientView, SessionInfo,
};
use claudemesh_protocol::wire::{ClientFrame, MemberPresence, Peer, RecipientState, ServerFrame};

use super::{Core, internal};
use crate::link::ReplyKey;

/// How long a question to the broker may take before the cached answer is
/// used instead.
const ASK_WAIT: Duration = Duration::from_secs(3);

impl Core {
    /// The active members of the session's mesh, as the broker knows them.
    pub(super) async fn list_members(&self, sid: &str) -> Result<Vec<MemberPresence>, IpcError> {
        let mesh = self.session_mesh(sid)?;
        let down = || {
            IpcError::new(
                IpcErrorCode::Unavailable,
                format!(
                    "the broker of mesh {} did not list its members (link down, or a broker \
                     without the members extension)",
                    mesh.slug()
                ),
            )
        };
        if !mesh.link.is_connected() {
            return Err(down());
        }
        match self.ask_peers(&mesh, true).await {
            Some(ServerFrame::PeersList {
                peers,
                members: Some(members),
                ..
            }) => {
                mesh.replace_peers(peers);
                Ok(members)
            }
            _ => Err(down()),
        }
    }

    /// The session's mesh's peers: the broker's live answer when connected,
    /// else the last known list plus this daemon's own sessions.
    pub(super) async fn list_peers(&self, sid: &str) -> Result<Vec<PeerView>, IpcError> {
        let mesh = self.session_mesh(sid)?;
        let mesh_id = mesh.id().to_owned();
        if mesh.link.is_connected() {
            self.refresh_peers(&mesh).await;
        }
        let mut all: BTreeMap<(String, String), Peer> = mesh
            .cached_peers()
            .into_iter()
            .map(|p| ((p.member.clone(), p.session_id.clone()), p))
            .collect();
        for s in self.sessions.lock().values() {
            if s.row.mesh_id == mesh_id {
                let p = s.as_peer(&mesh.pubkey, &self.host);
                all.insert((p.member.clone(), p.session_id.clone()), p);
            }
        }
        Ok(all
            .into_values()
            .map(|peer| PeerView {
                is_self: peer.member == mesh.pubkey && peer.session_id == sid,
                peer,
            })
            .collect())
    }

    /// Where a sent message is, by local id or broker `messageId`.
    pub async fn message_status(
        &self,
        message_id: String,
    ) -> Result<(String, Vec<RecipientView>), IpcError> {
        if message_id.len() > 128 {
            return Err(IpcError::new(
                IpcErrorCode::Malformed,
                "that is not a message id",
            ));
        }
        let lookup = message_id.clone();
        let row = self
            .store
            .call(move |db| db.outbox_find(&lookup))
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                IpcError::new(
                    IpcErrorCode::UnknownMessage,
                    format!("no message {message_id:?} was sent from this daemon (or it is older than the retention period)"),
                )
            })?;
        let mesh = self.mesh(&row.mesh_id);
        if let (Some(mesh), Some(broker_id)) = (&mesh, &row.broker_message_id)
            && mesh.link.is_connected()
        {
            let id = format!("r{}", self.next_id());
            let frame = ClientFrame::MessageStatus {
                id: Some(id.clone()),
                message_id: broker_id.clone(),
            };
            if let Some(ServerFrame::MessageStatusResult { recipients, .. }) = mesh
                .link
                .request(frame, ReplyKey::RequestId(id), ASK_WAIT)
                .await
            {
                let (rid, rs) = (row.id.clone(), recipients.clone());
                if let Err(e) = self
                    .store
                    .call(move |db| db.outbox_set_recipients(&rid, &rs))
                    .await
                {
                    internal(e);
                }
                return Ok((row.id, self.views(mesh, recipients)));
            }
        }
        let rid = row.id.clone();
        let stored = self
            .store
            .call(move |db| db.outbox_recipients(&rid))
            .await
            .map_err(internal)?;
        let views = self.recipient_views(
            mesh.as_deref(),
            stored.into_iter().map(|r| {
                let sid = (!r.session_id.is_empty()).then_some(r.session_id);
                (r.member, sid, r.state)
            }),
        );
        Ok((row.id, views))
    }

    fn views(&self, mesh: &crate::mesh::Mesh, rs: Vec<RecipientState>) -> Vec<RecipientView> {
        self.recipient_views(
            Some(mesh),
            rs.into_iter().map(|r| (r.member, r.session_id, r.state)),
        )
    }

    /// Messages not yet acknowledged by their broker, and failed ones.
    pub async fn list_outbox(&self) -> Result<Vec<OutboxEntry>, IpcError> {
        let rows = self
            .store
            .call(|db| db.outbox_stuck())
            .await
            .map_err(internal)?;
        Ok(rows
            .into_iter()
            .map(|r| OutboxEntry {
                mesh_slug: self
                    .mesh(&r.mesh_id)
                    .map(|m| m.slug().to_owned())
                    .unwrap_or(r.mesh_id),
                message_id: r.id,
                to: r.to,
                created_at: r.created_at,
                attempts: r.attempts,
                last_error: r.last_error,
            })
            .collect())
    }

    pub async fn daemon_status(&self, socket: &Path) -> Result<DaemonStatus, IpcError> {
        let sessions = self.sessions.rows(None);
        let attached: std::collections::HashSet<String> = self
            .sessions
            .lock()
            .values()
            .filter(|s| s.attachment.is_some())
            .map(|s| s.row.session_id.clone())
            .collect();
        let waits: std::collections::HashMap<String, u32> = self
            .sessions
            .lock()
            .values()
            .map(|s| (s.row.session_id.clone(), s.wake.armed() as u32))
            .collect();
        let mut meshes = Vec::new();
        for mesh in self.meshes() {
            let mesh_id = mesh.id().to_owned();
            let (outbox_depth, inbox_depth) = self
                .store
                .call(move |db| Ok((db.outbox_depth(&mesh_id)?, db.inbox_depth(&mesh_id)?)))
                .await
                .map_err(internal)?;
            let status = mesh.link_status();
            meshes.push(MeshStatus {
                slug: mesh.slug().to_owned(),
                mesh_id: mesh.id().to_owned(),
                member_id: mesh.config.member_id.clone(),
                member: mesh.pubkey.clone(),
                broker: mesh.broker_url.clone(),
                local: mesh.config.local,
                link: status.state,
                link_detail: status.detail,
                outbox_depth,
                inbox_depth,
                sessions: sessions.iter().filter(|s| s.mesh_id == mesh.id()).count() as u32,
            });
        }
        for (cfg, why) in self.mesh_problems() {
            meshes.push(MeshStatus {
                broker: cfg.effective_broker_url(),
                slug: cfg.slug,
                mesh_id: cfg.mesh_id,
                member_id: cfg.member_id,
                member: cfg.pubkey,
                local: cfg.local,
                link: LinkState::Disconnected,
                link_detail: Some(why),
                outbox_depth: 0,
                inbox_depth: 0,
                sessions: 0,
            });
        }
        let slugs: BTreeMap<String, String> = self
            .meshes()
            .iter()
            .map(|m| (m.id().to_owned(), m.slug().to_owned()))
            .collect();
        Ok(DaemonStatus {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            keystore: self.keystore.kind().to_string(),
            keystore_durable: self.keystore.durable(),
            socket: socket.display().to_string(),
            meshes,
            sessions: sessions
                .into_iter()
                .map(|s| SessionInfo {
                    attached: attached.contains(&s.session_id),
                    wake_waits: waits.get(&s.session_id).copied().unwrap_or(0),
                    mesh_slug: slugs.get(&s.mesh_id).cloned().unwrap_or_default(),
                    session_id: s.session_id,
                    display_name: s.display_name,
                    claude_pid: s.claude_pid,
                    cwd: s.cwd,
                    status: s.status,
                })
                .collect(),
        })
    }

    /// Retention: old inbox rows and settled outbox rows.
    pub async fn purge(&self) {
        let now = self.now_ms();
        let result = self
            .store
            .call(move |db| {
                let a = db.purge_inbox(now)?;
                let b = db.purge_outbox(now - crate::store::INBOX_RETENTION_MS)?;
                Ok(a + b)
            })
            .await;
        match result {
            Ok(n) if n > 0 => tracing::info!(rows = n, "old messages deleted"),
            Ok(_) => {}
            Err(e) => {
                internal(e);
            }
        }
    }
}
