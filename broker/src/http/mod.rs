//! The HTTP side of the broker's one port: `/ws`, enrollment, metrics and
//! health.

pub mod enroll;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use claudemesh_protocol::limits::MAX_HTTP_BODY_BYTES;

use crate::ctx::Ctx;
use crate::metrics::{DbOp, Gauges};

pub fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/ws", get(crate::ws::upgrade))
        .route("/v1/join", post(enroll::join))
        .route("/v1/leave", post(enroll::leave))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(MAX_HTTP_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            crate::net::forwarded::account_forwarded_client,
        ))
        .with_state(ctx)
}

async fn metrics(State(ctx): State<Arc<Ctx>>) -> Response {
    let depth = ctx.store.queue_depth().await.ok();
    let gauges = Gauges {
        connections_active: ctx.hub.connection_count(),
        sessions_listed: ctx.hub.session_count(),
        queue_depth: depth,
        unauthenticated: ctx.admission.unauthenticated(),
        unauthenticated_limit: ctx.admission.limits().max_unauthenticated,
    };
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        ctx.metrics.render(&gauges),
    )
        .into_response()
}

/// The response header naming the node that answered `/healthz` (behind a
/// load balancer, which node a request reached).
pub const NODE_HEADER: &str = "x-claudemesh-node";

/// 200 `ok` when the broker can serve: its database writer runs and the
/// database opens and reads afresh (the file, or a pooled connection to
/// PostgreSQL). Otherwise 503 with the reason, naming the database.
async fn healthz(State(ctx): State<Arc<Ctx>>) -> Response {
    let mut response = if !ctx.writer.is_alive() {
        unhealthy("the database writer has stopped".to_owned())
    } else {
        let started = std::time::Instant::now();
        match ctx.store.health().await {
            Ok(()) => {
                // Only answered checks: a refused connection's time says
                // nothing about the database.
                ctx.metrics.db_round_trip(DbOp::Health, started.elapsed());
                (StatusCode::OK, "ok\n").into_response()
            }
            Err(why) => unhealthy(why),
        }
    };
    // The id was checked at startup (printable ASCII); a value that is
    // still refused just leaves the header out.
    if let Ok(node) = HeaderValue::from_str(ctx.config.node()) {
        response.headers_mut().insert(NODE_HEADER, node);
    }
    response
}

fn unhealthy(why: String) -> Response {
    tracing::warn!(reason = %why, "health check failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("unhealthy: {why}\n"),
    )
        .into_response()
}
