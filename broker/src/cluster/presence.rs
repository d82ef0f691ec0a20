//! One presence view over the nodes: this node's sessions go to the
//! shared table, the other nodes' come from it into the hub.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

use claudemesh_protocol::wire::Peer;

use crate::ctx::Ctx;
use crate::hub::{PresenceChange, PresenceNews, SessionKey};
use crate::store::postgres::PgStore;
use crate::store::postgres::presence::PresenceWrite;
use crate::store::{Store, StoreError};

/// Changes written in one transaction at most.
const MAX_BATCH: usize = 256;

/// Writes the hub's changes to this node's sessions, in order, batching
/// what has queued up. A failed write is retried (the database may be
/// briefly away): the presence view must not lose a leave. A
/// [`PresenceNews::Committed`] is answered once the changes before it are
/// committed.
pub async fn write(ctx: Arc<Ctx>, mut news: UnboundedReceiver<PresenceNews>) {
    let Store::Postgres(pg) = &*ctx.store else {
        return;
    };
    let mut batch = Vec::new();
    let mut waiting = Vec::new();
    while let Some(first) = news.recv().await {
        let mut next = Some(first);
        while let Some(n) = next.take() {
            match n {
                PresenceNews::Change(c) => batch.push(as_write(*c)),
                PresenceNews::Committed(done) => waiting.push(done),
            }
            if batch.len() < MAX_BATCH {
                next = news.try_recv().ok();
            }
        }
        let mut wait = Duration::from_millis(50);
        while !batch.is_empty()
            && let Err(e) = pg.write_presence(&batch).await
        {
            tracing::warn!(error = %e, "writing the cluster's presence failed; retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
        batch.clear();
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

fn as_write(c: PresenceChange) -> PresenceWrite {
    PresenceWrite {
        mesh_id: c.mesh_id,
        member_id: c.key.0,
        session_id: c.key.1,
        peer: c.peer,
        live: c.live,
        retake: c.retake,
    }
}

/// Another node's session changed.
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    ctx: &Arc<Ctx>,
    pg: &PgStore,
    node: &str,
    mesh_id: &str,
    key: SessionKey,
    live: bool,
    gone: bool,
    peer: Option<Peer>,
) {
    if gone {
        if let Some(mesh) = ctx.hub.find(mesh_id) {
            mesh.lock().remove_remote(&key, node);
        }
        return;
    }
    let (peer, live) = match peer {
        Some(p) => (p, live),
        // Too large for the notification: read the row.
        None => match pg.presence_row(mesh_id, &key.0, &key.1).await {
            Ok(Some(row)) if row.node == node => (row.peer, row.live),
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "reading a presence row failed");
                return;
            }
        },
    };
    ctx.hub
        .mesh(mesh_id)
        .lock()
        .apply_remote(key, peer, node, live);
}

/// Loads every other node's sessions into the hub, and drops replicas
/// the table no longer has (at start, and after the notifications were
/// interrupted).
pub async fn load(ctx: &Arc<Ctx>, pg: &PgStore) -> Result<(), StoreError> {
    let rows = pg.presence_elsewhere().await?;
    let listed: HashSet<(String, SessionKey)> = rows
        .iter()
        .map(|r| {
            (
                r.mesh_id.clone(),
                (r.member_id.clone(), r.session_id.clone()),
            )
        })
        .collect();
    for mesh in ctx.hub.meshes() {
        let mut state = mesh.lock();
        for (key, node) in state.remote_sessions() {
            if !listed.contains(&(mesh.id.clone(), key.clone())) {
                state.remove_remote(&key, &node);
            }
        }
    }
    for r in rows {
        let key = (r.member_id, r.session_id);
        ctx.hub
            .mesh(&r.mesh_id)
            .lock()
            .apply_remote(key, r.peer, &r.node, r.live);
    }
    Ok(())
}
