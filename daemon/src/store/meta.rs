//! Small facts that must survive a restart.

use rusqlite::{OptionalExtension, params};

use super::{Db, StoreResult};

impl Db {
    pub fn meta_get(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    pub fn meta_set(&self, key: &str, value: &str) -> StoreResult<()> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// This installation's random id, minted on first use. It keeps the
    /// session ids of two machines sharing a member key apart.
    pub fn install_id(&self) -> StoreResult<String> {
        if let Some(id) = self.meta_get("install_id")? {
            return Ok(id);
        }
        let id = crate::ids::random_hex(16);
        self.meta_set("install_id", &id)?;
        Ok(id)
    }

    /// Whether the broker of `mesh_id` has ever accepted this member's
    /// hello: an `unauthorized` after that means the member was revoked.
    pub fn mesh_was_accepted(&self, mesh_id: &str) -> StoreResult<bool> {
        Ok(self.meta_get(&format!("accepted:{mesh_id}"))?.is_some())
    }

    pub fn set_mesh_accepted(&self, mesh_id: &str) -> StoreResult<()> {
        self.meta_set(&format!("accepted:{mesh_id}"), "1")
    }

    /// Forgets a mesh's flags (after a leave, so that a rejoin starts clean).
    pub fn forget_mesh_meta(&self, mesh_id: &str) -> StoreResult<()> {
        self.conn.execute(
            "DELETE FROM meta WHERE key = ?1",
            [format!("accepted:{mesh_id}")],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;

    #[test]
    fn install_id_is_stable_and_flags_round_trip() {
        let store = Store::open_in_memory().unwrap();
        store
            .call_sync(|db| {
                let a = db.install_id()?;
                assert_eq!(a, db.install_id()?);
                assert!(!db.mesh_was_accepted("m")?);
                db.set_mesh_accepted("m")?;
                assert!(db.mesh_was_accepted("m")?);
                db.forget_mesh_meta("m")?;
                assert!(!db.mesh_was_accepted("m")?);
                Ok(())
            })
            .unwrap();
    }
}
