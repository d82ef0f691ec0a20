//! The shim registered in a real Claude Code (npm `@anthropic-ai/claude-code`,
//! installed by `.ci/run` into `tests/js/node_modules`): `claudemesh-ctl
//! install` registers it through the real `claude mcp add`, and `claude mcp
//! list` health-checks it (a real MCP handshake with a stdio server, no login
//! needed) and must report it connected.
//!
//! Claude Code starts stdio servers with a minimal environment (HOME, PATH,
//! …), so this test gives the user only a HOME: the shim, and the daemon it
//! starts, find everything from there, as on a real machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use claudemesh_e2e::bins;
use serde_json::Value;

/// The current pinned Claude Code's own directory (`node_modules/.bin/claude`
/// is ambiguous: `tests/js` pins two versions).
fn claude_bin_dir() -> PathBuf {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("js/node_modules/@anthropic-ai/claude-code/bin");
    assert!(
        dir.join("claude.exe").exists(),
        "Claude Code is not installed for the tests: run `npm ci --prefix tests/js` (see .ci/run)"
    );
    dir
}

struct User {
    home: tempfile::TempDir,
    path: String,
}

impl User {
    fn new() -> Self {
        let home = tempfile::Builder::new()
            .prefix("cm-claude-")
            .tempdir()
            .unwrap();
        // `claude` on PATH, as an install puts it there.
        let bin = home.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(claude_bin_dir().join("claude.exe"), bin.join("claude"))
            .unwrap();
        let path = format!(
            "{}:{}:{}",
            bins::profile_dir().display(),
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Self { home, path }
    }

    fn run(&self, program: &Path, args: &[&str]) -> Output {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .env("HOME", self.home.path())
            .env("PATH", &self.path);
        cmd.output().expect("the command runs")
    }

    fn claude(&self, args: &[&str]) -> Output {
        self.run(&claude_bin_dir().join("claude.exe"), args)
    }

    fn ctl(&self, args: &[&str]) -> Output {
        self.run(&bins::bin(bins::CTL), args)
    }
}

impl Drop for User {
    /// The shim started a daemon for this user; stop it.
    fn drop(&mut self) {
        let out = self.ctl(&["status", "--json"]);
        let pid = serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v.pointer("/daemon/pid").and_then(Value::as_u64));
        if let Some(pid) = pid {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn claude_mcp_list_shows_the_installed_shim_connected() {
    let user = User::new();
    let install = user.ctl(&["install"]);
    assert!(
        install.status.success(),
        "ctl install failed: {}",
        text(&install)
    );

    let list = user.claude(&["mcp", "list"]);
    let listing = text(&list);
    let line = listing
        .lines()
        .find(|l| l.starts_with("claudemesh:"))
        .unwrap_or_else(|| panic!("claudemesh is not registered: {listing}"));
    assert!(
        line.contains(bins::bin(bins::SHIM).to_str().unwrap()),
        "registered with another command: {line}"
    );
    assert!(line.contains("Connected"), "claude mcp list: {line}");

    let uninstall = user.ctl(&["uninstall"]);
    assert!(
        uninstall.status.success(),
        "ctl uninstall failed: {}",
        text(&uninstall)
    );
    let after = text(&user.claude(&["mcp", "list"]));
    assert!(
        !after.lines().any(|l| l.starts_with("claudemesh:")),
        "still registered after uninstall: {after}"
    );
}

/// `doctor`, and `install` run again, check the registration without
/// starting the shim: no session appears in the mesh (the daemon's log
/// records every attach).
#[test]
fn doctor_checks_the_registration_without_opening_a_session() {
    let user = User::new();
    let install = user.ctl(&["install"]);
    assert!(install.status.success(), "{}", text(&install));
    let started = user.ctl(&["daemon", "start"]);
    assert!(started.status.success(), "{}", text(&started));
    // Installing again finds the registration without starting the shim.
    let again = user.ctl(&["install"]);
    assert!(again.status.success(), "{}", text(&again));

    let doctor = user.ctl(&["doctor", "--json"]);
    let report: Value = serde_json::from_slice(&doctor.stdout)
        .unwrap_or_else(|e| panic!("doctor --json ({e}): {}", text(&doctor)));
    let check = report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "claude code"))
        .unwrap_or_else(|| panic!("no claude code check: {report}"));
    assert_eq!(check["status"], "ok", "{report}");
    assert!(
        check["detail"]
            .as_str()
            .is_some_and(|d| d.contains(bins::bin(bins::SHIM).to_str().unwrap())),
        "{check}"
    );

    let status: Value = serde_json::from_slice(&user.ctl(&["status", "--json"]).stdout).unwrap();
    assert_eq!(
        status["daemon"]["sessions"],
        serde_json::json!([]),
        "{status}"
    );
    let log = status["daemon"]["log"].as_str().expect("the log path");
    let log = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        log.contains("sessions restored") && !log.contains("session attached"),
        "install or doctor opened a session:\n{log}"
    );

    // Without the registration, doctor fails and names the fix.
    let uninstall = user.ctl(&["uninstall"]);
    assert!(uninstall.status.success(), "{}", text(&uninstall));
    let doctor = user.ctl(&["doctor", "--json"]);
    assert!(!doctor.status.success());
    let report: Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let check = report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "claude code"))
        .unwrap_or_else(|| panic!("no claude code check: {report}"));
    assert_eq!(check["status"], "fail", "{report}");
    assert_eq!(check["fix"], "claudemesh-ctl install", "{report}");
}
