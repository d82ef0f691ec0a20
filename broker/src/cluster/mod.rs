//! Several nodes on one PostgreSQL database, each holding only its own
//! connections and learning of work for them through the database.
//!
//! Every node keeps one `LISTEN` connection (outside the pool). The
//! transactions that store messages, record receipts or revoke members
//! send a notification on commit ([`crate::store::postgres::notify`]);
//! this module turns what other nodes announce into pushes, receipts and
//! closed connections here:
//!
//! - **messages:** one read of the announced messages' undelivered copies
//!   for the recipients connected to this node (the notification names
//!   each message's recipients when they fit), pushed to their connections;
//! - **receipts:** relayed to the sender's connections on this node;
//! - **revocations:** the member's connections here are closed at once;
//! - **presence:** each node writes the rows of the sessions it carries to
//!   a shared table ([`presence`]) and every other node keeps them in its
//!   hub beside its own, so routing, acks, peer lists and peer events see
//!   one view. A session that moves to another node within its grace
//!   makes no noise: the old node's copy becomes the new node's replica.
//!
//! When the `LISTEN` connection breaks, the node reconnects with backoff
//! and then catches up on what it may have missed: every live connection
//! reads its pending copies again (the connection's record of recent
//! pushes keeps that from repeating one), and the revocation log is read
//! from the last revocation handled.
//!
//! SQLite stays one node: none of this runs there.

mod copies;
mod presence;
pub mod targets;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

use claudemesh_protocol::wire::DeliveryState;

use crate::ctx::Ctx;
use crate::delivery::{self, Receipt, Redelivery};
use crate::hub::PresenceNews;
use crate::metrics::Metrics;
use crate::store::postgres::PgStore;
use crate::store::postgres::connect::Listening;
use crate::store::postgres::notify::{ClusterEvent, ReceiptNote};
use crate::store::{ReceiptRoute, Store, StoreError};

/// The first wait before listening again after a failure.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Starts listening (the first connection is made before this returns,
/// so nothing committed after start is missed), loads the other nodes'
/// sessions, and returns the tasks that handle notifications and write
/// this node's presence (`changes`, from the hub); none on SQLite.
pub async fn start(
    ctx: &Arc<Ctx>,
    changes: Option<UnboundedReceiver<PresenceNews>>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, StoreError> {
    let (Store::Postgres(pg), Some(changes)) = (&*ctx.store, changes) else {
        return Ok(Vec::new());
    };
    // What an earlier run under this node id left is gone with its
    // connections (their rows are deleted): its sessions get their
    // grace, as a dead node's do.
    pg.orphan_own_presence(grace_ms(ctx)).await?;
    let first = pg.listen().await?;
    let last_revocation = pg.last_revocation_seq().await?;
    presence::load(ctx, pg).await?;
    let (retries, retrying) = copies::Retries::start(ctx);
    Ok(vec![
        tokio::spawn(run(ctx.clone(), first, last_revocation, retries)),
        retrying,
        tokio::spawn(presence::write(ctx.clone(), changes)),
        tokio::spawn(heartbeat(ctx.clone())),
    ])
}

/// In a cluster: records a new connection of `member_id` if the member
/// has fewer than the per-member limit over every node. Always true on
/// SQLite (the hub counts there, under the mesh lock).
pub async fn admit_connection(
    ctx: &Ctx,
    conn_id: u64,
    mesh_id: &str,
    member_id: &str,
) -> Result<bool, StoreError> {
    match &*ctx.store {
        Store::Postgres(pg) => {
            pg.admit_connection(
                conn_id,
                mesh_id,
                member_id,
                ctx.config.max_connections_per_member,
            )
            .await
        }
        Store::Sqlite(_) => Ok(true),
    }
}

/// In a cluster: forgets a connection that [`admit_connection`] recorded.
/// In the background: a failure leaves a row that the node's next start
/// (or its claim by another node) removes.
pub fn release_connection(ctx: &Arc<Ctx>, conn_id: u64) {
    if !ctx.store.is_shared() {
        return;
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        if let Store::Postgres(pg) = &*ctx.store
            && let Err(e) = pg.release_connection(conn_id).await
        {
            tracing::warn!(error = %e, "forgetting a closed connection failed");
        }
    });
}

/// Before a graceful shutdown: this node's sessions enter their grace in
/// the database, so that their clients can resume them on another node
/// without noise (and those that do not leave once, after the grace).
pub async fn hand_over(ctx: &Ctx) {
    if let Store::Postgres(pg) = &*ctx.store
        && let Err(e) = pg.orphan_own_presence(grace_ms(ctx)).await
    {
        tracing::warn!(error = %e, "handing this node's sessions over failed");
    }
}

fn grace_ms(ctx: &Ctx) -> i64 {
    i64::try_from(ctx.config.presence_grace.as_millis()).unwrap_or(i64::MAX)
}

/// Beats every `heartbeat_every`: this node's heartbeat, the claim of
/// nodes gone silent and the removal of their sessions that did not come
/// back within the grace (see [`PgStore::cluster_beat`]).
async fn heartbeat(ctx: Arc<Ctx>) {
    let Store::Postgres(pg) = &*ctx.store else {
        return;
    };
    let stale_after = ctx.config.node_stale_after;
    let stale = i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX);
    let mut ticker = tokio::time::interval(ctx.config.heartbeat_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Since when this node's beats have reached the database without a
    // failure. It claims others only after a whole stale window of them:
    // when the database comes back from an outage, every heartbeat in it
    // is stale, and the first node back would otherwise take over nodes
    // that are alive, holding their connections, and merely had no
    // database to beat in either (their sessions would leave after the
    // grace while connected).
    let mut beating_since: Option<tokio::time::Instant> = None;
    loop {
        ticker.tick().await;
        let may_claim = beating_since.is_some_and(|t| t.elapsed() >= stale_after);
        match pg.cluster_beat(stale, grace_ms(&ctx), may_claim).await {
            Ok(beat) => {
                beating_since.get_or_insert_with(tokio::time::Instant::now);
                if beat.was_claimed {
                    take_sessions_back(&ctx);
                }
                for node in beat.claimed {
                    tracing::warn!(node = %node, "a node went silent; its sessions are in their grace period");
                }
            }
            Err(e) => {
                beating_since = None;
                tracing::warn!(error = %e, "the cluster heartbeat failed");
            }
        }
    }
}

/// This node, alive, was taken for dead (stalled, or out of the
/// database's reach, for longer than the stale window): another node put
/// its sessions into their grace and announced them not live. Each
/// session a connection here still carries is announced live again, in
/// order with the hub's other changes, which takes its row back before
/// the grace ends (else it would leave while connected). The
/// connections' rows for the per-member limit are not restored: they are
/// written at admission only, and the limit under-counts these until
/// they close.
fn take_sessions_back(ctx: &Ctx) {
    let mut n = 0;
    for mesh in ctx.hub.meshes() {
        n += mesh.lock().publish_live_again();
    }
    tracing::warn!(
        sessions = n,
        "this node was taken for dead while alive; its sessions are taken back"
    );
}

async fn run(ctx: Arc<Ctx>, first: Listening, mut last_revocation: i64, retries: copies::Retries) {
    let Store::Postgres(pg) = &*ctx.store else {
        return;
    };
    let mut listening = Some(first);
    let mut backoff = BACKOFF_MIN;
    loop {
        if let Some(mut l) = listening.take() {
            while let Some(payload) = l.rx.recv().await {
                match ClusterEvent::parse(&payload) {
                    Some(event) => {
                        count(&ctx.metrics, pg, &event);
                        handle(&ctx, pg, event, &mut last_revocation, &retries).await;
                    }
                    None => tracing::warn!("an unknown cluster notification was ignored"),
                }
            }
            tracing::warn!("the cluster notifications stopped; listening again");
        }
        tokio::time::sleep(backoff).await;
        match pg.listen().await {
            Ok(l) => {
                backoff = BACKOFF_MIN;
                listening = Some(l);
                catch_up(&ctx, pg, &mut last_revocation).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for the cluster's notifications");
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Every node hears its own notifications too, and only those of
/// committed transactions: so what it hears from itself is exactly what
/// it has sent.
fn count(metrics: &Metrics, pg: &PgStore, event: &ClusterEvent) {
    if event.node() == Some(pg.node_id()) {
        Metrics::inc(&metrics.cluster_notifications_sent);
    } else {
        Metrics::inc(&metrics.cluster_notifications_received);
    }
}

/// Time since `at` (another node's clock, in ms) for the lag histogram.
pub(super) fn since(ctx: &Ctx, at: i64) -> Duration {
    Duration::from_millis(u64::try_from(ctx.now_ms().saturating_sub(at)).unwrap_or(0))
}

async fn handle(
    ctx: &Arc<Ctx>,
    pg: &PgStore,
    event: ClusterEvent,
    last_revocation: &mut i64,
    retries: &copies::Retries,
) {
    let me = pg.node_id();
    match event {
        ClusterEvent::Messages { node, .. } if node == me => {}
        ClusterEvent::Messages { seqs, to, .. } => {
            copies::announced(ctx, pg, &seqs, &to, retries).await;
        }
        ClusterEvent::Receipt { node, .. } | ClusterEvent::Receipts { node, .. } if node == me => {}
        ClusterEvent::Receipt { receipt, .. } => relay(ctx, &receipt),
        ClusterEvent::Receipts { list, .. } => {
            for receipt in &list {
                relay(ctx, receipt);
            }
        }
        ClusterEvent::Presence { node, .. } if node == me => {}
        ClusterEvent::Presence {
            node,
            mesh,
            member,
            session,
            live,
            gone,
            peer,
        } => {
            let key = (member, session);
            presence::apply(ctx, pg, &node, &mesh, key, live, gone, peer.map(|p| *p)).await;
        }
        ClusterEvent::Revoked { seq, mesh, member } => {
            tracing::info!(mesh = %mesh, member = %member, "member revoked");
            ctx.hub.revoke_member(&mesh, &member);
            *last_revocation = (*last_revocation).max(seq);
        }
    }
}

/// Relays a receipt another node recorded to the sender's connections here.
fn relay(ctx: &Ctx, note: &ReceiptNote) {
    let Some(live) = ctx.hub.find(&note.mesh) else {
        return;
    };
    let receipt = Receipt {
        message_id: &note.message_id,
        member: &note.member,
        session_id: note.session.as_deref(),
        state: if note.seen {
            DeliveryState::Seen
        } else {
            DeliveryState::Delivered
        },
        at: note.at,
    };
    let route = ReceiptRoute {
        mesh_id: note.mesh.clone(),
        sender_member_id: note.sender.clone(),
        sessions: note.sessions.clone(),
    };
    delivery::relay_receipt_in(&live, &receipt, &route);
    // From the receipt's arrival on its node to its relay here.
    ctx.metrics.notify_lag(since(ctx, note.at));
}

/// After the `LISTEN` connection was lost: redeliver to every live
/// connection and apply the revocations logged meanwhile.
async fn catch_up(ctx: &Arc<Ctx>, pg: &PgStore, last_revocation: &mut i64) {
    if let Err(e) = presence::load(ctx, pg).await {
        tracing::warn!(error = %e, "reloading the cluster's presence failed");
    }
    match pg.revocations_since(*last_revocation).await {
        Ok(rows) => {
            for r in rows {
                ctx.hub.revoke_member(&r.mesh_id, &r.member_id);
                *last_revocation = r.seq;
            }
        }
        Err(e) => tracing::warn!(error = %e, "reading the revocation log failed"),
    }
    for mesh in ctx.hub.meshes() {
        let conns: Vec<_> = {
            let state = mesh.lock();
            state
                .conns()
                .map(|c| (c.handle.clone(), c.member_id.clone()))
                .collect()
        };
        for (handle, member_id) in conns {
            let to = Redelivery {
                handle,
                member_id,
                session: None,
                dispatched: i64::MAX,
            };
            tokio::spawn(delivery::redeliver(
                to,
                ctx.store.clone(),
                ctx.metrics.clone(),
                ctx.config.clock.clone(),
            ));
        }
    }
}
