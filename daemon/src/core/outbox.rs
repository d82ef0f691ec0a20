//! Sending: a message is committed to the outbox before the client hears
//! `accepted`, sealed per recipient member when it is transmitted (again
//! after every reconnect, with the same id, until the broker acks), and
//! the client waits up to two seconds to learn where it went.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use claudemesh_protocol::MemberPublicKey;
use claudemesh_protocol::encoding::is_lower_hex;
use claudemesh_protocol::envelope;
use claudemesh_protocol::ipc::{IpcError, IpcErrorCode, SendArgs, SentInfo};
use claudemesh_protocol::limits;
use claudemesh_protocol::wire::{
    Ack, ClientFrame, ErrorCode, ErrorFrame, MessageBody, RecipientState, SendRequest, ServerFrame,
};
use tokio::sync::oneshot;

use super::outbox_rules::{self, Retry, Situation, Verdict};
use super::{Core, internal};
use crate::ids;
use crate::link::ReplyKey;
use crate::mesh::Mesh;
use crate::store::{OutboxRow, OutboxState};

/// How long `send` waits for the broker's ack before answering anyway.
const ACK_WAIT: Duration = Duration::from_secs(2);

/// What became of a send within the wait.
#[derive(Debug)]
pub enum SendOutcome {
    Acked(Vec<RecipientState>),
    Failed(IpcError),
}

impl Core {
    pub(super) async fn send(
        self: &Arc<Self>,
        sid: String,
        args: SendArgs,
    ) -> Result<SentInfo, IpcError> {
        let refused = |e: limits::MessageError| IpcError::new(e.code(), e.to_string());
        limits::check_message_text(&args.text).map_err(refused)?;
        let to = limits::check_message_target(&args.to)
            .map_err(refused)?
            .to_owned();
        let mesh = self.session_mesh(&sid)?;
        let mesh_id = mesh.id().to_owned();
        if mesh.is_revoked() {
            return Err(IpcError::new(
                IpcErrorCode::Revoked,
                format!(
                    "this member was revoked from mesh {}; nothing can be sent there (join again with a new invite)",
                    mesh.slug()
                ),
            ));
        }
        let body = serde_json::to_string(&MessageBody::text(args.text)).map_err(|_| {
            IpcError::new(IpcErrorCode::Malformed, "the message could not be encoded")
        })?;
        let now = self.now_ms();
        // The first transmission is counted in the insert itself: one
        // write per accepted send.
        let linked = mesh.link.is_connected();
        let row = OutboxRow {
            id: ids::new_message_id(),
            mesh_id: mesh_id.clone(),
            session_id: sid.clone(),
            to,
            priority: args.priority,
            body: Some(body),
            extra_members: Vec::new(),
            state: OutboxState::Pending,
            broker_message_id: None,
            attempts: u32::from(linked),
            last_error: None,
            created_at: now,
            updated_at: now,
        };
        let stored = row.clone();
        self.store
            .call(move |db| db.insert_outbox(&stored))
            .await
            .map_err(internal)?;

        // Durable from here on: whatever happens next, it will be delivered.
        let (tx, rx) = oneshot::channel();
        self.waiters().insert(row.id.clone(), tx);
        if linked {
            self.transmit(&mesh, &row, false).await;
        }
        let outcome = tokio::time::timeout(ACK_WAIT, rx).await;
        self.waiters().remove(&row.id);
        let recipients = match outcome {
            Ok(Ok(SendOutcome::Acked(recipients))) => recipients,
            Ok(Ok(SendOutcome::Failed(e))) => return Err(e),
            _ => Vec::new(),
        };
        Ok(SentInfo {
            message_id: row.id,
            recipients: self.recipient_views(
                Some(&mesh),
                recipients
                    .into_iter()
                    .map(|r| (r.member, r.session_id, r.state)),
            ),
        })
    }

    /// True when `to` is a display name that no known session has (a
    /// definite `unknown_target` while connected: the peer list is fresh).
    fn names_no_one(&self, mesh: &Mesh, to: &str, sender: &str) -> bool {
        if to == "*" || to.starts_with('@') || is_member_form(to) {
            return false;
        }
        self.resolve_members(mesh, to, sender).is_empty()
    }

    /// The member keys a target names, from the broker's peer list and
    /// this daemon's own sessions.
    fn resolve_members(&self, mesh: &Mesh, to: &str, sender: &str) -> BTreeSet<String> {
        if let Some((pk, _)) = to.split_once('/')
            && is_lower_hex(pk, 64)
        {
            return BTreeSet::from([pk.to_owned()]);
        }
        if is_lower_hex(to, 64) {
            return BTreeSet::from([to.to_owned()]);
        }
        let mut peers = mesh.cached_peers();
        peers.extend(
            self.sessions
                .lock()
                .values()
                .filter(|s| s.row.mesh_id == mesh.id())
                .map(|s| s.as_peer(&mesh.pubkey, &self.host)),
        );
        let others = peers
            .into_iter()
            .filter(|p| !(p.member == mesh.pubkey && p.session_id == sender));
        if to == "*" {
            others.map(|p| p.member).collect()
        } else if let Some(group) = to.strip_prefix('@') {
            let group = group.trim();
            others
                .filter(|p| p.groups.iter().any(|g| g == group))
                .map(|p| p.member)
                .collect()
        } else {
            // A display name may be the sender's own.
            let mut named: BTreeSet<String> = others
                .filter(|p| p.display_name == to)
                .map(|p| p.member)
                .collect();
            if named.is_empty()
                && self
                    .sessions
                    .lock()
                    .get(sender)
                    .is_some_and(|s| s.row.display_name == to)
            {
                named.insert(mesh.pubkey.clone());
            }
            named
        }
    }

    /// Seals `row` for its recipients and hands it to the link (dropped
    /// if the link is down: it is sent again on connect).
    pub(super) async fn transmit(&self, mesh: &Mesh, row: &OutboxRow, record: bool) {
        if !mesh.link.is_connected() || row.state != OutboxState::Pending {
            return;
        }
        let Some(body) = &row.body else { return };
        let mut members = self.resolve_members(mesh, &row.to, &row.session_id);
        members.extend(row.extra_members.iter().cloned());
        let mut envelopes = Vec::with_capacity(members.len());
        for member in &members {
            let Ok(pk) = MemberPublicKey::from_hex(member) else {
                continue;
            };
            match envelope::seal(body.as_bytes(), &pk, &mesh.key) {
                Ok(env) => envelopes.push(env),
                Err(e) => tracing::error!(error = %e, "sealing a message failed"),
            }
        }
        mesh.link.send(ClientFrame::Send(SendRequest {
            id: row.id.clone(),
            session_id: Some(row.session_id.clone()),
            to: row.to.clone(),
            priority: row.priority,
            envelopes,
        }));
        mesh.kick_outbox();
        if !record {
            return;
        }
        let id = row.id.clone();
        let now = self.now_ms();
        if let Err(e) = self
            .store
            .call(move |db| db.outbox_attempted(&id, now))
            .await
        {
            internal(e);
        }
    }

    /// Transmits every pending message of the mesh (after a connect), or
    /// only those overdue ([`outbox_rules::is_overdue`]).
    /// Returns whether messages are still waiting for their ack (so that
    /// the retry timer stays armed); true when that cannot be read.
    pub(super) async fn transmit_pending(&self, mesh: &Mesh, only_stale: bool) -> bool {
        let mesh_id = mesh.id().to_owned();
        let rows = match self.store.call(move |db| db.outbox_pending(&mesh_id)).await {
            Ok(rows) => rows,
            Err(e) => {
                internal(e);
                return true;
            }
        };
        let now = self.now_ms();
        let waiting = !rows.is_empty();
        for row in rows {
            if only_stale && !outbox_rules::is_overdue(&row, now) {
                continue;
            }
            self.transmit(mesh, &row, true).await;
        }
        waiting
    }

    /// The broker stored messages: record where they went (one write for
    /// all), then wake their senders.
    pub(super) async fn on_acks(&self, acks: Vec<Ack>) {
        if acks.is_empty() {
            return;
        }
        let stored = acks.clone();
        let now = self.now_ms();
        if let Err(e) = self
            .store
            .call(move |db| {
                for ack in &stored {
                    db.outbox_acked(&ack.id, &ack.message_id, &ack.recipients, now)?;
                }
                Ok(())
            })
            .await
        {
            internal(e);
            return;
        }
        {
            let mut waiters = self.waiters();
            for ack in acks {
                if let Some(waiter) = waiters.remove(&ack.id) {
                    let _ = waiter.send(SendOutcome::Acked(ack.recipients));
                }
            }
        }
        self.settle_draining().await;
    }

    /// A broker `error` about an outbox message: the retry rules
    /// ([`outbox_rules::on_refusal`]) decide, this carries it out. False
    /// when the error is about no outbox message (a request's, or none).
    pub(super) async fn on_send_error(
        self: &Arc<Self>,
        mesh: &Arc<Mesh>,
        error: &ErrorFrame,
    ) -> bool {
        let Some(id) = error.id.clone() else {
            return false;
        };
        let lookup = id.clone();
        let row = match self.store.call(move |db| db.outbox_get(&lookup)).await {
            Ok(Some(row)) if row.state == OutboxState::Pending => row,
            Ok(Some(_)) => return true,
            Ok(None) => return false,
            Err(e) => {
                internal(e);
                return true;
            }
        };
        tracing::info!(message_id = %id, code = %error.code, "the broker refused a send");
        let sender_waiting = self.waiters().contains_key(&id);
        let situation = Situation {
            connected_at: mesh.connected_at(),
            sender_waiting,
            target_unheard_of: !mesh.has_seen_name(&row.to)
                && self.names_no_one(mesh, &row.to, &row.session_id),
        };
        let now = self.now_ms();
        let verdict = outbox_rules::on_refusal(&row, &error.code, &error.members, &situation, now);
        match verdict {
            Verdict::Fail => self.fail(&id, &error.code, &error.message, false).await,
            Verdict::Withdraw => self.fail(&id, &error.code, &error.message, true).await,
            Verdict::Retry(retry) => self.retry(mesh, row, error, retry).await,
        }
        true
    }

    /// Records the refusal on the row (with any members to seal for too),
    /// then, in the background, does what `retry` asks and sends again.
    async fn retry(
        self: &Arc<Self>,
        mesh: &Arc<Mesh>,
        row: OutboxRow,
        error: &ErrorFrame,
        retry: Retry,
    ) {
        let detail = format!("{}: {}", error.code, error.message);
        let mut extra = row.extra_members.clone();
        if let Retry::Reseal(members) = &retry {
            extra.extend(members.iter().cloned());
        }
        let (id, now) = (row.id.clone(), self.now_ms());
        if let Err(e) = self
            .store
            .call(move |db| db.outbox_note_error(&id, &detail, Some(&extra), now))
            .await
        {
            internal(e);
            return;
        }
        let core = self.clone();
        let mesh = mesh.clone();
        tokio::spawn(async move {
            match retry {
                Retry::Reseal(_) | Retry::RefreshPeers => core.refresh_peers(&mesh).await,
                Retry::Reopen => {
                    let session = core
                        .sessions
                        .lock()
                        .get(&row.session_id)
                        .map(|s| s.row.clone());
                    match session {
                        Some(r) => core.open_at_broker(&mesh, &r).await,
                        None => {
                            let why =
                                "the sending session ended before the broker accepted the message";
                            return core
                                .fail(&row.id, &ErrorCode::UnknownSession, why, false)
                                .await;
                        }
                    }
                }
                Retry::After(delay) => tokio::time::sleep(delay).await,
            }
            let lookup = row.id.clone();
            if let Ok(Some(row)) = core.store.call(move |db| db.outbox_get(&lookup)).await {
                core.transmit(&mesh, &row, true).await;
            }
        });
    }

    /// The one way a message fails for good: the row is marked failed with
    /// why (or, when `withdraw`, removed: bad input leaves nothing), a
    /// sender still waiting hears the code, and sessions that were only
    /// waiting for their last message may end.
    async fn fail(&self, id: &str, code: &ErrorCode, message: &str, withdraw: bool) {
        let detail = format!("{code}: {message}");
        let (rid, now) = (id.to_owned(), self.now_ms());
        if let Err(e) = self
            .store
            .call(move |db| {
                if withdraw {
                    db.outbox_withdraw(&rid)
                } else {
                    db.outbox_failed(&rid, &detail, now)
                }
            })
            .await
        {
            internal(e);
        }
        if let Some(waiter) = self.waiters().remove(id) {
            let error = IpcError::new(IpcErrorCode::from(code), message);
            let _ = waiter.send(SendOutcome::Failed(error));
        }
        self.settle_draining().await;
    }

    /// Asks the broker for the current peer list and caches it. The
    /// worker caches the same reply too, but maybe only after the caller
    /// has read the cache: the caller must see this answer.
    pub(super) async fn refresh_peers(&self, mesh: &Mesh) {
        if let Some(ServerFrame::PeersList { peers, .. }) = self.ask_peers(mesh, false).await {
            mesh.replace_peers(peers);
        }
    }

    /// One `list_peers` round trip to the mesh's broker (3 s), with the
    /// members extension when `members`; `None` when no answer came.
    pub(super) async fn ask_peers(&self, mesh: &Mesh, members: bool) -> Option<ServerFrame> {
        let id = format!("r{}", self.next_id());
        mesh.link
            .request(
                ClientFrame::ListPeers {
                    id: Some(id.clone()),
                    members,
                },
                ReplyKey::RequestId(id),
                Duration::from_secs(3),
            )
            .await
    }
}

fn is_member_form(to: &str) -> bool {
    is_lower_hex(to, 64)
        || to
            .split_once('/')
            .is_some_and(|(pk, _)| is_lower_hex(pk, 64))
}
