//! Logs go to stderr, where launchd and systemd collect them: JSON when
//! stderr is not a terminal (a service), human-readable when it is.
//! `RUST_LOG` decides what is shown; without it, `CLAUDEMESH_DEBUG=1`
//! turns on debug logs for claudemesh itself.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

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
    let result = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).try_init()
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
