//! 1 000 concurrent sessions on one real `claudemeshd` (release build),
//! sending to each other through the local mesh.
//!
//! ```text
//! cargo bench -p claudemesh-daemon --bench sessions -- [--sessions N] [--messages M] [--rate R]
//! ```
//!
//! Without `--rate` every session sends its messages at once (a burst of
//! N × M sends: throughput, and latency under saturation); with `--rate R`
//! the sends are spread evenly at R messages per second in total.
//!
//! Each session needs its own "Claude Code" process (the daemon ties a
//! session to the connecting process or an ancestor), so the bench starts
//! one small connector process per session: it connects to the socket and
//! waits; the bench takes the connected socket over with `pidfd_getfd`
//! (Linux 5.6+) and drives the session itself. Prints the daemon's peak
//! RSS (VmHWM), its CPU time (utime + stime), and the latency of each
//! message from `send` to the recipient's `message` event, through the
//! daemon, its outbox, the embedded broker and back.

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use claudemesh_protocol::ipc::{
    AttachArgs, DaemonFrame, Event, IPC_VERSION, Request, RequestFrame, Response, SendArgs,
};
use claudemesh_protocol::wire::Priority;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Mutex as AsyncMutex, oneshot};

const CONNECTOR_ENV: &str = "CLAUDEMESH_BENCH_CONNECTOR";

fn main() {
    if let Ok(socket) = std::env::var(CONNECTOR_ENV) {
        connector(&socket);
    }
    let mut sessions = 1000usize;
    let mut messages = 5usize;
    let mut rate = 0f64;
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--sessions" => {
                sessions = args
                    .get(i + 1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(sessions)
            }
            "--messages" => {
                messages = args
                    .get(i + 1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(messages)
            }
            "--rate" => rate = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(rate),
            _ => {}
        }
        i += 1;
    }
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(sessions, messages, rate));
}

/// Connector mode: connect, say which fd, wait for stdin to close.
fn connector(socket: &str) -> ! {
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

fn raise_fd_limit() {
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

struct Connector {
    child: Child,
    pid: u32,
    stream: std::os::unix::net::UnixStream,
}

/// Starts a connector and takes its connected socket over.
fn connector_session(socket: &Path) -> Connector {
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

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<DaemonFrame>>>>;

struct Stats {
    epoch: Instant,
    delivery_us: Mutex<Vec<u64>>,
    answer_us: Mutex<Vec<u64>>,
    received: AtomicU64,
}

/// One session's connection, driven from the bench.
struct Conn {
    writer: AsyncMutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: AtomicU64,
}

impl Conn {
    fn start(stream: std::os::unix::net::UnixStream, stats: Arc<Stats>) -> Arc<Conn> {
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

    async fn request(&self, request: Request) -> Result<Response, String> {
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

fn proc_cpu_secs(pid: u32) -> f64 {
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
fn proc_cpu_split(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) as f64;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (get(11) / hz, get(12) / hz)
}

fn proc_mem_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn report(name: &str, mut v: Vec<u64>) {
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

async fn wait_for_socket(socket: &Path, log: &Path) {
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

async fn run(n: usize, per_session: usize, rate: f64) {
    // $TMPDIR picks the disk under test (e.g. /dev/shm to take fsync out);
    // it must be short enough for a socket path.
    let home = tempfile::Builder::new()
        .prefix("cmbench-")
        .tempdir()
        .expect("temp dir");
    let dir = |s: &str| -> PathBuf { home.path().join(s) };
    let log = dir("daemon.log");
    let log_file = std::fs::File::create(&log).expect("log");
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_claudemeshd"))
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
    let pid = daemon.id();
    let socket = dir("r").join("claudemeshd.sock");
    wait_for_socket(&socket, &log).await;
    let pacing = if rate > 0.0 {
        format!("paced at {rate} msg/s in total")
    } else {
        "all at once".to_owned()
    };
    println!("claudemeshd pid {pid}; {n} sessions, {per_session} messages each, {pacing}");
    let rss_idle = proc_mem_kb(pid, "VmRSS:");

    let stats = Arc::new(Stats {
        epoch: Instant::now(),
        delivery_us: Mutex::new(Vec::new()),
        answer_us: Mutex::new(Vec::new()),
        received: AtomicU64::new(0),
    });

    // Connect and attach every session.
    let t0 = Instant::now();
    let mut connectors = Vec::with_capacity(n);
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let c = connector_session(&socket);
        let stream = c.stream.try_clone().expect("clone");
        conns.push((c.pid, Conn::start(stream, stats.clone())));
        connectors.push(c);
    }
    let connected = t0.elapsed();
    let cpu0 = proc_cpu_secs(pid);
    let t1 = Instant::now();
    let mut attach = Vec::new();
    for (i, (claude_pid, conn)) in conns.iter().enumerate() {
        let (conn, claude_pid) = (conn.clone(), *claude_pid);
        attach.push(tokio::spawn(async move {
            conn.request(Request::Hello {
                protocol: IPC_VERSION,
                client: "bench".into(),
            })
            .await?;
            match conn
                .request(Request::Attach(AttachArgs {
                    mesh: None,
                    display_name: Some(format!("s{i}")),
                    cwd: format!("/tmp/bench/s{i}"),
                    claude_pid,
                    groups: vec![],
                    transient: false,
                    transcript_path: None,
                }))
                .await?
            {
                Response::Attached(info) => Ok(format!("{}/{}", info.member, info.session_id)),
                other => Err(format!("{other:?}")),
            }
        }));
    }
    let mut targets = Vec::with_capacity(n);
    for a in attach {
        targets.push(a.await.expect("task").expect("attach"));
    }
    let attached = t1.elapsed();
    let cpu_attach = proc_cpu_secs(pid) - cpu0;
    let rss_attached = proc_mem_kb(pid, "VmRSS:");
    println!(
        "connected {n} sockets in {:.2} s; attached in {:.2} s (daemon CPU {:.2} s); RSS idle {:.1} MB, with {n} sessions {:.1} MB",
        connected.as_secs_f64(),
        attached.as_secs_f64(),
        cpu_attach,
        rss_idle as f64 / 1024.0,
        rss_attached as f64 / 1024.0
    );

    // What 1 000 idle sessions cost (reaper, timers, pings).
    let cpu_idle0 = proc_cpu_secs(pid);
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!(
        "idle with {n} sessions: daemon CPU {:.3} s over 5 s",
        proc_cpu_secs(pid) - cpu_idle0
    );

    // Everyone sends to others.
    let targets = Arc::new(targets);
    let total = (n * per_session) as u64;
    let cpu1 = proc_cpu_secs(pid);
    let t2 = Instant::now();
    let mut senders = Vec::new();
    for (i, (_, conn)) in conns.iter().enumerate() {
        let (conn, targets, stats) = (conn.clone(), targets.clone(), stats.clone());
        senders.push(tokio::spawn(async move {
            let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let interval = if rate > 0.0 { n as f64 / rate } else { 0.0 };
            for k in 0..per_session {
                if rate > 0.0 {
                    let at = i as f64 / rate + k as f64 * interval;
                    tokio::time::sleep_until((t2 + Duration::from_secs_f64(at)).into()).await;
                }
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let mut j = (x % n as u64) as usize;
                if j == i {
                    j = (j + 1) % n;
                }
                let started = stats.epoch.elapsed().as_micros() as u64;
                let r = conn
                    .request(Request::Send(SendArgs {
                        to: targets[j].clone(),
                        text: format!("{i}.{k} {started}"),
                        priority: Priority::Now,
                    }))
                    .await;
                let took = stats.epoch.elapsed().as_micros() as u64 - started;
                match r {
                    Ok(Response::Sent(_)) => stats.answer_us.lock().unwrap().push(took),
                    other => eprintln!("send failed: {other:?}"),
                }
            }
        }));
    }
    for s in senders {
        let _ = s.await;
    }
    let sent_in = t2.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while stats.received.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_in = t2.elapsed();
    let cpu_msgs = proc_cpu_secs(pid) - cpu1;
    let received = stats.received.load(Ordering::Relaxed);

    println!(
        "sent {total} messages in {:.2} s; {received} delivered in {:.2} s ({:.0} msg/s); daemon CPU {:.2} s",
        sent_in.as_secs_f64(),
        all_in.as_secs_f64(),
        received as f64 / all_in.as_secs_f64(),
        cpu_msgs
    );
    report(
        "latency send -> recipient event",
        std::mem::take(&mut *stats.delivery_us.lock().unwrap()),
    );
    report(
        "latency send -> sent answer    ",
        std::mem::take(&mut *stats.answer_us.lock().unwrap()),
    );
    let hwm = proc_mem_kb(pid, "VmHWM:");
    let rss = proc_mem_kb(pid, "VmRSS:");
    let (user, system) = proc_cpu_split(pid);
    println!(
        "daemon memory: peak RSS (VmHWM) {:.1} MB, RSS now {:.1} MB; total daemon CPU {:.2} s (user {user:.2} s, system {system:.2} s)",
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0,
        proc_cpu_secs(pid)
    );
    if received < total {
        println!(
            "WARNING: {} messages were not delivered within 120 s",
            total - received
        );
    }

    // SAFETY: SIGTERM to our own child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let _ = daemon.wait();
    for mut c in connectors {
        drop(c.child.stdin.take());
        let _ = c.child.kill();
        let _ = c.child.wait();
    }
}
