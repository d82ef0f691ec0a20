//! The other nodes of a cluster in one mesh's presence: this node's
//! sessions announced to them, and theirs kept here as replicas.

use claudemesh_protocol::wire::{Peer, PeerEvent};

use super::presence::{
    MeshState, PresenceChange, PresenceNews, SessionEntry, SessionKey, event, same_but_time,
};

impl MeshState {
    /// In a cluster: announce every change to this node's sessions on
    /// `tx` (the cluster writes them to the shared presence table).
    pub fn set_outbox(
        &mut self,
        mesh_id: String,
        tx: tokio::sync::mpsc::UnboundedSender<PresenceNews>,
    ) {
        self.outbox = Some((mesh_id, tx));
    }

    /// Tells the cluster the state of session `key` if this node carries
    /// it (or carried it, and it has just left).
    pub(super) fn publish(&self, key: &SessionKey) {
        self.publish_as(key, false);
    }

    fn publish_as(&self, key: &SessionKey, retake: bool) {
        let Some((mesh_id, tx)) = &self.outbox else {
            return;
        };
        let (peer, live) = match self.sessions.get(key) {
            Some(e) if e.node.is_some() => return,
            Some(e) => (Some(e.peer.clone()), e.conn.is_some()),
            None => (None, false),
        };
        let _ = tx.send(PresenceNews::Change(Box::new(PresenceChange {
            mesh_id: mesh_id.clone(),
            key: key.clone(),
            peer,
            live,
            retake,
        })));
    }

    /// Tells the cluster again of every session a connection here
    /// carries, as live (after another node took this one for dead);
    /// how many.
    pub fn publish_live_again(&self) -> usize {
        let live: Vec<&SessionKey> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.node.is_none() && e.conn.is_some())
            .map(|(k, _)| k)
            .collect();
        for key in &live {
            self.publish_as(key, true);
        }
        live.len()
    }

    /// Another node's session, as that node announced it: listed here too
    /// (`peer_joined` when new, `peer_updated` when changed, nothing when
    /// it only moved). A session this node carried has moved to that node:
    /// the local connection loses it as on a takeover, silently for
    /// everyone else.
    pub fn apply_remote(&mut self, key: SessionKey, peer: Peer, node: &str, live: bool) {
        // Another node's detach of a session a connection here carries is
        // old news (the session moved here since): only an attach there
        // takes it away.
        if !live && self.sessions.get(&key).is_some_and(|e| e.conn.is_some()) {
            return;
        }
        let epoch = self.next_epoch();
        self.member_by_pubkey
            .insert(peer.member.clone(), key.0.clone());
        let before = self.sessions.get(&key).map(|e| (e.peer.clone(), e.conn));
        if let Some((_, Some(old))) = &before {
            self.lose_session(*old, &key.1);
        }
        if let Some((b, _)) = &before {
            self.release_name(&b.display_name, &key);
        }
        self.settle_name(&peer.display_name, &key);
        let kind = match &before {
            None => Some(PeerEvent::PeerJoined),
            Some((b, _)) if !same_but_time(b, &peer) => Some(PeerEvent::PeerUpdated),
            Some(_) => None,
        };
        let msg = kind.map(|k| event(k, &peer));
        self.sessions.insert(
            key,
            SessionEntry {
                requested_name: peer.display_name.clone(),
                peer,
                conn: None,
                epoch,
                node: Some(node.to_owned()),
                remote_live: live,
            },
        );
        if let Some(msg) = msg {
            self.broadcast(&msg, None);
        }
    }

    /// Display names are unique over the cluster, though two nodes may
    /// give one name at the same moment: then the session with the lower
    /// key keeps it, by the same rule on every node, and the other is
    /// renamed by its own node (announced with `peer_updated`).
    fn settle_name(&mut self, name: &str, key: &SessionKey) {
        let owner = self.names.get(name).cloned();
        match owner {
            Some(owner) if owner != *key => {
                if *key < owner {
                    self.names.insert(name.to_owned(), key.clone());
                    self.rename_local(&owner);
                }
                // Else the owner keeps it; the arriving session's node
                // renames it when it hears of the owner.
            }
            _ => {
                self.names.insert(name.to_owned(), key.clone());
            }
        }
    }

    /// Gives a session this node carries a new unique name (it lost its
    /// own to another node's session).
    fn rename_local(&mut self, key: &SessionKey) {
        let Some(requested) = self
            .sessions
            .get(key)
            .filter(|e| e.node.is_none())
            .map(|e| e.requested_name.clone())
        else {
            return;
        };
        let name = self.assign_name(&requested, key);
        let Some(entry) = self.sessions.get_mut(key) else {
            return;
        };
        entry.peer.display_name = name;
        let msg = event(PeerEvent::PeerUpdated, &entry.peer);
        self.broadcast(&msg, None);
        self.publish(key);
    }

    /// Another node's session left (`peer_left`), unless it has since
    /// moved to a node other than `node`.
    pub fn remove_remote(&mut self, key: &SessionKey, node: &str) {
        let theirs = self
            .sessions
            .get(key)
            .is_some_and(|e| e.node.as_deref() == Some(node));
        if theirs && let Some(entry) = self.drop_session(key) {
            self.broadcast(&event(PeerEvent::PeerLeft, &entry.peer), None);
        }
    }

    /// The sessions listed here that other nodes carry, with their node.
    pub fn remote_sessions(&self) -> Vec<(SessionKey, String)> {
        self.sessions
            .iter()
            .filter_map(|(k, e)| e.node.clone().map(|n| (k.clone(), n)))
            .collect()
    }

    /// Sessions of `member_id` live on other nodes.
    pub fn sessions_live_elsewhere(&self, member_id: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .sessions
            .iter()
            .filter(|(k, e)| k.0 == member_id && e.is_live_elsewhere())
            .map(|(k, _)| k.1.clone())
            .collect();
        v.sort();
        v
    }
}
