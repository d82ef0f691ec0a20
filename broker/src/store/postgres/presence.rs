//! The cluster's shared presence table: each node writes the rows of the
//! sessions it carries, and announces every change in the same
//! transaction ([`notify::ClusterEvent::Presence`]).

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use claudemesh_protocol::wire::Peer;

use super::notify::{self, ClusterEvent};
use crate::store::StoreError;

/// One change to a session this node carries.
#[derive(Debug, Clone)]
pub struct PresenceWrite {
    pub mesh_id: String,
    pub member_id: String,
    pub session_id: String,
    /// `None`: the session left.
    pub peer: Option<Peer>,
    pub live: bool,
}

/// One row of the presence table.
#[derive(Debug, Clone)]
pub struct PresenceRow {
    pub mesh_id: String,
    pub member_id: String,
    pub session_id: String,
    pub node: String,
    pub peer: Peer,
    pub live: bool,
}

fn row(r: &Row) -> Option<PresenceRow> {
    let peer: String = r.get(4);
    Some(PresenceRow {
        mesh_id: r.get(0),
        member_id: r.get(1),
        session_id: r.get(2),
        node: r.get(3),
        peer: serde_json::from_str(&peer).ok()?,
        live: r.get(5),
    })
}

const COLUMNS: &str = "mesh_id, member_id, session_id, node, peer, live";

/// Applies `changes` made on `node`, in order, and announces them. A
/// session that left is deleted only if `node` still holds its row (it
/// may have moved to another node meanwhile: then nothing is said).
pub async fn write(
    c: &impl GenericClient,
    node: &str,
    changes: &[PresenceWrite],
) -> Result<(), StoreError> {
    // A live session takes the row (an attach wins wherever it is); a
    // detach only changes a row this node still holds: if the session
    // has moved on, the detach is old news and nothing is said.
    let upsert = c
        .prepare_cached(
            "INSERT INTO presence (mesh_id, member_id, session_id, node, peer, live)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (mesh_id, member_id, session_id)
             DO UPDATE SET node = EXCLUDED.node, peer = EXCLUDED.peer, live = EXCLUDED.live
             WHERE EXCLUDED.live OR presence.node = EXCLUDED.node",
        )
        .await?;
    let delete = c
        .prepare_cached(
            "DELETE FROM presence
             WHERE mesh_id = $1 AND member_id = $2 AND session_id = $3 AND node = $4",
        )
        .await?;
    let mut events = Vec::with_capacity(changes.len());
    for ch in changes {
        let keys: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&ch.mesh_id, &ch.member_id, &ch.session_id, &node];
        match &ch.peer {
            Some(peer) => {
                let json =
                    serde_json::to_string(peer).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let changed = c
                    .execute(
                        &upsert,
                        &[
                            &ch.mesh_id,
                            &ch.member_id,
                            &ch.session_id,
                            &node,
                            &json,
                            &ch.live,
                        ],
                    )
                    .await?;
                if changed == 0 {
                    continue;
                }
            }
            None => {
                if c.execute(&delete, &keys).await? == 0 {
                    continue;
                }
            }
        }
        events.push(notify::presence(ClusterEvent::Presence {
            node: node.to_owned(),
            mesh: ch.mesh_id.clone(),
            member: ch.member_id.clone(),
            session: ch.session_id.clone(),
            live: ch.live,
            gone: ch.peer.is_none(),
            peer: ch.peer.clone().map(Box::new),
        }));
    }
    notify::send(c, &events).await
}

/// Every session other nodes carry.
pub async fn others(c: &impl GenericClient, node: &str) -> Result<Vec<PresenceRow>, StoreError> {
    let rows = c
        .query(
            &format!("SELECT {COLUMNS} FROM presence WHERE node <> $1"),
            &[&node],
        )
        .await?;
    Ok(rows.iter().filter_map(row).collect())
}

/// One session's row.
pub async fn one(
    c: &impl GenericClient,
    mesh_id: &str,
    member_id: &str,
    session_id: &str,
) -> Result<Option<PresenceRow>, StoreError> {
    let r = c
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM presence
                 WHERE mesh_id = $1 AND member_id = $2 AND session_id = $3"
            ),
            &[&mesh_id, &member_id, &session_id],
        )
        .await?;
    Ok(r.as_ref().and_then(row))
}

/// Removes every row `node` left behind (it is starting again under the
/// same id: those sessions are gone with its connections), announcing
/// each.
pub async fn clear_node(c: &impl GenericClient, node: &str) -> Result<(), StoreError> {
    let rows = c
        .query(
            "DELETE FROM presence WHERE node = $1 RETURNING mesh_id, member_id, session_id",
            &[&node],
        )
        .await?;
    let events: Vec<ClusterEvent> = rows
        .iter()
        .map(|r| ClusterEvent::Presence {
            node: node.to_owned(),
            mesh: r.get(0),
            member: r.get(1),
            session: r.get(2),
            live: false,
            gone: true,
            peer: None,
        })
        .collect();
    notify::send(c, &events).await
}
