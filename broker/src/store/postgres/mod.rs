//! The PostgreSQL backend (`--database-url postgres://…`): the store
//! several broker nodes can share.
//!
//! Every query goes through one connection pool ([`connect`]); a query
//! that cannot get a connection fails as [`StoreError::Unavailable`], and
//! the pool reconnects by itself once the server is back. Reads and rare
//! writes run here on the async runtime; the group-commit writer's batches
//! run in [`PgBatch`].

mod batch;
mod bulk;
mod cluster;
pub mod connect;
pub mod faults;
pub(crate) mod messages;
pub mod notify;
pub mod presence;
pub(crate) mod schema;

use deadpool_postgres::{Client, GenericClient, Pool};
use tokio_postgres::Row;

pub use batch::PgBatch;
pub use cluster::Beat;
pub use connect::DESCRIPTORS;
pub use schema::CURRENT_VERSION;

use crate::store::{
    InviteRow, JoinRefusal, JoinRequest, MemberInfo, MeshInfo, PendingPush, Revocation, StoreError,
};
use claudemesh_protocol::wire::RecipientState;

const MEMBER_COLUMNS: &str = "id, mesh_id, pubkey, display_name, role, revoked_at IS NOT NULL";

fn member(r: &Row) -> MemberInfo {
    MemberInfo {
        id: r.get(0),
        mesh_id: r.get(1),
        pubkey: r.get(2),
        display_name: r.get(3),
        role: r.get(4),
        revoked: r.get(5),
    }
}

fn mesh(r: &Row) -> MeshInfo {
    MeshInfo {
        id: r.get(0),
        slug: r.get(1),
        owner_pubkey: r.get(2),
    }
}

fn invite(r: &Row) -> InviteRow {
    InviteRow {
        id: r.get(0),
        mesh_id: r.get(1),
        role: r.get(2),
        max_uses: r
            .get::<_, Option<i64>>(3)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        uses: u32::try_from(r.get::<_, i64>(4)).unwrap_or(u32::MAX),
        expires_at: r.get(5),
        revoked: r.get(6),
    }
}

/// A pooled PostgreSQL database, migrated.
pub struct PgStore {
    pool: Pool,
    described: String,
    /// The parsed URL, for connections outside the pool (`LISTEN`).
    config: Box<tokio_postgres::Config>,
    /// This node's id in a cluster (set once by the server; admin
    /// commands leave it empty).
    node: std::sync::OnceLock<String>,
    /// What a test made fail.
    faults: faults::Faults,
}

impl PgStore {
    /// Connects to `url` and migrates the schema (refusing a newer one).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let connector = connect::pool(url)?;
        let store = Self {
            described: connect::describe(&connector.config),
            pool: connector.pool,
            config: Box::new(connector.config),
            node: std::sync::OnceLock::new(),
            faults: faults::Faults::default(),
        };
        let mut client = store.client().await?;
        schema::migrate(&mut client).await?;
        Ok(store)
    }

    /// `host:port/dbname`.
    pub fn describe(&self) -> &str {
        &self.described
    }

    async fn client(&self) -> Result<Client, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    pub fn batch_writer(&self) -> PgBatch {
        PgBatch::new(self.pool.clone(), self.node_id().to_owned())
    }

    /// Names this process as a cluster node (the first call wins).
    pub fn set_node_id(&self, node: &str) {
        let _ = self.node.set(node.to_owned());
    }

    pub fn node_id(&self) -> &str {
        self.node.get().map_or("", String::as_str)
    }

    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        schema::version(&self.client().await?).await
    }

    pub async fn insert_mesh(&self, m: &MeshInfo, now_ms: i64) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO meshes (id, slug, owner_pubkey, created_at) VALUES ($1, $2, $3, $4)",
                &[&m.id, &m.slug, &m.owner_pubkey, &now_ms],
            )
            .await?;
        Ok(())
    }

    pub async fn find_mesh(&self, slug_or_id: &str) -> Result<Option<MeshInfo>, StoreError> {
        // Ids win over slugs.
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT id, slug, owner_pubkey FROM meshes WHERE id = $1 OR slug = $1
                 ORDER BY (id = $1) DESC LIMIT 1",
                &[&slug_or_id],
            )
            .await?;
        Ok(row.as_ref().map(mesh))
    }

    pub async fn list_meshes(&self) -> Result<Vec<MeshInfo>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, slug, owner_pubkey FROM meshes ORDER BY slug",
                &[],
            )
            .await?;
        Ok(rows.iter().map(mesh).collect())
    }

    pub async fn member_by_pubkey(
        &self,
        mesh_id: &str,
        pubkey: &str,
    ) -> Result<Option<MemberInfo>, StoreError> {
        member_by_pubkey(&self.client().await?, mesh_id, pubkey).await
    }

    pub async fn members_by_name(
        &self,
        mesh_id: &str,
        name: &str,
    ) -> Result<Vec<MemberInfo>, StoreError> {
        let c = self.client().await?;
        let st = c
            .prepare_cached(&format!(
                "SELECT {MEMBER_COLUMNS} FROM members WHERE mesh_id = $1 AND display_name = $2"
            ))
            .await?;
        Ok(c.query(&st, &[&mesh_id, &name])
            .await?
            .iter()
            .map(member)
            .collect())
    }

    pub async fn list_members(&self, mesh_id: &str) -> Result<Vec<MemberInfo>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {MEMBER_COLUMNS} FROM members WHERE mesh_id = $1 ORDER BY created_at, id"
                ),
                &[&mesh_id],
            )
            .await?;
        Ok(rows.iter().map(member).collect())
    }

    pub async fn insert_member(
        &self,
        m: &MemberInfo,
        invite_id: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        insert_member(&self.client().await?, m, invite_id, now_ms).await
    }

    pub async fn revoke_member(
        &self,
        mesh_id: &str,
        member_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        revoke_member(&tx, mesh_id, member_id, now_ms).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn leave(
        &self,
        mesh_id: &str,
        member_id: &str,
        pubkey: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        match member_by_pubkey(&tx, mesh_id, pubkey).await? {
            Some(m) if m.id == member_id => {
                revoke_member(&tx, mesh_id, member_id, now_ms).await?;
                tx.commit().await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub async fn revocations_since(&self, seq: i64) -> Result<Vec<Revocation>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT seq, mesh_id, member_id FROM revocations WHERE seq > $1
                 ORDER BY seq LIMIT 1000",
                &[&seq],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Revocation {
                seq: r.get(0),
                mesh_id: r.get(1),
                member_id: r.get(2),
            })
            .collect())
    }

    pub async fn last_revocation_seq(&self) -> Result<i64, StoreError> {
        let row = self
            .client()
            .await?
            .query_one("SELECT COALESCE(MAX(seq), 0) FROM revocations", &[])
            .await?;
        Ok(row.get(0))
    }

    pub async fn insert_invite(&self, row: &InviteRow, now_ms: i64) -> Result<(), StoreError> {
        let max_uses = row.max_uses.map(i64::from);
        self.client()
            .await?
            .execute(
                "INSERT INTO invites (id, mesh_id, role, max_uses, uses, expires_at, created_at)
                 VALUES ($1, $2, $3, $4, 0, $5, $6)",
                &[
                    &row.id,
                    &row.mesh_id,
                    &row.role,
                    &max_uses,
                    &row.expires_at,
                    &now_ms,
                ],
            )
            .await?;
        Ok(())
    }

    pub async fn find_invite(&self, id: &str) -> Result<Option<InviteRow>, StoreError> {
        find_invite(&self.client().await?, id).await
    }

    pub async fn revoke_invite(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE invites SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
                &[&id, &now_ms],
            )
            .await?;
        Ok(n == 1)
    }

    /// Enrolls a key with a verified invite in one transaction. The use is
    /// taken by one conditional `UPDATE … RETURNING`: PostgreSQL locks the
    /// invite row, and a join that waited on it re-checks `uses < max_uses`
    /// against the committed count, so of joins racing for the last use
    /// (on any node) exactly one gets it.
    pub async fn join(
        &self,
        req: &JoinRequest,
    ) -> Result<Result<MemberInfo, JoinRefusal>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let inv = &req.invite;
        let found = tx
            .query_opt(
                "SELECT id, slug, owner_pubkey FROM meshes WHERE id = $1",
                &[&inv.mesh_id],
            )
            .await?;
        let Some(m) = found.as_ref().map(mesh) else {
            return Ok(Err(JoinRefusal::UnknownMesh));
        };
        if m.owner_pubkey != inv.owner_pubkey {
            // Signed, but not by this mesh's owner: a forgery.
            return Ok(Err(JoinRefusal::BadSignature));
        }
        if m.slug != inv.mesh_slug {
            return Ok(Err(JoinRefusal::BadInvite));
        }
        if let Some(existing) = member_by_pubkey(&tx, &m.id, &req.pubkey).await? {
            return Ok(if existing.revoked {
                Err(JoinRefusal::Revoked)
            } else {
                Ok(existing)
            });
        }
        let Some(row) = find_invite(&tx, &inv.invite_id).await? else {
            return Ok(Err(JoinRefusal::BadInvite));
        };
        if row.mesh_id != m.id || row.role != inv.role.as_str() {
            return Ok(Err(JoinRefusal::BadInvite));
        }
        if row.revoked {
            return Ok(Err(JoinRefusal::Revoked));
        }
        if req.now_ms.div_euclid(1000) >= row.expires_at.min(inv.expires_at) {
            return Ok(Err(JoinRefusal::Expired));
        }
        let used = tx
            .query_opt(
                "UPDATE invites SET uses = uses + 1
                 WHERE id = $1 AND revoked_at IS NULL AND (max_uses IS NULL OR uses < max_uses)
                 RETURNING uses",
                &[&row.id],
            )
            .await?;
        if used.is_none() {
            return Ok(Err(JoinRefusal::Exhausted));
        }
        let new = MemberInfo {
            id: req.new_member_id.clone(),
            mesh_id: m.id.clone(),
            pubkey: req.pubkey.clone(),
            display_name: req.display_name.clone(),
            role: row.role.clone(),
            revoked: false,
        };
        if !insert_member(&tx, &new, Some(&row.id), req.now_ms).await? {
            // The same key joined meanwhile (another request or node): give
            // back that member, and the use taken here with the rollback.
            drop(tx);
            return Ok(match self.member_by_pubkey(&m.id, &req.pubkey).await? {
                Some(existing) if !existing.revoked => Ok(existing),
                _ => Err(JoinRefusal::Revoked),
            });
        }
        tx.commit().await?;
        Ok(Ok(new))
    }

    pub async fn sent_before(
        &self,
        mesh_id: &str,
        sender_member_id: &str,
        client_id: &str,
    ) -> Result<Option<(String, Vec<RecipientState>)>, StoreError> {
        let c = self.client().await?;
        match messages::find_by_client_id(&c, mesh_id, sender_member_id, client_id).await? {
            Some(mid) => {
                let states = messages::recipient_states(&c, &mid).await?;
                Ok(Some((mid, states)))
            }
            None => Ok(None),
        }
    }

    pub async fn message_status(
        &self,
        message_id: &str,
        mesh_id: &str,
        member_id: &str,
    ) -> Result<Option<Vec<RecipientState>>, StoreError> {
        let c = self.client().await?;
        if !messages::involves_member(&c, message_id, mesh_id, member_id).await? {
            return Ok(None);
        }
        Ok(Some(messages::recipient_states(&c, message_id).await?))
    }

    pub async fn pending_for_member(
        &self,
        member_id: &str,
        now_ms: i64,
        max_seq: i64,
    ) -> Result<Vec<PendingPush>, StoreError> {
        messages::pending_for_member(&self.client().await?, member_id, now_ms, max_seq).await
    }

    pub async fn max_message_seq(&self) -> Result<i64, StoreError> {
        let row = self
            .client()
            .await?
            .query_one("SELECT COALESCE(MAX(seq), 0) FROM messages", &[])
            .await?;
        Ok(row.get(0))
    }

    pub async fn queue_depth(&self) -> Result<i64, StoreError> {
        let row = self
            .client()
            .await?
            .query_one(
                "SELECT COUNT(*) FROM recipients WHERE delivered_at IS NULL",
                &[],
            )
            .await?;
        Ok(row.get(0))
    }

    pub async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT value FROM settings WHERE key = $1", &[&key])
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub async fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "INSERT INTO settings (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )
            .await?;
        Ok(())
    }

    /// A connection from the pool (a new one if the old ones broke) reads
    /// the schema version and the first row of each table serving needs.
    pub async fn health(&self) -> Result<(), String> {
        let db = &self.described;
        let c = self
            .client()
            .await
            .map_err(|e| format!("the PostgreSQL database {db} cannot be reached: {e}"))?;
        let version = schema::version(&c)
            .await
            .map_err(|e| format!("the PostgreSQL database {db} cannot be read: {e}"))?;
        if version != CURRENT_VERSION {
            return Err(format!(
                "the PostgreSQL database {db} schema is version {version}, expected {CURRENT_VERSION}"
            ));
        }
        for table in [
            "meshes",
            "members",
            "messages",
            "recipients",
            "hello_signatures",
        ] {
            c.query_one(
                &format!("SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT 1) t"),
                &[],
            )
            .await
            .map_err(|e| {
                format!("the {table} table of the PostgreSQL database {db} cannot be read: {e}")
            })?;
        }
        Ok(())
    }
}

async fn member_by_pubkey(
    c: &impl GenericClient,
    mesh_id: &str,
    pubkey: &str,
) -> Result<Option<MemberInfo>, StoreError> {
    let st = c
        .prepare_cached(&format!(
            "SELECT {MEMBER_COLUMNS} FROM members WHERE mesh_id = $1 AND pubkey = $2"
        ))
        .await?;
    Ok(c.query_opt(&st, &[&mesh_id, &pubkey])
        .await?
        .as_ref()
        .map(member))
}

async fn insert_member(
    c: &impl GenericClient,
    m: &MemberInfo,
    invite_id: Option<&str>,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let n = c
        .execute(
            "INSERT INTO members (id, mesh_id, pubkey, display_name, role, invite_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (mesh_id, pubkey) DO NOTHING",
            &[
                &m.id,
                &m.mesh_id,
                &m.pubkey,
                &m.display_name,
                &m.role,
                &invite_id,
                &now_ms,
            ],
        )
        .await?;
    Ok(n == 1)
}

async fn revoke_member(
    c: &impl GenericClient,
    mesh_id: &str,
    member_id: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE members SET revoked_at = COALESCE(revoked_at, $3) WHERE mesh_id = $1 AND id = $2",
        &[&mesh_id, &member_id, &now_ms],
    )
    .await?;
    let seq: i64 = c
        .query_one(
            "INSERT INTO revocations (mesh_id, member_id, at) VALUES ($1, $2, $3) RETURNING seq",
            &[&mesh_id, &member_id, &now_ms],
        )
        .await?
        .get(0);
    // Every node closes the member's connections at once (at commit).
    let event = notify::ClusterEvent::Revoked {
        seq,
        mesh: mesh_id.to_owned(),
        member: member_id.to_owned(),
    };
    notify::send(c, &[event]).await?;
    Ok(())
}

async fn find_invite(c: &impl GenericClient, id: &str) -> Result<Option<InviteRow>, StoreError> {
    let row = c
        .query_opt(
            "SELECT id, mesh_id, role, max_uses, uses, expires_at, revoked_at IS NOT NULL
             FROM invites WHERE id = $1",
            &[&id],
        )
        .await?;
    Ok(row.as_ref().map(invite))
}

/// `host:port/dbname` of a URL, for messages (never the password).
pub fn redact(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(config) => connect::describe(&config),
        Err(_) => "an unparseable URL".to_owned(),
    }
}
