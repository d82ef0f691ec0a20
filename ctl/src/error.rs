//! Exit codes and the one error type every command returns.
//!
//! A [`CtlError`] carries what happened (one sentence), what to do next
//! (a hint, often the exact command), and the exit code a script can test.
//! The codes are documented in `--help` and `docs/ctl.md`; keep the three
//! in step.

use std::fmt;
use std::process::ExitCode;

use claudemesh_protocol::ipc::IpcErrorCode;

/// The process exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success (also: a join of a mesh already joined).
    Ok = 0,
    /// The command failed (anything without a more specific code).
    Failure = 1,
    /// Bad command line (clap's own code).
    Usage = 2,
    /// The daemon is not running, and this command needs it.
    DaemonDown = 3,
    /// The invite link is invalid, or the broker refused it.
    InviteInvalid = 4,
    /// The broker could not be reached.
    BrokerUnreachable = 5,
    /// No such mesh in the config (not joined).
    NotJoined = 6,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// The text for `--help` and docs/ctl.md.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (joining a mesh already joined is a success)
  1  failure
  2  usage error (bad arguments)
  3  the daemon is not running (commands that need it)
  4  the invite link is invalid, or the broker refused it
  5  the broker could not be reached
  6  no such mesh in the config (not joined)";

#[derive(Debug)]
pub struct CtlError {
    pub exit: Exit,
    pub message: String,
    pub hint: Option<String>,
    /// Already reported on stdout (e.g. doctor's table): only the exit code.
    pub quiet: bool,
    /// The daemon's code, when the daemon refused the request.
    pub daemon_code: Option<IpcErrorCode>,
}

pub type Result<T, E = CtlError> = std::result::Result<T, E>;

impl CtlError {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
            hint: None,
            quiet: false,
            daemon_code: None,
        }
    }

    pub fn failure(message: impl Into<String>) -> Self {
        Self::new(Exit::Failure, message)
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn quiet(mut self) -> Self {
        self.quiet = true;
        self
    }

    pub fn daemon_down() -> Self {
        Self::new(Exit::DaemonDown, "claudemeshd is not running").hint(
            "start it with `claudemesh-ctl daemon start` (in the background), or \
             `claudemesh-ctl service install` to run it as a service from login on",
        )
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CtlError {}
