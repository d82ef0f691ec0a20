//! The `SessionStart` hook: a new (or resumed) session's model learns in a
//! few lines where it is on the mesh: its own name and mesh, who else is
//! there, how many messages wait, and that mesh peers (other machines too)
//! are reached with the claudemesh tools, not with Claude Code's own
//! `ListAgents` (which lists only this machine's Claude Code sessions).
//!
//! The shim attaches in the background while Claude Code starts, so the
//! hook asks a few times, for at most [`WAIT_FOR_SESSION`], before it
//! gives up and prints nothing.

use std::time::Duration;

use claudemesh_protocol::ipc::{HookSessionInfo, Request, Response};

use crate::daemon;
use crate::hook_io::{HookInput, print_context};

/// How long the hook waits for the shim to attach the session.
const WAIT_FOR_SESSION: Duration = Duration::from_secs(3);
const RETRY: Duration = Duration::from_millis(200);
/// Everything, within Claude Code's 5 s `timeout` for the hook.
const WHOLE: Duration = Duration::from_secs(4);
/// Peers named in full; more are counted.
const MAX_NAMED: usize = 12;

/// The lines the model reads.
pub fn describe(info: &HookSessionInfo) -> String {
    let others: Vec<String> = info
        .peers
        .iter()
        .filter(|p| !p.is_self)
        .map(|p| {
            let mut s = format!("{} ({}", p.peer.display_name, p.peer.status.as_str());
            if !p.peer.host.is_empty() {
                s.push_str(&format!(", on {}", p.peer.host));
            }
            if !p.peer.summary.is_empty() {
                s.push_str(&format!(": {}", p.peer.summary));
            }
            s.push(')');
            s
        })
        .collect();
    let mut out = format!(
        "claudemesh: you are \"{}\" on the mesh \"{}\".",
        info.display_name, info.mesh_slug
    );
    if others.is_empty() {
        out.push_str(" No other session is on it now.");
    } else {
        let shown = others.len().min(MAX_NAMED);
        out.push_str(&format!(
            " Also on it: {}{}.",
            others[..shown].join(", "),
            if others.len() > shown {
                format!(" and {} more", others.len() - shown)
            } else {
                String::new()
            }
        ));
    }
    match info.pending {
        0 => {}
        1 => out.push_str(" 1 message waits for you: call check_messages."),
        n => out.push_str(&format!(" {n} messages wait for you: call check_messages.")),
    }
    out.push_str(
        "\nMesh peers, on this machine or others, are reached only with the claudemesh tools \
         (list_peers, send_message, check_messages); Claude Code's ListAgents lists only this \
         machine's Claude Code sessions, which are not mesh peers.",
    );
    out
}

pub fn run(input: &HookInput) {
    let result = daemon::block_on(async {
        tokio::time::timeout(WHOLE, ask())
            .await
            .unwrap_or_else(|_| Err(format!("the daemon did not answer within {WHOLE:?}")))
    });
    match result {
        Ok(Some(info)) => print_context(&input.event, &describe(&info)),
        Ok(None) => {}
        Err(e) => eprintln!("claudemesh hook: {e}"),
    }
}

/// The session, once the shim has attached it; `None` when it does not
/// within [`WAIT_FOR_SESSION`] or no daemon runs.
async fn ask() -> Result<Option<HookSessionInfo>, String> {
    let Some(client) = crate::hook_io::connect().await? else {
        return Ok(None);
    };
    let deadline = tokio::time::Instant::now() + WAIT_FOR_SESSION;
    loop {
        match daemon::request(&client, Request::HookSession).await {
            Ok(Response::HookSession { session: Some(s) }) => return Ok(Some(s)),
            Ok(Response::HookSession { session: None }) => {}
            Ok(_) => return Err("unexpected answer to hook_session".to_owned()),
            Err(e) => return Err(e.message),
        }
        if tokio::time::Instant::now() + RETRY > deadline {
            return Ok(None);
        }
        tokio::time::sleep(RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use claudemesh_protocol::ipc::PeerView;
    use claudemesh_protocol::wire::{Peer, PeerStatus};

    fn peer(name: &str, me: bool) -> PeerView {
        PeerView {
            peer: Peer {
                member: "ab".repeat(32),
                session_id: name.into(),
                display_name: name.into(),
                status: PeerStatus::Idle,
                summary: if me { String::new() } else { "api work".into() },
                groups: vec![],
                cwd: "/w".into(),
                host: "desk".into(),
                connected_at: 0,
            },
            is_self: me,
        }
    }

    #[test]
    fn names_the_session_its_peers_and_the_tools() {
        let info = HookSessionInfo {
            display_name: "web@desk".into(),
            mesh_slug: "team".into(),
            peers: vec![peer("web@desk", true), peer("api@desk", false)],
            pending: 2,
        };
        let s = describe(&info);
        assert!(
            s.starts_with("claudemesh: you are \"web@desk\" on the mesh \"team\"."),
            "{s}"
        );
        assert!(
            s.contains("Also on it: api@desk (idle, on desk: api work)."),
            "{s}"
        );
        assert!(s.contains("2 messages wait for you"), "{s}");
        assert!(s.contains("ListAgents"), "{s}");
        let alone = describe(&HookSessionInfo {
            peers: vec![peer("web@desk", true)],
            pending: 0,
            ..info
        });
        assert!(alone.contains("No other session"), "{alone}");
        assert!(!alone.contains("wait for you"), "{alone}");
    }
}
