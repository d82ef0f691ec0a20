//! Following the config: a mesh joined (by ctl) gets a link, a mesh left
//! loses its link and its sessions, a changed one is restarted — all
//! without restarting the daemon.

use std::sync::Arc;

use claudemesh_protocol::ipc::{Event, LinkState};

use super::{Core, internal};
use crate::config::{self, Config, MeshConfig};
use crate::ids;
use crate::link::{LinkHandle, LinkIdentity};
use crate::mesh::Mesh;

/// What a reload changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    pub started: Vec<String>,
    pub stopped: Vec<String>,
}

impl Core {
    /// Reads the config file and makes the running meshes match it.
    pub async fn reload_config(self: &Arc<Self>) -> Result<ReloadSummary, String> {
        let mut last_seen = self.reload.lock().await;
        let path = self.paths.config_file();
        let stamp = config::modified(&path);
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|_| "the config reader was cancelled".to_owned())?;
        let cfg = loaded.map_err(|e| e.to_string())?;
        *last_seen = stamp;
        self.set_default_mesh(cfg.default_mesh);
        let wanted: Vec<MeshConfig> = cfg
            .meshes
            .into_iter()
            .filter(|m| !m.local || self.options.local_enabled)
            .collect();

        let mut summary = ReloadSummary::default();
        for mesh in self.meshes() {
            let still = wanted.iter().find(|w| w.mesh_id == mesh.id());
            match still {
                Some(w) if unchanged(w, &mesh) => {}
                Some(_) => {
                    self.stop_mesh(&mesh, false).await;
                    summary.stopped.push(mesh.slug().to_owned());
                }
                None => {
                    self.stop_mesh(&mesh, true).await;
                    summary.stopped.push(mesh.slug().to_owned());
                }
            }
        }
        self.problems()
            .retain(|id, _| wanted.iter().any(|w| w.mesh_id == *id));
        for w in wanted {
            if self.mesh(&w.mesh_id).is_none() {
                let slug = w.slug.clone();
                if self.start_mesh(w).await {
                    summary.started.push(slug);
                }
            }
        }
        if !summary.started.is_empty() || !summary.stopped.is_empty() {
            tracing::info!(started = ?summary.started, stopped = ?summary.stopped, "config reloaded");
        }
        Ok(summary)
    }

    /// True when the config file's modification time differs from the one
    /// last loaded.
    pub async fn config_changed(&self) -> bool {
        let stamp = config::modified(&self.paths.config_file());
        *self.reload.lock().await != stamp
    }

    /// Starts the link of one mesh; false (recorded as a problem for
    /// `status`) when it cannot run.
    async fn start_mesh(self: &Arc<Self>, cfg: MeshConfig) -> bool {
        let url = cfg.effective_broker_url();
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            self.problem(
                &cfg,
                format!("the broker URL {url:?} is not a ws:// or wss:// URL"),
            );
            return false;
        }
        let keystore = self.keystore.clone();
        let account = cfg.mesh_id.clone();
        let key = match tokio::task::spawn_blocking(move || keystore.load(&account)).await {
            Ok(Ok(Some(key))) => key,
            Ok(Ok(None)) => {
                self.problem(
                    &cfg,
                    format!(
                        "no member key for this mesh in the keystore ({}); join the mesh again",
                        self.keystore.location()
                    ),
                );
                return false;
            }
            Ok(Err(e)) => {
                self.problem(&cfg, e.to_string());
                return false;
            }
            Err(_) => {
                self.problem(&cfg, "the keystore read was cancelled".into());
                return false;
            }
        };
        if key.public_key().to_hex() != cfg.pubkey {
            self.problem(
                &cfg,
                "the key in the keystore does not match the config's public key; join the mesh again".into(),
            );
            return false;
        }
        let mesh_id = cfg.mesh_id.clone();
        let accepted = match self
            .store
            .call(move |db| db.mesh_was_accepted(&mesh_id))
            .await
        {
            Ok(a) => a,
            Err(e) => {
                internal(e);
                false
            }
        };
        let identity = LinkIdentity {
            mesh_id: cfg.mesh_id.clone(),
            member_id: cfg.member_id.clone(),
            broker_url: url.clone(),
            key: key.clone(),
            connection_id: ids::daemon_connection_id(&self.install_id),
        };
        let (link, events) = LinkHandle::spawn(identity, accepted);
        let mesh = Arc::new(Mesh::new(cfg, url, key, link));
        tracing::info!(mesh = %mesh.slug(), broker = %mesh.broker_url, local = mesh.config.local, "mesh started");
        self.meshes_mut().insert(mesh.id().to_owned(), mesh.clone());
        self.problems().remove(mesh.id());
        let worker = tokio::spawn(self.clone().mesh_worker(mesh.clone(), events));
        mesh.set_worker(worker);
        true
    }

    fn problem(&self, cfg: &MeshConfig, why: String) {
        tracing::error!(mesh = %cfg.slug, problem = %why, "cannot start this mesh");
        self.problems()
            .insert(cfg.mesh_id.clone(), (cfg.clone(), why));
    }

    /// Stops a mesh's link. When it was left (`forget`), its sessions end
    /// and its stored messages are dropped.
    async fn stop_mesh(&self, mesh: &Arc<Mesh>, forget: bool) {
        self.meshes_mut().remove(mesh.id());
        mesh.stop().await;
        if !forget {
            return;
        }
        tracing::info!(mesh = %mesh.slug(), "mesh left");
        let event = Event::LinkState {
            mesh: mesh.slug().to_owned(),
            state: LinkState::Disconnected,
            detail: Some("this mesh was left".into()),
        };
        self.sessions.broadcast(mesh.id(), None, &event);
        self.sessions
            .lock()
            .retain(|_, s| s.row.mesh_id != mesh.id());
        let mesh_id = mesh.id().to_owned();
        if let Err(e) = self
            .store
            .call(move |db| {
                db.forget_mesh(&mesh_id)?;
                db.forget_mesh_meta(&mesh_id)
            })
            .await
        {
            internal(e);
        }
    }

    /// Meshes in the config that could not be started, with why.
    pub fn mesh_problems(&self) -> Vec<(MeshConfig, String)> {
        let mut all: Vec<_> = self.problems().values().cloned().collect();
        all.sort_by(|a, b| a.0.slug.cmp(&b.0.slug));
        all
    }
}

/// Whether a running mesh still matches its config entry.
fn unchanged(cfg: &MeshConfig, mesh: &Mesh) -> bool {
    cfg.member_id == mesh.config.member_id
        && cfg.pubkey == mesh.config.pubkey
        && cfg.effective_broker_url() == mesh.broker_url
        && cfg.slug == mesh.config.slug
}
