//! `X-Forwarded-For` from a trusted proxy: each HTTP request on a
//! connection from a `--trusted-proxy` address that sent no PROXY header
//! re-counts the (unauthenticated) connection under the client address the
//! proxy added, so that the per-address cap holds behind Caddy or nginx.
//! Over the cap the request is answered 429 and the connection closed.
//! From any other peer the header is ignored.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use super::listener::ConnSlot;
use super::proxy::forwarded_client;
use crate::ctx::Ctx;

/// The header's name.
pub const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn account_forwarded_client(
    State(ctx): State<Arc<Ctx>>,
    ConnectInfo(slot): ConnectInfo<ConnSlot>,
    request: Request,
    next: Next,
) -> Response {
    let client = slot
        .0
        .trusts_forwarded_for()
        .then(|| {
            let values = request.headers().get_all(X_FORWARDED_FOR);
            forwarded_client(values.iter().map(HeaderValue::as_bytes))
        })
        .flatten();
    if let Some(Err(refused)) = client.map(|ip| slot.0.rekey(ip.to_canonical(), true)) {
        ctx.metrics.connection_rejected(refused.reason());
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::CONNECTION, "close")],
            "too many unauthenticated connections from your address\n",
        )
            .into_response();
    }
    next.run(request).await
}
