//! The README's first command on a fresh account: `packaging/install.sh`
//! installs the binaries, starts the daemon (here without systemd --user,
//! so as a background process), which brings up and joins the mesh
//! `local` by itself, and registers the shim with the real Claude Code
//! (npm `@anthropic-ai/claude-code` from `tests/js`). The binaries come
//! from this build (`--from`) rather than a second release build.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use claudemesh_e2e::{bins, wait};
use serde_json::Value;

struct Account {
    home: tempfile::TempDir,
    path: String,
}

impl Account {
    fn run(&self, program: &Path, args: &[&str]) -> Output {
        Command::new(program)
            .args(args)
            .env_clear()
            .env("HOME", self.home.path())
            .env("PATH", &self.path)
            .output()
            .expect("the command runs")
    }

    fn bin(&self, name: &str) -> std::path::PathBuf {
        self.home.path().join(".local/bin").join(name)
    }

    fn status(&self) -> Option<Value> {
        let out = self.run(&self.bin(bins::CTL), &["status", "--json"]);
        serde_json::from_slice(&out.stdout).ok()
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        if let Some(pid) = self
            .status()
            .and_then(|s| s.pointer("/daemon/pid").and_then(Value::as_u64))
        {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

#[test]
fn install_script_brings_up_a_working_local_mesh() {
    for b in [bins::BROKER, bins::DAEMON, bins::SHIM, bins::CTL] {
        bins::bin(b);
    }
    let js_bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("js/node_modules/.bin");
    assert!(
        js_bin.join("claude").exists(),
        "Claude Code is not installed for the tests: run `npm ci --prefix tests/js`"
    );
    let home = tempfile::Builder::new()
        .prefix("cm-quick-")
        .tempdir()
        .unwrap();
    let account = Account {
        path: format!(
            "{}:{}:/usr/local/bin:/usr/bin:/bin",
            home.path().join(".local/bin").display(),
            js_bin.display()
        ),
        home,
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/install.sh");
    let out = account.run(
        Path::new("sh"),
        &[
            script.to_str().unwrap(),
            "--from",
            bins::profile_dir().to_str().unwrap(),
        ],
    );
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "install.sh failed:\n{log}");

    // The daemon runs and its local mesh is joined and connected.
    let status = wait::until("the local mesh to connect", Duration::from_secs(30), || {
        let s = account.status()?;
        let meshes = s.pointer("/daemon/meshes")?.as_array()?.clone();
        meshes
            .iter()
            .any(|m| m["slug"] == "local" && m["local"] == true && m["link"] == "connected")
            .then_some(s)
    });
    assert_eq!(status.pointer("/daemon/running"), Some(&Value::Bool(true)));

    // Registered with Claude Code, which health-checks the shim.
    let list = account.run(&js_bin.join("claude"), &["mcp", "list"]);
    let listing = String::from_utf8_lossy(&list.stdout).into_owned();
    let line = listing
        .lines()
        .find(|l| l.starts_with("claudemesh:"))
        .unwrap_or_else(|| panic!("not registered with Claude Code:\n{listing}\n{log}"));
    assert!(line.contains("Connected"), "{line}");
}
