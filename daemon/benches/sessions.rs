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

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use claudemesh_protocol::ipc::{AttachArgs, IPC_VERSION, Request, Response, SendArgs};
use claudemesh_protocol::wire::Priority;
use common::{
    BenchDaemon, Conn, Stats, bench_main, connector_session, flag, proc_cpu_secs, proc_cpu_split,
    proc_mem_kb, report,
};

fn main() {
    let sessions = flag("--sessions").unwrap_or(1000usize);
    let messages = flag("--messages").unwrap_or(5usize);
    let rate = flag("--rate").unwrap_or(0f64);
    bench_main(|| run(sessions, messages, rate));
}

async fn run(n: usize, per_session: usize, rate: f64) {
    let daemon = BenchDaemon::start("cmbench-").await;
    let (pid, socket) = (daemon.pid, daemon.socket.clone());
    let pacing = if rate > 0.0 {
        format!("paced at {rate} msg/s in total")
    } else {
        "all at once".to_owned()
    };
    println!("claudemeshd pid {pid}; {n} sessions, {per_session} messages each, {pacing}");
    let rss_idle = proc_mem_kb(pid, "VmRSS:");

    let stats = Stats::new();

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

    daemon.stop();
    for mut c in connectors {
        drop(c.child.stdin.take());
        let _ = c.child.kill();
        let _ = c.child.wait();
    }
}
