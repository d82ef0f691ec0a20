//! What can go wrong talking to the daemon, each case worded so that a
//! person (or a model reading a tool error) knows what to do next.

use std::io;
use std::path::PathBuf;

use claudemesh_protocol::ipc::IpcError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket (absent, or refused).
    #[error(
        "the claudemesh daemon is not running (nothing answers at {}); start it with \
         `claudemeshd run` or run `claudemesh-ctl doctor`",
        socket.display()
    )]
    NotRunning {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Something is at the socket path but the connection failed for
    /// another reason (permissions, a stale file of the wrong kind, …).
    #[error(
        "cannot connect to the claudemesh daemon at {}: {source}; run `claudemesh-ctl doctor`",
        socket.display()
    )]
    Connect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },

    /// No daemon executable could be found to start.
    #[error(
        "cannot start the claudemesh daemon: no `claudemeshd` found ({looked}); install it \
         beside this program or on PATH, or set CLAUDEMESH_DAEMON to its path"
    )]
    DaemonNotFound { looked: String },

    /// The daemon was started but never answered, or could not be spawned.
    #[error(
        "could not start the claudemesh daemon ({}): {detail}; see its log at {}",
        exe.display(),
        log.display()
    )]
    StartFailed {
        exe: PathBuf,
        log: PathBuf,
        detail: String,
    },

    /// Client and daemon speak different IPC versions.
    #[error(
        "version mismatch: this client speaks IPC version {ours} but the daemon {}: \
         {detail}; restart the daemon from the same claudemesh release \
         (`claudemesh-ctl doctor` shows both)",
        theirs.map_or_else(|| "refused it".to_owned(), |v| format!("speaks version {v}"))
    )]
    VersionMismatch {
        ours: u32,
        theirs: Option<u32>,
        detail: String,
    },

    /// The daemon understood the request and refused it.
    #[error("the daemon refused the request: {} ({})", .0.message, .0.code)]
    Daemon(IpcError),

    /// The connection was already closed: the request was not sent.
    #[error(
        "the connection to the claudemesh daemon is closed (the daemon stopped or restarted); \
         reconnect"
    )]
    Disconnected,

    /// The connection closed while the request was in flight: whether the
    /// daemon acted on it is unknown.
    #[error(
        "lost the connection to the claudemesh daemon while waiting for its answer (the \
         daemon stopped or restarted); reconnect and check before repeating the request"
    )]
    ConnectionLost,

    /// The daemon did not answer in time.
    #[error("the claudemesh daemon did not answer within {0:?}; run `claudemesh-ctl doctor`")]
    Timeout(std::time::Duration),

    /// The daemon said something this client cannot make sense of.
    #[error("unexpected answer from the claudemesh daemon: {0}")]
    Protocol(String),
}

impl ClientError {
    /// True when reconnecting (or starting the daemon) may fix it.
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            Self::NotRunning { .. }
                | Self::Connect { .. }
                | Self::Disconnected
                | Self::ConnectionLost
                | Self::Timeout(_)
        )
    }

    /// The daemon's error code, for a request the daemon refused.
    pub fn daemon_code(&self) -> Option<&str> {
        match self {
            Self::Daemon(e) => Some(e.code.as_str()),
            _ => None,
        }
    }
}
