//! The file keystore: one file per account in a 0700 directory, each 0600,
//! written atomically, holding the hex-encoded seed and a newline.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::KeystoreError;
use crate::paths::{self, Paths};

/// A key file larger than this is not one of ours.
const MAX_KEY_FILE: u64 = 1024;
/// File names longer than this are refused (most file systems allow 255).
const MAX_FILE_NAME: usize = 240;

#[derive(Debug, Clone)]
pub(super) struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    pub(super) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory (0700) or tightens it; refuses another user's.
    pub(super) fn prepare(&self) -> Result<(), KeystoreError> {
        Ok(Paths::ensure_private_dir(&self.dir)?)
    }

    /// The file for `account` (already validated by the caller).
    pub(super) fn path_for(&self, account: &str) -> Result<PathBuf, KeystoreError> {
        let name = file_name(account);
        if name.len() > MAX_FILE_NAME {
            return Err(KeystoreError::InvalidAccount {
                account: account.to_owned(),
                reason: "it is too long to name a key file".into(),
            });
        }
        Ok(self.dir.join(name))
    }

    pub(super) fn write(
        &self,
        account: &str,
        hex: &Zeroizing<String>,
    ) -> Result<(), KeystoreError> {
        let path = self.path_for(account)?;
        self.prepare()?;
        let mut contents = Zeroizing::new(Vec::with_capacity(hex.len() + 1));
        contents.extend_from_slice(hex.as_bytes());
        contents.push(b'\n');
        paths::write_private_file(&path, &contents).map_err(|source| KeystoreError::Io {
            op: "write",
            path,
            source,
        })
    }

    /// The contents of the key file for `account`, if it exists. Refuses a
    /// file that is not a regular file, belongs to another user, or that
    /// group or others may access.
    pub(super) fn read(&self, account: &str) -> Result<Option<Zeroizing<Vec<u8>>>, KeystoreError> {
        let path = self.path_for(account)?;
        let io_err = |path: &Path, source| KeystoreError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        };
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path, e)),
        };
        if !meta.file_type().is_file() {
            return Err(KeystoreError::UnsafeKeyFile {
                reason: "it is not a regular file (a symlink or a directory?)".to_owned(),
                path,
            });
        }
        let file = fs::File::open(&path).map_err(|e| io_err(&path, e))?;
        let meta = file.metadata().map_err(|e| io_err(&path, e))?;
        check_private(&path, &meta)?;
        if meta.len() > MAX_KEY_FILE {
            return Err(KeystoreError::Corrupt {
                location: format!("the file {}", path.display()),
                account: account.to_owned(),
            });
        }
        let mut contents = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE as usize + 1));
        file.take(MAX_KEY_FILE + 1)
            .read_to_end(&mut contents)
            .map_err(|e| io_err(&path, e))?;
        Ok(Some(contents))
    }

    /// Removes the key file for `account`; true when there was one.
    pub(super) fn remove(&self, account: &str) -> Result<bool, KeystoreError> {
        let path = self.path_for(account)?;
        match fs::remove_file(&path) {
            Ok(()) => {
                paths::sync_dir(&self.dir).map_err(|source| KeystoreError::Io {
                    op: "remove",
                    path: self.dir.clone(),
                    source,
                })?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(KeystoreError::Io {
                op: "remove",
                path,
                source,
            }),
        }
    }
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &fs::Metadata) -> Result<(), KeystoreError> {
    use std::os::unix::fs::MetadataExt;
    let uid = paths::current_uid();
    if meta.uid() != uid {
        return Err(KeystoreError::UnsafeKeyFile {
            reason: format!(
                "it belongs to uid {}, not to this user (uid {uid})",
                meta.uid()
            ),
            path: path.to_path_buf(),
        });
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeystoreError::UnsafeKeyFile {
            reason: format!(
                "its mode is {mode:03o}, so other users may be able to read it; if the \
                 key is yours and uncompromised, run `chmod 600 {}`",
                path.display()
            ),
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &fs::Metadata) -> Result<(), KeystoreError> {
    Ok(())
}

/// `account` as a file name that is safe on every platform and case-blind
/// file system: lowercase ASCII letters, digits, `-` and `_` stay; every
/// other byte becomes `%XX`; `.key` follows.
pub(super) fn file_name(account: &str) -> String {
    let mut name = String::with_capacity(account.len() + 4);
    for b in account.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    name.push_str(".key");
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe_and_distinct() {
        assert_eq!(file_name("mesh-1_a"), "mesh-1_a.key");
        assert_eq!(file_name("Mesh"), "%4Desh.key");
        assert_eq!(file_name("a.b"), "a%2Eb.key");
        assert_eq!(file_name("é"), "%C3%A9.key");
        assert_ne!(file_name("A"), file_name("a"));
        assert_ne!(file_name("%41"), file_name("A"));
    }
}
