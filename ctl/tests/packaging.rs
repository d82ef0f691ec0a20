//! `packaging/install.sh`: options, and installing prebuilt binaries
//! (`--from`, `--no-start`) into a prefix. The full quickstart (build,
//! start, register) needs the real daemon: the end-to-end suite runs it.

#![cfg(unix)]

mod common;

use std::path::Path;
use std::process::Command;

use common::script;

fn install_sh() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/install.sh")
}

#[test]
fn install_sh_installs_the_four_binaries_into_the_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let from = tmp.path().join("from");
    let bins = [
        "claudemeshd",
        "claudemesh-shim",
        "claudemesh-ctl",
        "claudemesh-broker",
    ];
    for b in bins {
        script(&from.join(b), &format!("echo {b}"));
    }
    let prefix = tmp.path().join("prefix");
    let out = Command::new("sh")
        .arg(install_sh())
        .args([
            "--prefix",
            prefix.to_str().unwrap(),
            "--from",
            from.to_str().unwrap(),
            "--no-start",
        ])
        .env("HOME", tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for b in bins {
        let p = prefix.join("bin").join(b);
        let run = Command::new(&p).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), b);
    }
    assert!(stdout.contains("installed"), "{stdout}");
    assert!(stderr.contains("not on your PATH"), "{stderr}");

    // A missing binary is an error that names it.
    std::fs::remove_file(from.join("claudemesh-shim")).unwrap();
    let out = Command::new("sh")
        .arg(install_sh())
        .args([
            "--prefix",
            prefix.to_str().unwrap(),
            "--from",
            from.to_str().unwrap(),
            "--no-start",
        ])
        .env("HOME", tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("claudemesh-shim is missing"));
}

#[test]
fn install_sh_rejects_unknown_options() {
    let out = Command::new("sh")
        .arg(install_sh())
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let help = Command::new("sh")
        .arg(install_sh())
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--prefix DIR"));
}
