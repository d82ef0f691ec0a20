//! Administration of a broker's store: meshes, invites, members.
//!
//! Works whether or not a server runs on the same store: every write is a
//! short transaction (on SQLite it waits for the server's writer,
//! `busy_timeout`), and a revocation is appended to the revocation log,
//! which running servers poll (every 500 ms by default) to close the
//! revoked member's connections.
//!
//! Each mesh's owner key (the ed25519 key that signs its invites) lives in
//! `DIR/owner-keys/<meshId>.key` of the data directory: 64 hex characters
//! of seed, mode 0600, in a 0700 directory. With a PostgreSQL store too:
//! the keys stay on the admin machine that created the mesh, never in the
//! shared database the broker nodes read.
//!
//! The API is synchronous (the CLI, the daemon's local mesh and tests call
//! it); it drives the async [`Store`] on a small runtime of its own, on a
//! scoped thread when the caller is itself on a runtime.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};

use claudemesh_protocol::MemberPublicKey;
use claudemesh_protocol::MemberSecretKey;
use claudemesh_protocol::invite::Invite;

pub use crate::store::{MemberInfo, MeshInfo};
pub use claudemesh_protocol::invite::InviteRole;

use crate::clock::system_now_ms;
use crate::store::{self, BROKER_URL_SETTING, InviteRow, Store, StoreLocation};

/// The directory, under the data directory, holding mesh owner keys.
pub const OWNER_KEYS_DIR: &str = "owner-keys";

/// An open store, with the data directory holding the owner keys.
pub struct Admin {
    data_dir: PathBuf,
    store: Store,
    /// `None` only while being dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

/// A slug is what people type: 1 to 64 of `a-z 0-9 - _ .`.
fn check_slug(slug: &str) -> anyhow::Result<()> {
    let ok = !slug.is_empty()
        && slug.len() <= 64
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if !ok {
        bail!("a mesh slug is 1 to 64 characters of a-z, 0-9, '-', '_' and '.'; {slug:?} is not");
    }
    Ok(())
}

impl Admin {
    /// Opens `data_dir`'s database, creating and migrating it if needed.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        Self::open_store(data_dir, None)
    }

    /// Opens the PostgreSQL database at `database_url` when given (owner
    /// keys stay in `data_dir`), else `data_dir`'s SQLite database;
    /// creating and migrating it if needed.
    pub fn open_store(data_dir: &Path, database_url: Option<&str>) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the admin runtime")?;
        let (location, what) = match database_url {
            Some(url) => (
                StoreLocation::Postgres(url.to_owned()),
                format!("the PostgreSQL database {}", store::postgres::redact(url)),
            ),
            None => (
                StoreLocation::DataDir(data_dir.to_owned()),
                format!("the broker database in {}", data_dir.display()),
            ),
        };
        let store =
            block(&runtime, Store::open(&location)).with_context(|| format!("opening {what}"))?;
        Ok(Self {
            data_dir: data_dir.to_owned(),
            store,
            runtime: Some(runtime),
        })
    }

    /// Runs a store call to completion.
    fn run<F>(&self, f: F) -> F::Output
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        let rt = self
            .runtime
            .as_ref()
            .expect("the admin runtime lives until drop");
        block(rt, f)
    }

    fn key_path(&self, mesh_id: &str) -> PathBuf {
        self.data_dir
            .join(OWNER_KEYS_DIR)
            .join(format!("{mesh_id}.key"))
    }

    fn mesh(&self, slug_or_id: &str) -> anyhow::Result<MeshInfo> {
        self.find_mesh(slug_or_id)?.ok_or_else(|| {
            anyhow!("no mesh is named {slug_or_id:?} (by slug or id); see `mesh list`")
        })
    }

    /// Creates a mesh and its owner key. Fails if the slug is taken.
    pub fn create_mesh(&self, slug: &str) -> anyhow::Result<MeshInfo> {
        check_slug(slug)?;
        if self.run(self.store.find_mesh(slug))?.is_some() {
            bail!("a mesh with slug {slug:?} already exists");
        }
        let key = MemberSecretKey::generate()?;
        let mesh = MeshInfo {
            id: crate::ids::random_id("mesh_")?,
            slug: slug.to_owned(),
            owner_pubkey: key.public_key().to_hex(),
        };
        let path = self.key_path(&mesh.id);
        write_secret(&path, &hex::encode(key.seed().as_ref()))?;
        if let Err(e) = self.run(self.store.insert_mesh(&mesh, system_now_ms())) {
            let _ = std::fs::remove_file(&path);
            if self.run(self.store.find_mesh(slug))?.is_some() {
                bail!("a mesh with slug {slug:?} already exists");
            }
            return Err(e.into());
        }
        Ok(mesh)
    }

    /// The mesh with this slug or id.
    pub fn find_mesh(&self, slug_or_id: &str) -> anyhow::Result<Option<MeshInfo>> {
        Ok(self.run(self.store.find_mesh(slug_or_id))?)
    }

    pub fn list_meshes(&self) -> anyhow::Result<Vec<MeshInfo>> {
        Ok(self.run(self.store.list_meshes())?)
    }

    /// The broker URL the server recorded at its last start.
    pub fn recorded_broker_url(&self) -> anyhow::Result<Option<String>> {
        Ok(self.run(self.store.setting(BROKER_URL_SETTING))?)
    }

    fn owner_key(&self, mesh: &MeshInfo) -> anyhow::Result<MemberSecretKey> {
        let path = self.key_path(&mesh.id);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading the owner key of mesh {} at {}",
                mesh.slug,
                path.display()
            )
        })?;
        let seed = hex::decode(text.trim())
            .map_err(|_| anyhow!("the owner key file {} is damaged", path.display()))?;
        let key = MemberSecretKey::from_seed_slice(&seed)
            .map_err(|_| anyhow!("the owner key file {} is damaged", path.display()))?;
        if key.public_key().to_hex() != mesh.owner_pubkey {
            bail!(
                "the owner key file {} does not belong to mesh {}",
                path.display(),
                mesh.slug
            );
        }
        Ok(key)
    }

    /// Creates an invite and returns (invite id, `ic://join/…` link).
    /// `uses: None` is unlimited. An empty `broker_url` uses the URL the
    /// server recorded when it started.
    pub fn create_invite(
        &self,
        mesh: &str,
        role: InviteRole,
        uses: Option<u32>,
        expires_in_secs: i64,
        broker_url: &str,
    ) -> anyhow::Result<(String, String)> {
        let mesh = self.mesh(mesh)?;
        if expires_in_secs <= 0 {
            bail!("an invite must expire in the future");
        }
        if uses == Some(0) {
            bail!("an invite needs at least one use");
        }
        let url = if broker_url.is_empty() {
            self.recorded_broker_url()?.ok_or_else(|| {
                anyhow!("no broker URL is recorded (the server has never run on this data directory); pass --broker-url wss://host/ws")
            })?
        } else {
            broker_url.to_owned()
        };
        if !(url.starts_with("ws://") || url.starts_with("wss://")) || url.contains('|') {
            bail!("the broker URL must start with wss:// (or ws:// on loopback): {url:?}");
        }
        let key = self.owner_key(&mesh)?;
        let id = crate::ids::random_id("inv_")?;
        let expires_at = (system_now_ms() / 1000).saturating_add(expires_in_secs);
        let row = InviteRow {
            id: id.clone(),
            mesh_id: mesh.id.clone(),
            role: role.as_str().to_owned(),
            max_uses: uses,
            uses: 0,
            expires_at,
            revoked: false,
        };
        self.run(self.store.insert_invite(&row, system_now_ms()))?;
        let invite = Invite::signed(&key, &mesh.id, &mesh.slug, &url, &id, role, expires_at);
        Ok((id, invite.to_link()))
    }

    /// Enrolls a key directly, without an invite (the daemon's local mesh,
    /// benchmarks). Idempotent per public key: an existing member is
    /// returned as it is.
    pub fn enroll_member(
        &self,
        mesh: &str,
        pubkey_hex: &str,
        display_name: &str,
    ) -> anyhow::Result<MemberInfo> {
        let mesh = self.mesh(mesh)?;
        MemberPublicKey::from_hex(pubkey_hex)
            .map_err(|e| anyhow!("{pubkey_hex:?} is not a member public key: {e}"))?;
        if let Some(m) = self.run(self.store.member_by_pubkey(&mesh.id, pubkey_hex))? {
            return Ok(m);
        }
        let member = MemberInfo {
            id: crate::ids::random_id("mem_")?,
            mesh_id: mesh.id.clone(),
            pubkey: pubkey_hex.to_owned(),
            display_name: display_name.chars().take(64).collect(),
            role: "member".to_owned(),
            revoked: false,
        };
        if self.run(self.store.insert_member(&member, None, system_now_ms()))? {
            Ok(member)
        } else {
            // Enrolled concurrently by another process: return that one.
            self.run(self.store.member_by_pubkey(&mesh.id, pubkey_hex))?
                .ok_or_else(|| anyhow!("the member vanished while being enrolled; try again"))
        }
    }

    /// Every member of the mesh, revoked ones included.
    pub fn list_members(&self, mesh: &str) -> anyhow::Result<Vec<MemberInfo>> {
        let mesh = self.mesh(mesh)?;
        Ok(self.run(self.store.list_members(&mesh.id))?)
    }

    /// Revokes a member named by public key or (unambiguous) display name.
    /// Its connections close within the server's revocation poll and it
    /// cannot connect again.
    pub fn revoke_member(&self, mesh: &str, pubkey_or_name: &str) -> anyhow::Result<MemberInfo> {
        let mesh = self.mesh(mesh)?;
        let member = match self.run(self.store.member_by_pubkey(&mesh.id, pubkey_or_name))? {
            Some(m) => m,
            None => {
                let mut found = self.run(self.store.members_by_name(&mesh.id, pubkey_or_name))?;
                if found.len() > 1 {
                    found.retain(|m| !m.revoked);
                }
                match found.len() {
                    0 => bail!(
                        "mesh {} has no member with public key or name {pubkey_or_name:?}",
                        mesh.slug
                    ),
                    1 => found.remove(0),
                    _ => bail!(
                        "{} members of mesh {} are named {pubkey_or_name:?}; revoke by public key: {}",
                        found.len(),
                        mesh.slug,
                        found
                            .iter()
                            .map(|m| m.pubkey.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            }
        };
        self.run(
            self.store
                .revoke_member(&mesh.id, &member.id, system_now_ms()),
        )?;
        Ok(MemberInfo {
            revoked: true,
            ..member
        })
    }

    /// Revokes an invite: it can no longer be used to join.
    pub fn revoke_invite(&self, invite_id: &str) -> anyhow::Result<()> {
        if !self.run(self.store.revoke_invite(invite_id, system_now_ms()))? {
            bail!("no invite has id {invite_id:?}");
        }
        Ok(())
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        // Let the runtime go without blocking: the caller may be on an
        // async runtime, where a blocking drop panics.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs `f` on `rt`: here when the caller is on no runtime, else on a
/// scoped thread (a runtime cannot block inside another).
fn block<F>(rt: &tokio::runtime::Runtime, f: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return rt.block_on(f);
    }
    std::thread::scope(|s| match s.spawn(|| rt.block_on(f)).join() {
        Ok(out) => out,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// Writes a secret file readable by its owner alone (0600, in a 0700
/// directory), refusing to overwrite one.
fn write_secret(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        store::ensure_private_dir(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating the owner key file {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(())
}
