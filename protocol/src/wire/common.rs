//! Value types shared by both directions.

use serde::{Deserialize, Serialize};

/// What a connection is: itself one session, or a daemon carrying many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionRole {
    #[default]
    Session,
    Daemon,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerStatus {
    #[default]
    Idle,
    Working,
    Dnd,
}

impl PeerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Working => "working",
            Self::Dnd => "dnd",
        }
    }
}

/// How urgently a message should reach the recipient's model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Now,
    #[default]
    Next,
    Low,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Now => "now",
            Self::Next => "next",
            Self::Low => "low",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "now" => Some(Self::Now),
            "next" => Some(Self::Next),
            "low" => Some(Self::Low),
            _ => None,
        }
    }
}

/// Where a message stands for one recipient. Ordered: a later state never
/// goes back to an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Queued,
    Delivered,
    Seen,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Delivered => "delivered",
            Self::Seen => "seen",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "queued" => Some(Self::Queued),
            "delivered" => Some(Self::Delivered),
            "seen" => Some(Self::Seen),
            _ => None,
        }
    }
}

/// A peer is one session of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    /// The member's public key, 64 lowercase hex.
    pub member: String,
    pub session_id: String,
    pub display_name: String,
    #[serde(default)]
    pub status: PeerStatus,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub cwd: String,
    #[serde(default)]
    pub host: String,
    pub connected_at: i64,
}

/// One recipient member's copy of a message, sealed to its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The recipient member's public key.
    pub member: String,
    /// 24 bytes, standard base64.
    pub nonce: String,
    /// `crypto_box_easy` output, standard base64.
    pub ciphertext: String,
}

/// One recipient's delivery state, in `ack` and `message_status_result`.
/// `sessionId` is absent when the message waits for a member that has no
/// live session (it will reach whichever sessions it names on return).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecipientState {
    pub member: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub state: DeliveryState,
}

/// The sender of a pushed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageSender {
    pub member: String,
    pub session_id: String,
    pub display_name: String,
}

/// The plaintext inside every envelope: a UTF-8 JSON object with at least
/// `text`. Extra fields are kept so that newer senders can add them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageBody {
    pub text: String,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl MessageBody {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            extra: serde_json::Map::new(),
        }
    }
}
