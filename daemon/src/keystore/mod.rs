//! Member secret keys: in the OS keyring where a durable one is reachable,
//! else in files readable by this user alone.
//!
//! | platform | OS keyring (through `keyring-core`) |
//! |----------|-------------------------------------|
//! | Linux    | Secret Service over D-Bus (gnome-keyring, KWallet, KeePassXC) |
//! | macOS    | the login Keychain |
//! | Windows  | Credential Manager |
//!
//! `CLAUDEMESH_KEYSTORE=os|file` forces a backend. Unset, [`Keystore::open`]
//! probes the OS keyring with a real write, read and delete and falls back
//! to the file store (`Paths::key_file_dir()`, 0700, one 0600 file per
//! key) with a [warning](Keystore::warning) for `join`, `status` and
//! `doctor`. The kernel keyutils store is never used: its keys die at
//! reboot.
//!
//! Entries are service `claudemesh`, account = the mesh id, secret = the
//! 32-byte ed25519 seed as 64 lowercase hex characters. No secret appears
//! in an error, a log line or a `Debug` output; intermediate buffers are
//! zeroized.
//!
//! Every call blocks (the OS keyring answers over IPC, with a time limit):
//! call it from `spawn_blocking` in async code.

mod file;
mod os;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use claudemesh_protocol::MemberSecretKey;
use zeroize::Zeroizing;

use crate::paths::{Paths, PathsError};
use file::FileStore;
use os::OsStore;

pub use keyring_core::CredentialStore;

/// The keyring service name of every member key.
pub const SERVICE: &str = "claudemesh";
/// `os` or `file` forces a backend; unset or empty chooses.
pub const ENV_KEYSTORE: &str = "CLAUDEMESH_KEYSTORE";
/// The longest account (mesh id) accepted, in bytes.
pub const MAX_ACCOUNT_BYTES: usize = 256;

/// Where the keys are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeystoreKind {
    SecretService,
    Keychain,
    CredentialManager,
    File,
}

impl KeystoreKind {
    /// `secret-service`, `keychain`, `credential-manager` or `file`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SecretService => "secret-service",
            Self::Keychain => "keychain",
            Self::CredentialManager => "credential-manager",
            Self::File => "file",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Self::SecretService => "Secret Service",
            Self::Keychain => "macOS Keychain",
            Self::CredentialManager => "Windows Credential Manager",
            Self::File => "file keystore",
        }
    }
}

impl fmt::Display for KeystoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `CLAUDEMESH_KEYSTORE` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum KeystoreChoice {
    /// Unset: the OS keyring if a durable one answers, else files.
    #[default]
    Auto,
    /// `os`: the OS keyring or an error.
    Os,
    /// `file`: files, without asking the OS keyring.
    File,
}

impl KeystoreChoice {
    /// From `CLAUDEMESH_KEYSTORE`.
    pub fn from_env() -> Result<Self, KeystoreError> {
        let value = std::env::var_os(ENV_KEYSTORE);
        Self::parse(value.as_ref().map(|v| v.to_string_lossy()).as_deref())
    }

    /// From the value of `CLAUDEMESH_KEYSTORE` (None: unset). Case and
    /// surrounding blanks do not matter; empty means unset.
    pub fn parse(value: Option<&str>) -> Result<Self, KeystoreError> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") => Ok(Self::Auto),
            Some("os") => Ok(Self::Os),
            Some("file") => Ok(Self::File),
            Some(_) => Err(KeystoreError::BadChoice {
                value: value.unwrap_or_default().to_owned(),
            }),
        }
    }
}

/// Why a key could not be stored, loaded or deleted. Never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error(
        "{ENV_KEYSTORE}={value:?} is not understood: use \"os\" (the OS keyring), \
         \"file\" (one file per key, readable only by you) or leave it unset \
         (the OS keyring when one is reachable, else files)"
    )]
    BadChoice { value: String },
    #[error("{ENV_KEYSTORE}=os, but no durable OS keyring is reachable: {reason}. {hint}")]
    OsUnavailable { reason: String, hint: &'static str },
    #[error("{account:?} cannot name a key: {reason}")]
    InvalidAccount { account: String, reason: String },
    #[error("the {kind} keystore could not {op} the key for {account:?}: {reason}")]
    Backend {
        kind: KeystoreKind,
        op: &'static str,
        account: String,
        reason: String,
    },
    #[error(
        "the key stored for {account:?} in {location} is malformed (it should be a \
         64-character hex ed25519 seed); delete it and join the mesh again"
    )]
    Corrupt { account: String, location: String },
    #[error("refusing to read the key file {}: {reason}", path.display())]
    UnsafeKeyFile { path: PathBuf, reason: String },
    #[error("cannot {op} the key file {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Paths(#[from] PathsError),
}

#[cfg(target_os = "linux")]
const OS_HINT: &str = "Run a Secret Service provider (gnome-keyring, KWallet or KeePassXC) \
     in your session, unlocked, with DBUS_SESSION_BUS_ADDRESS pointing at that session's \
     bus; or set CLAUDEMESH_KEYSTORE=file to keep keys in files readable only by you";
#[cfg(not(target_os = "linux"))]
const OS_HINT: &str = "Unlock the OS keyring, or set CLAUDEMESH_KEYSTORE=file to keep \
     keys in files readable only by you";

enum Backend {
    Os(OsStore),
    File,
}

/// The member-key store chosen for this process.
pub struct Keystore {
    backend: Backend,
    /// The file store: the backend itself, or (with the OS backend) where
    /// keys written before a keyring was reachable may still be.
    files: FileStore,
    warning: Option<String>,
}

impl fmt::Debug for Keystore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keystore")
            .field("kind", &self.kind())
            .field("durable", &self.durable())
            .field("key_file_dir", &self.files.dir())
            .field("warning", &self.warning)
            .finish()
    }
}

impl Keystore {
    /// Opens the keystore `CLAUDEMESH_KEYSTORE` asks for: `os` (an error,
    /// saying what to do, if no durable OS keyring is reachable), `file`,
    /// or unset: the OS keyring when a probe entry can be written, read
    /// back and deleted, else the file store with a [warning](Self::warning).
    pub fn open(paths: &Paths) -> Result<Keystore, KeystoreError> {
        Self::open_with(paths, KeystoreChoice::from_env()?)
    }

    /// As [`Keystore::open`], with the choice given rather than read from
    /// the environment.
    pub fn open_with(paths: &Paths, choice: KeystoreChoice) -> Result<Keystore, KeystoreError> {
        Self::open_inner(paths, choice, os::platform_store, os::PROBE_TIMEOUT)
    }

    fn open_inner(
        paths: &Paths,
        choice: KeystoreChoice,
        platform: impl FnOnce() -> Result<OsStore, String> + Send + 'static,
        probe_timeout: Duration,
    ) -> Result<Keystore, KeystoreError> {
        let files = FileStore::new(paths.key_file_dir());
        let os = match choice {
            KeystoreChoice::File => Err(None),
            KeystoreChoice::Os | KeystoreChoice::Auto => {
                os::connect_and_probe(platform, probe_timeout).map_err(Some)
            }
        };
        match (choice, os) {
            (_, Ok(os)) => Ok(Keystore {
                backend: Backend::Os(os),
                files,
                warning: None,
            }),
            (KeystoreChoice::Os, Err(reason)) => Err(KeystoreError::OsUnavailable {
                reason: reason.unwrap_or_default(),
                hint: OS_HINT,
            }),
            (_, Err(reason)) => {
                files.prepare()?;
                let warning = reason.map(|reason| {
                    format!(
                        "No durable OS keyring is reachable ({reason}), so claudemesh keeps \
                         member secret keys in files under {}, readable only by you (mode \
                         600, directory 700). Anyone who can act as your user, or read \
                         your disk or its backups, can read them. Keys stored earlier in the \
                         OS keyring stay there, out of sight until it is reachable again. To \
                         use the OS keyring, start and unlock one in this session; to accept \
                         files and silence this notice, set {ENV_KEYSTORE}=file.",
                        files.dir().display()
                    )
                });
                if let Some(warning) = &warning {
                    tracing::warn!("{warning}");
                }
                Ok(Keystore {
                    backend: Backend::File,
                    files,
                    warning,
                })
            }
        }
    }

    /// A keystore over the given keyring-core store (for tests, e.g.
    /// `keyring_core::mock`), probed like the OS keyring; key files left in
    /// `paths.key_file_dir()` are migrated as with the OS backend.
    #[doc(hidden)]
    pub fn with_store(
        paths: &Paths,
        kind: KeystoreKind,
        store: Arc<CredentialStore>,
    ) -> Result<Keystore, KeystoreError> {
        let os = OsStore::new(kind, store);
        os.probe().map_err(|reason| KeystoreError::OsUnavailable {
            reason,
            hint: OS_HINT,
        })?;
        Ok(Keystore {
            backend: Backend::Os(os),
            files: FileStore::new(paths.key_file_dir()),
            warning: None,
        })
    }

    pub fn kind(&self) -> KeystoreKind {
        match &self.backend {
            Backend::Os(os) => os.kind,
            Backend::File => KeystoreKind::File,
        }
    }

    /// True when stored keys survive a reboot (the OS keyrings and the file
    /// store do; an in-memory test store does not).
    pub fn durable(&self) -> bool {
        match &self.backend {
            Backend::Os(os) => os.durable,
            Backend::File => true,
        }
    }

    /// The fallback notice (keys are in files, and why), for `join`,
    /// `status` and `doctor`. None when the OS keyring is used or files
    /// were asked for.
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    /// Where the keys are, for people: e.g. `Secret Service (service
    /// "claudemesh")` or `files in /home/u/.local/share/claudemesh/keys`.
    pub fn location(&self) -> String {
        match &self.backend {
            Backend::Os(os) => format!("{} (service {SERVICE:?})", os.kind.description()),
            Backend::File => format!("files in {}", self.files.dir().display()),
        }
    }

    /// Stores `key` for `account` (the mesh id), replacing any previous
    /// key. With the OS backend, a key file left for the account from a
    /// time without keyring is then removed.
    pub fn store(&self, account: &str, key: &MemberSecretKey) -> Result<(), KeystoreError> {
        validate_account(account)?;
        let hex = encode_seed(&key.seed());
        match &self.backend {
            Backend::Os(os) => {
                os.set(account, hex)?;
                if let Err(e) = self.files.remove(account) {
                    tracing::warn!(
                        "the key for {account:?} is in the OS keyring, but an older key file could not be removed: {e}"
                    );
                }
                Ok(())
            }
            Backend::File => self.files.write(account, &hex),
        }
    }

    /// The key stored for `account`, or None. With the OS backend, a key
    /// that only the file store holds (written while no keyring was
    /// reachable) is returned and moved into the keyring.
    pub fn load(&self, account: &str) -> Result<Option<MemberSecretKey>, KeystoreError> {
        validate_account(account)?;
        match &self.backend {
            Backend::Os(os) => {
                if let Some(bytes) = os.get(account)? {
                    return decode_seed(&bytes)
                        .map(Some)
                        .ok_or_else(|| KeystoreError::Corrupt {
                            account: account.to_owned(),
                            location: format!("the {}", os.kind.description()),
                        });
                }
                let Some(key) = self.load_file(account)? else {
                    return Ok(None);
                };
                self.migrate(os, account, &key);
                Ok(Some(key))
            }
            Backend::File => self.load_file(account),
        }
    }

    /// Deletes the key for `account` from the keystore (and, with the OS
    /// backend, any key file left for it). Deleting a missing key is Ok.
    pub fn delete(&self, account: &str) -> Result<(), KeystoreError> {
        validate_account(account)?;
        if let Backend::Os(os) = &self.backend {
            os.delete(account)?;
        }
        self.files.remove(account).map(|_| ())
    }

    fn load_file(&self, account: &str) -> Result<Option<MemberSecretKey>, KeystoreError> {
        let Some(bytes) = self.files.read(account)? else {
            return Ok(None);
        };
        decode_seed(&bytes)
            .map(Some)
            .ok_or_else(|| KeystoreError::Corrupt {
                account: account.to_owned(),
                location: match self.files.path_for(account) {
                    Ok(path) => format!("the file {}", path.display()),
                    Err(_) => "the file keystore".to_owned(),
                },
            })
    }

    /// Copies a file-held key into the OS keyring, checks it reads back,
    /// then removes the file. Failures leave the file in place.
    fn migrate(&self, os: &OsStore, account: &str, key: &MemberSecretKey) {
        let result = (|| {
            os.set(account, encode_seed(&key.seed()))?;
            let back = os.get(account)?;
            let same = back
                .as_deref()
                .and_then(|b| decode_seed(b))
                .is_some_and(|k| *k.seed() == *key.seed());
            if !same {
                return Err(KeystoreError::Corrupt {
                    account: account.to_owned(),
                    location: format!("the {} (after moving it there)", os.kind.description()),
                });
            }
            self.files.remove(account)
        })();
        match result {
            Ok(_) => tracing::info!(
                "moved the key for {account:?} from the file keystore into the {}",
                os.kind.description()
            ),
            Err(e) => tracing::warn!(
                "the key for {account:?} stays in the file keystore: moving it into the {} failed: {e}",
                os.kind.description()
            ),
        }
    }
}

/// An account names a key in every backend, and a file in the file store.
fn validate_account(account: &str) -> Result<(), KeystoreError> {
    let reason = if account.is_empty() {
        "it is empty".to_owned()
    } else if account.len() > MAX_ACCOUNT_BYTES {
        format!("it is longer than {MAX_ACCOUNT_BYTES} bytes")
    } else if account.contains(['/', '\\']) {
        "it contains a path separator".to_owned()
    } else if account.contains("..") {
        "it contains \"..\"".to_owned()
    } else if account.chars().any(char::is_control) {
        "it contains a control character".to_owned()
    } else {
        return Ok(());
    };
    Err(KeystoreError::InvalidAccount {
        account: account.to_owned(),
        reason,
    })
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The seed as 64 lowercase hex characters, in a buffer wiped on drop.
fn encode_seed(seed: &[u8; 32]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(64));
    for &b in seed {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// A key from 64 hex characters (either case; surrounding ASCII blanks
/// ignored). None when malformed.
fn decode_seed(text: &[u8]) -> Option<MemberSecretKey> {
    let text = text.trim_ascii();
    if text.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut seed = Zeroizing::new([0u8; 32]);
    for (i, pair) in text.chunks_exact(2).enumerate() {
        seed[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(MemberSecretKey::from_seed(&seed))
}

#[cfg(test)]
mod tests;
