//! One connection to the daemon: hello, concurrent requests, pushed events.
//!
//! Two tasks own the socket. The writer takes whole lines from a channel,
//! so a request whose caller gives up (a timeout, a dropped future) never
//! leaves half a line on the wire. The reader matches each answer to its
//! request by `id` and forwards events; when the socket closes it fails every
//! request still waiting and closes the event channel, which is how an
//! attached session learns that the daemon went away.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use claudemesh_protocol::ipc::{
    DaemonFrame, Event, IPC_VERSION, IpcError, IpcErrorCode, MAX_IPC_LINE_BYTES, Request,
    RequestFrame, Response,
};
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::{GenericFilePath, ToFsName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use super::error::ClientError;

/// How long the daemon has to answer the hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Events waiting to be taken. A session that falls this far behind loses
/// pushes, never messages: they stay in the daemon's inbox (and show up in
/// `pending` and `fetch_inbox`).
const EVENT_BUFFER: usize = 1024;

type Answer = Result<Response, IpcError>;

/// Requests waiting for their answer; `None` once the connection closed.
type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<Answer>>>>>;

/// The refusal the daemon sent before closing, if it did: the answer to
/// every request on this connection, even one made after the close.
type Refusal = Arc<Mutex<Option<IpcError>>>;

/// What the daemon said in its `welcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    pub protocol: u32,
    pub daemon_version: String,
    pub pid: u32,
}

/// One connection to the daemon, and at most one session.
#[derive(Debug)]
pub struct DaemonClient {
    lines: mpsc::UnboundedSender<String>,
    pending: Pending,
    refusal: Refusal,
    next_id: AtomicU64,
    events: Option<mpsc::Receiver<Event>>,
    welcome: Welcome,
    tasks: [AbortHandle; 2],
}

impl DaemonClient {
    /// Connects to the daemon's socket and says hello as `client_name`
    /// (e.g. `claudemesh-shim/0.1.0`).
    ///
    /// Fails with [`ClientError::NotRunning`] when nothing listens there, and
    /// with [`ClientError::VersionMismatch`] (naming both versions) when the
    /// daemon speaks another IPC version.
    pub async fn connect(socket: &Path, client_name: &str) -> Result<DaemonClient, ClientError> {
        let stream = open(socket).await?;
        let mut client = Self::over(stream);
        let hello = Request::Hello {
            protocol: IPC_VERSION,
            client: client_name.to_owned(),
        };
        let answer = tokio::time::timeout(HELLO_TIMEOUT, client.request(hello))
            .await
            .map_err(|_| ClientError::Timeout(HELLO_TIMEOUT))?;
        match answer {
            Ok(Response::Welcome {
                protocol,
                daemon_version,
                pid,
            }) => {
                if protocol != IPC_VERSION {
                    return Err(ClientError::VersionMismatch {
                        ours: IPC_VERSION,
                        theirs: Some(protocol),
                        detail: format!("daemon {daemon_version} (pid {pid}) welcomed us anyway"),
                    });
                }
                client.welcome = Welcome {
                    protocol,
                    daemon_version,
                    pid,
                };
                tracing::debug!(
                    daemon = %client.welcome.daemon_version,
                    pid = client.welcome.pid,
                    "connected to the daemon"
                );
                Ok(client)
            }
            Ok(other) => Err(ClientError::Protocol(format!(
                "expected `welcome` in answer to hello, got {}",
                response_type(&other)
            ))),
            Err(ClientError::Daemon(e)) if e.code == IpcErrorCode::VersionMismatch => {
                Err(ClientError::VersionMismatch {
                    ours: IPC_VERSION,
                    theirs: None,
                    detail: e.message,
                })
            }
            Err(e) => Err(e),
        }
    }

    fn over(stream: Stream) -> Self {
        let stream = Arc::new(stream);
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let refusal: Refusal = Arc::new(Mutex::new(None));
        let (lines, lines_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::channel(EVENT_BUFFER);
        let writer = tokio::spawn(write_lines(stream.clone(), lines_rx));
        let reader = tokio::spawn(read_frames(
            stream,
            pending.clone(),
            refusal.clone(),
            events_tx,
        ));
        Self {
            lines,
            pending,
            refusal,
            next_id: AtomicU64::new(1),
            events: Some(events),
            welcome: Welcome {
                protocol: 0,
                daemon_version: String::new(),
                pid: 0,
            },
            tasks: [writer.abort_handle(), reader.abort_handle()],
        }
    }

    /// What the daemon said in its welcome.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Sends one request and waits for its answer. Several requests may be in
    /// flight at once on one connection.
    ///
    /// A request the daemon refused comes back as [`ClientError::Daemon`];
    /// [`ClientError::Disconnected`] means it was never sent, and
    /// [`ClientError::ConnectionLost`] that the connection closed before the
    /// answer came.
    pub async fn request(&self, request: Request) -> Result<Response, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match lock(&self.pending).as_mut() {
            Some(waiting) => waiting.insert(id, tx),
            None => return Err(self.refused_or(ClientError::Disconnected)),
        };
        let line = RequestFrame { id, request }.to_line();
        if self.lines.send(line).is_err() {
            forget(&self.pending, id);
            return Err(self.refused_or(ClientError::Disconnected));
        }
        match rx.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(ClientError::Daemon(error)),
            Err(_) => Err(self.refused_or(ClientError::ConnectionLost)),
        }
    }

    /// The daemon's refusal of this connection if it sent one, else `other`.
    fn refused_or(&self, other: ClientError) -> ClientError {
        match self
            .refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            Some(error) => ClientError::Daemon(error),
            None => other,
        }
    }

    /// The events the daemon pushes to this connection's session. Returns
    /// `None` after the first call. The channel closes when the connection
    /// does.
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<Event>> {
        self.events.take()
    }

    /// True once the connection is closed (every later request fails with
    /// [`ClientError::Disconnected`]).
    pub fn is_closed(&self) -> bool {
        lock(&self.pending).is_none()
    }
}

impl Drop for DaemonClient {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn open(socket: &Path) -> Result<Stream, ClientError> {
    let name = socket
        .to_fs_name::<GenericFilePath>()
        .map_err(|source| ClientError::Connect {
            socket: socket.to_owned(),
            source,
        })?;
    Stream::connect(name).await.map_err(|source| {
        if is_not_running(&source) {
            ClientError::NotRunning {
                socket: socket.to_owned(),
                source,
            }
        } else {
            ClientError::Connect {
                socket: socket.to_owned(),
                source,
            }
        }
    })
}

fn is_not_running(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

/// Writes requests until one fails. The waiters are left to the reader:
/// a daemon that refused the connection may have said why before closing
/// (the reader reads that, then the end of the stream, and answers them).
async fn write_lines(stream: Arc<Stream>, mut lines: mpsc::UnboundedReceiver<String>) {
    let mut out = &*stream;
    while let Some(line) = lines.recv().await {
        if let Err(e) = out.write_all(line.as_bytes()).await {
            tracing::debug!("writing to the daemon failed: {e}");
            return;
        }
    }
}

async fn read_frames(
    stream: Arc<Stream>,
    pending: Pending,
    refusal: Refusal,
    events: mpsc::Sender<Event>,
) {
    let mut input = BufReader::new(&*stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = MAX_IPC_LINE_BYTES as u64 + 1;
        match (&mut input).take(limit).read_until(b'\n', &mut line).await {
            Ok(0) => {
                tracing::debug!("the daemon closed the connection");
                break;
            }
            Ok(_) if line.last() != Some(&b'\n') => {
                tracing::warn!("the daemon sent an over-long or unfinished line; closing");
                break;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!("reading from the daemon failed: {e}");
                break;
            }
        }
        let text = String::from_utf8_lossy(&line);
        match DaemonFrame::parse(text.trim_end()) {
            Ok(DaemonFrame::Ok { id, result }) => answer(&pending, id, Ok(result)),
            Ok(DaemonFrame::Err {
                id: Some(id),
                error,
            }) => answer(&pending, id, Err(error)),
            Ok(DaemonFrame::Err { id: None, error }) if refuses_connection(&error.code) => {
                // The daemon closes right after this frame: it is the answer
                // to everything asked on this connection.
                *refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.clone());
                refuse_all(&pending, &error);
                break;
            }
            Ok(DaemonFrame::Err { id: None, error }) => {
                tracing::warn!("the daemon could not read a request: {error}");
            }
            Ok(DaemonFrame::Event { event }) => match events.try_send(event) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!("event buffer full; dropping a pushed event");
                }
            },
            Err(e) => tracing::warn!("{e}"),
        }
    }
    close(&pending);
}

/// Codes of the frame a daemon sends before closing a connection it will
/// not serve (another user's, or one too many).
fn refuses_connection(code: &IpcErrorCode) -> bool {
    matches!(code, IpcErrorCode::Forbidden | IpcErrorCode::Busy)
}

/// Answers every request waiting on this connection with `error`, and
/// marks the connection closed.
fn refuse_all(pending: &Pending, error: &IpcError) {
    let waiting = lock(pending).take().unwrap_or_default();
    for (_, tx) in waiting {
        let _ = tx.send(Err(error.clone()));
    }
}

fn answer(pending: &Pending, id: u64, result: Answer) {
    let waiter = lock(pending).as_mut().and_then(|w| w.remove(&id));
    match waiter {
        // The caller may have given up waiting: nothing to do.
        Some(tx) => drop(tx.send(result)),
        None => tracing::debug!(id, "answer to a request nobody waits for"),
    }
}

fn forget(pending: &Pending, id: u64) {
    if let Some(waiting) = lock(pending).as_mut() {
        waiting.remove(&id);
    }
}

/// Marks the connection closed; dropping the senders wakes every waiter
/// with [`ClientError::ConnectionLost`].
fn close(pending: &Pending) {
    lock(pending).take();
}

fn lock(pending: &Pending) -> MutexGuard<'_, Option<HashMap<u64, oneshot::Sender<Answer>>>> {
    // The lock is never held across a panic point that could poison it in a
    // way that matters: the map stays consistent whatever happened.
    pending.lock().unwrap_or_else(|p| p.into_inner())
}

fn response_type(r: &Response) -> String {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}
