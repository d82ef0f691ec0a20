//! What an idle `claudemeshd` (release build) costs (issue 22, part 4):
//! its local mesh and one joined mesh (a broker in this process, so that
//! the broker's own threads are not counted), no sessions; then with 10
//! idle sessions attached.
//!
//! ```text
//! cargo bench -p claudemesh-daemon --bench idle -- [--seconds S] [--sessions N]
//! ```
//!
//! Prints, for each phase over S seconds (60 by default): wakeups per
//! second (context switches of every thread of the daemon, from
//! `/proc/<pid>/task/*/status`, the busiest threads named), the CPU used
//! (share of one core) and the RSS. Target: at most 1 wakeup a second and
//! under 0.1 % of a core.

mod common;

use std::time::{Duration, Instant};

use claudemesh_broker::admin::Admin;
use claudemesh_daemon::config::{Config, MeshConfig};
use claudemesh_daemon::keystore::{Keystore, KeystoreChoice};
use claudemesh_daemon::paths::Paths;
use claudemesh_protocol::MemberSecretKey;
use claudemesh_protocol::ipc::{AttachArgs, IPC_VERSION, LinkState, Request, Response};
use common::{
    BenchDaemon, Conn, Stats, bench_main, connector_session, flag, proc_cpu_secs, proc_mem_kb,
    thread_switches,
};

fn main() {
    let seconds = flag::<u64>("--seconds").unwrap_or(60).max(1);
    let sessions = flag::<usize>("--sessions").unwrap_or(10);
    bench_main(|| run(seconds, sessions));
}

/// Measures `pid` idle for `seconds` and prints one line (and the
/// threads that woke).
async fn phase(name: &str, pid: u32, seconds: u64) {
    let (s0, c0, t0) = (thread_switches(pid), proc_cpu_secs(pid), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (s1, c1) = (thread_switches(pid), proc_cpu_secs(pid));
    let secs = t0.elapsed().as_secs_f64();
    let mut by_thread: Vec<(String, f64)> = s1
        .iter()
        .map(|(tid, (thread, n))| {
            let before = s0.get(tid).map_or(0, |(_, b)| *b);
            (thread.clone(), n.saturating_sub(before) as f64 / secs)
        })
        .filter(|(_, rate)| *rate > 0.0)
        .collect();
    by_thread.sort_by(|a, b| b.1.total_cmp(&a.1));
    // `+ 0.0`: an empty sum is -0.0.
    let total: f64 = by_thread.iter().map(|(_, r)| r).sum::<f64>() + 0.0;
    println!(
        "{name}: {total:.2} wakeups/s, CPU {:.3} % of a core, RSS {:.1} MB ({} threads)",
        (c1 - c0) / secs * 100.0,
        proc_mem_kb(pid, "VmRSS:") as f64 / 1024.0,
        s1.len()
    );
    let busiest: Vec<String> = by_thread
        .iter()
        .take(5)
        .map(|(t, r)| format!("{t} {r:.2}/s"))
        .collect();
    println!("  threads that woke: {}", busiest.join(", "));
}

/// Enrolls a member for the daemon's home in `team` on the broker in
/// `broker_dir`, as `claudemesh-ctl join` would leave things.
fn enroll(home: &std::path::Path, broker_dir: &std::path::Path, url: &str) {
    let paths = Paths {
        config_dir: home.join("c"),
        data_dir: home.join("d"),
        runtime_dir: home.join("r"),
    };
    let admin = Admin::open(broker_dir).expect("admin");
    let mesh = admin.create_mesh("team").expect("create mesh");
    let key = MemberSecretKey::generate().expect("key");
    let pubkey = key.public_key().to_hex();
    let member = admin
        .enroll_member(&mesh.id, &pubkey, "bench")
        .expect("enroll");
    Keystore::open_with(&paths, KeystoreChoice::File)
        .expect("keystore")
        .store(&mesh.id, &key)
        .expect("store key");
    let path = paths.config_file();
    let mut config = Config::load(&path).expect("config");
    config.upsert(MeshConfig {
        mesh_id: mesh.id.clone(),
        slug: mesh.slug.clone(),
        member_id: member.id,
        pubkey,
        broker_url: url.to_owned(),
        display_name: Some("bench".into()),
        local: false,
        joined_at: 1,
    });
    config.save(&path).expect("save config");
}

async fn run(seconds: u64, sessions: usize) {
    let broker_dir = tempfile::tempdir().expect("broker dir");
    let broker = claudemesh_broker::start(claudemesh_broker::BrokerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        broker_dir.path().to_owned(),
    ))
    .await
    .expect("start the broker");
    let url = format!("ws://{}/ws", broker.local_addr());

    let daemon = BenchDaemon::start("cmidle-").await;
    let (pid, socket) = (daemon.pid, daemon.socket.clone());
    enroll(daemon.home.path(), broker_dir.path(), &url);
    // The daemon hears the config change and connects.
    let stats = Stats::new();
    let status = Conn::start(
        std::os::unix::net::UnixStream::connect(&socket).expect("connect"),
        stats.clone(),
    );
    hello(&status).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !joined(&status).await {
        assert!(
            Instant::now() < deadline,
            "the daemon never connected to the joined mesh"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(status);
    println!(
        "claudemeshd pid {pid}: its local mesh and one joined mesh ({url}), {seconds} s per phase"
    );
    // Let the start settle (reconnects, first checkpoints).
    tokio::time::sleep(Duration::from_secs(3)).await;
    phase("no sessions", pid, seconds).await;

    let mut connectors = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let c = connector_session(&socket);
        let conn = Conn::start(c.stream.try_clone().expect("clone"), stats.clone());
        hello(&conn).await;
        let attached = conn
            .request(Request::Attach(AttachArgs {
                cwd: format!("/tmp/bench/idle-{i}"),
                claude_pid: c.pid,
                display_name: Some(format!("idle-{i}")),
                mesh: Some(if i % 2 == 0 { "local" } else { "team" }.into()),
                groups: Vec::new(),
                transient: false,
                transcript_path: None,
            }))
            .await;
        assert!(
            matches!(attached, Ok(Response::Attached(_))),
            "attach: {attached:?}"
        );
        connectors.push((c, conn));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    phase(&format!("{sessions} idle sessions"), pid, seconds).await;

    for (mut c, _) in connectors {
        let _ = c.child.kill();
        let _ = c.child.wait();
    }
    daemon.stop();
    broker.shutdown().await;
}

async fn hello(conn: &Conn) {
    let r = conn
        .request(Request::Hello {
            protocol: IPC_VERSION,
            client: "bench-idle".into(),
        })
        .await;
    assert!(r.is_ok(), "hello: {r:?}");
}

/// Whether the daemon's status shows the joined mesh connected.
async fn joined(conn: &Conn) -> bool {
    match conn.request(Request::DaemonStatus).await {
        Ok(Response::DaemonStatus(s)) => s
            .meshes
            .iter()
            .any(|m| m.slug == "team" && m.link == LinkState::Connected),
        _ => false,
    }
}
