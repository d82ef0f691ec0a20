//! Plain values that cross the store boundary.

use claudemesh_protocol::invite::Invite;
use claudemesh_protocol::wire::{Priority, RecipientState};

/// A mesh as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshInfo {
    pub id: String,
    pub slug: String,
    pub owner_pubkey: String,
}

/// A member as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: String,
    pub mesh_id: String,
    pub pubkey: String,
    pub display_name: String,
    pub role: String,
    pub revoked: bool,
}

/// An invite row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteRow {
    pub id: String,
    pub mesh_id: String,
    pub role: String,
    pub max_uses: Option<u32>,
    pub uses: u32,
    /// Unix seconds.
    pub expires_at: i64,
    pub revoked: bool,
}

/// Who sent a message, as stored and as shown in `push.from`.
#[derive(Debug, Clone)]
pub struct SenderInfo {
    pub member_id: String,
    pub pubkey: String,
    pub session_id: String,
    pub display_name: String,
}

/// One recipient member's copy of a new message.
#[derive(Debug, Clone)]
pub struct RecipientCopy {
    pub member_id: String,
    pub pubkey: String,
    /// The sessions the message is for; empty means every session of the member.
    pub sessions: Vec<String>,
    pub nonce: String,
    pub ciphertext: String,
}

/// A message accepted from a `send`, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub message_id: String,
    /// Its sequence number in the store (assigned by the writer).
    pub seq: i64,
    pub mesh_id: String,
    pub client_id: String,
    pub sender: SenderInfo,
    pub target: String,
    pub priority: Priority,
    pub sent_at: i64,
    pub expires_at: i64,
    pub recipients: Vec<RecipientCopy>,
}

/// An undelivered copy to push again when its member reconnects.
#[derive(Debug, Clone)]
pub struct PendingPush {
    pub message_id: String,
    pub sessions: Vec<String>,
    pub nonce: String,
    pub ciphertext: String,
    pub sender_pubkey: String,
    pub sender_session: String,
    pub sender_name: String,
    pub target: String,
    pub priority: Priority,
    pub sent_at: i64,
}

/// What the sender of a message needs to be told when one of its copies
/// changes state.
#[derive(Debug, Clone)]
pub struct ReceiptRoute {
    pub mesh_id: String,
    pub sender_member_id: String,
    /// The recipient's sessions named by the message (empty: every session).
    pub sessions: Vec<String>,
}

/// Result of storing a `send`.
#[derive(Debug, Clone)]
pub enum InsertOutcome {
    Stored,
    /// The sender already sent this `id`: here is the first message.
    Duplicate {
        message_id: String,
        recipients: Vec<RecipientState>,
    },
}

/// Why a join was refused; each maps to one `POST /v1/join` error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefusal {
    UnknownMesh,
    BadSignature,
    BadInvite,
    Revoked,
    Expired,
    Exhausted,
}

/// Everything a join needs besides the database (owned, so that a
/// blocking task can take it).
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// The decoded invite whose signature has been verified.
    pub invite: Invite,
    pub pubkey: String,
    pub display_name: String,
    pub new_member_id: String,
    pub now_ms: i64,
}

/// One logged revocation.
#[derive(Debug, Clone)]
pub struct Revocation {
    pub seq: i64,
    pub mesh_id: String,
    pub member_id: String,
}

/// Which members are connected to some node of a cluster, and when each
/// member's last connection closed (ms).
#[derive(Debug, Clone, Default)]
pub struct MemberActivity {
    pub online: std::collections::HashSet<String>,
    pub last_seen: std::collections::HashMap<String, i64>,
}

/// The settings key of the `ws://…/ws` or `wss://…/ws` URL that invites
/// point at, recorded at `serve` for `invite` to use.
pub const BROKER_URL_SETTING: &str = "broker_url";
