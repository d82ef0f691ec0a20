//! Caps on connections: those not authenticated yet (over all clients and
//! per client address), and all connections together (the open-file
//! budget, see [`super::fdlimit::ConnectionBudget`]).
//!
//! A connection holds a [`Slot`] from its acceptance until it closes. Until
//! its WebSocket hello succeeds ([`Slot::authenticated`]) the slot counts as
//! unauthenticated. When the unauthenticated slots are full, a newcomer is
//! not refused: the **oldest** unauthenticated connection is evicted to make
//! room ([`Slot::is_evicted`]; its stream fails at its next read or write
//! and the task is woken for it). Whoever fills the slots first therefore
//! cannot lock anyone out: a client whose hello completes before as many
//! newer strangers arrive as there are slots always gets in. The per-address
//! cap still refuses (a client over it is the one misbehaving).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use futures_util::task::AtomicWaker;

/// The limits an [`Admission`] enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Unauthenticated connections over all clients; past it the oldest
    /// is evicted.
    pub max_unauthenticated: usize,
    /// Unauthenticated connections from one client address; past it a
    /// newcomer from that address is refused.
    pub max_per_ip: usize,
    /// All connections (authenticated or not): past it the oldest
    /// unauthenticated one is evicted, or the newcomer refused when every
    /// connection is authenticated.
    pub max_open: usize,
}

#[derive(Default)]
struct Counts {
    unauthenticated: usize,
    authenticated: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Unauthenticated slots in order of admission (the first is the
    /// oldest): the address each is counted under and its shared state.
    waiting: BTreeMap<u64, Waiting>,
    next_seq: u64,
}

struct Waiting {
    key: IpAddr,
    shared: Arc<Shared>,
}

impl Counts {
    fn add_ip(&mut self, ip: IpAddr) {
        *self.per_ip.entry(ip).or_insert(0) += 1;
    }

    fn remove_ip(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    fn held_by(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&ip).copied().unwrap_or(0)
    }

    /// Takes `seq` out of the unauthenticated counts; its entry if it was
    /// there.
    fn take_waiting(&mut self, seq: u64) -> Option<Waiting> {
        let w = self.waiting.remove(&seq)?;
        self.unauthenticated = self.unauthenticated.saturating_sub(1);
        self.remove_ip(w.key);
        Some(w)
    }

    /// Evicts the oldest unauthenticated connection; false if there is none.
    fn evict_oldest(&mut self) -> bool {
        let Some(seq) = self.waiting.keys().next().copied() else {
            return false;
        };
        if let Some(w) = self.take_waiting(seq) {
            w.shared.evict();
        }
        true
    }
}

/// The shared counters and their limits.
pub struct Admission {
    counts: Mutex<Counts>,
    limits: Limits,
    per_ip_on_loopback: bool,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every connection the open-file budget allows is authenticated.
    Full,
    /// The client address holds its share of unauthenticated slots.
    PerIp,
}

impl Refused {
    /// The label of `connections_rejected_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Full => "too_many_open_connections",
            Self::PerIp => "too_many_unauthenticated_from_ip",
        }
    }
}

/// A new connection's slot and how many older connections were evicted to
/// make room for it.
pub struct Admitted {
    pub slot: Arc<Slot>,
    pub evicted: usize,
}

impl Admission {
    pub fn new(limits: Limits, per_ip_on_loopback: bool) -> Arc<Self> {
        Arc::new(Self {
            counts: Mutex::new(Counts::default()),
            limits: Limits {
                max_unauthenticated: limits.max_unauthenticated.max(1),
                max_per_ip: limits.max_per_ip.max(1),
                max_open: limits.max_open.max(1),
            },
            per_ip_on_loopback,
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the per-address cap applies to a connection whose peer is
    /// `ip` (loopback is exempt unless configured: behind a local proxy
    /// every client is 127.0.0.1).
    pub fn caps_peer(&self, ip: IpAddr) -> bool {
        self.per_ip_on_loopback || !ip.is_loopback()
    }

    /// A slot for a new connection counted under `ip`, the per-address cap
    /// applying when `capped`. Evicts the oldest unauthenticated
    /// connections when the slots (or the open-file budget) are full.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, capped: bool) -> Result<Admitted, Refused> {
        let mut c = self.lock();
        if capped && c.held_by(ip) >= self.limits.max_per_ip {
            return Err(Refused::PerIp);
        }
        let mut evicted = 0;
        while c.unauthenticated >= self.limits.max_unauthenticated && c.evict_oldest() {
            evicted += 1;
        }
        while c.unauthenticated + c.authenticated >= self.limits.max_open {
            if !c.evict_oldest() {
                return Err(Refused::Full);
            }
            evicted += 1;
        }
        let seq = c.next_seq;
        c.next_seq += 1;
        let shared = Arc::new(Shared::default());
        c.unauthenticated += 1;
        c.add_ip(ip);
        c.waiting.insert(
            seq,
            Waiting {
                key: ip,
                shared: shared.clone(),
            },
        );
        Ok(Admitted {
            slot: Arc::new(Slot {
                admission: self.clone(),
                seq,
                shared,
                via: AtomicU8::new(DIRECT),
            }),
            evicted,
        })
    }

    /// Unauthenticated connections open now.
    pub fn unauthenticated(&self) -> usize {
        self.lock().unauthenticated
    }

    /// Authenticated connections open now.
    pub fn authenticated(&self) -> usize {
        self.lock().authenticated
    }
}

const UNAUTHENTICATED: u8 = 0;
const AUTHENTICATED: u8 = 1;
const EVICTED: u8 = 2;
const CLOSED: u8 = 3;

/// What the stream and the admission share: the slot's state (changed only
/// under the admission's lock) and the wakers of the tasks reading and
/// writing the connection, woken when it is evicted.
#[derive(Default)]
struct Shared {
    state: AtomicU8,
    read: AtomicWaker,
    write: AtomicWaker,
}

impl Shared {
    fn evict(&self) {
        self.state.store(EVICTED, Ordering::SeqCst);
        self.read.wake();
        self.write.wake();
    }
}

/// One connection's place in the counts.
pub struct Slot {
    admission: Arc<Admission>,
    seq: u64,
    shared: Arc<Shared>,
    /// [`DIRECT`], [`TRUSTED_PEER`] or [`PROXIED`].
    via: AtomicU8,
}

/// The peer is the client.
const DIRECT: u8 = 0;
/// The peer is a trusted proxy that sent no PROXY header: an HTTP
/// request's `X-Forwarded-For` names the client.
const TRUSTED_PEER: u8 = 1;
/// The peer is a trusted proxy whose PROXY header said who the client is.
const PROXIED: u8 = 2;

impl Slot {
    /// The hello succeeded: the connection stops counting as
    /// unauthenticated (and its deadline no longer applies). Nothing
    /// changes for a connection already evicted: it is closing.
    pub fn authenticated(&self) {
        let mut c = self.admission.lock();
        if self.shared.state.load(Ordering::SeqCst) == UNAUTHENTICATED {
            c.take_waiting(self.seq);
            c.authenticated += 1;
            self.shared.state.store(AUTHENTICATED, Ordering::SeqCst);
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.shared.state.load(Ordering::SeqCst) == AUTHENTICATED
    }

    /// The connection was evicted to make room for a newer one.
    pub fn is_evicted(&self) -> bool {
        self.shared.state.load(Ordering::SeqCst) == EVICTED
    }

    /// Counts the (still unauthenticated) connection under the client
    /// address `ip` a trusted proxy named, the per-address cap applying
    /// when `capped`. Refused (the counts unchanged) when `ip` holds its
    /// share already; the caller closes the connection.
    pub fn rekey(&self, ip: IpAddr, capped: bool) -> Result<(), Refused> {
        let mut c = self.admission.lock();
        let max = self.admission.limits.max_per_ip;
        let Some(old) = c.waiting.get(&self.seq).map(|w| w.key) else {
            // Authenticated or evicted: nothing is counted per address.
            return Ok(());
        };
        if old == ip {
            return Ok(());
        }
        if capped && c.held_by(ip) >= max {
            return Err(Refused::PerIp);
        }
        c.remove_ip(old);
        c.add_ip(ip);
        if let Some(w) = c.waiting.get_mut(&self.seq) {
            w.key = ip;
        }
        Ok(())
    }

    /// The peer is a trusted proxy.
    pub fn set_trusted_peer(&self) {
        self.via.store(TRUSTED_PEER, Ordering::SeqCst);
    }

    /// A trusted proxy's PROXY header said who the client is (or that
    /// the connection is the proxy's own).
    pub fn set_proxied(&self) {
        self.via.store(PROXIED, Ordering::SeqCst);
    }

    /// Whether `X-Forwarded-For` names the client: the peer is a trusted
    /// proxy that sent no PROXY header.
    pub fn trusts_forwarded_for(&self) -> bool {
        self.via.load(Ordering::SeqCst) == TRUSTED_PEER
    }

    /// Registers the tasks to wake if the connection is evicted.
    pub fn register_reader(&self, waker: &Waker) {
        self.shared.read.register(waker);
    }

    pub fn register_writer(&self, waker: &Waker) {
        self.shared.write.register(waker);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.admission.lock();
        match self.shared.state.swap(CLOSED, Ordering::SeqCst) {
            UNAUTHENTICATED => {
                c.take_waiting(self.seq);
            }
            AUTHENTICATED => c.authenticated = c.authenticated.saturating_sub(1),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(unauth: usize, per_ip: usize, open: usize) -> Limits {
        Limits {
            max_unauthenticated: unauth,
            max_per_ip: per_ip,
            max_open: open,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_oldest_unauthenticated_connection_makes_room() {
        let a = Admission::new(limits(3, 10, 100), true);
        let s: Vec<_> = (1..=3)
            .map(|i| a.admit(ip(&format!("10.0.0.{i}")), true).unwrap())
            .collect();
        assert!(s.iter().all(|x| x.evicted == 0));
        let newer = a.admit(ip("10.0.0.9"), true).unwrap();
        assert_eq!(newer.evicted, 1);
        assert!(s[0].slot.is_evicted());
        assert!(!s[1].slot.is_evicted() && !newer.slot.is_evicted());
        assert_eq!(a.unauthenticated(), 3);
        // The evicted one's address no longer counts; dropping it changes
        // nothing.
        drop(s);
        assert_eq!(a.unauthenticated(), 1);
        let again = a.admit(ip("10.0.0.1"), true).unwrap();
        assert_eq!(again.evicted, 0);
    }

    #[test]
    fn an_authenticated_connection_is_never_evicted() {
        let a = Admission::new(limits(2, 10, 100), true);
        let member = a.admit(ip("10.0.0.1"), true).unwrap().slot;
        member.authenticated();
        let s1 = a.admit(ip("10.0.0.2"), true).unwrap().slot;
        let _s2 = a.admit(ip("10.0.0.2"), true).unwrap().slot;
        let s3 = a.admit(ip("10.0.0.3"), true).unwrap();
        assert_eq!(s3.evicted, 1);
        assert!(s1.is_evicted());
        assert!(member.is_authenticated() && !member.is_evicted());
        assert_eq!((a.unauthenticated(), a.authenticated()), (2, 1));
        // Authenticating after an eviction does not revive the slot.
        s1.authenticated();
        assert!(s1.is_evicted());
        assert_eq!(a.authenticated(), 1);
        drop(member);
        assert_eq!(a.authenticated(), 0);
    }

    #[test]
    fn the_per_ip_cap_refuses_and_loopback_is_exempt_unless_asked() {
        let a = Admission::new(limits(10, 2, 100), false);
        let _x = a.admit(ip("10.0.0.1"), true).unwrap();
        let _y = a.admit(ip("10.0.0.1"), true).unwrap();
        assert_eq!(a.admit(ip("10.0.0.1"), true).err(), Some(Refused::PerIp));
        assert!(a.admit(ip("10.0.0.2"), true).is_ok());
        let lo = ip("127.0.0.1");
        assert!(!a.caps_peer(lo));
        assert!(a.caps_peer(ip("10.0.0.1")));
        let _l: Vec<_> = (0..5)
            .map(|_| a.admit(lo, a.caps_peer(lo)).unwrap())
            .collect();
        let b = Admission::new(limits(10, 1, 100), true);
        assert!(b.caps_peer(lo));
    }

    #[test]
    fn the_open_file_budget_evicts_then_refuses() {
        let a = Admission::new(limits(10, 10, 3), true);
        let m1 = a.admit(ip("10.0.0.1"), true).unwrap().slot;
        let m2 = a.admit(ip("10.0.0.2"), true).unwrap().slot;
        m1.authenticated();
        m2.authenticated();
        let stranger = a.admit(ip("10.0.0.3"), true).unwrap().slot;
        let next = a.admit(ip("10.0.0.4"), true).unwrap();
        assert_eq!(next.evicted, 1);
        assert!(stranger.is_evicted());
        next.slot.authenticated();
        assert_eq!(a.admit(ip("10.0.0.5"), true).err(), Some(Refused::Full));
        drop(m1);
        assert!(a.admit(ip("10.0.0.5"), true).is_ok());
    }

    #[test]
    fn rekeying_moves_the_count_and_honours_the_cap() {
        let a = Admission::new(limits(10, 1, 100), true);
        let proxy = ip("127.0.0.1");
        let s1 = a.admit(proxy, false).unwrap().slot;
        let s2 = a.admit(proxy, false).unwrap().slot;
        s1.rekey(ip("10.0.0.1"), true).unwrap();
        assert_eq!(s2.rekey(ip("10.0.0.1"), true), Err(Refused::PerIp));
        s2.rekey(ip("10.0.0.2"), true).unwrap();
        // The proxy's own address holds nothing now.
        let _s3 = a.admit(proxy, true).unwrap();
        drop(s1);
        let s4 = a.admit(proxy, false).unwrap().slot;
        s4.rekey(ip("10.0.0.1"), true).unwrap();
        s4.authenticated();
        assert!(s4.rekey(ip("10.0.0.2"), true).is_ok());
    }
}
