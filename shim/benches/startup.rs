//! How quickly the shim answers `initialize`, and how much memory it holds
//! while idle. Prints the figures; asserts nothing.
//!
//!     cargo bench -p claudemesh-shim --bench startup
//!
//! Each run spawns the release binary, writes `initialize`, and times the
//! moment from spawn to the answer (process start included). After
//! `notifications/initialized` the shim idles for a second and its VmRSS is
//! read from /proc (Linux).
//!
//! Two setups:
//! - "no daemon": the daemon executable does not exist, so the background
//!   attach fails at once; `initialize` never waits on the daemon anyway;
//! - "attached": a real `claudemeshd` (target/release/claudemeshd, built by
//!   `cargo build --release -p claudemesh-daemon` beforehand; skipped if
//!   absent) runs in a temporary home, and each shim attaches to it and
//!   answers a `list_peers` call before the RSS is read.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 30;

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is ignored.
    let shim = PathBuf::from(env!("CARGO_BIN_EXE_claudemesh-shim"));
    let home = tempfile::tempdir().expect("a temp dir");
    println!(
        "claudemesh-shim startup ({RUNS} runs each), {}",
        shim.display()
    );

    let missing = home.path().join("no-such-claudemeshd");
    bench("no daemon", &shim, home.path(), &missing, false);

    let daemon = shim.with_file_name("claudemeshd");
    if daemon.exists() {
        let mut d = start_daemon(&daemon, home.path());
        bench("attached", &shim, home.path(), &daemon, true);
        let _ = d.kill();
        let _ = d.wait();
    } else {
        println!(
            "attached: skipped ({} not built: cargo build --release -p claudemesh-daemon)",
            daemon.display()
        );
    }
}

fn bench(label: &str, shim: &Path, home: &Path, daemon: &Path, call_tool: bool) {
    let mut init = Vec::new();
    let mut first_call = Vec::new();
    let mut rss = Vec::new();
    for i in 0..RUNS {
        let mut cmd = Command::new(shim);
        env(&mut cmd, home, daemon);
        cmd.env("CLAUDEMESH_DISPLAY_NAME", format!("bench-{i}"));
        let start = Instant::now();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the shim starts");
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        send(
            &mut stdin,
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}}"#,
        );
        wait_for_id(&mut stdout, 1);
        init.push(start.elapsed());
        send(
            &mut stdin,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        );
        if call_tool {
            let t = Instant::now();
            send(
                &mut stdin,
                r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"list_peers","arguments":{}}}"#,
            );
            let answer = wait_for_id(&mut stdout, 2);
            assert!(
                !answer.contains("\"isError\":true"),
                "list_peers failed: {answer}"
            );
            first_call.push(t.elapsed());
        }
        std::thread::sleep(Duration::from_secs(1));
        if let Some(kb) = vm_rss_kb(child.id()) {
            rss.push(kb);
        }
        drop(stdin);
        finish(child);
    }
    println!("{label}: initialize answered in {}", summary_ms(&mut init));
    if !first_call.is_empty() {
        println!(
            "{label}: first list_peers (after initialize) in {}",
            summary_ms(&mut first_call)
        );
    }
    if !rss.is_empty() {
        rss.sort_unstable();
        println!(
            "{label}: idle VmRSS min {:.1} MiB, median {:.1} MiB, max {:.1} MiB",
            rss[0] as f64 / 1024.0,
            rss[rss.len() / 2] as f64 / 1024.0,
            rss[rss.len() - 1] as f64 / 1024.0
        );
    }
}

fn env(cmd: &mut Command, home: &Path, daemon: &Path) {
    cmd.env("CLAUDEMESH_CONFIG_DIR", home.join("config"))
        .env("CLAUDEMESH_DATA_DIR", home.join("data"))
        .env("CLAUDEMESH_RUNTIME_DIR", home.join("run"))
        .env("CLAUDEMESH_KEYSTORE", "file")
        .env("CLAUDEMESH_DAEMON", daemon)
        .env_remove("CLAUDEMESH_DEBUG")
        .env_remove("CLAUDEMESH_BROKER_URL");
}

fn start_daemon(daemon: &Path, home: &Path) -> Child {
    let mut cmd = Command::new(daemon);
    env(&mut cmd, home, daemon);
    let child = cmd
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("claudemeshd starts");
    let socket = home.join("run").join("claudemeshd.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn send(stdin: &mut ChildStdin, line: &str) {
    stdin.write_all(line.as_bytes()).unwrap();
    stdin.write_all(b"\n").unwrap();
    stdin.flush().unwrap();
}

fn wait_for_id(stdout: &mut BufReader<ChildStdout>, id: u64) -> String {
    let needle = format!("\"id\":{id}");
    let mut line = String::new();
    loop {
        line.clear();
        let n = stdout.read_line(&mut line).expect("the shim writes");
        assert!(n > 0, "the shim closed stdout before answering {id}");
        if line.contains(&needle) {
            return line.clone();
        }
    }
}

fn finish(mut child: Child) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn vm_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn summary_ms(samples: &mut [Duration]) -> String {
    samples.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let n = samples.len();
    format!(
        "min {:.1} ms, median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        ms(samples[0]),
        ms(samples[n / 2]),
        ms(samples[(n * 9 / 10).min(n - 1)]),
        ms(samples[n - 1])
    )
}
