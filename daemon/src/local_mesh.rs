//! The zero-configuration local mesh: the broker library on a loopback
//! port, a mesh called `local`, and this daemon's own member in it, so that
//! the sessions on one machine can talk before anything is joined.
//!
//! Its database lives in `paths.local_broker_dir()`, its member key in the
//! keystore (account = the mesh id), and its entry in the config with
//! `local: true` like any joined mesh, so the rest of the daemon treats it
//! as one. The broker URL in that entry is rewritten whenever the port
//! changes.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, bail};
use claudemesh_broker::admin::Admin;
use claudemesh_broker::{BrokerConfig, RunningBroker};
use claudemesh_protocol::MemberSecretKey;

use crate::config::{Config, MeshConfig};
use crate::keystore::Keystore;
use crate::paths::Paths;

/// The local mesh's slug.
pub const LOCAL_SLUG: &str = "local";

pub struct LocalMesh {
    broker: RunningBroker,
    pub mesh_id: String,
    pub url: String,
}

impl LocalMesh {
    /// Starts the embedded broker and makes sure the mesh, the member, its
    /// key and the config entry exist. `port`: a fixed port, else the one
    /// used last time if it is free, else any.
    pub async fn start(
        paths: &Paths,
        keystore: Arc<Keystore>,
        port: Option<u16>,
    ) -> anyhow::Result<LocalMesh> {
        let dir = paths.local_broker_dir();
        Paths::ensure_private_dir(&dir)?;
        let admin_dir = dir.clone();
        let (mesh_id, member_id, pubkey, member_name) =
            tokio::task::spawn_blocking(move || enroll_self(&admin_dir, &keystore))
                .await
                .context("the local mesh setup was cancelled")??;

        let config_path = paths.config_file();
        let mut config = Config::load(&config_path)?;
        let previous = config
            .meshes
            .iter()
            .find(|m| m.local && m.mesh_id == mesh_id)
            .cloned();
        let last_port = previous.as_ref().and_then(|m| port_of(&m.broker_url));
        let broker = match (port, last_port) {
            (Some(p), _) => start_broker(&dir, p)
                .await
                .with_context(|| format!("the local broker cannot listen on 127.0.0.1:{p}"))?,
            (None, Some(p)) => match start_broker(&dir, p).await {
                Ok(b) => b,
                Err(_) => start_broker(&dir, 0).await?,
            },
            (None, None) => start_broker(&dir, 0).await?,
        };
        let url = format!("ws://{}/ws", broker.local_addr());
        let entry = MeshConfig {
            mesh_id: mesh_id.clone(),
            slug: LOCAL_SLUG.to_owned(),
            member_id,
            pubkey,
            broker_url: url.clone(),
            // The member's name: messages to it reach the terminal
            // (`claudemesh-ctl inbox`), which sends under it too.
            display_name: Some(member_name),
            local: true,
            joined_at: previous
                .as_ref()
                .map_or_else(crate::ids::now_ms, |m| m.joined_at),
        };
        // Entries of an older local broker (its directory was wiped) go.
        let before = config.meshes.len();
        config.meshes.retain(|m| !m.local || m.mesh_id == mesh_id);
        if previous.as_ref() != Some(&entry) || config.meshes.len() != before {
            config.upsert(entry);
            config.save(&config_path)?;
        }
        tracing::info!(url = %url, mesh = %mesh_id, "local mesh running");
        Ok(LocalMesh {
            broker,
            mesh_id,
            url,
        })
    }

    pub async fn shutdown(self) {
        self.broker.shutdown().await;
    }
}

/// Creates the `local` mesh if needed, and enrolls this daemon's key
/// (created and stored on first use). Returns (mesh id, member id, pubkey,
/// member name).
fn enroll_self(
    dir: &std::path::Path,
    keystore: &Keystore,
) -> anyhow::Result<(String, String, String, String)> {
    let admin = Admin::open(dir)?;
    let mesh = match admin.find_mesh(LOCAL_SLUG)? {
        Some(m) => m,
        None => admin.create_mesh(LOCAL_SLUG)?,
    };
    let key = match keystore.load(&mesh.id)? {
        Some(k) => k,
        None => {
            let k = MemberSecretKey::generate()?;
            keystore.store(&mesh.id, &k)?;
            k
        }
    };
    let pubkey = key.public_key().to_hex();
    let host = crate::host::host_name();
    let member = admin.enroll_member(
        &mesh.id,
        &pubkey,
        if host.is_empty() { "local" } else { &host },
    )?;
    if member.revoked {
        bail!(
            "this daemon's member of the local mesh was revoked; remove {} to start the local mesh afresh",
            dir.display()
        );
    }
    Ok((mesh.id, member.id, pubkey, member.display_name))
}

async fn start_broker(dir: &std::path::Path, port: u16) -> anyhow::Result<RunningBroker> {
    let mut config = BrokerConfig::new(
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        dir.to_path_buf(),
    );
    // Every local session shares the daemon's one member, so the broker's
    // per-member send rate is per machine here: allow a busy machine.
    config.send_rate_per_sec = 20_000.0;
    config.send_burst = 50_000.0;
    // Revocations here come through the broker itself (`/v1/leave`, which
    // closes the connections at once); the log is polled only for an
    // admin CLI run by hand on this directory. An idle daemon should not
    // wake twice a second for that.
    config.revocation_poll = std::time::Duration::from_secs(60);
    claudemesh_broker::start(config).await
}

/// The port of a `ws://host:port/...` URL.
fn port_of(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("ws://")?;
    let authority = rest.split('/').next()?;
    authority.rsplit_once(':')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_read_from_urls() {
        assert_eq!(port_of("ws://127.0.0.1:4242/ws"), Some(4242));
        assert_eq!(port_of("wss://example.com/ws"), None);
        assert_eq!(port_of("ws://127.0.0.1/ws"), None);
    }
}
