//! The file keystore for real: files on disk, their permissions, and the
//! `CLAUDEMESH_KEYSTORE` variable (read in a child process, since tests run
//! in parallel threads of one process and share its environment).
#![cfg(feature = "keys")]

use std::path::Path;
use std::process::{Command, Output};

use claudemesh_daemon::keystore::{Keystore, KeystoreChoice, KeystoreError, KeystoreKind};
use claudemesh_daemon::paths::Paths;
use claudemesh_protocol::MemberSecretKey;

fn paths_in(dir: &Path) -> Paths {
    Paths {
        config_dir: dir.join("config"),
        data_dir: dir.join("data"),
        runtime_dir: dir.join("run"),
    }
}

fn key(n: u8) -> MemberSecretKey {
    MemberSecretKey::from_seed(&[n; 32])
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn round_trip_in_private_files() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = paths_in(tmp.path());
    let ks = Keystore::open_with(&paths, KeystoreChoice::File).unwrap();
    assert_eq!(ks.kind(), KeystoreKind::File);
    assert_eq!(ks.kind().to_string(), "file");
    assert!(ks.durable());
    assert!(
        ks.warning().is_none(),
        "files were asked for: no fallback notice"
    );
    assert!(
        ks.location()
            .contains(&paths.key_file_dir().display().to_string())
    );

    assert!(ks.load("mesh-1").unwrap().is_none());
    let k = key(42);
    ks.store("mesh-1", &k).unwrap();

    let file = paths.key_file_dir().join("mesh-1.key");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text, format!("{}\n", "2a".repeat(32)));
    #[cfg(unix)]
    {
        assert_eq!(mode(&paths.key_file_dir()), 0o700);
        assert_eq!(mode(&file), 0o600);
    }

    let back = ks.load("mesh-1").unwrap().unwrap();
    assert_eq!(back.public_key(), k.public_key());
    assert_eq!(*back.seed(), *k.seed());

    // A second keystore over the same directory sees it (it is on disk).
    let again = Keystore::open_with(&paths, KeystoreChoice::File).unwrap();
    assert_eq!(
        again.load("mesh-1").unwrap().unwrap().public_key(),
        k.public_key()
    );

    // Replacing keeps one file, still 0600; nothing else is left behind.
    ks.store("mesh-1", &key(43)).unwrap();
    assert_eq!(*ks.load("mesh-1").unwrap().unwrap().seed(), [43; 32]);
    #[cfg(unix)]
    assert_eq!(mode(&file), 0o600);
    let names: Vec<_> = std::fs::read_dir(paths.key_file_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["mesh-1.key"]);

    ks.delete("mesh-1").unwrap();
    assert!(!file.exists());
    assert!(ks.load("mesh-1").unwrap().is_none());
    ks.delete("mesh-1").unwrap();
    ks.delete("never-stored").unwrap();
}

#[test]
fn accounts_with_odd_characters_get_their_own_files() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = paths_in(tmp.path());
    let ks = Keystore::open_with(&paths, KeystoreChoice::File).unwrap();
    ks.store("Mesh.A", &key(1)).unwrap();
    ks.store("mesh.a", &key(2)).unwrap();
    ks.store("~.x", &key(3)).unwrap();
    assert_eq!(*ks.load("Mesh.A").unwrap().unwrap().seed(), [1; 32]);
    assert_eq!(*ks.load("mesh.a").unwrap().unwrap().seed(), [2; 32]);
    assert_eq!(*ks.load("~.x").unwrap().unwrap().seed(), [3; 32]);
    let mut names: Vec<String> = std::fs::read_dir(paths.key_file_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["%4Desh%2E%41.key", "%7E%2Ex.key", "mesh%2Ea.key"]);

    for bad in ["../escape", "a/b", "..", "a\\b"] {
        let err = ks.store(bad, &key(9)).unwrap_err();
        assert!(matches!(err, KeystoreError::InvalidAccount { .. }), "{err}");
    }
    assert!(!tmp.path().join("data/escape.key").exists());
}

#[cfg(unix)]
#[test]
fn key_files_open_to_others_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = paths_in(tmp.path());
    let ks = Keystore::open_with(&paths, KeystoreChoice::File).unwrap();
    ks.store("mesh-2", &key(7)).unwrap();
    let file = paths.key_file_dir().join("mesh-2.key");
    let secret_hex = "07".repeat(32);

    for loose in [0o640, 0o604, 0o660, 0o644] {
        chmod(&file, loose);
        let err = ks.load("mesh-2").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, KeystoreError::UnsafeKeyFile { .. }), "{text}");
        assert!(text.contains(&format!("{loose:03o}")), "{text}");
        assert!(text.contains("chmod 600"), "{text}");
        assert!(text.contains(&file.display().to_string()), "{text}");
        assert!(!text.contains(&secret_hex), "{text}");
    }
    chmod(&file, 0o600);
    assert_eq!(*ks.load("mesh-2").unwrap().unwrap().seed(), [7; 32]);
    // 0400 (read-only for the owner) is private too.
    chmod(&file, 0o400);
    assert_eq!(*ks.load("mesh-2").unwrap().unwrap().seed(), [7; 32]);
}

#[cfg(unix)]
#[test]
fn symlinked_key_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = paths_in(tmp.path());
    let ks = Keystore::open_with(&paths, KeystoreChoice::File).unwrap();
    let elsewhere = tmp.path().join("elsewhere.key");
    std::fs::write(&elsewhere, format!("{}\n", "11".repeat(32))).unwrap();
    chmod(&elsewhere, 0o600);
    std::os::unix::fs::symlink(&elsewhere, paths.key_file_dir().join("mesh-3.key")).unwrap();
    let err = ks.load("mesh-3").unwrap_err();
    assert!(matches!(err, KeystoreError::UnsafeKeyFile { .. }), "{err}");
}

#[cfg(unix)]
#[test]
fn a_loose_key_directory_is_tightened_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = paths_in(tmp.path());
    std::fs::create_dir_all(paths.key_file_dir()).unwrap();
    chmod(&paths.key_file_dir(), 0o755);
    Keystore::open_with(&paths, KeystoreChoice::File).unwrap();
    assert_eq!(mode(&paths.key_file_dir()), 0o700);
}

#[test]
fn a_corrupt_key_file_is_a_clear_error_without_its_contents() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = paths_in(tmp.path());
    let ks = Keystore::open_with(&paths, KeystoreChoice::File).unwrap();
    ks.store("mesh-4", &key(4)).unwrap();
    let file = paths.key_file_dir().join("mesh-4.key");
    let junk = "not-hex-but-private-looking-0123456789";
    std::fs::write(&file, junk).unwrap();
    let err = ks.load("mesh-4").unwrap_err();
    let text = format!("{err} / {err:?}");
    assert!(matches!(err, KeystoreError::Corrupt { .. }), "{text}");
    assert!(text.contains("join the mesh again"), "{text}");
    assert!(!text.contains(junk), "{text}");
}

// --- CLAUDEMESH_KEYSTORE, in child processes --------------------------------

/// Marks the child process and says which scenario it runs.
const CHILD_ENV: &str = "CLAUDEMESH_KEYSTORE_FILE_TEST_CHILD";

/// Runs `child_entry` of this test binary in a child process with the given
/// environment (the claudemesh variables of this process are cleared first).
fn run_child(scenario: &str, dir: &Path, env: &[(&str, Option<&str>)]) -> Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, scenario)
        .env("CLAUDEMESH_CONFIG_DIR", dir.join("config"))
        .env("CLAUDEMESH_DATA_DIR", dir.join("data"))
        .env("CLAUDEMESH_RUNTIME_DIR", dir.join("run"))
        .env_remove("CLAUDEMESH_KEYSTORE");
    for (name, value) in env {
        match value {
            Some(v) => cmd.env(name, v),
            None => cmd.env_remove(name),
        };
    }
    let out = cmd.output().unwrap();
    eprintln!(
        "--- child {scenario}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn child_said(out: &Output, line: &str) -> bool {
    out.status.success()
        && String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == line)
}

/// Not a test of its own: the body of the child processes started above.
/// Without the marker variable it returns at once.
#[test]
fn child_entry() {
    let Ok(scenario) = std::env::var(CHILD_ENV) else {
        return;
    };
    // libtest has printed "test child_entry ... " without a newline.
    println!();
    let paths = Paths::from_env().unwrap();
    match Keystore::open(&paths) {
        Ok(ks) => {
            ks.store("mesh-env", &key(5)).unwrap();
            assert_eq!(*ks.load("mesh-env").unwrap().unwrap().seed(), [5; 32]);
            println!("CHILD {scenario} kind={}", ks.kind());
            if let Some(w) = ks.warning() {
                println!("CHILD {scenario} warning={w}");
            }
        }
        Err(e) => println!("CHILD {scenario} error={e}"),
    }
}

#[test]
fn env_file_forces_the_file_backend() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_child("file", tmp.path(), &[("CLAUDEMESH_KEYSTORE", Some("file"))]);
    assert!(child_said(&out, "CHILD file kind=file"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("warning="));
    assert!(tmp.path().join("data/keys/mesh-env.key").exists());
}

#[test]
fn env_with_an_unknown_value_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_child(
        "bad",
        tmp.path(),
        &[("CLAUDEMESH_KEYSTORE", Some("keyutils"))],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("CHILD bad error=CLAUDEMESH_KEYSTORE=\"keyutils\" is not understood"),
        "{stdout}"
    );
    assert!(!tmp.path().join("data/keys").exists());
}

/// A session bus address that leads nowhere: no Secret Service.
#[cfg(target_os = "linux")]
const NO_BUS: (&str, Option<&str>) = (
    "DBUS_SESSION_BUS_ADDRESS",
    Some("unix:path=/nonexistent/claudemesh-test/bus"),
);

#[cfg(target_os = "linux")]
#[test]
fn env_os_without_a_keyring_fails_with_advice() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_child(
        "os",
        tmp.path(),
        &[("CLAUDEMESH_KEYSTORE", Some("os")), NO_BUS],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(
            "CHILD os error=CLAUDEMESH_KEYSTORE=os, but no durable OS keyring is reachable"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("Secret Service"), "{stdout}");
    assert!(stdout.contains("CLAUDEMESH_KEYSTORE=file"), "{stdout}");
    assert!(!tmp.path().join("data/keys").exists(), "no silent fallback");
}

#[cfg(target_os = "linux")]
#[test]
fn env_unset_without_a_keyring_falls_back_to_files_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run_child("auto", tmp.path(), &[NO_BUS]);
    assert!(child_said(&out, "CHILD auto kind=file"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let warning = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CHILD auto warning="))
        .expect("a fallback warning");
    assert!(
        warning.contains("No durable OS keyring is reachable"),
        "{warning}"
    );
    assert!(warning.contains("readable only by you"), "{warning}");
    assert!(
        warning.contains(&tmp.path().join("data/keys").display().to_string()),
        "{warning}"
    );
    assert!(tmp.path().join("data/keys/mesh-env.key").exists());
}
