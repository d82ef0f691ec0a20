//! Our hook entries in Claude Code's `settings.json`, merged and removed
//! without disturbing anything else in the file.
//!
//! The shape Claude Code reads:
//!
//! ```json
//! {"hooks": {
//!   "UserPromptSubmit": [{"hooks": [{"type": "command", "command": "…"}]}],
//!   "PostToolUse": [{"matcher": "*", "hooks": [{"type": "command", "command": "…"}]}],
//!   "SessionStart": [{"hooks": [{"type": "command", "command": "…"}]}],
//!   "Stop": [{"hooks": [{"type": "command", "command": "…", "async": true, "asyncRewake": true}]}]
//! }}
//! ```
//!
//! The command is `<path>/claudemesh-ctl hook --wake <now|next|off>`, the
//! same for every event: the wake setting lives in it, so it is shown by
//! `status` and `doctor` and goes away with the hooks.
//!
//! Rules kept here:
//! - Every other key, hook and matcher group stays as it is, in its order
//!   (`serde_json`'s `preserve_order`; removals use `shift_remove`).
//! - Installing twice changes nothing the second time.
//! - Before the first change to an existing file, its exact bytes are copied
//!   to `settings.json.claudemesh-backup`.
//! - Uninstalling removes only our entries and the containers left empty by
//!   that; when the result equals the backup, the backup's bytes are put
//!   back, so install-then-uninstall leaves the file byte-identical; a file
//!   that we created is removed.
//!
//! Our entries are recognised by their command: `… claudemesh-ctl hook`,
//! with or without `--wake …` (whatever the path in front), so an install
//! from a moved binary or with another setting updates the entry instead
//! of adding a second one.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// The events we register for.
pub const EVENTS: [&str; 4] = ["UserPromptSubmit", "PostToolUse", "SessionStart", "Stop"];

/// Claude Code's `timeout` (seconds) for the background `Stop` hook: a
/// little over the longest it waits (`crate::wake::BOUND`).
pub const STOP_TIMEOUT_S: u64 = crate::wake::BOUND.as_secs() + 60;

/// What an install or uninstall did to the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The file already said what we wanted.
    Unchanged,
    /// The file was created (install) or changed.
    Written {
        created: bool,
        backup: Option<PathBuf>,
    },
    /// Uninstall put the original bytes back from the backup.
    Restored,
    /// Uninstall removed a file that install had created.
    Removed,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} is not valid JSON ({detail}); fix it first (claudemesh will not overwrite it)",
        path.display()
    )]
    NotJson { path: PathBuf, detail: String },
    #[error(
        "{}: {what} should be a JSON {expected}; fix it by hand first (claudemesh will not overwrite it)",
        path.display()
    )]
    Shape {
        path: PathBuf,
        what: String,
        expected: &'static str,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `settings.json.claudemesh-backup` beside `path`.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".claudemesh-backup");
    path.with_file_name(name)
}

/// True when `command` is one of ours: `<anything>claudemesh-ctl hook`,
/// optionally followed by `--wake <level>` (the path may be quoted).
pub fn is_our_command(command: &str) -> bool {
    let c = command.trim_end();
    let c = match c.rsplit_once(" --wake ") {
        Some((head, level)) if crate::wake::WakeSetting::parse(level).is_some() => head,
        _ => c,
    };
    let Some(head) = c.strip_suffix(" hook") else {
        return false;
    };
    let head = head.trim_end_matches(['\'', '"']);
    head.ends_with("claudemesh-ctl") || head.ends_with("claudemesh-ctl.exe")
}

/// The wake setting an installed command of ours carries (`None`: an
/// install from before the setting, or not our command).
pub fn wake_of(command: &str) -> Option<crate::wake::WakeSetting> {
    let (_, level) = command.trim_end().rsplit_once(" --wake ")?;
    crate::wake::WakeSetting::parse(level)
}

fn our_group(event: &str, command: &str) -> Value {
    let hook = if event == "Stop" {
        // In the background: it waits for a message, and its exit code 2
        // wakes the idle session.
        json!({"type": "command", "command": command, "async": true,
               "asyncRewake": true, "timeout": STOP_TIMEOUT_S})
    } else {
        json!({"type": "command", "command": command, "timeout": 5})
    };
    if event == "PostToolUse" {
        json!({"matcher": "*", "hooks": [hook]})
    } else {
        json!({"hooks": [hook]})
    }
}

fn shape_err(path: &Path, what: impl Into<String>, expected: &'static str) -> SettingsError {
    SettingsError::Shape {
        path: path.to_owned(),
        what: what.into(),
        expected,
    }
}

/// Parses settings text; blank text is an empty object.
fn parse(path: &Path, text: &str) -> Result<Map<String, Value>, SettingsError> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(shape_err(path, "the top level", "object")),
        Err(e) => Err(SettingsError::NotJson {
            path: path.to_owned(),
            detail: e.to_string(),
        }),
    }
}

/// Our hook commands in `root`, with the event each is registered for.
fn our_commands(root: &Map<String, Value>) -> Vec<(&'static str, &str)> {
    let Some(Value::Object(hooks)) = root.get("hooks") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for event in EVENTS {
        let groups = hooks.get(event).and_then(Value::as_array);
        for group in groups.into_iter().flatten() {
            let entries = group.get("hooks").and_then(Value::as_array);
            for hook in entries.into_iter().flatten() {
                if let Some(c) = hook.get("command").and_then(Value::as_str)
                    && is_our_command(c)
                {
                    found.push((event, c));
                }
            }
        }
    }
    found
}

/// Counts our hook commands in `root`, and whether exactly `command` is
/// registered once for each event (the "already installed" test).
fn our_entries(root: &Map<String, Value>, command: &str) -> (usize, bool) {
    let ours = our_commands(root);
    let once_each = EVENTS.iter().all(|event| {
        ours.iter()
            .filter(|(e, c)| e == event && *c == command)
            .count()
            == 1
    });
    (ours.len(), once_each && ours.len() == EVENTS.len())
}

/// Adds our hook entries to `root` (pure). Entries of ours with another
/// command (an older path) are removed first, so there is one per event.
pub fn add_hooks(
    path: &Path,
    root: &mut Map<String, Value>,
    command: &str,
) -> Result<(), SettingsError> {
    remove_hooks(path, root)?;
    let hooks = root
        .entry("hooks")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(hooks) = hooks else {
        return Err(shape_err(path, "`hooks`", "object"));
    };
    for event in EVENTS {
        let list = hooks
            .entry(event)
            .or_insert_with(|| Value::Array(Vec::new()));
        let Value::Array(list) = list else {
            return Err(shape_err(path, format!("`hooks.{event}`"), "array"));
        };
        list.push(our_group(event, command));
    }
    Ok(())
}

/// Removes our hook entries from `root` (pure), and the groups, event lists
/// and `hooks` object that this leaves empty. Returns whether anything was
/// removed. Containers that were empty before are left alone.
pub fn remove_hooks(path: &Path, root: &mut Map<String, Value>) -> Result<bool, SettingsError> {
    let Some(hooks_value) = root.get_mut("hooks") else {
        return Ok(false);
    };
    let Value::Object(hooks) = hooks_value else {
        return Err(shape_err(path, "`hooks`", "object"));
    };
    let mut removed = false;
    let events: Vec<String> = hooks.keys().cloned().collect();
    for event in events {
        let Some(Value::Array(list)) = hooks.get_mut(&event) else {
            continue;
        };
        let mut removed_here = false;
        list.retain_mut(|group| {
            let Some(Value::Array(inner)) = group.get_mut("hooks") else {
                return true;
            };
            let before = inner.len();
            inner.retain(|hook| {
                !hook
                    .get("command")
                    .and_then(Value::as_str)
                    .is_some_and(is_our_command)
            });
            if inner.len() == before {
                return true;
            }
            removed_here = true;
            // A group we emptied goes.
            !inner.is_empty()
        });
        if removed_here {
            removed = true;
            if list.is_empty() {
                hooks.shift_remove(&event);
            }
        }
    }
    if removed && hooks.is_empty() {
        root.shift_remove("hooks");
    }
    Ok(removed)
}

/// Serializes settings as Claude Code writes them: two-space indent,
/// trailing newline.
fn render(root: &Map<String, Value>) -> String {
    let mut s = serde_json::to_string_pretty(root).expect("JSON values serialize");
    s.push('\n');
    s
}

fn read_optional(path: &Path) -> Result<Option<String>, SettingsError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SettingsError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn write(path: &Path, contents: &[u8]) -> Result<(), SettingsError> {
    let err = |source| SettingsError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    // Write beside it and rename, keeping the original's permissions.
    let tmp = path.with_file_name(format!(
        ".{}.claudemesh-tmp",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&tmp, contents).map_err(err)?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&tmp, meta.permissions());
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

/// Registers our hooks in the settings file at `path`.
pub fn install(path: &Path, command: &str) -> Result<Change, SettingsError> {
    let original = read_optional(path)?;
    let mut root = parse(path, original.as_deref().unwrap_or(""))?;
    let (ours, exact) = our_entries(&root, command);
    if exact {
        return Ok(Change::Unchanged);
    }
    add_hooks(path, &mut root, command)?;
    let mut backup = None;
    if let Some(original) = &original
        && ours == 0
    {
        // First change: keep the user's exact bytes.
        let b = backup_path(path);
        write(&b, original.as_bytes())?;
        backup = Some(b);
    }
    write(path, render(&root).as_bytes())?;
    Ok(Change::Written {
        created: original.is_none(),
        backup,
    })
}

/// Removes our hooks from the settings file at `path`.
pub fn uninstall(path: &Path) -> Result<Change, SettingsError> {
    let Some(current) = read_optional(path)? else {
        return Ok(Change::Unchanged);
    };
    let mut root = parse(path, &current)?;
    let removed = remove_hooks(path, &mut root)?;
    let backup = backup_path(path);
    let backup_text = read_optional(&backup)?;
    if !removed {
        return Ok(Change::Unchanged);
    }
    if let Some(original) = backup_text {
        // The file is what install made of the backup (or what removing our
        // entries gives is the backup): put the exact original bytes back.
        let ours = registered_commands(path)?;
        let same = parse(&backup, &original).is_ok_and(|b| {
            let mut reinstalled = b.clone();
            let reinstalled_matches = ours.first().is_some_and(|(_, command)| {
                add_hooks(path, &mut reinstalled, command).is_ok()
                    && parse(path, &current).is_ok_and(|c| c == reinstalled)
            });
            b == root || reinstalled_matches
        });
        if same {
            write(path, original.as_bytes())?;
            let _ = std::fs::remove_file(&backup);
            return Ok(Change::Restored);
        }
        // The user changed the file since; keep their changes and the backup.
        write(path, render(&root).as_bytes())?;
        return Ok(Change::Written {
            created: false,
            backup: Some(backup),
        });
    }
    if root.is_empty() {
        // No backup: install created the file.
        std::fs::remove_file(path).map_err(|source| SettingsError::Write {
            path: path.to_owned(),
            source,
        })?;
        return Ok(Change::Removed);
    }
    write(path, render(&root).as_bytes())?;
    Ok(Change::Written {
        created: false,
        backup: None,
    })
}

/// The program an installed command of ours runs (quotes removed).
pub fn hook_exe(command: &str) -> &str {
    let c = command.trim_end();
    let c = c.rsplit_once(" --wake ").map_or(c, |(head, _)| head);
    c.trim_end_matches(" hook").trim_matches(['\'', '"'])
}

/// Whether our `Stop` hook is registered to run in the background and wake
/// the session (`async` and `asyncRewake`), for doctor.
pub fn stop_hook_rewakes(path: &Path) -> Result<bool, SettingsError> {
    let Some(text) = read_optional(path)? else {
        return Ok(false);
    };
    let root = parse(path, &text)?;
    let groups = root
        .get("hooks")
        .and_then(|h| h.get("Stop"))
        .and_then(Value::as_array);
    Ok(groups
        .into_iter()
        .flatten()
        .filter_map(|g| g.get("hooks").and_then(Value::as_array))
        .flatten()
        .any(|h| {
            h.get("command")
                .and_then(Value::as_str)
                .is_some_and(is_our_command)
                && h.get("async") == Some(&Value::Bool(true))
                && h.get("asyncRewake") == Some(&Value::Bool(true))
        }))
}

/// Whether our hooks are registered, and with which commands (for doctor).
pub fn registered_commands(path: &Path) -> Result<Vec<(String, String)>, SettingsError> {
    let Some(text) = read_optional(path)? else {
        return Ok(Vec::new());
    };
    let root = parse(path, &text)?;
    Ok(our_commands(&root)
        .into_iter()
        .map(|(event, c)| (event.to_owned(), c.to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CMD: &str = "/opt/cm/bin/claudemesh-ctl hook";

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn recognises_our_commands_only() {
        assert!(is_our_command(CMD));
        assert!(is_our_command("'/path with space/claudemesh-ctl' hook"));
        assert!(is_our_command("claudemesh-ctl hook"));
        assert!(!is_our_command("/usr/bin/other hook"));
        assert!(!is_our_command("claudemesh-ctl hooky"));
        assert!(!is_our_command("claudemesh-ctl status"));
        assert!(is_our_command("'/p q/claudemesh-ctl' hook --wake off"));
        assert!(!is_our_command("claudemesh-ctl hook --wake always"));
        assert_eq!(
            wake_of("/x/claudemesh-ctl hook --wake now"),
            Some(crate::wake::WakeSetting::Now)
        );
        assert_eq!(wake_of(CMD), None);
    }

    #[test]
    fn the_stop_hook_runs_in_the_background_and_rewakes() {
        let d = tmp();
        let p = d.path().join("settings.json");
        let cmd = "/opt/cm/bin/claudemesh-ctl hook --wake next";
        install(&p, cmd).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let stop = &v["hooks"]["Stop"][0]["hooks"][0];
        assert_eq!(stop["command"], cmd);
        assert_eq!(stop["async"], true);
        assert_eq!(stop["asyncRewake"], true);
        assert_eq!(v["hooks"]["SessionStart"][0]["hooks"][0]["command"], cmd);
        assert!(
            v["hooks"]["SessionStart"][0]["hooks"][0]
                .get("async")
                .is_none()
        );
        // Another setting replaces the entries, one per event.
        let off = "/opt/cm/bin/claudemesh-ctl hook --wake off";
        install(&p, off).unwrap();
        let cmds = registered_commands(&p).unwrap();
        assert_eq!(cmds.len(), EVENTS.len());
        assert!(cmds.iter().all(|(_, c)| c == off), "{cmds:?}");
        assert_eq!(uninstall(&p).unwrap(), Change::Removed);
    }

    #[test]
    fn install_into_missing_file_creates_then_uninstall_removes() {
        let d = tmp();
        let p = d.path().join("settings.json");
        let change = install(&p, CMD).unwrap();
        assert_eq!(
            change,
            Change::Written {
                created: true,
                backup: None
            }
        );
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(
            v["hooks"]["UserPromptSubmit"][0]["hooks"][0]["command"],
            CMD
        );
        assert_eq!(v["hooks"]["PostToolUse"][0]["matcher"], "*");
        assert_eq!(install(&p, CMD).unwrap(), Change::Unchanged);
        assert_eq!(uninstall(&p).unwrap(), Change::Removed);
        assert!(!p.exists());
        assert_eq!(uninstall(&p).unwrap(), Change::Unchanged);
    }

    #[test]
    fn keeps_other_hooks_and_key_order_and_restores_bytes() {
        let d = tmp();
        let p = d.path().join("settings.json");
        let original = "{\n    \"zeta\": 1,\n    \"hooks\": {\"PostToolUse\": [{\"matcher\": \"Bash\", \"hooks\": [{\"type\": \"command\", \"command\": \"lint\"}]}]},\n    \"alpha\": [1,2]\n}";
        std::fs::write(&p, original).unwrap();
        install(&p, CMD).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let keys: Vec<String> = serde_json::from_str::<Map<String, Value>>(&text)
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["zeta", "hooks", "alpha"]);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["hooks"]["PostToolUse"][0]["hooks"][0]["command"], "lint");
        assert_eq!(v["hooks"]["PostToolUse"][1]["hooks"][0]["command"], CMD);
        assert_eq!(std::fs::read_to_string(backup_path(&p)).unwrap(), original);
        assert_eq!(uninstall(&p).unwrap(), Change::Restored);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), original);
        assert!(!backup_path(&p).exists());
    }

    #[test]
    fn a_moved_binary_updates_the_entry() {
        let d = tmp();
        let p = d.path().join("settings.json");
        std::fs::write(&p, "{}").unwrap();
        install(&p, CMD).unwrap();
        install(&p, "/new/claudemesh-ctl hook").unwrap();
        let cmds = registered_commands(&p).unwrap();
        assert_eq!(cmds.len(), EVENTS.len());
        assert!(cmds.iter().all(|(_, c)| c == "/new/claudemesh-ctl hook"));
        assert_eq!(uninstall(&p).unwrap(), Change::Restored);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{}");
    }

    #[test]
    fn an_empty_hooks_object_comes_back_byte_identical() {
        let d = tmp();
        let p = d.path().join("settings.json");
        let original = "{\"hooks\": {}, \"model\": \"opus\"}";
        std::fs::write(&p, original).unwrap();
        install(&p, CMD).unwrap();
        assert_eq!(install(&p, CMD).unwrap(), Change::Unchanged);
        assert_eq!(uninstall(&p).unwrap(), Change::Restored);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), original);
    }

    #[test]
    fn refuses_to_touch_broken_files() {
        let d = tmp();
        let p = d.path().join("settings.json");
        std::fs::write(&p, "{not json").unwrap();
        assert!(matches!(
            install(&p, CMD),
            Err(SettingsError::NotJson { .. })
        ));
        std::fs::write(&p, r#"{"hooks": []}"#).unwrap();
        assert!(matches!(install(&p, CMD), Err(SettingsError::Shape { .. })));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), r#"{"hooks": []}"#);
    }
}
