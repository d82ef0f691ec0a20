//! Per-recipient states of a message, as `ack` (for a duplicate) and
//! `message_status_result` report them: shared by both backends, so that
//! they cannot tell it differently.

use claudemesh_protocol::wire::{DeliveryState, RecipientState};

/// One recipient member's copy, as stored.
pub struct CopyRow {
    pub member_id: String,
    pub pubkey: String,
    /// The sessions the copy names (empty: the whole member).
    pub sessions: Vec<String>,
    pub delivered: bool,
}

/// A copy addressed to named sessions gives one entry per session; a copy
/// for the whole member gives one entry without `sessionId`, or one per
/// session that has seen it. `seen` holds (member id, session id) pairs.
pub fn recipient_states(copies: Vec<CopyRow>, seen: &[(String, String)]) -> Vec<RecipientState> {
    let mut out = Vec::new();
    for copy in copies {
        let base = if copy.delivered {
            DeliveryState::Delivered
        } else {
            DeliveryState::Queued
        };
        let seen_by: Vec<&str> = seen
            .iter()
            .filter(|(m, _)| *m == copy.member_id)
            .map(|(_, s)| s.as_str())
            .collect();
        if copy.sessions.is_empty() {
            if seen_by.is_empty() {
                out.push(RecipientState {
                    member: copy.pubkey.clone(),
                    session_id: None,
                    state: base,
                });
            }
            for s in seen_by {
                out.push(RecipientState {
                    member: copy.pubkey.clone(),
                    session_id: Some(s.to_owned()),
                    state: DeliveryState::Seen,
                });
            }
        } else {
            for s in copy.sessions {
                let state = if seen_by.contains(&s.as_str()) {
                    DeliveryState::Seen
                } else {
                    base
                };
                out.push(RecipientState {
                    member: copy.pubkey.clone(),
                    session_id: Some(s),
                    state,
                });
            }
        }
    }
    out
}

/// The JSON text a copy's session list is stored as.
pub fn sessions_to_json(sessions: &[String]) -> String {
    serde_json::to_string(sessions).unwrap_or_else(|_| "[]".to_owned())
}

pub fn sessions_from_json(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}
