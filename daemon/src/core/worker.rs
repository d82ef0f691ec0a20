//! Each mesh's worker: turns what its link hears into state changes, in
//! order, and after every connect replays what the broker must know.

use std::sync::Arc;
use std::time::Duration;

use claudemesh_protocol::ipc::Event;
use claudemesh_protocol::wire::{
    ClientFrame, DeliveryState, HelloAck, PeerEvent, Push, ServerFrame,
};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::attach::session_open_frame;
use super::{Core, internal};
use crate::link::{LinkEvent, LinkStatus};
use crate::mesh::Mesh;

/// How often a connected mesh retransmits messages whose ack is overdue
/// (while any wait for one).
const RETRY_TICK: Duration = Duration::from_secs(5);
/// A deadline for the disarmed retry branch (never polled).
const IDLE: Duration = Duration::from_secs(3600);
/// At most this many link events are handled as one batch.
const MAX_BATCH: usize = 512;
/// Pushes that could not be stored (a full disk) are kept for the next
/// retry tick up to this many ciphertext bytes; past it they are dropped
/// unacknowledged, and the broker pushes them again on the next connect.
const MAX_UNSTORED_BYTES: usize = 32 * 1024 * 1024;

impl Core {
    /// Runs until the link's event channel closes (the mesh was stopped).
    pub(super) async fn mesh_worker(
        self: Arc<Self>,
        mesh: Arc<Mesh>,
        mut events: mpsc::UnboundedReceiver<LinkEvent>,
    ) {
        // Pushes and acks name sessions: handle none before they are back.
        let _ = self.restored.subscribe().wait_for(|done| *done).await;
        // The retry timer is armed only while there is something to retry
        // (a message waiting for its ack, pushes not yet stored): an idle
        // mesh's worker sleeps until its link hears something.
        let mut retry_at = Some(Instant::now() + RETRY_TICK);
        let mut unstored = Unstored::default();
        loop {
            let deadline = retry_at.unwrap_or_else(|| Instant::now() + IDLE);
            tokio::select! {
                event = events.recv() => match event {
                    Some(first) => {
                        let mut batch = vec![first];
                        while batch.len() < MAX_BATCH {
                            match events.try_recv() {
                                Ok(e) => batch.push(e),
                                Err(_) => break,
                            }
                        }
                        let failed = self.on_link_events(&mesh, batch).await;
                        unstored.keep(mesh.slug(), failed);
                        if !unstored.is_empty() {
                            retry_at.get_or_insert_with(|| Instant::now() + RETRY_TICK);
                        }
                    }
                    None => return,
                },
                () = mesh.outbox_kicked() => {
                    retry_at.get_or_insert_with(|| Instant::now() + RETRY_TICK);
                }
                () = tokio::time::sleep_until(deadline), if retry_at.is_some() => {
                    if !unstored.is_empty() {
                        let failed = self.on_pushes(&mesh, unstored.take()).await;
                        unstored.keep(mesh.slug(), failed);
                    }
                    // Disconnected, the next connect sends everything
                    // pending (and kicks again).
                    let waiting =
                        mesh.link.is_connected() && self.transmit_pending(&mesh, true).await;
                    retry_at = (waiting || !unstored.is_empty())
                        .then(|| Instant::now() + RETRY_TICK);
                }
            }
        }
    }

    /// Handles what arrived together. Acks, pushes and receipts are each
    /// committed in one write: under load that is the difference between
    /// one fsync per message and one per batch. Order that matters is kept:
    /// control events first as they came, then acks (a receipt needs its
    /// ack's `messageId`, and a send error its row), send errors, pushes,
    /// and receipts last.
    /// Returns the pushes that could not be stored.
    async fn on_link_events(
        self: &Arc<Self>,
        mesh: &Arc<Mesh>,
        batch: Vec<LinkEvent>,
    ) -> Vec<Push> {
        let frames = batch
            .iter()
            .filter(|e| matches!(e, LinkEvent::Frame(_)))
            .count();
        let unstored = self.handle_link_events(mesh, batch).await;
        mesh.link.frames_handled(frames);
        unstored
    }

    async fn handle_link_events(
        self: &Arc<Self>,
        mesh: &Arc<Mesh>,
        batch: Vec<LinkEvent>,
    ) -> Vec<Push> {
        let mut acks = Vec::new();
        let mut errors = Vec::new();
        let mut pushes = Vec::new();
        let mut receipts = Vec::new();
        for event in batch {
            match event {
                LinkEvent::Connected(ack) => self.on_connected(mesh, ack).await,
                LinkEvent::State(status) => self.on_link_state(mesh, status),
                LinkEvent::Frame(ServerFrame::Ack(ack)) => acks.push(ack),
                LinkEvent::Frame(ServerFrame::Push(push)) => pushes.push(push),
                LinkEvent::Frame(ServerFrame::Error(e)) => errors.push(e),
                LinkEvent::Frame(ServerFrame::Receipt {
                    message_id,
                    member,
                    session_id,
                    state,
                    ..
                }) => receipts.push((message_id, member, session_id, state)),
                LinkEvent::Frame(frame) => self.on_control_frame(mesh, frame).await,
            }
        }
        self.on_acks(acks).await;
        for e in errors {
            if !self.on_send_error(mesh, &e).await {
                tracing::info!(mesh = %mesh.slug(), code = %e.code, message = %e.message, "the broker reported an error");
            }
        }
        let unstored = self.on_pushes(mesh, pushes).await;
        self.on_receipts(receipts).await;
        unstored
    }

    /// The hello was accepted: reopen sessions, close those that ended
    /// meanwhile, resend the outbox and owed receipts.
    async fn on_connected(self: &Arc<Self>, mesh: &Arc<Mesh>, ack: HelloAck) {
        let mesh_id = mesh.id().to_owned();
        if let Err(e) = self
            .store
            .call(move |db| db.set_mesh_accepted(&mesh_id))
            .await
        {
            internal(e);
        }
        mesh.mark_connected(self.now_ms());
        mesh.replace_peers(ack.peers);
        for row in self.sessions.rows(Some(mesh.id())) {
            mesh.link.send(session_open_frame(&row, &self.host));
        }
        for sid in mesh.take_pending_closes() {
            mesh.link
                .send(ClientFrame::SessionClose { session_id: sid });
        }
        self.transmit_pending(mesh, false).await;
        let mesh_id = mesh.id().to_owned();
        match self.store.call(move |db| db.receipts_due(&mesh_id)).await {
            Ok(due) => self.send_receipts(due).await,
            Err(e) => {
                internal(e);
            }
        }
    }

    fn on_link_state(&self, mesh: &Mesh, status: LinkStatus) {
        let event = Event::LinkState {
            mesh: mesh.slug().to_owned(),
            state: status.state,
            detail: status.detail,
        };
        self.sessions.broadcast(mesh.id(), None, &event);
    }

    async fn on_control_frame(&self, mesh: &Mesh, frame: ServerFrame) {
        match frame {
            ServerFrame::SessionOpened {
                session_id,
                display_name,
            } => self.set_display_name(&session_id, display_name).await,
            ServerFrame::PeersList { peers, .. } => mesh.replace_peers(peers),
            ServerFrame::Event { event, peer } => {
                mesh.apply_peer_event(event, &peer);
                if peer.member == mesh.pubkey && self.sessions.lock().contains_key(&peer.session_id)
                {
                    return; // our own session, already told locally
                }
                let event = match event {
                    PeerEvent::PeerJoined => Event::PeerJoined { peer },
                    PeerEvent::PeerLeft => Event::PeerLeft { peer },
                    PeerEvent::PeerUpdated => Event::PeerUpdated { peer },
                };
                self.sessions.broadcast(mesh.id(), None, &event);
            }
            _ => {}
        }
    }

    /// Delivery and seen receipts for messages sent from here: recorded
    /// in one write, and told to each sending session that is attached.
    async fn on_receipts(&self, receipts: Vec<(String, String, String, DeliveryState)>) {
        if receipts.is_empty() {
            return;
        }
        let stored = receipts.clone();
        let rows = match self
            .store
            .call(move |db| {
                let mut rows = Vec::with_capacity(stored.len());
                for (message_id, member, session_id, state) in &stored {
                    rows.push(db.outbox_receipt(message_id, member, session_id, *state)?);
                }
                Ok(rows)
            })
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                internal(e);
                return;
            }
        };
        let sessions = self.sessions.lock();
        for (row, (_, member, session_id, state)) in rows.into_iter().zip(receipts) {
            let Some(row) = row else { continue };
            if let Some(sender) = sessions.get(&row.session_id) {
                sender.push(Event::Receipt {
                    message_id: row.id,
                    member,
                    session_id,
                    state,
                });
            }
        }
    }
}

/// Pushes waiting to be stored again, within [`MAX_UNSTORED_BYTES`].
#[derive(Default)]
struct Unstored {
    pushes: Vec<Push>,
    bytes: usize,
}

impl Unstored {
    fn keep(&mut self, mesh: &str, failed: Vec<Push>) {
        let mut dropped = 0usize;
        for push in failed {
            let size = push.ciphertext.len();
            if self.bytes + size > MAX_UNSTORED_BYTES {
                dropped += 1;
                continue;
            }
            self.bytes += size;
            self.pushes.push(push);
        }
        if dropped > 0 {
            tracing::warn!(%mesh, dropped, "too many unstored pushes held; the broker sends the rest again on the next connect");
        }
    }

    fn is_empty(&self) -> bool {
        self.pushes.is_empty()
    }

    fn take(&mut self) -> Vec<Push> {
        self.bytes = 0;
        std::mem::take(&mut self.pushes)
    }
}
