//! What happens once the database has a message or a receipt: the sender's
//! `ack`, the pushes to recipients that are online now, and receipts
//! relayed to the sender's connections.
//!
//! This runs on the async runtime right after the commit, one message
//! after the other in number order. It looks at who is live *after* the
//! commit, so a recipient that connected while the message was being
//! written is pushed to here; one that connected earlier reads the message
//! in its redelivery. The writer's dispatch watermark, read when a
//! connection or session becomes visible, tells the two apart, so nobody
//! is missed and nobody gets the same push both ways.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::extract::ws::{Message, Utf8Bytes};
use claudemesh_protocol::wire::{
    Ack, DeliveryState, MessageSender, Push, RecipientState, ServerFrame,
};

use crate::hub::{ConnHandle, ConnId, Mesh};
use crate::metrics::Metrics;
use crate::store::{NewMessage, PendingPush, ReceiptRoute, StoreError, messages::InsertOutcome};
use crate::writer::ReceiptJob;

/// A `send` on its way to the writer, with what is needed to answer it.
pub struct SendJob {
    pub message: NewMessage,
    pub mesh: Arc<Mesh>,
    /// The sending connection.
    pub conn: ConnHandle,
    /// The send's `id`.
    pub request_id: String,
}

fn text(frame: &ServerFrame) -> Message {
    Message::Text(Utf8Bytes::from(frame.to_json()))
}

fn push_frame(m: &NewMessage, sessions: Vec<String>, nonce: &str, ciphertext: &str) -> Message {
    text(&ServerFrame::Push(Push {
        message_id: m.message_id.clone(),
        from: MessageSender {
            member: m.sender.pubkey.clone(),
            session_id: m.sender.session_id.clone(),
            display_name: m.sender.display_name.clone(),
        },
        to: m.target.clone(),
        sessions,
        priority: m.priority,
        nonce: nonce.to_owned(),
        ciphertext: ciphertext.to_owned(),
        sent_at: m.sent_at,
    }))
}

/// The push frame for a stored copy, for redelivery.
pub fn pending_push_frame(p: &PendingPush) -> Message {
    text(&ServerFrame::Push(Push {
        message_id: p.message_id.clone(),
        from: MessageSender {
            member: p.sender_pubkey.clone(),
            session_id: p.sender_session.clone(),
            display_name: p.sender_name.clone(),
        },
        to: p.target.clone(),
        sessions: p.sessions.clone(),
        priority: p.priority,
        nonce: p.nonce.clone(),
        ciphertext: p.ciphertext.clone(),
        sent_at: p.sent_at,
    }))
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
                "unavailable",
                "the broker's disk is full, so this message was not stored; send it again \
                 with the same id later (it is kept once space is freed)",
                Some(request_id),
            );
            conn.send(text(&err));
        }
        Err(e) => {
            tracing::error!(error = %e, "storing a message failed");
            metrics.message_rejected("internal_error");
            let err = ServerFrame::error(
                "internal_error",
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
            if conns.is_empty() {
                queued += 1;
                states.push(RecipientState {
                    member: copy.pubkey.clone(),
                    session_id: None,
                    state: DeliveryState::Queued,
                });
                continue;
            }
            let frame = push_frame(m, Vec::new(), &copy.nonce, &copy.ciphertext);
            let mut listed = false;
            for id in conns {
                if let Some(c) = state.conn(*id) {
                    pushes.push((c.handle.clone(), frame.clone()));
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
            let live = state
                .session(&(copy.member_id.clone(), s.clone()))
                .and_then(|e| e.conn);
            let st = match live {
                Some(c) => {
                    by_conn.entry(c).or_default().push(s.clone());
                    DeliveryState::Delivered
                }
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
            if let Some(c) = state.conn(id) {
                let frame = push_frame(m, sessions, &copy.nonce, &copy.ciphertext);
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
    let sessions: Vec<String> = match (&job.session_id, state) {
        (Some(s), DeliveryState::Seen) => vec![s.clone()],
        _ if route.sessions.is_empty() => vec![String::new()],
        _ => route.sessions.clone(),
    };
    let frames: Vec<Message> = sessions
        .into_iter()
        .map(|session_id| {
            text(&ServerFrame::Receipt {
                message_id: job.message_id.clone(),
                member: job.pubkey.clone(),
                session_id,
                state,
                at: job.at,
            })
        })
        .collect();
    let mesh = job.mesh.lock();
    for f in &frames {
        mesh.send_to_member(&route.sender_member_id, f);
    }
}
