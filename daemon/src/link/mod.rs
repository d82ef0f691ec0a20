//! One broker connection per joined mesh, kept alive for the life of the
//! mesh in the config.
//!
//! The link owns the transport only: it connects with a freshly signed
//! hello (role `daemon`), reconnects with capped, jittered backoff, pings,
//! and gives up for good on revocation. Everything it hears goes to the
//! mesh's worker as [`LinkEvent`]s; everything the daemon says goes through
//! a [`LinkHandle`]. While disconnected, frames are dropped rather than
//! queued: on every (re)connect the worker replays the state that matters
//! (open sessions, pending outbox, owed receipts) from the store, so nothing
//! depends on a frame written into a dead socket.

mod backoff;
mod connect;
mod reconnect;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use claudemesh_protocol::ipc::LinkState;
use claudemesh_protocol::wire::{ClientFrame, HelloAck, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

pub use backoff::Backoff;
use connect::Ws;
pub use connect::{LinkIdentity, frame_type};
use reconnect::{Ended, Liveness, Next, Reconnect, Tick};

/// How often the link pings the broker.
const PING_EVERY: Duration = Duration::from_secs(20);

/// What the link tells its mesh worker, in order.
#[derive(Debug)]
pub enum LinkEvent {
    /// The hello was accepted; the worker replays its state now.
    Connected(HelloAck),
    /// Any frame after the hello.
    Frame(ServerFrame),
    /// The connection state changed (including to `Connected`, after the
    /// `Connected` event).
    State(LinkStatus),
}

/// A link's state with a human sentence about why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    pub state: LinkState,
    pub detail: Option<String>,
}

/// What an answer to a request is recognised by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReplyKey {
    /// `peers_list`, `message_status_result` or `error` with this `id`.
    RequestId(String),
    /// `session_opened` for this session.
    SessionOpened(String),
}

enum Command {
    Send(ClientFrame),
    Request {
        frame: ClientFrame,
        key: ReplyKey,
        reply: oneshot::Sender<ServerFrame>,
    },
    Shutdown,
}

/// The daemon's side of a link. Cheap to clone.
#[derive(Clone)]
pub struct LinkHandle {
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<LinkStatus>,
    done: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    /// Frames the link may still hand to the worker before it stops
    /// reading the socket (see [`LinkHandle::frames_handled`]).
    credit: Arc<Semaphore>,
}

/// How many broker frames may wait for the worker. A reconnect can bring
/// a large backlog of pushes; past this, the link stops reading (TCP then
/// slows the broker) instead of holding it all in memory.
const MAX_UNHANDLED_FRAMES: usize = 2048;

impl LinkHandle {
    /// Starts the link task. `accepted_before` says whether this member's
    /// hello was ever accepted by this broker: only then is `unauthorized`
    /// a revocation rather than a not-yet-enrolled member.
    pub fn spawn(
        identity: LinkIdentity,
        accepted_before: bool,
    ) -> (LinkHandle, mpsc::UnboundedReceiver<LinkEvent>) {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (events, event_rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(LinkStatus {
            state: LinkState::Connecting,
            detail: None,
        });
        let credit = Arc::new(Semaphore::new(MAX_UNHANDLED_FRAMES));
        let task = LinkTask {
            identity,
            accepted: accepted_before,
            commands: command_rx,
            events,
            status: status_tx,
            pending: HashMap::new(),
            credit: credit.clone(),
        };
        let join = tokio::spawn(task.run());
        (
            LinkHandle {
                commands,
                status,
                done: Arc::new(Mutex::new(Some(join))),
                credit,
            },
            event_rx,
        )
    }

    pub fn status(&self) -> LinkStatus {
        self.status.borrow().clone()
    }

    /// The worker has handled `n` frames: the link may read that many more.
    pub fn frames_handled(&self, n: usize) {
        if n > 0 {
            self.credit.add_permits(n);
        }
    }

    pub fn is_connected(&self) -> bool {
        self.status.borrow().state == LinkState::Connected
    }

    /// Sends `frame` if connected; otherwise it is dropped (see the module
    /// doc for why that is safe).
    pub fn send(&self, frame: ClientFrame) {
        let _ = self.commands.send(Command::Send(frame));
    }

    /// Sends `frame` and waits up to `wait` for the frame that answers it.
    pub async fn request(
        &self,
        frame: ClientFrame,
        key: ReplyKey,
        wait: Duration,
    ) -> Option<ServerFrame> {
        if !self.is_connected() {
            return None;
        }
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Request { frame, key, reply })
            .ok()?;
        tokio::time::timeout(wait, answer).await.ok()?.ok()
    }

    /// Closes the connection and waits for the task to end.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
        let join = self.done.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(join) = join {
            let _ = tokio::time::timeout(Duration::from_secs(3), join).await;
        }
    }
}

struct LinkTask {
    identity: LinkIdentity,
    /// This member's hello was accepted by this broker before this run.
    accepted: bool,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<LinkEvent>,
    status: watch::Sender<LinkStatus>,
    pending: HashMap<ReplyKey, Vec<oneshot::Sender<ServerFrame>>>,
    /// One permit per frame handed to the worker, returned when handled.
    credit: Arc<Semaphore>,
}

impl LinkTask {
    async fn run(mut self) {
        let mut rules = Reconnect::new(self.accepted, Backoff::for_links());
        loop {
            self.set_state(LinkState::Connecting, None);
            let identity = self.identity.clone();
            let outcome = tokio::select! {
                result = connect::connect(&identity) => Some(result),
                stop = self.wait_for_shutdown_while_idle() => { let () = stop; None }
            };
            let Some(result) = outcome else { return };
            let next = match result {
                Ok((ws, ack)) => match rules.attempted(Ok(())) {
                    Next::Serve => {
                        tracing::info!(mesh = %self.identity.mesh_id, broker = %self.identity.broker_url, "connected to the broker");
                        self.set_state(LinkState::Connected, None);
                        let _ = self.events.send(LinkEvent::Connected(ack));
                        let ended = self.serve(ws).await;
                        if let Ended::Lost(detail) = &ended {
                            tracing::warn!(mesh = %self.identity.mesh_id, %detail, "broker connection lost");
                        }
                        rules.ended(ended)
                    }
                    other => other,
                },
                Err(e) => {
                    let next = rules.attempted(Err(&e));
                    if matches!(next, Next::RetryAfter { .. }) {
                        tracing::warn!(mesh = %self.identity.mesh_id, detail = %e.detail(), "cannot connect to the broker");
                    }
                    next
                }
            };
            match next {
                // Only an accepted hello says serve, and that was served above.
                Next::Serve => continue,
                Next::Stop => return,
                Next::GiveUp { detail } => return self.revoked(detail).await,
                Next::RetryAfter { delay, detail } => {
                    self.set_state(LinkState::Disconnected, Some(detail));
                    if self.idle_for(delay).await {
                        return;
                    }
                }
            }
        }
    }

    fn set_state(&mut self, state: LinkState, detail: Option<String>) {
        let status = LinkStatus { state, detail };
        if *self.status.borrow() != status {
            self.status.send_replace(status.clone());
            let _ = self.events.send(LinkEvent::State(status));
        }
        if state != LinkState::Connected {
            // Nobody will answer these now.
            self.pending.clear();
        }
    }

    /// Final: report and wait, refusing everything, until shut down.
    async fn revoked(mut self, detail: String) {
        tracing::error!(mesh = %self.identity.mesh_id, %detail, "this member was revoked from the mesh; not reconnecting");
        self.set_state(LinkState::Revoked, Some(detail));
        while let Some(cmd) = self.commands.recv().await {
            if matches!(cmd, Command::Shutdown) {
                return;
            }
        }
    }

    /// Drops commands while there is no connection; true on shutdown.
    async fn idle_for(&mut self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return false,
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Shutdown) => return true,
                    Some(_) => continue,
                }
            }
        }
    }

    /// Resolves only on shutdown; drops other commands meanwhile.
    async fn wait_for_shutdown_while_idle(&mut self) {
        loop {
            match self.commands.recv().await {
                None | Some(Command::Shutdown) => return,
                Some(_) => continue,
            }
        }
    }

    async fn serve(&mut self, mut ws: Ws) -> Ended {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.reset();
        let mut liveness = Liveness::new(Instant::now());
        loop {
            tokio::select! {
                msg = ws.next() => {
                    liveness.heard(Instant::now());
                    match msg {
                        Some(Ok(Message::Text(text))) => {
                            // The worker is behind: wait for it before reading on.
                            match self.credit.acquire().await {
                                Ok(permit) => permit.forget(),
                                Err(_) => return Ended::Shutdown,
                            }
                            if let Some(end) = self.on_text(text.as_str()) {
                                close_quietly(&mut ws).await;
                                return end;
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            let reason = frame.map(|f| f.reason.as_str().to_owned()).unwrap_or_default();
                            return reconnect::on_close(&reason);
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Ended::Lost(format!("connection error: {e}")),
                        None => return Ended::Lost("the broker closed the connection".into()),
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Shutdown) => {
                        close_quietly(&mut ws).await;
                        return Ended::Shutdown;
                    }
                    Some(Command::Send(frame)) => {
                        if let Err(e) = write(&mut ws, Message::text(frame.to_json())).await {
                            return Ended::Lost(format!("sending failed: {e}"));
                        }
                    }
                    Some(Command::Request { frame, key, reply }) => {
                        self.pending.entry(key).or_default().push(reply);
                        if let Err(e) = write(&mut ws, Message::text(frame.to_json())).await {
                            return Ended::Lost(format!("sending failed: {e}"));
                        }
                    }
                },
                _ = ping.tick() => {
                    if let Tick::Silent(ended) = liveness.on_tick(Instant::now()) {
                        close_quietly(&mut ws).await;
                        return ended;
                    }
                    if let Err(e) = write(&mut ws, Message::Ping(Vec::new().into())).await {
                        return Ended::Lost(format!("ping failed: {e}"));
                    }
                }
            }
        }
    }

    /// Routes one text frame; `Some` ends the connection.
    fn on_text(&mut self, text: &str) -> Option<Ended> {
        let frame = match ServerFrame::parse(text) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(mesh = %self.identity.mesh_id, error = %e, "ignoring an unreadable broker frame");
                self.credit.add_permits(1);
                return None;
            }
        };
        let key = match &frame {
            ServerFrame::PeersList { id: Some(id), .. }
            | ServerFrame::MessageStatusResult { id: Some(id), .. } => {
                Some(ReplyKey::RequestId(id.clone()))
            }
            ServerFrame::Error(e) => e.id.clone().map(ReplyKey::RequestId),
            ServerFrame::SessionOpened { session_id, .. } => {
                Some(ReplyKey::SessionOpened(session_id.clone()))
            }
            _ => None,
        };
        if let Some(waiters) = key.and_then(|k| self.pending.remove(&k)) {
            for w in waiters {
                let _ = w.send(frame.clone());
            }
        }
        if let ServerFrame::Error(e) = &frame
            && let Some(end) = reconnect::on_error_frame(e)
        {
            return Some(end);
        }
        let _ = self.events.send(LinkEvent::Frame(frame));
        None
    }
}

/// A write the broker has not taken after this long means a dead network
/// (a laptop's sleep, a dropped NAT entry): the connection is ended and
/// made again rather than leaving the link unable to read or ping.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

async fn write(ws: &mut Ws, message: Message) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, ws.send(message)).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "the broker took no data for {} s",
            WRITE_TIMEOUT.as_secs()
        )),
    }
}

/// Closes politely, without waiting on a connection that is gone.
async fn close_quietly(ws: &mut Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}
