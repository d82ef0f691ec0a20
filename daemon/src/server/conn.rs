//! One client connection: the peer check, the hello, then requests in,
//! answers and events out.
//!
//! Requests are handled in order, except `send`, whose wait for the
//! broker's ack runs beside the others (answers carry their request `id`).
//! Whatever a client writes — garbage, non-UTF-8, unknown ops, ops before
//! hello — gets an error frame and changes nothing; only an over-long line
//! closes the connection, because the stream cannot be resynchronised
//! inside it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use claudemesh_protocol::ipc::{
    DaemonFrame, IPC_VERSION, IpcError, IpcErrorCode, MAX_IPC_LINE_BYTES, Request, RequestFrame,
    Response,
};
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::traits::StreamCommon;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::framing::{Line, read_line};
use crate::core::{Core, SessionChange};

/// Frames (answers and events) waiting to be written to one client. Kept
/// small: a thousand sessions each have one, and a client that does not
/// read loses events (never answers) rather than growing the daemon.
const OUTGOING: usize = 64;

struct ConnState {
    id: u64,
    peer_pid: Option<u32>,
    hello: bool,
    session: Option<String>,
}

pub async fn handle(core: Arc<Core>, stream: Stream, socket: Arc<PathBuf>, have_slot: bool) {
    let creds = stream.peer_creds().ok();
    let peer_uid = creds.as_ref().and_then(|c| c.euid());
    let peer_pid = creds
        .as_ref()
        .and_then(|c| c.pid())
        .and_then(|p| u32::try_from(p).ok());
    let (read, mut write) = tokio::io::split(stream);
    let own_uid = crate::paths::current_uid();
    if peer_uid != Some(own_uid) {
        tracing::warn!(peer_uid = ?peer_uid, peer_pid = ?peer_pid, "refused a connection from another user");
        let refusal = DaemonFrame::Err {
            id: None,
            error: IpcError::new(
                IpcErrorCode::Forbidden,
                "this daemon serves only the user that runs it; run the command as that user, \
                 or start your own daemon with `claudemeshd run` (each user has their own)",
            ),
        };
        let _ = write.write_all(refusal.to_line().as_bytes()).await;
        let _ = write.shutdown().await;
        return;
    }
    if !have_slot {
        let busy = DaemonFrame::Err {
            id: None,
            error: IpcError::new(
                IpcErrorCode::Busy,
                "the daemon has too many connections; try again shortly",
            ),
        };
        let _ = write.write_all(busy.to_line().as_bytes()).await;
        return;
    }

    let (frames, mut outgoing) = mpsc::channel::<DaemonFrame>(OUTGOING);
    let writer = tokio::spawn(async move {
        while let Some(frame) = outgoing.recv().await {
            if write.write_all(frame.to_line().as_bytes()).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    });

    let mut state = ConnState {
        id: core.next_id(),
        peer_pid,
        hello: false,
        session: None,
    };
    // Small: a thousand idle sessions each hold one.
    let mut reader = BufReader::with_capacity(2048, read);
    loop {
        match read_line(&mut reader, MAX_IPC_LINE_BYTES).await {
            Ok(Line::Complete(bytes)) => {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let Ok(text) = std::str::from_utf8(&bytes) else {
                    let _ = frames
                        .send(error(
                            None,
                            IpcErrorCode::Malformed,
                            "a request must be UTF-8 JSON",
                        ))
                        .await;
                    continue;
                };
                match RequestFrame::parse(text) {
                    Ok(frame) => dispatch(&core, &mut state, frame, &frames, &socket).await,
                    Err(failure) => {
                        let _ = frames
                            .send(DaemonFrame::Err {
                                id: failure.id,
                                error: failure.error,
                            })
                            .await;
                    }
                }
            }
            Ok(Line::TooLong) => {
                let _ = frames
                    .send(error(
                        None,
                        IpcErrorCode::TooLarge,
                        format!("a request line is at most {MAX_IPC_LINE_BYTES} bytes; closing"),
                    ))
                    .await;
                break;
            }
            Ok(Line::Eof) | Err(_) => break,
        }
    }
    core.connection_closed(state.id, state.session.as_deref());
    drop(frames);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}

fn error(id: Option<u64>, code: IpcErrorCode, message: impl Into<String>) -> DaemonFrame {
    DaemonFrame::Err {
        id,
        error: IpcError::new(code, message),
    }
}

async fn dispatch(
    core: &Arc<Core>,
    state: &mut ConnState,
    frame: RequestFrame,
    frames: &mpsc::Sender<DaemonFrame>,
    socket: &Arc<PathBuf>,
) {
    let id = frame.id;
    let reply = move |result: Result<Response, IpcError>| match result {
        Ok(result) => DaemonFrame::Ok { id, result },
        Err(error) => DaemonFrame::Err {
            id: Some(id),
            error,
        },
    };
    if let Request::Hello { protocol, client } = &frame.request {
        let result = if *protocol == IPC_VERSION {
            state.hello = true;
            Ok(Response::Welcome {
                protocol: IPC_VERSION,
                daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
                pid: std::process::id(),
            })
        } else {
            Err(IpcError::new(
                IpcErrorCode::VersionMismatch,
                format!(
                    "this daemon (claudemeshd {}) speaks IPC version {IPC_VERSION}, but {} speaks version {protocol}; install matching versions and restart the daemon",
                    env!("CARGO_PKG_VERSION"),
                    printable(client)
                ),
            ))
        };
        let _ = frames.send(reply(result)).await;
        return;
    }
    if !state.hello {
        let _ = frames
            .send(reply(Err(IpcError::new(
                IpcErrorCode::NoHello,
                "send `hello` with the IPC protocol version first",
            ))))
            .await;
        return;
    }
    let conn = state.id;
    let sid = state.session.clone();
    let result = match frame.request {
        Request::Hello { .. } => return,
        Request::Send(args) => {
            // The wait for the broker's ack must not hold up other requests.
            let (core, frames) = (core.clone(), frames.clone());
            tokio::spawn(async move {
                let result = core
                    .send(conn, sid.as_deref(), args)
                    .await
                    .map(Response::Sent);
                let _ = frames.send(reply(result)).await;
            });
            return;
        }
        Request::Attach(args) => {
            if core.check_attached(conn, sid.as_deref()).is_ok() {
                Err(IpcError::new(
                    IpcErrorCode::AlreadyAttached,
                    "this connection already carries a session; open another connection for another session",
                ))
            } else {
                match core
                    .attach(conn, state.peer_pid, args, frames.clone())
                    .await
                {
                    Ok(info) => {
                        state.session = Some(info.session_id.clone());
                        Ok(Response::Attached(info))
                    }
                    Err(e) => Err(e),
                }
            }
        }
        Request::Detach => core.detach(conn, sid.as_deref()).await.map(|()| {
            state.session = None;
            Response::Done
        }),
        Request::ListPeers => core
            .list_peers(conn, sid.as_deref())
            .await
            .map(|peers| Response::Peers { peers }),
        Request::ListMembers => core
            .list_members(conn, sid.as_deref())
            .await
            .map(|members| Response::Members { members }),
        Request::FetchInbox { mark_seen } => core
            .fetch_inbox(conn, sid.as_deref(), mark_seen)
            .await
            .map(|messages| Response::Inbox { messages }),
        Request::Pending => core
            .pending(conn, sid.as_deref())
            .await
            .map(|count| Response::Pending { count }),
        Request::MarkSeen { message_ids } => core
            .mark_seen(conn, sid.as_deref(), message_ids)
            .await
            .map(|()| Response::Done),
        Request::MarkPushed { message_ids } => core
            .mark_pushed(conn, sid.as_deref(), message_ids)
            .await
            .map(|message_ids| Response::MarkedPushed { message_ids }),
        Request::HookConfirm { message_ids } => core
            .hook_confirm(state.peer_pid, message_ids)
            .await
            .map(|()| Response::Done),
        Request::SetSummary { summary } => {
            change(core, conn, sid, SessionChange::Summary(summary)).await
        }
        Request::SetStatus { status } => {
            change(core, conn, sid, SessionChange::Status(status)).await
        }
        Request::JoinGroup { group } => {
            change(core, conn, sid, SessionChange::JoinGroup(group)).await
        }
        Request::LeaveGroup { group } => {
            change(core, conn, sid, SessionChange::LeaveGroup(group)).await
        }
        Request::MessageStatus { message_id } => {
            core.message_status(message_id)
                .await
                .map(|(message_id, recipients)| Response::MessageStatus {
                    message_id,
                    recipients,
                })
        }
        Request::DaemonStatus => core.daemon_status(socket).await.map(Response::DaemonStatus),
        Request::ReloadConfig => core
            .reload_config()
            .await
            .map(|_| Response::Done)
            .map_err(|e| IpcError::new(IpcErrorCode::ConfigError, e)),
        Request::ListOutbox => core
            .list_outbox()
            .await
            .map(|messages| Response::Outbox { messages }),
        Request::HookContext => core
            .hook_context(state.peer_pid)
            .await
            .map(|(session, messages)| Response::HookContext { session, messages }),
    };
    let _ = frames.send(reply(result)).await;
}

async fn change(
    core: &Arc<Core>,
    conn: u64,
    sid: Option<String>,
    change: SessionChange,
) -> Result<Response, IpcError> {
    core.change_session(conn, sid.as_deref(), change)
        .await
        .map(|()| Response::Done)
}

/// A client-supplied name, made safe to echo in a message.
fn printable(s: &str) -> String {
    let cleaned: String = s.chars().filter(|c| !c.is_control()).take(64).collect();
    if cleaned.is_empty() {
        "the client".into()
    } else {
        format!("the client ({cleaned})")
    }
}
