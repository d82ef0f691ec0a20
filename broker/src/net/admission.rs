//! Caps on unauthenticated connections: over all clients and per IP.
//!
//! A connection holds a [`Slot`] from its acceptance until its WebSocket
//! hello succeeds ([`Slot::authenticated`]) or it closes. Authenticated
//! connections hold none, so a crowd of strangers can fill the
//! unauthenticated slots but never the room members need.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// The shared counters and their limits.
pub struct Admission {
    counts: Mutex<Counts>,
    max_total: usize,
    max_per_ip: usize,
    per_ip_on_loopback: bool,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Global,
    PerIp,
}

impl Refused {
    /// The label of `connections_rejected_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Global => "too_many_unauthenticated",
            Self::PerIp => "too_many_unauthenticated_from_ip",
        }
    }
}

impl Admission {
    pub fn new(max_total: usize, max_per_ip: usize, per_ip_on_loopback: bool) -> Arc<Self> {
        Arc::new(Self {
            counts: Mutex::new(Counts::default()),
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            per_ip_on_loopback,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a new connection from `ip`, if both caps allow it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Arc<Slot>, Refused> {
        let mut c = self.lock();
        if c.total >= self.max_total {
            return Err(Refused::Global);
        }
        let capped = self.per_ip_on_loopback || !ip.is_loopback();
        let from_ip = c.per_ip.entry(ip).or_insert(0);
        if capped && *from_ip >= self.max_per_ip {
            return Err(Refused::PerIp);
        }
        *from_ip += 1;
        c.total += 1;
        Ok(Arc::new(Slot {
            admission: self.clone(),
            ip,
            released: AtomicBool::new(false),
        }))
    }

    fn release(&self, ip: IpAddr) {
        let mut c = self.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_ip.remove(&ip);
            }
        }
    }

    /// Unauthenticated connections open now.
    pub fn unauthenticated(&self) -> usize {
        self.lock().total
    }
}

/// One unauthenticated connection's place in the counts.
pub struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
    released: AtomicBool,
}

impl Slot {
    /// The hello succeeded: the connection stops counting (and its
    /// deadline no longer applies).
    pub fn authenticated(&self) {
        if !self.released.swap(true, Ordering::SeqCst) {
            self.admission.release(self.ip);
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.released.load(Ordering::SeqCst)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.released.swap(true, Ordering::SeqCst) {
            self.admission.release(self.ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_and_slots_come_back() {
        let a = Admission::new(3, 2, true);
        let ip1: IpAddr = "10.0.0.1".parse().unwrap();
        let ip2: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = a.admit(ip1).unwrap();
        let _s2 = a.admit(ip1).unwrap();
        assert_eq!(a.admit(ip1).err(), Some(Refused::PerIp));
        let s3 = a.admit(ip2).unwrap();
        assert_eq!(a.admit(ip2).err(), Some(Refused::Global));
        s3.authenticated();
        assert_eq!(a.unauthenticated(), 2);
        let _s4 = a.admit(ip2).unwrap();
        drop(s1);
        drop(s3);
        assert_eq!(a.unauthenticated(), 2);
        assert!(a.admit(ip1).is_ok());
    }

    #[test]
    fn loopback_is_exempt_from_the_per_ip_cap_unless_asked() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let a = Admission::new(10, 1, false);
        let _s: Vec<_> = (0..5).map(|_| a.admit(lo).unwrap()).collect();
        let b = Admission::new(10, 1, true);
        let _t = b.admit(lo).unwrap();
        assert_eq!(b.admit(lo).err(), Some(Refused::PerIp));
    }
}
