//! The handlers of the client frames that follow the hello: one method of
//! [`Connection`] per frame type, from [`Connection::on_text`] down.
//!
//! A frame that does not parse, or names a session this connection does
//! not carry, gets an `error` (echoing the request `id` when there is one)
//! and the connection lives on: only the handshake closes connections.

use claudemesh_protocol::encoding::is_valid_id;
use claudemesh_protocol::limits::{
    self, MAX_CWD_BYTES, MAX_DISPLAY_NAME_CHARS, MAX_GROUP_CHARS, MAX_GROUPS_PER_SESSION,
    MAX_HOST_BYTES, MAX_SUMMARY_BYTES, TextError,
};
use claudemesh_protocol::wire::{
    ClientFrame, ConnectionRole, DeliveryState, ErrorCode, ErrorFrame, MemberPresence, ServerFrame,
    SessionOpen,
};

use crate::delivery::{self, Redelivery};
use crate::hub::presence::{normalize_group, normalize_groups};
use crate::hub::{SessionError, SessionSpec};
use crate::ws::connection::Connection;

/// A refused request: an error code and a sentence.
pub(super) struct Refusal {
    pub(super) code: ErrorCode,
    pub(super) message: String,
}

pub(super) fn refuse(code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

pub(super) fn unknown_session(sid: &str) -> Refusal {
    session_refusal(SessionError::Unknown, sid)
}

pub(super) fn session_refusal(e: SessionError, sid: &str) -> Refusal {
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
    pub(super) fn send_error(&self, error: ErrorFrame) {
        self.ctx.metrics.frame_error(error.code.as_str());
        self.reply(ServerFrame::Error(error));
    }

    pub(super) fn reply(&self, frame: ServerFrame) {
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
    pub(super) fn session_of(&self, given: Option<String>) -> Result<String, Refusal> {
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
            // this session on this connection; in a cluster, written once
            // the session's presence row is committed (a target on every
            // node from then on).
            let opened = ServerFrame::SessionOpened {
                session_id: sid.clone(),
                display_name: name.clone(),
            };
            self.handle
                .send_text_after(self.ctx.hub.presence_committed(), opened.to_json());
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
}

pub(super) fn internal(e: &crate::store::StoreError) -> Refusal {
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
