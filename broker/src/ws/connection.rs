//! The life of one WebSocket connection.
//!
//! 1. **Hello.** The first frame must arrive within the hello timeout
//!    (else close 1008 `hello_timeout`) and be a `hello` (else `error`
//!    `no_hello`, close 1008). It is verified ([`crate::hello`]); a
//!    rejection sends the `error`, closes 1008 with the reason, and counts
//!    it in `connections_rejected_total{reason}`.
//! 2. **Attach.** Under the mesh lock: the per-member connection limit, the
//!    connection's registration, its session (for `role:"session"`), and
//!    the `hello_ack` queued as the connection's very first frame, so no
//!    presence event can overtake it.
//! 3. **Redelivery** of the member's stored, unacknowledged messages.
//! 4. **Read loop** until the client closes, the connection goes silent,
//!    or the broker asks it to close (revocation, takeover, shutdown).
//! 5. **Departure:** sessions enter their grace period (or go at once on
//!    shutdown).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::time::MissedTickBehavior;

use claudemesh_protocol::limits::MAX_FRAME_BYTES;
use claudemesh_protocol::wire::{ConnectionRole, ErrorCode, HelloAck, ServerFrame};

use crate::ctx::Ctx;
use crate::delivery::{self, Redelivery};
use crate::hello::{self, HelloFailure};
use crate::hub::presence::sanitize_name;
use crate::hub::{ConnEntry, ConnHandle, ConnId, Departure, Mesh, SessionSpec, close_frame};
use crate::net::admission::Slot;
use crate::store::MemberInfo;
use crate::ws::outbound;

/// An authenticated connection, from its accepted hello to its
/// departure. What each frame does is in the `handlers` module, as more
/// methods of this type: this module calls them, that one imports the
/// type, and neither imports the other.
pub struct Connection {
    pub ctx: Arc<Ctx>,
    pub mesh: Arc<Mesh>,
    pub handle: ConnHandle,
    pub id: ConnId,
    pub member: MemberInfo,
    pub role: ConnectionRole,
    /// The hello's `sessionId`: the session itself on a `role:"session"`
    /// connection.
    pub hello_session: String,
}

/// How long the broker waits for the peer's half of a close handshake.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What came off the socket, sorted.
enum Incoming {
    Text(Utf8Bytes),
    Binary,
    Control,
    TooLarge,
    Closed,
}

fn is_capacity_error(e: &axum::Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<tokio_tungstenite::tungstenite::Error>())
        .is_some_and(|e| matches!(e, tokio_tungstenite::tungstenite::Error::Capacity(_)))
}

fn classify(item: Option<Result<Message, axum::Error>>) -> Incoming {
    match item {
        Some(Ok(Message::Text(t))) if t.len() > MAX_FRAME_BYTES => Incoming::TooLarge,
        Some(Ok(Message::Text(t))) => Incoming::Text(t),
        Some(Ok(Message::Binary(b))) if b.len() > MAX_FRAME_BYTES => Incoming::TooLarge,
        Some(Ok(Message::Binary(_))) => Incoming::Binary,
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Incoming::Control,
        Some(Ok(Message::Close(_))) | None => Incoming::Closed,
        Some(Err(e)) if is_capacity_error(&e) => Incoming::TooLarge,
        Some(Err(_)) => Incoming::Closed,
    }
}

/// The first data frame, skipping pings.
async fn first_frame(stream: &mut SplitStream<WebSocket>) -> Incoming {
    loop {
        match classify(stream.next().await) {
            Incoming::Control => continue,
            other => return other,
        }
    }
}

/// Sends `frames` then a close, and waits (briefly) for the peer's close.
/// Used before the connection has its outbound task.
async fn close_direct(
    mut sink: SplitSink<WebSocket, Message>,
    mut stream: SplitStream<WebSocket>,
    frames: Vec<Message>,
    code: u16,
    reason: &str,
) {
    let send = async {
        for f in frames {
            sink.feed(f).await?;
        }
        sink.feed(close_frame(code, reason)).await?;
        sink.flush().await
    };
    if send.await.is_ok() {
        drain_until_closed(&mut stream).await;
    }
}

async fn drain_until_closed(stream: &mut SplitStream<WebSocket>) {
    let drain = async {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, drain).await;
}

fn error_text(code: ErrorCode, message: impl Into<String>) -> Message {
    Message::Text(Utf8Bytes::from(
        ServerFrame::error(code, message, None).to_json(),
    ))
}

/// Refuses a connection that was never admitted: an `error` frame, then a
/// close whose reason is the same code.
async fn refuse(
    sink: SplitSink<WebSocket, Message>,
    stream: SplitStream<WebSocket>,
    close: u16,
    code: ErrorCode,
    message: impl Into<String>,
) {
    let reason = code.as_str().to_owned();
    let err = error_text(code, message);
    close_direct(sink, stream, vec![err], close, &reason).await;
}

/// The refusal of a member already at its connection limit.
fn too_many_connections(limit: usize) -> String {
    format!("this member already has {limit} connections open; close one and retry")
}

/// A hello refused because the broker cannot store anything now (1013:
/// try again later).
const DB_UNREACHABLE: &str =
    "the broker cannot reach its database and cannot accept connections now; try again later";

/// Runs one connection to its end.
pub async fn run(socket: WebSocket, ctx: Arc<Ctx>, slot: Arc<Slot>) {
    let _task = ctx.tasks.enter();
    let (sink, mut stream) = socket.split();

    let first = tokio::time::timeout(ctx.config.hello_timeout, first_frame(&mut stream)).await;
    let text = match first {
        Err(_) => {
            ctx.metrics.connection_rejected("hello_timeout");
            tracing::info!(reason = "hello_timeout", "connection rejected");
            return close_direct(sink, stream, Vec::new(), 1008, "hello_timeout").await;
        }
        Ok(Incoming::Text(t)) => t,
        Ok(Incoming::TooLarge) => {
            let message = format!("frames are limited to {MAX_FRAME_BYTES} bytes");
            return refuse(sink, stream, 1009, ErrorCode::TooLarge, message).await;
        }
        Ok(Incoming::Closed) => return,
        Ok(Incoming::Binary | Incoming::Control) => {
            return reject_no_hello(&ctx, sink, stream).await;
        }
    };
    let value = serde_json::from_str::<Value>(&text)
        .ok()
        .filter(|v| v.get("type").and_then(Value::as_str) == Some("hello"));
    let Some(value) = value else {
        return reject_no_hello(&ctx, sink, stream).await;
    };

    let started = Instant::now();
    let verdict = hello::verify(&ctx, &value).await;
    ctx.metrics.hello_verified(started.elapsed());
    let (hello, member) = match verdict {
        Ok(ok) => ok,
        Err(HelloFailure::Rejected(r)) => {
            ctx.metrics.connection_rejected(r.code());
            tracing::info!(reason = r.code(), "hello rejected");
            return refuse(sink, stream, 1008, r.error_code(), r.to_string()).await;
        }
        Err(HelloFailure::Internal(e)) if e.is_disk_full() => {
            tracing::error!(error = %e, "the disk is full: a hello was refused");
            let message =
                "the broker's disk is full and it cannot accept connections now; try again later";
            // 1013: try again later.
            return refuse(sink, stream, 1013, ErrorCode::Unavailable, message).await;
        }
        Err(HelloFailure::Unavailable(e)) => {
            tracing::error!(error = %e, "the database is unreachable: a hello was refused");
            return refuse(sink, stream, 1013, ErrorCode::Unavailable, DB_UNREACHABLE).await;
        }
        Err(HelloFailure::Internal(e)) => {
            tracing::error!(error = %e, "hello could not be verified");
            let message = "the broker could not verify the hello; try again";
            return refuse(sink, stream, 1011, ErrorCode::InternalError, message).await;
        }
    };

    let conn_id = ctx.hub.next_conn_id();
    let (handle, rx) = ConnHandle::new(conn_id, ctx.config.outbound_queue);
    let mesh = ctx.hub.mesh(&hello.mesh_id);
    let now = ctx.now_ms();
    // In a cluster the per-member limit is counted over every node.
    match crate::cluster::admit_connection(&ctx, conn_id, &hello.mesh_id, &member.id).await {
        Ok(true) => {}
        Ok(false) => {
            let code = ErrorCode::TooManyConnections;
            ctx.metrics.connection_rejected(code.as_str());
            let message = too_many_connections(ctx.config.max_connections_per_member);
            return refuse(sink, stream, 1008, code, message).await;
        }
        Err(e) => {
            tracing::error!(error = %e, "counting the member's connections failed");
            return refuse(sink, stream, 1013, ErrorCode::Unavailable, DB_UNREACHABLE).await;
        }
    }
    let attached: Result<i64, (ErrorCode, String)> = {
        let mut state = mesh.lock();
        if state.member_conns(&member.id).len() >= ctx.config.max_connections_per_member {
            Err((
                ErrorCode::TooManyConnections,
                too_many_connections(ctx.config.max_connections_per_member),
            ))
        } else {
            state.add_conn(ConnEntry {
                handle: handle.clone(),
                member_id: member.id.clone(),
                pubkey: member.pubkey.clone(),
                role: hello.role,
                sessions: Vec::new(),
            });
            let named = match hello.role {
                ConnectionRole::Session => {
                    let spec = SessionSpec {
                        session_id: hello.session_id.clone(),
                        display_name: hello.display_name.clone(),
                        cwd: hello.cwd.clone(),
                        ..SessionSpec::default()
                    };
                    state
                        .open_session(conn_id, spec, now)
                        .map(|name| (name, Some((member.id.clone(), hello.session_id.clone()))))
                        .map_err(|e| e.code_and_message(&hello.session_id))
                }
                ConnectionRole::Daemon => Ok((
                    sanitize_name(hello.display_name.as_deref(), &hello.session_id),
                    None,
                )),
            };
            match named {
                Ok((display_name, exclude)) => {
                    let list = state.peers(exclude.as_ref());
                    let ack = ServerFrame::HelloAck(HelloAck {
                        mesh_id: hello.mesh_id.clone(),
                        member_id: member.id.clone(),
                        session_id: hello.session_id.clone(),
                        display_name,
                        server_time: now,
                        peers: list.peers,
                        truncated: list.truncated,
                    });
                    // In a cluster a session's ack waits for its presence
                    // row: once acknowledged, it is a target on every node.
                    let gate = match hello.role {
                        ConnectionRole::Session => ctx.hub.presence_committed(),
                        ConnectionRole::Daemon => None,
                    };
                    handle.send_text_after(gate, ack.to_json());
                    // Read under the lock that made this connection visible to
                    // pushes: see `delivery::redeliver`.
                    Ok(ctx.writer.dispatched())
                }
                Err(refusal) => {
                    state.remove_conn(conn_id, Departure::Dropped);
                    Err(refusal)
                }
            }
        }
    };
    let dispatched = match attached {
        Ok(d) => d,
        Err((code, message)) => {
            crate::cluster::release_connection(&ctx, conn_id);
            ctx.metrics.connection_rejected(code.as_str());
            return refuse(sink, stream, 1008, code, message).await;
        }
    };
    slot.authenticated();
    crate::metrics::Metrics::inc(&ctx.metrics.connections_accepted);
    tracing::info!(
        mesh = %hello.mesh_id,
        member = %member.id,
        session = %hello.session_id,
        role = ?hello.role,
        client = hello.client.as_deref().unwrap_or(""),
        "connection accepted"
    );
    let mut writer = tokio::spawn(outbound::run(sink, rx, handle.clone()));
    let to = Redelivery {
        handle: handle.clone(),
        member_id: member.id.clone(),
        session: None,
        dispatched,
    };
    tokio::spawn(delivery::redeliver(
        to,
        ctx.store.clone(),
        ctx.metrics.clone(),
        ctx.config.clock.clone(),
    ));

    let conn = Connection {
        ctx: ctx.clone(),
        mesh: mesh.clone(),
        handle: handle.clone(),
        id: conn_id,
        member,
        role: hello.role,
        hello_session: hello.session_id.clone(),
    };
    let departure = read_loop(&conn, &mut stream).await;
    depart(&ctx, &mesh, &conn, departure);
    crate::cluster::release_connection(&ctx, conn_id);
    drop(conn);
    // The writer ends once the close frame is out (or the queue is gone).
    handle.send(close_frame(1000, "bye"));
    drop(handle);
    // A peer that does not read keeps the writer stuck in a write: it
    // goes with the connection rather than holding the socket open.
    if tokio::time::timeout(CLOSE_WAIT, &mut writer).await.is_err() {
        writer.abort();
    }
}

async fn reject_no_hello(
    ctx: &Ctx,
    sink: SplitSink<WebSocket, Message>,
    stream: SplitStream<WebSocket>,
) {
    let reason = ErrorCode::NoHello.as_str();
    ctx.metrics.connection_rejected(reason);
    tracing::info!(reason, "connection rejected");
    let message = "the first frame on a connection must be a hello";
    refuse(sink, stream, 1008, ErrorCode::NoHello, message).await;
}

/// Reads frames until the connection ends; says how it ended.
async fn read_loop(conn: &Connection, stream: &mut SplitStream<WebSocket>) -> Departure {
    let ctx = &conn.ctx;
    let mut ticker = tokio::time::interval(ctx.config.ping_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            biased;
            (code, reason) = conn.handle.closing() => {
                // Revocation, takeover, shutdown or a full queue.
                conn.handle.send_wait_timeout(close_frame(code, &reason), CLOSE_WAIT).await;
                drain_until_closed(stream).await;
                return if ctx.hub.is_shutting_down() { Departure::Shutdown } else { Departure::Dropped };
            }
            item = stream.next() => {
                last_heard = Instant::now();
                match classify(item) {
                    Incoming::Text(t) => conn.on_text(&t).await,
                    Incoming::Binary => conn.error(ErrorCode::Malformed, "frames must be JSON text frames", None),
                    Incoming::Control => {}
                    Incoming::TooLarge => conn.handle.close(1009, ErrorCode::TooLarge.as_str()),
                    Incoming::Closed => return Departure::Dropped,
                }
            }
            _ = ticker.tick() => {
                if last_heard.elapsed() >= ctx.config.idle_timeout {
                    conn.handle.close(1000, "idle_timeout");
                } else {
                    conn.handle.send(Message::Ping(Default::default()));
                }
            }
        }
    }
}

/// Removes the connection from its mesh and starts the grace timers of
/// the sessions it carried.
fn depart(ctx: &Arc<Ctx>, mesh: &Arc<Mesh>, conn: &Connection, departure: Departure) {
    let departure = if ctx.hub.is_shutting_down() {
        Departure::Shutdown
    } else {
        departure
    };
    let timers = mesh.lock().remove_conn(conn.id, departure);
    tracing::info!(mesh = %mesh.id, member = %conn.member.id, "connection closed");
    if timers.is_empty() {
        return;
    }
    let grace = ctx.config.presence_grace;
    let mesh = mesh.clone();
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        let mut state = mesh.lock();
        for (key, epoch) in timers {
            state.expire(&key, epoch);
        }
    });
}
