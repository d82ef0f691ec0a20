//! The command line. Every command's `--help` ends with an example.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::service::Flavor;

const ABOUT: &str = "claudemesh's command line: join and leave meshes, inspect the daemon, \
register claudemesh with Claude Code, run the daemon as a service, diagnose problems.";

#[derive(Debug, Parser)]
#[command(
    name = "claudemesh-ctl",
    version,
    about = ABOUT,
    after_help = format!("{TOP_AFTER_HELP}\n{}", crate::error::EXIT_CODES_HELP),
    propagate_version = true,
)]
pub struct Cli {
    /// Print machine-readable JSON on stdout (inspecting commands and more).
    #[arg(long, global = true)]
    pub json: bool,

    /// Verbose logs on stderr (also CLAUDEMESH_DEBUG=1).
    #[arg(short, long, global = true)]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The top-level help: examples and environment; the exit codes follow.
const TOP_AFTER_HELP: &str = "\
Examples:
  claudemesh-ctl join 'ic://join/eyJ2Ijox…'
  claudemesh-ctl list
  claudemesh-ctl status --json
  claudemesh-ctl send api@laptop 'the schema changed, pull main'
  claudemesh-ctl inbox --follow
  claudemesh-ctl install && claudemesh-ctl service install
  claudemesh-ctl doctor

Environment:
  CLAUDEMESH_BROKER_URL   use this broker (wss://host/ws) for every mesh instead of the invite's
  CLAUDEMESH_CONFIG_DIR   where config.json lives (also CLAUDEMESH_DATA_DIR, CLAUDEMESH_RUNTIME_DIR)
  CLAUDEMESH_KEYSTORE     os | file: force where member keys are kept
  CLAUDEMESH_DEBUG=1      verbose logs on stderr (same as -v)
  NO_COLOR=1              no colour (colour is only used on a terminal anyway)
";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Join a mesh with an invite link (checks the link first; atomic).
    #[command(after_help = "\
Example:
  claudemesh-ctl join 'ic://join/eyJ2IjoxLCJtZXNoSWQiOi…' --name alice

The link is checked (shape, owner signature, expiry) before anything else;
then a fresh member key is stored in the keystore, the broker enrolls it, and
the config is written last. If enrollment fails, the key is deleted again.
Joining a mesh already joined does nothing and exits 0 (with --default, it
makes that mesh the default).
A plain join does not change the default mesh of new sessions (see
`claudemesh-ctl default`); --default does.
Exit codes: 4 invalid or refused invite, 5 broker unreachable.")]
    Join {
        /// The invite link, `ic://join/…` (quote it).
        link: String,
        /// The member's display name at the broker (default: user@host).
        #[arg(long)]
        name: Option<String>,
        /// Make this mesh the default of new Claude Code sessions and ctl commands.
        #[arg(long)]
        default: bool,
    },

    /// The default mesh of new sessions and ctl commands: print it, or set it.
    #[command(after_help = "\
Examples:
  claudemesh-ctl default          # which mesh, and the rule
  claudemesh-ctl default team     # new sessions and ctl commands use `team`
  claudemesh-ctl default local    # back to this machine's own mesh

The rule: the mesh set here (or with `join --default`); if none is set,
`local`; without `local`, the first mesh joined. A plain `join` never moves
it. CLAUDEMESH_MESH=MESH picks another for one Claude Code session, --mesh
for one ctl command. Sessions already running stay in their mesh.")]
    Default {
        /// The mesh's slug or id (see `claudemesh-ctl list`).
        mesh: Option<String>,
    },

    /// Leave a mesh: a signed leave to the broker; the key and config entry go.
    #[command(after_help = "\
Example:
  claudemesh-ctl leave team

Works when the broker is unreachable (with a warning): the key and the
config entry are removed here either way.")]
    Leave {
        /// The mesh's slug or id (see `claudemesh-ctl list`).
        mesh: String,
    },

    /// The joined meshes: member, broker, link state, sessions.
    #[command(after_help = "\
Examples:
  claudemesh-ctl list
  claudemesh-ctl list --json | jq -r '.meshes[].slug'")]
    List,

    /// The daemon: version, keystore, each mesh's link and queues, the sessions.
    #[command(after_help = "\
Examples:
  claudemesh-ctl status
  claudemesh-ctl status --json

Exit code 3 when the daemon is not running (what can be known without it is
still printed).")]
    Status,

    /// The peers (sessions) of a mesh.
    #[command(after_help = "\
Examples:
  claudemesh-ctl peers
  claudemesh-ctl peers team --json

ctl attaches briefly as a session under your member's name to ask.")]
    Peers {
        /// The mesh's slug or id (default: the daemon's default mesh).
        mesh: Option<String>,
    },

    /// Send a message from the terminal or a script, under your member's name.
    #[command(after_help = "\
Examples:
  claudemesh-ctl send api@laptop 'tests are green on main'
  claudemesh-ctl send --mesh team @backend 'deploying in 5 minutes'
  git log -1 | claudemesh-ctl send '*' -

<TO> is a display name, @group, * (everyone), <pubkey> or <pubkey>/<sessionId>.
A member's name reaches that member even when none of its sessions is open
(queued until it is back). The message goes out under your member's name in
the mesh; replies to it are read with `claudemesh-ctl inbox`.")]
    Send {
        /// The recipient: display name, @group, *, <pubkey> or <pubkey>/<sessionId>.
        to: String,
        /// The message (several words are joined by spaces; `-` reads stdin).
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
        /// The mesh to send in (default: the daemon's default mesh).
        #[arg(long)]
        mesh: Option<String>,
        /// now, next or low.
        #[arg(long, default_value = "next", value_parser = parse_priority)]
        priority: claudemesh_protocol::wire::Priority,
        /// The sending session's name (default: your member's name in the mesh).
        #[arg(long = "as")]
        name: Option<String>,
    },

    /// Read the messages sent to you (your member's name) in a mesh.
    #[command(
        visible_alias = "read",
        after_help = "\
Examples:
  claudemesh-ctl inbox
  claudemesh-ctl inbox --mesh team --follow
  claudemesh-ctl inbox --json | jq -r '.messages[].text'

Shows the messages addressed to your member's name (the name `send` uses,
see `claudemesh-ctl status`): replies to `claudemesh-ctl send`, and messages
sent to you while no session of yours was around. Each message printed is
marked seen (its sender sees `seen`); nothing else is. --follow keeps
printing as messages arrive (one JSON object per line with --json)."
    )]
    Inbox {
        /// The mesh to read (default: the daemon's default mesh).
        #[arg(long)]
        mesh: Option<String>,
        /// Keep printing messages as they arrive, until Ctrl-C.
        #[arg(short, long)]
        follow: bool,
    },

    /// The daemon's log, human-readable (`-f` to follow).
    #[command(after_help = "\
Examples:
  claudemesh-ctl logs
  claudemesh-ctl logs -f
  claudemesh-ctl logs --json | jq 'select(.level == \"WARN\")'

Reads claudemeshd.log in the data directory, where a daemon started by
`claudemesh-ctl daemon start` or by the shim writes (`status` and `doctor`
print the path). A systemd service logs to the journal instead:
`journalctl --user -u claudemeshd`.")]
    Logs {
        /// Keep printing what is appended, until Ctrl-C.
        #[arg(short, long)]
        follow: bool,
    },

    /// Messages the daemon has not yet handed to a broker.
    #[command(after_help = "\
Examples:
  claudemesh-ctl outbox
  claudemesh-ctl outbox --json")]
    Outbox,

    /// Register claudemesh with Claude Code: the MCP shim and the hooks.
    #[command(after_help = "\
Examples:
  claudemesh-ctl install
  claudemesh-ctl install --settings ./my-settings.json --no-mcp

Runs `claude mcp add claudemesh --scope user -- <path>/claudemesh-shim` (or
prints that line when `claude` is not on PATH), and adds UserPromptSubmit,
PostToolUse, SessionStart and Stop hooks running
`<path>/claudemesh-ctl hook --wake <now|next|off>` to Claude Code's settings
(~/.claude/settings.json, or $CLAUDE_CONFIG_DIR/settings.json), merged with
what is there. The Stop hook runs in the background (async, asyncRewake) and
wakes an idle session when a message arrives for it. The original file is
saved as settings.json.claudemesh-backup before the first change. Running
it twice changes nothing.")]
    Install {
        /// Claude Code settings file to edit.
        #[arg(long, value_name = "PATH")]
        settings: Option<PathBuf>,
        /// The claudemesh-shim to register (default: beside this program).
        #[arg(long, value_name = "PATH")]
        shim: Option<PathBuf>,
        /// Do not run `claude mcp add`.
        #[arg(long)]
        no_mcp: bool,
        /// Do not edit the hooks.
        #[arg(long)]
        no_hooks: bool,
        /// Which messages wake an idle session: `now`, `next` (now and
        /// next; `low` never wakes) or `off`. CLAUDEMESH_WAKE in a
        /// session's environment overrides it for that session.
        #[arg(long, value_enum, value_name = "LEVEL", default_value = "next")]
        wake: crate::wake::WakeSetting,
    },

    /// Undo `install` exactly (the settings file comes back byte-identical).
    #[command(after_help = "\
Example:
  claudemesh-ctl uninstall

Runs `claude mcp remove claudemesh --scope user` and removes only the
claudemesh hook entries (and the containers that leaves empty). A settings
file that install created is removed.")]
    Uninstall {
        /// Claude Code settings file to edit.
        #[arg(long, value_name = "PATH")]
        settings: Option<PathBuf>,
        /// Do not run `claude mcp remove`.
        #[arg(long)]
        no_mcp: bool,
        /// Do not edit the hooks.
        #[arg(long)]
        no_hooks: bool,
    },

    /// For Claude Code's hooks: print pending mesh messages as context.
    #[command(after_help = "\
Example (what Claude Code runs; the hook JSON arrives on stdin):
  echo '{\"hook_event_name\":\"PostToolUse\"}' | claudemesh-ctl hook

Prints {\"hookSpecificOutput\":{\"hookEventName\":…,\"additionalContext\":…}} when
messages wait, nothing otherwise. Always exits 0, within about a second.
For `Stop` (run in the background) it waits instead for the session's next
message that wakes it (per --wake, or CLAUDEMESH_WAKE), prints it on stderr
and exits 2, which wakes the idle session; otherwise it exits 0.
For `SessionStart` it prints the session's name, mesh and peers as context.")]
    Hook {
        /// Which messages wake the session (the installed setting).
        #[arg(long, value_enum, value_name = "LEVEL")]
        wake: Option<crate::wake::WakeSetting>,
    },

    /// Start the daemon in the background now (as the shim does on demand).
    #[command(subcommand)]
    Daemon(DaemonCommand),

    /// Run the daemon as a systemd user service (Linux) or launchd agent (macOS).
    #[command(subcommand)]
    Service(ServiceCommand),

    /// Check the installation; print the fix for anything wrong.
    #[command(after_help = "\
Examples:
  claudemesh-ctl doctor
  claudemesh-ctl doctor --json

Checks: the daemon answers; socket directory 700 and socket 600, yours;
keystore durability; config file permissions; each mesh's broker
(GET /healthz); the Claude Code registration; the hooks. Exit 1 when any
check fails.")]
    Doctor {
        /// Claude Code settings file to check.
        #[arg(long, value_name = "PATH")]
        settings: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Start claudemeshd detached, unless it already runs; wait until it answers.
    #[command(after_help = "\
Example:
  claudemesh-ctl daemon start

Starts `claudemeshd run` in its own process group, its output appended to
claudemeshd.log in the data directory (the way the shim starts it on
demand), and waits until it answers. Does nothing when it already runs.
It runs until logout or `kill`; `claudemesh-ctl service install` makes it
a service that starts at login.")]
    Start,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write the unit/agent and start it.
    #[command(after_help = "\
Example:
  claudemesh-ctl service install

Linux: writes ~/.config/systemd/user/claudemeshd.service, then runs
`systemctl --user daemon-reload && systemctl --user enable --now claudemeshd`
(when systemd --user is unavailable it says so, prints the commands and
exits 1).
macOS: writes ~/Library/LaunchAgents/dev.claudemesh.claudemeshd.plist and
loads it with launchctl.")]
    Install {
        /// The claudemeshd to run (default: beside this program, else PATH).
        #[arg(long, value_name = "PATH")]
        daemon: Option<PathBuf>,
    },
    /// Stop the service and remove the unit/agent.
    #[command(after_help = "Example:\n  claudemesh-ctl service uninstall")]
    Uninstall,
    /// What the service manager says about claudemeshd.
    #[command(after_help = "Example:\n  claudemesh-ctl service status --json")]
    Status,
    /// Print the rendered unit/agent without installing it.
    #[command(after_help = "\
Example:
  claudemesh-ctl service print --flavor systemd > claudemeshd.service")]
    Print {
        /// The claudemeshd path to put in it.
        #[arg(long, value_name = "PATH")]
        daemon: Option<PathBuf>,
        /// systemd or launchd (default: this platform's).
        #[arg(long, value_enum)]
        flavor: Option<Flavor>,
    },
}

fn parse_priority(s: &str) -> Result<claudemesh_protocol::wire::Priority, String> {
    claudemesh_protocol::wire::Priority::parse(s)
        .ok_or_else(|| format!("`{s}` is not a priority: use now, next or low"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_has_an_example() {
        let cmd = Cli::command();
        let mut stack: Vec<&clap::Command> = vec![&cmd];
        while let Some(c) = stack.pop() {
            let has_sub = c.get_subcommands().next().is_some();
            if !has_sub {
                let after = c
                    .get_after_help()
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                assert!(
                    after.contains("Example"),
                    "`{}` --help has no example",
                    c.get_name()
                );
            }
            stack.extend(c.get_subcommands().filter(|s| s.get_name() != "help"));
        }
        assert!(
            cmd.get_after_help()
                .unwrap()
                .to_string()
                .contains(crate::error::EXIT_CODES_HELP)
        );
    }
}
