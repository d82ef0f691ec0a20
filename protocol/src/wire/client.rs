//! Frames a client (daemon or simple session client) sends to the broker.

use serde::{Deserialize, Serialize};

use super::common::{ConnectionRole, DeliveryState, Envelope, PeerStatus, Priority};
use super::parse::{FrameError, ParseFailure, parse_tagged};

/// The first frame of every connection. Its signature covers
/// [`crate::hello::canonical`]; see [`crate::hello`] for verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    pub mesh_id: String,
    pub member_id: String,
    pub pubkey: String,
    pub session_id: String,
    pub pid: u32,
    pub cwd: String,
    pub timestamp: i64,
    pub signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default)]
    pub role: ConnectionRole,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionOpen {
    pub session_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default)]
    pub cwd: String,
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Not in PROTOCOL.md's example; lets a daemon restore a session's status
    /// after a reconnect without an extra `set_status`.
    #[serde(default)]
    pub status: PeerStatus,
}

/// The body of a `send` frame: one message, sealed once per recipient
/// member, under the client's request `id` (which its `ack` echoes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendRequest {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    pub to: String,
    #[serde(default)]
    pub priority: Priority,
    pub envelopes: Vec<Envelope>,
}

/// Client → broker frames, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Hello(Hello),
    SessionOpen(SessionOpen),
    #[serde(rename_all = "camelCase")]
    SessionClose {
        session_id: String,
    },
    ListPeers {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Extension: also list the mesh's members (`peers_list.members`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        members: bool,
    },
    #[serde(rename_all = "camelCase")]
    SetStatus {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<String>,
        status: PeerStatus,
    },
    #[serde(rename_all = "camelCase")]
    SetSummary {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<String>,
        summary: String,
    },
    #[serde(rename_all = "camelCase")]
    JoinGroup {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<String>,
        group: String,
    },
    #[serde(rename_all = "camelCase")]
    LeaveGroup {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<String>,
        group: String,
    },
    Send(SendRequest),
    #[serde(rename_all = "camelCase")]
    ClientAck {
        message_id: String,
    },
    #[serde(rename_all = "camelCase")]
    Receipt {
        message_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<String>,
        state: DeliveryState,
    },
    #[serde(rename_all = "camelCase")]
    MessageStatus {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        message_id: String,
    },
}

impl ClientFrame {
    /// Every `type` this enum knows, so that an unknown one is told apart
    /// from a known one with bad fields.
    pub const TYPES: &'static [&'static str] = &[
        "hello",
        "session_open",
        "session_close",
        "list_peers",
        "set_status",
        "set_summary",
        "join_group",
        "leave_group",
        "send",
        "client_ack",
        "receipt",
        "message_status",
    ];

    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<Self, ParseFailure> {
        parse_tagged(text, Self::TYPES)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("client frames always serialize")
    }

    /// The frame's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::SessionOpen(_) => "session_open",
            Self::SessionClose { .. } => "session_close",
            Self::ListPeers { .. } => "list_peers",
            Self::SetStatus { .. } => "set_status",
            Self::SetSummary { .. } => "set_summary",
            Self::JoinGroup { .. } => "join_group",
            Self::LeaveGroup { .. } => "leave_group",
            Self::Send(_) => "send",
            Self::ClientAck { .. } => "client_ack",
            Self::Receipt { .. } => "receipt",
            Self::MessageStatus { .. } => "message_status",
        }
    }
}

impl From<FrameError> for ParseFailure {
    fn from(error: FrameError) -> Self {
        Self { error, id: None }
    }
}
