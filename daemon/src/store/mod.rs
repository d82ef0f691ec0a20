//! The daemon's durable state: one SQLite file (WAL) holding sessions, the
//! outbox, the inbox with its per-session delivery rows, and a little
//! metadata.
//!
//! Why SQLite: a send must be on disk before the client hears "accepted",
//! and a push before the broker hears `client_ack`; a transaction commit is
//! exactly that promise, and WAL keeps readers off the writers' backs.
//!
//! One thread owns the connection and commits in groups: every job queued
//! while the previous commit was on its way to the disk runs in the next
//! transaction (each inside its own savepoint, so a failing job undoes only
//! itself), and every caller hears its result only after that commit. With
//! `synchronous = FULL` each answer still means "on disk", but a thousand
//! concurrent sends cost a few fsyncs rather than a thousand.

mod inbox;
mod meta;
mod outbox;
mod schema;
mod sessions;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::mpsc;

use rusqlite::Connection;

pub use inbox::{INBOX_RETENTION_MS, InboxRow, ReceiptDue, SEEN_RETENTION_MS};
pub use outbox::{OutboxRow, OutboxState, RecipientRow};
pub use sessions::SessionRow;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database thread stopped")]
    Cancelled,
    #[error("the database could not commit: {0}")]
    Commit(String),
    #[error("a stored row is corrupt: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// True when a write failed for want of disk space: nothing was
    /// stored, and the same write can succeed once space is freed.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Self::Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DiskFull =>
            {
                true
            }
            // Commit failures travel as text: matched as the broker's are.
            other => claudemesh_broker::store::is_disk_full_text(&other.to_string()),
        }
    }
}

/// The open database. Its methods live in the submodules, one table group
/// each.
pub struct Db {
    conn: Connection,
}

/// Told the commit's outcome once the job's transaction has ended.
type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;
/// Runs against the database; says whether it succeeded (else its
/// savepoint is rolled back) and how to answer its caller.
type Job = Box<dyn FnOnce(&mut Db) -> (bool, Finish) + Send>;

enum Msg {
    /// Runs inside the next group transaction.
    Grouped(Job),
    /// Runs alone, outside any transaction (a WAL checkpoint).
    Alone(Job),
}

/// At most this many jobs share one commit.
const MAX_GROUP: usize = 512;

/// A cheap handle on the database, shared by every task. The database
/// thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct Store {
    jobs: mpsc::Sender<Msg>,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its
    /// schema up to date.
    pub fn open(path: &Path) -> StoreResult<Store> {
        Self::from_connection(Connection::open(path)?)
    }

    /// An in-memory database, for unit tests.
    pub fn open_in_memory() -> StoreResult<Store> {
        Self::from_connection(Connection::open_in_memory()?)
    }

    fn from_connection(conn: Connection) -> StoreResult<Store> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // WAL: readers never wait for the writer. FULL: a commit is on disk
        // before it returns, so "accepted" and `client_ack` survive a power
        // cut as well as a `kill -9`.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        schema::migrate(&conn)?;
        let (jobs, queue) = mpsc::channel();
        let db = Db { conn };
        // Every request needs this thread: a panic outside a job ends the
        // process, so that it is restarted rather than answering nothing.
        claudemesh_protocol::critical_thread::spawn("claudemeshd-db", move || run(db, queue))
            .map_err(|e| StoreError::Commit(format!("cannot start the database thread: {e}")))?;
        Ok(Store { jobs })
    }

    fn submit<R, F, A>(&self, alone: bool, f: F, answer: A)
    where
        R: Send + 'static,
        F: FnOnce(&mut Db) -> StoreResult<R> + Send + 'static,
        A: FnOnce(StoreResult<R>) + Send + 'static,
    {
        let job: Job = Box::new(move |db| {
            let result = f(db);
            let ok = result.is_ok();
            let finish: Finish = Box::new(move |commit| {
                answer(match (result, commit) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Err(e), _) => Err(e),
                    (Ok(_), Err(e)) => Err(StoreError::Commit(e)),
                })
            });
            (ok, finish)
        });
        // If the thread is gone the job (and its answer) is dropped, which
        // the caller sees as `Cancelled`.
        let _ = self.jobs.send(if alone {
            Msg::Alone(job)
        } else {
            Msg::Grouped(job)
        });
    }

    /// Runs `f` on the database thread; the answer comes after the commit.
    pub async fn call<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Db) -> StoreResult<R> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(false, f, move |r| {
            let _ = tx.send(r);
        });
        rx.await.map_err(|_| StoreError::Cancelled)?
    }

    /// As [`Store::call`], blocking the current thread: for startup, tests,
    /// and other code outside the async world.
    pub fn call_sync<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Db) -> StoreResult<R> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        self.submit(false, f, move |r| {
            let _ = tx.send(r);
        });
        rx.recv().map_err(|_| StoreError::Cancelled)?
    }

    /// Writes the WAL back into the main file; called on clean shutdown so
    /// that the next start has nothing to replay.
    pub async fn checkpoint(&self) -> StoreResult<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            true,
            |db: &mut Db| {
                db.conn
                    .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
                    .map_err(StoreError::from)
            },
            move |r| {
                let _ = tx.send(r);
            },
        );
        rx.await.map_err(|_| StoreError::Cancelled)?
    }
}

/// The database thread: waits for a job, takes every job already queued
/// behind it, runs them in one transaction, commits, answers them all.
fn run(mut db: Db, queue: mpsc::Receiver<Msg>) {
    let mut next = queue.recv().ok();
    while let Some(msg) = next.take() {
        match msg {
            Msg::Alone(job) => {
                let (_, finish, _) = run_job(&mut db, job, false);
                if let Some(finish) = finish {
                    finish(Ok(()));
                }
            }
            Msg::Grouped(first) => {
                let mut group = vec![first];
                while group.len() < MAX_GROUP {
                    match queue.try_recv() {
                        Ok(Msg::Grouped(job)) => group.push(job),
                        Ok(alone) => {
                            next = Some(alone);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                run_group(&mut db, group);
            }
        }
        if next.is_none() {
            next = queue.recv().ok();
        }
    }
}

fn run_group(db: &mut Db, group: Vec<Job>) {
    // Without an outer transaction (BEGIN failed: the file is locked by
    // someone else past the busy timeout) each job's savepoint commits on
    // its own, which is still correct, only slower.
    let began = db.conn.execute_batch("BEGIN IMMEDIATE").is_ok();
    let mut finishers = Vec::with_capacity(group.len());
    for job in group {
        let (_, finish, released) = run_job(db, job, true);
        let Some(finish) = finish else { continue };
        if began {
            finishers.push(finish);
        } else {
            // Its savepoint was its own transaction: RELEASE committed it,
            // or failed (a full disk), and that is the job's outcome.
            if released.is_err() && !db.conn.is_autocommit() {
                let _ = db.conn.execute_batch("ROLLBACK");
            }
            finish(released);
        }
    }
    let commit = if began {
        db.conn.execute_batch("COMMIT").map_err(|e| {
            tracing::error!(error = %e, "a database commit failed");
            let _ = db.conn.execute_batch("ROLLBACK");
            e.to_string()
        })
    } else {
        Ok(())
    };
    for finish in finishers {
        finish(commit.clone());
    }
}

/// Runs one job inside its own savepoint (when `savepoint`), undoing it if
/// it fails or panics. A panicking job's caller sees `Cancelled`. Also
/// returns how the savepoint's RELEASE went: outside a group transaction
/// that RELEASE is the job's commit.
fn run_job(db: &mut Db, job: Job, savepoint: bool) -> (bool, Option<Finish>, Result<(), String>) {
    if savepoint && db.conn.execute_batch("SAVEPOINT job").is_err() {
        // Cannot isolate it: run it anyway, as SQLite would statement by
        // statement.
        return match catch_unwind(AssertUnwindSafe(|| job(db))) {
            Ok((ok, finish)) => (ok, Some(finish), Ok(())),
            Err(_) => (false, None, Ok(())),
        };
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| job(db)));
    let ok = matches!(outcome, Ok((true, _)));
    let mut released = Ok(());
    if savepoint {
        if !ok {
            let _ = db.conn.execute_batch("ROLLBACK TO job");
        }
        released = db
            .conn
            .execute_batch("RELEASE job")
            .map_err(|e| e.to_string());
    }
    match outcome {
        Ok((ok, finish)) => (ok, Some(finish), released),
        Err(_) => {
            tracing::error!("a database job panicked; its changes were rolled back");
            (false, None, released)
        }
    }
}

/// Stored strings that must parse back into an enum.
/// A row count or counter read from SQLite, as the `u32` the API reports.
fn count(n: i64) -> u32 {
    n.clamp(0, i64::from(u32::MAX)) as u32
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} `{value}`"))
}
