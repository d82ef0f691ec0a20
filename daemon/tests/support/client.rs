//! A deliberately plain client of the local socket: it writes request
//! lines and reads daemon frames, keeping events aside, and can also write
//! raw bytes (for the garbage tests).

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use claudemesh_protocol::ipc::{
    AttachArgs, AttachedInfo, DaemonFrame, Event, IPC_VERSION, InboxMessage, IpcError, Request,
    RequestFrame, Response,
};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// What the reader task saw.
#[derive(Debug)]
pub enum Incoming {
    Frame(DaemonFrame),
    /// A line that is not a daemon frame (never expected).
    Garbage(String),
}

pub struct TestClient {
    writer: Box<dyn AsyncWrite + Unpin + Send>,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    pub events: VecDeque<Event>,
    /// Answers that arrived while waiting for another id.
    answers: VecDeque<DaemonFrame>,
    next_id: u64,
    reader: tokio::task::JoinHandle<()>,
}

pub const WAIT: Duration = Duration::from_secs(10);

impl TestClient {
    pub async fn connect(socket: &Path) -> std::io::Result<TestClient> {
        let stream = tokio::net::UnixStream::connect(socket).await?;
        let (r, w) = stream.into_split();
        Ok(Self::over(tokio::io::BufReader::new(r), w))
    }

    /// Connects and says hello.
    pub async fn ready(socket: &Path) -> std::io::Result<TestClient> {
        let mut c = Self::connect(socket).await?;
        c.hello().await;
        Ok(c)
    }

    pub fn over(
        reader: impl AsyncBufRead + Unpin + Send + 'static,
        writer: impl AsyncWrite + Unpin + Send + 'static,
    ) -> TestClient {
        let (tx, incoming) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            let mut lines = reader.lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let item = match DaemonFrame::parse(&line) {
                    Ok(f) => Incoming::Frame(f),
                    Err(_) => Incoming::Garbage(line),
                };
                if tx.send(item).is_err() {
                    break;
                }
            }
        });
        TestClient {
            writer: Box::new(writer),
            incoming,
            events: VecDeque::new(),
            answers: VecDeque::new(),
            next_id: 1,
            reader,
        }
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await?;
        self.writer.flush().await
    }

    /// The next frame of any kind (events included), or None on timeout or
    /// when the connection closed.
    pub async fn next_frame(&mut self, wait: Duration) -> Option<DaemonFrame> {
        if let Some(f) = self.answers.pop_front() {
            return Some(f);
        }
        match tokio::time::timeout(wait, self.incoming.recv()).await {
            Ok(Some(Incoming::Frame(f))) => Some(f),
            Ok(Some(Incoming::Garbage(line))) => {
                panic!("the daemon wrote a non-frame line: {line:?}")
            }
            _ => None,
        }
    }

    /// True once the daemon has closed the connection.
    pub async fn closed(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                Ok(None) => return true,
                Ok(Some(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    pub async fn request_id(&mut self, request: Request) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let line = RequestFrame { id, request }.to_line();
        self.send_raw(line.as_bytes())
            .await
            .expect("write a request");
        id
    }

    /// Waits for the answer to request `id`, setting events aside.
    pub async fn answer(&mut self, id: u64, wait: Duration) -> Result<Response, IpcError> {
        if let Some(pos) = self.answers.iter().position(|f| frame_id(f) == Some(id)) {
            return to_result(self.answers.remove(pos).unwrap());
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let item = tokio::time::timeout_at(deadline, self.incoming.recv())
                .await
                .unwrap_or_else(|_| panic!("no answer to request {id} within {wait:?}"))
                .unwrap_or_else(|| panic!("the connection closed before answering {id}"));
            match item {
                Incoming::Frame(DaemonFrame::Event { event }) => self.events.push_back(event),
                Incoming::Frame(f) if frame_id(&f) == Some(id) => return to_result(f),
                Incoming::Frame(f) => self.answers.push_back(f),
                Incoming::Garbage(line) => panic!("the daemon wrote a non-frame line: {line:?}"),
            }
        }
    }

    /// The answer to request `id` if it comes within `wait` (events and
    /// other answers are set aside).
    pub async fn try_answer(
        &mut self,
        id: u64,
        wait: Duration,
    ) -> Option<Result<Response, IpcError>> {
        if let Some(pos) = self.answers.iter().position(|f| frame_id(f) == Some(id)) {
            return Some(to_result(self.answers.remove(pos).unwrap()));
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let item = tokio::time::timeout_at(deadline, self.incoming.recv())
                .await
                .ok()??;
            match item {
                Incoming::Frame(DaemonFrame::Event { event }) => self.events.push_back(event),
                Incoming::Frame(f) if frame_id(&f) == Some(id) => return Some(to_result(f)),
                Incoming::Frame(f) => self.answers.push_back(f),
                Incoming::Garbage(line) => panic!("the daemon wrote a non-frame line: {line:?}"),
            }
        }
    }

    pub async fn request(&mut self, request: Request) -> Result<Response, IpcError> {
        let id = self.request_id(request).await;
        self.answer(id, Duration::from_secs(30)).await
    }

    pub async fn hello(&mut self) {
        let r = self
            .request(Request::Hello {
                protocol: IPC_VERSION,
                client: "daemon-tests".into(),
            })
            .await
            .expect("hello");
        assert!(matches!(r, Response::Welcome { .. }), "{r:?}");
    }

    pub async fn attach(
        &mut self,
        claude_pid: u32,
        name: &str,
        mesh: Option<&str>,
    ) -> AttachedInfo {
        match self.try_attach(claude_pid, name, mesh).await {
            Ok(info) => info,
            Err(e) => panic!("attach failed: {e}"),
        }
    }

    pub async fn try_attach(
        &mut self,
        claude_pid: u32,
        name: &str,
        mesh: Option<&str>,
    ) -> Result<AttachedInfo, IpcError> {
        let r = self
            .request(Request::Attach(AttachArgs {
                mesh: mesh.map(str::to_owned),
                display_name: Some(name.to_owned()),
                cwd: format!("/tmp/{name}"),
                claude_pid,
                groups: vec![],
                transient: false,
                transcript_path: None,
            }))
            .await?;
        match r {
            Response::Attached(info) => Ok(info),
            other => panic!("attach answered {other:?}"),
        }
    }

    /// The next event, waiting up to `wait`.
    pub async fn next_event(&mut self, wait: Duration) -> Option<Event> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                Ok(Some(Incoming::Frame(DaemonFrame::Event { event }))) => return Some(event),
                Ok(Some(Incoming::Frame(f))) => self.answers.push_back(f),
                Ok(Some(Incoming::Garbage(line))) => panic!("non-frame line: {line:?}"),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next message event, skipping other events.
    pub async fn next_message(&mut self, wait: Duration) -> Option<InboxMessage> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await? {
                Event::Message(m) => return Some(m),
                _ => continue,
            }
        }
    }

    pub async fn fetch(&mut self, mark_seen: bool) -> Vec<InboxMessage> {
        match self.request(Request::FetchInbox { mark_seen }).await {
            Ok(Response::Inbox { messages }) => messages,
            other => panic!("fetch_inbox answered {other:?}"),
        }
    }

    pub async fn peer_names(&mut self) -> Vec<String> {
        match self.request(Request::ListPeers).await {
            Ok(Response::Peers { peers }) => {
                peers.into_iter().map(|p| p.peer.display_name).collect()
            }
            other => panic!("list_peers answered {other:?}"),
        }
    }

    /// The furthest state this daemon knows for its message's first
    /// recipient.
    pub async fn first_recipient_state(
        &mut self,
        message_id: &str,
    ) -> Option<claudemesh_protocol::wire::DeliveryState> {
        match self
            .request(Request::MessageStatus {
                message_id: message_id.to_owned(),
            })
            .await
        {
            Ok(Response::MessageStatus { recipients, .. }) => recipients.first().map(|r| r.state),
            other => panic!("message_status answered {other:?}"),
        }
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn frame_id(f: &DaemonFrame) -> Option<u64> {
    match f {
        DaemonFrame::Ok { id, .. } => Some(*id),
        DaemonFrame::Err { id, .. } => *id,
        DaemonFrame::Event { .. } => None,
    }
}

fn to_result(f: DaemonFrame) -> Result<Response, IpcError> {
    match f {
        DaemonFrame::Ok { result, .. } => Ok(result),
        DaemonFrame::Err { error, .. } => Err(error),
        DaemonFrame::Event { .. } => unreachable!("events are not answers"),
    }
}
