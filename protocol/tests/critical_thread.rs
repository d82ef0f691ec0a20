//! A critical thread that panics takes its process down with status 70.
//! The process under test is this test binary itself, run again with
//! `CRITICAL_THREAD_CHILD` set so that only the helper test below acts.

use std::process::Command;

use claudemesh_protocol::critical_thread::{self, EXIT_THREAD_DIED};

const CHILD: &str = "CRITICAL_THREAD_CHILD";

#[test]
fn helper_panics_in_a_critical_thread() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let thread =
        critical_thread::spawn("test-writer", || panic!("the disk is on fire")).expect("spawn");
    let _ = thread.join();
    // Reached only if the panic did not end the process.
    std::process::exit(0);
}

#[test]
fn a_panicking_critical_thread_ends_the_process() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_panics_in_a_critical_thread",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .output()
        .expect("run the helper");
    assert_eq!(out.status.code(), Some(EXIT_THREAD_DIED), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("test-writer thread died"), "{stderr}");
}

#[test]
fn a_critical_thread_that_returns_leaves_the_process_alone() {
    let thread = critical_thread::spawn("test-ok", || {}).expect("spawn");
    assert!(thread.join().is_ok());
}
