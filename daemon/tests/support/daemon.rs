//! Real `claudemeshd` processes, each in its own private home.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use claudemesh_daemon::keystore::{Keystore, KeystoreChoice};
use claudemesh_daemon::paths::Paths;
use tempfile::TempDir;

use super::client::TestClient;

/// A user's claudemesh directories, in a temporary directory.
pub struct Home {
    pub dir: TempDir,
    pub paths: Paths,
}

impl Home {
    pub fn new() -> Home {
        let dir = tempfile::Builder::new()
            .prefix("cmd-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let paths = Paths {
            config_dir: dir.path().join("c"),
            data_dir: dir.path().join("d"),
            runtime_dir: dir.path().join("r"),
        };
        Home { dir, paths }
    }

    pub fn socket(&self) -> PathBuf {
        self.paths.socket_path()
    }

    /// The keystore the daemon of this home uses (files, as in the tests'
    /// daemons).
    pub fn keystore(&self) -> Keystore {
        Keystore::open_with(&self.paths, KeystoreChoice::File).expect("file keystore")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_claudemeshd"));
        cmd.args(args)
            .env("CLAUDEMESH_CONFIG_DIR", &self.paths.config_dir)
            .env("CLAUDEMESH_DATA_DIR", &self.paths.data_dir)
            .env("CLAUDEMESH_RUNTIME_DIR", &self.paths.runtime_dir)
            .env("CLAUDEMESH_KEYSTORE", "file")
            .env("CLAUDEMESH_DEBUG", "1")
            .env_remove("CLAUDEMESH_BROKER_URL")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd
    }
}

/// A running `claudemeshd run`; killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts `claudemeshd run ARGS` for `home`, appending its logs to
    /// `home/daemon.log`.
    pub fn start(home: &Home, args: &[&str]) -> Daemon {
        Self::start_with_log(home, args, home.dir.path().join("daemon.log"))
    }

    /// As [`Daemon::start`], its logs appended to `log`.
    pub fn start_with_log(home: &Home, args: &[&str], log: PathBuf) -> Daemon {
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let err = out.try_clone().expect("log file");
        let mut full = vec!["run"];
        full.extend_from_slice(args);
        let child = home
            .command(&full)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn claudemeshd");
        Daemon {
            child: Some(child),
            socket: home.socket(),
            log,
        }
    }

    /// Starts it and waits until it answers.
    pub async fn start_ready(home: &Home, args: &[&str]) -> Daemon {
        let d = Self::start(home, args);
        d.client().await;
        d
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// A connected, greeted client; waits up to 30 s for the daemon.
    pub async fn client(&self) -> TestClient {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(c) = TestClient::ready(&self.socket).await {
                return c;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("the daemon did not answer; its log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// True when the socket path exists.
pub fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}
