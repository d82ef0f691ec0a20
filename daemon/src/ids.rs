//! Identifiers the daemon mints, and the clock.

use sha2::{Digest, Sha256};

use crate::process_info::ProcessId;

/// Milliseconds since the Unix epoch (the protocol's unit). A clock before
/// 1970 reads as 0 rather than failing.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `bytes` random bytes as lowercase hex. Falls back to a clock-and-counter
/// mix if the system generator fails, so that minting an id never fails;
/// ids need uniqueness, not secrecy.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if getrandom::fill(&mut buf).is_err() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let seed = format!(
            "{}|{}|{}",
            now_ms(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let digest = Sha256::digest(seed.as_bytes());
        for (i, b) in buf.iter_mut().enumerate() {
            *b = digest[i % digest.len()];
        }
    }
    hex::encode(buf)
}

/// A fresh outbox id, used as the broker `send.id` (at most 64 chars).
pub fn new_message_id() -> String {
    format!("m-{}", random_hex(12))
}

/// The session id of a Claude Code process in one mesh.
///
/// Deterministic, so that a shim restarted under the same Claude Code finds
/// the same session (and inbox), and distinct per (mesh, install, process):
/// the install id keeps two machines of the same member apart, and the
/// start time keeps a reused pid apart from its predecessor.
pub fn session_id(mesh_id: &str, install_id: &str, claude: ProcessId) -> String {
    let input = format!(
        "claudemesh/session/v1|{mesh_id}|{install_id}|{}|{}",
        claude.pid, claude.start_time
    );
    let digest = Sha256::digest(input.as_bytes());
    format!("s-{}", &hex::encode(digest)[..40])
}

/// The `sessionId` of the daemon's own (role `daemon`) broker connection.
pub fn daemon_connection_id(install_id: &str) -> String {
    let short: String = install_id.chars().take(16).collect();
    format!("daemon-{short}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_stable_and_distinct() {
        let p = ProcessId {
            pid: 10,
            start_time: 99,
        };
        let a = session_id("mesh", "inst", p);
        assert_eq!(a, session_id("mesh", "inst", p));
        assert!(a.len() <= 64);
        assert_ne!(a, session_id("mesh2", "inst", p));
        assert_ne!(a, session_id("mesh", "inst2", p));
        let reused = ProcessId {
            pid: 10,
            start_time: 100,
        };
        assert_ne!(a, session_id("mesh", "inst", reused));
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(new_message_id(), new_message_id());
        assert_eq!(random_hex(8).len(), 16);
        assert!(daemon_connection_id(&random_hex(16)).len() <= 64);
    }
}
