//! Where the daemon keeps its files: configuration, data (database, local
//! broker, file keystore) and runtime state (socket, lock).
//!
//! Each of the three directories can be overridden by an environment
//! variable; otherwise the platform's conventional location from
//! `directories` is used (on Linux: `~/.config/claudemesh`,
//! `~/.local/share/claudemesh`, `$XDG_RUNTIME_DIR/claudemesh`).

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Overrides the configuration directory (must be absolute).
pub const ENV_CONFIG_DIR: &str = "CLAUDEMESH_CONFIG_DIR";
/// Overrides the data directory (must be absolute).
pub const ENV_DATA_DIR: &str = "CLAUDEMESH_DATA_DIR";
/// Overrides the runtime directory (must be absolute).
pub const ENV_RUNTIME_DIR: &str = "CLAUDEMESH_RUNTIME_DIR";

/// Why the daemon's directories could not be found or prepared.
#[derive(Debug, thiserror::Error)]
pub enum PathsError {
    #[error(
        "cannot find a home directory for the claudemesh files; set {ENV_CONFIG_DIR}, \
         {ENV_DATA_DIR} and {ENV_RUNTIME_DIR} to absolute paths"
    )]
    NoHome,
    #[error("{var} must be an absolute path, not {value:?}")]
    NotAbsolute { var: &'static str, value: PathBuf },
    #[error("cannot create or inspect the directory {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} exists but is not a directory; move it aside", path.display())]
    NotADirectory { path: PathBuf },
    #[error(
        "refusing to use {}: it belongs to uid {owner}, not to this user (uid {uid}); \
         claudemesh keeps private files there, so it must be your own directory \
         (remove it, or point the matching CLAUDEMESH_*_DIR elsewhere)",
        path.display()
    )]
    NotOwned { path: PathBuf, owner: u32, uid: u32 },
}

/// The daemon's three directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
    pub runtime_dir: PathBuf,
}

impl Paths {
    /// From the environment: `CLAUDEMESH_CONFIG_DIR`, `CLAUDEMESH_DATA_DIR`
    /// and `CLAUDEMESH_RUNTIME_DIR` override each directory; otherwise the
    /// platform's directories for "claudemesh" (where the platform has no
    /// runtime directory, `data_dir/run`). An empty variable counts as unset.
    pub fn from_env() -> Result<Paths, PathsError> {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// As [`Paths::from_env`], reading the overrides through `lookup`
    /// instead of the process environment (for tests and callers that hold
    /// their own environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Paths, PathsError> {
        let get = |var: &'static str| -> Result<Option<PathBuf>, PathsError> {
            match lookup(var) {
                Some(v) if !v.is_empty() => {
                    let path = PathBuf::from(v);
                    if path.is_absolute() {
                        Ok(Some(path))
                    } else {
                        Err(PathsError::NotAbsolute { var, value: path })
                    }
                }
                _ => Ok(None),
            }
        };
        let config = get(ENV_CONFIG_DIR)?;
        let data = get(ENV_DATA_DIR)?;
        let runtime = get(ENV_RUNTIME_DIR)?;
        if let (Some(config_dir), Some(data_dir), Some(runtime_dir)) =
            (config.clone(), data.clone(), runtime.clone())
        {
            return Ok(Paths {
                config_dir,
                data_dir,
                runtime_dir,
            });
        }
        let project =
            directories::ProjectDirs::from("", "", "claudemesh").ok_or(PathsError::NoHome)?;
        let data_dir = data.unwrap_or_else(|| project.data_dir().to_path_buf());
        let runtime_dir = runtime.unwrap_or_else(|| match project.runtime_dir() {
            Some(dir) => dir.to_path_buf(),
            None => data_dir.join("run"),
        });
        Ok(Paths {
            config_dir: config.unwrap_or_else(|| project.config_dir().to_path_buf()),
            data_dir,
            runtime_dir,
        })
    }

    /// `runtime_dir/claudemeshd.sock`
    pub fn socket_path(&self) -> PathBuf {
        self.runtime_dir.join("claudemeshd.sock")
    }

    /// `runtime_dir/claudemeshd.lock`
    pub fn lock_path(&self) -> PathBuf {
        self.runtime_dir.join("claudemeshd.lock")
    }

    /// `config_dir/config.json`
    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.json")
    }

    /// `data_dir/daemon.db`
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("daemon.db")
    }

    /// `data_dir/local-broker`
    pub fn local_broker_dir(&self) -> PathBuf {
        self.data_dir.join("local-broker")
    }

    /// `data_dir/keys`: the file keystore.
    pub fn key_file_dir(&self) -> PathBuf {
        self.data_dir.join("keys")
    }

    /// Creates `dir` (and its missing parents, each 0700 on Unix) and sets
    /// `dir` itself to 0700. Refuses a directory owned by another uid. On
    /// other platforms it only creates the directory (the per-user profile
    /// directories there are private to the user already).
    pub fn ensure_private_dir(dir: &Path) -> Result<(), PathsError> {
        let io_err = |source| PathsError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(io_err)?;
        // Follows a symlink on purpose: a linked config directory is common
        // (dotfiles); the target is what must be private.
        let meta = fs::metadata(dir).map_err(io_err)?;
        if !meta.is_dir() {
            return Err(PathsError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let uid = current_uid();
            if meta.uid() != uid {
                return Err(PathsError::NotOwned {
                    path: dir.to_path_buf(),
                    owner: meta.uid(),
                    uid,
                });
            }
            if meta.mode() & 0o777 != 0o700 {
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err)?;
            }
        }
        Ok(())
    }
}

/// The effective uid of this process.
#[cfg(unix)]
pub fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` atomically with a file holding `contents`, readable by
/// this user only (0600 on Unix): writes a temporary file in the same
/// directory (created 0600), syncs it, renames it over `path`, then syncs
/// the directory. The directory must exist. Readers see either the old file
/// or the new one, never a torn write.
pub fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let (tmp, mut file) = create_temp(dir, &name.to_string_lossy())?;
    let written = (|| {
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, fs::File)> {
    let mut last = None;
    for _ in 0..32 {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&tmp) {
            Ok(file) => {
                #[cfg(unix)]
                {
                    // The umask can only have narrowed 0600; make it exact.
                    use std::os::unix::fs::PermissionsExt;
                    if let Err(e) = file.set_permissions(fs::Permissions::from_mode(0o600)) {
                        drop(file);
                        let _ = fs::remove_file(&tmp);
                        return Err(e);
                    }
                }
                return Ok((tmp, file));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("cannot create a temporary file")))
}

/// Makes a rename in `dir` durable (Unix); a no-op elsewhere.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn overrides_win_and_derived_paths_follow() {
        let paths = Paths::from_lookup(lookup(&[
            (ENV_CONFIG_DIR, "/c"),
            (ENV_DATA_DIR, "/d"),
            (ENV_RUNTIME_DIR, "/r"),
        ]))
        .unwrap();
        assert_eq!(paths.config_dir, Path::new("/c"));
        assert_eq!(paths.socket_path(), Path::new("/r/claudemeshd.sock"));
        assert_eq!(paths.lock_path(), Path::new("/r/claudemeshd.lock"));
        assert_eq!(paths.config_file(), Path::new("/c/config.json"));
        assert_eq!(paths.database_path(), Path::new("/d/daemon.db"));
        assert_eq!(paths.local_broker_dir(), Path::new("/d/local-broker"));
        assert_eq!(paths.key_file_dir(), Path::new("/d/keys"));
    }

    #[test]
    fn relative_override_is_refused_and_empty_is_unset() {
        let err = Paths::from_lookup(lookup(&[(ENV_DATA_DIR, "rel/dir")])).unwrap_err();
        assert!(err.to_string().contains(ENV_DATA_DIR), "{err}");
        // Empty values fall through to the platform directories; only the
        // data dir is overridden here.
        if let Ok(paths) = Paths::from_lookup(lookup(&[(ENV_DATA_DIR, "/d"), (ENV_CONFIG_DIR, "")]))
        {
            assert_eq!(paths.data_dir, Path::new("/d"));
            assert!(paths.config_dir.ends_with("claudemesh"));
        }
    }

    #[cfg(unix)]
    #[test]
    fn ensure_private_dir_creates_0700_and_tightens() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        Paths::ensure_private_dir(&dir).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        Paths::ensure_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let file = tmp.path().join("f");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(
            Paths::ensure_private_dir(&file),
            Err(PathsError::Io { .. } | PathsError::NotADirectory { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn ensure_private_dir_refuses_another_users_directory() {
        use std::os::unix::fs::PermissionsExt;
        if current_uid() != 0 {
            eprintln!("skipped: creating a directory owned by another uid needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("theirs");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        let err = Paths::ensure_private_dir(&dir).unwrap_err();
        assert!(
            matches!(err, PathsError::NotOwned { owner: 65534, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("not to this user"), "{err}");
        // Left as it was.
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }

    #[cfg(unix)]
    #[test]
    fn write_private_file_is_0600_and_replaces() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f.json");
        write_private_file(&path, b"one").unwrap();
        write_private_file(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
