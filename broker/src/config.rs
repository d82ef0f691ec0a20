//! Everything a running broker can be told, with defaults that follow
//! PROTOCOL.md and `claudemesh_protocol::limits`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use claudemesh_protocol::limits;

use crate::clock::Clock;
use crate::store::StoreLocation;

/// How to run one broker. [`BrokerConfig::new`] gives the protocol's
/// defaults; tests shorten the timeouts and inject a clock.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Address to bind; port 0 picks a free one (see `RunningBroker::local_addr`).
    pub listen: SocketAddr,
    /// Directory holding `broker.db` and `owner-keys/`.
    pub data_dir: PathBuf,
    /// A `postgres://` URL: the store is that database instead of
    /// `broker.db` in `data_dir`.
    pub database_url: Option<String>,
    /// This node's name in a cluster (several nodes on one PostgreSQL):
    /// stable across restarts, unique among the nodes. `None`: the host
    /// name and the bound port. Unused on SQLite.
    pub node_id: Option<String>,
    /// How often a cluster node records its heartbeat (and looks for
    /// nodes gone silent).
    pub heartbeat_every: Duration,
    /// A node whose heartbeat is older than this is taken for dead: one
    /// surviving node claims it and its sessions enter their grace period.
    pub node_stale_after: Duration,
    /// The public `wss://…/ws` URL recorded for `invite` to put in links;
    /// `None` records `ws://<bound address>/ws`.
    pub public_url: Option<String>,
    /// A connection that has not sent `hello` by then is closed (`hello_timeout`).
    pub hello_timeout: Duration,
    /// How long a session whose connection dropped stays listed.
    pub presence_grace: Duration,
    /// A connection from which nothing arrived for this long is closed.
    pub idle_timeout: Duration,
    /// How often the broker pings each connection.
    pub ping_interval: Duration,
    /// Sustained `send` frames per second per member (token bucket refill).
    pub send_rate_per_sec: f64,
    /// Token bucket size: how many sends a member may make at once.
    pub send_burst: f64,
    /// Live connections one member may hold at once.
    pub max_connections_per_member: usize,
    /// How often the server looks for revocations made by another process
    /// (the admin CLI) on the same database.
    pub revocation_poll: Duration,
    /// Frames waiting to be written to one connection before it is judged
    /// too slow and closed (1013 `slow_consumer`); its messages stay queued.
    pub outbound_queue: usize,
    /// Connections not yet authenticated, over all clients: past it the
    /// oldest is evicted to make room for the newcomer. [`crate::start`]
    /// lowers it to half of what the open-file limit leaves once the store
    /// and a reserve have theirs, keeping the other half for members
    /// (`net::fdlimit::ConnectionBudget`).
    pub max_unauthenticated: usize,
    /// Connections not yet authenticated from one IP address.
    pub max_unauthenticated_per_ip: usize,
    /// Whether the per-IP cap also applies to loopback addresses. Off by
    /// default: behind a local TLS proxy every client comes from 127.0.0.1,
    /// and the per-IP cap would become a second, smaller global cap (the
    /// proxy must limit per client; the global cap still applies). A
    /// client address a trusted proxy names is always capped.
    pub per_ip_cap_on_loopback: bool,
    /// Peers whose PROXY v2 header or `X-Forwarded-For` is believed: a
    /// connection from one is counted under the client address it names
    /// (`--trusted-proxy`, see `net::proxy`). A PROXY header from any
    /// other peer closes the connection; its `X-Forwarded-For` is ignored.
    pub trusted_proxies: Vec<IpAddr>,
    /// A connection not authenticated by then is closed (HTTP requests
    /// included: this bounds slow headers, slow bodies and idle keep-alive).
    pub unauthenticated_deadline: Duration,
    /// At most this many writes are committed in one transaction.
    pub max_write_batch: usize,
    /// The broker's clock (hello and leave timestamps, message times).
    pub clock: Clock,
}

impl BrokerConfig {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            database_url: None,
            node_id: None,
            heartbeat_every: Duration::from_secs(1),
            node_stale_after: Duration::from_secs(5),
            public_url: None,
            hello_timeout: Duration::from_millis(limits::HELLO_TIMEOUT_MS),
            presence_grace: Duration::from_millis(limits::PRESENCE_GRACE_MS),
            idle_timeout: Duration::from_millis(limits::IDLE_TIMEOUT_MS),
            ping_interval: Duration::from_secs(25),
            send_rate_per_sec: 200.0,
            send_burst: 1000.0,
            max_connections_per_member: 32,
            revocation_poll: Duration::from_millis(500),
            outbound_queue: limits::MAX_OUTBOUND_QUEUE_FRAMES,
            max_unauthenticated: limits::MAX_UNAUTHENTICATED_CONNECTIONS,
            max_unauthenticated_per_ip: limits::MAX_UNAUTHENTICATED_PER_IP,
            per_ip_cap_on_loopback: false,
            trusted_proxies: Vec::new(),
            unauthenticated_deadline: Duration::from_millis(limits::UNAUTHENTICATED_DEADLINE_MS),
            max_write_batch: 1024,
            clock: Clock::system(),
        }
    }
}

impl BrokerConfig {
    /// Where the state lives: the PostgreSQL URL when one is given, else
    /// the data directory's SQLite file.
    pub fn store_location(&self) -> StoreLocation {
        match &self.database_url {
            Some(url) => StoreLocation::Postgres(url.clone()),
            None => StoreLocation::DataDir(self.data_dir.clone()),
        }
    }

    /// This node's id once [`crate::start`] has bound its port: the
    /// configured one, else `<host name>:<port>`.
    pub fn node(&self) -> &str {
        self.node_id.as_deref().unwrap_or_default()
    }

    /// This node's id: the configured one, else `<host name>:<port>`.
    pub fn node_id_or(&self, bound: SocketAddr) -> String {
        if let Some(id) = &self.node_id {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        format!("{host}:{}", bound.port())
    }

    /// The store, for messages (never a password).
    pub fn describe_store(&self) -> String {
        match &self.database_url {
            Some(url) => format!("PostgreSQL at {}", crate::store::postgres::redact(url)),
            None => format!("SQLite in {}", self.data_dir.display()),
        }
    }
}
