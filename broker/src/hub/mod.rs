//! The live state of every mesh: connections, sessions (peers), display
//! names and send-rate buckets. In memory only; the database holds what
//! must survive a restart.
//!
//! One mutex per mesh. Everything done under it is short and never waits:
//! frames are handed to connections through non-blocking queues, so a
//! presence change, a route lookup and the fan-out of a message each hold
//! the lock for microseconds.

pub mod conn;
pub mod names;
pub mod presence;
pub mod ratelimit;
mod replica;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub use conn::{ConnHandle, ConnId, close_frame};
pub use presence::{
    ConnEntry, Departure, MeshState, PresenceChange, PresenceNews, SessionError, SessionKey,
    SessionSpec,
};

/// One mesh's live state.
pub struct Mesh {
    pub id: String,
    state: Mutex<MeshState>,
}

impl Mesh {
    /// Locks the mesh. A poisoned lock (a panic elsewhere) is recovered:
    /// the state is plain data and stays usable.
    pub fn lock(&self) -> MutexGuard<'_, MeshState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every mesh the server has seen a connection for.
#[derive(Default)]
pub struct Hub {
    meshes: Mutex<HashMap<String, Arc<Mesh>>>,
    next_conn: AtomicU64,
    shutting_down: AtomicBool,
    /// In a cluster: where every mesh announces changes to this node's
    /// sessions.
    outbox: Option<tokio::sync::mpsc::UnboundedSender<PresenceNews>>,
}

impl Hub {
    pub fn new() -> Self {
        Self::default()
    }

    /// A hub whose meshes announce changes to their sessions on `tx` (a
    /// node of a cluster).
    pub fn clustered(tx: tokio::sync::mpsc::UnboundedSender<PresenceNews>) -> Self {
        Self {
            outbox: Some(tx),
            ..Self::default()
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Mesh>>> {
        self.meshes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The mesh with `id`, created empty on first use.
    pub fn mesh(&self, id: &str) -> Arc<Mesh> {
        self.map()
            .entry(id.to_owned())
            .or_insert_with(|| {
                let mut state = MeshState::default();
                if let Some(tx) = &self.outbox {
                    state.set_outbox(id.to_owned(), tx.clone());
                }
                Arc::new(Mesh {
                    id: id.to_owned(),
                    state: Mutex::new(state),
                })
            })
            .clone()
    }

    /// In a cluster: resolves once every presence change announced so far
    /// (by any mesh of this node) is committed to the shared table, so
    /// that every node can find those sessions there; `None` on one node.
    /// A frame that acknowledges a session waits on it (issue 24, part 1:
    /// a session is addressable everywhere once acknowledged).
    pub fn presence_committed(&self) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let tx = self.outbox.as_ref()?;
        let (done, committed) = tokio::sync::oneshot::channel();
        tx.send(PresenceNews::Committed(done)).ok()?;
        Some(committed)
    }

    /// The mesh with `id` if it has ever had a connection.
    pub fn find(&self, id: &str) -> Option<Arc<Mesh>> {
        self.map().get(id).cloned()
    }

    pub fn meshes(&self) -> Vec<Arc<Mesh>> {
        self.map().values().cloned().collect()
    }

    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Asks every connection to close (graceful shutdown: 1001). From now
    /// on departures make no presence noise: everyone is leaving.
    pub fn close_all(&self, code: u16, reason: &str) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for mesh in self.meshes() {
            mesh.lock().close_all(code, reason);
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Closes the member's connections (1008 `revoked`) and removes its
    /// sessions at once, with `peer_left` to the others.
    pub fn revoke_member(&self, mesh_id: &str, member_id: &str) {
        if let Some(mesh) = self.find(mesh_id) {
            mesh.lock().revoke_member(member_id);
        }
    }

    /// Live connections, over all meshes.
    pub fn connection_count(&self) -> usize {
        self.meshes().iter().map(|m| m.lock().conn_count()).sum()
    }

    /// Listed sessions (live or in their grace period), over all meshes.
    pub fn session_count(&self) -> usize {
        self.meshes().iter().map(|m| m.lock().session_count()).sum()
    }
}
