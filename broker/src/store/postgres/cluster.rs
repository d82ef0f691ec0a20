//! What the nodes of a cluster share beyond the one store: the `LISTEN`
//! connection, the presence table, the connections counted over every
//! node, the heartbeat and claim, and the copies read for a notification.

use super::{PgStore, connect, messages, presence};
use crate::store::{MemberActivity, PendingPush, StoreError};

impl PgStore {
    /// A connection of its own, outside the pool, for `LISTEN`; its
    /// notifications arrive on the returned channel until it breaks
    /// (the channel then closes).
    pub async fn listen(&self) -> Result<connect::Listening, StoreError> {
        connect::listen(&self.config).await
    }

    /// Writes and announces changes to this node's sessions, in one
    /// transaction.
    pub async fn write_presence(
        &self,
        changes: &[presence::PresenceWrite],
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        presence::write(&tx, self.node_id(), changes).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The faults a test injects into this store.
    pub fn faults(&self) -> &super::faults::Faults {
        &self.faults
    }

    /// Every session other nodes carry.
    pub async fn presence_elsewhere(&self) -> Result<Vec<presence::PresenceRow>, StoreError> {
        presence::others(&self.client().await?, self.node_id()).await
    }

    /// The sessions other nodes carry in `mesh_id`, as the table has them
    /// now (a node may not have heard of the newest yet).
    pub async fn presence_elsewhere_in(
        &self,
        mesh_id: &str,
    ) -> Result<Vec<presence::PresenceRow>, StoreError> {
        presence::others_in_mesh(&self.client().await?, self.node_id(), mesh_id).await
    }

    /// One session's presence row.
    pub async fn presence_row(
        &self,
        mesh_id: &str,
        member_id: &str,
        session_id: &str,
    ) -> Result<Option<presence::PresenceRow>, StoreError> {
        presence::one(&self.client().await?, mesh_id, member_id, session_id).await
    }

    /// What this node id left in the presence table before it started
    /// enters its grace period (its connections are gone; its sessions
    /// may come back to any node).
    pub async fn orphan_own_presence(&self, grace_ms: i64) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        presence::orphan_node(&tx, self.node_id(), grace_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a connection of the member if it has fewer than `limit`
    /// over the cluster (see [`presence::admit_connection`]).
    pub async fn admit_connection(
        &self,
        conn_id: u64,
        mesh_id: &str,
        member_id: &str,
        limit: usize,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let id = i64::try_from(conn_id).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let admitted =
            presence::admit_connection(&tx, self.node_id(), id, mesh_id, member_id, limit).await?;
        tx.commit().await?;
        Ok(admitted)
    }

    /// Forgets a closed connection of this node.
    pub async fn release_connection(&self, conn_id: u64) -> Result<(), StoreError> {
        let id = i64::try_from(conn_id).unwrap_or(i64::MAX);
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        presence::release_connection(&tx, self.node_id(), id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Who of `mesh_id` is connected to some node, and when each member
    /// was last seen (see [`presence::member_activity`]).
    pub async fn member_activity(&self, mesh_id: &str) -> Result<MemberActivity, StoreError> {
        presence::member_activity(&self.client().await?, mesh_id).await
    }

    /// One beat of the cluster's liveness: records this node's heartbeat,
    /// if `may_claim`, claims the nodes whose heartbeat is older than
    /// `stale_ms` (their sessions enter a grace of `grace_ms`), and
    /// removes, announcing it, every orphaned session whose grace has
    /// ended.
    pub async fn cluster_beat(
        &self,
        stale_ms: i64,
        grace_ms: i64,
        may_claim: bool,
    ) -> Result<Beat, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let was_claimed = presence::heartbeat(&tx, self.node_id()).await?;
        tx.commit().await?;
        let mut claimed = Vec::new();
        if may_claim {
            let tx = c.transaction().await?;
            claimed = presence::claim_stale(&tx, self.node_id(), stale_ms).await?;
            for dead in &claimed {
                presence::orphan_node(&tx, dead, grace_ms).await?;
            }
            tx.commit().await?;
        }
        let tx = c.transaction().await?;
        presence::sweep_orphans(&tx).await?;
        tx.commit().await?;
        Ok(Beat {
            was_claimed,
            claimed,
        })
    }

    /// The undelivered, unexpired copies, with their mesh and member, of
    /// the messages numbered `seqs` (all their copies) and of the (number,
    /// member id) pairs `pairs` (once when both name one): what a node
    /// pushes when another node announces them.
    pub async fn copies_of(
        &self,
        seqs: &[i64],
        pairs: &[(i64, &str)],
        now_ms: i64,
    ) -> Result<Vec<(String, String, PendingPush)>, StoreError> {
        self.faults.copies_read()?;
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // By primary key, whatever the statistics: without them (a new
        // cluster's first minute) the planner took a scan of every pending
        // copy (by bitmap, or the whole table) for each notification.
        let (_, mut copies, listed) = tokio::try_join!(
            async {
                tx.batch_execute(
                    "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off",
                )
                .await
                .map_err(StoreError::from)
            },
            async {
                if seqs.is_empty() {
                    return Ok(Vec::new());
                }
                messages::copies_of(&tx, seqs, now_ms).await
            },
            async {
                let (pair_seqs, members): (Vec<i64>, Vec<&str>) = pairs
                    .iter()
                    .filter(|(seq, _)| !seqs.contains(seq))
                    .copied()
                    .unzip();
                if pair_seqs.is_empty() {
                    return Ok(Vec::new());
                }
                messages::copies_for(&tx, &pair_seqs, &members, now_ms).await
            },
        )?;
        tx.commit().await?;
        copies.extend(listed);
        Ok(copies)
    }
}

/// What one [`PgStore::cluster_beat`] found.
#[derive(Debug, Default)]
pub struct Beat {
    /// Another node had taken this one for dead since its last beat.
    pub was_claimed: bool,
    /// The nodes this one claimed.
    pub claimed: Vec<String>,
}
