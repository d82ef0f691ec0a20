//! Logs go to stderr, where launchd and systemd collect them: JSON when
//! stderr is not a terminal (a service), human-readable when it is.
//! `RUST_LOG` decides what is shown; without it, `CLAUDEMESH_DEBUG=1`
//! turns on debug logs for claudemesh itself.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

pub fn init() {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::new(spec),
        _ if debug_requested() => {
            EnvFilter::new("info,claudemesh_daemon=debug,claudemeshd=debug,claudemesh_broker=debug")
        }
        _ => EnvFilter::new("info"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr on a full disk) is
        // dropped. With internal-error reporting on, tracing-subscriber
        // would `eprintln!` the failure, which panics when stderr fails:
        // that panic killed the database threads on a full disk.
        .log_internal_errors(false);
    // The daemon's broker links use the same WebSocket library as the
    // broker, whose trace events hold whole frames (ciphertext, nonces).
    let frames = tracing_subscriber::filter::filter_fn(|meta| {
        !claudemesh_broker::logging::logs_frame_contents(meta)
    });
    let result = if std::io::stderr().is_terminal() {
        builder.finish().with(frames).try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .finish()
            .with(frames)
            .try_init()
    };
    // Already initialised (tests): keep the existing subscriber.
    let _ = result;
}

fn debug_requested() -> bool {
    matches!(
        std::env::var("CLAUDEMESH_DEBUG").as_deref().map(str::trim),
        Ok("1" | "true" | "yes" | "on")
    )
}
