//! `install` / `uninstall`: the shim as Claude Code's `claudemesh` MCP
//! server, and our `hook` in Claude Code's settings.

pub mod mcp;
pub mod settings;

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::error::{CtlError, Result};
use crate::output::{self, GREEN, paint};
use crate::proc::{self, shell_quote};

pub const SHIM_NAME: &str = "claudemesh-shim";

/// Claude Code's user settings: `--settings`, else
/// `$CLAUDE_CONFIG_DIR/settings.json`, else `~/.claude/settings.json`.
pub fn settings_path(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    if let Some(dir) = std::env::var_os("CLAUDE_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("settings.json"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            CtlError::failure("cannot find Claude Code's settings: HOME is not set")
                .hint("pass --settings PATH or set CLAUDE_CONFIG_DIR")
        })?;
    Ok(PathBuf::from(home).join(".claude").join("settings.json"))
}

/// This program, as an absolute path.
pub fn ctl_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| CtlError::failure(format!("cannot find this program's own path: {e}")))?;
    Ok(exe.canonicalize().unwrap_or(exe))
}

/// A sibling binary of this program, else one on PATH; `(path, found)`.
pub fn sibling_binary(name: &str) -> Result<(PathBuf, bool)> {
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let exe = ctl_exe()?;
    let sibling = exe.parent().map(|d| d.join(&file));
    if let Some(s) = &sibling
        && proc::is_executable(s)
    {
        return Ok((s.clone(), true));
    }
    if let Some(p) = proc::which(&file) {
        return Ok((p.canonicalize().unwrap_or(p), true));
    }
    Ok((sibling.unwrap_or_else(|| PathBuf::from(file)), false))
}

/// The command our hooks run, carrying the wake setting.
pub fn hook_command(wake: crate::wake::WakeSetting) -> Result<String> {
    Ok(format!(
        "{} hook --wake {}",
        shell_quote(&ctl_exe()?.to_string_lossy()),
        wake.as_str()
    ))
}

pub struct InstallArgs<'a> {
    pub settings: Option<&'a Path>,
    pub shim: Option<&'a Path>,
    pub no_mcp: bool,
    pub no_hooks: bool,
    pub wake: crate::wake::WakeSetting,
    pub json: bool,
}

fn settings_err(e: settings::SettingsError) -> CtlError {
    CtlError::failure(e.to_string())
}

pub fn install(args: InstallArgs<'_>) -> Result<()> {
    let mut report = serde_json::Map::new();
    if !args.no_mcp {
        let (shim, found) = match args.shim {
            Some(p) => (
                std::path::absolute(p).unwrap_or_else(|_| p.to_owned()),
                p.exists(),
            ),
            None => sibling_binary(SHIM_NAME)?,
        };
        if !found {
            output::warn(format!(
                "{} not found (looked beside this program and on PATH); registering {} anyway — \
                 install it there (packaging/install.sh does)",
                SHIM_NAME,
                shim.display()
            ));
        }
        let mcp = match proc::which("claude") {
            None => {
                let line = mcp::add_line(&shim);
                if !args.json {
                    output::line(
                        "Claude Code's `claude` command is not on PATH; register the shim with:",
                    );
                    output::line(format!("  {line}"));
                }
                json!({"state": "claude_absent", "command": line})
            }
            Some(claude) => {
                let spinner = output::Spinner::start("registering the shim with Claude Code…");
                let result = mcp::register(&claude, &shim);
                drop(spinner);
                match result {
                    Ok(r) => {
                        let state = match r {
                            mcp::Registered::AlreadyThere => "unchanged",
                            mcp::Registered::Added => "added",
                            mcp::Registered::Replaced => "replaced",
                        };
                        if !args.json {
                            output::line(match r {
                                mcp::Registered::AlreadyThere => format!(
                                    "{} MCP server `claudemesh` already registered ({})",
                                    paint(GREEN, "✓"),
                                    shim.display()
                                ),
                                _ => format!(
                                    "{} registered MCP server `claudemesh` → {}",
                                    paint(GREEN, "✓"),
                                    shim.display()
                                ),
                            });
                        }
                        json!({"state": state, "shim": shim})
                    }
                    Err(e) => {
                        return Err(CtlError::failure(e)
                            .hint(format!("run it yourself: {}", mcp::add_line(&shim))));
                    }
                }
            }
        };
        report.insert("mcp".into(), mcp);
    }
    if !args.no_hooks {
        let path = settings_path(args.settings)?;
        let command = hook_command(args.wake)?;
        let change = settings::install(&path, &command).map_err(settings_err)?;
        let state = match &change {
            settings::Change::Unchanged => "unchanged",
            settings::Change::Written { created: true, .. } => "created",
            _ => "updated",
        };
        if !args.json {
            match &change {
                settings::Change::Unchanged => output::line(format!(
                    "{} hooks already in {}",
                    paint(GREEN, "✓"),
                    path.display()
                )),
                settings::Change::Written { backup, .. } => {
                    output::line(format!(
                        "{} added UserPromptSubmit, PostToolUse, SessionStart and Stop hooks (`{command}`; idle sessions wake: {}) to {}",
                        paint(GREEN, "✓"),
                        wake_words(args.wake),
                        path.display()
                    ));
                    if let Some(b) = backup {
                        output::line(format!("  original saved as {}", b.display()));
                    }
                }
                _ => {}
            }
        }
        report.insert(
            "hooks".into(),
            json!({"state": state, "settings": path, "command": command, "wake": args.wake.as_str()}),
        );
    }
    if args.json {
        output::json(&serde_json::Value::Object(report));
    } else {
        output::line("Restart your Claude Code sessions to load claudemesh.");
    }
    Ok(())
}

/// What a wake setting means, for people.
pub fn wake_words(wake: crate::wake::WakeSetting) -> &'static str {
    match wake {
        crate::wake::WakeSetting::Now => "on `now` messages",
        crate::wake::WakeSetting::Next => "on `now` and `next` messages",
        crate::wake::WakeSetting::Off => "never",
    }
}

/// The wake setting installed in Claude Code's user settings: `None` when
/// no claudemesh `Stop` hook is there (idle sessions do not wake).
pub fn installed_wake() -> Option<crate::wake::WakeSetting> {
    let path = settings_path(None).ok()?;
    let found = settings::registered_commands(&path).ok()?;
    let (_, command) = found.iter().find(|(event, _)| event == "Stop")?;
    Some(settings::wake_of(command).unwrap_or(crate::wake::WakeSetting::Next))
}

pub struct UninstallArgs<'a> {
    pub settings: Option<&'a Path>,
    pub no_mcp: bool,
    pub no_hooks: bool,
    pub json: bool,
}

pub fn uninstall(args: UninstallArgs<'_>) -> Result<()> {
    let mut report = serde_json::Map::new();
    if !args.no_mcp {
        let mcp = match proc::which("claude") {
            None => {
                let line = mcp::remove_line();
                if !args.json {
                    output::line(
                        "Claude Code's `claude` command is not on PATH; unregister the shim with:",
                    );
                    output::line(format!("  {line}"));
                }
                json!({"state": "claude_absent", "command": line})
            }
            Some(claude) => match mcp::unregister(&claude) {
                Ok(true) => {
                    if !args.json {
                        output::line(format!(
                            "{} removed MCP server `claudemesh`",
                            paint(GREEN, "✓")
                        ));
                    }
                    json!({"state": "removed"})
                }
                Ok(false) => {
                    if !args.json {
                        output::line("MCP server `claudemesh` was not registered");
                    }
                    json!({"state": "absent"})
                }
                Err(e) => {
                    return Err(CtlError::failure(e)
                        .hint(format!("run it yourself: {}", mcp::remove_line())));
                }
            },
        };
        report.insert("mcp".into(), mcp);
    }
    if !args.no_hooks {
        let path = settings_path(args.settings)?;
        let change = settings::uninstall(&path).map_err(settings_err)?;
        let state = match &change {
            settings::Change::Unchanged => "absent",
            settings::Change::Restored => "restored",
            settings::Change::Removed => "removed_file",
            settings::Change::Written { .. } => "updated",
        };
        if !args.json {
            output::line(match &change {
                settings::Change::Unchanged => format!("no claudemesh hooks in {}", path.display()),
                settings::Change::Restored => format!(
                    "{} removed the hooks; {} is back to its original bytes",
                    paint(GREEN, "✓"),
                    path.display()
                ),
                settings::Change::Removed => format!(
                    "{} removed {} (claudemesh had created it)",
                    paint(GREEN, "✓"),
                    path.display()
                ),
                settings::Change::Written { backup, .. } => {
                    let mut s = format!(
                        "{} removed the hooks from {} (your other changes are kept)",
                        paint(GREEN, "✓"),
                        path.display()
                    );
                    if let Some(b) = backup {
                        s.push_str(&format!(
                            "; the pre-install copy is still at {}",
                            b.display()
                        ));
                    }
                    s
                }
            });
        }
        report.insert("hooks".into(), json!({"state": state, "settings": path}));
    }
    if args.json {
        output::json(&serde_json::Value::Object(report));
    }
    Ok(())
}
