//! An accepted TCP stream that fails at its deadline unless its
//! connection has authenticated by then.
//!
//! One deadline from acceptance covers every way a stranger can hold a
//! connection open without authenticating: headers sent a byte at a time,
//! a body that never ends, an idle keep-alive connection, a WebSocket that
//! never says hello. An unauthenticated connection evicted to make room
//! for a newer one (see [`super::admission`]) fails the same way, at once:
//! its reading and writing tasks are woken for it.
//!
//! Bytes read ahead while looking for a PROXY header ([`super::proxy`])
//! are replayed first. On a connection from an untrusted peer the first
//! bytes are watched for a PROXY v2 signature, which fails the stream: a
//! header only a trusted proxy may send.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::admission::Slot;
use crate::metrics::Metrics;

/// The error a stream fails with when a PROXY header arrives from a peer
/// that is not a trusted proxy.
pub const UNTRUSTED_PROXY_HEADER: &str =
    "a PROXY protocol header from an address that is not a --trusted-proxy";

pub struct GuardedStream {
    inner: TcpStream,
    slot: Arc<Slot>,
    deadline: Pin<Box<Sleep>>,
    /// Bytes read already, served before the socket's.
    replay: Vec<u8>,
    /// Signature bytes matched so far at the start of an untrusted
    /// connection; `None` when not watching (trusted peer, or the bytes
    /// differed).
    sniffed: Option<usize>,
    metrics: Arc<Metrics>,
}

impl GuardedStream {
    pub fn new(
        inner: TcpStream,
        slot: Arc<Slot>,
        deadline: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner,
            slot,
            deadline: Box::pin(tokio::time::sleep(deadline)),
            replay: Vec::new(),
            sniffed: None,
            metrics,
        }
    }

    /// The peer is not a trusted proxy: a PROXY header from it fails the
    /// stream (counted as `untrusted_proxy_header`).
    pub fn watch_for_proxy_header(mut self) -> Self {
        self.sniffed = Some(0);
        self
    }

    /// Bytes to hand to the reader before the socket's.
    pub fn set_replay(&mut self, bytes: Vec<u8>) {
        self.replay = bytes;
    }

    /// The connection's admission slot (the WebSocket handler releases it
    /// once the hello succeeds).
    pub fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }

    /// An error once the deadline has passed on an unauthenticated
    /// connection. Polling the timer also arranges for the task to be woken
    /// at the deadline even if the peer sends nothing.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if self.slot.is_evicted() {
            return Some(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "evicted: the unauthenticated slots were full and this connection was the oldest",
            ));
        }
        if self.slot.is_authenticated() {
            return None;
        }
        self.deadline.as_mut().poll(cx).is_ready().then(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "the connection did not authenticate in time",
            )
        })
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.slot.register_reader(cx.waker());
        if let Some(e) = self.expired(cx) {
            return Poll::Ready(Err(e));
        }
        if !self.replay.is_empty() {
            let n = self.replay.len().min(buf.remaining());
            buf.put_slice(&self.replay[..n]);
            self.replay.drain(..n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let (Some(matched), Poll::Ready(Ok(()))) = (self.sniffed, &polled) {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                self.sniffed = super::proxy::sniff(matched, new);
                if self.sniffed == Some(super::proxy::SIGNATURE.len()) {
                    self.sniffed = None;
                    self.metrics.connection_rejected("untrusted_proxy_header");
                    tracing::debug!("closed a connection: {UNTRUSTED_PROXY_HEADER}");
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        UNTRUSTED_PROXY_HEADER,
                    )));
                }
            }
        }
        polled
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.slot.register_writer(cx.waker());
        if let Some(e) = self.expired(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
