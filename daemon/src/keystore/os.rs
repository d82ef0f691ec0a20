//! The OS keyring through `keyring-core`: Secret Service on Linux, the
//! login Keychain on macOS, Credential Manager on Windows.
//!
//! Every call runs on a helper thread with a time limit: a keyring that
//! waits for a user to answer an unlock prompt nobody can see (a headless
//! session) must not hang the daemon.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keyring_core::{CredentialPersistence, CredentialStore, Entry, Error};
use zeroize::Zeroizing;

use super::{KeystoreError, KeystoreKind, SERVICE};

/// How long the probe (connect, write, read, delete) may take.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one store, load or delete may take.
pub(super) const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// The service name of the probe entry, apart from the member keys.
pub(super) const PROBE_SERVICE: &str = "claudemesh-probe";

/// A keyring-core store and what it is.
#[derive(Clone)]
pub(super) struct OsStore {
    pub(super) kind: KeystoreKind,
    pub(super) store: Arc<CredentialStore>,
    pub(super) durable: bool,
    pub(super) timeout: Duration,
}

impl std::fmt::Debug for OsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OsStore")
            .field("kind", &self.kind)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

impl OsStore {
    pub(super) fn new(kind: KeystoreKind, store: Arc<CredentialStore>) -> Self {
        let durable = matches!(store.persistence(), CredentialPersistence::UntilDelete);
        Self {
            kind,
            store,
            durable,
            timeout: OP_TIMEOUT,
        }
    }

    /// Writes `secret` (hex text) for `account`, replacing any previous one.
    pub(super) fn set(
        &self,
        account: &str,
        secret: Zeroizing<String>,
    ) -> Result<(), KeystoreError> {
        let store = self.store.clone();
        let acct = account.to_owned();
        self.call("store", account, move || {
            Entry::new_in_store(&store, SERVICE, &acct)?.set_secret(secret.as_bytes())
        })
    }

    /// The secret stored for `account`, if any.
    pub(super) fn get(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, KeystoreError> {
        let store = self.store.clone();
        let acct = account.to_owned();
        let got = self.call("load", account, move || {
            match Entry::new_in_store(&store, SERVICE, &acct)?.get_secret() {
                Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
                Err(Error::NoEntry) => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        Ok(got)
    }

    /// Deletes the secret for `account`; a missing one is not an error.
    pub(super) fn delete(&self, account: &str) -> Result<(), KeystoreError> {
        let store = self.store.clone();
        let acct = account.to_owned();
        self.call("delete", account, move || {
            match Entry::new_in_store(&store, SERVICE, &acct)?.delete_credential() {
                Ok(()) | Err(Error::NoEntry) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    /// Proves the keyring works: writes, reads back and deletes a probe
    /// entry (under [`PROBE_SERVICE`], with a name of its own so that
    /// concurrent probes do not collide). The reason on failure is safe to
    /// show.
    pub(super) fn probe(&self) -> Result<(), String> {
        let store = self.store.clone();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let account = format!("probe-{}-{nanos}", std::process::id());
        let value = format!("claudemesh keystore probe {nanos}");
        let outcome = with_timeout(self.timeout.min(PROBE_TIMEOUT), move || {
            let entry = Entry::new_in_store(&store, PROBE_SERVICE, &account)?;
            entry.set_secret(value.as_bytes())?;
            let read = entry.get_secret();
            let deleted = entry.delete_credential();
            let read = read?;
            deleted?;
            Ok::<bool, Error>(read == value.as_bytes())
        });
        match outcome {
            None => Err(format!(
                "the {} did not answer within {} s (is it locked, waiting for a password prompt?)",
                self.kind.description(),
                self.timeout.min(PROBE_TIMEOUT).as_secs()
            )),
            Some(Err(e)) => Err(format!("the {}: {}", self.kind.description(), describe(&e))),
            Some(Ok(false)) => Err(format!(
                "the {} gave back something other than what was written",
                self.kind.description()
            )),
            Some(Ok(true)) => Ok(()),
        }
    }

    fn call<T: Send + 'static>(
        &self,
        op: &'static str,
        account: &str,
        f: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, KeystoreError> {
        let failed = |reason: String| KeystoreError::Backend {
            kind: self.kind,
            op,
            account: account.to_owned(),
            reason,
        };
        match with_timeout(self.timeout, f) {
            None => Err(failed(format!(
                "no answer within {} s (is the keyring locked, waiting for a password prompt?)",
                self.timeout.as_secs()
            ))),
            Some(Err(e)) => Err(failed(describe(&e))),
            Some(Ok(v)) => Ok(v),
        }
    }
}

/// Runs `f` on a helper thread and waits at most `timeout` for it. `None`
/// when it did not finish in time (the thread is left to finish alone and
/// its result, secrets included, is dropped — and wiped — there) or could
/// not be started.
fn with_timeout<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("claudemesh-keyring".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .ok()?;
    rx.recv_timeout(timeout).ok()
}

/// A keyring-core error as text that cannot carry secret bytes: the
/// variants holding stored data (`BadEncoding`, `BadDataFormat`) and the
/// entry list of `Ambiguous` are described, never printed.
pub(super) fn describe(err: &Error) -> String {
    match err {
        Error::PlatformFailure(e) => format!("platform failure: {e}"),
        Error::NoStorageAccess(e) => {
            format!("no access to the keyring (locked, or access refused): {e}")
        }
        Error::NoEntry => "no such entry".to_owned(),
        Error::BadEncoding(_) | Error::BadDataFormat(..) => {
            "the stored data is malformed".to_owned()
        }
        Error::BadStoreFormat(_) => "the keyring's own data is malformed".to_owned(),
        Error::TooLong(name, limit) => {
            format!("{name} is longer than the keyring allows ({limit})")
        }
        Error::Invalid(name, reason) => format!("{name} is invalid: {reason}"),
        Error::Ambiguous(entries) => format!(
            "{} entries match (service {SERVICE:?}); remove the duplicates with the \
             keyring's own tool (e.g. `secret-tool search --all service {SERVICE}`)",
            entries.len()
        ),
        Error::NoDefaultStore => "no keyring store is configured".to_owned(),
        Error::NotSupportedByStore(what) => format!("not supported by this keyring: {what}"),
        _ => "unexpected keyring error".to_owned(),
    }
}

/// The platform's durable keyring, connected. The reason on failure is
/// safe to show.
#[cfg(target_os = "linux")]
pub(super) fn platform_store() -> Result<OsStore, String> {
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none_or(|v| v.is_empty()) {
        // libdbus would still try $XDG_RUNTIME_DIR/bus; say why it may fail.
        let bus = std::env::var_os("XDG_RUNTIME_DIR")
            .map(|d| std::path::PathBuf::from(d).join("bus"))
            .filter(|p| p.exists());
        if bus.is_none() {
            return Err(
                "there is no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is unset and \
                 $XDG_RUNTIME_DIR/bus does not exist), so no Secret Service"
                    .to_owned(),
            );
        }
    }
    let store = dbus_secret_service_keyring_store::Store::new()
        .map_err(|e| format!("cannot reach a Secret Service: {}", describe(&e)))?;
    durable(OsStore::new(KeystoreKind::SecretService, store))
}

#[cfg(target_os = "macos")]
pub(super) fn platform_store() -> Result<OsStore, String> {
    let store = apple_native_keyring_store::keychain::Store::new()
        .map_err(|e| format!("cannot open the login Keychain: {}", describe(&e)))?;
    durable(OsStore::new(KeystoreKind::Keychain, store))
}

#[cfg(windows)]
pub(super) fn platform_store() -> Result<OsStore, String> {
    let store = windows_native_keyring_store::Store::new()
        .map_err(|e| format!("cannot open the Credential Manager: {}", describe(&e)))?;
    durable(OsStore::new(KeystoreKind::CredentialManager, store))
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
pub(super) fn platform_store() -> Result<OsStore, String> {
    Err("claudemesh supports no OS keyring on this platform".to_owned())
}

#[cfg(any(target_os = "linux", target_os = "macos", windows))]
fn durable(os: OsStore) -> Result<OsStore, String> {
    if os.durable {
        Ok(os)
    } else {
        Err(format!(
            "the {} does not keep keys across a reboot",
            os.kind.description()
        ))
    }
}

/// Connects to the platform keyring and probes it, all within the probe
/// time limit (connecting may start a keyring daemon over D-Bus).
pub(super) fn connect_and_probe(
    platform: impl FnOnce() -> Result<OsStore, String> + Send + 'static,
    timeout: Duration,
) -> Result<OsStore, String> {
    match with_timeout(timeout, move || {
        let os = platform()?;
        os.probe()?;
        Ok(os)
    }) {
        Some(result) => result,
        None => Err(format!(
            "the OS keyring did not answer within {} s (is it locked, waiting for a \
             password prompt?)",
            timeout.as_secs()
        )),
    }
}
