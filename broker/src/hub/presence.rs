//! Sessions and presence inside one mesh: who is connected, under which
//! unique display name, in which groups; the grace period that hides a
//! quick reconnect; session takeover; and the presence events.

use std::collections::HashMap;

use axum::extract::ws::{Message, Utf8Bytes};
use claudemesh_protocol::wire::{
    ConnectionRole, ErrorCode, Peer, PeerEvent, PeerStatus, ServerFrame,
};

use claudemesh_protocol::limits::{
    MAX_PEERS_LIST_BYTES, MAX_SESSIONS_PER_CONNECTION, MAX_SESSIONS_PER_MEMBER,
};

use super::conn::{ConnHandle, ConnId};
pub use super::names::{PeerList, bounded_peers, normalize_group, normalize_groups, sanitize_name};
use super::ratelimit::TokenBucket;

/// A session is named by its member and its `sessionId`.
pub type SessionKey = (String, String);

/// One authenticated connection.
pub struct ConnEntry {
    pub handle: ConnHandle,
    pub member_id: String,
    pub pubkey: String,
    pub role: ConnectionRole,
    /// Sessions this connection carries (one for `role:"session"`).
    pub sessions: Vec<String>,
}

/// One listed session.
pub struct SessionEntry {
    pub peer: Peer,
    /// The connection carrying it; `None` during the grace period.
    pub conn: Option<ConnId>,
    /// Bumped on every attach and detach, so that a grace timer started
    /// for an earlier detach does nothing.
    pub epoch: u64,
    /// The display name asked for, before de-duplication.
    pub(super) requested_name: String,
    /// `Some(node)` for a session carried by another node of a cluster
    /// (a replica of that node's presence row).
    pub node: Option<String>,
    /// For another node's session: whether it is live there (false: in
    /// its grace period).
    pub remote_live: bool,
}

impl SessionEntry {
    /// True for a session live on another node: messages for it are
    /// pushed there, and count as delivered.
    pub fn is_live_elsewhere(&self) -> bool {
        self.node.is_some() && self.remote_live
    }
}

/// A change to a session this node carries, for the other nodes of a
/// cluster (see [`MeshState::set_outbox`]).
#[derive(Debug, Clone)]
pub struct PresenceChange {
    pub mesh_id: String,
    pub key: SessionKey,
    /// `None`: the session left.
    pub peer: Option<Peer>,
    /// Carried by a connection now (false: in its grace period).
    pub live: bool,
    /// Taking back a row this node held before another node took it for
    /// dead: only a row still naming this node (or none) is written.
    pub retake: bool,
}

/// What the meshes of a cluster node tell its presence writer, in order.
#[derive(Debug)]
pub enum PresenceNews {
    /// Boxed: a change holds a whole peer, the other variant one pointer.
    Change(Box<PresenceChange>),
    /// Answered once every change sent before it is committed to the
    /// shared table (see [`crate::hub::Hub::presence_committed`]).
    Committed(tokio::sync::oneshot::Sender<()>),
}

/// What a connection says about a session it opens. `None` keeps the
/// session's current value (a hello carries no summary, groups or status).
#[derive(Debug, Clone, Default)]
pub struct SessionSpec {
    pub session_id: String,
    pub display_name: Option<String>,
    pub cwd: String,
    pub host: String,
    pub summary: Option<String>,
    pub groups: Option<Vec<String>>,
    pub status: Option<PeerStatus>,
}

/// Why a session-scoped request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// The session is not carried by this connection.
    Unknown,
    /// The connection already carries [`MAX_SESSIONS_PER_CONNECTION`].
    TooManyOnConnection,
    /// The member already has [`MAX_SESSIONS_PER_MEMBER`] listed.
    TooManyForMember,
}

impl SessionError {
    /// The error code and sentence sent to the client.
    pub fn code_and_message(self, session_id: &str) -> (ErrorCode, String) {
        match self {
            Self::Unknown => (
                ErrorCode::UnknownSession,
                format!("session {session_id} is not open on this connection"),
            ),
            Self::TooManyOnConnection => (
                ErrorCode::TooManySessions,
                format!(
                    "a connection carries at most {MAX_SESSIONS_PER_CONNECTION} sessions; close one first"
                ),
            ),
            Self::TooManyForMember => (
                ErrorCode::TooManySessions,
                format!(
                    "a member has at most {MAX_SESSIONS_PER_MEMBER} sessions listed; close one first"
                ),
            ),
        }
    }
}

/// Why a connection is leaving the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Departure {
    /// It dropped or closed: its sessions enter the grace period.
    Dropped,
    /// Graceful shutdown: everything goes, silently.
    Shutdown,
}

#[derive(Default)]
pub struct MeshState {
    pub(super) conns: HashMap<ConnId, ConnEntry>,
    pub(super) by_member: HashMap<String, Vec<ConnId>>,
    pub(super) member_by_pubkey: HashMap<String, String>,
    pub(super) sessions: HashMap<SessionKey, SessionEntry>,
    pub(super) names: HashMap<String, SessionKey>,
    pub(super) buckets: HashMap<String, TokenBucket>,
    pub(super) receipt_buckets: HashMap<String, TokenBucket>,
    pub(super) epoch: u64,
    /// member id → when its last connection closed (ms), since start.
    pub(super) last_seen: HashMap<String, i64>,
    /// In a cluster: where changes to this node's sessions go, with the
    /// mesh id.
    pub(super) outbox: Option<(String, tokio::sync::mpsc::UnboundedSender<PresenceNews>)>,
}

pub(super) fn event(kind: PeerEvent, peer: &Peer) -> Message {
    let frame = ServerFrame::Event {
        event: kind,
        peer: peer.clone(),
    };
    Message::Text(Utf8Bytes::from(frame.to_json()))
}

pub(super) fn same_but_time(a: &Peer, b: &Peer) -> bool {
    a.display_name == b.display_name
        && a.status == b.status
        && a.summary == b.summary
        && a.groups == b.groups
        && a.cwd == b.cwd
        && a.host == b.host
}

impl MeshState {
    /// Connection `conn_id` no longer carries `session_id` (another
    /// connection, here or on another node, took it over).
    pub(super) fn lose_session(&mut self, conn_id: ConnId, session_id: &str) {
        let Some(oc) = self.conns.get_mut(&conn_id) else {
            return;
        };
        oc.sessions.retain(|s| s != session_id);
        match oc.role {
            ConnectionRole::Session => oc.handle.close(1000, ErrorCode::SessionTakenOver.as_str()),
            ConnectionRole::Daemon => {
                let err = ServerFrame::error(
                    ErrorCode::SessionTakenOver,
                    format!(
                        "session {session_id} was taken over by another connection of this member"
                    ),
                    None,
                );
                oc.handle.send_text(err.to_json());
            }
        }
    }

    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn conn(&self, id: ConnId) -> Option<&ConnEntry> {
        self.conns.get(&id)
    }

    pub fn conns(&self) -> impl Iterator<Item = &ConnEntry> {
        self.conns.values()
    }

    /// Sessions of a member listed now (live or in their grace period).
    pub fn member_session_count(&self, member_id: &str) -> usize {
        self.sessions.keys().filter(|k| k.0 == member_id).count()
    }

    /// The connections of a member.
    pub fn member_conns(&self, member_id: &str) -> &[ConnId] {
        self.by_member.get(member_id).map_or(&[], Vec::as_slice)
    }

    /// The member id of a public key that has connected since start.
    /// When the member's last connection closed, if it did since start.
    pub fn last_seen(&self, member_id: &str) -> Option<i64> {
        self.last_seen.get(member_id).copied()
    }

    pub fn member_of(&self, pubkey: &str) -> Option<&str> {
        self.member_by_pubkey.get(pubkey).map(String::as_str)
    }

    pub fn session(&self, key: &SessionKey) -> Option<&SessionEntry> {
        self.sessions.get(key)
    }

    pub fn session_by_name(&self, name: &str) -> Option<(&SessionKey, &SessionEntry)> {
        let key = self.names.get(name)?;
        self.sessions.get(key).map(|s| (key, s))
    }

    pub fn sessions(&self) -> impl Iterator<Item = (&SessionKey, &SessionEntry)> {
        self.sessions.iter()
    }

    /// True when `conn_id` carries session `session_id`.
    pub fn carries(&self, conn_id: ConnId, session_id: &str) -> bool {
        self.conns
            .get(&conn_id)
            .is_some_and(|c| c.sessions.iter().any(|s| s == session_id))
    }

    /// Queues `msg` on every connection but `except`.
    pub fn broadcast(&self, msg: &Message, except: Option<ConnId>) {
        for (id, c) in &self.conns {
            if Some(*id) != except {
                c.handle.send(msg.clone());
            }
        }
    }

    /// Queues `msg` on every connection of a member.
    pub fn send_to_member(&self, member_id: &str, msg: &Message) {
        for id in self.member_conns(member_id) {
            if let Some(c) = self.conns.get(id) {
                c.handle.send(msg.clone());
            }
        }
    }

    /// One send token for the member, if it has one.
    pub fn take_token(&mut self, member_id: &str, rate: f64, burst: f64) -> bool {
        self.buckets
            .entry(member_id.to_owned())
            .or_insert_with(|| TokenBucket::full(burst))
            .take(rate, burst)
    }

    /// One `seen` receipt token for the member, if it has one.
    pub fn take_receipt_token(&mut self, member_id: &str, rate: f64, burst: f64) -> bool {
        self.receipt_buckets
            .entry(member_id.to_owned())
            .or_insert_with(|| TokenBucket::full(burst))
            .take(rate, burst)
    }

    /// Registers an authenticated connection.
    pub fn add_conn(&mut self, entry: ConnEntry) {
        self.by_member
            .entry(entry.member_id.clone())
            .or_default()
            .push(entry.handle.id);
        self.member_by_pubkey
            .insert(entry.pubkey.clone(), entry.member_id.clone());
        self.conns.insert(entry.handle.id, entry);
    }

    pub(super) fn next_epoch(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }

    /// A unique display name for `key`: `requested`, else `requested-2`, …
    pub(super) fn assign_name(&mut self, requested: &str, key: &SessionKey) -> String {
        let free = |names: &HashMap<String, SessionKey>, n: &str| {
            names.get(n).is_none_or(|owner| owner == key)
        };
        let mut name = requested.to_owned();
        let mut n = 2u32;
        while !free(&self.names, &name) {
            name = format!("{requested}-{n}");
            n += 1;
        }
        self.names.insert(name.clone(), key.clone());
        name
    }

    pub(super) fn release_name(&mut self, name: &str, key: &SessionKey) {
        if self.names.get(name) == Some(key) {
            self.names.remove(name);
        }
    }

    pub(super) fn drop_session(&mut self, key: &SessionKey) -> Option<SessionEntry> {
        let entry = self.sessions.remove(key)?;
        self.release_name(&entry.peer.display_name, key);
        Some(entry)
    }

    /// Opens (or takes over, or re-attaches after a drop) a session on
    /// `conn_id`, and returns its unique display name.
    ///
    /// A new session is announced with `peer_joined`. An existing one, live
    /// on another connection or in its grace period, moves here silently;
    /// the other connection loses it (a `role:"session"` connection is
    /// closed, a daemon gets an `error` naming the session). Only a visible
    /// change (name, cwd, …) is announced, as `peer_updated`.
    pub fn open_session(
        &mut self,
        conn_id: ConnId,
        spec: SessionSpec,
        now_ms: i64,
    ) -> Result<String, SessionError> {
        let Some(conn) = self.conns.get(&conn_id) else {
            return Err(SessionError::Unknown);
        };
        let member_id = conn.member_id.clone();
        let pubkey = conn.pubkey.clone();
        let carried = conn.sessions.len();
        let key: SessionKey = (member_id.clone(), spec.session_id.clone());
        let requested = sanitize_name(spec.display_name.as_deref(), &spec.session_id);
        let epoch = self.next_epoch();

        if let Some(existing) = self.sessions.get_mut(&key) {
            let old_conn = existing.conn.replace(conn_id);
            existing.epoch = epoch;
            // A session coming from another node is this node's now.
            existing.node = None;
            let before = existing.peer.clone();
            let mut peer = before.clone();
            peer.cwd = spec.cwd;
            peer.host = spec.host;
            if let Some(s) = spec.summary {
                peer.summary = s;
            }
            if let Some(g) = spec.groups {
                peer.groups = normalize_groups(g);
            }
            if let Some(s) = spec.status {
                peer.status = s;
            }
            let rename = existing.requested_name != requested;
            existing.requested_name = requested.clone();
            if rename {
                self.release_name(&before.display_name, &key);
                peer.display_name = self.assign_name(&requested, &key);
            }
            let name = peer.display_name.clone();
            let changed = !same_but_time(&before, &peer);
            if let Some(e) = self.sessions.get_mut(&key) {
                e.peer = peer.clone();
            }
            if let Some(old) = old_conn.filter(|o| *o != conn_id) {
                self.lose_session(old, &key.1);
            }
            if let Some(c) = self.conns.get_mut(&conn_id)
                && !c.sessions.contains(&key.1)
            {
                c.sessions.push(key.1.clone());
            }
            if changed {
                self.broadcast(&event(PeerEvent::PeerUpdated, &peer), Some(conn_id));
            }
            self.publish(&key);
            return Ok(name);
        }

        if carried >= MAX_SESSIONS_PER_CONNECTION {
            return Err(SessionError::TooManyOnConnection);
        }
        if self.member_session_count(&member_id) >= MAX_SESSIONS_PER_MEMBER {
            return Err(SessionError::TooManyForMember);
        }
        let name = self.assign_name(&requested, &key);
        let peer = Peer {
            member: pubkey,
            session_id: spec.session_id.clone(),
            display_name: name.clone(),
            status: spec.status.unwrap_or_default(),
            summary: spec.summary.unwrap_or_default(),
            groups: normalize_groups(spec.groups.unwrap_or_default()),
            cwd: spec.cwd,
            host: spec.host,
            connected_at: now_ms,
        };
        let msg = event(PeerEvent::PeerJoined, &peer);
        self.sessions.insert(
            key.clone(),
            SessionEntry {
                peer,
                conn: Some(conn_id),
                epoch,
                requested_name: requested,
                node: None,
                remote_live: false,
            },
        );
        if let Some(c) = self.conns.get_mut(&conn_id) {
            c.sessions.push(key.1.clone());
        }
        self.broadcast(&msg, Some(conn_id));
        self.publish(&key);
        Ok(name)
    }

    /// Closes a session carried by `conn_id` (`session_close`): it leaves at
    /// once, with `peer_left`.
    pub fn close_session(&mut self, conn_id: ConnId, session_id: &str) -> Result<(), SessionError> {
        let member_id = match self.conns.get_mut(&conn_id) {
            Some(c) if c.sessions.iter().any(|s| s == session_id) => {
                c.sessions.retain(|s| s != session_id);
                c.member_id.clone()
            }
            _ => return Err(SessionError::Unknown),
        };
        let key = (member_id, session_id.to_owned());
        if let Some(entry) = self.drop_session(&key) {
            self.broadcast(&event(PeerEvent::PeerLeft, &entry.peer), Some(conn_id));
            self.publish(&key);
        }
        Ok(())
    }

    /// Changes a session carried by `conn_id`; `change` returns whether it
    /// changed anything, and a change is announced with `peer_updated`.
    pub fn update_session(
        &mut self,
        conn_id: ConnId,
        session_id: &str,
        change: impl FnOnce(&mut Peer) -> bool,
    ) -> Result<(), SessionError> {
        let Some(conn) = self.conns.get(&conn_id) else {
            return Err(SessionError::Unknown);
        };
        if !conn.sessions.iter().any(|s| s == session_id) {
            return Err(SessionError::Unknown);
        }
        let key = (conn.member_id.clone(), session_id.to_owned());
        let Some(entry) = self.sessions.get_mut(&key) else {
            return Err(SessionError::Unknown);
        };
        if change(&mut entry.peer) {
            let msg = event(PeerEvent::PeerUpdated, &entry.peer);
            self.broadcast(&msg, Some(conn_id));
            self.publish(&key);
        }
        Ok(())
    }

    /// Every listed peer but `exclude`, within [`MAX_PEERS_LIST_BYTES`].
    pub fn peers(&self, exclude: Option<&SessionKey>) -> PeerList {
        let listed: Vec<&Peer> = self
            .sessions
            .iter()
            .filter(|(k, _)| Some(*k) != exclude)
            .map(|(_, s)| &s.peer)
            .collect();
        let mut list = bounded_peers(listed, MAX_PEERS_LIST_BYTES);
        list.peers
            .sort_by(|a, b| a.display_name.cmp(&b.display_name));
        list
    }

    /// Removes a connection. On [`Departure::Dropped`] its sessions stay
    /// listed and the caller starts a grace timer for each `(key, epoch)`
    /// returned; on shutdown they go silently.
    pub fn remove_conn(&mut self, conn_id: ConnId, departure: Departure) -> Vec<(SessionKey, u64)> {
        let Some(entry) = self.conns.remove(&conn_id) else {
            return Vec::new();
        };
        if let Some(list) = self.by_member.get_mut(&entry.member_id) {
            list.retain(|c| *c != conn_id);
            if list.is_empty() {
                self.by_member.remove(&entry.member_id);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                self.last_seen.insert(entry.member_id.clone(), now);
            }
        }
        let mut timers = Vec::new();
        for sid in entry.sessions {
            let key = (entry.member_id.clone(), sid);
            match departure {
                Departure::Shutdown => {
                    if self.drop_session(&key).is_some() {
                        self.publish(&key);
                    }
                }
                Departure::Dropped => {
                    let epoch = self.next_epoch();
                    if let Some(s) = self.sessions.get_mut(&key)
                        && s.conn == Some(conn_id)
                    {
                        s.conn = None;
                        s.epoch = epoch;
                        self.publish(&key);
                        timers.push((key, epoch));
                    }
                }
            }
        }
        timers
    }

    /// Ends a grace period: the session leaves with `peer_left` unless it
    /// was re-attached since (its epoch moved on).
    pub fn expire(&mut self, key: &SessionKey, epoch: u64) {
        let due = self
            .sessions
            .get(key)
            .is_some_and(|s| s.conn.is_none() && s.node.is_none() && s.epoch == epoch);
        if due && let Some(entry) = self.drop_session(key) {
            self.broadcast(&event(PeerEvent::PeerLeft, &entry.peer), None);
            self.publish(key);
        }
    }

    /// Closes a revoked member's connections and removes its sessions now.
    pub fn revoke_member(&mut self, member_id: &str) {
        for id in self.member_conns(member_id).to_vec() {
            if let Some(c) = self.conns.get_mut(&id) {
                c.sessions.clear();
                c.handle.close(1008, ErrorCode::Revoked.as_str());
            }
        }
        let keys: Vec<SessionKey> = self
            .sessions
            .keys()
            .filter(|k| k.0 == member_id)
            .cloned()
            .collect();
        for key in keys {
            if let Some(entry) = self.drop_session(&key) {
                if entry.node.is_none() {
                    self.publish(&key);
                }
                let msg = event(PeerEvent::PeerLeft, &entry.peer);
                for (id, c) in &self.conns {
                    if c.member_id != member_id {
                        let _ = id;
                        c.handle.send(msg.clone());
                    }
                }
            }
        }
        self.member_by_pubkey.retain(|_, m| m != member_id);
    }

    pub fn close_all(&mut self, code: u16, reason: &str) {
        for c in self.conns.values() {
            c.handle.close(code, reason);
        }
    }
}

#[cfg(test)]
#[path = "presence_tests.rs"]
mod transitions;
