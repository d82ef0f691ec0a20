//! Finding the workspace's binaries. Integration tests only get
//! `CARGO_BIN_EXE_*` for their own package, so the harness looks in the
//! target directory this test binary was built into, and builds the
//! binaries there once if they are missing (e.g. `cargo test -p
//! claudemesh-e2e` on a clean tree).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const BROKER: &str = "claudemesh-broker";
pub const DAEMON: &str = "claudemeshd";
pub const SHIM: &str = "claudemesh-shim";
pub const CTL: &str = "claudemesh-ctl";

/// `target/<profile>`: the test executable lives in `target/<profile>/deps`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps")
        .to_path_buf()
}

/// The path of a workspace binary, built on first use if absent.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let path = profile_dir().join(name);
    if !path.exists() {
        BUILT.get_or_init(build_all);
    }
    assert!(
        path.exists(),
        "{} is missing even after `cargo build --bins`",
        path.display()
    );
    path
}

fn build_all() {
    let release = profile_dir().file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--workspace", "--bins"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    // The test's own CARGO_PKG_*/CARGO_MANIFEST_* would look like a changed
    // environment to build scripts (ring's), and rebuild them needlessly.
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_PKG_") || key.starts_with("CARGO_MANIFEST_") {
            cmd.env_remove(key);
        }
    }
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("cargo runs");
    assert!(status.success(), "building the workspace binaries failed");
}
