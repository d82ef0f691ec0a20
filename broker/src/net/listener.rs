//! The listener axum serves from: admission control at accept.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::net::TcpListener;

use super::admission::{Admission, Slot};
use super::stream::GuardedStream;
use crate::metrics::Metrics;

/// Wait after an accept error that is not about one connection (out of
/// file descriptors): retrying at once would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

pub struct GuardedListener {
    inner: TcpListener,
    admission: Arc<Admission>,
    deadline: Duration,
    metrics: Arc<Metrics>,
}

impl GuardedListener {
    pub fn new(
        inner: TcpListener,
        admission: Arc<Admission>,
        deadline: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner,
            admission,
            deadline,
            metrics,
        }
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
            match self.inner.accept().await {
                Ok((tcp, addr)) => match self.admission.admit(addr.ip()) {
                    Ok(slot) => {
                        let _ = tcp.set_nodelay(true);
                        return (GuardedStream::new(tcp, slot, self.deadline), addr);
                    }
                    Err(refused) => {
                        // Closed at once: holding it to write an answer
                        // would spend what the cap protects.
                        self.metrics.connection_rejected(refused.reason());
                        drop(tcp);
                    }
                },
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
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
