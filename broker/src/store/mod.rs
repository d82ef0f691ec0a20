//! The broker's persistent state behind one boundary.
//!
//! DESIGN.md asks that a shared PostgreSQL could later take SQLite's place,
//! so nothing outside this module sees SQL: the rest of the crate calls
//! [`Store`]'s methods for reads and occasional writes, and sends
//! [`crate::writer::WriteOp`]s (whose SQL also lives here, in
//! [`messages`] and [`replay`]) to the one group-commit writer. Swapping the
//! database means reimplementing this module and the writer's `apply`.
//!
//! SQLite runs in WAL mode with `synchronous=NORMAL`: a commit is in the
//! write-ahead log (the OS page cache) before it returns, which survives a
//! `kill -9` of the broker; only a power loss may drop the last commits.

pub mod health;
pub mod invites;
pub mod members;
pub mod meshes;
pub mod messages;
pub mod replay;
pub mod schema;
pub mod settings;
mod types;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use types::*;

/// The database file inside the data directory.
pub const DB_FILE: &str = "broker.db";

/// How long a statement waits for another writer (the admin CLI, the
/// group-commit writer) before failing with "database is locked".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot prepare the data directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the database schema version {found} is newer than this broker understands ({known}); upgrade claudemesh-broker"
    )]
    TooNew { found: i64, known: i64 },
    #[error("a database connection lock was poisoned by an earlier panic")]
    Poisoned,
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("the transaction could not be committed: {0}")]
    Commit(String),
    #[error("the database writer has stopped (the broker is shutting down)")]
    WriterGone,
}

/// How SQLite words `SQLITE_FULL` (a write failed with `ENOSPC`, or the
/// file reached its size limit). Commit failures travel as text, so the
/// text is what is matched.
const DISK_FULL_TEXT: &str = "database or disk is full";

impl StoreError {
    /// True when the write failed for want of disk space: nothing was
    /// stored, and the same write can succeed once space is freed.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Self::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DiskFull =>
            {
                true
            }
            Self::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => true,
            other => is_disk_full_text(&other.to_string()),
        }
    }
}

/// True when an error's text says the disk is full (see [`StoreError::is_disk_full`]).
pub fn is_disk_full_text(text: &str) -> bool {
    text.contains(DISK_FULL_TEXT)
}

/// Opens one connection to `path` with the broker's pragmas.
pub fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Creates `dir` (0700 on Unix) if it does not exist.
pub fn ensure_private_dir(dir: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: dir.to_owned(),
        source,
    };
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir).map_err(io)?;
    }
    Ok(())
}

/// Creates the data directory and database if needed, migrates it, and
/// returns a connection to it.
pub fn open_data_dir(data_dir: &Path) -> Result<Connection, StoreError> {
    ensure_private_dir(data_dir)?;
    let mut conn = open_connection(&data_dir.join(DB_FILE))?;
    schema::migrate(&mut conn)?;
    Ok(conn)
}

/// The server's handle on the database for everything but the hot write
/// path: reads (hello membership, pending pushes, message status, metrics)
/// on one connection, and rare writes (join, leave) on another, so that a
/// join waiting for the write lock never holds up a read.
pub struct Store {
    path: PathBuf,
    read: Mutex<Connection>,
    write: Mutex<Connection>,
}

impl Store {
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let write = open_data_dir(data_dir)?;
        let path = data_dir.join(DB_FILE);
        let read = open_connection(&path)?;
        Ok(Self {
            path,
            read: Mutex::new(read),
            write: Mutex::new(write),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the read connection.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let guard = lock(&self.read)?;
        f(&guard)
    }

    /// Runs `f` on the connection kept for rare writes (enrollment, leave).
    pub fn write<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = lock(&self.write)?;
        f(&mut guard)
    }
}

fn lock(m: &Mutex<Connection>) -> Result<MutexGuard<'_, Connection>, StoreError> {
    m.lock().map_err(|_| StoreError::Poisoned)
}
