//! Identifiers the broker assigns: meshes, members, invites and messages.
//! All are opaque, at most 64 characters, and unguessable enough that
//! knowing one does not let anyone guess another.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// `prefix` followed by 16 random bytes in hex, e.g. `mesh_3f…`.
pub fn random_id(prefix: &str) -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the system random number generator failed: {e}"))?;
    Ok(format!("{prefix}{}", hex::encode(bytes)))
}

/// Message ids: a random per-process prefix plus a counter, so that minting
/// one costs no system call on the hot path and ids never repeat across
/// restarts.
pub fn message_id() -> String {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 10];
        // Falling back to the clock keeps ids unique per run even in the
        // (never seen) case of a failing RNG.
        if getrandom::fill(&mut bytes).is_err() {
            let now = crate::clock::system_now_ms().to_le_bytes();
            bytes[..8].copy_from_slice(&now);
        }
        format!("msg_{}", hex::encode(bytes))
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{n:x}")
}
