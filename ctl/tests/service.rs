//! The systemd unit passes `systemd-analyze verify`, and `service install`
//! without a user manager writes the unit and prints the commands.

#![cfg(unix)]

mod common;

use std::process::Command;

use common::{Home, script};

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let Ok(which) = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
    else {
        panic!("cannot run sh");
    };
    assert!(
        which.status.success(),
        "systemd-analyze is missing: install the Debian package `systemd` (apt-get install -y systemd)"
    );
    let home = Home::new();
    // `verify` checks that ExecStart's binary exists: give it a real one.
    let daemon = home.root().join("bin").join("claudemeshd");
    script(&daemon, "exit 0");
    let run = home.run([
        "service",
        "print",
        "--flavor",
        "systemd",
        "--daemon",
        daemon.to_str().unwrap(),
    ]);
    run.assert_code(0);
    assert!(
        run.stdout
            .contains(&format!("ExecStart={} run\n", daemon.display()))
    );
    let unit = home.root().join("claudemeshd.service");
    std::fs::write(&unit, &run.stdout).unwrap();
    // A user manager's paths need a runtime directory.
    let xdg = home.root().join("xdg-run");
    std::fs::create_dir_all(&xdg).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--user"])
        .arg(&unit)
        .env("XDG_RUNTIME_DIR", &xdg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // verify exits 0 on unknown keys and bad values (it ignores them), so
    // any complaint about our file fails the test.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("claudemeshd"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze complained:\n{stderr}");
}

#[test]
fn service_install_without_a_user_manager_writes_the_unit_and_prints_the_commands() {
    if !cfg!(target_os = "linux") {
        return;
    }
    let mut home = Home::new();
    let bin = home.root().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // No systemctl on this PATH.
    home.path_env = Some(bin.to_string_lossy().into_owned());
    let daemon = bin.join("claudemeshd");
    script(&daemon, "exit 0");
    home.env("CLAUDEMESH_BROKER_URL", "wss://mesh.example.com/ws");
    let run = home.run(["service", "install", "--daemon", daemon.to_str().unwrap()]);
    // Written but not started: exit 1, and the way that works is offered.
    run.assert_code(1);
    assert!(
        run.stdout.contains("claudemesh-ctl daemon start"),
        "{}",
        run.stdout
    );
    let unit = home
        .root()
        .join("xdg-config/systemd/user/claudemeshd.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains(&format!("ExecStart={} run", daemon.display())));
    assert!(text.contains("Environment=\"CLAUDEMESH_BROKER_URL=wss://mesh.example.com/ws\""));
    assert!(run.stderr.contains("systemctl"), "{}", run.stderr);
    assert!(
        run.stdout.contains("systemctl --user daemon-reload"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("systemctl --user enable --now claudemeshd"),
        "{}",
        run.stdout
    );

    // And it goes again.
    home.run(["service", "uninstall"]).assert_code(0);
    assert!(!unit.exists());
}
