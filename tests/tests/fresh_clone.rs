//! The README's test command on a fresh clone with a clean HOME: a new
//! `git clone` of the committed tree, `./test.sh --provision` run with an
//! emptied environment (only PATH, and npm's download cache so that the
//! pinned clients are not fetched again), must provision everything the
//! tests need by itself: the Debian packages (present here, so nothing to
//! install) and both pinned Claude Code versions with the MCP SDK. The rest
//! of `./test.sh` (fmt, clippy, `cargo test --workspace`) is this very run.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

fn installed_version(clone: &Path, package: &str) -> Option<String> {
    let manifest = clone
        .join("tests/js/node_modules")
        .join(package)
        .join("package.json");
    let text = std::fs::read_to_string(manifest).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["version"].as_str().map(str::to_owned)
}

fn pinned_versions(root: &Path) -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(root.join("tests/js/package.json")).expect("tests/js/package.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("package.json is JSON");
    v["dependencies"]
        .as_object()
        .expect("dependencies")
        .iter()
        .map(|(name, spec)| {
            let spec = spec.as_str().unwrap_or_default();
            // An alias pins `npm:<package>@<version>`.
            let version = spec.rsplit('@').next().unwrap_or(spec).to_owned();
            (name.clone(), version)
        })
        .collect()
}

#[test]
fn a_fresh_clone_provisions_what_the_tests_need() {
    let root = repo_root();
    let inside = Command::new("git")
        .args(["rev-parse", "--is-inside-work-tree"])
        .current_dir(&root)
        .output()
        .expect("git runs");
    assert!(
        inside.status.success(),
        "{} is not a git checkout: the README's commands start from a clone",
        root.display()
    );
    let scratch = tempfile::tempdir().expect("temp dir");
    let clone = scratch.path().join("claudemesh");
    let cloned = Command::new("git")
        .args(["clone", "--quiet", "--no-hardlinks"])
        .arg(&root)
        .arg(&clone)
        .status()
        .expect("git clone runs");
    assert!(cloned.success(), "git clone of {} failed", root.display());

    let home = scratch.path().join("home");
    std::fs::create_dir(&home).expect("fresh HOME");
    let npm_cache = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".npm"))
        .unwrap_or_else(|| scratch.path().join("npm-cache"));
    let out = Command::new(clone.join("test.sh"))
        .arg("--provision")
        .env_clear()
        .env("HOME", &home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("npm_config_cache", &npm_cache)
        .current_dir(&clone)
        .output()
        .expect("test.sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "./test.sh --provision failed in a fresh clone:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("== durations"), "{stdout}");

    for (package, version) in pinned_versions(&root) {
        assert_eq!(
            installed_version(&clone, &package).as_deref(),
            Some(version.as_str()),
            "{package} is pinned at {version} but the fresh clone has another or none"
        );
    }
}
