//! The person at the terminal as a mesh participant: the name ctl sends
//! under, and `claudemesh-ctl inbox` to read what was sent to it.
//!
//! Replies go to the member. ctl sends under the member's own name in the
//! mesh (the name given at `join`, by default `user@host`). When no session
//! has that name, the broker hands a message for it to the member enrolled
//! with it (docs/protocol.md, "Targets"), and the daemon keeps such a
//! message for the person rather than for the Claude Code sessions that
//! happen to run: `inbox` shows it (or the next session to start does).
//! `inbox` attaches as a real session under that name, so it takes those
//! messages; what it does not show goes back when it ends.

use std::io::Write;

use claudemesh_daemon::config::{Config, MeshConfig};
use claudemesh_protocol::ipc::{
    AttachArgs, AttachedInfo, Event, InboxMessage, IpcErrorCode, Request, Response,
};
use serde_json::json;

use crate::ctx;
use crate::daemon;
use crate::error::{CtlError, Result};
use crate::output::{self, BOLD, CYAN, paint};

/// The default mesh of new sessions and ctl commands, the daemon's rule
/// (`claudemesh_daemon::config::pick_default`).
pub fn default_mesh(config: &Config) -> Option<&MeshConfig> {
    config.default_mesh()
}

pub struct InboxOpts<'a> {
    pub mesh: Option<&'a str>,
    pub follow: bool,
    pub json: bool,
}

/// `claudemesh-ctl inbox [--mesh M] [--follow] [--json]`.
pub fn inbox(o: InboxOpts<'_>) -> Result<()> {
    let paths = ctx::paths()?;
    let name = ctx::name_in(&ctx::load_config(&paths)?, o.mesh);
    daemon::block_on(async {
        let mut client = daemon::require(&paths).await?;
        let events = client.take_events();
        let info = attach(&client, o.mesh, &name).await?;
        let result = if o.follow {
            follow(&client, events, &info, o.json).await
        } else {
            read_once(&client, &info, o.json).await
        };
        daemon::detach(&client).await;
        result
    })
}

/// A real (not transient) session: it takes the messages kept for the
/// person, and ends with this command.
async fn attach(
    client: &claudemesh_daemon::client::DaemonClient,
    mesh: Option<&str>,
    name: &str,
) -> Result<AttachedInfo> {
    let cwd = std::env::current_dir()
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "/".into());
    let args = AttachArgs {
        mesh: mesh.map(str::to_owned),
        display_name: Some(name.to_owned()),
        cwd,
        claude_pid: std::process::id(),
        groups: Vec::new(),
        transient: false,
        transcript_path: None,
    };
    match daemon::request(client, Request::Attach(args)).await {
        Ok(Response::Attached(info)) => Ok(info),
        Ok(_) => Err(CtlError::failure(
            "unexpected answer from the daemon to attach",
        )),
        Err(mut e) if e.daemon_code == Some(IpcErrorCode::UnknownMesh) => {
            e.exit = crate::error::Exit::NotJoined;
            Err(e.hint("see `claudemesh-ctl list` for the joined meshes"))
        }
        Err(e) => Err(e),
    }
}

/// Every waiting message, oldest first; only those printed are marked seen
/// (the daemon marks exactly what it returns).
async fn read_once(
    client: &claudemesh_daemon::client::DaemonClient,
    info: &AttachedInfo,
    json_out: bool,
) -> Result<()> {
    let mut shown = Vec::new();
    // One answer holds at most ~3 MiB: ask again until nothing is left.
    loop {
        let messages =
            match daemon::request(client, Request::FetchInbox { mark_seen: true }).await? {
                Response::Inbox { messages } => messages,
                _ => {
                    return Err(CtlError::failure(
                        "unexpected answer from the daemon to fetch_inbox",
                    ));
                }
            };
        if messages.is_empty() {
            break;
        }
        if !json_out {
            for m in &messages {
                print_message(m);
            }
        }
        shown.extend(messages);
    }
    if json_out {
        output::json(&json!({
            "mesh": info.mesh_slug,
            "as": info.display_name,
            "messages": shown,
        }));
    } else if shown.is_empty() {
        output::line(format!(
            "No new messages for {} in mesh {}.",
            paint(BOLD, &info.display_name),
            paint(BOLD, &info.mesh_slug)
        ));
    } else {
        reply_hint(info);
    }
    Ok(())
}

/// Prints messages as they arrive until interrupted; each is marked seen
/// once printed. `--json` prints one JSON object per line.
async fn follow(
    client: &claudemesh_daemon::client::DaemonClient,
    events: Option<tokio::sync::mpsc::Receiver<Event>>,
    info: &AttachedInfo,
    json_out: bool,
) -> Result<()> {
    let Some(mut events) = events else {
        return Err(CtlError::failure(
            "the daemon connection has no event stream",
        ));
    };
    if !json_out {
        output::note(format!(
            "waiting for messages to {} in mesh {} (Ctrl-C to stop)",
            info.display_name, info.mesh_slug
        ));
    }
    // Messages already waiting come as events right after the attach; a
    // `next`/`low` one would wait while the session is `working`, which
    // this session never is.
    // One listener for the whole loop: a Ctrl-C that lands while a message
    // is being marked seen is kept for the next turn, not lost.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let event = tokio::select! {
            e = events.recv() => e,
            _ = &mut interrupted => return Ok(()),
        };
        let Some(event) = event else {
            return Err(CtlError::failure("the daemon closed the connection"));
        };
        let Event::Message(m) = event else { continue };
        if json_out {
            let line = serde_json::to_string(&m).expect("serializes");
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                // Nobody reads any more: leave it unseen.
                return Ok(());
            }
        } else {
            print_message(&m);
        }
        daemon::request(
            client,
            Request::MarkSeen {
                message_ids: vec![m.message_id.clone()],
            },
        )
        .await?;
    }
}

fn print_message(m: &InboxMessage) {
    output::line(format!(
        "{} {} {} {}",
        paint(CYAN, output::format_millis(m.sent_at)),
        paint(BOLD, &m.from.display_name),
        paint(output::DIM, format!("→ {} [{}]", m.to, m.priority.as_str())),
        m.message_id
    ));
    for l in m.text.lines() {
        output::line(format!("  {l}"));
    }
}

fn reply_hint(info: &AttachedInfo) {
    output::note(format!(
        "reply with `claudemesh-ctl send --mesh {} <NAME> …`; replies to you reach {} \
         (read them here again)",
        info.mesh_slug, info.display_name
    ));
}
