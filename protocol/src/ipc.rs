//! The daemon<->client frames over the local socket (`docs/ipc.md`).
//!
//! Framing is one JSON object per line (`\n`), UTF-8, at most
//! [`MAX_IPC_LINE_BYTES`]. A client (shim, ctl, hook) sends
//! [`RequestFrame`]s, each with a numeric `id`; the daemon answers each with
//! a [`DaemonFrame::Ok`] or [`DaemonFrame::Err`] carrying the same `id`, and
//! pushes [`DaemonFrame::Event`]s at any time to an attached session.
//!
//! The first request on a connection must be [`Request::Hello`]; a client and
//! daemon whose [`IPC_VERSION`]s differ fail there with `version_mismatch`
//! and a message naming both versions. One connection carries at most one
//! session ([`Request::Attach`]): a client cannot act as another session.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error_code::error_codes;
use crate::wire::{DeliveryState, MemberPresence, MessageSender, Peer, PeerStatus, Priority};

/// Bumped on any incompatible change to these frames.
pub const IPC_VERSION: u32 = 1;

/// A longer line is refused with `too_large` and the connection closed
/// (the stream cannot be resynchronised inside an over-long line).
pub const MAX_IPC_LINE_BYTES: usize = 4 * 1024 * 1024;

pub use crate::limits::MAX_TEXT_BYTES;

/// Client → daemon: `{"id":1,"op":"send","args":{…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestFrame {
    pub id: u64,
    #[serde(flatten)]
    pub request: Request,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "args", rename_all = "snake_case")]
pub enum Request {
    /// Version handshake; must come first.
    Hello {
        protocol: u32,
        client: String,
    },
    /// Makes this connection a session (new or resumed).
    Attach(AttachArgs),
    /// Ends the session for good (a shim that merely exits does not detach:
    /// its session waits for a restarted shim or for its Claude Code to exit).
    Detach,
    Send(SendArgs),
    ListPeers,
    /// The session's messages not yet shown to its model, every priority.
    FetchInbox {
        #[serde(default)]
        mark_seen: bool,
    },
    /// How many messages wait for this session, without showing them.
    Pending,
    MarkSeen {
        #[serde(rename = "messageIds")]
        message_ids: Vec<String>,
    },
    SetSummary {
        summary: String,
    },
    SetStatus {
        status: PeerStatus,
    },
    JoinGroup {
        group: String,
    },
    LeaveGroup {
        group: String,
    },
    MessageStatus {
        #[serde(rename = "messageId")]
        message_id: String,
    },
    DaemonStatus,
    /// ctl: re-read the config after a join or leave.
    ReloadConfig,
    /// ctl: messages not yet acknowledged by their broker.
    ListOutbox,
    /// ctl hook: the pending messages of the session whose Claude Code
    /// process is an ancestor of the caller, marked seen.
    HookContext,
    /// The active members of the session's mesh, online or last seen
    /// (asked of the broker; `unavailable` while the link is down).
    ListMembers,
    /// The shim pushed these as channel notifications. Not proof that the
    /// model saw them: they are held back from the other paths for a short
    /// window, then unread again unless confirmed (`docs/shim.md`).
    MarkPushed {
        #[serde(rename = "messageIds")]
        message_ids: Vec<String>,
    },
    /// ctl hook: these ids were found as channel messages in the session's
    /// transcript (the model was shown them); mark them seen for the
    /// session whose Claude Code process is an ancestor of the caller.
    HookConfirm {
        #[serde(rename = "messageIds")]
        message_ids: Vec<String>,
    },
}

impl Request {
    pub const OPS: &'static [&'static str] = &[
        "hello",
        "attach",
        "detach",
        "send",
        "list_peers",
        "fetch_inbox",
        "pending",
        "mark_seen",
        "set_summary",
        "set_status",
        "join_group",
        "leave_group",
        "message_status",
        "daemon_status",
        "reload_config",
        "list_outbox",
        "hook_context",
        "list_members",
        "mark_pushed",
        "hook_confirm",
    ];
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachArgs {
    /// Mesh slug or id; `None` is the default mesh (the local mesh when
    /// nothing else is joined).
    #[serde(default)]
    pub mesh: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    pub cwd: String,
    /// The Claude Code process this session belongs to (the shim's parent).
    /// The daemon checks it is an ancestor of the connecting process.
    pub claude_pid: u32,
    #[serde(default)]
    pub groups: Vec<String>,
    /// A short-lived client (a script's `claudemesh-ctl send`): the session
    /// never takes the messages that arrived while the mesh had no session,
    /// since it would end before showing them to anyone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transient: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendArgs {
    /// A display name, `@group`, `*`, `<pubkey>` or `<pubkey>/<sessionId>`.
    pub to: String,
    pub text: String,
    #[serde(default)]
    pub priority: Priority,
}

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({code})")]
pub struct IpcError {
    pub code: IpcErrorCode,
    /// One sentence a person can act on.
    pub message: String,
}

impl IpcError {
    pub fn new(code: impl Into<IpcErrorCode>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

error_codes! {
    /// Why the daemon refused a request (`docs/ipc.md`). A code this build
    /// does not know (a newer daemon's) lands in [`IpcErrorCode::Other`].
    IpcErrorCode {
        /// The client's [`IPC_VERSION`] is not the daemon's.
        VersionMismatch = "version_mismatch",
        /// The first request was not `hello`.
        NoHello = "no_hello",
        /// A line, request or argument that does not parse or breaks a rule.
        Malformed = "malformed",
        /// An `op` the daemon does not know.
        UnknownOp = "unknown_op",
        /// A line or message over its limit.
        TooLarge = "too_large",
        /// The request needs `attach` first.
        NotAttached = "not_attached",
        /// This connection already carries a session.
        AlreadyAttached = "already_attached",
        /// No joined mesh has this slug or id.
        UnknownMesh = "unknown_mesh",
        /// A `send` whose `to` names no one (the broker's answer, passed on).
        UnknownTarget = "unknown_target",
        /// The `claudePid` is not a Claude Code ancestor of the caller.
        NotAClaudeProcess = "not_a_claude_process",
        /// The caller is another OS user.
        Forbidden = "forbidden",
        /// The daemon has all the connections it takes.
        Busy = "busy",
        /// `message_status` for a message this daemon never sent.
        UnknownMessage = "unknown_message",
        /// The member was revoked from the session's mesh.
        Revoked = "revoked",
        /// The broker cannot answer now (the link is down).
        Unavailable = "unavailable",
        /// The config file could not be read.
        ConfigError = "config_error",
        /// The daemon's disk is full: nothing was stored.
        StorageFull = "storage_full",
        /// The daemon's database failed; see its log.
        Internal = "internal",
        /// The broker's sealing check, passed on when re-sealing gave up.
        MissingEnvelope = "missing_envelope",
        /// The broker's rate limit, passed on.
        RateLimited = "rate_limited",
    }
}

impl From<&crate::wire::ErrorCode> for IpcErrorCode {
    /// A broker refusal reaches the client under the broker's own code.
    fn from(code: &crate::wire::ErrorCode) -> Self {
        Self::parse(code.as_str())
    }
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

/// Why a request line could not be read, with its `id` when one was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestParseFailure {
    pub id: Option<u64>,
    pub error: IpcError,
}

impl RequestFrame {
    /// Parses one line. Never panics; tells an unknown `op` apart from a
    /// known one with bad `args`.
    pub fn parse(line: &str) -> Result<Self, RequestParseFailure> {
        serde_json::from_str(line).map_err(|e| Self::diagnose(line, e))
    }

    fn diagnose(line: &str, first: serde_json::Error) -> RequestParseFailure {
        let value: Option<Value> = serde_json::from_str(line).ok();
        let object = value.as_ref().and_then(Value::as_object);
        let id = object.and_then(|o| o.get("id")).and_then(Value::as_u64);
        let op = object.and_then(|o| o.get("op")).and_then(Value::as_str);
        let error = match (object, op) {
            (None, _) => IpcError::new(
                IpcErrorCode::Malformed,
                "a request must be one JSON object per line",
            ),
            (Some(_), None) => IpcError::new(
                IpcErrorCode::Malformed,
                "a request needs a string field `op`",
            ),
            (Some(_), Some(op)) if !Request::OPS.contains(&op) => {
                IpcError::new(IpcErrorCode::UnknownOp, format!("unknown operation `{op}`"))
            }
            (Some(o), Some(op)) if id.is_none() => IpcError::new(
                IpcErrorCode::Malformed,
                format!(
                    "request `{op}` needs a non-negative integer `id` (got {})",
                    o.get("id").map_or("none".to_owned(), Value::to_string)
                ),
            ),
            (Some(_), Some(op)) => IpcError::new(
                IpcErrorCode::Malformed,
                format!("invalid arguments for `{op}`: {}", strip_position(&first)),
            ),
        };
        RequestParseFailure { id, error }
    }

    /// The line to write, newline included.
    pub fn to_line(&self) -> String {
        to_line(self)
    }
}

impl DaemonFrame {
    pub fn parse(line: &str) -> Result<Self, IpcError> {
        serde_json::from_str(line).map_err(|e| {
            IpcError::new(
                IpcErrorCode::Malformed,
                format!("unreadable frame from the daemon: {}", strip_position(&e)),
            )
        })
    }

    pub fn to_line(&self) -> String {
        to_line(self)
    }
}

fn to_line<T: Serialize>(frame: &T) -> String {
    let mut line = serde_json::to_string(frame).expect("ipc frames always serialize");
    line.push('\n');
    line
}

fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.find(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let frames = [
            Request::Hello {
                protocol: IPC_VERSION,
                client: "claudemesh-shim/0.1.0".into(),
            },
            Request::Attach(AttachArgs {
                mesh: None,
                display_name: Some("api".into()),
                cwd: "/tmp".into(),
                claude_pid: 42,
                groups: vec!["backend".into()],
                transient: true,
            }),
            Request::Detach,
            Request::Send(SendArgs {
                to: "@backend".into(),
                text: "hi".into(),
                priority: Priority::Now,
            }),
            Request::MarkSeen {
                message_ids: vec!["m1".into()],
            },
            Request::MarkPushed {
                message_ids: vec!["m2".into()],
            },
            Request::HookConfirm {
                message_ids: vec!["m3".into()],
            },
            Request::DaemonStatus,
        ];
        for request in frames {
            let frame = RequestFrame { id: 7, request };
            let line = frame.to_line();
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            assert_eq!(RequestFrame::parse(line.trim_end()).unwrap(), frame);
        }
    }

    #[test]
    fn unit_ops_parse_without_args() {
        let f = RequestFrame::parse(r#"{"id":3,"op":"list_peers"}"#).unwrap();
        assert_eq!(f.request, Request::ListPeers);
    }

    #[test]
    fn bad_requests_get_typed_errors_with_their_id() {
        let e = RequestFrame::parse(r#"{"id":4,"op":"launch_missiles"}"#).unwrap_err();
        assert_eq!((e.id, e.error.code.as_str()), (Some(4), "unknown_op"));
        let e = RequestFrame::parse(r#"{"id":5,"op":"send","args":{"to":"x"}}"#).unwrap_err();
        assert_eq!((e.id, e.error.code.as_str()), (Some(5), "malformed"));
        assert!(e.error.message.contains("text"), "{}", e.error.message);
        let e = RequestFrame::parse("not json").unwrap_err();
        assert_eq!((e.id, e.error.code.as_str()), (None, "malformed"));
        let e = RequestFrame::parse(r#"{"id":-1,"op":"detach"}"#).unwrap_err();
        assert_eq!(e.error.code, "malformed");
    }

    #[test]
    fn every_error_code_round_trips_as_its_string() {
        for code in IpcErrorCode::KNOWN {
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(&serde_json::from_str::<IpcErrorCode>(&json).unwrap(), code);
        }
        let strings: std::collections::BTreeSet<_> = IpcErrorCode::KNOWN
            .iter()
            .map(IpcErrorCode::as_str)
            .collect();
        assert_eq!(
            strings.len(),
            IpcErrorCode::KNOWN.len(),
            "two variants share a string"
        );
        assert_eq!(
            IpcError::new(IpcErrorCode::NotAClaudeProcess, "x"),
            serde_json::from_str(r#"{"code":"not_a_claude_process","message":"x"}"#).unwrap()
        );
    }

    #[test]
    fn an_unknown_error_code_parses_into_other_and_is_sent_back_unchanged() {
        let line = r#"{"kind":"err","id":3,"error":{"code":"quota_exceeded","message":"m"}}"#;
        let frame = DaemonFrame::parse(line).unwrap();
        let DaemonFrame::Err { error, .. } = &frame else {
            panic!("{frame:?}")
        };
        assert_eq!(error.code, IpcErrorCode::Other("quota_exceeded".into()));
        assert_eq!(frame.to_line().trim_end(), line);
    }

    #[test]
    fn a_broker_code_passed_on_keeps_its_string() {
        use crate::wire::ErrorCode;
        for code in ErrorCode::KNOWN {
            assert_eq!(IpcErrorCode::from(code).as_str(), code.as_str());
        }
        assert_eq!(
            IpcErrorCode::from(&ErrorCode::UnknownTarget),
            IpcErrorCode::UnknownTarget
        );
    }

    #[test]
    fn a_sent_answer_still_says_accepted() {
        let sent = Response::Sent(SentInfo {
            message_id: "m-1".into(),
            recipients: Vec::new(),
        });
        let json = serde_json::to_string(&sent).unwrap();
        assert_eq!(
            json,
            r#"{"type":"sent","messageId":"m-1","accepted":true,"recipients":[]}"#
        );
        assert_eq!(serde_json::from_str::<Response>(&json).unwrap(), sent);
    }

    #[test]
    fn daemon_frames_round_trip() {
        let frames = [
            DaemonFrame::Ok {
                id: 1,
                result: Response::Pending { count: 2 },
            },
            DaemonFrame::Ok {
                id: 2,
                result: Response::MarkedPushed {
                    message_ids: vec!["m1".into()],
                },
            },
            DaemonFrame::Err {
                id: None,
                error: IpcError::new("no_hello", "say hello first"),
            },
            DaemonFrame::Event {
                event: Event::LinkState {
                    mesh: "local".into(),
                    state: LinkState::Connected,
                    detail: None,
                },
            },
        ];
        for frame in frames {
            assert_eq!(
                DaemonFrame::parse(frame.to_line().trim_end()).unwrap(),
                frame
            );
        }
    }
}
