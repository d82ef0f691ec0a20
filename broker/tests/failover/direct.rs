//! A direct protocol client that survives its node: one `role:"session"`
//! WebSocket through the balancer, owned by a tokio task that reads every
//! frame, stores (records) and acknowledges each push, and, when the
//! connection breaks, says a fresh hello through the balancer for the same
//! session and sends again, with the same ids, whatever was not yet
//! answered (as the protocol lets a client do: the broker drops repeats).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use claudemesh_protocol::envelope;
use claudemesh_protocol::keys::MemberPublicKey;
use claudemesh_protocol::wire::ConnectionRole;

use crate::common::{Member, fresh_ts};

/// A push as this client received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Which connection of this client it came on (1 = the first).
    pub connection: u32,
    pub message_id: String,
    /// The plaintext's `text`, or why it could not be read.
    pub text: Result<String, String>,
    pub from_member: String,
    pub from_session: String,
}

/// Everything the client saw, for the test's assertions.
#[derive(Debug, Default)]
pub struct Record {
    pub received: Vec<Received>,
    /// Send id → its `ack` frame.
    pub acked: BTreeMap<String, Value>,
    /// Send id → the `error` frame that refused it (final: not retried).
    pub refused: BTreeMap<String, Value>,
    /// `event` frames (presence), in order, with the connection they came on.
    pub events: Vec<(u32, Value)>,
    /// Accepted hellos so far.
    pub connections: u32,
    /// Whether a connection is open now.
    pub connected: bool,
    /// Hello attempts that failed, and why (for failure messages).
    pub failed_hellos: Vec<String>,
}

enum Cmd {
    Send {
        id: String,
        to: String,
        text: String,
    },
    Peers(oneshot::Sender<Vec<Value>>),
}

/// The handle the test holds.
pub struct Direct {
    pub name: String,
    pub record: Arc<Mutex<Record>>,
    cmds: mpsc::UnboundedSender<Cmd>,
    task: tokio::task::JoinHandle<()>,
}

impl Direct {
    /// Starts the client's task on `rt`; it connects to `url` as session
    /// `name` (also its display name), sealing every send for each of
    /// `members` (pubkeys): the broker ignores envelopes of non-recipients.
    pub fn start(
        rt: &tokio::runtime::Runtime,
        url: &str,
        member: Arc<Member>,
        name: &str,
        members: Vec<String>,
    ) -> Self {
        let record = Arc::new(Mutex::new(Record::default()));
        let (cmds, rx) = mpsc::unbounded_channel();
        let actor = Actor {
            url: url.to_owned(),
            member,
            session: name.to_owned(),
            members,
            record: record.clone(),
            pending: BTreeMap::new(),
            peer_requests: BTreeMap::new(),
            next_request: 0,
        };
        let task = rt.spawn(actor.run(rx));
        Self {
            name: name.to_owned(),
            record,
            cmds,
            task,
        }
    }

    pub fn send(&self, id: &str, to: &str, text: &str) {
        let _ = self.cmds.send(Cmd::Send {
            id: id.to_owned(),
            to: to.to_owned(),
            text: text.to_owned(),
        });
    }

    /// The peer list as the broker answers `list_peers` now (`None` when
    /// no answer came within a few seconds: not connected).
    pub fn peers(&self, rt: &tokio::runtime::Runtime) -> Option<Vec<Value>> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(Cmd::Peers(tx)).ok()?;
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), rx).await })
            .ok()?
            .ok()
    }

    pub fn is_connected(&self) -> bool {
        self.record.lock().unwrap().connected
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Actor {
    url: String,
    member: Arc<Member>,
    session: String,
    members: Vec<String>,
    record: Arc<Mutex<Record>>,
    /// Sends neither acked nor refused yet, by id: (to, frame).
    pending: BTreeMap<String, Value>,
    peer_requests: BTreeMap<String, oneshot::Sender<Vec<Value>>>,
    next_request: u64,
}

/// Why a connection's loop ended.
enum End {
    Broken,
    Stopped,
}

impl Actor {
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        loop {
            let mut ws = self.connect().await;
            let connection = {
                let mut r = self.record.lock().unwrap();
                r.connections += 1;
                r.connected = true;
                r.connections
            };
            let mut broken = false;
            for frame in self.pending.values() {
                if ws
                    .send(Message::Text(frame.to_string().into()))
                    .await
                    .is_err()
                {
                    broken = true;
                    break;
                }
            }
            let end = if broken {
                End::Broken
            } else {
                self.serve(&mut ws, &mut cmds, connection).await
            };
            self.record.lock().unwrap().connected = false;
            // Unanswered peer requests die with the connection.
            self.peer_requests.clear();
            if let End::Stopped = end {
                return;
            }
        }
    }

    /// Connects and says hello until a hello is accepted.
    async fn connect(&mut self) -> Ws {
        loop {
            match self.try_connect().await {
                Ok(ws) => return ws,
                Err(why) => {
                    self.record.lock().unwrap().failed_hellos.push(why);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn try_connect(&self) -> Result<Ws, String> {
        let (mut ws, _) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_tungstenite::connect_async(&self.url),
        )
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
        let hello = self.member.hello_frame(
            &self.session,
            Some(&self.session),
            ConnectionRole::Session,
            fresh_ts(),
        );
        ws.send(Message::Text(hello.to_string().into()))
            .await
            .map_err(|e| format!("hello write: {e}"))?;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .map_err(|_| "no hello_ack in time".to_owned())?;
            match next {
                Some(Ok(Message::Text(t))) => {
                    let v: Value =
                        serde_json::from_str(t.as_str()).map_err(|e| format!("not JSON: {e}"))?;
                    if v["type"] == "hello_ack" {
                        return Ok(ws);
                    }
                    return Err(format!("hello refused: {v}"));
                }
                Some(Ok(Message::Close(c))) => return Err(format!("closed at hello: {c:?}")),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(format!("read at hello: {e}")),
                None => return Err("ended at hello".to_owned()),
            }
        }
    }

    async fn serve(
        &mut self,
        ws: &mut Ws,
        cmds: &mut mpsc::UnboundedReceiver<Cmd>,
        connection: u32,
    ) -> End {
        loop {
            tokio::select! {
                frame = ws.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return End::Broken,
                        Some(Ok(_)) => continue,
                    };
                    let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                        continue;
                    };
                    if let Some(reply) = self.on_frame(v, connection)
                        && ws.send(Message::Text(reply.to_string().into())).await.is_err()
                    {
                        return End::Broken;
                    }
                }
                cmd = cmds.recv() => {
                    let Some(cmd) = cmd else { return End::Stopped };
                    let frame = self.on_cmd(cmd);
                    if ws.send(Message::Text(frame.to_string().into())).await.is_err() {
                        return End::Broken;
                    }
                }
            }
        }
    }

    /// Records a frame; what to answer, if anything.
    fn on_frame(&mut self, v: Value, connection: u32) -> Option<Value> {
        let mut r = self.record.lock().unwrap();
        match v["type"].as_str() {
            Some("push") => {
                let from_member = v["from"]["member"].as_str().unwrap_or("").to_owned();
                let received = Received {
                    connection,
                    message_id: v["messageId"].as_str().unwrap_or("").to_owned(),
                    text: self.open(&v, &from_member),
                    from_member,
                    from_session: v["from"]["sessionId"].as_str().unwrap_or("").to_owned(),
                };
                let ack = json!({"type": "client_ack", "messageId": received.message_id});
                r.received.push(received);
                Some(ack)
            }
            Some("ack") => {
                let id = v["id"].as_str().unwrap_or("").to_owned();
                self.pending.remove(&id);
                r.acked.insert(id, v);
                None
            }
            Some("error")
                if v["id"]
                    .as_str()
                    .is_some_and(|id| self.pending.contains_key(id)) =>
            {
                let id = v["id"].as_str().unwrap_or("").to_owned();
                self.pending.remove(&id);
                r.refused.insert(id, v);
                None
            }
            Some("event") => {
                r.events.push((connection, v));
                None
            }
            Some("peers_list") => {
                let id = v["id"].as_str().unwrap_or("");
                if let Some(tx) = self.peer_requests.remove(id) {
                    let _ = tx.send(v["peers"].as_array().cloned().unwrap_or_default());
                }
                None
            }
            _ => None,
        }
    }

    fn on_cmd(&mut self, cmd: Cmd) -> Value {
        match cmd {
            Cmd::Send { id, to, text } => {
                let body = json!({ "text": text }).to_string();
                let envelopes: Vec<Value> = self
                    .members
                    .iter()
                    .map(|pk| {
                        let key = MemberPublicKey::from_hex(pk).expect("a member pubkey");
                        let env = envelope::seal(body.as_bytes(), &key, &self.member.key)
                            .expect("sealing");
                        serde_json::to_value(env).unwrap()
                    })
                    .collect();
                let frame = json!({"type": "send", "id": id, "to": to, "priority": "next",
                    "envelopes": envelopes});
                self.pending.insert(id, frame.clone());
                frame
            }
            Cmd::Peers(tx) => {
                self.next_request += 1;
                let id = format!("peers-{}", self.next_request);
                self.peer_requests.insert(id.clone(), tx);
                json!({"type": "list_peers", "id": id})
            }
        }
    }

    fn open(&self, push: &Value, from: &str) -> Result<String, String> {
        let sender = MemberPublicKey::from_hex(from).map_err(|e| format!("from: {e}"))?;
        let plain = envelope::open(
            push["nonce"].as_str().unwrap_or(""),
            push["ciphertext"].as_str().unwrap_or(""),
            &sender,
            &self.member.key,
        )
        .map_err(|e| format!("does not open: {e}"))?;
        let v: Value = serde_json::from_slice(&plain).map_err(|e| format!("not JSON: {e}"))?;
        v["text"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no text in {v}"))
    }
}
