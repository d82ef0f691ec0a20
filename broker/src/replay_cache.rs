//! Hello signatures accepted recently, held in memory until their
//! timestamps can no longer pass the skew check.
//!
//! It answers the replay check (hello check 5) fast, and atomically between
//! two connections racing with the same hello; the database copy (written
//! by the group-commit writer) keeps the answer across a restart. It is its
//! own module because the shared `Ctx` holds it while the hello checks,
//! which read it, take that `Ctx`: kept in either module, the two would
//! import each other.

use std::collections::HashMap;
use std::sync::Mutex;

/// Accepted signatures, until they expire.
#[derive(Default)]
pub struct ReplayCache {
    seen: Mutex<HashMap<String, i64>>,
}

impl ReplayCache {
    /// Records `signature`; false if it is already recorded and unexpired.
    pub fn insert(&self, signature: &str, expires_at: i64, now_ms: i64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.get(signature).is_some_and(|exp| *exp >= now_ms) {
            return false;
        }
        seen.insert(signature.to_owned(), expires_at);
        true
    }

    /// Drops expired signatures.
    pub fn prune(&self, now_ms: i64) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|_, exp| *exp >= now_ms);
    }
}
