//! The link's reconnect rules without I/O: what happened to a connection
//! goes in, what the link does next comes out. The async task in
//! `mod.rs` does the connecting, reading and sleeping, and obeys.
//!
//! The rules:
//! - an accepted hello starts the backoff again from its base (whatever
//!   happens to that connection afterwards);
//! - a failed attempt or a lost connection waits the next backoff delay
//!   and tries again;
//! - revocation is final: the broker's close reason or a connection-level
//!   error naming it, or a hello refused as `unauthorized` once this
//!   member's hello was ever accepted by this broker (before that, the
//!   member may simply not be enrolled yet, so the link keeps trying);
//! - a broker that has said nothing for [`IDLE_TIMEOUT_MS`] is taken for
//!   gone.

use std::time::Duration;

use claudemesh_protocol::limits::IDLE_TIMEOUT_MS;
use claudemesh_protocol::wire::ErrorFrame;
use tokio::time::Instant;

use super::backoff::Backoff;
use super::connect::ConnectError;

/// Why a connected session with the broker ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Shutdown,
    Revoked(String),
    Lost(String),
}

/// What the link does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Connected: report it and serve the connection.
    Serve,
    /// Disconnected: report `detail`, wait `delay`, then connect again.
    RetryAfter { delay: Duration, detail: String },
    /// Revoked: report `detail` and never connect again.
    GiveUp { detail: String },
    /// Shut down.
    Stop,
}

/// The reconnect state of one link.
#[derive(Debug)]
pub struct Reconnect {
    backoff: Backoff,
    /// This member's hello was accepted by this broker at least once.
    accepted: bool,
    /// Set once revoked; every later event gives up the same way.
    revoked: Option<String>,
}

impl Reconnect {
    /// `accepted_before`: this member's hello was accepted by this broker
    /// in an earlier run (the daemon keeps that in its store).
    pub fn new(accepted_before: bool, backoff: Backoff) -> Self {
        Self {
            backoff,
            accepted: accepted_before,
            revoked: None,
        }
    }

    /// The answer to one connection attempt (the hello included).
    pub fn attempted(&mut self, result: Result<(), &ConnectError>) -> Next {
        if let Some(next) = self.still_revoked() {
            return next;
        }
        match result {
            Ok(()) => {
                self.backoff.reset();
                self.accepted = true;
                Next::Serve
            }
            Err(ConnectError::Rejected { code, message })
                if is_revocation(code) && self.accepted =>
            {
                self.give_up(format!("{message} ({code})"))
            }
            Err(e) => self.retry(e.detail()),
        }
    }

    /// A served connection ended.
    pub fn ended(&mut self, how: Ended) -> Next {
        if let Some(next) = self.still_revoked() {
            return next;
        }
        match how {
            Ended::Shutdown => Next::Stop,
            Ended::Revoked(detail) => self.give_up(detail),
            Ended::Lost(detail) => self.retry(detail),
        }
    }

    fn retry(&mut self, detail: String) -> Next {
        Next::RetryAfter {
            delay: self.backoff.next_delay(),
            detail,
        }
    }

    fn give_up(&mut self, detail: String) -> Next {
        self.revoked = Some(detail.clone());
        Next::GiveUp { detail }
    }

    fn still_revoked(&self) -> Option<Next> {
        self.revoked.as_ref().map(|detail| Next::GiveUp {
            detail: detail.clone(),
        })
    }
}

/// How a close frame from the broker ends the connection.
pub fn on_close(reason: &str) -> Ended {
    if is_revocation(reason) {
        return Ended::Revoked(format!("the broker closed the connection: {reason}"));
    }
    Ended::Lost(if reason.is_empty() {
        "the broker closed the connection".into()
    } else {
        format!("the broker closed the connection: {reason}")
    })
}

/// An `error` frame that ends the connection: one not answering a request
/// (no `id`) that says this member is revoked.
pub fn on_error_frame(e: &ErrorFrame) -> Option<Ended> {
    (e.id.is_none() && is_revocation(&e.code))
        .then(|| Ended::Revoked(format!("{} ({})", e.message, e.code)))
}

/// A close reason or error code that means this member is out for good.
pub fn is_revocation(code: &str) -> bool {
    let code = code.to_ascii_lowercase();
    code == "unauthorized" || code.contains("revoked")
}

/// What the link does on its ping timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    Ping,
    /// The broker has been silent too long: the connection is lost.
    Silent(Ended),
}

/// When the broker was last heard from on one connection.
#[derive(Debug, Clone)]
pub struct Liveness {
    last_heard: Instant,
    limit: Duration,
}

impl Liveness {
    pub fn new(now: Instant) -> Self {
        Self {
            last_heard: now,
            limit: Duration::from_millis(IDLE_TIMEOUT_MS),
        }
    }

    /// Anything read from the socket (a frame, a pong, an error) counts.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    pub fn on_tick(&self, now: Instant) -> Tick {
        if now.saturating_duration_since(self.last_heard) >= self.limit {
            return Tick::Silent(Ended::Lost(format!(
                "the broker went silent for {} s",
                self.limit.as_secs()
            )));
        }
        Tick::Ping
    }
}

#[cfg(test)]
#[path = "reconnect_tests.rs"]
mod tests;
