//! `POST /v1/join` and `POST /v1/leave`.
//!
//! Errors are `4xx {"error":"<code>","message":"<sentence>"}`. Join
//! checks, in order: the link decodes (`bad_invite`), its signature
//! verifies (`bad_signature`), its mesh exists (`unknown_mesh`) and was
//! signed by that mesh's owner key (`bad_signature`); then, in one
//! exclusive transaction, a key that is already a member gets its member
//! back (a revoked one: `revoked`), the invite must be on file and not
//! revoked (`bad_invite`, `revoked`), unexpired (`expired`) and have a use
//! left (`exhausted`), which is consumed.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use claudemesh_protocol::MemberPublicKey;
use claudemesh_protocol::hello::HelloRejection;
use claudemesh_protocol::invite::{self, InviteError};
use claudemesh_protocol::leave::LeaveRequest;
use claudemesh_protocol::limits::{self, MAX_DISPLAY_NAME_CHARS};
use claudemesh_protocol::wire::ErrorCode;

use crate::ctx::Ctx;
use crate::store::{JoinRefusal, JoinRequest, StoreError};

fn error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": code, "message": message.into()})),
    )
        .into_response()
}

fn internal(e: &StoreError) -> Response {
    tracing::error!(error = %e, "enrollment database error");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::InternalError,
        "the broker could not complete this request; try again",
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinBody {
    invite: String,
    pubkey: String,
    #[serde(default)]
    display_name: Option<String>,
}

pub async fn join(State(ctx): State<Arc<Ctx>>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<JoinBody>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            ErrorCode::Malformed,
            "the body must be JSON {\"invite\",\"pubkey\",\"displayName\"}",
        );
    };
    if MemberPublicKey::from_hex(&req.pubkey).is_err() {
        return error(
            StatusCode::BAD_REQUEST,
            ErrorCode::Malformed,
            "pubkey must be a 64-character lowercase hex ed25519 public key",
        );
    }
    let invite = match invite::decode(&req.invite) {
        Ok(i) => i,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.code(), e.to_string()),
    };
    match invite.verify(ctx.config.clock.now_secs()) {
        // Expiry is judged inside the transaction, after the re-join check:
        // a member retrying its join with an old link gets its member back.
        Ok(_) | Err(InviteError::Expired { .. }) => {}
        Err(e) => return error(StatusCode::FORBIDDEN, e.code(), e.to_string()),
    }
    if let Some(name) = &req.display_name
        && let Err(e) = limits::check_name("displayName", name, MAX_DISPLAY_NAME_CHARS)
    {
        return error(StatusCode::BAD_REQUEST, ErrorCode::Malformed, e.to_string());
    }
    let display_name: String = req
        .display_name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or("member")
        .to_owned();
    let new_id = match crate::ids::random_id("mem_") {
        Ok(id) => id,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::InternalError,
                e.to_string(),
            );
        }
    };
    let now_ms = ctx.now_ms();
    let outcome = ctx
        .store
        .join(JoinRequest {
            invite: invite.clone(),
            pubkey: req.pubkey.clone(),
            display_name,
            new_member_id: new_id,
            now_ms,
        })
        .await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return internal(&e),
    };
    match outcome {
        Ok(member) => {
            tracing::info!(mesh = %member.mesh_id, member = %member.id, "member joined");
            Json(json!({
                "meshId": member.mesh_id,
                "memberId": member.id,
                "meshSlug": invite.mesh_slug,
                "broker": invite.broker,
            }))
            .into_response()
        }
        Err(r) => {
            let (status, code, message) = match r {
                JoinRefusal::UnknownMesh => (
                    StatusCode::NOT_FOUND,
                    ErrorCode::UnknownMesh,
                    "this broker has no such mesh",
                ),
                JoinRefusal::BadSignature => (
                    StatusCode::FORBIDDEN,
                    ErrorCode::BadSignature,
                    "the invite was not signed by this mesh's owner key",
                ),
                JoinRefusal::BadInvite => (
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadInvite,
                    "this broker issued no such invite for this mesh",
                ),
                JoinRefusal::Revoked => (
                    StatusCode::FORBIDDEN,
                    ErrorCode::Revoked,
                    "the invite (or this key's membership) has been revoked",
                ),
                JoinRefusal::Expired => (
                    StatusCode::GONE,
                    ErrorCode::Expired,
                    "the invite has expired; ask for a new one",
                ),
                JoinRefusal::Exhausted => (
                    StatusCode::GONE,
                    ErrorCode::Exhausted,
                    "the invite has no uses left; ask for a new one",
                ),
            };
            error(status, code, message)
        }
    }
}

pub async fn leave(State(ctx): State<Arc<Ctx>>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<LeaveRequest>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            ErrorCode::Malformed,
            "the body must be JSON {\"meshId\",\"memberId\",\"pubkey\",\"timestamp\",\"signature\"}",
        );
    };
    if let Err(r) = req.verify(ctx.now_ms()) {
        let status = match r {
            HelloRejection::BadSignature => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        };
        return error(status, r.error_code(), r.to_string());
    }
    let now_ms = ctx.now_ms();
    let outcome = ctx
        .store
        .leave(&req.mesh_id, &req.member_id, &req.pubkey, now_ms)
        .await;
    match outcome {
        Ok(true) => {
            ctx.hub.revoke_member(&req.mesh_id, &req.member_id);
            tracing::info!(mesh = %req.mesh_id, member = %req.member_id, "member left");
            Json(json!({"meshId": req.mesh_id, "memberId": req.member_id, "revoked": true}))
                .into_response()
        }
        Ok(false) => error(
            StatusCode::FORBIDDEN,
            HelloRejection::Unauthorized.error_code(),
            "no member of this mesh has this public key and member id",
        ),
        Err(e) => internal(&e),
    }
}
