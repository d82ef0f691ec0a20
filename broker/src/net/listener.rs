//! The listener axum serves from: admission control at accept, and the
//! PROXY header of connections from trusted proxies.
//!
//! A connection from a `--trusted-proxy` address is handed to axum only
//! once its start has been read (in a task of its own, so that a slow
//! proxy holds up no one): a PROXY v2 header naming the client re-counts
//! the connection under the client's address; without one the connection
//! is served as it is (its `X-Forwarded-For` may name the client, see
//! [`super::forwarded`]).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::admission::{Admission, Slot};
use super::proxy::{self, ProxyHeader, Start};
use super::stream::GuardedStream;
use crate::metrics::Metrics;

/// Wait after an accept error that is not about one connection (out of
/// file descriptors): retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Connections from trusted proxies whose start has been read.
type Ready = (GuardedStream, SocketAddr);

pub struct GuardedListener {
    inner: TcpListener,
    admission: Arc<Admission>,
    deadline: Duration,
    metrics: Arc<Metrics>,
    trusted: Arc<HashSet<IpAddr>>,
    ready_tx: mpsc::UnboundedSender<Ready>,
    ready_rx: mpsc::UnboundedReceiver<Ready>,
}

impl GuardedListener {
    pub fn new(
        inner: TcpListener,
        admission: Arc<Admission>,
        deadline: Duration,
        metrics: Arc<Metrics>,
        trusted_proxies: &[IpAddr],
    ) -> Self {
        let (ready_tx, ready_rx) = mpsc::unbounded_channel();
        Self {
            inner,
            admission,
            deadline,
            metrics,
            trusted: Arc::new(trusted_proxies.iter().map(IpAddr::to_canonical).collect()),
            ready_tx,
            ready_rx,
        }
    }

    /// Admits a new connection: `Some` when it can be served now, `None`
    /// when it was refused or (from a trusted proxy) is reading its start.
    fn admit(&self, tcp: TcpStream, addr: SocketAddr) -> Option<Ready> {
        // On a dual-stack socket an IPv4 peer shows as ::ffff:a.b.c.d.
        let ip = addr.ip().to_canonical();
        let trusted = self.trusted.contains(&ip);
        // A trusted proxy carries many clients: its own address is not
        // capped; the client's is, once known.
        let capped = !trusted && self.admission.caps_peer(ip);
        let admitted = match self.admission.admit(ip, capped) {
            Ok(a) => a,
            Err(refused) => {
                // Closed at once: holding it to write an answer would
                // spend what the cap protects.
                self.metrics.connection_rejected(refused.reason());
                return None;
            }
        };
        if admitted.evicted > 0 {
            Metrics::add(&self.metrics.connections_evicted, admitted.evicted as u64);
        }
        if trusted {
            admitted.slot.set_trusted_peer();
        }
        let _ = tcp.set_nodelay(true);
        let stream = GuardedStream::new(tcp, admitted.slot, self.deadline, self.metrics.clone());
        if !trusted {
            return Some((stream.watch_for_proxy_header(), addr));
        }
        let ready = self.ready_tx.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            if let Some(stream) = read_proxy_start(stream, &metrics).await {
                let _ = ready.send((stream, addr));
            }
        });
        None
    }
}

/// Reads the start of a connection from a trusted proxy (bounded by the
/// stream's deadline and eviction) and counts the connection under the
/// client its PROXY header names. `None` when the connection is to be
/// closed.
async fn read_proxy_start(mut stream: GuardedStream, metrics: &Metrics) -> Option<GuardedStream> {
    match proxy::read_start(&mut stream).await {
        Ok(Ok(Start::NotProxy(bytes))) => {
            stream.set_replay(bytes);
            Some(stream)
        }
        Ok(Ok(Start::Header(ProxyHeader::Proxied { source }))) => {
            stream.slot().set_proxied();
            match stream.slot().rekey(source.ip().to_canonical(), true) {
                Ok(()) => Some(stream),
                Err(refused) => {
                    metrics.connection_rejected(refused.reason());
                    None
                }
            }
        }
        Ok(Ok(Start::Header(ProxyHeader::Local | ProxyHeader::Unknown))) => {
            stream.slot().set_proxied();
            Some(stream)
        }
        Ok(Err(e)) => {
            metrics.connection_rejected("malformed_proxy_header");
            tracing::debug!(error = %e, "closed a connection from a trusted proxy");
            None
        }
        // Closed, evicted or past its deadline.
        Err(_) => None,
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

impl Listener for GuardedListener {
    type Io = GuardedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.inner.accept() => match accepted {
                    Ok((tcp, addr)) => {
                        if let Some(ready) = self.admit(tcp, addr) {
                            return ready;
                        }
                    }
                    Err(e) if is_connection_error(&e) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                },
                // The sender lives in `self`: never closed while accepting.
                Some(ready) = self.ready_rx.recv() => return ready,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// What a handler learns about its connection: its admission slot.
#[derive(Clone)]
pub struct ConnSlot(pub Arc<Slot>);

impl Connected<IncomingStream<'_, GuardedListener>> for ConnSlot {
    fn connect_info(stream: IncomingStream<'_, GuardedListener>) -> Self {
        Self(stream.io().slot().clone())
    }
}
