//! Opening one broker connection: the WebSocket (TLS for `wss://`), then
//! the signed `hello` and its answer.

use std::time::Duration;

use claudemesh_protocol::MemberSecretKey;
use claudemesh_protocol::hello::signed_hello;
use claudemesh_protocol::limits::MAX_FRAME_BYTES;
use claudemesh_protocol::wire::{ClientFrame, ConnectionRole, ErrorCode, HelloAck, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long the TCP + TLS + WebSocket handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the broker may take to answer the hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Who this link speaks for. The secret key stays in memory only; its
/// `Debug` shows the public half.
#[derive(Debug, Clone)]
pub struct LinkIdentity {
    pub mesh_id: String,
    pub member_id: String,
    pub broker_url: String,
    pub key: MemberSecretKey,
    /// The `sessionId` of the daemon connection itself.
    pub connection_id: String,
}

/// Why a connection attempt failed.
#[derive(Debug)]
pub enum ConnectError {
    /// The broker could not be reached or the handshake broke.
    Transport(String),
    /// The broker answered the hello with an error code.
    Rejected { code: ErrorCode, message: String },
}

impl ConnectError {
    pub fn detail(&self) -> String {
        match self {
            Self::Transport(e) => e.clone(),
            Self::Rejected { code, message } => format!("{message} ({code})"),
        }
    }
}

/// The ring provider is the only one compiled in; installing it as the
/// process default lets tokio-tungstenite build its TLS config.
fn ensure_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Connects and completes the hello. On success the stream is ready for
/// session frames.
pub async fn connect(id: &LinkIdentity) -> Result<(Ws, HelloAck), ConnectError> {
    ensure_tls_provider();
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES));
    let attempt =
        tokio_tungstenite::connect_async_with_config(id.broker_url.as_str(), Some(config), true);
    let (mut ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .map_err(|_| {
            ConnectError::Transport(format!(
                "the broker did not answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| ConnectError::Transport(format!("cannot reach the broker: {e}")))?;

    let mut hello = signed_hello(
        &id.key,
        &id.mesh_id,
        &id.member_id,
        &id.connection_id,
        std::process::id(),
        "",
        crate::ids::now_ms(),
    );
    hello.role = ConnectionRole::Daemon;
    hello.client = Some(format!("claudemeshd/{}", env!("CARGO_PKG_VERSION")));
    ws.send(Message::text(ClientFrame::Hello(hello).to_json()))
        .await
        .map_err(|e| ConnectError::Transport(format!("sending the hello failed: {e}")))?;

    let answer = tokio::time::timeout(HELLO_TIMEOUT, first_frame(&mut ws))
        .await
        .map_err(|_| ConnectError::Transport("the broker did not answer the hello".into()))??;
    match answer {
        ServerFrame::HelloAck(ack) => Ok((ws, ack)),
        ServerFrame::Error(e) => Err(ConnectError::Rejected {
            code: e.code,
            message: e.message,
        }),
        other => Err(ConnectError::Transport(format!(
            "the broker answered the hello with `{}`",
            frame_type(&other)
        ))),
    }
}

/// The first text frame, skipping control frames.
async fn first_frame(ws: &mut Ws) -> Result<ServerFrame, ConnectError> {
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(text)) => {
                return ServerFrame::parse(text.as_str()).map_err(|e| {
                    ConnectError::Transport(format!("unreadable answer to the hello: {e}"))
                });
            }
            Ok(Message::Close(frame)) => {
                let reason = frame
                    .map(|f| f.reason.as_str().to_owned())
                    .unwrap_or_default();
                return Err(ConnectError::Rejected {
                    // A close reason is a code word too (`revoked`, `unauthorized`).
                    code: if reason.is_empty() {
                        ErrorCode::Other("closed".into())
                    } else {
                        ErrorCode::parse(&reason)
                    },
                    message: "the broker closed the connection during the hello".into(),
                });
            }
            Ok(_) => continue,
            Err(e) => return Err(ConnectError::Transport(format!("connection lost: {e}"))),
        }
    }
    Err(ConnectError::Transport(
        "the broker closed the connection".into(),
    ))
}

pub fn frame_type(frame: &ServerFrame) -> &'static str {
    match frame {
        ServerFrame::HelloAck(_) => "hello_ack",
        ServerFrame::SessionOpened { .. } => "session_opened",
        ServerFrame::PeersList { .. } => "peers_list",
        ServerFrame::Event { .. } => "event",
        ServerFrame::Ack(_) => "ack",
        ServerFrame::Push(_) => "push",
        ServerFrame::Receipt { .. } => "receipt",
        ServerFrame::MessageStatusResult { .. } => "message_status_result",
        ServerFrame::Error(_) => "error",
    }
}
