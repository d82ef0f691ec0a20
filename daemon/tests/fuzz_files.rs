//! Bounded fuzzing (proptest, a few hundred cases per run) of the files
//! the daemon reads that a person or another program may have damaged:
//! the config file and the key files. Whatever bytes they hold, reading
//! them gives a clear error that names the file (or a valid value), never
//! a panic, and changes nothing on disk.

use std::path::Path;

use claudemesh_daemon::config::{Config, ConfigError};
use claudemesh_daemon::keystore::{Keystore, KeystoreChoice, KeystoreError};
use claudemesh_daemon::paths::Paths;
use claudemesh_protocol::MemberSecretKey;
use proptest::prelude::*;

fn paths_in(dir: &Path) -> Paths {
    Paths {
        config_dir: dir.join("c"),
        data_dir: dir.join("d"),
        runtime_dir: dir.join("r"),
    }
}

/// Every file under `dir` with its bytes, sorted by path.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Bytes that look like a config often enough to get past the JSON
/// tokenizer: fragments of the real format glued together at random.
fn config_like() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(",".to_owned()),
        Just(":".to_owned()),
        Just("\"version\"".to_owned()),
        Just("\"meshes\"".to_owned()),
        Just("\"meshId\"".to_owned()),
        Just("\"slug\"".to_owned()),
        Just("\"brokerUrl\"".to_owned()),
        Just("\"joinedAt\"".to_owned()),
        Just("\"local\"".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "\"[^\"\\\\]{0,12}\"",
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|p| p.concat().into_bytes())
}

fn check_config(bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, bytes).unwrap();
    let before = snapshot(dir.path());
    match Config::load(&path) {
        Ok(_) => {}
        Err(e @ (ConfigError::Corrupt { .. } | ConfigError::NewerVersion { .. })) => {
            let text = e.to_string();
            prop_assert!(text.contains(&path.display().to_string()), "{}", text);
            prop_assert!(text.contains("untouched"), "{}", text);
        }
        Err(other) => prop_assert!(false, "a readable file gave {}", other),
    }
    prop_assert_eq!(snapshot(dir.path()), before);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_bytes_in_the_config_file_give_a_clear_error(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_config(&bytes)?;
    }

    #[test]
    fn config_shaped_garbage_gives_a_clear_error(bytes in config_like()) {
        check_config(&bytes)?;
    }

    #[test]
    fn any_bytes_in_a_key_file_give_a_clear_error(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let dir = tempfile::tempdir().unwrap();
        let paths = paths_in(dir.path());
        let keystore = Keystore::open_with(&paths, KeystoreChoice::File).unwrap();
        keystore.store("mesh-1", &MemberSecretKey::from_seed(&[7; 32])).unwrap();
        let files = snapshot(&paths.key_file_dir());
        prop_assert_eq!(files.len(), 1);
        let key_file = &files[0].0;
        // Overwritten in place: the file keeps its private mode.
        std::fs::write(key_file, &bytes).unwrap();
        let before = snapshot(dir.path());
        match keystore.load("mesh-1") {
            Ok(Some(_)) => {
                let text = String::from_utf8_lossy(&bytes);
                prop_assert_eq!(text.trim().len(), 64, "accepted {:?}", bytes);
            }
            Ok(None) => prop_assert!(false, "the key file was not seen"),
            Err(e @ KeystoreError::Corrupt { .. }) => {
                let text = e.to_string();
                prop_assert!(text.contains(key_file.as_str()), "{}", text);
            }
            Err(other) => prop_assert!(false, "a private key file gave {}", other),
        }
        prop_assert_eq!(snapshot(dir.path()), before);
    }
}
