//! Abuse limits: request rates per client address and per identity, failed authentications per
//! address, and concurrent unauthenticated WebSockets — so that a flood of forged credentials costs
//! the attacker, not the gateway.
//!
//! Each rate is a GCRA bucket (the "generic cell rate algorithm" of ATM traffic shaping, the scheme
//! behind Envoy's and many API gateways' local limits): per key it keeps one number, the *theoretical
//! arrival time* (TAT) of the next event. An event is allowed when `max(TAT, now) + interval` is at
//! most `burst × interval` ahead of now. A key whose TAT has passed holds no state at all, which is
//! what makes a fixed-size table honest: forgetting an idle key loses nothing.
//!
//! The tables are fixed-size arrays of atomics, set-associative (a key hashes to one set of
//! [`WAYS`] slots; a new key takes a free or idle slot of its set, else the one closest to idle).
//! Memory is `table_size × 16` bytes per table whatever the number of distinct addresses, and the hot
//! path takes no lock: one keyed hash and one compare-and-swap. Two threads racing on one slot can
//! each see the other's older value, so a limit may be exceeded by the number of racing threads —
//! never unboundedly.
//!
//! The unauthenticated-WebSocket counts are not on the request path (an upgrade without a credential
//! is rare and slow by nature): a mutex-guarded map whose size the global cap bounds.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{LimitsConfig, RateLimit};
use crate::error::Refusal;

/// Slots per set: a new key may evict only within its set.
const WAYS: usize = 4;

/// Why a request was limited: the `reason` label of `scopegate_rate_limited_total` and the refusal's
/// reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    AddressRequests,
    IdentityRequests,
    FailedAuth,
    UnauthenticatedWebsockets,
}

impl LimitKind {
    pub fn code(self) -> &'static str {
        match self {
            LimitKind::AddressRequests => "address_requests",
            LimitKind::IdentityRequests => "identity_requests",
            LimitKind::FailedAuth => "failed_auth",
            LimitKind::UnauthenticatedWebsockets => "unauthenticated_websockets",
        }
    }
}

/// The table's clock tick: TATs are kept in units of 16 ns, which leaves 56 bits of a word for 36 years
/// of uptime and 8 bits for a check tag (see [`RateTable`]).
const TICK_SHIFT: u32 = 4;
const TAG_MASK: u64 = 0xff;

/// A bucket's parameters in the units the table uses: ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gcra {
    /// Time one event costs.
    interval: u64,
    /// How far ahead of now the TAT may run: `burst × interval`.
    tolerance: u64,
}

impl Gcra {
    fn new(rate: RateLimit) -> Gcra {
        // Periods are at most an hour, so nanoseconds fit a u64 (no 128-bit division per request).
        let period = u64::try_from(rate.period.as_nanos()).unwrap_or(u64::MAX);
        let interval = ((period / rate.count.max(1)) >> TICK_SHIFT).max(1);
        Gcra {
            interval,
            tolerance: interval.saturating_mul(rate.burst.max(1)),
        }
    }
}

/// One fixed-size GCRA table. Each slot is two words: the key's 64-bit tag (0: never used), which a
/// new key claims with a compare-and-swap, and the cell, `TAT << 8 | tag & 0xff`. Carrying the tag's
/// low bits in the cell makes a take's compare-and-swap fail when the slot changed hands under it, so a
/// new key never inherits the TAT of the key it evicted.
struct RateTable {
    keys: Box<[AtomicU64]>,
    cells: Box<[AtomicU64]>,
    /// `sets - 1`; the number of sets is a power of two.
    set_mask: usize,
}

/// Where a key lives: a slot it already had, or one just claimed (and whether that evicted state).
enum Slot {
    Found(usize),
    Claimed(usize, bool),
}

/// What a take found: allowed, or refused with the wait until one more event fits.
enum Taken {
    Allowed { slot: usize },
    Refused { wait: Duration },
}

/// `n` zeroed atomics from a zeroed allocation: the allocator hands out fresh pages without writing
/// them, so an idle table costs address space, not resident memory (three default tables are 3 MiB;
/// written element by element they raised idle RSS from 13.6 to 16.6 MiB).
fn zeroed_atomics(n: usize) -> Box<[AtomicU64]> {
    const _: () = assert!(
        std::mem::size_of::<AtomicU64>() == std::mem::size_of::<u64>()
            && std::mem::align_of::<AtomicU64>() == std::mem::align_of::<u64>()
    );
    let plain: Box<[u64]> = vec![0u64; n].into_boxed_slice();
    // SAFETY: `AtomicU64` has the same size and bit validity as `u64` (its documentation) and, as
    // asserted above, the same alignment; the slice is uniquely owned and moves whole.
    unsafe { Box::from_raw(Box::into_raw(plain) as *mut [AtomicU64]) }
}

fn pack(tat: u64, tag: u64) -> u64 {
    (tat << 8) | (tag & TAG_MASK)
}

/// The TAT a cell holds for `tag`; a cell still marked for another key holds nothing for it yet.
fn tat_for(cell: u64, tag: u64) -> u64 {
    if cell & TAG_MASK == tag & TAG_MASK {
        cell >> 8
    } else {
        0
    }
}

impl RateTable {
    fn new(size: usize) -> RateTable {
        let sets = (size / WAYS).max(1).next_power_of_two();
        let slots = sets * WAYS;
        RateTable {
            keys: zeroed_atomics(slots),
            cells: zeroed_atomics(slots),
            set_mask: sets - 1,
        }
    }

    fn capacity(&self) -> usize {
        self.keys.len()
    }

    /// The slot holding `tag`, or one claimed for it: a free or idle slot of its set, else the one
    /// whose TAT comes soonest. A claimed slot starts at `first` (its first event already taken), so it
    /// never looks idle to a racing claimer. `None` when another thread claimed that slot first.
    fn slot(&self, tag: u64, now: u64, first: u64) -> Option<Slot> {
        let base = ((tag >> 8) as usize & self.set_mask) * WAYS;
        let mut victim = (base, 0u64, u64::MAX);
        for i in base..base + WAYS {
            let key = self.keys[i].load(Ordering::Acquire);
            if key == tag {
                return Some(Slot::Found(i));
            }
            let busy_until = if key == 0 {
                0
            } else {
                self.cells[i].load(Ordering::Relaxed) >> 8
            };
            if busy_until < victim.2 {
                victim = (i, key, busy_until);
            }
        }
        let (i, old_key, busy_until) = victim;
        self.keys[i]
            .compare_exchange(old_key, tag, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        self.cells[i].store(pack(first, tag), Ordering::Release);
        // A TAT in the past holds no state: reusing that slot forgets nothing.
        Some(Slot::Claimed(i, busy_until > now))
    }

    /// Takes one event for `tag` at tick `now`, if it fits.
    fn take(&self, tag: u64, now: u64, g: Gcra) -> (Taken, bool) {
        // A slot can change hands between finding it and taking from it; look again, a few times.
        for _ in 0..4 {
            // A new key's first event always fits (a burst is at least one).
            let slot = match self.slot(tag, now, now.saturating_add(g.interval)) {
                None => continue,
                Some(Slot::Claimed(slot, evicted)) => return (Taken::Allowed { slot }, evicted),
                Some(Slot::Found(slot)) => slot,
            };
            let cell = &self.cells[slot];
            let mut current = cell.load(Ordering::Acquire);
            loop {
                let next = tat_for(current, tag).max(now).saturating_add(g.interval);
                let ahead = next - now;
                if ahead > g.tolerance {
                    let wait = (ahead - g.tolerance) << TICK_SHIFT;
                    return (
                        Taken::Refused {
                            wait: Duration::from_nanos(wait),
                        },
                        false,
                    );
                }
                match cell.compare_exchange_weak(
                    current,
                    pack(next, tag),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return (Taken::Allowed { slot }, false),
                    Err(seen) => current = seen,
                }
                if self.keys[slot].load(Ordering::Acquire) != tag {
                    break;
                }
            }
        }
        // Lost every race for this set: let the event through rather than refuse on contention.
        (Taken::Allowed { slot: usize::MAX }, false)
    }

    /// Gives back one event taken from `slot` for `tag` (a reserved failure that did not happen).
    fn give_back(&self, slot: usize, tag: u64, g: Gcra) {
        let Some(cell) = self.cells.get(slot) else {
            return;
        };
        let _ = cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
            (c & TAG_MASK == tag & TAG_MASK && self.keys[slot].load(Ordering::Acquire) == tag)
                .then(|| pack((c >> 8).saturating_sub(g.interval), tag))
        });
    }

    /// Slots holding state (TAT still ahead of `now`): what the table remembers.
    fn in_use(&self, now: u64) -> usize {
        (0..self.capacity())
            .filter(|&i| {
                self.keys[i].load(Ordering::Relaxed) != 0
                    && self.cells[i].load(Ordering::Relaxed) >> 8 > now
            })
            .count()
    }
}

/// A key's 64-bit tag. Keys are hashed with one random seed per process, so nobody can aim addresses
/// at one set, and a tag stays valid across limiters (an identity may keep its own, see
/// [`Limiter::request_by`]).
pub fn key_tag(key: impl Hash) -> u64 {
    static SEED: std::sync::OnceLock<foldhash::fast::RandomState> = std::sync::OnceLock::new();
    // 0 marks an unused slot.
    SEED.get_or_init(Default::default).hash_one(key) | 1
}

/// The process's abuse limiter. Its tables outlive config reloads (a reload does not forgive a
/// locked-out address); its parameters come from the current snapshot's `[limits]`.
pub struct Limiter {
    epoch: Instant,
    address_requests: RateTable,
    identity_requests: RateTable,
    failed_auth: RateTable,
    websockets: Mutex<WebsocketCounts>,
    table_size: usize,
}

#[derive(Default)]
struct WebsocketCounts {
    per_address: HashMap<IpAddr, usize>,
    total: usize,
}

impl Limiter {
    pub fn new(table_size: usize) -> Limiter {
        // An "off" config still gets a minimal table, so a reload that turns limits on works.
        let size = table_size.max(64);
        Limiter {
            epoch: Instant::now(),
            address_requests: RateTable::new(size),
            identity_requests: RateTable::new(size),
            failed_auth: RateTable::new(size),
            websockets: Mutex::new(WebsocketCounts::default()),
            table_size: size,
        }
    }

    /// The table size this limiter was built for (a reload with another size builds a new one).
    pub fn table_size(&self) -> usize {
        self.table_size
    }

    /// Ticks since the limiter's epoch.
    fn now(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.epoch).as_nanos() >> TICK_SHIFT) as u64 + 1
    }

    fn take(
        &self,
        table: &RateTable,
        kind: LimitKind,
        tag: u64,
        at: Instant,
        rate: RateLimit,
    ) -> Result<usize, Refusal> {
        let (taken, evicted) = table.take(tag, self.now(at), Gcra::new(rate));
        if evicted {
            crate::metrics::rate_limit_eviction(kind.code());
        }
        match taken {
            Taken::Allowed { slot } => Ok(slot),
            Taken::Refused { wait } => Err(refusal(kind, rate, wait)),
        }
    }

    /// One request from `address`.
    pub fn request_from(
        &self,
        cfg: &LimitsConfig,
        address: Option<IpAddr>,
        at: Instant,
    ) -> Result<(), Refusal> {
        let (Some(rate), Some(ip)) = (cfg.address_requests, address) else {
            return Ok(());
        };
        self.take(
            &self.address_requests,
            LimitKind::AddressRequests,
            key_tag(ip),
            at,
            rate,
        )
        .map(drop)
    }

    /// One request by `subject` (after identification).
    /// `tag` is [`key_tag`] of the subject, which a cached identity computes once.
    pub fn request_by(&self, cfg: &LimitsConfig, tag: u64, at: Instant) -> Result<(), Refusal> {
        let Some(rate) = cfg.identity_requests else {
            return Ok(());
        };
        self.take(
            &self.identity_requests,
            LimitKind::IdentityRequests,
            tag,
            at,
            rate,
        )
        .map(drop)
    }

    /// Reserves one failed authentication for `address` before a credential is verified; refused
    /// (429, before any signature check) when the address has used up its failures. Call
    /// [`AuthAttempt::succeeded`] when the credential turned out valid.
    pub fn auth_attempt(
        &self,
        cfg: &LimitsConfig,
        address: Option<IpAddr>,
        at: Instant,
    ) -> Result<AuthAttempt, Refusal> {
        let (Some(rate), Some(ip)) = (cfg.failed_auth, address) else {
            return Ok(AuthAttempt { reserved: None });
        };
        let tag = key_tag(ip);
        let slot = self.take(&self.failed_auth, LimitKind::FailedAuth, tag, at, rate)?;
        Ok(AuthAttempt {
            reserved: Some((slot, tag, Gcra::new(rate))),
        })
    }

    /// Gives back a reserved failure: the credential was valid (or was never judged).
    pub fn auth_succeeded(&self, attempt: AuthAttempt) {
        if let Some((slot, tag, g)) = attempt.reserved {
            self.failed_auth.give_back(slot, tag, g);
        }
    }

    /// Counts one WebSocket from `address` waiting for its in-band credential; the guard releases it.
    pub fn unauthenticated_websocket(
        self: &Arc<Self>,
        cfg: &LimitsConfig,
        address: Option<IpAddr>,
    ) -> Result<WebsocketGuard, Refusal> {
        let per_address = cfg.unauthenticated_websockets_per_address;
        let total = cfg.unauthenticated_websockets_total;
        if per_address == 0 && total == 0 {
            return Ok(WebsocketGuard {
                limiter: None,
                address,
            });
        }
        let mut counts = self
            .websockets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mine = address.map(|ip| counts.per_address.get(&ip).copied().unwrap_or(0));
        let over_address = per_address > 0 && mine.is_some_and(|n| n >= per_address);
        let over_total = total > 0 && counts.total >= total;
        if over_address || over_total {
            let (limit, scope) = if over_address {
                (per_address, "from this address")
            } else {
                (total, "in all")
            };
            let kind = LimitKind::UnauthenticatedWebsockets;
            crate::metrics::rate_limited(kind.code());
            let mut r = Refusal::rate_limited(
                kind.code(),
                format!(
                    "{limit} WebSockets {scope} are already waiting for their credential; authenticate one before opening more"
                ),
            );
            r.retry_after = Some(1);
            return Err(r);
        }
        counts.total += 1;
        if let Some(ip) = address {
            *counts.per_address.entry(ip).or_insert(0) += 1;
        }
        Ok(WebsocketGuard {
            limiter: Some(self.clone()),
            address,
        })
    }

    /// Entries holding state and capacity, per table, for the metrics.
    pub fn occupancy(&self) -> [(&'static str, usize, usize); 3] {
        let now = self.now(Instant::now());
        [
            (
                LimitKind::AddressRequests.code(),
                self.address_requests.in_use(now),
                self.address_requests.capacity(),
            ),
            (
                LimitKind::IdentityRequests.code(),
                self.identity_requests.in_use(now),
                self.identity_requests.capacity(),
            ),
            (
                LimitKind::FailedAuth.code(),
                self.failed_auth.in_use(now),
                self.failed_auth.capacity(),
            ),
        ]
    }
}

/// A failed authentication reserved before verification; dropped as is, the failure stands.
#[must_use = "give a valid credential's reservation back with Limiter::auth_succeeded"]
pub struct AuthAttempt {
    reserved: Option<(usize, u64, Gcra)>,
}

/// One unauthenticated WebSocket counted against its address until dropped.
pub struct WebsocketGuard {
    limiter: Option<Arc<Limiter>>,
    address: Option<IpAddr>,
}

impl Drop for WebsocketGuard {
    fn drop(&mut self) {
        let Some(limiter) = self.limiter.take() else {
            return;
        };
        let mut counts = limiter
            .websockets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(ip) = self.address {
            if let Some(n) = counts.per_address.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    counts.per_address.remove(&ip);
                }
            }
        }
    }
}

/// The contract's 429: which limit, how to get under it, and `Retry-After` in whole seconds.
fn refusal(kind: LimitKind, rate: RateLimit, wait: Duration) -> Refusal {
    crate::metrics::rate_limited(kind.code());
    let what = match kind {
        LimitKind::AddressRequests => "requests from this address",
        LimitKind::IdentityRequests => "requests by this identity",
        LimitKind::FailedAuth => "failed authentications from this address",
        LimitKind::UnauthenticatedWebsockets => "unauthenticated WebSockets from this address",
    };
    let per = match rate.period.as_secs() {
        1 => "second".to_string(),
        60 => "minute".to_string(),
        3600 => "hour".to_string(),
        s => format!("{s} s"),
    };
    let mut r = Refusal::rate_limited(
        kind.code(),
        format!(
            "too many {what}: the limit is {} per {per} (bursts of {}); retry later",
            rate.count, rate.burst
        ),
    );
    r.retry_after = Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn cfg(address: Option<RateLimit>, failed: Option<RateLimit>) -> LimitsConfig {
        LimitsConfig {
            address_requests: address,
            identity_requests: Some(RateLimit {
                count: 2,
                period: Duration::from_secs(1),
                burst: 2,
            }),
            failed_auth: failed,
            unauthenticated_websockets_per_address: 2,
            unauthenticated_websockets_total: 3,
            table_size: 64,
        }
    }

    fn per_minute(count: u64, burst: u64) -> Option<RateLimit> {
        Some(RateLimit {
            count,
            period: Duration::from_secs(60),
            burst,
        })
    }

    fn ip(n: u32) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::from(n)))
    }

    #[test]
    fn a_burst_is_allowed_then_refused_with_retry_after_then_refilled() {
        let l = Limiter::new(64);
        let c = cfg(per_minute(60, 5), None);
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(l.request_from(&c, ip(1), t0).is_ok(), "request {i}");
        }
        let r = l.request_from(&c, ip(1), t0).unwrap_err();
        assert_eq!(r.status(), 429);
        assert_eq!(r.code, "address_requests");
        assert_eq!(r.retry_after, Some(1));
        // Another address has its own bucket.
        assert!(l.request_from(&c, ip(2), t0).is_ok());
        // One interval later (60/min: 1 s) one more fits, and only one.
        let t1 = t0 + Duration::from_secs(1);
        assert!(l.request_from(&c, ip(1), t1).is_ok());
        assert!(l.request_from(&c, ip(1), t1).is_err());
    }

    #[test]
    fn failed_auth_reservations_are_given_back_when_the_credential_is_valid() {
        let l = Limiter::new(64);
        let c = cfg(None, per_minute(3, 3));
        let t = Instant::now();
        // Valid credentials never use up the failure budget.
        for _ in 0..10 {
            let a = l.auth_attempt(&c, ip(7), t).unwrap();
            l.auth_succeeded(a);
        }
        for _ in 0..3 {
            let _failed = l.auth_attempt(&c, ip(7), t).unwrap();
        }
        let r = l.auth_attempt(&c, ip(7), t).err().unwrap();
        assert_eq!(r.code, "failed_auth");
        assert_eq!(r.retry_after, Some(20));
        // No address (a unix-socket peer without forwarding headers): not limited per address.
        assert!(l.auth_attempt(&c, None, t).is_ok());
    }

    #[test]
    fn identities_have_their_own_buckets() {
        let l = Limiter::new(64);
        let c = cfg(None, None);
        let t = Instant::now();
        let (alice, bob) = (key_tag("alice"), key_tag("bob"));
        assert!(l.request_by(&c, alice, t).is_ok());
        assert!(l.request_by(&c, alice, t).is_ok());
        assert_eq!(
            l.request_by(&c, alice, t).unwrap_err().code,
            "identity_requests"
        );
        assert!(l.request_by(&c, bob, t).is_ok());
    }

    #[test]
    fn the_table_never_grows_and_idle_keys_cost_nothing() {
        let l = Limiter::new(64);
        let c = cfg(per_minute(1, 1), None);
        let t = Instant::now();
        for n in 0..100_000 {
            let _ = l.request_from(&c, ip(n), t);
        }
        let [(_, used, capacity), ..] = l.occupancy();
        assert_eq!(capacity, 64);
        assert!(used <= capacity);
        // A minute later every bucket is idle again: nothing is remembered.
        let later = t + Duration::from_secs(61);
        assert_eq!(l.address_requests.in_use(l.now(later)), 0);
    }

    #[test]
    fn eviction_takes_the_least_busy_entry_so_recent_keys_are_remembered() {
        let l = Limiter::new(1024);
        let c = cfg(
            Some(RateLimit {
                count: 1,
                period: Duration::from_secs(3600),
                burst: 1,
            }),
            None,
        );
        let t = Instant::now();
        for n in 0..100_000 {
            assert!(l
                .request_from(&c, ip(n), t + Duration::from_micros(n.into()))
                .is_ok());
        }
        // (Asking about a forgotten key claims a slot too, so ask only about the newest.)
        let later = t + Duration::from_secs(1);
        assert!(l.request_from(&c, ip(99_999), later).is_err());
        assert!(l.request_from(&c, ip(99_998), later).is_err());
    }

    #[test]
    fn unauthenticated_websockets_are_capped_per_address_and_in_all() {
        let l = Arc::new(Limiter::new(64));
        let c = cfg(None, None);
        let a1 = l.unauthenticated_websocket(&c, ip(1)).unwrap();
        let _a2 = l.unauthenticated_websocket(&c, ip(1)).unwrap();
        let r = l.unauthenticated_websocket(&c, ip(1)).err().unwrap();
        assert_eq!(r.code, "unauthenticated_websockets");
        let _b1 = l.unauthenticated_websocket(&c, ip(2)).unwrap();
        // Three in all: the total cap holds for a fresh address too.
        assert!(l.unauthenticated_websocket(&c, ip(3)).is_err());
        drop(a1);
        assert!(l.unauthenticated_websocket(&c, ip(1)).is_ok());
    }

    #[test]
    fn racing_new_keys_never_inherit_each_others_state() {
        // Every key is new and sends once, with a burst of one: any refusal means a key took over a
        // slot with another key's TAT (the race two claims of one victim used to have).
        let l = Arc::new(Limiter::new(64));
        let c = cfg(per_minute(1, 1), None);
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let (l, c) = (l.clone(), c.clone());
                std::thread::spawn(move || {
                    (0..20_000u32)
                        .filter(|n| l.request_from(&c, ip(t << 24 | n), Instant::now()).is_err())
                        .count()
                })
            })
            .collect();
        let refused: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(refused, 0);
    }

    #[test]
    fn a_gcra_bucket_allows_exactly_its_rate_over_time() {
        let table = RateTable::new(64);
        let g = Gcra::new(RateLimit {
            count: 10,
            period: Duration::from_secs(1),
            burst: 10,
        });
        let mut allowed = 0;
        // 10 s of one attempt per millisecond: 10 at once, then 10 per second.
        for ms in 0..10_000u64 {
            let now = 1 + ((ms * 1_000_000) >> TICK_SHIFT);
            if matches!(table.take(42 << 8, now, g).0, Taken::Allowed { .. }) {
                allowed += 1;
            }
        }
        assert!((109..=111).contains(&allowed), "{allowed}");
    }
}
