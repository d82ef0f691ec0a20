//! Member rows and the revocation log.

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::{MemberInfo, Revocation, StoreError};

const COLUMNS: &str = "id, mesh_id, pubkey, display_name, role, revoked_at IS NOT NULL";

fn row_to_member(r: &rusqlite::Row<'_>) -> rusqlite::Result<MemberInfo> {
    Ok(MemberInfo {
        id: r.get(0)?,
        mesh_id: r.get(1)?,
        pubkey: r.get(2)?,
        display_name: r.get(3)?,
        role: r.get(4)?,
        revoked: r.get(5)?,
    })
}

/// The member of `mesh_id` with `pubkey`, revoked or not.
pub fn find_by_pubkey(
    conn: &Connection,
    mesh_id: &str,
    pubkey: &str,
) -> Result<Option<MemberInfo>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM members WHERE mesh_id = ?1 AND pubkey = ?2");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([mesh_id, pubkey], row_to_member)
        .optional()?)
}

/// Members of `mesh_id` whose display name is `name`.
pub fn find_by_name(
    conn: &Connection,
    mesh_id: &str,
    name: &str,
) -> Result<Vec<MemberInfo>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM members WHERE mesh_id = ?1 AND display_name = ?2");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([mesh_id, name], row_to_member)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn list(conn: &Connection, mesh_id: &str) -> Result<Vec<MemberInfo>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM members WHERE mesh_id = ?1 ORDER BY created_at, id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([mesh_id], row_to_member)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Inserts a member. Returns false (and changes nothing) when the mesh
/// already has a member with that public key.
pub fn insert(
    conn: &Connection,
    member: &MemberInfo,
    invite_id: Option<&str>,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let n = conn.execute(
        "INSERT INTO members (id, mesh_id, pubkey, display_name, role, invite_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (mesh_id, pubkey) DO NOTHING",
        params![
            member.id,
            member.mesh_id,
            member.pubkey,
            member.display_name,
            member.role,
            invite_id,
            now_ms
        ],
    )?;
    Ok(n == 1)
}

/// Revokes a member and logs the revocation for running servers to see.
/// Idempotent: revoking a revoked member logs it again (so a server that
/// missed it closes the connections) but keeps the first time.
pub fn revoke(
    conn: &Connection,
    mesh_id: &str,
    member_id: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE members SET revoked_at = COALESCE(revoked_at, ?3) WHERE mesh_id = ?1 AND id = ?2",
        params![mesh_id, member_id, now_ms],
    )?;
    conn.execute(
        "INSERT INTO revocations (mesh_id, member_id, at) VALUES (?1, ?2, ?3)",
        params![mesh_id, member_id, now_ms],
    )?;
    Ok(())
}

/// Revocations logged after `seq`, oldest first.
pub fn revocations_since(conn: &Connection, seq: i64) -> Result<Vec<Revocation>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, mesh_id, member_id FROM revocations WHERE seq > ?1 ORDER BY seq LIMIT 1000",
    )?;
    let rows = stmt.query_map([seq], |r| {
        Ok(Revocation {
            seq: r.get(0)?,
            mesh_id: r.get(1)?,
            member_id: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The last logged revocation, 0 if none.
pub fn last_revocation_seq(conn: &Connection) -> Result<i64, StoreError> {
    Ok(
        conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM revocations", [], |r| {
            r.get(0)
        })?,
    )
}
