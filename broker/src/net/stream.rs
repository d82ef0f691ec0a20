//! An accepted TCP stream that fails at its deadline unless its
//! connection has authenticated by then.
//!
//! One deadline from acceptance covers every way a stranger can hold a
//! connection open without authenticating: headers sent a byte at a time,
//! a body that never ends, an idle keep-alive connection, a WebSocket that
//! never says hello.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::admission::Slot;

pub struct GuardedStream {
    inner: TcpStream,
    slot: Arc<Slot>,
    deadline: Pin<Box<Sleep>>,
}

impl GuardedStream {
    pub fn new(inner: TcpStream, slot: Arc<Slot>, deadline: Duration) -> Self {
        Self {
            inner,
            slot,
            deadline: Box::pin(tokio::time::sleep(deadline)),
        }
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
        if let Some(e) = self.expired(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
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
