//! Mesh rows.

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::{MeshInfo, StoreError};

fn row_to_mesh(r: &rusqlite::Row<'_>) -> rusqlite::Result<MeshInfo> {
    Ok(MeshInfo {
        id: r.get(0)?,
        slug: r.get(1)?,
        owner_pubkey: r.get(2)?,
    })
}

/// Inserts a mesh; fails when the slug is taken (unique constraint).
pub fn insert(conn: &Connection, mesh: &MeshInfo, now_ms: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meshes (id, slug, owner_pubkey, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![mesh.id, mesh.slug, mesh.owner_pubkey, now_ms],
    )?;
    Ok(())
}

/// The mesh whose id or slug is `slug_or_id` (ids win over slugs).
pub fn find(conn: &Connection, slug_or_id: &str) -> Result<Option<MeshInfo>, StoreError> {
    if let Some(m) = find_by_id(conn, slug_or_id)? {
        return Ok(Some(m));
    }
    Ok(conn
        .prepare_cached("SELECT id, slug, owner_pubkey FROM meshes WHERE slug = ?1")?
        .query_row([slug_or_id], row_to_mesh)
        .optional()?)
}

pub fn find_by_id(conn: &Connection, id: &str) -> Result<Option<MeshInfo>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT id, slug, owner_pubkey FROM meshes WHERE id = ?1")?
        .query_row([id], row_to_mesh)
        .optional()?)
}

pub fn list(conn: &Connection) -> Result<Vec<MeshInfo>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT id, slug, owner_pubkey FROM meshes ORDER BY slug")?;
    let rows = stmt.query_map([], row_to_mesh)?;
    Ok(rows.collect::<Result<_, _>>()?)
}
