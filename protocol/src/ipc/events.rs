//! Events the daemon pushes to an attached session.

use serde::{Deserialize, Serialize};

use super::*;
use crate::wire::{DeliveryState, Peer};

/// Pushed by the daemon, tagged by `event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A message for this session that is due now: `now` priority at once,
    /// `next` and `low` when the session is not `working`.
    Message(InboxMessage),
    PeerJoined {
        peer: Peer,
    },
    PeerLeft {
        peer: Peer,
    },
    PeerUpdated {
        peer: Peer,
    },
    #[serde(rename_all = "camelCase")]
    Receipt {
        message_id: String,
        member: String,
        session_id: String,
        state: DeliveryState,
    },
    LinkState {
        mesh: String,
        state: LinkState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
}
