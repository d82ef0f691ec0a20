//! Plain values that cross the store boundary.

use claudemesh_protocol::wire::Priority;

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
