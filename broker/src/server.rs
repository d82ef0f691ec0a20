//! Starting and stopping a broker: bind, migrate, spawn; and the graceful
//! shutdown (stop accepting, close every connection with 1001, commit and
//! checkpoint the database).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use claudemesh_protocol::wire::Peer;

use crate::config::BrokerConfig;
use crate::ctx::{Ctx, TaskCounter};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::net::admission::Admission;
use crate::net::fdlimit::{ConnectionBudget, current_nofile};
use crate::net::listener::GuardedListener;
use crate::replay_cache::ReplayCache;
use crate::store::{BROKER_URL_SETTING, Store};
use crate::writer::{WriteOp, Writer};

/// How often expired messages and hello signatures are deleted.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);

/// How long shutdown waits for connections to finish closing.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A broker serving on its port. Dropping it without
/// [`RunningBroker::shutdown`] stops accepting but skips the graceful close.
pub struct RunningBroker {
    local_addr: SocketAddr,
    ctx: Arc<Ctx>,
    stop_http: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

/// Binds, opens (creating and migrating) the database, and starts serving.
pub async fn start(mut config: BrokerConfig) -> anyhow::Result<RunningBroker> {
    let location = config.store_location();
    let store = Store::open(&location)
        .await
        .with_context(|| format!("opening the database ({})", config.describe_store()))?;
    let store = Arc::new(store);
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let local_addr = listener.local_addr()?;

    let url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("ws://{local_addr}/ws"));
    store
        .set_setting(BROKER_URL_SETTING, &url)
        .await
        .context("recording the broker URL")?;

    // Resolved once the port is bound (port 0 picks one), then fixed.
    let node = config.node_id_or(local_addr);
    config.node_id = Some(node.clone());
    if let Store::Postgres(pg) = &*store {
        tracing::info!(node = %node, "cluster node");
        pg.set_node_id(&node);
    }
    // Nodes sharing a PostgreSQL database are told apart by a `node`
    // label on every series; a SQLite broker is the only node.
    let metrics = Arc::new(match config.database_url {
        Some(_) => Metrics::with_const_labels(vec![("node".into(), node.into())]),
        None => Metrics::new(),
    });
    let writer = Writer::spawn(&store, metrics.clone(), config.max_write_batch)
        .await
        .context("starting the database writer")?;
    // A cluster node announces changes to its sessions to the others.
    let (hub, presence_changes) = if store.is_shared() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Hub::clustered(tx), Some(rx))
    } else {
        (Hub::new(), None)
    };
    let budget = ConnectionBudget::from_limit(
        current_nofile(),
        store.descriptors(),
        config.max_unauthenticated,
        config.max_unauthenticated_per_ip,
    );
    tracing::info!(
        open_files = ?budget.nofile,
        connections = budget.limits.max_open,
        unauthenticated = budget.limits.max_unauthenticated,
        per_ip = budget.limits.max_per_ip,
        trusted_proxies = ?config.trusted_proxies,
        "connection caps"
    );
    let admission = Admission::new(budget.limits, config.per_ip_cap_on_loopback);
    let ctx = Arc::new(Ctx {
        config,
        store,
        hub: Arc::new(hub),
        writer,
        metrics,
        replay: ReplayCache::default(),
        tasks: TaskCounter::default(),
        admission,
    });

    let mut background = vec![tokio::spawn(housekeeping(ctx.clone()))];
    // On PostgreSQL revocations arrive as notifications, with the rest of
    // the cluster's news; SQLite polls its revocation log.
    let cluster = crate::cluster::start(&ctx, presence_changes)
        .await
        .context("joining the cluster")?;
    if cluster.is_empty() {
        background.push(tokio::spawn(watch_revocations(ctx.clone())));
    }
    background.extend(cluster);
    let app = crate::http::router(ctx.clone())
        .into_make_service_with_connect_info::<crate::net::listener::ConnSlot>();
    let listener = GuardedListener::new(
        listener,
        ctx.admission.clone(),
        ctx.config.unauthenticated_deadline,
        ctx.metrics.clone(),
        &ctx.config.trusted_proxies,
    );
    let (stop_http, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "the HTTP server failed");
        }
    });
    tracing::info!(
        listen = %local_addr,
        url = %url,
        node = %ctx.config.node(),
        store = %ctx.config.describe_store(),
        "broker listening"
    );
    Ok(RunningBroker {
        local_addr,
        ctx,
        stop_http: Some(stop_http),
        server: Some(server),
        background,
    })
}

impl RunningBroker {
    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The faults a test injects into this node's PostgreSQL store
    /// (`None` on SQLite).
    pub fn pg_faults(&self) -> Option<&crate::store::postgres::faults::Faults> {
        match &*self.ctx.store {
            crate::store::Store::Postgres(pg) => Some(pg.faults()),
            crate::store::Store::Sqlite(_) => None,
        }
    }

    /// The sessions this node lists in mesh `mesh_id` (its own and, in a
    /// cluster, its replicas of the other nodes'), each as its peer and
    /// whether it is live, in (member, session) order. The nodes of a
    /// cluster reach one view a moment after each change (through the
    /// database); tests wait for it before acting on another node.
    pub fn listed_sessions(&self, mesh_id: &str) -> Vec<(Peer, bool)> {
        let Some(mesh) = self.ctx.hub.find(mesh_id) else {
            return Vec::new();
        };
        let state = mesh.lock();
        let mut listed: Vec<(Peer, bool)> = state
            .sessions()
            .map(|(_, entry)| {
                let live = entry.conn.is_some() || entry.is_live_elsewhere();
                (entry.peer.clone(), live)
            })
            .collect();
        drop(state);
        listed.sort_by(|a, b| (&a.0.member, &a.0.session_id).cmp(&(&b.0.member, &b.0.session_id)));
        listed
    }

    /// Graceful shutdown: stop accepting, close every connection with 1001
    /// `shutdown`, wait (up to 5 s) for them, then commit everything queued
    /// and checkpoint the WAL.
    pub async fn shutdown(mut self) {
        tracing::info!("shutting down");
        if let Some(stop) = self.stop_http.take() {
            let _ = stop.send(());
        }
        crate::cluster::hand_over(&self.ctx).await;
        self.ctx.hub.close_all(1001, "shutdown");
        self.ctx.tasks.wait_idle(SHUTDOWN_GRACE).await;
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, server).await;
        }
        for task in self.background.drain(..) {
            task.abort();
        }
        self.ctx.writer.shutdown().await;
        tracing::info!("shutdown complete");
    }
}

impl Drop for RunningBroker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_http.take() {
            let _ = stop.send(());
            self.ctx.hub.close_all(1001, "shutdown");
        }
        for task in self.background.drain(..) {
            task.abort();
        }
    }
}

/// Closes the connections of members revoked by another process (the admin
/// CLI) or by `/v1/leave`: polls the revocation log every
/// `revocation_poll`. One indexed query per poll.
async fn watch_revocations(ctx: Arc<Ctx>) {
    let mut last = match ctx.store.last_revocation_seq().await {
        Ok(seq) => seq,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the revocation log; CLI revocations will not close live connections");
            return;
        }
    };
    let mut ticker = tokio::time::interval(ctx.config.revocation_poll);
    loop {
        ticker.tick().await;
        match ctx.store.revocations_since(last).await {
            Ok(rows) => {
                for r in rows {
                    tracing::info!(mesh = %r.mesh_id, member = %r.member_id, "member revoked");
                    ctx.hub.revoke_member(&r.mesh_id, &r.member_id);
                    last = r.seq;
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the revocation log failed"),
        }
    }
}

async fn housekeeping(ctx: Arc<Ctx>) {
    let mut ticker = tokio::time::interval(HOUSEKEEPING_EVERY);
    loop {
        ticker.tick().await;
        let now_ms = ctx.now_ms();
        ctx.replay.prune(now_ms);
        ctx.writer.submit(WriteOp::Housekeeping { now_ms }).await;
    }
}
