//! The broker's persistent state behind one interface, [`Store`], with two
//! backends: SQLite (one file in the data directory: the embedded default,
//! one node) and PostgreSQL (`--database-url`: the store several nodes can
//! share).
//!
//! Every line of SQL lives below this module. The rest of the crate calls
//! [`Store`]'s typed methods for reads and occasional writes (joins,
//! leaves, admin), and the one group-commit writer (`crate::writer`) hands
//! batches of typed [`BatchOp`]s to a [`BatchWriter`], which applies each
//! batch in one transaction.
//!
//! Dispatch is an enum over the two backends rather than a trait object:
//! there are exactly two, both known here; the methods are `async` (which
//! trait objects make awkward), and a match per method keeps each
//! backend's calling convention visible: SQLite's calls are synchronous,
//! run inline for short indexed reads and on the blocking pool for the slow
//! ones (as before PostgreSQL existed), PostgreSQL's are awaited on a
//! connection pool.
//!
//! Both backends pass the same behaviour suite (`broker/tests/store_suite.rs`).

mod batch;
pub mod postgres;
pub mod sqlite;
mod states;
mod types;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use claudemesh_protocol::wire::RecipientState;

pub use batch::{Applied, BatchOp, BatchOutcome, BatchWriter};
pub use sqlite::DB_FILE;
pub use types::*;

use crate::metrics::Metrics;
use postgres::PgStore;
use sqlite::SqliteStore;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database error: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No connection to the database server could be had.
    #[error("the database is unreachable: {0}")]
    Unavailable(String),
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

    /// True when the database server could not be reached (or the
    /// connection broke): nothing was stored, and the same write can
    /// succeed once it is back.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unavailable(_) => true,
            Self::Postgres(e) => e.is_closed() || e.as_db_error().is_none(),
            _ => false,
        }
    }
}

/// True when an error's text says the disk is full (see [`StoreError::is_disk_full`]).
pub fn is_disk_full_text(text: &str) -> bool {
    text.contains(DISK_FULL_TEXT)
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

/// Where the broker's state lives.
#[derive(Debug, Clone)]
pub enum StoreLocation {
    /// `broker.db` in this data directory.
    DataDir(PathBuf),
    /// A PostgreSQL database, by `postgres://` URL.
    Postgres(String),
}

/// The broker's database (see the module doc).
pub enum Store {
    Sqlite(Arc<SqliteStore>),
    Postgres(PgStore),
}

/// Runs a slow SQLite call on the blocking pool.
async fn blocking<T: Send + 'static>(
    s: &Arc<SqliteStore>,
    f: impl FnOnce(&SqliteStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let s = s.clone();
    tokio::task::spawn_blocking(move || f(&s))
        .await
        .map_err(|_| StoreError::Poisoned)?
}

impl Store {
    /// Opens (creating and migrating) the store at `location`.
    pub async fn open(location: &StoreLocation) -> Result<Self, StoreError> {
        match location {
            StoreLocation::DataDir(dir) => {
                let dir = dir.clone();
                let s = tokio::task::spawn_blocking(move || SqliteStore::open(&dir))
                    .await
                    .map_err(|_| StoreError::Poisoned)??;
                Ok(Self::Sqlite(Arc::new(s)))
            }
            StoreLocation::Postgres(url) => Ok(Self::Postgres(PgStore::connect(url).await?)),
        }
    }

    /// File descriptors the store may hold at once (its connections and
    /// their files), kept out of the connection caps.
    pub fn descriptors(&self) -> usize {
        match self {
            Self::Sqlite(_) => sqlite::DESCRIPTORS,
            Self::Postgres(_) => postgres::DESCRIPTORS,
        }
    }

    /// True for a database several nodes may share (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// Says which database this is, for messages (no password).
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(s) => format!("the SQLite database {}", s.path().display()),
            Self::Postgres(p) => format!("the PostgreSQL database {}", p.describe()),
        }
    }

    /// The schema version the database is at.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        match self {
            Self::Sqlite(s) => s.read(sqlite::schema::version),
            Self::Postgres(p) => p.schema_version().await,
        }
    }

    // ---- meshes ----

    /// Inserts a mesh; fails when the slug is taken.
    pub async fn insert_mesh(&self, mesh: &MeshInfo, now_ms: i64) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.write(|c| sqlite::meshes::insert(c, mesh, now_ms)),
            Self::Postgres(p) => p.insert_mesh(mesh, now_ms).await,
        }
    }

    /// The mesh whose id or slug is `slug_or_id` (ids win over slugs).
    pub async fn find_mesh(&self, slug_or_id: &str) -> Result<Option<MeshInfo>, StoreError> {
        match self {
            Self::Sqlite(s) => s.read(|c| sqlite::meshes::find(c, slug_or_id)),
            Self::Postgres(p) => p.find_mesh(slug_or_id).await,
        }
    }

    /// Every mesh, by slug.
    pub async fn list_meshes(&self) -> Result<Vec<MeshInfo>, StoreError> {
        match self {
            Self::Sqlite(s) => s.read(sqlite::meshes::list),
            Self::Postgres(p) => p.list_meshes().await,
        }
    }

    // ---- members ----

    /// The member of `mesh_id` with `pubkey`, revoked or not.
    pub async fn member_by_pubkey(
        &self,
        mesh_id: &str,
        pubkey: &str,
    ) -> Result<Option<MemberInfo>, StoreError> {
        match self {
            Self::Sqlite(s) => s.read(|c| sqlite::members::find_by_pubkey(c, mesh_id, pubkey)),
            Self::Postgres(p) => p.member_by_pubkey(mesh_id, pubkey).await,
        }
    }

    /// Members of `mesh_id` whose display name is `name`.
    pub async fn members_by_name(
        &self,
        mesh_id: &str,
        name: &str,
    ) -> Result<Vec<MemberInfo>, StoreError> {
        match self {
            Self::Sqlite(s) => s.read(|c| sqlite::members::find_by_name(c, mesh_id, name)),
            Self::Postgres(p) => p.members_by_name(mesh_id, name).await,
        }
    }

    /// In a cluster: which members of `mesh_id` are connected to some
    /// node, and when each was last seen. `None` on SQLite, whose one
    /// node's hub knows.
    pub async fn member_activity(
        &self,
        mesh_id: &str,
    ) -> Result<Option<MemberActivity>, StoreError> {
        match self {
            Self::Sqlite(_) => Ok(None),
            Self::Postgres(p) => p.member_activity(mesh_id).await.map(Some),
        }
    }

    /// Every member of `mesh_id`, revoked ones included, oldest first.
    pub async fn list_members(&self, mesh_id: &str) -> Result<Vec<MemberInfo>, StoreError> {
        match self {
            Self::Sqlite(s) => s.read(|c| sqlite::members::list(c, mesh_id)),
            Self::Postgres(p) => p.list_members(mesh_id).await,
        }
    }

    /// Inserts a member. False (and nothing changes) when the mesh already
    /// has a member with that public key.
    pub async fn insert_member(
        &self,
        member: &MemberInfo,
        invite_id: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(s) => s.write(|c| sqlite::members::insert(c, member, invite_id, now_ms)),
            Self::Postgres(p) => p.insert_member(member, invite_id, now_ms).await,
        }
    }

    /// Revokes a member and logs the revocation for running servers to
    /// see. Idempotent (a repeat is logged again, the first time is kept).
    pub async fn revoke_member(
        &self,
        mesh_id: &str,
        member_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.write(|c| sqlite::members::revoke(c, mesh_id, member_id, now_ms)),
            Self::Postgres(p) => p.revoke_member(mesh_id, member_id, now_ms).await,
        }
    }

    /// `/v1/leave`: revokes the member with this public key if its id is
    /// `member_id`; false (nothing changed) otherwise.
    pub async fn leave(
        &self,
        mesh_id: &str,
        member_id: &str,
        pubkey: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(s) => {
                let (mesh_id, member_id, pubkey) =
                    (mesh_id.to_owned(), member_id.to_owned(), pubkey.to_owned());
                blocking(s, move |s| {
                    s.write(
                        |c| match sqlite::members::find_by_pubkey(c, &mesh_id, &pubkey)? {
                            Some(m) if m.id == member_id => {
                                sqlite::members::revoke(c, &mesh_id, &member_id, now_ms)?;
                                Ok(true)
                            }
                            _ => Ok(false),
                        },
                    )
                })
                .await
            }
            Self::Postgres(p) => p.leave(mesh_id, member_id, pubkey, now_ms).await,
        }
    }

    /// Revocations logged after `seq`, oldest first (at most 1000).
    pub async fn revocations_since(&self, seq: i64) -> Result<Vec<Revocation>, StoreError> {
        match self {
            Self::Sqlite(s) => s.read(|c| sqlite::members::revocations_since(c, seq)),
            Self::Postgres(p) => p.revocations_since(seq).await,
        }
    }

    /// The last logged revocation, 0 if none.
    pub async fn last_revocation_seq(&self) -> Result<i64, StoreError> {
        match self {
            Self::Sqlite(s) => s.read(sqlite::members::last_revocation_seq),
            Self::Postgres(p) => p.last_revocation_seq().await,
        }
    }

    // ---- invites ----

    pub async fn insert_invite(&self, row: &InviteRow, now_ms: i64) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.write(|c| sqlite::invites::insert(c, row, now_ms)),
            Self::Postgres(p) => p.insert_invite(row, now_ms).await,
        }
    }

    pub async fn find_invite(&self, id: &str) -> Result<Option<InviteRow>, StoreError> {
        match self {
            Self::Sqlite(s) => s.read(|c| sqlite::invites::find(c, id)),
            Self::Postgres(p) => p.find_invite(id).await,
        }
    }

    /// Revokes an invite; false when no invite has that id.
    pub async fn revoke_invite(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(s) => s.write(|c| sqlite::invites::revoke(c, id, now_ms)),
            Self::Postgres(p) => p.revoke_invite(id, now_ms).await,
        }
    }

    /// Enrolls a key with a verified invite, atomically: of joins racing
    /// for the last use, exactly one gets it. A key that is already an
    /// active member gets its member back and uses nothing.
    pub async fn join(
        &self,
        req: JoinRequest,
    ) -> Result<Result<MemberInfo, JoinRefusal>, StoreError> {
        match self {
            Self::Sqlite(s) => {
                blocking(s, move |s| s.write(|c| sqlite::invites::join(c, &req))).await
            }
            Self::Postgres(p) => p.join(&req).await,
        }
    }

    // ---- messages ----

    /// The message this sender already sent with this client id, with its
    /// recipients' states (the answer to a repeated `send`).
    pub async fn sent_before(
        &self,
        mesh_id: &str,
        sender_member_id: &str,
        client_id: &str,
    ) -> Result<Option<(String, Vec<RecipientState>)>, StoreError> {
        match self {
            Self::Sqlite(s) => s.read(|c| {
                match sqlite::messages::find_by_client_id(c, mesh_id, sender_member_id, client_id)?
                {
                    Some(mid) => {
                        let states = sqlite::messages::recipient_states(c, &mid)?;
                        Ok(Some((mid, states)))
                    }
                    None => Ok(None),
                }
            }),
            Self::Postgres(p) => p.sent_before(mesh_id, sender_member_id, client_id).await,
        }
    }

    /// `message_status`: the recipients' states, when the message exists
    /// in this mesh and `member_id` sent or received it.
    pub async fn message_status(
        &self,
        message_id: &str,
        mesh_id: &str,
        member_id: &str,
    ) -> Result<Option<Vec<RecipientState>>, StoreError> {
        match self {
            Self::Sqlite(s) => s.read(|c| {
                if !sqlite::messages::involves_member(c, message_id, mesh_id, member_id)? {
                    return Ok(None);
                }
                Ok(Some(sqlite::messages::recipient_states(c, message_id)?))
            }),
            Self::Postgres(p) => p.message_status(message_id, mesh_id, member_id).await,
        }
    }

    /// Undelivered, unexpired copies for `member_id` numbered up to
    /// `max_seq`, oldest first.
    pub async fn pending_for_member(
        &self,
        member_id: &str,
        now_ms: i64,
        max_seq: i64,
    ) -> Result<Vec<PendingPush>, StoreError> {
        match self {
            Self::Sqlite(s) => {
                let member_id = member_id.to_owned();
                blocking(s, move |s| {
                    s.read(|c| sqlite::messages::pending_for_member(c, &member_id, now_ms, max_seq))
                })
                .await
            }
            Self::Postgres(p) => p.pending_for_member(member_id, now_ms, max_seq).await,
        }
    }

    /// The highest message number stored (0 when there is none).
    pub async fn max_message_seq(&self) -> Result<i64, StoreError> {
        match self {
            Self::Sqlite(s) => s.read(sqlite::messages::max_seq),
            Self::Postgres(p) => p.max_message_seq().await,
        }
    }

    /// Undelivered copies in the database (the `queue_depth` gauge).
    pub async fn queue_depth(&self) -> Result<i64, StoreError> {
        match self {
            Self::Sqlite(s) => blocking(s, |s| s.read(sqlite::messages::queue_depth)).await,
            Self::Postgres(p) => p.queue_depth().await,
        }
    }

    // ---- settings ----

    pub async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        match self {
            Self::Sqlite(s) => s.read(|c| sqlite::settings::get(c, key)),
            Self::Postgres(p) => p.setting(key).await,
        }
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.write(|c| sqlite::settings::set(c, key, value)),
            Self::Postgres(p) => p.set_setting(key, value).await,
        }
    }

    // ---- operations ----

    /// What `/healthz` asks: `Ok` when a fresh connection reaches the
    /// database and reads the tables serving needs; otherwise one sentence
    /// saying what failed (naming the database).
    pub async fn health(&self) -> Result<(), String> {
        match self {
            Self::Sqlite(s) => {
                let path = s.path().to_owned();
                tokio::task::spawn_blocking(move || sqlite::health::check(&path))
                    .await
                    .unwrap_or_else(|e| Err(format!("the database check did not finish: {e}")))
            }
            Self::Postgres(p) => p.health().await,
        }
    }

    /// The group-commit writer's connection. Called on the async runtime;
    /// the returned writer is used from the writer's own thread.
    pub fn batch_writer(&self, metrics: Arc<Metrics>) -> Result<BatchWriter, StoreError> {
        match self {
            Self::Sqlite(s) => Ok(BatchWriter::Sqlite(s.batch_writer(metrics)?)),
            Self::Postgres(p) => Ok(BatchWriter::Postgres(p.batch_writer())),
        }
    }
}
