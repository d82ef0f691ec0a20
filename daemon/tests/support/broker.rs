//! A standalone broker in the test process, and enrollment of daemons'
//! members into it (as `claudemesh-ctl join` would leave things: the
//! member key in the daemon's keystore, the mesh in its config).

use std::net::SocketAddr;
use std::time::Duration;

use claudemesh_broker::admin::Admin;
use claudemesh_broker::{BrokerConfig, RunningBroker};
use claudemesh_daemon::config::{Config, MeshConfig};
use claudemesh_protocol::MemberSecretKey;
use tempfile::TempDir;

use super::daemon::{Daemon, Home};

pub struct TestBroker {
    pub dir: TempDir,
    running: Option<RunningBroker>,
    addr: SocketAddr,
}

impl TestBroker {
    pub async fn start() -> TestBroker {
        let dir = tempfile::tempdir().expect("broker dir");
        let running = claudemesh_broker::start(config(&dir, "127.0.0.1:0".parse().unwrap()))
            .await
            .expect("start the broker");
        let addr = running.local_addr();
        TestBroker {
            dir,
            running: Some(running),
            addr,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub async fn stop(&mut self) {
        if let Some(b) = self.running.take() {
            b.shutdown().await;
        }
    }

    /// Starts again on the same port and data directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        for _ in 0..100 {
            match claudemesh_broker::start(config(&self.dir, self.addr)).await {
                Ok(b) => {
                    self.running = Some(b);
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        panic!("the broker could not listen on {} again", self.addr);
    }

    /// Creates `slug` if needed, enrolls a fresh member for `home`, stores
    /// its key in the home's keystore and the mesh in its config.
    pub fn enroll(&self, home: &Home, slug: &str, name: &str) -> MeshConfig {
        let admin = Admin::open(self.dir.path()).expect("admin");
        let mesh = match admin.find_mesh(slug).expect("find mesh") {
            Some(m) => m,
            None => admin.create_mesh(slug).expect("create mesh"),
        };
        let key = MemberSecretKey::generate().expect("key");
        let pubkey = key.public_key().to_hex();
        let member = admin
            .enroll_member(&mesh.id, &pubkey, name)
            .expect("enroll");
        home.keystore().store(&mesh.id, &key).expect("store key");
        let entry = MeshConfig {
            mesh_id: mesh.id.clone(),
            slug: mesh.slug.clone(),
            member_id: member.id,
            pubkey,
            broker_url: self.url(),
            display_name: Some(name.to_owned()),
            local: false,
            joined_at: 1,
        };
        let path = home.paths.config_file();
        let mut config = Config::load(&path).expect("config");
        config.upsert(entry.clone());
        config.save(&path).expect("save config");
        entry
    }

    pub fn revoke(&self, mesh: &str, pubkey: &str) {
        let admin = Admin::open(self.dir.path()).expect("admin");
        admin.revoke_member(mesh, pubkey).expect("revoke");
    }
}

/// Two members of mesh `team` ("a" and "b"), each with its own home and a
/// running daemon without the local mesh. The homes must outlive the
/// daemons, so both are returned.
pub struct TwoDaemons {
    pub home_a: Home,
    pub home_b: Home,
    pub a: Daemon,
    pub b: Daemon,
}

impl TestBroker {
    pub async fn two_daemons(&self) -> TwoDaemons {
        let (home_a, home_b) = (Home::new(), Home::new());
        self.enroll(&home_a, "team", "a");
        self.enroll(&home_b, "team", "b");
        let a = Daemon::start_ready(&home_a, &["--no-local"]).await;
        let b = Daemon::start_ready(&home_b, &["--no-local"]).await;
        TwoDaemons {
            home_a,
            home_b,
            a,
            b,
        }
    }
}

fn config(dir: &TempDir, listen: SocketAddr) -> BrokerConfig {
    let mut c = BrokerConfig::new(listen, dir.path().to_path_buf());
    c.revocation_poll = Duration::from_millis(100);
    // The tests send bursts of thousands; the daemon's handling of
    // `rate_limited` (a retry) is not what they measure.
    c.send_rate_per_sec = 100_000.0;
    c.send_burst = 100_000.0;
    c
}
