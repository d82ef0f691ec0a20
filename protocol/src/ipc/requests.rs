//! Client → daemon requests.

use serde::{Deserialize, Serialize};

use crate::wire::{PeerStatus, Priority};

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
    /// process is an ancestor of the caller, marked seen. First the
    /// session's transcript (`transcriptPath`, from the hook's input; the
    /// daemon keeps it for the session) confirms the pushes it shows.
    /// `{"op":"hook_context"}` without `args` is accepted (older hooks).
    HookContext(HookContextArgs),
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
    /// ctl `Stop` hook: waits for the next message that should wake the
    /// session whose Claude Code process is an ancestor of the caller, and
    /// claims it like a push (`docs/ipc.md`, "wait_wake"). Answered with
    /// `woken`: at once when such messages already wait, else when one
    /// arrives, the session ends, a hook shows its messages first, or
    /// `timeoutMs` passes.
    WaitWake(WaitWakeArgs),
    /// ctl `SessionStart` hook: who and where the session of the caller's
    /// Claude Code is (name, mesh, peers, waiting messages); marks nothing.
    HookSession,
}

/// Which priorities wake an idle session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WakeLevel {
    /// Only `now` messages.
    Now,
    /// `now` and `next` messages (`low` never wakes).
    Next,
}

impl WakeLevel {
    /// Whether a message of `priority` wakes at this level.
    pub fn wakes_for(self, priority: Priority) -> bool {
        match priority {
            Priority::Now => true,
            Priority::Next => self == WakeLevel::Next,
            Priority::Low => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WakeLevel::Now => "now",
            WakeLevel::Next => "next",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaitWakeArgs {
    pub wake: WakeLevel,
    /// How long to wait before answering `timeout`; at most
    /// [`MAX_WAKE_WAIT_MS`] (a longer one is refused), the caller re-arms.
    pub timeout_ms: u64,
    /// The session's transcript (the `Stop` hook's `transcript_path`): read
    /// first to confirm the pushes and wakes it shows, as for
    /// `hook_context`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript_path: Option<String>,
}

/// The longest one `wait_wake` may wait (one hour).
pub const MAX_WAKE_WAIT_MS: u64 = 3_600_000;

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
        "wait_wake",
        "hook_session",
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
    /// The Claude Code session's transcript (JSON lines), where the shim
    /// found it from Claude Code's environment: the daemon reads it to tell
    /// a push the model was shown from one Claude Code dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript_path: Option<String>,
}

/// The arguments of `hook_context`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookContextArgs {
    /// The session's transcript, as Claude Code gave it to the hook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendArgs {
    /// A display name, `@group`, `*`, `<pubkey>` or `<pubkey>/<sessionId>`.
    pub to: String,
    pub text: String,
    #[serde(default)]
    pub priority: Priority,
}
