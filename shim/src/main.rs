//! claudemesh-shim: the stdio MCP server each Claude Code session starts.
//!
//! It is a thin client of the per-user daemon (`claudemeshd`): no keys, no
//! network. It attaches this Claude Code session to the daemon, exposes the
//! mesh as six tools, and brings inbound messages to the model. stdout is
//! the MCP channel; logs go to stderr only.

#![forbid(unsafe_code)]

mod config;
mod format;
mod server;
mod session;
mod tools;
mod transcript;

use std::process::ExitCode;

use crate::config::Settings;
use crate::session::Session;

const HELP: &str = "\
claudemesh-shim — the MCP server that puts a Claude Code session on the mesh

USAGE:
    claudemesh-shim            speak MCP on stdin/stdout (Claude Code starts it)
    claudemesh-shim --version
    claudemesh-shim --help

Register it with Claude Code once:
    claude mcp add claudemesh -- claudemesh-shim

It talks to the claudemesh daemon (claudemeshd) over a local socket and starts
the daemon if none runs. Tools: list_peers, send_message, check_messages,
message_status, set_summary, set_status.

ENVIRONMENT:
    CLAUDEMESH_DISPLAY_NAME  the name peers see (default: <project folder>@<host>)
    CLAUDEMESH_MESH          the mesh to join (default: the daemon's default mesh)
    CLAUDEMESH_GROUPS        groups to join, comma-separated (e.g. backend,api)
    CLAUDEMESH_DAEMON        the daemon executable (default: claudemeshd beside
                             this program, else on PATH)
    CLAUDEMESH_CHANNEL       channel notifications: auto (default: when Claude Code
                             was started with a channels flag), 1 always, 0 never
    CLAUDEMESH_DEBUG=1       verbose logs on stderr
    CLAUDEMESH_CONFIG_DIR, CLAUDEMESH_DATA_DIR, CLAUDEMESH_RUNTIME_DIR
                             where the daemon's files and socket are
    CLAUDEMESH_CLAUDE_PID    for tests and wrappers: the Claude Code process this
                             session belongs to (default: the parent process)

EXAMPLE:
    claude mcp add claudemesh -e CLAUDEMESH_DISPLAY_NAME=api -- claudemesh-shim

Trouble? Run `claudemesh-ctl doctor`.
";

fn main() -> ExitCode {
    if let Some(arg) = std::env::args_os().nth(1) {
        match arg.to_str() {
            Some("--version" | "-V") => {
                println!("claudemesh-shim {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            Some("--help" | "-h") => {
                print!("{HELP}");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!(
                    "claudemesh-shim: unexpected argument {arg:?}; it takes none (see --help)"
                );
                return ExitCode::from(2);
            }
        }
    }
    init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("claudemesh-shim: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let session = Session::new(Settings::from_env());
        session.start_in_background();
        server::run(session).await
    });
    // Do not wait for tasks still blocked (e.g. on the daemon socket).
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("claudemesh-shim: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Quiet by default (warnings and errors); `CLAUDEMESH_DEBUG=1` for all.
fn init_logging() {
    let level = if config::debug_enabled() {
        tracing::Level::DEBUG
    } else {
        tracing::Level::WARN
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false)
        .init();
}
