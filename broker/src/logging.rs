//! Structured logs: human-readable on a terminal, JSON lines otherwise
//! (under systemd, in a container), the same shape as the daemon's: fields
//! at the top level beside `timestamp`, `level`, `message`, `target`.
//! `RUST_LOG` filters, default `info`.
//! Logs name meshes, members and sessions, never ciphertext or text.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr on a full disk) is
        // dropped. With internal-error reporting on, tracing-subscriber
        // would `eprintln!` the failure, which panics when stderr fails:
        // that panic killed the database threads on a full disk.
        .log_internal_errors(false);
    let frames = tracing_subscriber::filter::filter_fn(|meta| !logs_frame_contents(meta));
    let _ = if std::io::stderr().is_terminal() {
        builder.finish().with(frames).try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .finish()
            .with(frames)
            .try_init()
    };
}

/// The WebSocket library traces every frame it reads and writes, whole
/// (ciphertext, nonces, signatures): such events are dropped whatever
/// `RUST_LOG` asks for. Its debug events (close frames) are kept.
pub fn logs_frame_contents(meta: &tracing::Metadata<'_>) -> bool {
    let target = meta.target();
    *meta.level() == tracing::Level::TRACE
        && (target.starts_with("tungstenite") || target.starts_with("tokio_tungstenite"))
}
