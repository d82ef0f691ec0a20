//! The cluster's shared presence table: each node writes the rows of the
//! sessions it carries, and announces every change in the same
//! transaction ([`notify::ClusterEvent::Presence`]).

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use claudemesh_protocol::wire::Peer;

use super::notify::{self, ClusterEvent};
use crate::store::{MemberActivity, StoreError};

/// One change to a session this node carries.
#[derive(Debug, Clone)]
pub struct PresenceWrite {
    pub mesh_id: String,
    pub member_id: String,
    pub session_id: String,
    /// `None`: the session left.
    pub peer: Option<Peer>,
    pub live: bool,
    /// This node takes back its row after another node took it for dead:
    /// written only where the row still names this node (or is gone), so
    /// a session that moved to another node meanwhile stays there.
    pub retake: bool,
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
    // detach or a leave only changes a row this node still holds and has
    // not handed over (a grace set when the node stopped or was claimed):
    // otherwise it is old news, and nothing is said.
    let upsert = c
        .prepare_cached(
            "INSERT INTO presence (mesh_id, member_id, session_id, node, peer, live)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (mesh_id, member_id, session_id)
             DO UPDATE SET node = EXCLUDED.node, peer = EXCLUDED.peer, live = EXCLUDED.live,
                 grace_until = NULL
             WHERE EXCLUDED.live
                 OR (presence.node = EXCLUDED.node AND presence.grace_until IS NULL)",
        )
        .await?;
    let retake = c
        .prepare_cached(
            "INSERT INTO presence (mesh_id, member_id, session_id, node, peer, live)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (mesh_id, member_id, session_id)
             DO UPDATE SET peer = EXCLUDED.peer, live = EXCLUDED.live, grace_until = NULL
             WHERE presence.node = EXCLUDED.node",
        )
        .await?;
    let delete = c
        .prepare_cached(
            "DELETE FROM presence
             WHERE mesh_id = $1 AND member_id = $2 AND session_id = $3 AND node = $4
                 AND grace_until IS NULL",
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
                        if ch.retake { &retake } else { &upsert },
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

/// The sessions other nodes carry in one mesh.
pub async fn others_in_mesh(
    c: &impl GenericClient,
    node: &str,
    mesh_id: &str,
) -> Result<Vec<PresenceRow>, StoreError> {
    let rows = c
        .query(
            &format!("SELECT {COLUMNS} FROM presence WHERE mesh_id = $1 AND node <> $2"),
            &[&mesh_id, &node],
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

/// The database's clock in ms: every node compares heartbeats on the
/// same clock, whatever its own says.
const DB_NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

/// Puts every live row of `node` into its grace period (ending
/// `grace_ms` from now), announcing each: the node is gone (or starting
/// again under the same id), and so are its connections.
pub async fn orphan_node(
    c: &impl GenericClient,
    node: &str,
    grace_ms: i64,
) -> Result<(), StoreError> {
    let gone = c
        .query(
            "DELETE FROM connections WHERE node = $1 RETURNING mesh_id, member_id",
            &[&node],
        )
        .await?;
    note_last_seen(c, &gone).await?;
    let rows = c
        .query(
            &format!(
                "UPDATE presence SET live = FALSE, grace_until = {DB_NOW_MS} + $2
                 WHERE node = $1 AND grace_until IS NULL
                 RETURNING {COLUMNS}"
            ),
            &[&node, &grace_ms],
        )
        .await?;
    let events: Vec<ClusterEvent> = rows
        .iter()
        .filter_map(row)
        .map(|r| {
            notify::presence(ClusterEvent::Presence {
                node: r.node,
                mesh: r.mesh_id,
                member: r.member_id,
                session: r.session_id,
                live: false,
                gone: false,
                peer: Some(Box::new(r.peer)),
            })
        })
        .collect();
    notify::send(c, &events).await
}

/// Deletes the orphaned rows whose grace has ended and announces that
/// they left. One statement: when several nodes sweep at once, each row
/// is deleted, and announced, by exactly one of them.
pub async fn sweep_orphans(c: &impl GenericClient) -> Result<usize, StoreError> {
    let rows = c
        .query(
            &format!(
                "DELETE FROM presence WHERE grace_until < {DB_NOW_MS}
                 RETURNING node, mesh_id, member_id, session_id"
            ),
            &[],
        )
        .await?;
    let events: Vec<ClusterEvent> = rows
        .iter()
        .map(|r| ClusterEvent::Presence {
            node: r.get(0),
            mesh: r.get(1),
            member: r.get(2),
            session: r.get(3),
            live: false,
            gone: true,
            peer: None,
        })
        .collect();
    notify::send(c, &events).await?;
    Ok(events.len())
}

/// Records `node`'s heartbeat (a node that was claimed and comes back is
/// unclaimed). True when another node had claimed it: it was taken for
/// dead, its sessions put into their grace. Run in a transaction: the
/// row stays locked until it commits, so no claim can slip in between.
pub async fn heartbeat(c: &impl GenericClient, node: &str) -> Result<bool, StoreError> {
    let was_claimed = c
        .query_opt(
            "SELECT claimed_by IS NOT NULL FROM nodes WHERE id = $1 FOR UPDATE",
            &[&node],
        )
        .await?
        .is_some_and(|r| r.get::<_, bool>(0));
    c.execute(
        &format!(
            "INSERT INTO nodes (id, heartbeat_at, claimed_by) VALUES ($1, {DB_NOW_MS}, NULL)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at,
                 claimed_by = NULL"
        ),
        &[&node],
    )
    .await?;
    Ok(was_claimed)
}

/// Claims, for `node`, every other node whose heartbeat is older than
/// `stale_ms` and that nobody has claimed: one statement, so each dead
/// node is claimed by exactly one survivor. Returns the claimed ids.
pub async fn claim_stale(
    c: &impl GenericClient,
    node: &str,
    stale_ms: i64,
) -> Result<Vec<String>, StoreError> {
    let rows = c
        .query(
            &format!(
                "UPDATE nodes SET claimed_by = $1
                 WHERE id <> $1 AND claimed_by IS NULL AND heartbeat_at < {DB_NOW_MS} - $2
                 RETURNING id"
            ),
            &[&node, &stale_ms],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Records a connection of `member_id` on `node` if the member has fewer
/// than `limit` over the cluster; false (nothing recorded) otherwise. The
/// member's advisory lock makes concurrent hellos on several nodes count
/// one after the other.
pub async fn admit_connection(
    c: &impl GenericClient,
    node: &str,
    conn_id: i64,
    mesh_id: &str,
    member_id: &str,
    limit: i64,
) -> Result<bool, StoreError> {
    c.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 0))",
        &[&mesh_id, &member_id],
    )
    .await?;
    let n: i64 = c
        .query_one(
            "SELECT COUNT(*) FROM connections WHERE mesh_id = $1 AND member_id = $2",
            &[&mesh_id, &member_id],
        )
        .await?
        .get(0);
    if n >= limit {
        return Ok(false);
    }
    c.execute(
        "INSERT INTO connections (node, conn_id, mesh_id, member_id) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
        &[&node, &conn_id, &mesh_id, &member_id],
    )
    .await?;
    Ok(true)
}

/// Forgets a connection that has closed (in a transaction: see
/// [`note_last_seen`]).
pub async fn release_connection(
    c: &impl GenericClient,
    node: &str,
    conn_id: i64,
) -> Result<(), StoreError> {
    let gone = c
        .query(
            "DELETE FROM connections WHERE node = $1 AND conn_id = $2
             RETURNING mesh_id, member_id",
            &[&node, &conn_id],
        )
        .await?;
    note_last_seen(c, &gone).await
}

/// For each (mesh id, member id) of `gone` (connections just deleted in
/// this transaction) whose member has no connection left on any node:
/// records now as when it was last seen. The member's advisory lock (the
/// one [`admit_connection`] takes) orders two last connections closing at
/// once on two nodes, so that the second to count sees none left.
async fn note_last_seen(c: &impl GenericClient, gone: &[Row]) -> Result<(), StoreError> {
    for r in gone {
        let (mesh_id, member_id): (String, String) = (r.get(0), r.get(1));
        c.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 0))",
            &[&mesh_id, &member_id],
        )
        .await?;
        c.execute(
            &format!(
                "INSERT INTO last_seen (mesh_id, member_id, at)
                 SELECT $1, $2, {DB_NOW_MS}
                 WHERE NOT EXISTS (SELECT 1 FROM connections WHERE mesh_id = $1 AND member_id = $2)
                 ON CONFLICT (mesh_id, member_id) DO UPDATE SET at = EXCLUDED.at"
            ),
            &[&mesh_id, &member_id],
        )
        .await?;
    }
    Ok(())
}

/// Which members of `mesh_id` have a connection on some node, and when
/// each member's last connection closed (see [`note_last_seen`]).
pub async fn member_activity(
    c: &impl GenericClient,
    mesh_id: &str,
) -> Result<MemberActivity, StoreError> {
    let online = c
        .query(
            "SELECT DISTINCT member_id FROM connections WHERE mesh_id = $1",
            &[&mesh_id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let last_seen = c
        .query(
            "SELECT member_id, at FROM last_seen WHERE mesh_id = $1",
            &[&mesh_id],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(MemberActivity { online, last_seen })
}
