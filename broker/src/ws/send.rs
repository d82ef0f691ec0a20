//! `send`: the target resolved into recipients (from the hub, else the
//! member table), the envelopes checked against them, and the message
//! handed to the writer; a repeated send id is acked as a duplicate.

use std::collections::HashMap;

use claudemesh_protocol::encoding::{b64_decode, is_lower_hex, is_valid_id};
use claudemesh_protocol::limits::{self, MAX_CIPHERTEXT_CHARS, NONCE_BYTES, QUEUE_TTL_MS};
use claudemesh_protocol::wire::{Envelope, ErrorCode, ErrorFrame, SendRequest, ServerFrame};

use super::handlers::{Refusal, internal, refuse, unknown_session};
use crate::delivery::SendJob;
use crate::router::{self, Recipient, Unresolved};
use crate::store::{NewMessage, RecipientCopy, SenderInfo};
use crate::writer::WriteOp;
use crate::ws::connection::Connection;

impl Connection {
    pub(super) async fn send(&self, send: SendRequest) -> Result<(), Refusal> {
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
        // In a cluster, what this node has not heard of yet is in the
        // presence table.
        let resolved = crate::cluster::targets::complete(
            &self.ctx.store,
            &self.mesh.id,
            &target,
            &sender_key,
            resolved,
        )
        .await
        .map_err(|e| internal(&e))?;
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
