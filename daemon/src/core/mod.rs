//! The daemon's shared state and the operations on it.
//!
//! [`Core`] is what every task holds (behind an `Arc`): the store, the
//! keystore, the joined meshes with their links, and the live sessions.
//! The socket server turns requests into calls on it; each mesh's worker
//! turns broker frames into calls on it. Locks here are std mutexes held
//! for a few statements and never across an `.await`; disk work goes
//! through [`Store::call`].
//!
//! One file per concern: `attach` (sessions coming and going), `session`
//! (the handle a connection keeps, with its session's requests), `outbox`
//! (sending), `inbox` (receiving and showing), `worker` (broker frames and
//! resync after a reconnect), `meshes` (config reloads), `status` (what
//! ctl and `list_peers` see), `wake` (a `Stop` hook waiting for the
//! messages that wake its idle session).

pub mod attach;
mod confirm;
mod inbox;
mod meshes;
mod outbox;
mod outbox_rules;
mod session;
mod status;
mod wake;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use claudemesh_protocol::ipc::{IpcError, IpcErrorCode, RecipientView};
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::config::MeshConfig;
use crate::keystore::Keystore;
use crate::mesh::Mesh;
use crate::paths::Paths;
use crate::sessions::Sessions;
use crate::store::{Store, StoreError};

pub use attach::SessionChange;
pub use outbox::SendOutcome;
pub use session::SessionHandle;
pub use wake::{MAX_WAKE_MESSAGES, Woken};

/// Choices made at start.
#[derive(Debug, Clone, Default)]
pub struct CoreOptions {
    /// Whether the embedded local mesh runs (`--local`, the default).
    pub local_enabled: bool,
    /// Where "now" comes from (the system clock unless a test pins it).
    pub clock: Clock,
}

pub struct Core {
    pub paths: Paths,
    pub store: Store,
    pub keystore: Arc<Keystore>,
    /// This installation's id (session ids of two machines never clash).
    pub install_id: String,
    pub host: String,
    pub options: CoreOptions,
    pub sessions: Sessions,
    meshes: RwLock<HashMap<String, Arc<Mesh>>>,
    /// Joined meshes that could not be started (no key, bad URL), with why.
    problems: Mutex<HashMap<String, (MeshConfig, String)>>,
    /// Senders waiting (briefly) for their broker's ack, by outbox id.
    waiters: Mutex<HashMap<String, oneshot::Sender<SendOutcome>>>,
    /// Config reloads run one at a time.
    reload: tokio::sync::Mutex<Option<std::time::SystemTime>>,
    /// The config's `defaultMesh` at the last reload.
    default_mesh: RwLock<Option<String>>,
    /// Set once the previous run's sessions are back in `sessions`: mesh
    /// workers wait for it, so that a push naming a restored session never
    /// arrives before that session does.
    restored: tokio::sync::watch::Sender<bool>,
    next_id: AtomicU64,
}

impl Core {
    pub fn new(
        paths: Paths,
        store: Store,
        keystore: Keystore,
        options: CoreOptions,
    ) -> Result<Arc<Core>, StoreError> {
        let install_id = store.call_sync(|db| db.install_id())?;
        Ok(Arc::new(Core {
            paths,
            store,
            keystore: Arc::new(keystore),
            install_id,
            host: crate::host::host_name(),
            options,
            sessions: Sessions::default(),
            meshes: RwLock::new(HashMap::new()),
            problems: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            reload: tokio::sync::Mutex::new(None),
            default_mesh: RwLock::new(None),
            restored: tokio::sync::watch::Sender::new(false),
            next_id: AtomicU64::new(1),
        }))
    }

    /// Now, in milliseconds since the Unix epoch, from [`CoreOptions::clock`].
    pub fn now_ms(&self) -> i64 {
        self.options.clock.now_ms()
    }

    /// A number unique in this process: connection ids, request ids.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn mesh(&self, mesh_id: &str) -> Option<Arc<Mesh>> {
        self.meshes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(mesh_id)
            .cloned()
    }

    pub fn meshes(&self) -> Vec<Arc<Mesh>> {
        let mut all: Vec<_> = self
            .meshes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| (a.config.joined_at, a.slug()).cmp(&(b.config.joined_at, b.slug())));
        all
    }

    /// The mesh `slug_or_id` names, or the default among the running
    /// meshes ([`crate::config::pick_default`]).
    pub fn resolve_mesh(&self, slug_or_id: Option<&str>) -> Option<Arc<Mesh>> {
        let all = self.meshes();
        match slug_or_id.map(str::trim).filter(|s| !s.is_empty()) {
            Some(name) => all
                .iter()
                .find(|m| m.id() == name)
                .or_else(|| all.iter().find(|m| m.slug() == name))
                .cloned(),
            None => {
                let explicit = self
                    .default_mesh
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                crate::config::pick_default(explicit.as_deref(), &all, |m| {
                    (m.id(), m.slug(), m.config.local)
                })
                .cloned()
            }
        }
    }

    fn set_default_mesh(&self, mesh_id: Option<String>) {
        *self.default_mesh.write().unwrap_or_else(|p| p.into_inner()) = mesh_id;
    }

    fn meshes_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Mesh>>> {
        self.meshes.write().unwrap_or_else(|p| p.into_inner())
    }

    fn problems(&self) -> MutexGuard<'_, HashMap<String, (MeshConfig, String)>> {
        self.problems.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn waiters(&self) -> MutexGuard<'_, HashMap<String, oneshot::Sender<SendOutcome>>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops every link, closing the connections (sessions stay in the
    /// store, and are reopened by the next start).
    pub async fn shutdown(&self) {
        let meshes: Vec<_> = self.meshes_mut().drain().map(|(_, m)| m).collect();
        for mesh in meshes {
            mesh.stop().await;
        }
        let _ = self.store.checkpoint().await;
    }

    /// The display name a peer goes by, if known.
    fn name_of(&self, mesh: &Mesh, member: &str, session_id: Option<&str>) -> Option<String> {
        let sid = session_id?;
        if member == mesh.pubkey
            && let Some(s) = self.sessions.lock().get(sid)
        {
            return Some(s.row.display_name.clone());
        }
        mesh.peer_name(member, sid)
    }

    fn recipient_views(
        &self,
        mesh: Option<&Mesh>,
        recipients: impl IntoIterator<
            Item = (
                String,
                Option<String>,
                claudemesh_protocol::wire::DeliveryState,
            ),
        >,
    ) -> Vec<RecipientView> {
        recipients
            .into_iter()
            .map(|(member, session_id, state)| RecipientView {
                display_name: mesh.and_then(|m| self.name_of(m, &member, session_id.as_deref())),
                member,
                session_id,
                state,
            })
            .collect()
    }
}

/// A store failure as the client sees it: no detail beyond "internal",
/// the detail goes to the log.
pub fn internal(e: StoreError) -> IpcError {
    if e.is_disk_full() {
        tracing::error!(error = %e, "the disk is full: a write was refused");
        return IpcError::new(
            IpcErrorCode::StorageFull,
            "the daemon's disk is full, so nothing was stored; free space on the disk that \
             holds the daemon's data directory and try again (no restart needed)",
        );
    }
    tracing::error!(error = %e, "a database operation failed");
    IpcError::new(
        IpcErrorCode::Internal,
        "the daemon could not read or write its database; see its log",
    )
}
