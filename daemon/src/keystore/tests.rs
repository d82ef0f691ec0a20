//! Unit tests of the keystore over `keyring_core::mock` and small stores
//! that fail or hang on purpose. The real backends are exercised by
//! `tests/keystore_file.rs` and `tests/keystore_secret_service.rs`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keyring_core::api::{CredentialApi, CredentialStoreApi};
use keyring_core::{Credential, CredentialPersistence, Entry, Error, mock};

use super::*;

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

fn seed_hex(key: &MemberSecretKey) -> String {
    encode_seed(&key.seed()).to_string()
}

fn mock_store() -> Arc<CredentialStore> {
    mock::Store::new().unwrap()
}

/// A keystore over the in-memory mock (standing in for Secret Service,
/// which the unit tests cannot reach), in a private temporary home.
fn mock_keystore() -> (tempfile::TempDir, Arc<CredentialStore>, Keystore) {
    let tmp = tempfile::tempdir().unwrap();
    let store = mock_store();
    let ks = Keystore::with_store(
        &paths_in(tmp.path()),
        KeystoreKind::SecretService,
        store.clone(),
    )
    .unwrap();
    (tmp, store, ks)
}

fn raw_get(store: &Arc<CredentialStore>, account: &str) -> Option<Vec<u8>> {
    match Entry::new_in_store(store, SERVICE, account)
        .unwrap()
        .get_secret()
    {
        Ok(v) => Some(v),
        Err(Error::NoEntry) => None,
        Err(e) => panic!("{e}"),
    }
}

/// A store whose every call fails, or hangs for a while first.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Refuse,
    Hang(Duration),
}

#[derive(Debug)]
struct OddStore(Behaviour);

#[derive(Debug)]
struct OddCred(Behaviour);

impl OddCred {
    fn act<T>(&self) -> keyring_core::Result<T> {
        match self.0 {
            Behaviour::Refuse => Err(Error::NoStorageAccess("the collection is locked".into())),
            Behaviour::Hang(d) => {
                std::thread::sleep(d);
                Err(Error::NoEntry)
            }
        }
    }
}

impl CredentialApi for OddCred {
    fn set_secret(&self, _: &[u8]) -> keyring_core::Result<()> {
        self.act()
    }
    fn get_secret(&self) -> keyring_core::Result<Vec<u8>> {
        self.act()
    }
    fn delete_credential(&self) -> keyring_core::Result<()> {
        self.act()
    }
    fn get_credential(&self) -> keyring_core::Result<Option<Arc<Credential>>> {
        self.act()
    }
    fn get_specifiers(&self) -> Option<(String, String)> {
        None
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl CredentialStoreApi for OddStore {
    fn vendor(&self) -> String {
        "odd test store".into()
    }
    fn id(&self) -> String {
        "odd".into()
    }
    fn build(
        &self,
        _: &str,
        _: &str,
        _: Option<&HashMap<&str, &str>>,
    ) -> keyring_core::Result<Entry> {
        Ok(Entry::new_with_credential(Arc::new(OddCred(self.0))))
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn persistence(&self) -> CredentialPersistence {
        CredentialPersistence::UntilDelete
    }
}

fn odd(behaviour: Behaviour) -> OsStore {
    OsStore::new(KeystoreKind::SecretService, Arc::new(OddStore(behaviour)))
}

const QUICK: Duration = Duration::from_secs(5);

#[test]
fn kinds_display_as_documented() {
    let shown: Vec<String> = [
        KeystoreKind::SecretService,
        KeystoreKind::Keychain,
        KeystoreKind::CredentialManager,
        KeystoreKind::File,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(
        shown,
        ["secret-service", "keychain", "credential-manager", "file"]
    );
}

#[test]
fn choice_parses_the_environment_value() {
    assert_eq!(KeystoreChoice::parse(None).unwrap(), KeystoreChoice::Auto);
    assert_eq!(
        KeystoreChoice::parse(Some(" ")).unwrap(),
        KeystoreChoice::Auto
    );
    assert_eq!(
        KeystoreChoice::parse(Some("OS")).unwrap(),
        KeystoreChoice::Os
    );
    assert_eq!(
        KeystoreChoice::parse(Some("file\n")).unwrap(),
        KeystoreChoice::File
    );
    let err = KeystoreChoice::parse(Some("keyutils")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("keyutils") && text.contains("\"os\""),
        "{text}"
    );
}

#[test]
fn mock_round_trip_stores_hex_seed() {
    let (tmp, store, ks) = mock_keystore();
    assert_eq!(ks.kind(), KeystoreKind::SecretService);
    assert!(!ks.durable(), "the mock keeps keys in memory only");
    assert!(ks.warning().is_none());
    assert!(ks.location().contains("Secret Service"));

    assert!(ks.load("mesh-a").unwrap().is_none());
    let k = key(7);
    ks.store("mesh-a", &k).unwrap();
    let raw = raw_get(&store, "mesh-a").unwrap();
    assert_eq!(raw, seed_hex(&k).as_bytes());
    assert!(
        raw.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    );
    let back = ks.load("mesh-a").unwrap().unwrap();
    assert_eq!(*back.seed(), *k.seed());

    // Replacing.
    ks.store("mesh-a", &key(8)).unwrap();
    assert_eq!(*ks.load("mesh-a").unwrap().unwrap().seed(), [8; 32]);

    ks.delete("mesh-a").unwrap();
    assert!(ks.load("mesh-a").unwrap().is_none());
    ks.delete("mesh-a").unwrap();
    // The probe left nothing behind under the member-key service.
    assert!(raw_get(&store, "mesh-a").is_none());
    // Nothing touched the file store.
    assert!(!tmp.path().join("data/keys").exists());
}

#[test]
fn malformed_stored_value_is_a_clear_error_without_the_value() {
    let (_tmp, store, ks) = mock_keystore();
    let junk = "zz-not-a-seed-but-maybe-sensitive";
    Entry::new_in_store(&store, SERVICE, "mesh-b")
        .unwrap()
        .set_secret(junk.as_bytes())
        .unwrap();
    let err = ks.load("mesh-b").unwrap_err();
    assert!(matches!(err, KeystoreError::Corrupt { .. }), "{err}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains(junk), "{text}");
    assert!(
        text.contains("mesh-b") && text.contains("join the mesh again"),
        "{text}"
    );
}

#[test]
fn backend_errors_never_carry_secret_bytes() {
    let (_tmp, store, ks) = mock_keystore();
    let k = key(9);
    ks.store("mesh-c", &k).unwrap();
    let secret = seed_hex(&k);
    let entry = Entry::new_in_store(&store, SERVICE, "mesh-c").unwrap();
    let cred: &mock::Cred = entry.as_any().downcast_ref().unwrap();
    cred.set_error(Error::BadDataFormat(
        secret.as_bytes().to_vec(),
        format!("bad {secret}").into(),
    ));
    let err = ks.load("mesh-c").unwrap_err();
    cred.set_error(Error::BadEncoding(secret.as_bytes().to_vec()));
    let err2 = ks.load("mesh-c").unwrap_err();
    for text in [
        err.to_string(),
        format!("{err:?}"),
        err2.to_string(),
        format!("{err2:?}"),
        format!("{ks:?}"),
    ] {
        assert!(!text.contains(&secret), "{text}");
        assert!(
            !text.contains(&format!("{:?}", secret.as_bytes())),
            "{text}"
        );
    }
    assert!(err.to_string().contains("malformed"), "{err}");
}

#[test]
fn accounts_that_could_escape_are_refused() {
    let (_tmp, _store, ks) = mock_keystore();
    let long = "x".repeat(MAX_ACCOUNT_BYTES + 1);
    for bad in [
        "",
        "a/b",
        "a\\b",
        "..",
        "a..b",
        "a\0b",
        "a\nb",
        long.as_str(),
    ] {
        for result in [
            ks.store(bad, &key(1)).map(|_| ()),
            ks.load(bad).map(|_| ()),
            ks.delete(bad),
        ] {
            assert!(
                matches!(result, Err(KeystoreError::InvalidAccount { .. })),
                "{bad:?}: {result:?}"
            );
        }
    }
}

#[cfg(unix)]
#[test]
fn auto_falls_back_to_files_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let paths = paths_in(tmp.path());
    let ks = Keystore::open_inner(
        &paths,
        KeystoreChoice::Auto,
        || Err("there is no D-Bus session bus".to_owned()),
        QUICK,
    )
    .unwrap();
    assert_eq!(ks.kind(), KeystoreKind::File);
    assert!(ks.durable());
    let warning = ks.warning().unwrap();
    assert!(
        warning.contains("there is no D-Bus session bus"),
        "{warning}"
    );
    assert!(
        warning.contains(&paths.key_file_dir().display().to_string()),
        "{warning}"
    );
    assert!(warning.contains("readable only by you"), "{warning}");
    assert!(warning.contains("CLAUDEMESH_KEYSTORE=file"), "{warning}");
    let mode = std::fs::metadata(paths.key_file_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn auto_falls_back_when_the_keyring_refuses_the_probe() {
    let tmp = tempfile::tempdir().unwrap();
    let ks = Keystore::open_inner(
        &paths_in(tmp.path()),
        KeystoreChoice::Auto,
        || Ok(odd(Behaviour::Refuse)),
        QUICK,
    )
    .unwrap();
    assert_eq!(ks.kind(), KeystoreKind::File);
    let warning = ks.warning().unwrap();
    assert!(warning.contains("locked"), "{warning}");
}

#[test]
fn auto_falls_back_when_the_keyring_hangs() {
    let tmp = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let ks = Keystore::open_inner(
        &paths_in(tmp.path()),
        KeystoreChoice::Auto,
        || Ok(odd(Behaviour::Hang(Duration::from_secs(3)))),
        Duration::from_millis(200),
    )
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(ks.kind(), KeystoreKind::File);
    assert!(ks.warning().unwrap().contains("did not answer"));
}

#[test]
fn auto_uses_a_keyring_that_passes_the_probe() {
    let tmp = tempfile::tempdir().unwrap();
    let ks = Keystore::open_inner(
        &paths_in(tmp.path()),
        KeystoreChoice::Auto,
        || Ok(OsStore::new(KeystoreKind::Keychain, mock_store())),
        QUICK,
    )
    .unwrap();
    assert_eq!(ks.kind(), KeystoreKind::Keychain);
    assert!(ks.warning().is_none());
    assert!(!tmp.path().join("data/keys").exists());
}

#[test]
fn forced_os_without_keyring_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Keystore::open_inner(
        &paths_in(tmp.path()),
        KeystoreChoice::Os,
        || Err("there is no D-Bus session bus".to_owned()),
        QUICK,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("CLAUDEMESH_KEYSTORE=os"), "{text}");
    assert!(text.contains("there is no D-Bus session bus"), "{text}");
    assert!(text.contains("CLAUDEMESH_KEYSTORE=file"), "{text}");
    assert!(!tmp.path().join("data/keys").exists());

    let err = Keystore::open_inner(
        &paths_in(tmp.path()),
        KeystoreChoice::Os,
        || Ok(odd(Behaviour::Refuse)),
        QUICK,
    )
    .unwrap_err();
    assert!(matches!(err, KeystoreError::OsUnavailable { .. }), "{err}");
}

#[test]
fn forced_file_never_asks_the_keyring() {
    let tmp = tempfile::tempdir().unwrap();
    let ks = Keystore::open_inner(
        &paths_in(tmp.path()),
        KeystoreChoice::File,
        || panic!("the OS keyring must not be probed"),
        QUICK,
    )
    .unwrap();
    assert_eq!(ks.kind(), KeystoreKind::File);
    assert!(ks.warning().is_none());
}

#[test]
fn a_hanging_keyring_call_times_out() {
    let tmp = tempfile::tempdir().unwrap();
    let mut os = odd(Behaviour::Hang(Duration::from_secs(3)));
    os.timeout = Duration::from_millis(200);
    let ks = Keystore {
        backend: Backend::Os(os),
        files: FileStore::new(paths_in(tmp.path()).key_file_dir()),
        warning: None,
    };
    let started = std::time::Instant::now();
    let err = ks.load("mesh-d").unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(err.to_string().contains("no answer within"), "{err}");
    let err = ks.store("mesh-d", &key(3)).unwrap_err();
    assert!(
        matches!(err, KeystoreError::Backend { op: "store", .. }),
        "{err}"
    );
}

#[test]
fn keys_left_in_files_move_into_the_keyring() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = paths_in(tmp.path());
    let files = Keystore::open_with(&paths, KeystoreChoice::File).unwrap();
    files.store("mesh-e", &key(5)).unwrap();
    files.store("mesh-f", &key(6)).unwrap();
    let file_e = paths.key_file_dir().join("mesh-e.key");
    assert!(file_e.exists());

    let store = mock_store();
    let ks = Keystore::with_store(&paths, KeystoreKind::SecretService, store.clone()).unwrap();
    // Loading moves it.
    assert_eq!(*ks.load("mesh-e").unwrap().unwrap().seed(), [5; 32]);
    assert!(!file_e.exists());
    assert_eq!(
        raw_get(&store, "mesh-e").unwrap(),
        seed_hex(&key(5)).as_bytes()
    );
    assert_eq!(*ks.load("mesh-e").unwrap().unwrap().seed(), [5; 32]);

    // Storing over it removes the stale file; so does deleting.
    let file_f = paths.key_file_dir().join("mesh-f.key");
    ks.store("mesh-f", &key(16)).unwrap();
    assert!(!file_f.exists());
    files.store("mesh-f", &key(6)).unwrap();
    ks.delete("mesh-f").unwrap();
    assert!(!file_f.exists());
    assert!(ks.load("mesh-f").unwrap().is_none());
}

#[test]
fn seed_hex_round_trips_and_rejects_junk() {
    let k = key(0xab);
    let hex = encode_seed(&k.seed());
    assert_eq!(hex.as_str(), "ab".repeat(32));
    assert_eq!(*decode_seed(hex.as_bytes()).unwrap().seed(), [0xab; 32]);
    assert_eq!(
        *decode_seed(format!(" {}\n", "AB".repeat(32)).as_bytes())
            .unwrap()
            .seed(),
        [0xab; 32]
    );
    for junk in [
        "",
        "ab",
        &"ab".repeat(33),
        &"zz".repeat(32),
        &format!("{}+", "a".repeat(63)),
    ] {
        assert!(decode_seed(junk.as_bytes()).is_none(), "{junk}");
    }
}
