//! `install` / `uninstall` against temporary Claude Code settings files,
//! with `claude` absent and with a stand-in `claude` script.

#![cfg(unix)]

mod common;

use std::path::Path;

use common::{Home, script};

/// Settings a user already has: other keys (in a non-alphabetical order),
/// other hooks on our events and on others, four-space indentation.
const USER_SETTINGS: &str = r#"{
    "model": "opus",
    "permissions": {
        "allow": ["Bash(git status)"],
        "deny": []
    },
    "hooks": {
        "PostToolUse": [
            {
                "matcher": "Write|Edit",
                "hooks": [
                    { "type": "command", "command": "prettier --write \"$CLAUDE_FILE\"" }
                ]
            }
        ],
        "Stop": [
            { "hooks": [ { "type": "command", "command": "notify-send done" } ] }
        ]
    },
    "env": { "FOO": "1" },
    "alwaysThinkingEnabled": true
}
"#;

/// A PATH with only a directory of our choosing (no `claude` in it).
fn isolated_path(home: &mut Home) -> std::path::PathBuf {
    let bin = home.root().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    home.path_env = Some(bin.to_string_lossy().into_owned());
    bin
}

fn fake_shim(home: &Home) -> std::path::PathBuf {
    let shim = home.root().join("opt").join("claudemesh-shim");
    script(&shim, "exit 0");
    shim
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn install_then_uninstall_leaves_settings_byte_identical_and_install_is_idempotent() {
    let mut home = Home::new();
    isolated_path(&mut home);
    let shim = fake_shim(&home);
    let settings = home.root().join("claude").join("settings.json");
    std::fs::create_dir_all(settings.parent().unwrap()).unwrap();
    std::fs::write(&settings, USER_SETTINGS).unwrap();
    let s = settings.to_str().unwrap();
    let shim_arg = shim.to_str().unwrap();

    let first = home.run(["install", "--settings", s, "--shim", shim_arg]);
    first.assert_code(0);
    // `claude` is not on PATH: the line to run is printed.
    assert!(
        first.stdout.contains(&format!(
            "claude mcp add claudemesh --scope user -- {shim_arg}"
        )),
        "{}",
        first.stdout
    );
    let installed = read(&settings);
    let v: serde_json::Value = serde_json::from_str(&installed).unwrap();
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "model",
            "permissions",
            "hooks",
            "env",
            "alwaysThinkingEnabled"
        ]
    );
    let hook_events: Vec<&String> = v["hooks"].as_object().unwrap().keys().collect();
    assert_eq!(
        hook_events,
        ["PostToolUse", "Stop", "UserPromptSubmit", "SessionStart"]
    );
    // Theirs first and untouched, ours after.
    assert_eq!(v["hooks"]["PostToolUse"][0]["matcher"], "Write|Edit");
    assert_eq!(v["hooks"]["PostToolUse"][1]["matcher"], "*");
    let ours = v["hooks"]["PostToolUse"][1]["hooks"][0]["command"]
        .as_str()
        .unwrap();
    // The default wake setting travels in the command.
    assert!(ours.ends_with("claudemesh-ctl hook --wake next"), "{ours}");
    assert!(
        Path::new(ours.trim_end_matches(" hook --wake next")).is_absolute(),
        "{ours}"
    );
    assert_eq!(v["hooks"]["PostToolUse"][1]["hooks"][0]["type"], "command");
    assert_eq!(
        v["hooks"]["UserPromptSubmit"][0]["hooks"][0]["command"],
        ours
    );
    assert_eq!(
        v["hooks"]["Stop"][0]["hooks"][0]["command"],
        "notify-send done"
    );
    // Ours after theirs: in the background, waking the idle session.
    let stop = &v["hooks"]["Stop"][1]["hooks"][0];
    assert_eq!(stop["command"], ours);
    assert_eq!(stop["async"], true);
    assert_eq!(stop["asyncRewake"], true);
    assert_eq!(v["hooks"]["SessionStart"][0]["hooks"][0]["command"], ours);
    let backup = settings.with_file_name("settings.json.claudemesh-backup");
    assert_eq!(read(&backup), USER_SETTINGS, "the original is backed up");

    // Twice: nothing changes.
    home.run(["install", "--settings", s, "--shim", shim_arg])
        .assert_code(0);
    assert_eq!(read(&settings), installed);
    assert_eq!(read(&backup), USER_SETTINGS);

    // Uninstall: the exact original bytes, and no backup left.
    let un = home.run(["uninstall", "--settings", s]);
    un.assert_code(0);
    assert!(
        un.stdout
            .contains("claude mcp remove claudemesh --scope user"),
        "{}",
        un.stdout
    );
    assert_eq!(read(&settings), USER_SETTINGS);
    assert!(!backup.exists());

    // Uninstall again: nothing to do, nothing changes.
    home.run(["uninstall", "--settings", s]).assert_code(0);
    assert_eq!(read(&settings), USER_SETTINGS);
}

#[test]
fn install_wake_sets_what_wakes_and_uninstall_still_restores_the_bytes() {
    let mut home = Home::new();
    isolated_path(&mut home);
    let shim = fake_shim(&home);
    let settings = home.root().join("settings.json");
    std::fs::write(&settings, USER_SETTINGS).unwrap();
    let (s, shim_arg) = (settings.to_str().unwrap(), shim.to_str().unwrap());
    home.run(["install", "--settings", s, "--shim", shim_arg])
        .assert_code(0);
    let run = home.run([
        "install",
        "--settings",
        s,
        "--shim",
        shim_arg,
        "--wake",
        "off",
    ]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("idle sessions wake: never"),
        "{}",
        run.stdout
    );
    let v: serde_json::Value = serde_json::from_str(&read(&settings)).unwrap();
    for event in ["UserPromptSubmit", "SessionStart"] {
        let cmd = v["hooks"][event][0]["hooks"][0]["command"]
            .as_str()
            .unwrap();
        assert!(cmd.ends_with(" hook --wake off"), "{event}: {cmd}");
    }
    assert_eq!(
        v["hooks"]["Stop"].as_array().unwrap().len(),
        2,
        "one Stop entry of ours, replaced"
    );
    let bad = home.run([
        "install",
        "--settings",
        s,
        "--shim",
        shim_arg,
        "--wake",
        "always",
    ]);
    bad.assert_code(2);
    home.run(["uninstall", "--settings", s]).assert_code(0);
    assert_eq!(read(&settings), USER_SETTINGS);
}

#[test]
fn a_settings_file_that_install_created_is_removed_by_uninstall() {
    let mut home = Home::new();
    isolated_path(&mut home);
    let shim = fake_shim(&home);
    // CLAUDE_CONFIG_DIR is where Claude Code keeps settings.json.
    let cc = home.root().join("cc-config");
    home.env("CLAUDE_CONFIG_DIR", cc.to_string_lossy());
    home.run(["install", "--shim", shim.to_str().unwrap()])
        .assert_code(0);
    let settings = cc.join("settings.json");
    assert!(settings.exists());
    let v: serde_json::Value = serde_json::from_str(&read(&settings)).unwrap();
    assert!(v["hooks"]["UserPromptSubmit"].is_array());
    home.run(["uninstall"]).assert_code(0);
    assert!(!settings.exists(), "the file install created is gone");
    assert!(!cc.join("settings.json.claudemesh-backup").exists());
}

#[test]
fn broken_settings_are_refused_and_left_alone() {
    let mut home = Home::new();
    isolated_path(&mut home);
    let settings = home.root().join("settings.json");
    std::fs::write(&settings, "{ \"hooks\": [ }").unwrap();
    let run = home.run([
        "install",
        "--no-mcp",
        "--settings",
        settings.to_str().unwrap(),
    ]);
    run.assert_code(1);
    assert!(run.stderr.contains("not valid JSON"), "{}", run.stderr);
    assert_eq!(read(&settings), "{ \"hooks\": [ }");
}

/// A stand-in for Claude Code's `claude` CLI that records its arguments.
/// It only plays `claude mcp get/add/remove/list`; the real CLI is
/// exercised by the end-to-end suite.
fn fake_claude(home: &mut Home) -> std::path::PathBuf {
    let bin = isolated_path(home);
    let log = home.root().join("claude-args.log");
    let state = home.root().join("claude-registered");
    script(
        &bin.join("claude"),
        &format!(
            r#"echo "$*" >> '{log}'
case "$1 $2" in
  "mcp get")    [ -f '{state}' ] && {{ cat '{state}'; exit 0; }}; echo "No MCP server found with name: $3" >&2; exit 1 ;;
  "mcp add")    shift 6; echo "claudemesh: $*" > '{state}'; exit 0 ;;
  "mcp remove") [ -f '{state}' ] && {{ rm '{state}'; exit 0; }}; echo "No MCP server found with name: $3" >&2; exit 1 ;;
  "mcp list")   [ -f '{state}' ] && cat '{state}'; exit 0 ;;
esac
exit 2"#,
            log = log.display(),
            state = state.display()
        ),
    );
    // `sh` and `cat`/`rm` for the script itself.
    home.path_env = Some(format!("{}:/usr/bin:/bin", bin.display()));
    log
}

#[test]
fn install_runs_claude_mcp_add_and_uninstall_runs_remove() {
    let mut home = Home::new();
    let log = fake_claude(&mut home);
    let shim = fake_shim(&home);
    let shim_arg = shim.to_str().unwrap();

    let run = home.run(["install", "--no-hooks", "--shim", shim_arg]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("registered MCP server `claudemesh`"),
        "{}",
        run.stdout
    );
    let args = read(&log);
    assert!(args.contains("mcp get claudemesh\n"), "{args}");
    assert!(
        args.contains(&format!("mcp add claudemesh --scope user -- {shim_arg}\n")),
        "{args}"
    );

    // Already registered with this shim: no second add.
    let again = home.run(["install", "--no-hooks", "--shim", shim_arg]);
    again.assert_code(0);
    assert!(
        again.stdout.contains("already registered"),
        "{}",
        again.stdout
    );
    assert_eq!(read(&log).matches("mcp add").count(), 1);

    let un = home.run(["uninstall", "--no-hooks"]);
    un.assert_code(0);
    assert!(read(&log).contains("mcp remove claudemesh --scope user\n"));
    let un2 = home.run(["uninstall", "--no-hooks"]);
    un2.assert_code(0);
    assert!(un2.stdout.contains("was not registered"), "{}", un2.stdout);
}
