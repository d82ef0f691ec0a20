//! Identifiers the broker assigns: meshes, members, invites and messages.
//! All are opaque, at most 64 characters, and unguessable enough that
//! knowing one does not let anyone guess another.

use std::sync::OnceLock;

/// `prefix` followed by 16 random bytes in hex, e.g. `mesh_3f…`.
pub fn random_id(prefix: &str) -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the system random number generator failed: {e}"))?;
    Ok(format!("{prefix}{}", hex::encode(bytes)))
}

/// Message ids: a random per-process prefix plus the message's sequence
/// number in the database (assigned by the writer), so that minting one
/// costs no system call on the hot path, the store finds a message by the
/// number without a text index, and ids never repeat across restarts (the
/// store checks the whole id, so a number reused after every message
/// expired cannot be mistaken for an old one).
pub fn message_id(seq: i64) -> String {
    static PREFIX: OnceLock<String> = OnceLock::new();
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
    format!("{prefix}_{seq:x}")
}

/// The sequence number a message id of this broker ends with
/// (`msg_<prefix>_<seq hex>`); the store still compares the whole id.
pub fn seq_in_message_id(message_id: &str) -> Option<i64> {
    let (_, hex) = message_id.rsplit_once('_')?;
    if hex.is_empty() || hex.len() > 15 {
        return None;
    }
    i64::from_str_radix(hex, 16).ok()
}
