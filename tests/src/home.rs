//! One user's world: its own HOME, config, data and runtime dirs, so that
//! two daemons on one machine behave like two machines.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::bins;
use crate::process::Guarded;
use crate::wait;

pub struct Home {
    dir: tempfile::TempDir,
    pub name: String,
}

impl Home {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("cm-{name}-"))
            .tempdir()
            .expect("a temp dir");
        Self {
            dir,
            name: name.to_owned(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.path().join("run")
    }

    /// The environment every claudemesh process of this home runs with.
    pub fn env(&self) -> Vec<(String, String)> {
        let p = |s: &str| self.path().join(s).display().to_string();
        vec![
            ("HOME".into(), p("")),
            ("CLAUDEMESH_CONFIG_DIR".into(), p("config")),
            ("CLAUDEMESH_DATA_DIR".into(), p("data")),
            ("CLAUDEMESH_RUNTIME_DIR".into(), p("run")),
            ("XDG_RUNTIME_DIR".into(), p("xdg-run")),
            // The file keystore: the Secret Service backend has its own
            // tests (daemon/tests/keystore_secret_service.rs).
            ("CLAUDEMESH_KEYSTORE".into(), "file".into()),
            (
                "CLAUDEMESH_DAEMON".into(),
                bins::bin(bins::DAEMON).display().to_string(),
            ),
        ]
    }

    pub fn command(&self, bin: &str) -> Command {
        let mut cmd = Command::new(bins::bin(bin));
        cmd.env_remove("CLAUDEMESH_BROKER_URL");
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts `claudemeshd run` with `args`, logs in `<home>/daemon.log`.
    pub fn start_daemon(&self, args: &[&str]) -> Guarded {
        self.start_daemon_with_env(args, &[])
    }

    /// `start_daemon` with more environment for the daemon.
    pub fn start_daemon_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Guarded {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("daemon.log"))
            .expect("log file");
        let mut cmd = self.command(bins::DAEMON);
        cmd.arg("run").args(args).stdout(Stdio::null()).stderr(log);
        cmd.envs(env.iter().copied());
        Guarded::spawn(&format!("claudemeshd ({})", self.name), &mut cmd)
    }

    /// `start_daemon`, then [`Self::wait_answering`].
    pub fn start_daemon_answering(&self, args: &[&str]) -> Guarded {
        let mut daemon = self.start_daemon(args);
        self.wait_answering(&mut daemon);
        daemon
    }

    /// Waits until `daemon`, this very process, answers on the home's
    /// socket. Until then a shim's tool call finds no daemon and starts one
    /// itself, with the default options and environment (the local mesh
    /// on, whatever the test gave `daemon`): when that one wins the
    /// instance lock, the test's daemon exits and sessions attach to
    /// another mesh than the test meant.
    pub fn wait_answering(&self, daemon: &mut Guarded) {
        let pid = u64::from(daemon.pid());
        wait::until(
            &format!("claudemeshd ({}) to answer", self.name),
            wait::DEFAULT,
            || {
                assert!(
                    daemon.is_running(),
                    "claudemeshd ({}) exited before answering; its log:\n{}",
                    self.name,
                    self.daemon_log()
                );
                let out = self.ctl(&["status", "--json"]);
                let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                (status["daemon"]["pid"].as_u64() == Some(pid)).then_some(())
            },
        );
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.path().join("daemon.log")).unwrap_or_default()
    }

    /// Runs `claudemesh-ctl args…` to completion.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.command(bins::CTL)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("claudemesh-ctl runs")
    }

    /// Runs ctl and returns stdout, panicking with its stderr on failure.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "claudemesh-ctl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        crate::logs::print_if_panicking(&format!("home {}", self.name), self.path());
    }
}
