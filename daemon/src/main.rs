//! `claudemeshd`: the per-user claudemesh daemon.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use claudemesh_daemon::run::{RunOptions, run};

#[derive(Parser)]
#[command(
    name = "claudemeshd",
    version,
    about = "The claudemesh daemon: member keys, one broker connection per mesh, and the local socket every Claude Code session talks to"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run in the foreground (for launchd, systemd, or a terminal). Logs go
    /// to stderr; SIGTERM or SIGINT stops it cleanly.
    Run {
        /// Run the zero-configuration local mesh (the default).
        #[arg(long, overrides_with = "no_local")]
        local: bool,
        /// Do not run the local mesh.
        #[arg(long, overrides_with = "local")]
        no_local: bool,
        /// A fixed loopback port for the local broker (default: the last
        /// one used if free, else any free port).
        #[arg(long, value_name = "PORT")]
        local_port: Option<u16>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            local: _,
            no_local,
            local_port,
        } => run(RunOptions {
            local: !no_local,
            local_port,
        }),
    }
}
