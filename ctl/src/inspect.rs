//! `list`, `status`, `peers`, `send`, `outbox`: the daemon's state for
//! people (tables) and scripts (`--json`).

use std::io::Read;

use claudemesh_protocol::ipc::{DaemonStatus, LinkState, MeshStatus, Request, Response, SendArgs};
use claudemesh_protocol::wire::Priority;
use serde_json::{Value, json};

use crate::ctx;
use crate::daemon;
use crate::enroll::mesh_json;
use crate::error::{CtlError, Result};
use crate::output::{self, BOLD, DIM, GREEN, RED, Table, YELLOW, paint};

pub fn link_str(l: LinkState) -> &'static str {
    match l {
        LinkState::Connecting => "connecting",
        LinkState::Connected => "connected",
        LinkState::Disconnected => "disconnected",
        LinkState::Revoked => "revoked",
    }
}

fn link_cell(l: Option<LinkState>) -> String {
    match l {
        Some(LinkState::Connected) => paint(GREEN, "connected"),
        Some(LinkState::Connecting) => paint(YELLOW, "connecting"),
        Some(s) => paint(RED, link_str(s)),
        None => paint(DIM, "-"),
    }
}

/// The daemon's status, or None when it is not running.
fn daemon_status(paths: &claudemesh_daemon::paths::Paths) -> Result<Option<DaemonStatus>> {
    daemon::block_on(async {
        match daemon::connect(paths, daemon::TIMEOUT).await? {
            None => Ok(None),
            Some(client) => daemon::status(&client).await.map(Some),
        }
    })
}

pub fn list(json_out: bool) -> Result<()> {
    let paths = ctx::paths()?;
    let config = ctx::load_config(&paths)?;
    let status = daemon_status(&paths)?;
    let find = |id: &str| -> Option<&MeshStatus> {
        status
            .as_ref()
            .and_then(|s| s.meshes.iter().find(|m| m.mesh_id == id))
    };
    let mut rows: Vec<Value> = config
        .meshes
        .iter()
        .map(|m| {
            let mut v = mesh_json(m);
            let st = find(&m.mesh_id);
            v["link"] = st.map_or(Value::Null, |s| json!(link_str(s.link)));
            v["sessions"] = st.map_or(Value::Null, |s| json!(s.sessions));
            v
        })
        .collect();
    // Meshes the daemon runs that the config does not list (e.g. its local
    // mesh before it wrote the config).
    if let Some(s) = &status {
        for m in &s.meshes {
            if !config.meshes.iter().any(|c| c.mesh_id == m.mesh_id) {
                rows.push(json!({
                    "slug": m.slug, "meshId": m.mesh_id, "memberId": m.member_id,
                    "member": m.member, "broker": m.broker, "local": m.local,
                    "joinedAt": null, "link": link_str(m.link), "sessions": m.sessions,
                }));
            }
        }
    }
    if json_out {
        output::json(&json!({"daemonRunning": status.is_some(), "meshes": rows}));
        return Ok(());
    }
    if rows.is_empty() {
        output::line("No meshes joined. Join one with: claudemesh-ctl join 'ic://join/…'");
    } else {
        let mut t = Table::new(&["MESH", "MESH ID", "MEMBER", "BROKER", "LINK", "SESSIONS"]);
        for r in &rows {
            let s = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
            let link = r["link"]
                .as_str()
                .and_then(|l| serde_json::from_value(json!(l)).ok());
            let slug = if r["local"].as_bool() == Some(true) {
                format!("{} {}", s("slug"), paint(DIM, "(local)"))
            } else {
                s("slug")
            };
            t.row(vec![
                slug,
                s("meshId"),
                s("memberId"),
                s("broker"),
                link_cell(link),
                r["sessions"].as_u64().map_or("-".into(), |n| n.to_string()),
            ]);
        }
        t.print();
    }
    if status.is_none() {
        output::note(
            "claudemeshd is not running: link state and sessions are unknown \
             (start it with `claudemesh-ctl daemon start`)",
        );
    }
    Ok(())
}

pub fn status(json_out: bool) -> Result<()> {
    let paths = ctx::paths()?;
    let status = daemon_status(&paths)?;
    let Some(s) = status else {
        // What can be said without the daemon.
        let config = ctx::load_config(&paths)?;
        let keystore = ctx::keystore(&paths, false)?;
        if json_out {
            output::json(&json!({
                "daemon": {"running": false, "socket": paths.socket_path()},
                "ctlVersion": env!("CARGO_PKG_VERSION"),
                "keystore": {"kind": keystore.kind().as_str(), "durable": keystore.durable(),
                             "location": keystore.location(), "warning": keystore.warning()},
                "meshes": config.meshes.iter().map(mesh_json).collect::<Vec<_>>(),
            }));
        } else {
            output::line(format!(
                "{} {}",
                paint(BOLD, "daemon:"),
                paint(RED, "not running")
            ));
            output::line(format!("  socket:   {}", paths.socket_path().display()));
            output::line(format!("  keystore: {}", keystore.location()));
            if let Some(w) = keystore.warning() {
                output::warn(w);
            }
            output::line(format!(
                "{} {} joined",
                paint(BOLD, "meshes:"),
                config.meshes.len()
            ));
            for m in &config.meshes {
                output::line(format!(
                    "  {}  {}  {}",
                    m.slug,
                    m.mesh_id,
                    m.effective_broker_url()
                ));
            }
        }
        // The JSON above already says so: only the exit code follows.
        let down = CtlError::daemon_down();
        return Err(if json_out { down.quiet() } else { down });
    };
    let config = ctx::load_config(&paths)?;
    let default = crate::terminal::default_mesh(&config).map(|m| m.slug.clone());
    if json_out {
        let mut v = serde_json::to_value(&s).expect("serializes");
        v["running"] = json!(true);
        v["defaultMesh"] = json!(default);
        v["log"] = json!(claudemesh_daemon::client::daemon_log_path(&paths));
        v["name"] = json!(crate::ctx::name_in(&config, None));
        v["ctlVersion"] = json!(env!("CARGO_PKG_VERSION"));
        v["wake"] = json!(crate::claude::installed_wake().map(|w| w.as_str()));
        output::json(&json!({"daemon": v}));
        return Ok(());
    }
    output::line(format!(
        "{} {} (claudemeshd {}, pid {})",
        paint(BOLD, "daemon:"),
        paint(GREEN, "running"),
        s.version,
        s.pid
    ));
    output::line(format!("  socket:   {}", s.socket));
    output::line(format!(
        "  log:      {} (claudemesh-ctl logs; a systemd service logs to the journal)",
        claudemesh_daemon::client::daemon_log_path(&paths).display()
    ));
    if let Some(d) = &default {
        output::line(format!(
            "  default:  mesh {d} (new sessions and ctl commands; you are {} there)",
            crate::ctx::name_in(&config, None)
        ));
    }
    output::line(format!(
        "  keystore: {}{}",
        s.keystore,
        if s.keystore_durable {
            String::new()
        } else {
            paint(YELLOW, " (NOT durable: keys are lost at reboot)")
        }
    ));
    output::line(format!(
        "  wake:     {}",
        match crate::claude::installed_wake() {
            Some(w) => format!(
                "idle sessions wake {} (install --wake){}",
                crate::claude::wake_words(w),
                crate::doctor::env_wake_note()
            ),
            None => "idle sessions do not wake (no claudemesh Stop hook: claudemesh-ctl install)"
                .to_owned(),
        }
    ));
    let files_chosen =
        std::env::var("CLAUDEMESH_KEYSTORE").is_ok_and(|v| v.trim().eq_ignore_ascii_case("file"));
    if s.keystore == "file" && !files_chosen {
        output::note(
            "member keys are kept in files readable only by you (no OS keyring); \
             `claudemesh-ctl doctor` says more",
        );
    }
    if s.version != env!("CARGO_PKG_VERSION") {
        output::warn(format!(
            "the daemon is version {} but this claudemesh-ctl is {}; restart the daemon",
            s.version,
            env!("CARGO_PKG_VERSION")
        ));
    }
    output::line("");
    if s.meshes.is_empty() {
        output::line("No meshes.");
    } else {
        let mut t = Table::new(&[
            "MESH", "LINK", "OUTBOX", "INBOX", "SESSIONS", "BROKER", "DETAIL",
        ]);
        for m in &s.meshes {
            t.row(vec![
                if m.local {
                    format!("{} {}", m.slug, paint(DIM, "(local)"))
                } else {
                    m.slug.clone()
                },
                link_cell(Some(m.link)),
                m.outbox_depth.to_string(),
                m.inbox_depth.to_string(),
                m.sessions.to_string(),
                m.broker.clone(),
                m.link_detail.clone().unwrap_or_default(),
            ]);
        }
        t.print();
    }
    output::line("");
    if s.sessions.is_empty() {
        output::line("No sessions attached.");
    } else {
        let mut t = Table::new(&[
            "NAME",
            "MESH",
            "STATUS",
            "CLAUDE PID",
            "SHIM",
            "WAKE",
            "CWD",
        ]);
        for x in &s.sessions {
            t.row(vec![
                x.display_name.clone(),
                x.mesh_slug.clone(),
                x.status.as_str().to_owned(),
                x.claude_pid.to_string(),
                if x.attached {
                    paint(GREEN, "attached")
                } else {
                    paint(YELLOW, "waiting")
                },
                // Its Stop hook waits to wake it (the session is idle).
                if x.wake_waits > 0 {
                    "armed".to_owned()
                } else {
                    "-".to_owned()
                },
                x.cwd.clone(),
            ]);
        }
        t.print();
    }
    Ok(())
}

pub fn peers(mesh: Option<&str>, json_out: bool) -> Result<()> {
    let paths = ctx::paths()?;
    let (info, peers, members) = daemon::block_on(async {
        let client = daemon::require(&paths).await?;
        let info = daemon::attach_self(&client, mesh, None).await?;
        let result = daemon::request(&client, Request::ListPeers).await;
        // Members come from the broker: unknown while the link is down.
        let members = match daemon::request(&client, Request::ListMembers).await {
            Ok(Response::Members { members }) => Some(members),
            Ok(_) => None,
            Err(e) => {
                output::debug(format_args!("list_members: {}", e.message));
                None
            }
        };
        daemon::detach(&client).await;
        match result? {
            Response::Peers { peers } => Ok((info, peers, members)),
            other => Err(CtlError::failure(format!(
                "unexpected answer to list_peers: {}",
                serde_json::to_value(&other).unwrap_or_default()
            ))),
        }
    })?;
    let others: Vec<_> = peers.into_iter().filter(|p| !p.is_self).collect();
    // Named or not, whether this is where new sessions go (as `status` says).
    let is_default = mesh.is_none()
        || ctx::load_config(&paths)
            .ok()
            .and_then(|c| c.default_mesh().map(|m| m.mesh_id == info.mesh_id))
            .unwrap_or(false);
    if json_out {
        output::json(&json!({
            "mesh": info.mesh_slug,
            "meshId": info.mesh_id,
            "default": is_default,
            "link": link_str(info.link),
            "peers": others.iter().map(|p| serde_json::to_value(&p.peer).expect("serializes")).collect::<Vec<_>>(),
            "members": members,
        }));
        return Ok(());
    }
    output::line(format!(
        "{} {}{} (link {})",
        paint(BOLD, "mesh:"),
        paint(BOLD, &info.mesh_slug),
        if is_default { ", the default mesh" } else { "" },
        link_cell(Some(info.link))
    ));
    if others.is_empty() {
        output::line(format!(
            "No peers in mesh {} right now.",
            paint(BOLD, &info.mesh_slug)
        ));
    } else {
        let now = ctx::now_ms();
        let mut t = Table::new(&[
            "NAME", "STATUS", "HOST", "GROUPS", "SINCE", "CWD", "SUMMARY",
        ]);
        for p in &others {
            let p = &p.peer;
            t.row(vec![
                p.display_name.clone(),
                p.status.as_str().to_owned(),
                p.host.clone(),
                p.groups
                    .iter()
                    .map(|g| format!("@{g}"))
                    .collect::<Vec<_>>()
                    .join(","),
                output::ago(p.connected_at, now),
                p.cwd.clone(),
                p.summary.clone(),
            ]);
        }
        t.print();
    }
    print_members(members.as_deref());
    if info.link != LinkState::Connected {
        output::note(format!(
            "the link to mesh {} is {}: this list may be stale",
            info.mesh_slug,
            link_str(info.link)
        ));
    }
    Ok(())
}

/// The members table: who can be sent to by name, online or not.
fn print_members(members: Option<&[claudemesh_protocol::wire::MemberPresence]>) {
    let Some(members) = members else {
        output::note(
            "the members of the mesh are unknown right now (the broker did not list them)",
        );
        return;
    };
    output::line("");
    let now = ctx::now_ms();
    let mut t = Table::new(&["MEMBER", "STATE", "KEY"]);
    for m in members {
        t.row(vec![
            m.display_name.clone(),
            if m.online {
                paint(GREEN, "online")
            } else {
                m.last_seen.map_or_else(
                    || "offline".to_owned(),
                    |at| format!("last seen {}", output::ago(at, now)),
                )
            },
            m.member.chars().take(12).collect(),
        ]);
    }
    t.print();
    output::line("A member's name reaches it even with no session open (queued until it is back).");
}

pub struct SendOpts<'a> {
    pub to: &'a str,
    pub text: Vec<String>,
    pub mesh: Option<&'a str>,
    pub priority: Priority,
    pub name: Option<&'a str>,
    pub json: bool,
}

pub fn send(o: SendOpts<'_>) -> Result<()> {
    let text = if o.text.len() == 1 && o.text[0] == "-" {
        let mut s = String::new();
        std::io::stdin()
            .take(claudemesh_protocol::limits::MAX_TEXT_BYTES as u64 + 1)
            .read_to_string(&mut s)
            .map_err(|e| CtlError::failure(format!("cannot read the message from stdin: {e}")))?;
        s
    } else {
        o.text.join(" ")
    };
    if text.trim().is_empty() {
        return Err(CtlError::new(
            crate::error::Exit::Usage,
            "the message is empty",
        ));
    }
    // The daemon's own check, with its words: a text over the limit is
    // not sent at all.
    claudemesh_protocol::limits::check_message_text(&text)
        .map_err(|e| CtlError::failure(e.to_string()))?;
    let paths = ctx::paths()?;
    let (info, sent) = daemon::block_on(async {
        let client = daemon::require(&paths).await?;
        let info = daemon::attach_self(&client, o.mesh, o.name).await?;
        let result = daemon::request(
            &client,
            Request::Send(SendArgs {
                to: o.to.to_owned(),
                text,
                priority: o.priority,
            }),
        )
        .await;
        daemon::detach(&client).await;
        match result? {
            Response::Sent(sent) => Ok((info, sent)),
            other => Err(CtlError::failure(format!(
                "unexpected answer to send: {}",
                serde_json::to_value(&other).unwrap_or_default()
            ))),
        }
    })?;
    if o.json {
        let mut v = serde_json::to_value(&sent).expect("serializes");
        v["mesh"] = json!(info.mesh_slug);
        v["from"] = json!(info.display_name);
        output::json(&v);
        return Ok(());
    }
    output::line(format!(
        "{} sent {} to {} in mesh {} (as {})",
        paint(GREEN, "✓"),
        sent.message_id,
        o.to,
        info.mesh_slug,
        info.display_name
    ));
    if sent.recipients.is_empty() {
        output::line(
            "  no recipient yet: nobody else matched, or the broker has not acknowledged it \
             (it waits in the daemon's outbox: claudemesh-ctl outbox)",
        );
    }
    for r in &sent.recipients {
        output::line(format!(
            "  {} {}",
            r.display_name
                .clone()
                .or_else(|| r.session_id.clone())
                .unwrap_or_else(|| r.member.chars().take(12).collect()),
            r.state.as_str()
        ));
    }
    Ok(())
}

pub fn outbox(json_out: bool) -> Result<()> {
    let paths = ctx::paths()?;
    let messages = daemon::block_on(async {
        let client = daemon::require(&paths).await?;
        match daemon::request(&client, Request::ListOutbox).await? {
            Response::Outbox { messages } => Ok(messages),
            other => Err(CtlError::failure(format!(
                "unexpected answer to list_outbox: {}",
                serde_json::to_value(&other).unwrap_or_default()
            ))),
        }
    })?;
    if json_out {
        output::json(&json!({"messages": messages}));
        return Ok(());
    }
    if messages.is_empty() {
        output::line("The outbox is empty: every message reached its broker.");
        return Ok(());
    }
    let now = ctx::now_ms();
    let mut t = Table::new(&["MESSAGE", "MESH", "TO", "AGE", "ATTEMPTS", "LAST ERROR"]);
    for m in &messages {
        t.row(vec![
            m.message_id.clone(),
            m.mesh_slug.clone(),
            m.to.clone(),
            output::ago(m.created_at, now),
            m.attempts.to_string(),
            m.last_error.clone().unwrap_or_default(),
        ]);
    }
    t.print();
    Ok(())
}
