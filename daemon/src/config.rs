//! The joined meshes, in `config_dir/config.json`.
//!
//! The file never holds a secret: member secret keys live in the keystore.
//! It is written atomically (temporary file, fsync, rename, fsync of the
//! directory) with mode 0600 in a 0700 directory. A config that cannot be
//! read or parsed is reported, never overwritten.
//!
//! The daemon re-reads it on a `reload_config` request and when
//! [`modified`] reports a new modification time.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::paths::{self, Paths, PathsError};

/// The format version this build reads and writes.
pub const CONFIG_VERSION: u32 = 1;

/// When set and non-empty, every non-local mesh connects to this broker
/// instead of the one its invite named (a self-hosted broker).
pub const ENV_BROKER_URL: &str = "CLAUDEMESH_BROKER_URL";

/// Why the config could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read the claudemesh config {}: {source}; check that it belongs to you \
         and is readable (chmod 600)",
        path.display()
    )]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "the claudemesh config {p} is not valid ({detail}); it was left untouched: \
         fix it by hand, or move it aside (mv {p} {p}.bad) and join your meshes again",
        p = path.display()
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "the claudemesh config {} has format version {found}, newer than this build \
         understands ({supported}); upgrade claudemesh (the file was left untouched)",
        path.display()
    )]
    NewerVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("cannot write the claudemesh config {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Dir(#[from] PathsError),
}

/// One joined mesh. Public data only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    pub mesh_id: String,
    pub slug: String,
    pub member_id: String,
    /// The member public key, 64 lowercase hex characters.
    pub pubkey: String,
    pub broker_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The daemon's own zero-config mesh.
    #[serde(default)]
    pub local: bool,
    /// When this member joined, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub joined_at: i64,
}

impl MeshConfig {
    /// The broker to connect to: `CLAUDEMESH_BROKER_URL`, when set and
    /// non-empty, points every non-local mesh at a self-hosted broker
    /// instead of the invite's.
    pub fn effective_broker_url(&self) -> String {
        self.broker_url_with_override(std::env::var(ENV_BROKER_URL).ok().as_deref())
    }

    /// As [`MeshConfig::effective_broker_url`], with the override passed in
    /// rather than read from the environment.
    pub fn broker_url_with_override(&self, override_url: Option<&str>) -> String {
        match override_url.map(str::trim) {
            Some(url) if !url.is_empty() && !self.local => url.to_string(),
            _ => self.broker_url.clone(),
        }
    }
}

/// All joined meshes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Config {
    #[serde(default)]
    pub version: u32,
    #[serde(default)]
    pub meshes: Vec<MeshConfig>,
    /// The mesh id set with `claudemesh-ctl default` or `join --default`:
    /// see [`pick_default`] for the rule when it is unset.
    #[serde(
        default,
        rename = "defaultMesh",
        skip_serializing_if = "Option::is_none"
    )]
    pub default_mesh: Option<String>,
}

/// The default mesh among `meshes` (in join order): the one `explicit`
/// names (id or slug) when it is among them; else the local mesh; else
/// the first joined. The daemon applies it to the meshes it runs, ctl to
/// the config. Joining a mesh never moves the default by itself: new
/// sessions stay in `local` until a person says otherwise.
pub fn pick_default<'a, T>(
    explicit: Option<&str>,
    meshes: &'a [T],
    id_slug_local: impl Fn(&T) -> (&str, &str, bool),
) -> Option<&'a T> {
    let named = explicit.and_then(|want| {
        meshes
            .iter()
            .find(|m| id_slug_local(m).0 == want)
            .or_else(|| meshes.iter().find(|m| id_slug_local(m).1 == want))
    });
    named
        .or_else(|| meshes.iter().find(|m| id_slug_local(m).2))
        .or_else(|| meshes.first())
}

impl Config {
    /// The config at `path`. A missing file is an empty config (at
    /// [`CONFIG_VERSION`]); an unreadable, corrupt or newer-format file is
    /// an error that names the file and what to do.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Config {
                    version: CONFIG_VERSION,
                    ..Config::default()
                });
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        // Bytes that are not UTF-8 are a damaged file, not an unreadable one.
        let text = String::from_utf8(bytes).map_err(|e| ConfigError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("it is not UTF-8 text: {e}"),
        })?;
        let config: Config = serde_json::from_str(&text).map_err(|e| ConfigError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        if config.version > CONFIG_VERSION {
            return Err(ConfigError::NewerVersion {
                path: path.to_path_buf(),
                found: config.version,
                supported: CONFIG_VERSION,
            });
        }
        Ok(config)
    }

    /// Writes the config atomically to `path` (mode 0600), creating its
    /// directory (0700) if needed. The file records [`CONFIG_VERSION`].
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Paths::ensure_private_dir(dir)?;
        }
        let stamped = Config {
            version: CONFIG_VERSION,
            meshes: self.meshes.clone(),
            default_mesh: self.default_mesh.clone(),
        };
        let mut json = serde_json::to_vec_pretty(&stamped).map_err(|e| ConfigError::Write {
            path: path.to_path_buf(),
            source: io::Error::other(e),
        })?;
        json.push(b'\n');
        paths::write_private_file(path, &json).map_err(|source| ConfigError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The mesh whose id is `slug_or_id`, or else the one whose slug is.
    pub fn find(&self, slug_or_id: &str) -> Option<&MeshConfig> {
        self.position(slug_or_id).map(|i| &self.meshes[i])
    }

    /// Adds `mesh`, or replaces the mesh with the same `mesh_id` in place.
    pub fn upsert(&mut self, mesh: MeshConfig) {
        match self.meshes.iter_mut().find(|m| m.mesh_id == mesh.mesh_id) {
            Some(existing) => *existing = mesh,
            None => self.meshes.push(mesh),
        }
    }

    /// Removes and returns the mesh that [`Config::find`] would return
    /// (no longer the default, if it was).
    pub fn remove(&mut self, slug_or_id: &str) -> Option<MeshConfig> {
        let removed = self.position(slug_or_id).map(|i| self.meshes.remove(i))?;
        if self.default_mesh.as_deref() == Some(removed.mesh_id.as_str()) {
            self.default_mesh = None;
        }
        Some(removed)
    }

    /// The default mesh of new sessions and ctl commands ([`pick_default`]).
    pub fn default_mesh(&self) -> Option<&MeshConfig> {
        pick_default(self.default_mesh.as_deref(), &self.meshes, |m| {
            (m.mesh_id.as_str(), m.slug.as_str(), m.local)
        })
    }

    fn position(&self, slug_or_id: &str) -> Option<usize> {
        self.meshes
            .iter()
            .position(|m| m.mesh_id == slug_or_id)
            .or_else(|| self.meshes.iter().position(|m| m.slug == slug_or_id))
    }
}

/// The modification time of `path`, if it exists and the platform has one:
/// the daemon polls it to pick up edits made by other processes.
pub fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).ok()?.modified().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(id: &str, slug: &str) -> MeshConfig {
        MeshConfig {
            mesh_id: id.into(),
            slug: slug.into(),
            member_id: "m1".into(),
            pubkey: "ab".repeat(32),
            broker_url: "wss://broker.example/ws".into(),
            display_name: None,
            local: false,
            joined_at: 1,
        }
    }

    #[test]
    fn find_prefers_id_then_slug() {
        let mut config = Config::default();
        config.upsert(mesh("id-a", "team"));
        config.upsert(mesh("team", "other"));
        assert_eq!(config.find("team").unwrap().mesh_id, "team");
        assert_eq!(config.find("other").unwrap().mesh_id, "team");
        assert_eq!(config.find("id-a").unwrap().slug, "team");
        assert!(config.find("nope").is_none());
    }

    #[test]
    fn upsert_replaces_by_mesh_id_in_place() {
        let mut config = Config::default();
        config.upsert(mesh("a", "one"));
        config.upsert(mesh("b", "two"));
        let mut renamed = mesh("a", "uno");
        renamed.display_name = Some("me".into());
        config.upsert(renamed.clone());
        assert_eq!(config.meshes.len(), 2);
        assert_eq!(config.meshes[0], renamed);
        assert_eq!(config.remove("two").unwrap().mesh_id, "b");
        assert_eq!(config.remove("a").unwrap(), renamed);
        assert!(config.remove("a").is_none());
        assert!(config.meshes.is_empty());
    }

    #[test]
    fn default_is_the_one_set_else_local_else_first_joined() {
        let mut config = Config::default();
        assert!(config.default_mesh().is_none());
        config.upsert(mesh("a", "team"));
        assert_eq!(config.default_mesh().unwrap().slug, "team");
        let mut local = mesh("l", "local");
        local.local = true;
        config.upsert(local);
        config.upsert(mesh("b", "other"));
        assert_eq!(
            config.default_mesh().unwrap().slug,
            "local",
            "a join moves nothing"
        );
        config.default_mesh = Some("b".into());
        assert_eq!(config.default_mesh().unwrap().slug, "other");
        config.default_mesh = Some("gone".into());
        assert_eq!(config.default_mesh().unwrap().slug, "local");
        config.default_mesh = Some("b".into());
        config.remove("other");
        assert_eq!(config.default_mesh, None, "leaving the default unsets it");
        assert_eq!(config.default_mesh().unwrap().slug, "local");
    }

    #[test]
    fn broker_override_applies_to_non_local_meshes_only() {
        let mut m = mesh("a", "one");
        assert_eq!(m.broker_url_with_override(None), m.broker_url);
        assert_eq!(m.broker_url_with_override(Some("")), m.broker_url);
        assert_eq!(m.broker_url_with_override(Some("  ")), m.broker_url);
        assert_eq!(
            m.broker_url_with_override(Some("ws://self.hosted:7900/ws")),
            "ws://self.hosted:7900/ws"
        );
        m.local = true;
        assert_eq!(
            m.broker_url_with_override(Some("ws://self.hosted:7900/ws")),
            m.broker_url
        );
    }

    #[test]
    fn wire_form_is_camel_case() {
        let json = serde_json::to_value(mesh("a", "one")).unwrap();
        for key in ["meshId", "memberId", "brokerUrl", "joinedAt", "pubkey"] {
            assert!(json.get(key).is_some(), "{key} missing in {json}");
        }
    }
}
