//! What happens once the database has a message or a receipt: the sender's
//! `ack`, the pushes to recipients that are online now, and receipts
//! relayed to the sender's connections; and the redelivery of stored
//! copies to a connection that has just come (see [`redeliver`]).
//!
//! Answers run on the async runtime right after the commit, one message
//! after the other in number order. They look at who is live *after* the
//! commit, so a recipient that connected while the message was being
//! written is pushed to here; one that connected earlier reads the message
//! in its redelivery. The writer's dispatch watermark, read when a
//! connection or session becomes visible, tells the two apart, so nobody
//! is missed and nobody gets the same push both ways.
//!
//! The jobs the writer carries ([`SendJob`], [`ReceiptJob`]) are defined
//! here, beside what answers them, so that the writer depends on this
//! module and not the other way round.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::extract::ws::{Message, Utf8Bytes};
use claudemesh_protocol::wire::{
    Ack, DeliveryState, ErrorCode, MessageSender, Priority, Push, RecipientState, ServerFrame,
};

use crate::clock::Clock;
use crate::hub::{ConnHandle, ConnId, Mesh};
use crate::metrics::Metrics;
use crate::store::{
    InsertOutcome, NewMessage, PendingPush, ReceiptRoute, RecipientCopy, Store, StoreError,
};

/// A `send` on its way to the writer, with what is needed to answer it.
pub struct SendJob {
    pub message: NewMessage,
    pub mesh: Arc<Mesh>,
    /// The sending connection.
    pub conn: ConnHandle,
    /// The send's `id`.
    pub request_id: String,
}

/// A receipt to record and relay to the sender.
pub struct ReceiptJob {
    pub mesh: Arc<Mesh>,
    pub message_id: String,
    pub member_id: String,
    pub pubkey: String,
    /// For `seen`: the session that saw it.
    pub session_id: Option<String>,
    pub at: i64,
}

fn text(frame: &ServerFrame) -> Message {
    Message::Text(Utf8Bytes::from(frame.to_json()))
}

/// What a `push` frame says, borrowed from a message just stored or from a
/// stored copy being redelivered: the one place a push is built, so that
/// both paths send the same frame.
struct PushParts<'a> {
    message_id: &'a str,
    sender_pubkey: &'a str,
    sender_session: &'a str,
    sender_name: &'a str,
    target: &'a str,
    priority: Priority,
    sent_at: i64,
    nonce: &'a str,
    ciphertext: &'a str,
}

impl<'a> PushParts<'a> {
    /// A copy of a message that has just been stored.
    fn of_new(m: &'a NewMessage, copy: &'a RecipientCopy) -> Self {
        Self {
            message_id: &m.message_id,
            sender_pubkey: &m.sender.pubkey,
            sender_session: &m.sender.session_id,
            sender_name: &m.sender.display_name,
            target: &m.target,
            priority: m.priority,
            sent_at: m.sent_at,
            nonce: &copy.nonce,
            ciphertext: &copy.ciphertext,
        }
    }

    /// A stored copy, for redelivery.
    fn of_pending(p: &'a PendingPush) -> Self {
        Self {
            message_id: &p.message_id,
            sender_pubkey: &p.sender_pubkey,
            sender_session: &p.sender_session,
            sender_name: &p.sender_name,
            target: &p.target,
            priority: p.priority,
            sent_at: p.sent_at,
            nonce: &p.nonce,
            ciphertext: &p.ciphertext,
        }
    }

    /// The frame, for the connection carrying `sessions` (empty: the
    /// whole member).
    fn frame(&self, sessions: Vec<String>) -> Message {
        text(&ServerFrame::Push(Push {
            message_id: self.message_id.to_owned(),
            from: MessageSender {
                member: self.sender_pubkey.to_owned(),
                session_id: self.sender_session.to_owned(),
                display_name: self.sender_name.to_owned(),
            },
            to: self.target.to_owned(),
            sessions,
            priority: self.priority,
            nonce: self.nonce.to_owned(),
            ciphertext: self.ciphertext.to_owned(),
            sent_at: self.sent_at,
        }))
    }
}

/// Answers a committed (or failed) send: `ack` first, then the pushes.
pub fn send_committed(
    job: SendJob,
    outcome: Result<InsertOutcome, StoreError>,
    metrics: &Metrics,
    watermark: &AtomicI64,
) {
    let SendJob {
        message,
        mesh,
        conn,
        request_id,
    } = job;
    match outcome {
        Err(e) if e.is_disk_full() => {
            tracing::error!(error = %e, "the disk is full: a message was refused");
            metrics.message_rejected("storage_full");
            let err = ServerFrame::error(
                ErrorCode::Unavailable,
                "the broker's disk is full, so this message was not stored; send it again \
                 with the same id later (it is kept once space is freed)",
                Some(request_id),
            );
            conn.send(text(&err));
        }
        Err(e) if e.is_unavailable() => {
            tracing::error!(error = %e, "the database is unreachable: a message was refused");
            metrics.message_rejected(ErrorCode::Unavailable.as_str());
            let err = ServerFrame::error(
                ErrorCode::Unavailable,
                "the broker cannot reach its database, so this message was not stored; send \
                 it again with the same id in a moment",
                Some(request_id),
            );
            conn.send(text(&err));
        }
        Err(e) => {
            tracing::error!(error = %e, "storing a message failed");
            metrics.message_rejected(ErrorCode::InternalError.as_str());
            let err = ServerFrame::error(
                ErrorCode::InternalError,
                "the broker could not store this message; send it again with the same id",
                Some(request_id),
            );
            conn.send(text(&err));
        }
        Ok(InsertOutcome::Duplicate {
            message_id,
            recipients,
        }) => {
            Metrics::inc(&metrics.messages_duplicate);
            conn.send(text(&ServerFrame::Ack(Ack {
                id: request_id,
                message_id,
                duplicate: true,
                recipients,
            })));
        }
        Ok(InsertOutcome::Stored) => {
            Metrics::inc(&metrics.messages_routed);
            let (states, pushes, queued) = plan_pushes(&mesh, &message, watermark);
            Metrics::add(&metrics.messages_queued, queued);
            Metrics::add(&metrics.messages_pushed, pushes.len() as u64);
            conn.send(text(&ServerFrame::Ack(Ack {
                id: request_id,
                message_id: message.message_id.clone(),
                duplicate: false,
                recipients: states,
            })));
            for (handle, frame) in pushes {
                handle.send(frame);
            }
        }
    }
}

/// Under the mesh lock: which connections get a push, and each
/// recipient's state for the `ack`. Returns (states, pushes, copies queued).
/// Also advances the dispatch watermark to this message, under the same
/// lock (see [`crate::writer::Writer::dispatched`]).
fn plan_pushes(
    mesh: &Mesh,
    m: &NewMessage,
    watermark: &AtomicI64,
) -> (Vec<RecipientState>, Vec<(ConnHandle, Message)>, u64) {
    let state = mesh.lock();
    watermark.fetch_max(m.seq, Ordering::SeqCst);
    let mut states = Vec::new();
    let mut pushes = Vec::new();
    let mut queued = 0;
    for copy in &m.recipients {
        if copy.sessions.is_empty() {
            // The whole member: every connection it has.
            let conns = state.member_conns(&copy.member_id);
            // Sessions on other nodes of a cluster: pushed there.
            let elsewhere = state.sessions_live_elsewhere(&copy.member_id);
            if conns.is_empty() && elsewhere.is_empty() {
                queued += 1;
                states.push(RecipientState {
                    member: copy.pubkey.clone(),
                    session_id: None,
                    state: DeliveryState::Queued,
                });
                continue;
            }
            let frame = PushParts::of_new(m, copy).frame(Vec::new());
            let mut listed = false;
            for id in conns {
                if let Some(c) = state.conn(*id) {
                    if c.handle.first_push(&m.message_id, &[]) {
                        pushes.push((c.handle.clone(), frame.clone()));
                    }
                    for s in &c.sessions {
                        listed = true;
                        states.push(RecipientState {
                            member: copy.pubkey.clone(),
                            session_id: Some(s.clone()),
                            state: DeliveryState::Delivered,
                        });
                    }
                }
            }
            for s in elsewhere {
                listed = true;
                states.push(RecipientState {
                    member: copy.pubkey.clone(),
                    session_id: Some(s),
                    state: DeliveryState::Delivered,
                });
            }
            if !listed {
                states.push(RecipientState {
                    member: copy.pubkey.clone(),
                    session_id: None,
                    state: DeliveryState::Delivered,
                });
            }
            continue;
        }
        // Named sessions: push to the connection carrying each of them.
        let mut by_conn: HashMap<ConnId, Vec<String>> = HashMap::new();
        let mut any_queued = false;
        for s in &copy.sessions {
            let entry = state.session(&(copy.member_id.clone(), s.clone()));
            let live = entry.and_then(|e| e.conn);
            let st = match live {
                Some(c) => {
                    by_conn.entry(c).or_default().push(s.clone());
                    DeliveryState::Delivered
                }
                // Another node pushes it.
                None if entry.is_some_and(|e| e.is_live_elsewhere()) => DeliveryState::Delivered,
                None => {
                    any_queued = true;
                    DeliveryState::Queued
                }
            };
            states.push(RecipientState {
                member: copy.pubkey.clone(),
                session_id: Some(s.clone()),
                state: st,
            });
        }
        if any_queued {
            queued += 1;
        }
        for (id, sessions) in by_conn {
            if let Some(c) = state.conn(id)
                && c.handle.first_push(&m.message_id, &sessions)
            {
                let frame = PushParts::of_new(m, copy).frame(sessions);
                pushes.push((c.handle.clone(), frame));
            }
        }
    }
    (states, pushes, queued)
}

/// Relays a delivery or seen receipt to every connection of the sender.
/// A delivery is per member: it is reported once per session the message
/// named, or once with an empty `sessionId` for a whole-member message.
pub fn relay_receipt(job: &ReceiptJob, state: DeliveryState, route: &ReceiptRoute) {
    let receipt = Receipt {
        message_id: &job.message_id,
        member: &job.pubkey,
        session_id: job.session_id.as_deref(),
        state,
        at: job.at,
    };
    relay_receipt_in(&job.mesh, &receipt, route);
}

/// A receipt to relay, wherever it was recorded (this node, or another
/// node of the cluster).
pub struct Receipt<'a> {
    pub message_id: &'a str,
    /// The recipient's public key.
    pub member: &'a str,
    /// For `seen`: the session that saw it.
    pub session_id: Option<&'a str>,
    pub state: DeliveryState,
    pub at: i64,
}

/// Relays `receipt` to the sender's connections in `mesh` (see
/// [`relay_receipt`]).
pub fn relay_receipt_in(mesh: &Mesh, receipt: &Receipt<'_>, route: &ReceiptRoute) {
    let sessions: Vec<String> = match (receipt.session_id, receipt.state) {
        (Some(s), DeliveryState::Seen) => vec![s.to_owned()],
        _ if route.sessions.is_empty() => vec![String::new()],
        _ => route.sessions.clone(),
    };
    let frames: Vec<Message> = sessions
        .into_iter()
        .map(|session_id| {
            text(&ServerFrame::Receipt {
                message_id: receipt.message_id.to_owned(),
                member: receipt.member.to_owned(),
                session_id,
                state: receipt.state,
                at: receipt.at,
            })
        })
        .collect();
    let mesh = mesh.lock();
    for f in &frames {
        mesh.send_to_member(&route.sender_member_id, f);
    }
}

/// Pushes a stored copy (announced by another node) to this node's
/// connections for it: every connection of the member for a whole-member
/// copy, else the connections carrying the sessions it names. Returns
/// how many pushes were queued.
pub fn push_copy(mesh: &Mesh, member_id: &str, p: &PendingPush) -> u64 {
    let state = mesh.lock();
    let parts = PushParts::of_pending(p);
    let mut pushed = 0;
    if p.sessions.is_empty() {
        for id in state.member_conns(member_id) {
            if let Some(c) = state.conn(*id)
                && c.handle.first_push(&p.message_id, &[])
                && c.handle.send(parts.frame(Vec::new()))
            {
                pushed += 1;
            }
        }
        return pushed;
    }
    let mut by_conn: HashMap<ConnId, Vec<String>> = HashMap::new();
    for s in &p.sessions {
        if let Some(c) = state
            .session(&(member_id.to_owned(), s.clone()))
            .and_then(|e| e.conn)
        {
            by_conn.entry(c).or_default().push(s.clone());
        }
    }
    for (id, sessions) in by_conn {
        if let Some(c) = state.conn(id)
            && c.handle.first_push(&p.message_id, &sessions)
            && c.handle.send(parts.frame(sessions))
        {
            pushed += 1;
        }
    }
    pushed
}

/// A connection, or one session it has just opened, that has become
/// visible to live pushes and must still read what was planned before.
pub struct Redelivery {
    pub handle: ConnHandle,
    pub member_id: String,
    /// Only the copies naming this session (`None`: all of the member's).
    pub session: Option<String>,
    /// The writer's dispatch watermark, read under the mesh lock that made
    /// the connection (or session) visible.
    pub dispatched: i64,
}

/// Pushes the member's stored, unacknowledged messages to this connection
/// (all of them, or those naming `session`).
///
/// Every message numbered above `dispatched` is planned after the
/// connection became visible, so it is pushed there live, and only those
/// at or below it need this read (which also keeps a message from being
/// pushed twice, live and again here).
pub async fn redeliver(to: Redelivery, store: Arc<Store>, metrics: Arc<Metrics>, clock: Clock) {
    let Redelivery {
        handle,
        member_id,
        session,
        dispatched,
    } = to;
    let now = clock.now_ms();
    // In a cluster, messages committed by other nodes are not ordered by
    // this node's watermark: everything is read, and the connection's
    // record of recent pushes keeps the live path and this read from
    // sending one message twice.
    let up_to = if store.is_shared() {
        i64::MAX
    } else {
        dispatched
    };
    let pending = match store.pending_for_member(&member_id, now, up_to).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "reading queued messages failed");
            return;
        }
    };
    for p in pending {
        if let Some(s) = &session
            && !p.sessions.iter().any(|x| x == s)
        {
            continue;
        }
        if !handle.first_push(&p.message_id, &p.sessions) {
            continue;
        }
        if !handle
            .send_wait(PushParts::of_pending(&p).frame(p.sessions.clone()))
            .await
        {
            return;
        }
        Metrics::inc(&metrics.messages_pushed);
    }
}
