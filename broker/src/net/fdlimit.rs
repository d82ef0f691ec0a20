//! The open-file limit: every connection holds a descriptor, and the
//! default soft limit (often 1 024) would let a thousand idle sockets shut
//! everyone out. [`ConnectionBudget`] sizes the connection caps from the
//! limit actually in force.

use super::admission::Limits;

/// Descriptors kept aside whatever the store: standard streams, the
/// listener, the runtime's epoll and wakeup descriptors, log files, the
/// `/healthz` check's own file, and a margin for connections that are
/// closing (evicted, refused) but not closed yet.
pub const BASE_RESERVE: usize = 64;

/// How the open-file limit is shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionBudget {
    /// The soft `RLIMIT_NOFILE` in force (`None`: unknown, no budget).
    pub nofile: Option<libc::rlim_t>,
    /// Descriptors left for client connections once the reserve and the
    /// store's are taken.
    pub connections: usize,
    pub limits: Limits,
}

impl ConnectionBudget {
    /// Caps from a soft open-file limit of `nofile`: the store's
    /// `store_descriptors` and [`BASE_RESERVE`] come off the top; of the
    /// rest, at most half may be unauthenticated (so that members always
    /// have the other half) and at most `configured` (the
    /// `max_unauthenticated` setting); every connection together stays
    /// within the rest.
    pub fn from_limit(
        nofile: Option<libc::rlim_t>,
        store_descriptors: usize,
        configured_unauthenticated: usize,
        max_per_ip: usize,
    ) -> Self {
        let connections = match nofile {
            Some(n) => usize::try_from(n)
                .unwrap_or(usize::MAX)
                .saturating_sub(BASE_RESERVE + store_descriptors)
                .max(2),
            None => usize::MAX,
        };
        Self {
            nofile,
            connections,
            limits: Limits {
                max_unauthenticated: configured_unauthenticated.min(connections / 2).max(1),
                max_per_ip,
                max_open: connections,
            },
        }
    }
}

/// The soft `RLIMIT_NOFILE` in force, `None` if it cannot be read.
pub fn current_nofile() -> Option<libc::rlim_t> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit with a valid, owned struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    Some(limit.rlim_cur)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (at most 2^20) and
/// returns the soft limit now in force (`None` if it cannot be read).
pub fn raise_nofile() -> Option<libc::rlim_t> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: limit.rlim_max.min(1 << 20),
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                limit.rlim_cur = wanted.rlim_cur;
            } else {
                tracing::debug!("could not raise the open-file limit");
            }
        }
    }
    Some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::ConnectionBudget;

    #[test]
    fn the_budget_leaves_room_for_members_and_the_store() {
        let b = ConnectionBudget::from_limit(Some(1024), 16, 1024, 64);
        assert_eq!(b.connections, 1024 - 64 - 16);
        assert_eq!(b.limits.max_unauthenticated, (1024 - 64 - 16) / 2);
        assert_eq!(b.limits.max_open, 1024 - 64 - 16);
        assert_eq!(b.limits.max_per_ip, 64);
        // A large limit leaves the configured cap in force.
        let b = ConnectionBudget::from_limit(Some(1 << 20), 16, 1024, 64);
        assert_eq!(b.limits.max_unauthenticated, 1024);
        // A tiny one still admits someone; an unknown one caps nothing more.
        let b = ConnectionBudget::from_limit(Some(10), 16, 1024, 64);
        assert_eq!((b.limits.max_unauthenticated, b.limits.max_open), (1, 2));
        let b = ConnectionBudget::from_limit(None, 16, 1024, 64);
        assert_eq!(b.limits.max_unauthenticated, 1024);
    }

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let soft = super::raise_nofile().expect("getrlimit works on Linux");
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit with a valid, owned struct.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(soft, limit.rlim_cur);
        assert_eq!(limit.rlim_cur, limit.rlim_max.min(1 << 20));
    }
}
