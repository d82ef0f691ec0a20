//! `claudemesh-ctl status` run by another user against a running daemon
//! (its directory modes loosened so that the socket is reachable at all):
//! the daemon refuses the connection with a `forbidden` frame, and ctl
//! says so, with what to do, instead of "lost the connection".

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use claudemesh_e2e::bins;
use claudemesh_e2e::home::Home;
use claudemesh_e2e::wait;

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

fn loosen(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn ctl_status_as_another_user_says_forbidden() {
    if !running_as_root() || !Path::new("/usr/bin/setpriv").exists() {
        // CI runs as root with util-linux installed: there the check must run.
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI this test needs root and /usr/bin/setpriv"
        );
        eprintln!("skipped: needs root and setpriv to act as another user");
        return;
    }
    let home = Home::new("owner");
    let _daemon = home.start_daemon(&["--no-local"]);
    let socket = home.runtime_dir().join("claudemeshd.sock");
    wait::until("the daemon's socket", wait::DEFAULT, || {
        socket.exists().then_some(())
    });
    // Reachable by anyone: the uid check alone must refuse.
    for dir in [home.path(), home.runtime_dir().as_path()] {
        loosen(dir, 0o755);
    }
    loosen(&socket, 0o777);

    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(bins::bin(bins::CTL))
        .arg("status");
    for (k, v) in home.env() {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run claudemesh-ctl as nobody");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("forbidden"), "{stderr}");
    assert!(
        stderr.contains("only the user that runs it"),
        "the fix is named: {stderr}"
    );
    assert!(!stderr.contains("lost the connection"), "{stderr}");
}
