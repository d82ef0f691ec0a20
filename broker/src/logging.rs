//! Structured logs: human-readable on a terminal, JSON lines otherwise
//! (under systemd, in a container), the same shape as the daemon's: fields
//! at the top level beside `timestamp`, `level`, `message`, `target`.
//! `RUST_LOG` filters, default `info`.
//! Logs name meshes, members and sessions, never ciphertext or text.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    };
}
