//! What idle sessions waiting to wake cost one real `claudemeshd` (release
//! build): N sessions (100 by default), each with a `wait_wake` armed as
//! its Claude Code `Stop` hook would (`docs/ipc.md`).
//!
//! ```text
//! cargo bench -p claudemesh-daemon --bench wake -- [--sessions N] [--seconds S]
//! ```
//!
//! Prints the daemon's RSS with the sessions attached and with every wait
//! armed, its wakeups per second (context switches of all its threads,
//! from `/proc/<pid>/task/*/status`) and CPU time over S idle seconds
//! (10 by default) without and with the waits, and the time from `send` to
//! the `woken` answer for 20 of the sessions (through the daemon, its
//! outbox and the embedded local broker; Claude Code is not part of it:
//! `tests/tests/claude_wake.rs` measures that whole path).

mod common;

use std::time::{Duration, Instant};

use claudemesh_protocol::ipc::{
    AttachArgs, IPC_VERSION, Request, Response, SendArgs, WaitWakeArgs, WakeLevel, WakeOutcome,
};
use claudemesh_protocol::wire::Priority;
use common::{
    BenchDaemon, Conn, Stats, bench_main, connector_session, flag, proc_cpu_secs, proc_mem_kb,
    report, thread_switches,
};
use tokio::sync::mpsc;

/// Each `wait_wake` waits this long, then the waiter asks again (below
/// the bench client's 60 s answer limit).
const WAIT_MS: u64 = 50_000;
const WAKES: usize = 20;

fn main() {
    let sessions = flag::<usize>("--sessions").map_or(100, |v| v.max(WAKES + 1));
    let seconds = flag::<u64>("--seconds").unwrap_or(10).max(1);
    bench_main(|| run(sessions, seconds));
}

/// Context switches of each thread of `pid` so far, by thread id.
fn wakeups(pid: u32) -> std::collections::HashMap<String, u64> {
    thread_switches(pid)
        .into_iter()
        .map(|(tid, (_, n))| (tid, n))
        .collect()
}

/// Wakeups per second and CPU seconds of `pid` over `seconds` (the
/// switches of threads that ended meanwhile are not counted).
async fn idle_cost(pid: u32, seconds: u64) -> (f64, f64) {
    let (w0, c0) = (wakeups(pid), proc_cpu_secs(pid));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let switches: u64 = wakeups(pid)
        .iter()
        .map(|(tid, n)| n.saturating_sub(w0.get(tid).copied().unwrap_or(0)))
        .sum();
    (switches as f64 / seconds as f64, proc_cpu_secs(pid) - c0)
}

async fn run(n: usize, seconds: u64) {
    let daemon = BenchDaemon::start("cmwake-").await;
    let (pid, socket) = (daemon.pid, daemon.socket.clone());
    println!("claudemeshd pid {pid}; {n} idle sessions, each with a wait_wake armed");

    let stats = Stats::new();
    // Session n is the sender.
    let mut connectors = Vec::with_capacity(n + 1);
    let mut conns = Vec::with_capacity(n + 1);
    let mut targets = Vec::with_capacity(n + 1);
    for i in 0..=n {
        let c = connector_session(&socket);
        let conn = Conn::start(c.stream.try_clone().expect("clone"), stats.clone());
        conn.request(Request::Hello {
            protocol: IPC_VERSION,
            client: "bench".into(),
        })
        .await
        .expect("hello");
        match conn
            .request(Request::Attach(AttachArgs {
                mesh: None,
                display_name: Some(format!("w{i}")),
                cwd: format!("/tmp/bench/w{i}"),
                claude_pid: c.pid,
                groups: vec![],
                transient: false,
                transcript_path: None,
            }))
            .await
        {
            Ok(Response::Attached(info)) => {
                targets.push(format!("{}/{}", info.member, info.session_id))
            }
            other => panic!("attach: {other:?}"),
        }
        conns.push(conn);
        connectors.push(c);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_attached = proc_mem_kb(pid, "VmRSS:");
    let (wakeups_idle, cpu_idle) = idle_cost(pid, seconds).await;

    // Every session's Stop hook waits (on its session's own connection:
    // the daemon finds the session from the connecting process).
    let (woken_tx, mut woken_rx) = mpsc::unbounded_channel::<(usize, Instant)>();
    let mut waiters = Vec::new();
    for (i, conn) in conns.iter().take(n).enumerate() {
        let (conn, woken_tx) = (conn.clone(), woken_tx.clone());
        waiters.push(tokio::spawn(async move {
            loop {
                let request = Request::WaitWake(WaitWakeArgs {
                    wake: WakeLevel::Next,
                    timeout_ms: WAIT_MS,
                    transcript_path: None,
                });
                match conn.request(request).await {
                    Ok(Response::Woken {
                        outcome: WakeOutcome::Timeout,
                        ..
                    }) => continue,
                    Ok(Response::Woken {
                        outcome: WakeOutcome::Messages,
                        ..
                    }) => {
                        let _ = woken_tx.send((i, Instant::now()));
                        return;
                    }
                    other => panic!("wait_wake: {other:?}"),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_armed = proc_mem_kb(pid, "VmRSS:");
    let (wakeups_armed, cpu_armed) = idle_cost(pid, seconds).await;
    println!(
        "RSS with {n} sessions attached {:.1} MB; with {n} waits armed {:.1} MB ({:+.1} KB in all)",
        rss_attached as f64 / 1024.0,
        rss_armed as f64 / 1024.0,
        rss_armed as f64 - rss_attached as f64
    );
    println!(
        "idle over {seconds} s: without waits {wakeups_idle:.1} wakeups/s, CPU {cpu_idle:.3} s; \
         with {n} waits armed {wakeups_armed:.1} wakeups/s, CPU {cpu_armed:.3} s"
    );

    // Wake some of them, one at a time.
    let sender = conns[n].clone();
    let mut latencies = Vec::new();
    for (i, target) in targets.iter().take(WAKES).enumerate() {
        let t0 = Instant::now();
        let sent = sender
            .request(Request::Send(SendArgs {
                to: target.clone(),
                text: format!("wake {i}"),
                priority: Priority::Next,
            }))
            .await;
        assert!(matches!(sent, Ok(Response::Sent(_))), "send: {sent:?}");
        let (who, at) = tokio::time::timeout(Duration::from_secs(30), woken_rx.recv())
            .await
            .expect("woken within 30 s")
            .expect("a waiter");
        assert_eq!(who, i, "the addressed session woke");
        latencies.push(at.duration_since(t0).as_micros() as u64);
    }
    report(
        &format!("send -> woken answer ({WAKES} wakes, includes the 150 ms gather)"),
        latencies,
    );
    println!(
        "daemon peak RSS (VmHWM) {:.1} MB",
        proc_mem_kb(pid, "VmHWM:") as f64 / 1024.0
    );

    for w in waiters {
        w.abort();
    }
    daemon.stop();
    for mut c in connectors {
        drop(c.child.stdin.take());
        let _ = c.child.kill();
        let _ = c.child.wait();
    }
}
