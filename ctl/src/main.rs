//! claudemesh-ctl: the user's command line for claudemesh.
//!
//! One module per concern: `enroll` (join, leave), `inspect` (list, status,
//! peers, send, outbox), `claude` (install/uninstall with Claude Code),
//! `hook`, `service`, `doctor`; underneath, `broker_http` (the broker's HTTP
//! endpoints), `daemon` (the local socket), `output` (tables, colour,
//! spinner, JSON) and `error` (exit codes). See docs/ctl.md.

#![forbid(unsafe_code)]

mod broker_http;
mod claude;
mod cli;
mod ctx;
mod daemon;
mod default_mesh;
mod doctor;
mod enroll;
mod error;
mod hook;
mod hook_io;
mod inspect;
mod logs;
mod output;
mod proc;
mod service;
mod session_start;
mod terminal;
mod wake;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, DaemonCommand, ServiceCommand};
use crate::error::{Exit, Result};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage.into()
            } else {
                Exit::Ok.into()
            };
        }
    };
    let debug =
        cli.verbose || std::env::var("CLAUDEMESH_DEBUG").is_ok_and(|v| !v.is_empty() && v != "0");
    output::set_debug(debug);

    // A hook must never fail Claude Code: it handles everything itself.
    if let Command::Hook { wake } = cli.command {
        return std::process::ExitCode::from(hook::run(wake));
    }

    let json = cli.json;
    match dispatch(cli) {
        Ok(()) => Exit::Ok.into(),
        Err(e) => {
            if !e.quiet {
                output::error(&e.message, e.hint.as_deref());
                // A script asked for JSON: it gets the error as JSON too.
                if json {
                    output::json(&serde_json::json!({"error": {
                        "message": e.message,
                        "hint": e.hint,
                        "exitCode": e.exit as i32,
                    }}));
                }
            }
            e.exit.into()
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    let json = cli.json;
    match cli.command {
        Command::Join {
            link,
            name,
            default,
        } => enroll::join(enroll::JoinArgs {
            link,
            name,
            make_default: default,
            json,
        }),
        Command::Default { mesh } => default_mesh::run(mesh.as_deref(), json),
        Command::Leave { mesh } => enroll::leave(enroll::LeaveArgs { mesh, json }),
        Command::List => inspect::list(json),
        Command::Status => inspect::status(json),
        Command::Peers { mesh } => inspect::peers(mesh.as_deref(), json),
        Command::Send {
            to,
            text,
            mesh,
            priority,
            name,
        } => inspect::send(inspect::SendOpts {
            to: &to,
            text,
            mesh: mesh.as_deref(),
            priority,
            name: name.as_deref(),
            json,
        }),
        Command::Inbox { mesh, follow } => terminal::inbox(terminal::InboxOpts {
            mesh: mesh.as_deref(),
            follow,
            json,
        }),
        Command::Outbox => inspect::outbox(json),
        Command::Logs { follow } => logs::run(follow, json),
        Command::Install {
            settings,
            shim,
            no_mcp,
            no_hooks,
            wake,
        } => claude::install(claude::InstallArgs {
            settings: settings.as_deref(),
            shim: shim.as_deref(),
            no_mcp,
            no_hooks,
            wake,
            json,
        }),
        Command::Uninstall {
            settings,
            no_mcp,
            no_hooks,
        } => claude::uninstall(claude::UninstallArgs {
            settings: settings.as_deref(),
            no_mcp,
            no_hooks,
            json,
        }),
        Command::Hook { wake } => {
            hook::run(wake);
            Ok(())
        }
        Command::Daemon(DaemonCommand::Start) => daemon::start(json),
        Command::Service(s) => match s {
            ServiceCommand::Install { daemon } => service::install(daemon.as_deref(), json),
            ServiceCommand::Uninstall => service::uninstall(json),
            ServiceCommand::Status => service::status(json),
            ServiceCommand::Print { daemon, flavor } => service::print(daemon.as_deref(), flavor),
        },
        Command::Doctor { settings } => doctor::run(settings.as_deref(), json),
    }
}
