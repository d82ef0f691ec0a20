//! `service install|uninstall|status|print`: claudemeshd as a systemd user
//! unit (Linux) or a launchd agent (macOS), rendered from the templates in
//! `packaging/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::claude::sibling_binary;
use crate::error::{CtlError, Result};
use crate::output::{self, GREEN, YELLOW, paint};
use crate::proc;

pub const SYSTEMD_TEMPLATE: &str = include_str!("../../packaging/systemd/claudemeshd.service.in");
pub const LAUNCHD_TEMPLATE: &str =
    include_str!("../../packaging/launchd/dev.claudemesh.claudemeshd.plist.in");

pub const UNIT_NAME: &str = "claudemeshd.service";
pub const LAUNCHD_LABEL: &str = "dev.claudemesh.claudemeshd";
pub const DAEMON_NAME: &str = "claudemeshd";

/// The variables carried into the service's environment when set at install.
const CARRIED_ENV: [&str; 6] = [
    "CLAUDEMESH_CONFIG_DIR",
    "CLAUDEMESH_DATA_DIR",
    "CLAUDEMESH_RUNTIME_DIR",
    "CLAUDEMESH_BROKER_URL",
    "CLAUDEMESH_KEYSTORE",
    "CLAUDEMESH_DEBUG",
];

const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavor {
    Systemd,
    Launchd,
}

impl Flavor {
    pub fn native() -> Option<Self> {
        if cfg!(target_os = "macos") {
            Some(Self::Launchd)
        } else if cfg!(target_os = "linux") {
            Some(Self::Systemd)
        } else {
            None
        }
    }
}

fn carried_env() -> Vec<(&'static str, String)> {
    CARRIED_ENV
        .iter()
        .filter_map(|k| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| (*k, v))
        })
        .collect()
}

/// A value for a systemd `Environment=` line, quoted (`%` is a specifier;
/// no `$` expansion happens there).
fn systemd_quote(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%");
    format!("\"{escaped}\"")
}

/// A path in `ExecStart=`: systemd splits on whitespace, expands `%`
/// specifiers and `$VARIABLES`.
fn systemd_exec_path(p: &Path) -> String {
    let s = p.to_string_lossy().replace('$', "$$");
    if s.contains(char::is_whitespace) || s.contains('"') || s.contains('\\') {
        systemd_quote(&s)
    } else {
        s.replace('%', "%%")
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The systemd unit for `daemon`, with `env` as `Environment=` lines.
pub fn render_systemd(daemon: &Path, env: &[(&str, String)]) -> String {
    let environment: Vec<String> = env
        .iter()
        .map(|(k, v)| format!("Environment={}", systemd_quote(&format!("{k}={v}"))))
        .collect();
    SYSTEMD_TEMPLATE
        .replace("@CLAUDEMESHD@", &systemd_exec_path(daemon))
        .replace("@ENVIRONMENT@\n", &lines(&environment))
}

/// The launchd agent for `daemon`, logging to `log`.
pub fn render_launchd(daemon: &Path, log: &Path, env: &[(&str, String)]) -> String {
    let mut environment = Vec::new();
    if !env.is_empty() {
        environment.push("\t<key>EnvironmentVariables</key>".to_owned());
        environment.push("\t<dict>".to_owned());
        for (k, v) in env {
            environment.push(format!("\t\t<key>{}</key>", xml_escape(k)));
            environment.push(format!("\t\t<string>{}</string>", xml_escape(v)));
        }
        environment.push("\t</dict>".to_owned());
    }
    LAUNCHD_TEMPLATE
        .replace("@CLAUDEMESHD@", &xml_escape(&daemon.to_string_lossy()))
        .replace("@LOG@", &xml_escape(&log.to_string_lossy()))
        .replace("@ENVIRONMENT@\n", &lines(&environment))
}

fn lines(v: &[String]) -> String {
    v.iter().map(|l| format!("{l}\n")).collect()
}

fn home() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| CtlError::failure("HOME is not set"))
}

/// `$XDG_CONFIG_HOME/systemd/user/claudemeshd.service` (default `~/.config`).
pub fn systemd_unit_path() -> Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => home()?.join(".config"),
    };
    Ok(base.join("systemd").join("user").join(UNIT_NAME))
}

pub fn launchd_plist_path() -> Result<PathBuf> {
    Ok(home()?
        .join("Library")
        .join("LaunchAgents")
        .join(format!("{LAUNCHD_LABEL}.plist")))
}

fn launchd_log_path() -> Result<PathBuf> {
    Ok(home()?.join("Library").join("Logs").join("claudemeshd.log"))
}

/// The claudemeshd to run: `--daemon`, else beside this program, else on PATH.
fn daemon_path(explicit: Option<&Path>) -> Result<PathBuf> {
    let (path, found) = match explicit {
        Some(p) => (
            std::path::absolute(p).unwrap_or_else(|_| p.to_owned()),
            p.exists(),
        ),
        None => sibling_binary(DAEMON_NAME)?,
    };
    if !found {
        return Err(CtlError::failure(format!(
            "{DAEMON_NAME} not found (looked at {}, and on PATH)",
            path.display()
        ))
        .hint("install it (packaging/install.sh), or pass --daemon /path/to/claudemeshd"));
    }
    Ok(path)
}

fn flavor_or_err(explicit: Option<Flavor>) -> Result<Flavor> {
    explicit.or_else(Flavor::native).ok_or_else(|| {
        CtlError::failure("no service manager support on this platform")
            .hint("run `claudemeshd run` from your session's startup instead")
    })
}

fn render(flavor: Flavor, daemon: &Path) -> Result<String> {
    Ok(match flavor {
        Flavor::Systemd => render_systemd(daemon, &carried_env()),
        Flavor::Launchd => render_launchd(daemon, &launchd_log_path()?, &carried_env()),
    })
}

/// `service print`: the rendered unit or agent on stdout.
pub fn print(daemon: Option<&Path>, flavor: Option<Flavor>) -> Result<()> {
    let flavor = flavor_or_err(flavor)?;
    // Printing does not need the binary to exist (e.g. rendering for
    // another machine), so fall back to the expected path.
    let daemon = match daemon {
        Some(p) => std::path::absolute(p).unwrap_or_else(|_| p.to_owned()),
        None => sibling_binary(DAEMON_NAME)?.0,
    };
    print!("{}", render(flavor, &daemon)?);
    Ok(())
}

/// Whether `systemctl --user` can talk to a user manager; the reason if not.
pub fn systemd_user_available() -> std::result::Result<PathBuf, String> {
    let systemctl = proc::which("systemctl").ok_or("`systemctl` is not on PATH")?;
    match proc::run(
        &systemctl,
        ["--user", "show-environment"],
        Duration::from_secs(5),
    ) {
        Ok(r) if r.success => Ok(systemctl),
        Ok(r) => Err(format!(
            "`systemctl --user` cannot reach a user manager: {}",
            r.output()
        )),
        Err(e) => Err(format!("`systemctl --user` failed: {e}")),
    }
}

fn write_if_changed(path: &Path, contents: &str) -> Result<bool> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| CtlError::failure(format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::write(path, contents)
        .map_err(|e| CtlError::failure(format!("cannot write {}: {e}", path.display())))?;
    Ok(true)
}

fn run_step(program: &Path, args: &[&str]) -> std::result::Result<(), String> {
    let shown = format!(
        "{} {}",
        program.file_name().unwrap_or_default().to_string_lossy(),
        args.join(" ")
    );
    match proc::run(program, args, SYSTEMCTL_TIMEOUT) {
        Ok(r) if r.success => Ok(()),
        Ok(r) => Err(format!("`{shown}` failed: {}", r.output())),
        Err(e) => Err(format!("`{shown}` failed: {e}")),
    }
}

pub fn install(daemon: Option<&Path>, json_out: bool) -> Result<()> {
    let flavor = flavor_or_err(None)?;
    let daemon = daemon_path(daemon)?;
    let contents = render(flavor, &daemon)?;
    match flavor {
        Flavor::Systemd => {
            let path = systemd_unit_path()?;
            let changed = write_if_changed(&path, &contents)?;
            let commands = [
                "systemctl --user daemon-reload".to_owned(),
                "systemctl --user enable --now claudemeshd".to_owned(),
            ];
            match systemd_user_available() {
                Err(why) => {
                    if json_out {
                        output::json(&json!({"unit": path, "written": changed, "started": false,
                            "reason": why, "commands": commands}));
                    } else {
                        output::line(format!("{} wrote {}", paint(GREEN, "✓"), path.display()));
                        output::warn(format!("{why}; the service was not started."));
                        output::line("Run these where systemd --user is available:");
                        for c in &commands {
                            output::line(format!("  {c}"));
                        }
                        output::line(
                            "Or start the daemon now, in the background: claudemesh-ctl daemon start",
                        );
                    }
                    // The unit is written but nothing runs: not a success.
                    return Err(CtlError::failure("the service was not started").quiet());
                }
                Ok(systemctl) => {
                    warn_if_running_outside(&systemctl);
                    let spinner = output::Spinner::start("starting claudemeshd…");
                    let result =
                        run_step(&systemctl, &["--user", "daemon-reload"]).and_then(|()| {
                            run_step(&systemctl, &["--user", "enable", "--now", "claudemeshd"])
                        });
                    // A unit already running an older file needs a restart.
                    let result = result.and_then(|()| {
                        if changed {
                            run_step(&systemctl, &["--user", "restart", "claudemeshd"])
                        } else {
                            Ok(())
                        }
                    });
                    drop(spinner);
                    result.map_err(|e| {
                        CtlError::failure(e).hint("see `systemctl --user status claudemeshd` and `journalctl --user -u claudemeshd`")
                    })?;
                    if json_out {
                        output::json(&json!({"unit": path, "written": changed, "started": true}));
                    } else {
                        output::line(format!(
                            "{} {} {}",
                            paint(GREEN, "✓"),
                            if changed { "installed" } else { "kept" },
                            path.display()
                        ));
                        output::line(format!(
                            "{} enabled and started claudemeshd (systemctl --user status claudemeshd)",
                            paint(GREEN, "✓")
                        ));
                    }
                }
            }
        }
        Flavor::Launchd => {
            let path = launchd_plist_path()?;
            let changed = write_if_changed(&path, &contents)?;
            if let Ok(log) = launchd_log_path()
                && let Some(dir) = log.parent()
            {
                let _ = std::fs::create_dir_all(dir);
            }
            let domain = format!("gui/{}", claudemesh_daemon::paths::current_uid());
            let launchctl = proc::which("launchctl").ok_or_else(|| {
                CtlError::failure("`launchctl` is not on PATH")
                    .hint(format!("launchctl bootstrap {domain} {}", path.display()))
            })?;
            // Replace a loaded older copy; failure means it was not loaded.
            let _ = proc::run(
                &launchctl,
                ["bootout".to_owned(), format!("{domain}/{LAUNCHD_LABEL}")],
                SYSTEMCTL_TIMEOUT,
            );
            run_step(&launchctl, &["bootstrap", &domain, &path.to_string_lossy()])
                .map_err(CtlError::failure)?;
            if json_out {
                output::json(&json!({"agent": path, "written": changed, "started": true}));
            } else {
                output::line(format!(
                    "{} installed and loaded {}",
                    paint(GREEN, "✓"),
                    path.display()
                ));
            }
        }
    }
    Ok(())
}

/// A daemon started by hand or by a shim holds the daemon lock: the
/// service's copy would fail to start (a few times, then give up).
fn warn_if_running_outside(systemctl: &Path) {
    let Ok(paths) = crate::ctx::paths() else {
        return;
    };
    let running = crate::daemon::block_on(async {
        let client = crate::daemon::connect(&paths, Duration::from_secs(2))
            .await
            .ok()??;
        crate::daemon::status(&client).await.ok()
    });
    let Some(status) = running else {
        return;
    };
    let main_pid = proc::run(
        systemctl,
        ["--user", "show", "-p", "MainPID", "--value", "claudemeshd"],
        Duration::from_secs(5),
    )
    .ok()
    .and_then(|r| r.stdout.trim().parse::<u32>().ok());
    if main_pid != Some(status.pid) {
        output::warn(format!(
            "a claudemeshd (pid {}) already runs outside systemd; the service cannot start \
             while it does. Stop it (kill {}), then: systemctl --user restart claudemeshd",
            status.pid, status.pid
        ));
    }
}

pub fn uninstall(json_out: bool) -> Result<()> {
    let flavor = flavor_or_err(None)?;
    match flavor {
        Flavor::Systemd => {
            let path = systemd_unit_path()?;
            let mut notes = Vec::new();
            match systemd_user_available() {
                Ok(systemctl) => {
                    if let Err(e) =
                        run_step(&systemctl, &["--user", "disable", "--now", "claudemeshd"])
                    {
                        notes.push(e);
                    }
                }
                Err(why) => notes.push(format!(
                    "{why}; run `systemctl --user disable --now claudemeshd` where it is available"
                )),
            }
            let existed = path.exists();
            if existed {
                std::fs::remove_file(&path).map_err(|e| {
                    CtlError::failure(format!("cannot remove {}: {e}", path.display()))
                })?;
            }
            if let Ok(systemctl) = systemd_user_available() {
                let _ = run_step(&systemctl, &["--user", "daemon-reload"]);
            }
            if json_out {
                output::json(&json!({"unit": path, "removed": existed, "notes": notes}));
            } else {
                for n in &notes {
                    output::warn(n);
                }
                output::line(if existed {
                    format!("{} removed {}", paint(GREEN, "✓"), path.display())
                } else {
                    format!("no unit at {}", path.display())
                });
            }
        }
        Flavor::Launchd => {
            let path = launchd_plist_path()?;
            let domain = format!("gui/{}", claudemesh_daemon::paths::current_uid());
            if let Some(launchctl) = proc::which("launchctl") {
                let _ = proc::run(
                    &launchctl,
                    ["bootout".to_owned(), format!("{domain}/{LAUNCHD_LABEL}")],
                    SYSTEMCTL_TIMEOUT,
                );
            }
            let existed = path.exists();
            if existed {
                std::fs::remove_file(&path).map_err(|e| {
                    CtlError::failure(format!("cannot remove {}: {e}", path.display()))
                })?;
            }
            if json_out {
                output::json(&json!({"agent": path, "removed": existed}));
            } else {
                output::line(if existed {
                    format!(
                        "{} unloaded and removed {}",
                        paint(GREEN, "✓"),
                        path.display()
                    )
                } else {
                    format!("no agent at {}", path.display())
                });
            }
        }
    }
    Ok(())
}

/// What the service manager says about claudemeshd.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServiceState {
    pub manager: &'static str,
    pub file: PathBuf,
    pub installed: bool,
    /// `enabled`, `disabled`, `loaded`, … or `unknown`.
    pub enabled: String,
    /// `active`, `inactive`, `failed`, … or `unknown`.
    pub active: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

pub fn state() -> Result<Option<ServiceState>> {
    let Some(flavor) = Flavor::native() else {
        return Ok(None);
    };
    Ok(Some(match flavor {
        Flavor::Systemd => {
            let file = systemd_unit_path()?;
            let installed = file.exists();
            match systemd_user_available() {
                Ok(systemctl) => {
                    let ask = |verb: &str| {
                        proc::run(
                            &systemctl,
                            ["--user", verb, "claudemeshd"],
                            Duration::from_secs(5),
                        )
                        .map(|r| r.stdout.trim().to_owned())
                        .ok()
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "unknown".into())
                    };
                    ServiceState {
                        manager: "systemd",
                        file,
                        installed,
                        enabled: ask("is-enabled"),
                        active: ask("is-active"),
                        note: None,
                    }
                }
                Err(why) => ServiceState {
                    manager: "systemd",
                    file,
                    installed,
                    enabled: "unknown".into(),
                    active: "unknown".into(),
                    note: Some(why),
                },
            }
        }
        Flavor::Launchd => {
            let file = launchd_plist_path()?;
            let installed = file.exists();
            let domain = format!(
                "gui/{}/{LAUNCHD_LABEL}",
                claudemesh_daemon::paths::current_uid()
            );
            let loaded = proc::which("launchctl")
                .and_then(|l| {
                    proc::run(&l, ["print", domain.as_str()], Duration::from_secs(5)).ok()
                })
                .map(|r| (r.success, r.stdout));
            let (enabled, active) = match loaded {
                Some((true, out)) => (
                    "loaded".to_owned(),
                    if out.contains("state = running") {
                        "active"
                    } else {
                        "inactive"
                    }
                    .to_owned(),
                ),
                Some((false, _)) => ("not loaded".to_owned(), "inactive".to_owned()),
                None => ("unknown".to_owned(), "unknown".to_owned()),
            };
            ServiceState {
                manager: "launchd",
                file,
                installed,
                enabled,
                active,
                note: None,
            }
        }
    }))
}

pub fn status(json_out: bool) -> Result<()> {
    let Some(s) = state()? else {
        return Err(CtlError::failure(
            "no service manager support on this platform",
        ));
    };
    if json_out {
        output::json(&serde_json::to_value(&s).expect("serializes"));
        return Ok(());
    }
    let mark = |ok: bool| {
        if ok {
            paint(GREEN, "✓")
        } else {
            paint(YELLOW, "!")
        }
    };
    output::line(format!(
        "{} {} file: {}{}",
        mark(s.installed),
        s.manager,
        s.file.display(),
        if s.installed { "" } else { " (not installed)" }
    ));
    output::line(format!(
        "{} enabled: {}",
        mark(s.enabled == "enabled" || s.enabled == "loaded"),
        s.enabled
    ));
    output::line(format!(
        "{} active: {}",
        mark(s.active == "active"),
        s.active
    ));
    if let Some(n) = &s.note {
        output::note(n);
    }
    if !s.installed {
        output::line("Install it with: claudemesh-ctl service install");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_unit_has_the_promised_settings() {
        let unit = render_systemd(
            Path::new("/home/u/.local/bin/claudemeshd"),
            &[("CLAUDEMESH_BROKER_URL", "wss://b.example/ws".into())],
        );
        for needle in [
            "ExecStart=/home/u/.local/bin/claudemeshd run\n",
            "Restart=on-failure\n",
            "RestartSec=5\n",
            "StartLimitIntervalSec=300\n",
            "StartLimitBurst=5\n",
            "KeyringMode=shared\n",
            "Environment=\"CLAUDEMESH_BROKER_URL=wss://b.example/ws\"\n",
            "WantedBy=default.target\n",
        ] {
            assert!(unit.contains(needle), "missing {needle:?} in\n{unit}");
        }
        assert!(
            !unit.contains("@CLAUDEMESHD@") && !unit.contains("@ENVIRONMENT@"),
            "unrendered placeholder in\n{unit}"
        );
    }

    #[test]
    fn odd_paths_are_quoted() {
        let unit = render_systemd(Path::new("/a b/100%/claudemeshd"), &[]);
        assert!(
            unit.contains("ExecStart=\"/a b/100%%/claudemeshd\" run\n"),
            "{unit}"
        );
    }

    #[test]
    fn launchd_agent_restarts_only_on_failure() {
        let plist = render_launchd(
            Path::new("/Users/u/bin/claudemeshd"),
            Path::new("/Users/u/Library/Logs/claudemeshd.log"),
            &[("CLAUDEMESH_KEYSTORE", "file".into())],
        );
        for needle in [
            "<string>/Users/u/bin/claudemeshd</string>",
            "<key>SuccessfulExit</key>\n\t\t<false/>",
            "<key>ThrottleInterval</key>",
            "<key>CLAUDEMESH_KEYSTORE</key>",
            "<string>/Users/u/Library/Logs/claudemeshd.log</string>",
        ] {
            assert!(plist.contains(needle), "missing {needle:?} in\n{plist}");
        }
        assert!(!plist.contains("@CLAUDEMESHD@") && !plist.contains("@ENVIRONMENT@"));
    }
}
