//! The real Secret Service backend, through a real gnome-keyring.
//!
//! The test runs its body in a child process with `CLAUDEMESH_KEYSTORE=os`:
//! directly when `DBUS_SESSION_BUS_ADDRESS` is set (a desktop session, whose
//! keyring must then be unlocked), otherwise under
//! `tests/with-secret-service.sh`, which starts a private session bus and a
//! throwaway unlocked gnome-keyring. So a plain `cargo test` exercises the
//! real backend wherever the packages are installed. Without them it fails
//! and names the packages (`./test.sh` installs them as root). There is no
//! way to skip it: a missing prerequisite must not look like a pass.
#![cfg(all(feature = "keys", target_os = "linux"))]

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use claudemesh_daemon::keystore::{Keystore, KeystoreChoice, KeystoreKind, SERVICE};
use claudemesh_daemon::paths::Paths;
use claudemesh_protocol::MemberSecretKey;
use keyring_core::Entry;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/with-secret-service.sh");
const CHILD_ENV: &str = "CLAUDEMESH_SECRET_SERVICE_TEST_CHILD";
const PACKAGES: &str = "apt-get install -y --no-install-recommends dbus gnome-keyring";

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

#[test]
fn secret_service_round_trip() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let has_session = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|v| !v.is_empty());
    let mut cmd = if has_session {
        Command::new(&exe)
    } else {
        let missing: Vec<&str> = ["dbus-run-session", "dbus-send", "gnome-keyring-daemon"]
            .into_iter()
            .filter(|tool| !on_path(tool))
            .collect();
        assert!(
            missing.is_empty(),
            "the Secret Service keystore test needs {} (not found on PATH). Install them with\n    \
             {PACKAGES}\n(./test.sh does it when run as root).",
            missing.join(", ")
        );
        let mut cmd = Command::new("bash");
        cmd.arg(SCRIPT).arg(&exe);
        cmd
    };
    cmd.args([
        "--exact",
        "secret_service_round_trip",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, "1")
    .env("CLAUDEMESH_KEYSTORE", "os")
    .env("CLAUDEMESH_CONFIG_DIR", tmp.path().join("config"))
    .env("CLAUDEMESH_DATA_DIR", tmp.path().join("data"))
    .env("CLAUDEMESH_RUNTIME_DIR", tmp.path().join("run"));
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "--- child ({}): {}\n{stdout}{}",
        if has_session {
            "existing D-Bus session"
        } else {
            "with-secret-service.sh"
        },
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the Secret Service child failed");
    assert!(
        stdout.lines().any(|l| l == "SECRET-SERVICE-OK"),
        "the child did not run its checks"
    );
}

/// The checks, inside a D-Bus session with an unlocked Secret Service.
fn child() {
    // libtest has printed "test secret_service_round_trip ... " without a newline.
    println!();
    let paths = Paths::from_env().unwrap();
    let ks = Keystore::open(&paths).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ks.kind(), KeystoreKind::SecretService);
    assert_eq!(ks.kind().to_string(), "secret-service");
    assert!(ks.durable());
    assert!(ks.warning().is_none());

    // Unset CLAUDEMESH_KEYSTORE chooses it too, with no notice.
    let auto = Keystore::open_with(&paths, KeystoreChoice::Auto).unwrap();
    assert_eq!(auto.kind(), KeystoreKind::SecretService);
    assert!(auto.warning().is_none());

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let account = format!("claudemesh-test-{}-{nanos}", std::process::id());
    let key = MemberSecretKey::generate().unwrap();

    assert!(ks.load(&account).unwrap().is_none());
    ks.store(&account, &key).unwrap();
    let back = ks.load(&account).unwrap().expect("the stored key");
    assert_eq!(back.public_key(), key.public_key());
    assert_eq!(*back.seed(), *key.seed());

    // It is in the Secret Service itself, as service "claudemesh", account
    // = the mesh id, secret = the hex seed; a fresh connection reads it.
    let raw_store: std::sync::Arc<keyring_core::CredentialStore> =
        dbus_secret_service_keyring_store::Store::new().unwrap();
    let raw = Entry::new_in_store(&raw_store, SERVICE, &account)
        .unwrap()
        .get_secret()
        .unwrap();
    let hex: String = key.seed().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(raw, hex.as_bytes());
    let other = Keystore::open_with(&paths, KeystoreChoice::Os).unwrap();
    assert_eq!(
        other.load(&account).unwrap().unwrap().public_key(),
        key.public_key()
    );
    // Nothing went to the file store.
    assert!(no_key_files(&paths.key_file_dir()));

    // Replacing, then deleting (twice: a missing key is fine).
    let newer = MemberSecretKey::generate().unwrap();
    ks.store(&account, &newer).unwrap();
    assert_eq!(
        other.load(&account).unwrap().unwrap().public_key(),
        newer.public_key()
    );
    ks.delete(&account).unwrap();
    assert!(ks.load(&account).unwrap().is_none());
    assert!(other.load(&account).unwrap().is_none());
    ks.delete(&account).unwrap();

    // A key left in the file store (written while no keyring was
    // reachable) moves into the Secret Service on first load.
    let files = Keystore::open_with(&paths, KeystoreChoice::File).unwrap();
    files.store(&account, &key).unwrap();
    assert!(!no_key_files(&paths.key_file_dir()));
    assert_eq!(
        ks.load(&account).unwrap().unwrap().public_key(),
        key.public_key()
    );
    assert!(no_key_files(&paths.key_file_dir()));
    assert_eq!(
        other.load(&account).unwrap().unwrap().public_key(),
        key.public_key()
    );
    ks.delete(&account).unwrap();
    assert!(other.load(&account).unwrap().is_none());

    println!("SECRET-SERVICE-OK");
}

fn no_key_files(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.count() == 0,
        Err(_) => true,
    }
}
