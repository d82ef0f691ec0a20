//! Shared by the daemon's benches: sessions whose "Claude Code" is a small
//! connector process each (the daemon ties a session to the connecting
//! process or an ancestor), a plain client connection, and readings of a
//! process's memory and CPU from `/proc`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::os::fd::FromRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use claudemesh_protocol::ipc::{DaemonFrame, Event, Request, RequestFrame, Response};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Mutex as AsyncMutex, oneshot};

pub const CONNECTOR_ENV: &str = "CLAUDEMESH_BENCH_CONNECTOR";

/// Connector mode: connect, say which fd, wait for stdin to close.
pub fn connector(socket: &str) -> ! {
    use std::os::fd::AsRawFd;
    let mut out = std::io::stdout();
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(stream) => {
            let _ = writeln!(out, "FD {}", stream.as_raw_fd());
            let _ = out.flush();
            let mut buf = [0u8; 1];
            let _ = std::io::stdin().read(&mut buf);
            drop(stream);
            std::process::exit(0)
        }
        Err(e) => {
            let _ = writeln!(out, "ERR {e}");
            std::process::exit(1)
        }
    }
}

/// A bench's `main`: in connector mode (a session's stand-in process) it
/// connects and never returns; otherwise it raises the descriptor limit
/// and runs `body` on a multi-threaded runtime.
pub fn bench_main<F: std::future::Future>(body: impl FnOnce() -> F) {
    if let Ok(socket) = std::env::var(CONNECTOR_ENV) {
        connector(&socket);
    }
    raise_fd_limit();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(body());
}

/// The value after `--name` on the bench's command line, if it parses.
pub fn flag<T: std::str::FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

pub fn raise_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain get/setrlimit on an owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

pub struct Connector {
    pub child: Child,
    pub pid: u32,
    pub stream: std::os::unix::net::UnixStream,
}

/// Starts a connector and takes its connected socket over.
pub fn connector_session(socket: &Path) -> Connector {
    let mut child = Command::new(std::env::current_exe().expect("own exe"))
        .env(CONNECTOR_ENV, socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn a connector");
    let pid = child.id();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("connector output");
    let fd: i32 = line
        .strip_prefix("FD ")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("connector failed: {line}"));
    // SAFETY: raw syscalls on our own child; the returned fd is new and ours.
    let stream = unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::c_int, 0) as libc::c_int;
        assert!(
            pidfd >= 0,
            "pidfd_open: {}",
            std::io::Error::last_os_error()
        );
        let ours = libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) as libc::c_int;
        libc::close(pidfd);
        assert!(
            ours >= 0,
            "pidfd_getfd: {}",
            std::io::Error::last_os_error()
        );
        std::os::unix::net::UnixStream::from_raw_fd(ours)
    };
    Connector { child, pid, stream }
}

pub type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<DaemonFrame>>>>;

pub struct Stats {
    pub epoch: Instant,
    pub delivery_us: Mutex<Vec<u64>>,
    pub answer_us: Mutex<Vec<u64>>,
    pub received: AtomicU64,
}

impl Stats {
    pub fn new() -> Arc<Stats> {
        Arc::new(Stats {
            epoch: Instant::now(),
            delivery_us: Mutex::new(Vec::new()),
            answer_us: Mutex::new(Vec::new()),
            received: AtomicU64::new(0),
        })
    }
}

/// One session's connection, driven from the bench.
pub struct Conn {
    writer: AsyncMutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: AtomicU64,
}

impl Conn {
    pub fn start(stream: std::os::unix::net::UnixStream, stats: Arc<Stats>) -> Arc<Conn> {
        stream.set_nonblocking(true).expect("nonblocking");
        let stream = tokio::net::UnixStream::from_std(stream).expect("tokio stream");
        let (read, write) = stream.into_split();
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let p = pending.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match DaemonFrame::parse(&line) {
                    Ok(DaemonFrame::Event {
                        event: Event::Message(m),
                    }) => {
                        let now = stats.epoch.elapsed().as_micros() as u64;
                        if let Some(sent) =
                            m.text.split(' ').nth(1).and_then(|t| t.parse::<u64>().ok())
                        {
                            stats
                                .delivery_us
                                .lock()
                                .unwrap()
                                .push(now.saturating_sub(sent));
                        }
                        stats.received.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(DaemonFrame::Event { .. }) => {}
                    Ok(f @ DaemonFrame::Ok { id, .. })
                    | Ok(f @ DaemonFrame::Err { id: Some(id), .. }) => {
                        if let Some(tx) = p.lock().unwrap().remove(&id) {
                            let _ = tx.send(f);
                        }
                    }
                    other => eprintln!("unexpected frame: {other:?}"),
                }
            }
        });
        Arc::new(Conn {
            writer: AsyncMutex::new(write),
            pending,
            next_id: AtomicU64::new(1),
        })
    }

    pub async fn request(&self, request: Request) -> Result<Response, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let line = RequestFrame { id, request }.to_line();
        self.writer
            .lock()
            .await
            .write_all(line.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(60), rx).await {
            Ok(Ok(DaemonFrame::Ok { result, .. })) => Ok(result),
            Ok(Ok(DaemonFrame::Err { error, .. })) => Err(error.to_string()),
            _ => Err("no answer".into()),
        }
    }
}

pub fn proc_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// (user, system) CPU seconds of `pid`.
pub fn proc_cpu_split(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) as f64;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (get(11) / hz, get(12) / hz)
}

/// Context switches so far of each thread of `pid` (voluntary and not,
/// from `/proc/<pid>/task/*/status`), by thread id, with the thread's
/// name: a thread's wakeups.
pub fn thread_switches(pid: u32) -> HashMap<String, (String, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return HashMap::new();
    };
    tasks
        .flatten()
        .map(|t| {
            let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let n = status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
            (
                t.file_name().to_string_lossy().into_owned(),
                (name.trim().to_owned(), n),
            )
        })
        .collect()
}

pub fn proc_mem_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

pub fn report(name: &str, mut v: Vec<u64>) {
    v.sort_unstable();
    println!(
        "{name}: n={} p50={:.2} ms p95={:.2} ms p99={:.2} ms max={:.2} ms",
        v.len(),
        percentile(&v, 0.50),
        percentile(&v, 0.95),
        percentile(&v, 0.99),
        percentile(&v, 1.0)
    );
}

/// A `claudemeshd` (this package's release binary) in a temporary home
/// under `$TMPDIR`, its output in `daemon.log` there.
pub struct BenchDaemon {
    pub child: Child,
    pub pid: u32,
    pub socket: std::path::PathBuf,
    /// Removed on drop.
    pub home: tempfile::TempDir,
}

impl BenchDaemon {
    /// Starts it and waits until its socket answers.
    pub async fn start(prefix: &str) -> BenchDaemon {
        // $TMPDIR picks the disk under test (e.g. /dev/shm to take fsync
        // out); it must be short enough for a socket path.
        let home = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("temp dir");
        let dir = |s: &str| home.path().join(s);
        let log = dir("daemon.log");
        let log_file = std::fs::File::create(&log).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_claudemeshd"))
            .arg("run")
            .env("CLAUDEMESH_CONFIG_DIR", dir("c"))
            .env("CLAUDEMESH_DATA_DIR", dir("d"))
            .env("CLAUDEMESH_RUNTIME_DIR", dir("r"))
            .env("CLAUDEMESH_KEYSTORE", "file")
            .env_remove("RUST_LOG")
            .env_remove("CLAUDEMESH_DEBUG")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("start claudemeshd");
        let pid = child.id();
        let socket = dir("r").join("claudemeshd.sock");
        wait_for_socket(&socket, &log).await;
        BenchDaemon {
            child,
            pid,
            socket,
            home,
        }
    }

    /// SIGTERM, and waits for it to exit.
    pub fn stop(mut self) {
        // SAFETY: SIGTERM to our own child.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

pub async fn wait_for_socket(socket: &Path, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "the daemon did not start; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
