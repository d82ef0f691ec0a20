//! The handlers of the client frames that follow the hello: one method of
//! [`Connection`] per frame type, from [`Connection::on_text`] down.
//!
//! A frame that does not parse, or names a session this connection does
//! not carry, gets an `error` (echoing the request `id` when there is one)
//! and the connection lives on: only the handshake closes connections.

use std::collections::HashMap;

use claudemesh_protocol::encoding::{b64_decode, is_lower_hex, is_valid_id};
use claudemesh_protocol::limits::{
    self, MAX_CIPHERTEXT_CHARS, MAX_CWD_BYTES, MAX_DISPLAY_NAME_CHARS, MAX_GROUP_CHARS,
    MAX_GROUPS_PER_SESSION, MAX_HOST_BYTES, MAX_SUMMARY_BYTES, NONCE_BYTES, QUEUE_TTL_MS,
    RECEIPT_BURST, RECEIPT_RATE_PER_SEC, TextError,
};
use claudemesh_protocol::wire::{
    ClientFrame, ConnectionRole, DeliveryState, Envelope, ErrorCode, ErrorFrame, MemberPresence,
    SendRequest, ServerFrame, SessionOpen,
};

use crate::delivery::{self, ReceiptJob, Redelivery, SendJob};
use crate::hub::presence::{normalize_group, normalize_groups};
use crate::hub::{SessionError, SessionSpec};
use crate::router::{self, Recipient, Unresolved};
use crate::store::{NewMessage, RecipientCopy, SenderInfo};
use crate::writer::WriteOp;
use crate::ws::connection::Connection;

/// A refused request: an error code and a sentence.
struct Refusal {
    code: ErrorCode,
    message: String,
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

fn unknown_session(sid: &str) -> Refusal {
    session_refusal(SessionError::Unknown, sid)
}

fn session_refusal(e: SessionError, sid: &str) -> Refusal {
    let (code, message) = e.code_and_message(sid);
    refuse(code, message)
}

fn text_refusal(e: TextError) -> Refusal {
    refuse(e.code(), e.to_string())
}

/// The free-text fields of a `session_open` within their limits.
fn check_session_open(open: &SessionOpen) -> Result<(), TextError> {
    if let Some(name) = &open.display_name {
        limits::check_name("displayName", name, MAX_DISPLAY_NAME_CHARS)?;
    }
    limits::check_line("cwd", &open.cwd, MAX_CWD_BYTES)?;
    limits::check_line("host", &open.host, MAX_HOST_BYTES)?;
    limits::check_text_bytes("summary", &open.summary, MAX_SUMMARY_BYTES)?;
    if open.groups.len() > MAX_GROUPS_PER_SESSION {
        return Err(TextError::TooLong {
            field: "groups",
            max: MAX_GROUPS_PER_SESSION,
            unit: "groups",
        });
    }
    for g in &open.groups {
        limits::check_name("groups", g, MAX_GROUP_CHARS + 1)?;
    }
    Ok(())
}

impl Connection {
    /// Sends an `error` frame.
    pub fn error(&self, code: ErrorCode, message: &str, id: Option<String>) {
        self.send_error(ErrorFrame {
            code,
            message: message.to_owned(),
            id,
            members: Vec::new(),
        });
    }

    /// Sends an `error` frame built in full (one with `members`).
    fn send_error(&self, error: ErrorFrame) {
        self.ctx.metrics.frame_error(error.code.as_str());
        self.reply(ServerFrame::Error(error));
    }

    fn reply(&self, frame: ServerFrame) {
        self.handle.send_text(frame.to_json());
    }

    /// Handles one text frame.
    pub async fn on_text(&self, text: &str) {
        match ClientFrame::parse(text) {
            Ok(frame) => self.on_frame(frame).await,
            Err(failure) => {
                self.error(failure.error.code(), &failure.error.to_string(), failure.id)
            }
        }
    }

    async fn on_frame(&self, frame: ClientFrame) {
        let result = match frame {
            ClientFrame::Hello(_) => Err(refuse(
                ErrorCode::UnexpectedHello,
                "this connection has already said hello",
            )),
            ClientFrame::SessionOpen(open) => self.session_open(open).await,
            ClientFrame::SessionClose { session_id } => self.session_close(&session_id),
            ClientFrame::ListPeers { id, members } => {
                let exclude = self.own_session_key();
                let list = self.mesh.lock().peers(exclude.as_ref());
                let members = if members {
                    Some(self.member_presence().await)
                } else {
                    None
                };
                match members.transpose() {
                    Ok(members) => {
                        self.reply(ServerFrame::PeersList {
                            id,
                            peers: list.peers,
                            truncated: list.truncated,
                            members,
                        });
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            ClientFrame::SetStatus { session_id, status } => self.update(session_id, move |p| {
                let changed = p.status != status;
                p.status = status;
                changed
            }),
            ClientFrame::SetSummary {
                session_id,
                summary,
            } => {
                if let Err(e) = limits::check_text_bytes("summary", &summary, MAX_SUMMARY_BYTES) {
                    Err(text_refusal(e))
                } else {
                    self.update(session_id, move |p| {
                        let changed = p.summary != summary;
                        p.summary = summary;
                        changed
                    })
                }
            }
            ClientFrame::JoinGroup { session_id, group } => {
                let g = normalize_group(&group);
                if let Err(e) = limits::check_name("group", &group, MAX_GROUP_CHARS + 1) {
                    Err(text_refusal(e))
                } else if g.is_empty() {
                    Err(refuse(ErrorCode::Malformed, "a group needs a name"))
                } else {
                    let mut full = false;
                    let result = self.update(session_id, |p| {
                        if p.groups.contains(&g) {
                            return false;
                        }
                        if p.groups.len() >= MAX_GROUPS_PER_SESSION {
                            full = true;
                            return false;
                        }
                        p.groups.push(g);
                        true
                    });
                    if full {
                        Err(refuse(
                            ErrorCode::TooLarge,
                            format!(
                                "a session belongs to at most {MAX_GROUPS_PER_SESSION} groups; leave one first"
                            ),
                        ))
                    } else {
                        result
                    }
                }
            }
            ClientFrame::LeaveGroup { session_id, group } => {
                let g = normalize_group(&group);
                self.update(session_id, move |p| {
                    let before = p.groups.len();
                    p.groups.retain(|x| *x != g);
                    p.groups.len() != before
                })
            }
            ClientFrame::Send(send) => {
                let id = send.id.clone();
                match self.send(send).await {
                    Ok(()) => Ok(()),
                    Err(r) => {
                        self.ctx.metrics.message_rejected(r.code.as_str());
                        self.error(r.code, &r.message, Some(id));
                        return;
                    }
                }
            }
            ClientFrame::ClientAck { message_id } => {
                self.receipt(message_id, None, DeliveryState::Delivered)
                    .await
            }
            ClientFrame::Receipt {
                message_id,
                session_id,
                state,
            } => self.on_receipt(message_id, session_id, state).await,
            ClientFrame::MessageStatus { id, message_id } => {
                match self.message_status(&message_id).await {
                    Ok(recipients) => {
                        self.reply(ServerFrame::MessageStatusResult {
                            id,
                            message_id,
                            recipients,
                        });
                        Ok(())
                    }
                    Err(r) => {
                        self.error(r.code, &r.message, id);
                        return;
                    }
                }
            }
        };
        if let Err(r) = result {
            self.error(r.code, &r.message, None);
        }
    }

    /// The session a session-scoped frame is about: the hello's on a
    /// `role:"session"` connection (which may leave `sessionId` out), the
    /// named one on a daemon connection (which must name it).
    fn session_of(&self, given: Option<String>) -> Result<String, Refusal> {
        match (self.role, given) {
            (ConnectionRole::Session, None) => Ok(self.hello_session.clone()),
            (ConnectionRole::Session, Some(s)) if s == self.hello_session => Ok(s),
            (ConnectionRole::Session, Some(s)) => Err(unknown_session(&s)),
            (ConnectionRole::Daemon, Some(s)) => Ok(s),
            (ConnectionRole::Daemon, None) => Err(refuse(
                ErrorCode::Malformed,
                "sessionId is required on a daemon connection",
            )),
        }
    }

    fn own_session_key(&self) -> Option<(String, String)> {
        (self.role == ConnectionRole::Session)
            .then(|| (self.member.id.clone(), self.hello_session.clone()))
    }

    fn update(
        &self,
        session_id: Option<String>,
        change: impl FnOnce(&mut claudemesh_protocol::wire::Peer) -> bool,
    ) -> Result<(), Refusal> {
        let sid = self.session_of(session_id)?;
        self.mesh
            .lock()
            .update_session(self.id, &sid, change)
            .map_err(|e| session_refusal(e, &sid))
    }

    async fn session_open(&self, open: SessionOpen) -> Result<(), Refusal> {
        if self.role != ConnectionRole::Daemon {
            return Err(refuse(
                ErrorCode::WrongRole,
                "session_open is for role:\"daemon\" connections; this connection is itself a session",
            ));
        }
        if !is_valid_id(&open.session_id) {
            return Err(refuse(
                ErrorCode::Malformed,
                format!(
                    "sessionId must be 1 to {} characters, none of them a control character",
                    limits::MAX_ID_CHARS
                ),
            ));
        }
        check_session_open(&open).map_err(text_refusal)?;
        let sid = open.session_id.clone();
        let spec = SessionSpec {
            session_id: open.session_id,
            display_name: open.display_name,
            cwd: open.cwd,
            host: open.host,
            summary: Some(open.summary),
            groups: Some(normalize_groups(open.groups)),
            status: Some(open.status),
        };
        let now = self.ctx.now_ms();
        let name = {
            let mut state = self.mesh.lock();
            let name = state
                .open_session(self.id, spec, now)
                .map_err(|e| session_refusal(e, &sid))?;
            // Read under the lock that made the session visible to pushes.
            let dispatched = self.ctx.writer.dispatched();
            // Queued under the lock, so that it precedes any event about
            // this session on this connection.
            self.reply(ServerFrame::SessionOpened {
                session_id: sid.clone(),
                display_name: name.clone(),
            });
            (name, dispatched)
        };
        let (name, dispatched) = name;
        tracing::debug!(session = %sid, name = %name, "session opened");
        let to = Redelivery {
            handle: self.handle.clone(),
            member_id: self.member.id.clone(),
            session: Some(sid),
            dispatched,
        };
        tokio::spawn(delivery::redeliver(
            to,
            self.ctx.store.clone(),
            self.ctx.metrics.clone(),
            self.ctx.config.clock.clone(),
        ));
        Ok(())
    }

    fn session_close(&self, session_id: &str) -> Result<(), Refusal> {
        if self.role != ConnectionRole::Daemon {
            return Err(refuse(
                ErrorCode::WrongRole,
                "session_close is for role:\"daemon\" connections; close the connection instead",
            ));
        }
        self.mesh
            .lock()
            .close_session(self.id, session_id)
            .map_err(|_| unknown_session(session_id))
    }

    async fn send(&self, send: SendRequest) -> Result<(), Refusal> {
        if !is_valid_id(&send.id) {
            return Err(refuse(
                ErrorCode::Malformed,
                format!(
                    "the send id must be 1 to {} characters",
                    limits::MAX_ID_CHARS
                ),
            ));
        }
        let sid = self.session_of(send.session_id.clone())?;
        let envelopes = check_envelopes(&send.envelopes)?;
        let Some(target) = router::parse(&send.to) else {
            return Err(refuse(ErrorCode::Malformed, "`to` must not be empty"));
        };
        let sender_key = (self.member.id.clone(), sid.clone());
        let cfg = &self.ctx.config;
        let (sender_name, resolved) = {
            let mut state = self.mesh.lock();
            if !state.take_token(&self.member.id, cfg.send_rate_per_sec, cfg.send_burst) {
                return Err(refuse(
                    ErrorCode::RateLimited,
                    "too many messages from this member; slow down and retry",
                ));
            }
            if !state.carries(self.id, &sid) {
                return Err(unknown_session(&sid));
            }
            let name = state
                .session(&sender_key)
                .map(|s| s.peer.display_name.clone())
                .unwrap_or_else(|| sid.clone());
            (name, router::resolve(&state, &target, &sender_key))
        };
        let recipients = match resolved {
            Ok(r) => Ok(r),
            Err(Unresolved::Unknown) => Err(()),
            Err(Unresolved::AskMembers { pubkey, session }) => {
                self.member_recipient(&pubkey, session).await?.ok_or(())
            }
            Err(Unresolved::AskMemberName(name)) => {
                self.named_member_recipient(&name).await?.ok_or(())
            }
        };
        let recipients = match recipients {
            Ok(r) => r,
            Err(()) => {
                return self
                    .duplicate_or(&send.id, || {
                        refuse(
                            ErrorCode::UnknownTarget,
                            format!("no peer, member or group is named {:?}", send.to),
                        )
                    })
                    .await;
            }
        };

        let missing: Vec<&str> = recipients
            .iter()
            .filter(|r| !envelopes.contains_key(r.pubkey.as_str()))
            .map(|r| r.pubkey.as_str())
            .collect();
        if !missing.is_empty() {
            if self.duplicate_ack(&send.id).await? {
                return Ok(());
            }
            self.ctx
                .metrics
                .message_rejected(ErrorCode::MissingEnvelope.as_str());
            // `members` lets the client seal for them and send again.
            self.send_error(ErrorFrame {
                code: ErrorCode::MissingEnvelope,
                message: format!("no envelope for recipient member(s) {}", missing.join(", ")),
                id: Some(send.id),
                members: missing.into_iter().map(str::to_owned).collect(),
            });
            return Ok(());
        }

        let now = self.ctx.now_ms();
        let mut by_member: HashMap<&str, &Envelope> = envelopes;
        let copies = recipients
            .into_iter()
            .filter_map(|r| {
                let env = by_member.remove(r.pubkey.as_str())?;
                Some(RecipientCopy {
                    member_id: r.member_id,
                    pubkey: r.pubkey,
                    sessions: r.sessions,
                    nonce: env.nonce.clone(),
                    ciphertext: env.ciphertext.clone(),
                })
            })
            .collect();
        let message = NewMessage {
            // Assigned by the writer with the message's sequence number.
            message_id: String::new(),
            seq: 0,
            mesh_id: self.mesh.id.clone(),
            client_id: send.id.clone(),
            sender: SenderInfo {
                member_id: self.member.id.clone(),
                pubkey: self.member.pubkey.clone(),
                session_id: sid,
                display_name: sender_name,
            },
            target: send.to,
            priority: send.priority,
            sent_at: now,
            expires_at: now.saturating_add(QUEUE_TTL_MS),
            recipients: copies,
        };
        let job = SendJob {
            message,
            mesh: self.mesh.clone(),
            conn: self.handle.clone(),
            request_id: send.id,
        };
        if !self.ctx.writer.submit(WriteOp::Send(job)).await {
            return Err(refuse(
                ErrorCode::Unavailable,
                "the broker is shutting down; send again after reconnecting",
            ));
        }
        Ok(())
    }

    /// A member-level recipient found in the member table (the member has
    /// no listed session), or `None` if the key is no active member.
    async fn member_recipient(
        &self,
        pubkey: &str,
        session: Option<String>,
    ) -> Result<Option<Vec<Recipient>>, Refusal> {
        let found = self
            .ctx
            .store
            .member_by_pubkey(&self.mesh.id, pubkey)
            .await
            .map_err(|e| internal(&e))?;
        let Some(m) = found.filter(|m| !m.revoked) else {
            return Ok(None);
        };
        // A member online without that session is no target, as on one
        // node (where the router saw its connections): in a cluster it
        // may be connected to another node.
        if session.is_some()
            && let Some(cluster) = self
                .ctx
                .store
                .member_activity(&self.mesh.id)
                .await
                .map_err(|e| internal(&e))?
            && cluster.online.contains(&m.id)
        {
            return Ok(None);
        }
        Ok(Some(vec![Recipient {
            member_id: m.id,
            pubkey: m.pubkey,
            sessions: session.into_iter().collect(),
        }]))
    }

    /// The mesh's active members, online or when last seen.
    async fn member_presence(&self) -> Result<Vec<MemberPresence>, Refusal> {
        let all = self
            .ctx
            .store
            .list_members(&self.mesh.id)
            .await
            .map_err(|e| internal(&e))?;
        // In a cluster the member may be connected to another node: the
        // database knows every node's connections and departures.
        let cluster = self
            .ctx
            .store
            .member_activity(&self.mesh.id)
            .await
            .map_err(|e| internal(&e))?;
        let state = self.mesh.lock();
        Ok(all
            .into_iter()
            .filter(|m| !m.revoked)
            .map(|m| {
                let (online, last_seen) = match &cluster {
                    Some(c) => (c.online.contains(&m.id), c.last_seen.get(&m.id).copied()),
                    None => (false, None),
                };
                MemberPresence {
                    online: online || !state.member_conns(&m.id).is_empty(),
                    last_seen: last_seen.max(state.last_seen(&m.id)),
                    member: m.pubkey,
                    display_name: m.display_name,
                }
            })
            .collect())
    }

    /// The whole member enrolled as `name`, when exactly one active member
    /// of the mesh is (a name two members share addresses neither).
    async fn named_member_recipient(&self, name: &str) -> Result<Option<Vec<Recipient>>, Refusal> {
        let found = self
            .ctx
            .store
            .members_by_name(&self.mesh.id, name)
            .await
            .map_err(|e| internal(&e))?;
        let mut active = found.into_iter().filter(|m| !m.revoked);
        Ok(match (active.next(), active.next()) {
            (Some(m), None) => Some(vec![Recipient {
                member_id: m.id,
                pubkey: m.pubkey,
                sessions: Vec::new(),
            }]),
            _ => None,
        })
    }

    /// When this send id was already accepted, acks it as a duplicate
    /// (true); a repeat is answered the same whatever changed since.
    async fn duplicate_ack(&self, client_id: &str) -> Result<bool, Refusal> {
        let found = self
            .ctx
            .store
            .sent_before(&self.mesh.id, &self.member.id, client_id)
            .await
            .map_err(|e| internal(&e))?;
        let Some((message_id, recipients)) = found else {
            return Ok(false);
        };
        crate::metrics::Metrics::inc(&self.ctx.metrics.messages_duplicate);
        self.reply(ServerFrame::Ack(claudemesh_protocol::wire::Ack {
            id: client_id.to_owned(),
            message_id,
            duplicate: true,
            recipients,
        }));
        Ok(true)
    }

    async fn duplicate_or(
        &self,
        client_id: &str,
        refusal: impl FnOnce() -> Refusal,
    ) -> Result<(), Refusal> {
        if self.duplicate_ack(client_id).await? {
            Ok(())
        } else {
            Err(refusal())
        }
    }

    async fn on_receipt(
        &self,
        message_id: String,
        session_id: Option<String>,
        state: DeliveryState,
    ) -> Result<(), Refusal> {
        match state {
            DeliveryState::Queued => Err(refuse(
                ErrorCode::Malformed,
                "a receipt's state is `seen` (or `delivered`)",
            )),
            DeliveryState::Delivered => self.receipt(message_id, None, state).await,
            DeliveryState::Seen => {
                let sid = self.session_of(session_id)?;
                if !is_valid_id(&sid) {
                    return Err(refuse(
                        ErrorCode::Malformed,
                        format!(
                            "sessionId must be 1 to {} characters, none of them a control character",
                            limits::MAX_ID_CHARS
                        ),
                    ));
                }
                self.admit_seen(&sid)?;
                self.receipt(message_id, Some(sid), state).await
            }
        }
    }

    /// A `seen` receipt is only taken for a listed session of this member
    /// (a whole-member copy would otherwise record any made-up session),
    /// and within the member's receipt rate. Repeats are dropped by the
    /// store (one row per message, session and state).
    fn admit_seen(&self, sid: &str) -> Result<(), Refusal> {
        let mut state = self.mesh.lock();
        let key = (self.member.id.clone(), sid.to_owned());
        if state.session(&key).is_none() {
            return Err(refuse(
                ErrorCode::UnknownSession,
                format!("session {sid} is not a listed session of this member"),
            ));
        }
        if !state.take_receipt_token(&self.member.id, RECEIPT_RATE_PER_SEC, RECEIPT_BURST) {
            return Err(refuse(
                ErrorCode::RateLimited,
                format!(
                    "at most {RECEIPT_RATE_PER_SEC} seen receipts per second per member (bursts of {RECEIPT_BURST}); slow down"
                ),
            ));
        }
        Ok(())
    }

    async fn receipt(
        &self,
        message_id: String,
        session_id: Option<String>,
        state: DeliveryState,
    ) -> Result<(), Refusal> {
        if message_id.is_empty() || message_id.len() > 128 {
            return Err(refuse(
                ErrorCode::Malformed,
                "messageId is missing or too long",
            ));
        }
        let job = ReceiptJob {
            mesh: self.mesh.clone(),
            message_id,
            member_id: self.member.id.clone(),
            pubkey: self.member.pubkey.clone(),
            session_id,
            at: self.ctx.now_ms(),
        };
        let op = match state {
            DeliveryState::Seen => WriteOp::Seen(job),
            _ => WriteOp::Delivered(job),
        };
        self.ctx.writer.submit(op).await;
        Ok(())
    }

    async fn message_status(
        &self,
        message_id: &str,
    ) -> Result<Vec<claudemesh_protocol::wire::RecipientState>, Refusal> {
        let found = self
            .ctx
            .store
            .message_status(message_id, &self.mesh.id, &self.member.id)
            .await
            .map_err(|e| internal(&e))?;
        found.ok_or_else(|| {
            refuse(
                ErrorCode::UnknownMessage,
                "no message with this id was sent by or to this member (or it expired)",
            )
        })
    }
}

fn internal(e: &crate::store::StoreError) -> Refusal {
    tracing::error!(error = %e, "database read failed");
    if e.is_unavailable() {
        return refuse(
            ErrorCode::Unavailable,
            "the broker cannot reach its database; try again in a moment",
        );
    }
    refuse(
        ErrorCode::InternalError,
        "the broker could not read its database; try again",
    )
}

/// Checks the envelopes' encodings; returns them by recipient member.
fn check_envelopes(envelopes: &[Envelope]) -> Result<HashMap<&str, &Envelope>, Refusal> {
    let mut out = HashMap::with_capacity(envelopes.len());
    for env in envelopes {
        if !is_lower_hex(&env.member, 64) {
            return Err(refuse(
                ErrorCode::Malformed,
                "an envelope's member must be a 64-character lowercase hex public key",
            ));
        }
        if b64_decode(&env.nonce).is_none_or(|n| n.len() != NONCE_BYTES) {
            return Err(refuse(
                ErrorCode::Malformed,
                format!("an envelope's nonce must be {NONCE_BYTES} bytes of standard base64"),
            ));
        }
        if env.ciphertext.len() > MAX_CIPHERTEXT_CHARS {
            return Err(refuse(
                ErrorCode::TooLarge,
                format!(
                    "an envelope's ciphertext is limited to {MAX_CIPHERTEXT_CHARS} characters of base64, so that its push fits in a frame"
                ),
            ));
        }
        if b64_decode(&env.ciphertext).is_none_or(|c| c.len() < 16) {
            return Err(refuse(
                ErrorCode::Malformed,
                "an envelope's ciphertext must be a crypto_box in standard base64",
            ));
        }
        if out.insert(env.member.as_str(), env).is_some() {
            return Err(refuse(
                ErrorCode::Malformed,
                "one envelope per recipient member: this send has two for the same member",
            ));
        }
    }
    Ok(out)
}
