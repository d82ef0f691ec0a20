//! Why the daemon refused a request.

use crate::error_code::error_codes;
use serde::{Deserialize, Serialize};

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
        /// The client's [`IPC_VERSION`](super::IPC_VERSION) is not the daemon's.
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

/// The limits say why a message is refused; the IPC names it with a code.
/// Defined here, beside the codes, so that `limits` knows nothing of the
/// IPC.
impl crate::limits::MessageError {
    /// The IPC error code: `too_large` or `malformed`.
    pub fn code(&self) -> IpcErrorCode {
        match self {
            Self::TooLarge { .. } => IpcErrorCode::TooLarge,
            Self::Empty | Self::BadTarget => IpcErrorCode::Malformed,
        }
    }
}
