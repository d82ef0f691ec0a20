//! This shim's session with the daemon: connecting (and starting the
//! daemon), attaching, re-attaching after the daemon went away, and turning
//! pushed messages into channel notifications.
//!
//! The connection is made in the background as soon as the shim starts, so
//! that `initialize` is answered at once; tool calls wait for it (bounded).
//! When the connection drops, the shim keeps trying to re-attach quietly
//! (connect only: a daemon stopped on purpose stays stopped), and the next
//! tool call reconnects at once, starting the daemon if need be. Re-attaching
//! with the same arguments resumes the same session: the daemon keys
//! sessions by their Claude Code process.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use claudemesh_daemon::client::{ClientError, DaemonClient, find_daemon_exe};
use claudemesh_protocol::ipc::{AttachedInfo, Event, InboxMessage, IpcError, Request, Response};
use rmcp::model::{CustomNotification, ServerNotification};
use rmcp::service::{Peer, RoleServer};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::{CLIENT_NAME, Settings};

/// How long a tool call waits for the session (including starting the
/// daemon, which itself gives up after 5 s).
const SESSION_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a tool call waits for the daemon's answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A failure to reach the daemon this recent is reported as is rather than
/// retried at once (a tool call that waited for the start-up attempt).
const FAILURE_REUSE: Duration = Duration::from_secs(2);
/// The background re-attach backoff after the connection dropped.
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

pub const CHANNEL_METHOD: &str = "notifications/claude/channel";

/// Why a tool could not do its work.
#[derive(Debug)]
pub enum Failure {
    /// The daemon cannot be reached or started; the sentence says why.
    Unreachable(String),
    /// The daemon refused the request.
    Refused(IpcError),
    /// The environment is wrong (e.g. a relative CLAUDEMESH_DATA_DIR).
    Config(String),
    /// The daemon answered something this shim does not expect.
    Unexpected(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unreachable(why) => write!(
                f,
                "The claudemesh daemon is not reachable: {why}. Run `claudemesh-ctl doctor` in a \
                 terminal to find out why; this tool reconnects by itself on the next call."
            ),
            Self::Refused(e) => write!(f, "{}", e.message),
            Self::Config(why) => write!(
                f,
                "claudemesh is misconfigured: {why}. Fix the environment of the MCP server \
                 (see `claudemesh-ctl doctor`)."
            ),
            Self::Unexpected(why) => write!(
                f,
                "The claudemesh daemon gave an unexpected answer ({why}); the shim and daemon may \
                 be from different releases: run `claudemesh-ctl doctor`."
            ),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Daemon(e) => Failure::Refused(e),
            ClientError::Protocol(why) => Failure::Unexpected(why),
            other => Failure::Unreachable(other.to_string()),
        }
    }
}

#[derive(Clone)]
struct Live {
    client: Arc<DaemonClient>,
    info: AttachedInfo,
    generation: u64,
}

#[derive(Default)]
struct State {
    live: Option<Live>,
    /// The last failure of an attempt that was allowed to start the daemon.
    last_failure: Option<(Instant, String)>,
}

pub struct Session {
    settings: Settings,
    state: tokio::sync::Mutex<State>,
    generation: AtomicU64,
    reconnecting: AtomicBool,
    /// Where pushes go: `None` until the MCP handshake decides it, then
    /// the client (initialize era) or `Some(None)`: no delivery path
    /// (`server/discover` era).
    peer: watch::Sender<Option<Option<Peer<RoleServer>>>>,
    /// `settings.channel` resolved, once.
    channel: OnceLock<bool>,
    /// The client connected with `initialize` (not `server/discover`): the
    /// era in which Claude Code delivers channel notifications.
    initialize_era: AtomicBool,
}

impl Session {
    pub fn new(settings: Settings) -> Arc<Session> {
        Arc::new(Session {
            settings,
            state: tokio::sync::Mutex::new(State::default()),
            generation: AtomicU64::new(0),
            reconnecting: AtomicBool::new(false),
            peer: watch::Sender::new(None),
            channel: OnceLock::new(),
            initialize_era: AtomicBool::new(false),
        })
    }

    /// Connects and attaches in the background, starting the daemon if
    /// need be, so that the first tool call finds the session ready.
    pub fn start_in_background(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.live(true).await {
                tracing::warn!("{e}");
            }
        });
    }

    /// Whether this session wants channel pushes (`CLAUDEMESH_CHANNEL`, or
    /// the flag on its Claude Code command line).
    pub fn wants_channel(&self) -> bool {
        *self.channel.get_or_init(|| self.settings.channel.enabled())
    }

    pub fn set_initialize_era(&self) {
        self.initialize_era.store(true, Ordering::Release);
    }

    /// Pushes go out only when they are wanted and the client can deliver
    /// them: a connection opened with `server/discover` cannot.
    fn pushes(&self) -> bool {
        self.wants_channel() && self.initialize_era.load(Ordering::Acquire)
    }

    /// The MCP client finished initializing: channel notifications may flow.
    pub fn set_peer(&self, peer: Peer<RoleServer>) {
        let target = self.pushes().then_some(peer);
        self.peer.send_replace(Some(target));
    }

    /// The client opened the connection with `server/discover`: nothing
    /// can be pushed on it.
    pub fn set_discover_era(&self) {
        self.peer.send_replace(Some(None));
    }

    /// This session as the daemon sees it, if attached.
    pub async fn attached(&self) -> Option<AttachedInfo> {
        let state = self.state.lock().await;
        state
            .live
            .as_ref()
            .filter(|l| !l.client.is_closed())
            .map(|l| l.info.clone())
    }

    /// Sends one request for this session, reconnecting first if the
    /// connection is gone. A request that was never sent, or that is safe
    /// to repeat, is retried once on a fresh connection; a `send` whose
    /// answer was lost is not (it may have been stored).
    pub async fn call(self: &Arc<Self>, request: Request) -> Result<Response, Failure> {
        let repeatable = !matches!(request, Request::Send(_));
        for attempt in 0..2 {
            let live = match tokio::time::timeout(SESSION_TIMEOUT, self.live(true)).await {
                Ok(live) => live?,
                Err(_) => {
                    return Err(Failure::Unreachable(format!(
                        "no answer within {SESSION_TIMEOUT:?}"
                    )));
                }
            };
            let answer =
                tokio::time::timeout(REQUEST_TIMEOUT, live.client.request(request.clone())).await;
            match answer {
                Ok(Ok(response)) => return Ok(response),
                Err(_) => return Err(ClientError::Timeout(REQUEST_TIMEOUT).into()),
                Ok(Err(e)) => {
                    if e.is_connection() {
                        self.forget(live.generation).await;
                    }
                    let retry = attempt == 0
                        && match e {
                            ClientError::Disconnected => true,
                            ClientError::ConnectionLost => repeatable,
                            _ => false,
                        };
                    if !retry {
                        return Err(e.into());
                    }
                    tracing::debug!("the daemon connection dropped ({e}); reconnecting");
                }
            }
        }
        unreachable!("the second attempt always returns")
    }

    /// The live session, connecting and attaching if there is none.
    async fn live(self: &Arc<Self>, may_start: bool) -> Result<Live, Failure> {
        let mut state = self.state.lock().await;
        if let Some(live) = &state.live {
            if !live.client.is_closed() {
                return Ok(live.clone());
            }
            state.live = None;
        }
        if may_start
            && let Some((at, why)) = &state.last_failure
            && at.elapsed() < FAILURE_REUSE
        {
            return Err(Failure::Unreachable(why.clone()));
        }
        match self.establish(may_start).await {
            Ok(live) => {
                state.last_failure = None;
                state.live = Some(live.clone());
                Ok(live)
            }
            Err(e) => {
                if may_start && let Failure::Unreachable(why) = &e {
                    state.last_failure = Some((Instant::now(), why.clone()));
                }
                Err(e)
            }
        }
    }

    async fn establish(self: &Arc<Self>, may_start: bool) -> Result<Live, Failure> {
        let paths = self.settings.paths.clone().map_err(Failure::Config)?;
        let socket = paths.socket_path();
        let mut client = if may_start {
            match find_daemon_exe() {
                Ok(exe) => DaemonClient::connect_or_start(&paths, CLIENT_NAME, &exe).await?,
                // Without an executable to start, a running daemon still does.
                Err(not_found) => match DaemonClient::connect(&socket, CLIENT_NAME).await {
                    Err(ClientError::NotRunning { .. }) => return Err(not_found.into()),
                    other => other?,
                },
            }
        } else {
            DaemonClient::connect(&socket, CLIENT_NAME).await?
        };
        let events = client.take_events();
        let attach = Request::Attach(self.settings.attach.clone());
        let info = match client.request(attach).await? {
            Response::Attached(info) => info,
            other => {
                return Err(Failure::Unexpected(format!(
                    "attach answered {}",
                    serde_json::to_value(&other)
                        .ok()
                        .and_then(|v| v.get("type").cloned())
                        .unwrap_or(Value::Null)
                )));
            }
        };
        tracing::info!(
            session = %info.session_id,
            mesh = %info.mesh_slug,
            name = %info.display_name,
            resumed = info.resumed,
            pending = info.pending,
            "attached"
        );
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let client = Arc::new(client);
        if let Some(events) = events {
            tokio::spawn(self.clone().forward(client.clone(), events, generation));
        }
        Ok(Live {
            client,
            info,
            generation,
        })
    }

    /// Drops the connection of `generation` if it is still the current one.
    async fn forget(&self, generation: u64) {
        let mut state = self.state.lock().await;
        if state
            .live
            .as_ref()
            .is_some_and(|l| l.generation == generation)
        {
            state.live = None;
        }
    }

    /// Handles the daemon's pushes until the connection closes, then starts
    /// re-attaching in the background.
    async fn forward(
        self: Arc<Self>,
        client: Arc<DaemonClient>,
        mut events: mpsc::Receiver<Event>,
        generation: u64,
    ) {
        while let Some(event) = events.recv().await {
            match event {
                Event::Message(message) => self.push(&client, message).await,
                Event::LinkState {
                    mesh,
                    state,
                    detail,
                } => tracing::debug!(%mesh, ?state, ?detail, "broker link"),
                other => tracing::trace!(?other, "event"),
            }
        }
        drop(client);
        tracing::info!("the daemon connection closed; re-attaching in the background");
        self.forget(generation).await;
        self.reconnect_in_background();
    }

    fn reconnect_in_background(self: &Arc<Self>) {
        if self.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let mut delay = RECONNECT_FIRST;
            loop {
                tokio::time::sleep(delay).await;
                match this.live(false).await {
                    Ok(_) => break,
                    Err(e) => tracing::debug!("re-attach failed: {e}"),
                }
                delay = (delay * 2).min(RECONNECT_MAX);
            }
            this.reconnecting.store(false, Ordering::Release);
        });
    }

    /// Pushes a message to Claude Code as a channel notification, having
    /// told the daemon it is pushed: not that it was seen. Claude Code may still
    /// drop it (channels off for the account, an older client); the message
    /// counts as seen only once a hook finds it in the session transcript,
    /// and is unread again for the other paths if none does in time.
    async fn push(&self, client: &DaemonClient, message: InboxMessage) {
        if !self.wants_channel() {
            return;
        }
        let mut peer_rx = self.peer.subscribe();
        let Ok(target) = peer_rx.wait_for(Option::is_some).await.map(|p| p.clone()) else {
            return;
        };
        let Some(Some(peer)) = target else {
            tracing::debug!(
                "not pushing message {}: the client connected without `initialize`, \
                 an era with no channel delivery",
                message.message_id
            );
            return;
        };
        // Claimed with the daemon first: a message another path already
        // showed (or that is being pushed) is not pushed.
        let claim = Request::MarkPushed {
            message_ids: vec![message.message_id.clone()],
        };
        match client.request(claim).await {
            Ok(Response::MarkedPushed { message_ids })
                if message_ids.contains(&message.message_id) => {}
            Ok(_) => {
                tracing::debug!(
                    "message {} was shown already; not pushed",
                    message.message_id
                );
                return;
            }
            Err(e) => {
                tracing::warn!(
                    "could not claim message {} for a push: {e}",
                    message.message_id
                );
                return;
            }
        }
        let notification = ServerNotification::CustomNotification(CustomNotification::new(
            CHANNEL_METHOD,
            Some(channel_params(&message)),
        ));
        // A failed send leaves it held back until the window passes, then
        // unread again for the other paths.
        match peer.send_notification(notification).await {
            Ok(()) => tracing::debug!(
                "pushed message {} as a channel notification",
                message.message_id
            ),
            Err(e) => tracing::warn!("could not push message {}: {e}", message.message_id),
        }
    }
}

/// `params` of a `notifications/claude/channel`: the text as content, and
/// every `meta` value a string (Claude Code drops others).
pub fn channel_params(m: &InboxMessage) -> Value {
    json!({
        "content": m.text,
        "meta": {
            "from": m.from.display_name,
            "from_id": format!("{}/{}", m.from.member, m.from.session_id),
            "message_id": m.message_id,
            "priority": m.priority.as_str(),
            "to": m.to,
            "mesh": m.mesh_slug,
            "sent_at": m.sent_at.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use claudemesh_protocol::wire::{MessageSender, Priority};

    #[test]
    fn channel_meta_values_are_all_strings() {
        let m = InboxMessage {
            message_id: "m1".into(),
            mesh_slug: "local".into(),
            from: MessageSender {
                member: "ab".into(),
                session_id: "s1".into(),
                display_name: "web@box".into(),
            },
            to: "api@box".into(),
            priority: Priority::Now,
            text: "hi".into(),
            sent_at: 1_764_168_000_000,
            received_at: 1_764_168_000_001,
        };
        let p = channel_params(&m);
        assert_eq!(p["content"], "hi");
        let meta = p["meta"].as_object().unwrap();
        assert!(meta.values().all(Value::is_string), "{meta:?}");
        assert_eq!(meta["from"], "web@box");
        assert_eq!(meta["priority"], "now");
    }
}
