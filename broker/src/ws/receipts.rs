//! Receipts from a recipient (`client_ack`, `receipt`) and the sender's
//! `message_status`.

use claudemesh_protocol::encoding::is_valid_id;
use claudemesh_protocol::limits::{self, RECEIPT_BURST, RECEIPT_RATE_PER_SEC};
use claudemesh_protocol::wire::{DeliveryState, ErrorCode, RecipientState};

use super::handlers::{Refusal, internal, refuse};
use crate::delivery::ReceiptJob;
use crate::writer::WriteOp;
use crate::ws::connection::Connection;

impl Connection {
    pub(super) async fn on_receipt(
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

    pub(super) async fn receipt(
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

    pub(super) async fn message_status(
        &self,
        message_id: &str,
    ) -> Result<Vec<RecipientState>, Refusal> {
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
