//! Daemon → client frames and the results of requests.

use serde::{Deserialize, Serialize};

use super::*;
use crate::wire::{DeliveryState, MemberPresence, MessageSender, Peer, PeerStatus, Priority};

/// Daemon → client, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DaemonFrame {
    Ok {
        id: u64,
        result: Response,
    },
    /// `id` is absent when the request could not be read far enough to
    /// find it.
    Err {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        error: IpcError,
    },
    Event {
        event: Event,
    },
}

/// The result of a request, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    #[serde(rename_all = "camelCase")]
    Welcome {
        protocol: u32,
        daemon_version: String,
        pid: u32,
    },
    Attached(AttachedInfo),
    /// A request that has nothing to return succeeded.
    Done,
    Sent(SentInfo),
    Peers {
        peers: Vec<PeerView>,
    },
    Inbox {
        messages: Vec<InboxMessage>,
    },
    Pending {
        count: u32,
    },
    #[serde(rename_all = "camelCase")]
    MessageStatus {
        message_id: String,
        recipients: Vec<RecipientView>,
    },
    DaemonStatus(DaemonStatus),
    Outbox {
        messages: Vec<OutboxEntry>,
    },
    HookContext {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        messages: Vec<InboxMessage>,
    },
    Members {
        members: Vec<MemberPresence>,
    },
    /// The answer to `mark_pushed`: the ids now marked pushed (those that
    /// were neither seen nor pushed already). Only these may be pushed.
    #[serde(rename_all = "camelCase")]
    MarkedPushed {
        message_ids: Vec<String>,
    },
    /// The answer to `wait_wake`. With `messages` (non-empty, outcome
    /// `messages`) these are claimed for the caller to show: marked pushed,
    /// held back from the other paths until the transcript confirms them
    /// or the push window passes.
    Woken {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        outcome: WakeOutcome,
        #[serde(default)]
        messages: Vec<InboxMessage>,
    },
    /// The answer to `hook_session`; `session` is absent when the caller's
    /// Claude Code has no session here (yet).
    HookSession {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<HookSessionInfo>,
    },
}

/// A session as its `SessionStart` hook describes it to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookSessionInfo {
    pub display_name: String,
    pub mesh_slug: String,
    /// Every session of the mesh, this one included (`self`).
    pub peers: Vec<PeerView>,
    /// Messages waiting to be shown to it.
    pub pending: u32,
}

/// Why a `wait_wake` was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WakeOutcome {
    /// Messages that wake the session: show them.
    Messages,
    /// `timeoutMs` passed with nothing to show: wait again.
    Timeout,
    /// A hook of the session asked for its messages (a prompt or a tool
    /// call: the session is in a turn again), so the wait is over.
    Turn,
    /// The session ended (its Claude Code exited, or it detached).
    Ended,
    /// The caller's Claude Code has no session here.
    NoSession,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachedInfo {
    pub session_id: String,
    pub mesh_id: String,
    pub mesh_slug: String,
    pub display_name: String,
    /// This session's member public key (never the secret).
    pub member: String,
    /// True when an existing session of the same Claude Code was resumed.
    pub resumed: bool,
    pub pending: u32,
    pub link: LinkState,
}

/// A `sent` answer: the message is durable in the outbox.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SentInfo {
    /// The id the sender uses for `message_status`.
    pub message_id: String,
    /// Per recipient, once the broker has acknowledged; empty while the
    /// broker is unreachable (the message waits in the outbox).
    pub recipients: Vec<RecipientView>,
}

/// The JSON keeps `"accepted":true` (docs/ipc.md promises it, and clients
/// built before the field left this struct require it); it never said
/// anything, so it is not a field.
impl Serialize for SentInfo {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut sent = serializer.serialize_struct("SentInfo", 3)?;
        sent.serialize_field("messageId", &self.message_id)?;
        sent.serialize_field("accepted", &true)?;
        sent.serialize_field("recipients", &self.recipients)?;
        sent.end()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecipientView {
    pub member: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub state: DeliveryState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerView {
    #[serde(flatten)]
    pub peer: Peer,
    /// True for the asking session itself.
    #[serde(rename = "self")]
    pub is_self: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboxMessage {
    pub message_id: String,
    pub mesh_slug: String,
    pub from: MessageSender,
    pub to: String,
    pub priority: Priority,
    pub text: String,
    pub sent_at: i64,
    pub received_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Connecting,
    Connected,
    Disconnected,
    /// The broker refused this member for good (`unauthorized` after it had
    /// been accepted, or a revoke close); not retried.
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonStatus {
    pub version: String,
    pub pid: u32,
    /// `secret-service`, `keychain`, `credential-manager`, `file`, …
    pub keystore: String,
    /// False when keys would not survive a reboot.
    pub keystore_durable: bool,
    pub socket: String,
    pub meshes: Vec<MeshStatus>,
    pub sessions: Vec<SessionInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshStatus {
    pub slug: String,
    pub mesh_id: String,
    pub member_id: String,
    pub member: String,
    pub broker: String,
    pub local: bool,
    pub link: LinkState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_detail: Option<String>,
    pub outbox_depth: u32,
    pub inbox_depth: u32,
    pub sessions: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    pub session_id: String,
    pub mesh_slug: String,
    pub display_name: String,
    pub claude_pid: u32,
    pub cwd: String,
    pub status: PeerStatus,
    /// True while a shim is connected for it.
    pub attached: bool,
    /// `wait_wake` requests armed for it: its `Stop` hook waits to wake
    /// it (an idle session, usually 1).
    #[serde(default)]
    pub wake_waits: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxEntry {
    pub message_id: String,
    pub mesh_slug: String,
    pub to: String,
    pub created_at: i64,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
