//! `doctor`: every check prints ok, warn or fail, and for anything not ok
//! the exact command that fixes it. Exit 1 when any check fails.

use std::path::Path;

use claudemesh_daemon::config::Config;
use claudemesh_daemon::paths::Paths;
use claudemesh_protocol::ipc::DaemonStatus;
use serde::Serialize;
use serde_json::json;

use crate::broker_http::{self, http_origin};
use crate::claude::{self, mcp, settings};
use crate::ctx;
use crate::daemon;
use crate::error::{CtlError, Result};
use crate::output::{self, DIM, GREEN, RED_BOLD, YELLOW_BOLD, paint};
use crate::proc::{self, shell_quote};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Level,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Default)]
struct Checks(Vec<Check>);

impl Checks {
    fn push(&mut self, name: &str, status: Level, detail: impl Into<String>, fix: Option<String>) {
        self.0.push(Check {
            name: name.to_owned(),
            status,
            detail: detail.into(),
            fix,
        });
    }
    fn ok(&mut self, name: &str, detail: impl Into<String>) {
        self.push(name, Level::Ok, detail, None);
    }
    fn warn(&mut self, name: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(name, Level::Warn, detail, Some(fix.into()));
    }
    fn fail(&mut self, name: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(name, Level::Fail, detail, Some(fix.into()));
    }
}

#[cfg(unix)]
fn mode_and_owner(p: &Path) -> std::io::Result<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p)?;
    Ok((m.mode() & 0o777, m.uid()))
}

#[cfg(not(unix))]
fn mode_and_owner(p: &Path) -> std::io::Result<(u32, u32)> {
    std::fs::metadata(p).map(|_| (0o600, 0))
}

fn uid() -> u32 {
    claudemesh_daemon::paths::current_uid()
}

const START_DAEMON: &str =
    "claudemesh-ctl daemon start   (or, to start it at login: claudemesh-ctl service install)";

fn check_daemon(c: &mut Checks, paths: &Paths) -> Option<DaemonStatus> {
    let result = daemon::block_on(async {
        match daemon::connect(paths, daemon::TIMEOUT).await? {
            None => Ok(None),
            Some(client) => daemon::status(&client).await.map(Some),
        }
    });
    match result {
        Ok(Some(s)) => {
            c.ok(
                "daemon",
                format!(
                    "claudemeshd {} (pid {}) answers at {}",
                    s.version, s.pid, s.socket
                ),
            );
            if s.version != env!("CARGO_PKG_VERSION") {
                c.warn(
                    "versions",
                    format!(
                        "the daemon is {} but claudemesh-ctl is {}",
                        s.version,
                        env!("CARGO_PKG_VERSION")
                    ),
                    "restart the daemon from this release: systemctl --user restart claudemeshd   (or stop it and run: claudemeshd run)",
                );
            }
            Some(s)
        }
        Ok(None) => {
            c.fail(
                "daemon",
                format!("nothing answers at {}", paths.socket_path().display()),
                START_DAEMON,
            );
            None
        }
        Err(e) => {
            c.fail(
                "daemon",
                e.message,
                "claudemesh-ctl service status; journalctl --user -u claudemeshd",
            );
            None
        }
    }
}

fn check_socket(c: &mut Checks, paths: &Paths, running: bool) {
    let socket = paths.socket_path();
    let dir = socket.parent().unwrap_or(&paths.runtime_dir).to_owned();
    let me = uid();
    match mode_and_owner(&dir) {
        Err(_) => c.warn(
            "socket dir",
            format!("{} does not exist (the daemon creates it)", dir.display()),
            START_DAEMON,
        ),
        Ok((_, owner)) if owner != me => c.fail(
            "socket dir",
            format!(
                "{} belongs to uid {owner}, not to you (uid {me})",
                dir.display()
            ),
            format!(
                "point CLAUDEMESH_RUNTIME_DIR at a directory of your own, or remove {}",
                shell_quote(&dir.to_string_lossy())
            ),
        ),
        Ok((mode, _)) if mode != 0o700 => c.fail(
            "socket dir",
            format!("{} has mode {mode:03o}; it must be 700", dir.display()),
            format!("chmod 700 {}", shell_quote(&dir.to_string_lossy())),
        ),
        Ok(_) => c.ok("socket dir", format!("{} is 700 and yours", dir.display())),
    }
    match mode_and_owner(&socket) {
        Err(_) if running => {}
        Err(_) => c.warn(
            "socket",
            format!(
                "{} does not exist (the daemon is not running)",
                socket.display()
            ),
            START_DAEMON,
        ),
        Ok((_, owner)) if owner != me => c.fail(
            "socket",
            format!(
                "{} belongs to uid {owner}, not to you (uid {me})",
                socket.display()
            ),
            format!(
                "rm {} and restart the daemon",
                shell_quote(&socket.to_string_lossy())
            ),
        ),
        Ok((mode, _)) if mode & 0o077 != 0 => c.fail(
            "socket",
            format!("{} has mode {mode:03o}; it must be 600", socket.display()),
            format!("chmod 600 {}", shell_quote(&socket.to_string_lossy())),
        ),
        Ok((mode, _)) => c.ok(
            "socket",
            format!("{} is {mode:03o} and yours", socket.display()),
        ),
    }
}

fn check_keystore(c: &mut Checks, paths: &Paths, status: Option<&DaemonStatus>) {
    match ctx::keystore(paths, false) {
        Err(e) => c.fail(
            "keystore",
            e.message,
            "unset CLAUDEMESH_KEYSTORE, or set CLAUDEMESH_KEYSTORE=file",
        ),
        Ok(k) => {
            if let Some(w) = k.warning() {
                c.warn(
                    "keystore",
                    w.to_owned(),
                    "start and unlock a Secret Service (e.g. gnome-keyring) in this session, or accept files: export CLAUDEMESH_KEYSTORE=file",
                );
            } else if !k.durable() {
                c.warn(
                    "keystore",
                    format!("{}: keys do not survive a reboot", k.location()),
                    "export CLAUDEMESH_KEYSTORE=file",
                );
            } else {
                c.ok("keystore", format!("{} (durable)", k.location()));
            }
            if let Some(s) = status
                && s.keystore != k.kind().as_str()
            {
                c.warn(
                    "keystore",
                    format!(
                        "the daemon uses the {} keystore but this shell gets {}: keys joined here may not be visible to it",
                        s.keystore,
                        k.kind().as_str()
                    ),
                    "run the daemon with the same environment (CLAUDEMESH_KEYSTORE, DBUS_SESSION_BUS_ADDRESS), e.g. claudemesh-ctl service install",
                );
            }
        }
    }
}

fn check_config(c: &mut Checks, paths: &Paths) -> Option<Config> {
    let file = paths.config_file();
    let me = uid();
    match mode_and_owner(&file) {
        Err(_) => {
            c.ok(
                "config",
                format!("{} does not exist yet (nothing joined)", file.display()),
            );
            return Some(Config::default());
        }
        Ok((_, owner)) if owner != me => c.fail(
            "config",
            format!("{} belongs to uid {owner}, not to you", file.display()),
            format!("sudo chown {me} {}", shell_quote(&file.to_string_lossy())),
        ),
        Ok((mode, _)) if mode & 0o077 != 0 => c.warn(
            "config",
            format!("{} has mode {mode:03o}; it should be 600", file.display()),
            format!("chmod 600 {}", shell_quote(&file.to_string_lossy())),
        ),
        Ok(_) => {}
    }
    match Config::load(&file) {
        Ok(config) => {
            c.ok(
                "config",
                format!(
                    "{} is readable: {} mesh(es)",
                    file.display(),
                    config.meshes.len()
                ),
            );
            Some(config)
        }
        Err(e) => {
            c.fail(
                "config",
                e.to_string(),
                format!(
                    "mv {f} {f}.bad   (then join your meshes again)",
                    f = shell_quote(&file.to_string_lossy())
                ),
            );
            None
        }
    }
}

fn check_brokers(c: &mut Checks, config: &Config, running: bool) {
    for m in &config.meshes {
        let name = format!("broker {}", m.slug);
        let url = m.effective_broker_url();
        if m.local && !running {
            c.warn(
                &name,
                "the local mesh's broker runs inside the daemon, which is not running",
                START_DAEMON,
            );
            continue;
        }
        let origin = match http_origin(&url) {
            Ok(o) => o,
            Err(e) => {
                c.fail(
                    &name,
                    e,
                    "unset CLAUDEMESH_BROKER_URL or fix it (wss://host/ws)",
                );
                continue;
            }
        };
        let spinner = output::Spinner::start(format!("checking {origin}/healthz…"));
        let result = broker_http::healthz(&origin);
        drop(spinner);
        match result {
            Ok(()) => c.ok(&name, format!("{origin}/healthz answers")),
            Err(e) => c.fail(
                &name,
                format!("{origin}/healthz: {e}"),
                format!(
                    "check the network and the broker (curl -fsS {origin}/healthz){}",
                    if broker_override().is_some() {
                        "; CLAUDEMESH_BROKER_URL is set and replaces the invite's broker"
                    } else {
                        ""
                    }
                ),
            ),
        }
    }
}

fn broker_override() -> Option<String> {
    broker_http::broker_override()
}

fn check_claude(c: &mut Checks, settings_path: Option<&Path>) {
    let (shim, _) = claude::sibling_binary(claude::SHIM_NAME).unwrap_or_default();
    match proc::which("claude") {
        None => c.warn(
            "claude code",
            "`claude` is not on PATH, so the registration cannot be checked",
            mcp::add_line(&shim),
        ),
        Some(_) => check_registration(c, &shim),
    }
    let path = match claude::settings_path(settings_path) {
        Ok(p) => p,
        Err(e) => {
            c.warn("hooks", e.message, "claudemesh-ctl install --settings PATH");
            return;
        }
    };
    match settings::registered_commands(&path) {
        Err(e) => c.fail(
            "hooks",
            e.to_string(),
            format!("fix {} by hand", path.display()),
        ),
        Ok(found) => {
            let events: Vec<&str> = settings::EVENTS
                .iter()
                .copied()
                .filter(|e| found.iter().any(|(ev, _)| ev == e))
                .collect();
            let broken: Vec<&String> = found
                .iter()
                .map(|(_, c)| c)
                .filter(|cmd| {
                    let exe = settings::hook_exe(cmd);
                    exe.contains('/') && !Path::new(exe).exists()
                })
                .collect();
            if events.len() < settings::EVENTS.len() {
                c.warn(
                    "hooks",
                    format!(
                        "{} lacks the claudemesh {} hook(s): messages reach the model only through tools",
                        path.display(),
                        settings::EVENTS
                            .iter()
                            .filter(|e| !events.contains(e))
                            .copied()
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                    "claudemesh-ctl install",
                );
            } else if !settings::stop_hook_rewakes(&path).unwrap_or(false) {
                c.warn(
                    "hooks",
                    format!(
                        "the claudemesh Stop hook in {} does not run in the background with \
                         asyncRewake: idle sessions do not wake",
                        path.display()
                    ),
                    "claudemesh-ctl install",
                );
            } else if let Some(b) = broken.first() {
                c.fail(
                    "hooks",
                    format!("the hook command `{b}` points at a program that does not exist"),
                    "claudemesh-ctl install",
                );
            } else {
                let wake = found
                    .iter()
                    .find(|(ev, _)| ev == "Stop")
                    .and_then(|(_, cmd)| settings::wake_of(cmd))
                    .unwrap_or(crate::wake::WakeSetting::Next);
                c.ok(
                    "hooks",
                    format!(
                        "UserPromptSubmit, PostToolUse, SessionStart and Stop hooks in {}; \
                         idle sessions wake {}{}",
                        path.display(),
                        claude::wake_words(wake),
                        env_wake_note()
                    ),
                );
            }
        }
    }
}

/// `CLAUDEMESH_WAKE` in this environment, said when set (it overrides the
/// installed setting for the sessions started with it).
pub fn env_wake_note() -> String {
    match std::env::var(crate::wake::ENV_WAKE) {
        Ok(v) if !v.trim().is_empty() => format!(
            " (CLAUDEMESH_WAKE={} here overrides it for sessions started with it)",
            v.trim()
        ),
        _ => String::new(),
    }
}

/// The shim's registration, read from Claude Code's file: running `claude
/// mcp list` would start the shim, a session visible in the mesh.
fn check_registration(c: &mut Checks, shim: &Path) {
    let Some(file) = mcp::claude_json_path() else {
        c.warn(
            "claude code",
            "HOME is not set, so Claude Code's registrations cannot be read",
            mcp::add_line(shim),
        );
        return;
    };
    match mcp::registered_command(&file) {
        Err(e) => c.warn("claude code", e, mcp::add_line(shim)),
        Ok(None) => c.fail(
            "claude code",
            format!(
                "the shim is not registered with Claude Code (no `claudemesh` server of user scope in {})",
                file.display()
            ),
            "claudemesh-ctl install",
        ),
        Ok(Some(cmd)) if !Path::new(&cmd).is_file() => c.fail(
            "claude code",
            format!("the registered MCP server `claudemesh` runs `{cmd}`, which does not exist"),
            "claudemesh-ctl install",
        ),
        Ok(Some(cmd)) => c.ok(
            "claude code",
            format!("MCP server `claudemesh` runs {cmd} ({})", file.display()),
        ),
    }
}

pub fn run(settings_path: Option<&Path>, json_out: bool) -> Result<()> {
    let paths = ctx::paths()?;
    let mut c = Checks::default();
    let status = check_daemon(&mut c, &paths);
    let log = claudemesh_daemon::client::daemon_log_path(&paths);
    c.ok(
        "log",
        format!(
            "{} (claudemesh-ctl logs; a systemd service logs to the journal)",
            log.display()
        ),
    );
    check_socket(&mut c, &paths, status.is_some());
    check_keystore(&mut c, &paths, status.as_ref());
    if let Some(config) = check_config(&mut c, &paths) {
        check_brokers(&mut c, &config, status.is_some());
    }
    check_claude(&mut c, settings_path);
    let failed = c.0.iter().filter(|x| x.status == Level::Fail).count();
    let warned = c.0.iter().filter(|x| x.status == Level::Warn).count();
    if json_out {
        output::json(
            &json!({"ok": failed == 0, "failed": failed, "warnings": warned, "checks": c.0}),
        );
    } else {
        let width = c.0.iter().map(|x| x.name.len()).max().unwrap_or(0);
        for x in &c.0 {
            let tag = match x.status {
                Level::Ok => paint(GREEN, "ok  "),
                Level::Warn => paint(YELLOW_BOLD, "warn"),
                Level::Fail => paint(RED_BOLD, "fail"),
            };
            output::line(format!("{tag}  {:width$}  {}", x.name, x.detail));
            if let Some(fix) = &x.fix {
                output::line(format!("      {:width$}  {} {fix}", "", paint(DIM, "fix:")));
            }
        }
        output::line("");
        output::line(match (failed, warned) {
            (0, 0) => "All checks passed.".to_owned(),
            (0, w) => format!("No failures, {w} warning(s)."),
            (f, w) => format!("{f} check(s) failed, {w} warning(s)."),
        });
    }
    if failed > 0 {
        return Err(CtlError::failure(format!("{failed} doctor check(s) failed")).quiet());
    }
    Ok(())
}
