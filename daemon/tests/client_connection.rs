//! The IPC client against a scripted daemon.
//!
//! These tests use a fake daemon on purpose: they check the client's own
//! rules (answers matched by id when they come out of order, a version
//! mismatch named clearly, events forwarded, a lost connection surfaced),
//! and several of those cases are things a real daemon never does on
//! request. The shim's tests (`shim/tests/`) run the client against the
//! real `claudemeshd`.
//!
//! Run with `cargo test -p claudemesh-daemon --no-default-features --test
//! client_connection` (the client needs none of the server features).

use std::path::{Path, PathBuf};
use std::time::Duration;

use claudemesh_daemon::client::{ClientError, DaemonClient};
use claudemesh_protocol::ipc::{
    DaemonFrame, Event, IPC_VERSION, IpcError, LinkState, Request, RequestFrame, Response,
};
use interprocess::local_socket::tokio::prelude::*;
use interprocess::local_socket::tokio::{Listener, Stream};
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// One accepted connection, read and written line by line.
struct Peer {
    reader: BufReader<tokio::io::ReadHalf<Stream>>,
    writer: tokio::io::WriteHalf<Stream>,
}

impl Peer {
    async fn recv(&mut self) -> Option<RequestFrame> {
        let mut line = String::new();
        match self.reader.read_line(&mut line).await {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                Some(RequestFrame::parse(line.trim_end()).expect("the client sends valid frames"))
            }
        }
    }

    async fn send(&mut self, frame: DaemonFrame) {
        self.writer
            .write_all(frame.to_line().as_bytes())
            .await
            .expect("the client reads");
    }

    /// Reads the hello and welcomes the client with `protocol`.
    async fn welcome(&mut self, protocol: u32) {
        let hello = self.recv().await.expect("a hello");
        assert!(
            matches!(&hello.request, Request::Hello { protocol: p, client } if *p == IPC_VERSION && client == "test/1"),
            "{hello:?}"
        );
        self.send(DaemonFrame::Ok {
            id: hello.id,
            result: Response::Welcome {
                protocol,
                daemon_version: "9.9.9".into(),
                pid: 4242,
            },
        })
        .await;
    }
}

fn socket_in(dir: &Path) -> PathBuf {
    dir.join("d.sock")
}

fn listen(socket: &Path) -> Listener {
    let name = socket.to_fs_name::<GenericFilePath>().unwrap();
    ListenerOptions::new().name(name).create_tokio().unwrap()
}

async fn accept(listener: &Listener) -> Peer {
    let stream = listener.accept().await.unwrap();
    let (r, w) = tokio::io::split(stream);
    Peer {
        reader: BufReader::new(r),
        writer: w,
    }
}

#[tokio::test]
async fn answers_are_matched_by_id_when_they_come_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(dir.path());
    let listener = listen(&socket);
    let server = tokio::spawn(async move {
        let mut peer = accept(&listener).await;
        peer.welcome(IPC_VERSION).await;
        let first = peer.recv().await.unwrap();
        let second = peer.recv().await.unwrap();
        // Answer the second request first.
        for (frame, count) in [(second, 2), (first, 1)] {
            let count = match frame.request {
                Request::Pending => count,
                _ => panic!("unexpected {frame:?}"),
            };
            peer.send(DaemonFrame::Ok {
                id: frame.id,
                result: Response::Pending { count },
            })
            .await;
        }
        peer
    });
    let client = DaemonClient::connect(&socket, "test/1").await.unwrap();
    assert_eq!(client.welcome().daemon_version, "9.9.9");
    assert_eq!(client.welcome().pid, 4242);
    let first = client.request(Request::Pending);
    // Make sure the first request is written before the second.
    let (a, b) = tokio::join!(first, async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.request(Request::Pending).await
    });
    assert_eq!(a.unwrap(), Response::Pending { count: 1 });
    assert_eq!(b.unwrap(), Response::Pending { count: 2 });
    drop(server.await.unwrap());
}

#[tokio::test]
async fn a_daemon_refusal_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(dir.path());
    let listener = listen(&socket);
    let server = tokio::spawn(async move {
        let mut peer = accept(&listener).await;
        peer.welcome(IPC_VERSION).await;
        let req = peer.recv().await.unwrap();
        peer.send(DaemonFrame::Err {
            id: Some(req.id),
            error: IpcError::new("unknown_target", "no session named `bob`"),
        })
        .await;
        peer
    });
    let client = DaemonClient::connect(&socket, "test/1").await.unwrap();
    let err = client
        .request(Request::MessageStatus {
            message_id: "m".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.daemon_code(), Some("unknown_target"));
    assert!(err.to_string().contains("no session named `bob`"), "{err}");
    assert!(!err.is_connection());
    drop(server.await.unwrap());
}

#[tokio::test]
async fn a_version_mismatch_names_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(dir.path());
    let listener = listen(&socket);
    // A daemon that refuses the hello, as `claudemeshd` does.
    let server = tokio::spawn(async move {
        let mut peer = accept(&listener).await;
        let hello = peer.recv().await.unwrap();
        peer.send(DaemonFrame::Err {
            id: Some(hello.id),
            error: IpcError::new(
                "version_mismatch",
                format!("this daemon speaks IPC version 7, the client {IPC_VERSION}"),
            ),
        })
        .await;
        // A daemon that welcomes with another version.
        let mut peer = accept(&listener).await;
        peer.welcome(IPC_VERSION + 1).await;
        peer
    });
    let err = DaemonClient::connect(&socket, "test/1").await.unwrap_err();
    assert!(
        matches!(err, ClientError::VersionMismatch { theirs: None, .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("IPC version {IPC_VERSION}")),
        "{text}"
    );
    assert!(text.contains("version 7"), "{text}");
    assert!(text.contains("restart the daemon"), "{text}");

    let err = DaemonClient::connect(&socket, "test/1").await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!(
            "speaks IPC version {IPC_VERSION} but the daemon speaks version {}",
            IPC_VERSION + 1
        )),
        "{text}"
    );
    drop(server.await.unwrap());
}

#[tokio::test]
async fn events_flow_and_a_closed_connection_is_surfaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(dir.path());
    let listener = listen(&socket);
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let mut peer = accept(&listener).await;
        peer.welcome(IPC_VERSION).await;
        peer.send(DaemonFrame::Event {
            event: Event::LinkState {
                mesh: "local".into(),
                state: LinkState::Connected,
                detail: None,
            },
        })
        .await;
        // Read one request and close without answering it.
        let _ = peer.recv().await.unwrap();
        let _ = wait.await;
        drop(peer);
    });
    let mut client = DaemonClient::connect(&socket, "test/1").await.unwrap();
    let mut events = client.take_events().unwrap();
    assert!(client.take_events().is_none());
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        event,
        Event::LinkState {
            state: LinkState::Connected,
            ..
        }
    ));

    let in_flight = client.request(Request::ListPeers);
    let (answer, ()) = tokio::join!(in_flight, async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        go.send(()).unwrap();
    });
    let err = answer.unwrap_err();
    assert!(matches!(err, ClientError::ConnectionLost), "{err:?}");
    assert!(err.is_connection());
    // The event channel closes with the connection.
    let end = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap();
    assert!(end.is_none());
    assert!(client.is_closed());
    let err = client.request(Request::Pending).await.unwrap_err();
    assert!(matches!(err, ClientError::Disconnected), "{err:?}");
    server.await.unwrap();
}

#[tokio::test]
async fn nothing_listening_means_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(dir.path());
    let err = DaemonClient::connect(&socket, "test/1").await.unwrap_err();
    assert!(matches!(err, ClientError::NotRunning { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("not running") && text.contains("claudemeshd run"),
        "{text}"
    );

    // A stale socket file with nobody behind it counts as not running too.
    drop(listen(&socket));
    if socket.exists() {
        let err = DaemonClient::connect(&socket, "test/1").await.unwrap_err();
        assert!(matches!(err, ClientError::NotRunning { .. }), "{err:?}");
    }
}

/// The refusal a daemon sends to another user's connection, then closes.
fn forbidden() -> DaemonFrame {
    DaemonFrame::Err {
        id: None,
        error: IpcError::new("forbidden", "this daemon serves only the user that runs it"),
    }
}

#[tokio::test]
async fn a_refused_connection_says_why_even_before_the_hello_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(dir.path());
    let listener = listen(&socket);
    // As the daemon does: the refusal goes out at once and the connection
    // closes, whatever the client has written.
    let server = tokio::spawn(async move {
        let mut peer = accept(&listener).await;
        peer.send(forbidden()).await;
    });
    let err = DaemonClient::connect(&socket, "test/1").await.unwrap_err();
    assert_eq!(err.daemon_code(), Some("forbidden"), "{err}");
    assert!(err.to_string().contains("only the user"), "{err}");
    server.await.unwrap();
}

#[tokio::test]
async fn a_refusal_after_the_hello_answers_the_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(dir.path());
    let listener = listen(&socket);
    let server = tokio::spawn(async move {
        let mut peer = accept(&listener).await;
        peer.welcome(IPC_VERSION).await;
        peer.recv().await.expect("a request");
        peer.send(forbidden()).await;
    });
    let client = DaemonClient::connect(&socket, "test/1").await.unwrap();
    let err = client.request(Request::DaemonStatus).await.unwrap_err();
    assert_eq!(err.daemon_code(), Some("forbidden"), "{err}");
    server.await.unwrap();
    // Later requests on the closed connection say the same.
    let again = client.request(Request::DaemonStatus).await.unwrap_err();
    assert_eq!(again.daemon_code(), Some("forbidden"), "{again}");
}
