//! Frames the broker sends to its clients.

use serde::{Deserialize, Serialize};

use super::common::{DeliveryState, MessageSender, Peer, Priority, RecipientState};
use super::error_code::ErrorCode;
use super::parse::{ParseFailure, parse_tagged};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerEvent {
    PeerJoined,
    PeerLeft,
    PeerUpdated,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelloAck {
    pub mesh_id: String,
    pub member_id: String,
    pub session_id: String,
    pub display_name: String,
    pub server_time: i64,
    pub peers: Vec<Peer>,
    /// True when `peers` was cut to stay within
    /// [`crate::limits::MAX_PEERS_LIST_BYTES`]; absent when complete.
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ack {
    pub id: String,
    pub message_id: String,
    pub duplicate: bool,
    pub recipients: Vec<RecipientState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Push {
    pub message_id: String,
    pub from: MessageSender,
    pub to: String,
    #[serde(default)]
    pub sessions: Vec<String>,
    #[serde(default)]
    pub priority: Priority,
    pub nonce: String,
    pub ciphertext: String,
    pub sent_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The recipient members a `missing_envelope` names (64-hex public
    /// keys): the sender seals for them and sends again. Absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
}

/// One active member of the mesh (extension, docs/protocol.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberPresence {
    /// The member public key, 64 lowercase hex.
    pub member: String,
    /// The name it enrolled with: a `send` target when no session has it.
    pub display_name: String,
    /// True while it has a live connection.
    pub online: bool,
    /// When its last connection closed (ms), if since the broker started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<i64>,
}

/// Broker → client frames, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    HelloAck(HelloAck),
    #[serde(rename_all = "camelCase")]
    SessionOpened {
        session_id: String,
        display_name: String,
    },
    PeersList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        peers: Vec<Peer>,
        /// As in [`HelloAck::truncated`].
        #[serde(default, skip_serializing_if = "is_false")]
        truncated: bool,
        /// Extension: present when `list_peers` asked for `members`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        members: Option<Vec<MemberPresence>>,
    },
    Event {
        event: PeerEvent,
        peer: Peer,
    },
    Ack(Ack),
    Push(Push),
    #[serde(rename_all = "camelCase")]
    Receipt {
        message_id: String,
        member: String,
        session_id: String,
        state: DeliveryState,
        at: i64,
    },
    #[serde(rename_all = "camelCase")]
    MessageStatusResult {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        message_id: String,
        recipients: Vec<RecipientState>,
    },
    Error(ErrorFrame),
}

impl ServerFrame {
    pub const TYPES: &'static [&'static str] = &[
        "hello_ack",
        "session_opened",
        "peers_list",
        "event",
        "ack",
        "push",
        "receipt",
        "message_status_result",
        "error",
    ];

    pub fn parse(text: &str) -> Result<Self, ParseFailure> {
        parse_tagged(text, Self::TYPES)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }

    /// An `error` frame with a `code` and a human sentence.
    pub fn error(
        code: impl Into<ErrorCode>,
        message: impl Into<String>,
        id: Option<String>,
    ) -> Self {
        Self::Error(ErrorFrame {
            code: code.into(),
            message: message.into(),
            id,
            members: Vec::new(),
        })
    }
}
