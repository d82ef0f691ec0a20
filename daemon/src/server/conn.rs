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
    AttachArgs, DaemonFrame, IPC_VERSION, IpcError, IpcErrorCode, MAX_IPC_LINE_BYTES, Request,
    RequestFrame, Response,
};
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::traits::StreamCommon;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::framing::{Line, read_line};
use crate::core::attach::not_attached;
use crate::core::{Core, SessionChange, SessionHandle};

/// Frames (answers and events) waiting to be written to one client. Kept
/// small: a thousand sessions each have one, and a client that does not
/// read loses events (never answers) rather than growing the daemon.
const OUTGOING: usize = 64;

struct ConnState {
    id: u64,
    peer_pid: Option<u32>,
    hello: bool,
    /// Dropped when the connection closes: the session then waits for a
    /// new shim or for its Claude Code to exit.
    session: Option<SessionHandle>,
    /// The `wait_wake` requests in progress: aborted (and so disarmed)
    /// when the connection closes.
    waits: Vec<tokio::task::AbortHandle>,
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
        waits: Vec::new(),
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
    for wait in state.waits.drain(..) {
        wait.abort();
    }
    drop(state.session.take());
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
    // `None`: answered later, by a task of its own.
    let answer = async {
        let response = match frame.request {
            Request::Hello { protocol, client } => hello(state, protocol, &client)?,
            _ if !state.hello => {
                return Err(IpcError::new(
                    IpcErrorCode::NoHello,
                    "send `hello` with the IPC protocol version first",
                ));
            }
            Request::Send(args) => {
                let sent = attached(state)?.send(args);
                // The wait for the broker's ack must not hold up other
                // requests.
                let frames = frames.clone();
                tokio::spawn(async move {
                    let result = sent.await.map(Response::Sent);
                    let _ = frames.send(reply(result)).await;
                });
                return Ok(None);
            }
            Request::Attach(args) => attach(core, state, args, frames).await?,
            Request::Detach => {
                let session = state.session.take().ok_or_else(not_attached)?;
                session.detach().await?;
                Response::Done
            }
            Request::ListPeers => Response::Peers {
                peers: attached(state)?.list_peers().await?,
            },
            Request::ListMembers => Response::Members {
                members: attached(state)?.list_members().await?,
            },
            Request::FetchInbox { mark_seen } => Response::Inbox {
                messages: attached(state)?.fetch_inbox(mark_seen).await?,
            },
            Request::Pending => Response::Pending {
                count: attached(state)?.pending().await?,
            },
            Request::MarkSeen { message_ids } => {
                attached(state)?.mark_seen(message_ids).await?;
                Response::Done
            }
            Request::MarkPushed { message_ids } => Response::MarkedPushed {
                message_ids: attached(state)?.mark_pushed(message_ids).await?,
            },
            Request::SetSummary { summary } => {
                change(state, SessionChange::Summary(summary)).await?
            }
            Request::SetStatus { status } => change(state, SessionChange::Status(status)).await?,
            Request::JoinGroup { group } => change(state, SessionChange::JoinGroup(group)).await?,
            Request::LeaveGroup { group } => {
                change(state, SessionChange::LeaveGroup(group)).await?
            }
            // Requests of the connection, not of a session: ctl and hooks.
            Request::HookConfirm { message_ids } => {
                core.hook_confirm(state.peer_pid, message_ids).await?;
                Response::Done
            }
            Request::WaitWake(args) => {
                // Long-lived: answered by a task of its own, so that the
                // connection's other requests go on.
                let (core, frames, pid) = (core.clone(), frames.clone(), state.peer_pid);
                let task = tokio::spawn(async move {
                    let result = core.wait_wake(pid, args).await.map(|w| Response::Woken {
                        session: w.session,
                        outcome: w.outcome,
                        messages: w.messages,
                    });
                    let _ = frames.send(reply(result)).await;
                });
                state.waits.retain(|w| !w.is_finished());
                state.waits.push(task.abort_handle());
                return Ok(None);
            }
            Request::HookSession => Response::HookSession {
                session: core.hook_session(state.peer_pid).await?,
            },
            Request::HookContext(args) => {
                let (session, messages) = core
                    .hook_context(state.peer_pid, args.transcript_path.as_deref())
                    .await?;
                Response::HookContext { session, messages }
            }
            Request::MessageStatus { message_id } => {
                let (message_id, recipients) = core.message_status(message_id).await?;
                Response::MessageStatus {
                    message_id,
                    recipients,
                }
            }
            Request::DaemonStatus => Response::DaemonStatus(core.daemon_status(socket).await?),
            Request::ReloadConfig => {
                core.reload_config()
                    .await
                    .map_err(|e| IpcError::new(IpcErrorCode::ConfigError, e))?;
                Response::Done
            }
            Request::ListOutbox => Response::Outbox {
                messages: core.list_outbox().await?,
            },
        };
        Ok(Some(response))
    };
    let result = match answer.await {
        Ok(None) => return,
        Ok(Some(response)) => Ok(response),
        Err(error) => Err(error),
    };
    let _ = frames.send(reply(result)).await;
}

/// The connection's session, for a request only a session can make.
fn attached(state: &ConnState) -> Result<&SessionHandle, IpcError> {
    state.session.as_ref().ok_or_else(not_attached)
}

fn hello(state: &mut ConnState, protocol: u32, client: &str) -> Result<Response, IpcError> {
    if protocol != IPC_VERSION {
        return Err(IpcError::new(
            IpcErrorCode::VersionMismatch,
            format!(
                "this daemon (claudemeshd {}) speaks IPC version {IPC_VERSION}, but {} speaks version {protocol}; install matching versions and restart the daemon",
                env!("CARGO_PKG_VERSION"),
                printable(client)
            ),
        ));
    }
    state.hello = true;
    Ok(Response::Welcome {
        protocol: IPC_VERSION,
        daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
    })
}

async fn attach(
    core: &Arc<Core>,
    state: &mut ConnState,
    args: AttachArgs,
    frames: &mpsc::Sender<DaemonFrame>,
) -> Result<Response, IpcError> {
    if state
        .session
        .as_ref()
        .is_some_and(SessionHandle::is_attached)
    {
        return Err(IpcError::new(
            IpcErrorCode::AlreadyAttached,
            "this connection already carries a session; open another connection for another session",
        ));
    }
    // A session taken over by a newer connection is let go first: its
    // handle, dropped after this attach, must not detach the session this
    // connection attaches again.
    state.session = None;
    let (session, info) = core
        .attach(state.id, state.peer_pid, args, frames.clone())
        .await?;
    state.session = Some(session);
    Ok(Response::Attached(info))
}

async fn change(state: &ConnState, change: SessionChange) -> Result<Response, IpcError> {
    attached(state)?.change(change).await?;
    Ok(Response::Done)
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
