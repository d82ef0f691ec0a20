//! One joined mesh at run time: its config, its member key (in memory
//! only), its broker link, and what the daemon knows of its peers.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use claudemesh_protocol::MemberSecretKey;
use claudemesh_protocol::ipc::LinkState;
use claudemesh_protocol::wire::{Peer, PeerEvent};
use tokio::task::JoinHandle;

use crate::config::MeshConfig;
use crate::link::{LinkHandle, LinkStatus};

pub struct Mesh {
    pub config: MeshConfig,
    /// The broker URL actually used (config, or `CLAUDEMESH_BROKER_URL`).
    pub broker_url: String,
    pub key: MemberSecretKey,
    /// `key`'s public half, 64 hex.
    pub pubkey: String,
    pub link: LinkHandle,
    peers: Mutex<BTreeMap<(String, String), Peer>>,
    /// Sessions ended while the link was down: closed at the broker on the
    /// next connect.
    pending_closes: Mutex<HashSet<String>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// When the current connection's hello was accepted (ms, core clock).
    connected_at: Mutex<Option<i64>>,
    /// Display names seen in the broker's peer lists and events since the
    /// daemon started: right after a reconnect, a name seen before belongs
    /// to a peer that may not be back yet, not to no one.
    seen_names: Mutex<HashSet<String>>,
    /// A message was handed to the link: its worker arms the retry timer
    /// (which otherwise sleeps, see `Core::mesh_worker`).
    outbox_kick: tokio::sync::Notify,
}

/// At most this many names are remembered in [`Mesh::has_seen_name`]'s set
/// (a bound whatever the broker sends); past it new names are not added.
const MAX_SEEN_NAMES: usize = 4096;

impl Mesh {
    pub fn new(
        config: MeshConfig,
        broker_url: String,
        key: MemberSecretKey,
        link: LinkHandle,
    ) -> Self {
        let pubkey = key.public_key().to_hex();
        Self {
            config,
            broker_url,
            key,
            pubkey,
            link,
            peers: Mutex::new(BTreeMap::new()),
            pending_closes: Mutex::new(HashSet::new()),
            worker: Mutex::new(None),
            connected_at: Mutex::new(None),
            seen_names: Mutex::new(HashSet::new()),
            outbox_kick: tokio::sync::Notify::new(),
        }
    }

    /// A message was transmitted and may need sending again.
    pub fn kick_outbox(&self) {
        // A permit is kept when the worker is busy: no kick is lost.
        self.outbox_kick.notify_one();
    }

    /// Resolves at the next [`Mesh::kick_outbox`].
    pub async fn outbox_kicked(&self) {
        self.outbox_kick.notified().await;
    }

    pub fn id(&self) -> &str {
        &self.config.mesh_id
    }

    pub fn slug(&self) -> &str {
        &self.config.slug
    }

    pub fn link_status(&self) -> LinkStatus {
        self.link.status()
    }

    pub fn is_revoked(&self) -> bool {
        self.link.status().state == LinkState::Revoked
    }

    pub fn mark_connected(&self, now_ms: i64) {
        *lock(&self.connected_at) = Some(now_ms);
    }

    /// When the last connect was (ms): right after a broker restart, peers
    /// are still coming back and names may not resolve yet.
    pub fn connected_at(&self) -> Option<i64> {
        *lock(&self.connected_at)
    }

    pub fn set_worker(&self, worker: JoinHandle<()>) {
        *lock(&self.worker) = Some(worker);
    }

    /// Stops the link (closing the connection) and the worker.
    pub async fn stop(&self) {
        self.link.shutdown().await;
        if let Some(worker) = lock(&self.worker).take() {
            worker.abort();
        }
    }

    /// The broker's full list (hello_ack, peers_list) replaces the cache.
    pub fn replace_peers(&self, peers: Vec<Peer>) {
        self.remember_names(peers.iter());
        let mut map = lock(&self.peers);
        map.clear();
        for p in peers {
            map.insert((p.member.clone(), p.session_id.clone()), p);
        }
    }

    pub fn apply_peer_event(&self, event: PeerEvent, peer: &Peer) {
        self.remember_names(std::iter::once(peer));
        let mut map = lock(&self.peers);
        let key = (peer.member.clone(), peer.session_id.clone());
        match event {
            PeerEvent::PeerLeft => {
                map.remove(&key);
            }
            PeerEvent::PeerJoined | PeerEvent::PeerUpdated => {
                map.insert(key, peer.clone());
            }
        }
    }

    fn remember_names<'a>(&self, peers: impl Iterator<Item = &'a Peer>) {
        let mut seen = lock(&self.seen_names);
        for p in peers {
            if seen.len() >= MAX_SEEN_NAMES {
                break;
            }
            if !seen.contains(&p.display_name) {
                seen.insert(p.display_name.clone());
            }
        }
    }

    /// True when a peer of this name was listed since the daemon started.
    pub fn has_seen_name(&self, name: &str) -> bool {
        lock(&self.seen_names).contains(name.trim())
    }

    /// One cached peer's display name, without copying the list.
    pub fn peer_name(&self, member: &str, session_id: &str) -> Option<String> {
        lock(&self.peers)
            .get(&(member.to_owned(), session_id.to_owned()))
            .map(|p| p.display_name.clone())
    }

    /// The cached peers as the broker last described them.
    pub fn cached_peers(&self) -> Vec<Peer> {
        lock(&self.peers).values().cloned().collect()
    }

    pub fn add_pending_close(&self, session_id: &str) {
        lock(&self.pending_closes).insert(session_id.to_owned());
    }

    pub fn cancel_pending_close(&self, session_id: &str) {
        lock(&self.pending_closes).remove(session_id);
    }

    pub fn take_pending_closes(&self) -> Vec<String> {
        lock(&self.pending_closes).drain().collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
