//! A private PostgreSQL for the tests: `initdb` on a temporary directory,
//! `pg_ctl` on a free loopback port with its own socket directory. One
//! server per test binary ([`shared`]), a fresh database per test
//! ([`PgServer::fresh_database`]); a test that stops the server starts its
//! own ([`PgServer::start`]).
//!
//! PostgreSQL refuses to run as root: as root the directory is given to
//! the `postgres` user and `initdb`/`pg_ctl` run through `runuser -u
//! postgres --`; as anyone else they run directly.
//!
//! `pg_ctl` leaves the server running in the background, and a test binary
//! does not run destructors of statics, so each server gets a watcher: a
//! small shell loop that stops the server and deletes its directory once
//! the test process is gone, however it ended.
//!
//! Needs only `std` (and `tempfile`), so that other test crates can
//! include this file by path.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The superuser `initdb` creates (connections are trusted: loopback and
/// a private socket directory only).
const SUPERUSER: &str = "postgres";

pub struct PgServer {
    bin: PathBuf,
    /// Holds `data/`, `sock/` and `log`.
    root: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// The server this test binary shares (started at the first call).
pub fn shared() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(PgServer::start)
}

/// The directory of `initdb`: the highest version under
/// /usr/lib/postgresql (Debian keeps them off PATH), else PATH.
fn find_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return dir;
            }
        }
    }
    panic!(
        "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or on PATH); \
         run ./test.sh --provision (as root) to install it"
    );
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PgServer {
    /// Initialises and starts a new server, watched (see the module doc).
    pub fn start() -> Self {
        let bin = find_bin();
        let as_postgres = running_as_root();
        let root = tempfile::Builder::new()
            .prefix("cm-pg-")
            .tempdir_in("/tmp")
            .expect("temp dir")
            .keep();
        std::fs::create_dir(root.join("sock")).expect("socket dir");
        if as_postgres {
            run(
                Command::new("chown").args(["-R", SUPERUSER]).arg(&root),
                "chown of the PostgreSQL directory",
            );
        }
        let server = Self {
            bin,
            root,
            port: free_port(),
            as_postgres,
        };
        server.watch();
        server.pg(
            "initdb",
            &[
                "-D",
                &server.data().to_string_lossy(),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--no-sync",
                "--no-instructions",
                "-E",
                "UTF8",
            ],
        );
        server.resume();
        server
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn sock(&self) -> PathBuf {
        self.root.join("sock")
    }

    /// Runs one of PostgreSQL's programs, as `postgres` when we are root.
    fn pg(&self, program: &str, args: &[&str]) {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", SUPERUSER, "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args).current_dir(&self.root);
        run(&mut cmd, program);
    }

    /// Starts the (stopped) server again on the same port and data.
    pub fn resume(&self) {
        // fsync off: a test database that a crash of the machine would
        // lose is fine, and it saves the tests thousands of fsyncs. It
        // does not change what the broker sees: commits are still
        // atomic and visible as soon as they return.
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=300",
            self.port,
            self.sock().display()
        );
        // For profiling (docs/benchmarks.md): e.g. slow-statement logging
        // to a directory that outlives the server.
        if let Ok(extra) = std::env::var("CLAUDEMESH_TEST_PG_OPTIONS") {
            options.push(' ');
            options.push_str(&extra);
        }
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-l",
                &self.root.join("log").to_string_lossy(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server (fast: connections are cut), keeping its data.
    pub fn stop(&self) {
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a new, empty database and returns its URL.
    pub fn fresh_database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        run(
            Command::new(self.bin.join("createdb"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", SUPERUSER, &name]),
            "createdb",
        );
        self.url(&name)
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Starts the watcher: once this process is gone, stop the server
    /// (immediate: nothing in it is worth a clean shutdown) and delete
    /// its directory.
    fn watch(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if self.as_postgres {
            format!("runuser -u {SUPERUSER} -- '{}'", pg_ctl.display())
        } else {
            format!("'{}'", pg_ctl.display())
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.2; done; \
             {stop} -D '{data}' -m immediate -w stop >/dev/null 2>&1; rm -rf '{root}'",
            pid = std::process::id(),
            data = self.data().display(),
            root = self.root.display(),
        );
        // The outer shell returns at once, leaving the loop in the
        // background: nothing of the watcher stays this process's child.
        let status = Command::new("sh")
            .args(["-c", &format!("( {script} ) &")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("starting the PostgreSQL watcher");
        assert!(
            status.success(),
            "starting the PostgreSQL watcher: {status}"
        );
    }

    /// The server's log, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("log")).unwrap_or_default()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}
