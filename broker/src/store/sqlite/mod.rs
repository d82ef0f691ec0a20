//! The SQLite backend: one database file in the data directory.
//!
//! SQLite runs in WAL mode with `synchronous=NORMAL`: a commit is in the
//! write-ahead log (the OS page cache) before it returns, which survives a
//! `kill -9` of the broker; only a power loss may drop the last commits.
//!
//! Calls are synchronous: [`crate::store::Store`] runs the slow ones (a
//! join waiting for the write lock, the redelivery read, the health check)
//! on the blocking pool and the short indexed reads inline, as before the
//! store had a second backend.

mod batch;
mod checkpoint;
pub(crate) mod health;
pub(crate) mod invites;
pub(crate) mod members;
pub(crate) mod meshes;
pub(crate) mod messages;
pub(crate) mod replay;
pub(crate) mod schema;
pub(crate) mod settings;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use batch::SqliteBatch;
pub use schema::CURRENT_VERSION;

use super::{StoreError, ensure_private_dir};
use crate::metrics::Metrics;

/// The database file inside the data directory.
pub const DB_FILE: &str = "broker.db";

/// How long a statement waits for another writer (the admin CLI, the
/// group-commit writer) before failing with "database is locked".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Creates the data directory and database if needed, migrates it, and
/// returns a connection to it.
pub fn open_data_dir(data_dir: &Path) -> Result<Connection, StoreError> {
    ensure_private_dir(data_dir)?;
    let mut conn = open_connection(&data_dir.join(DB_FILE))?;
    schema::migrate(&mut conn)?;
    Ok(conn)
}

/// Descriptors the SQLite store may hold: the read, write and batch
/// writer's connections and the one `/healthz` opens, each with the
/// database, its WAL and shared-memory files, and a margin (journal,
/// checkpoint).
pub const DESCRIPTORS: usize = 4 * 3 + 4;

/// The handle on the database for everything but the hot write path:
/// reads (hello membership, pending pushes, message status, metrics) on
/// one connection, and rare writes (join, leave, admin) on another, so
/// that a join waiting for the write lock never holds up a read.
pub struct SqliteStore {
    path: PathBuf,
    read: Mutex<Connection>,
    write: Mutex<Connection>,
}

impl SqliteStore {
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

    /// Runs `f` on the connection kept for rare writes.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = lock(&self.write)?;
        f(&mut guard)
    }

    /// The group-commit writer's own connection (and checkpoint thread).
    pub fn batch_writer(&self, metrics: Arc<Metrics>) -> Result<SqliteBatch, StoreError> {
        SqliteBatch::open(&self.path, metrics)
    }
}

fn lock(m: &Mutex<Connection>) -> Result<MutexGuard<'_, Connection>, StoreError> {
    m.lock().map_err(|_| StoreError::Poisoned)
}
