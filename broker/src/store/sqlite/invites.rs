//! Invite rows and the atomic join.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{members, meshes};
use crate::store::{InviteRow, JoinRefusal, JoinRequest, MemberInfo, StoreError};

pub fn insert(conn: &Connection, row: &InviteRow, now_ms: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO invites (id, mesh_id, role, max_uses, uses, expires_at, created_at)
         VALUES (?1, ?2, ?3, ?4, 0, ?5, ?6)",
        params![
            row.id,
            row.mesh_id,
            row.role,
            row.max_uses,
            row.expires_at,
            now_ms
        ],
    )?;
    Ok(())
}

pub fn find(conn: &Connection, id: &str) -> Result<Option<InviteRow>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT id, mesh_id, role, max_uses, uses, expires_at, revoked_at IS NOT NULL
             FROM invites WHERE id = ?1",
        )?
        .query_row([id], |r| {
            Ok(InviteRow {
                id: r.get(0)?,
                mesh_id: r.get(1)?,
                role: r.get(2)?,
                max_uses: r.get(3)?,
                uses: r.get(4)?,
                expires_at: r.get(5)?,
                revoked: r.get(6)?,
            })
        })
        .optional()?)
}

/// Revokes an invite; false when no invite has that id.
pub fn revoke(conn: &Connection, id: &str, now_ms: i64) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE invites SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
        params![id, now_ms],
    )?;
    Ok(n == 1)
}

/// Enrolls `pubkey` with a verified invite, in one `BEGIN IMMEDIATE`
/// transaction: of two joins racing for the last use, exactly one gets
/// it. A key that is already an active member gets its member back and
/// uses nothing, whatever the state of the invite.
pub fn join(
    conn: &mut Connection,
    req: &JoinRequest,
) -> Result<Result<MemberInfo, JoinRefusal>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let invite = &req.invite;
    let Some(mesh) = meshes::find_by_id(&tx, &invite.mesh_id)? else {
        return Ok(Err(JoinRefusal::UnknownMesh));
    };
    if mesh.owner_pubkey != invite.owner_pubkey {
        // Signed, but not by this mesh's owner: a forgery.
        return Ok(Err(JoinRefusal::BadSignature));
    }
    if mesh.slug != invite.mesh_slug {
        return Ok(Err(JoinRefusal::BadInvite));
    }
    if let Some(existing) = members::find_by_pubkey(&tx, &mesh.id, &req.pubkey)? {
        return Ok(if existing.revoked {
            Err(JoinRefusal::Revoked)
        } else {
            Ok(existing)
        });
    }
    let Some(row) = find(&tx, &invite.invite_id)? else {
        return Ok(Err(JoinRefusal::BadInvite));
    };
    if row.mesh_id != mesh.id || row.role != invite.role.as_str() {
        return Ok(Err(JoinRefusal::BadInvite));
    }
    if row.revoked {
        return Ok(Err(JoinRefusal::Revoked));
    }
    if req.now_ms.div_euclid(1000) >= row.expires_at.min(invite.expires_at) {
        return Ok(Err(JoinRefusal::Expired));
    }
    let used = tx.execute(
        "UPDATE invites SET uses = uses + 1
         WHERE id = ?1 AND revoked_at IS NULL AND (max_uses IS NULL OR uses < max_uses)",
        [&row.id],
    )?;
    if used != 1 {
        return Ok(Err(JoinRefusal::Exhausted));
    }
    let member = MemberInfo {
        id: req.new_member_id.clone(),
        mesh_id: mesh.id.clone(),
        pubkey: req.pubkey.clone(),
        display_name: req.display_name.clone(),
        role: row.role.clone(),
        revoked: false,
    };
    if !members::insert(&tx, &member, Some(&row.id), req.now_ms)? {
        // Cannot happen under IMMEDIATE (we looked above), but never
        // consume a use for a member that was not created.
        return Err(StoreError::Corrupt(
            "member appeared during an exclusive transaction".into(),
        ));
    }
    tx.commit()?;
    Ok(Ok(member))
}
