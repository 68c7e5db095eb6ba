//! Rate limits: how often a client may try to sign in, register, mutate, post and open
//! sockets, with governor's keyed GCRA limiters.
//!
//! Every limit is generous enough that no person or ordinary client meets it (a burst
//! of 30 messages passes); they slow brute force and floods. A limited operation fails
//! with `RATE_LIMITED` and `extensions.retryAfter` (seconds). Limiters are per node and
//! in memory: keys idle long enough to be indistinguishable from new ones are pruned
//! every half minute, so memory follows the number of recently active clients.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use uuid::Uuid;

/// How often idle keys are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

/// A refusal: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

impl Limited {
    /// Whole seconds, rounded up, as `Retry-After` and `retryAfter` give it.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs();
        if self.retry_after.subsec_nanos() > 0 {
            secs + 1
        } else {
            secs.max(1)
        }
    }
}

/// A client's address as limits count it: IPv6 by its /64, which one host holds whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpKey(u128);

impl From<IpAddr> for IpKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(u128::from(v4.to_ipv6_mapped())),
            IpAddr::V6(v6) => Self(u128::from(v6) & !u128::from(u64::MAX)),
        }
    }
}

/// Who is asking, for limits that count per caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    User(Uuid),
    Anonymous(IpKey),
}

/// The client's address: the socket peer, or, when the peer is a trusted proxy, the
/// nearest address in `X-Forwarded-For` that is not one.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.ip().to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect::<Vec<_>>();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

/// One keyed limiter: `burst` at once, then one more every `every`.
struct Limiter<K: Hash + Eq + Clone> {
    inner: DefaultKeyedRateLimiter<K>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn new(burst: u32, every: Duration) -> Self {
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(every)
            .unwrap_or_else(|| Quota::per_second(burst))
            .allow_burst(burst);
        Self {
            inner: RateLimiter::keyed(quota),
        }
    }

    /// Takes `n` cells for `key`, or says how long until they would be there.
    fn take(&self, key: &K, n: u32) -> Result<(), Limited> {
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        let now = DefaultClock::default().now();
        match self.inner.check_key_n(key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Limited {
                retry_after: not_until.wait_time_from(now),
            }),
            // More at once than the burst allows ever: as long as a full burst takes.
            Err(_) => Err(Limited {
                retry_after: Duration::from_secs(60),
            }),
        }
    }

    fn prune(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.inner.len()
    }
}

/// A limiter of failures: trying costs nothing, failing costs a cell, and once the
/// cells are spent, trying is refused until one comes back.
struct Failures<K: Hash + Eq + Clone> {
    limiter: Limiter<K>,
    blocked: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Clone> Failures<K> {
    fn new(burst: u32, every: Duration) -> Self {
        Self {
            limiter: Limiter::new(burst, every),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    fn blocked(&self) -> std::sync::MutexGuard<'_, HashMap<K, Instant>> {
        self.blocked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check(&self, key: &K) -> Result<(), Limited> {
        match self.blocked().get(key) {
            Some(until) if *until > Instant::now() => Err(Limited {
                retry_after: until.saturating_duration_since(Instant::now()),
            }),
            _ => Ok(()),
        }
    }

    fn failed(&self, key: &K) {
        if let Err(limited) = self.limiter.take(key, 1) {
            self.blocked()
                .insert(key.clone(), Instant::now() + limited.retry_after);
        }
    }

    fn prune(&self) {
        self.limiter.prune();
        let now = Instant::now();
        let mut blocked = self.blocked();
        blocked.retain(|_, until| *until > now);
        blocked.shrink_to_fit();
    }
}

/// Every limit of one node.
pub struct RateLimits {
    enabled: bool,
    login_failures_by_account: Failures<String>,
    login_failures_by_ip: Failures<IpKey>,
    registrations_by_ip: Limiter<IpKey>,
    mutations: Limiter<Caller>,
    messages: Limiter<Uuid>,
    connects_by_ip: Limiter<IpKey>,
}

impl RateLimits {
    /// The documented defaults (README, "Rate limits"); `enabled: false` lets all through.
    pub fn start(enabled: bool) -> Arc<Self> {
        let limits = Arc::new(Self {
            enabled,
            login_failures_by_account: Failures::new(10, Duration::from_secs(30)),
            login_failures_by_ip: Failures::new(50, Duration::from_secs(6)),
            registrations_by_ip: Limiter::new(10, Duration::from_secs(360)),
            mutations: Limiter::new(120, Duration::from_millis(50)),
            messages: Limiter::new(30, Duration::from_millis(250)),
            connects_by_ip: Limiter::new(30, Duration::from_secs(1)),
        });
        if enabled {
            tokio::spawn(prune(Arc::downgrade(&limits)));
        }
        limits
    }

    /// Runs `check` when limits are on, counting a refusal under `limit`.
    fn gate(
        &self,
        limit: &'static str,
        check: impl FnOnce() -> Result<(), Limited>,
    ) -> Result<(), Limited> {
        if !self.enabled {
            return Ok(());
        }
        let outcome = check();
        if outcome.is_err() {
            crate::metrics::rate_limited(limit);
        }
        outcome
    }

    /// Before checking a password: refused while the account or the address has failed
    /// too often. `account` is the username as typed, normalised.
    pub fn may_try_login(&self, account: &str, ip: IpAddr) -> Result<(), Limited> {
        self.gate("login", || {
            self.login_failures_by_ip.check(&IpKey::from(ip))?;
            self.login_failures_by_account.check(&account.to_owned())
        })
    }

    /// A password check failed.
    pub fn login_failed(&self, account: &str, ip: IpAddr) {
        if self.enabled {
            self.login_failures_by_ip.failed(&IpKey::from(ip));
            self.login_failures_by_account.failed(&account.to_owned());
        }
    }

    pub fn register(&self, ip: IpAddr) -> Result<(), Limited> {
        self.gate("register", || {
            self.registrations_by_ip.take(&IpKey::from(ip), 1)
        })
    }

    /// An operation with `mutations` mutation fields, `messages` of them `sendMessage`.
    pub fn mutate(&self, caller: Caller, mutations: u32, messages: u32) -> Result<(), Limited> {
        self.gate("mutation", || {
            if let Caller::User(user) = caller {
                self.messages.take(&user, messages)?;
            }
            self.mutations.take(&caller, mutations)
        })
    }

    pub fn connect(&self, ip: IpAddr) -> Result<(), Limited> {
        self.gate("connect", || self.connects_by_ip.take(&IpKey::from(ip), 1))
    }

    fn prune(&self) {
        self.login_failures_by_account.prune();
        self.login_failures_by_ip.prune();
        self.registrations_by_ip.prune();
        self.mutations.prune();
        self.messages.prune();
        self.connects_by_ip.prune();
    }

    /// Keys held across all limiters (for tests and metrics).
    pub fn keys(&self) -> usize {
        self.login_failures_by_account.limiter.len()
            + self.login_failures_by_ip.limiter.len()
            + self.registrations_by_ip.len()
            + self.mutations.len()
            + self.messages.len()
            + self.connects_by_ip.len()
    }
}

async fn prune(limits: Weak<RateLimits>) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    loop {
        every.tick().await;
        match limits.upgrade() {
            Some(limits) => limits.prune(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "203.0.113.9, 10.0.0.2".parse().expect("header"),
        );
        let proxy: SocketAddr = "10.0.0.1:4000".parse().expect("addr");
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        assert_eq!(
            client_ip(proxy, &headers, &trusted),
            "203.0.113.9".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(client_ip(proxy, &headers, &[]), proxy.ip());
        let stranger: SocketAddr = "198.51.100.7:5000".parse().expect("addr");
        assert_eq!(client_ip(stranger, &headers, &trusted), stranger.ip());
    }

    #[test]
    fn an_ipv6_host_counts_once_for_its_whole_prefix() {
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(IpKey::from(a), IpKey::from(b));
        assert_ne!(IpKey::from(a), IpKey::from(c));
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds_and_says_when_to_retry() {
        let limiter = Limiter::new(3, Duration::from_secs(10));
        for _ in 0..3 {
            assert_eq!(limiter.take(&1, 1), Ok(()));
        }
        let limited = limiter.take(&1, 1).expect_err("over the burst");
        assert!(limited.retry_after_secs() >= 1 && limited.retry_after_secs() <= 10);
        assert_eq!(limiter.take(&2, 1), Ok(()), "other keys are not affected");
    }

    #[test]
    fn failures_block_trying_only_once_spent() {
        let failures = Failures::new(2, Duration::from_secs(60));
        for _ in 0..2 {
            assert_eq!(failures.check(&"alice"), Ok(()));
            failures.failed(&"alice");
        }
        assert_eq!(
            failures.check(&"alice"),
            Ok(()),
            "the spent burst is not yet known"
        );
        failures.failed(&"alice");
        assert!(failures.check(&"alice").is_err());
        assert_eq!(failures.check(&"bob"), Ok(()));
    }

    #[test]
    fn idle_keys_are_pruned() {
        let limiter = Limiter::new(1, Duration::from_millis(5));
        for key in 0..1_000 {
            limiter.take(&key, 1).expect("first use");
        }
        assert_eq!(limiter.len(), 1_000);
        std::thread::sleep(Duration::from_millis(20));
        limiter.prune();
        assert_eq!(limiter.len(), 0);
    }
}
