//! Faults a test injects into the PostgreSQL store: exactly one kind of
//! read fails, as if the database had not answered, while everything
//! else goes on. A counter read per call; nothing else costs anything.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::store::StoreError;

#[derive(Default)]
pub struct Faults {
    copies_reads: AtomicU32,
}

impl Faults {
    /// The next `n` reads of announced copies (`PgStore::copies_of`) fail.
    pub fn fail_copies_reads(&self, n: u32) {
        self.copies_reads.store(n, Ordering::SeqCst);
    }

    /// How many injected failures of that read are still to come.
    pub fn copies_reads_to_fail(&self) -> u32 {
        self.copies_reads.load(Ordering::SeqCst)
    }

    /// An error when a failure of the copies read is due (and counts it).
    pub(super) fn copies_read(&self) -> Result<(), StoreError> {
        let due = self
            .copies_reads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if due {
            return Err(StoreError::Unavailable(
                "a fault injected by a test (the read of announced copies)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_injected_number_of_reads_fail() {
        let f = Faults::default();
        assert!(f.copies_read().is_ok());
        f.fail_copies_reads(2);
        assert!(f.copies_read().is_err());
        assert_eq!(f.copies_reads_to_fail(), 1);
        assert!(f.copies_read().is_err());
        assert!(f.copies_read().is_ok());
        assert_eq!(f.copies_reads_to_fail(), 0);
    }
}
