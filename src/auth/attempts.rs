//! Login attempt limits: what keeps a guessing flood from finding the
//! password or from taking the CPU away from logged-in users.
//!
//! - Attempts are counted in nested networks, each with its own threshold:
//!   an IPv4 address (`auth.login_attempts` per `auth.login_window`) and its
//!   /24 (4×); an IPv6 /64 (1×), /56 (4×) and /48 (16×). A home /56 or a
//!   tunnel /48 then gets a few times one client's budget, not one per /64.
//! - A global budget (50× a client's, at least 100) bounds the guesses of a
//!   flood spread over many networks; past it every untrusted login waits,
//!   for a window at first and twice as long each time it is exceeded again.
//! - The table is bounded: past [`MAX_TRACKED`] networks the one whose
//!   window started first is evicted (in constant time, not a scan).
//! - argon2 verifications run on half the cores (one on two cores), so a
//!   flood cannot take every core; clients in `auth.trusted_clients` are
//!   not counted, not limited, and have an argon2 slot of their own, so the
//!   owner can always log in from there.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::password::PasswordHash;

const ARGON2_WAIT: Duration = Duration::from_secs(5);
/// Networks tracked at most.
pub const MAX_TRACKED: usize = 100_000;
/// The longest a global block lasts, in windows.
const MAX_BACKOFF_WINDOWS: u32 = 16;

/// The configured limits (`auth.login_attempts`, `auth.login_window`).
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    pub attempts: u32,
    pub window: Duration,
}

impl LoginLimits {
    fn global(&self) -> u32 {
        self.attempts.saturating_mul(50).max(100)
    }
}

/// The outcome of checking a password.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Rejected,
    /// Too many attempts from this client's network, or from everyone: try
    /// again after this long.
    Limited(Duration),
    /// The server is too busy verifying other attempts.
    Busy,
}

/// Login attempt counting and the argon2 slots.
pub struct LoginGuard {
    table: Mutex<Table>,
    argon2: Arc<Semaphore>,
    trusted_argon2: Arc<Semaphore>,
}

/// A network: its first address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Net {
    bits: u128,
    len: u8,
    v6: bool,
}

/// The networks `ip` is counted in, each with its threshold multiplier.
fn nets(ip: IpAddr) -> Vec<(Net, u32)> {
    let (bits, v6, levels): (u128, bool, &[(u8, u32)]) = match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, false, &[(32, 1), (24, 4)]),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (u128::from(u32::from(v4)) << 96, false, &[(32, 1), (24, 4)]),
            None => (u128::from(v6), true, &[(64, 1), (56, 4), (48, 16)]),
        },
    };
    levels
        .iter()
        .map(|&(len, times)| {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            (
                Net {
                    bits: bits & mask,
                    len,
                    v6,
                },
                times,
            )
        })
        .collect()
}

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    attempts: u32,
}

struct Table {
    nets: HashMap<Net, Window>,
    /// Windows in the order they started (stale entries are skipped).
    order: VecDeque<(Instant, Net)>,
    capacity: usize,
    global: Option<Window>,
    blocked_until: Option<Instant>,
    backoff_windows: u32,
}

impl Table {
    fn new(capacity: usize) -> Table {
        Table {
            nets: HashMap::new(),
            order: VecDeque::new(),
            capacity,
            global: None,
            blocked_until: None,
            backoff_windows: 1,
        }
    }

    /// Drops windows that ended, oldest first, a few per call.
    fn expire(&mut self, now: Instant, window: Duration) {
        for _ in 0..8 {
            match self.order.front() {
                Some(&(start, _)) if now.duration_since(start) >= window => {}
                _ => break,
            }
            if let Some((start, net)) = self.order.pop_front() {
                if self.nets.get(&net).is_some_and(|w| w.start == start) {
                    self.nets.remove(&net);
                }
            }
        }
    }

    /// Makes room for one more network: evicts the oldest window.
    fn evict_one(&mut self) {
        while let Some((start, net)) = self.order.pop_front() {
            if self.nets.get(&net).is_some_and(|w| w.start == start) {
                self.nets.remove(&net);
                return;
            }
        }
        // The order lost track (cannot happen): start over rather than grow.
        self.nets.clear();
    }

    /// How long `ip` must wait, if it must.
    fn wait(&mut self, ip: IpAddr, limits: &LoginLimits, now: Instant) -> Option<Duration> {
        if let Some(until) = self.blocked_until {
            if until > now {
                return Some(until - now);
            }
            self.blocked_until = None;
        }
        nets(ip).into_iter().find_map(|(net, times)| {
            let w = self.nets.get(&net)?;
            let elapsed = now.duration_since(w.start);
            (elapsed < limits.window && w.attempts >= limits.attempts.saturating_mul(times))
                .then(|| limits.window - elapsed)
        })
    }

    fn count(&mut self, ip: IpAddr, limits: &LoginLimits, now: Instant) {
        for (net, _) in nets(ip) {
            let fresh = match self.nets.get_mut(&net) {
                Some(w) if now.duration_since(w.start) < limits.window => {
                    w.attempts += 1;
                    false
                }
                Some(_) => true,
                None => {
                    if self.nets.len() >= self.capacity {
                        self.evict_one();
                    }
                    true
                }
            };
            if fresh {
                self.nets.insert(
                    net,
                    Window {
                        start: now,
                        attempts: 1,
                    },
                );
                self.order.push_back((now, net));
            }
        }
        if self.order.len() > self.capacity.saturating_mul(4) {
            self.order.pop_front();
        }
        let global = match self.global {
            Some(g) if now.duration_since(g.start) < limits.window => Window {
                attempts: g.attempts + 1,
                ..g
            },
            ended => {
                // A whole window without a block: the backoff starts over.
                if ended.is_some() && self.blocked_until.is_none() {
                    self.backoff_windows = 1;
                }
                Window {
                    start: now,
                    attempts: 1,
                }
            }
        };
        self.global = Some(global);
        if global.attempts >= limits.global() {
            let block = limits.window * self.backoff_windows;
            self.blocked_until = Some(now + block);
            self.backoff_windows = (self.backoff_windows * 2).min(MAX_BACKOFF_WINDOWS);
            self.global = None;
            tracing::warn!(
                "{} login attempts within {}s from many addresses: every login outside auth.trusted_clients waits {}s",
                limits.global(),
                limits.window.as_secs(),
                block.as_secs()
            );
        }
    }

    fn refund(&mut self, ip: IpAddr) {
        for (net, _) in nets(ip) {
            if let Some(w) = self.nets.get_mut(&net) {
                w.attempts = w.attempts.saturating_sub(1);
            }
        }
        if let Some(g) = self.global.as_mut() {
            g.attempts = g.attempts.saturating_sub(1);
        }
    }
}

impl Default for LoginGuard {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        LoginGuard::new(argon2_slots(cores), MAX_TRACKED)
    }
}

/// Half the cores, at least one: the rest stay with logged-in users.
pub fn argon2_slots(cores: usize) -> usize {
    (cores / 2).max(1)
}

impl LoginGuard {
    pub fn new(argon2_slots: usize, capacity: usize) -> LoginGuard {
        LoginGuard {
            table: Mutex::new(Table::new(capacity.max(1))),
            argon2: Arc::new(Semaphore::new(argon2_slots.max(1))),
            trusted_argon2: Arc::new(Semaphore::new(1)),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long a client at `ip` must wait before its next attempt, if it
    /// must: checked before its form is even read.
    pub fn wait(&self, ip: IpAddr, trusted: bool, limits: &LoginLimits) -> Option<Duration> {
        if trusted {
            return None;
        }
        let now = Instant::now();
        let mut table = self.table();
        table.expire(now, limits.window);
        table.wait(ip, limits, now)
    }

    /// Counts an attempt by `ip` before its password is checked, so that
    /// many guesses sent at once cannot get past the limit.
    fn begin(&self, ip: IpAddr, limits: &LoginLimits) -> Option<Duration> {
        let now = Instant::now();
        let mut table = self.table();
        table.expire(now, limits.window);
        if let Some(wait) = table.wait(ip, limits, now) {
            return Some(wait);
        }
        table.count(ip, limits, now);
        None
    }

    /// How long a client at `ip` must wait before its next try (wrong
    /// passwords and wrong API tokens alike); `None` if it may try.
    pub fn limited(&self, ip: IpAddr, trusted: bool, limits: &LoginLimits) -> Option<Duration> {
        self.wait(ip, trusted, limits)
    }

    /// Counts a wrong API token against `ip`'s networks, as a wrong
    /// password counts.
    pub fn token_failed(&self, ip: IpAddr, trusted: bool, limits: &LoginLimits) {
        if !trusted {
            let _ = self.begin(ip, limits);
        }
    }

    /// Ends every lockout (`nbctl login unlock`).
    pub fn unlock_all(&self) -> usize {
        let mut table = self.table();
        let n = table.nets.len() + usize::from(table.blocked_until.is_some());
        let capacity = table.capacity;
        *table = Table::new(capacity);
        n
    }

    /// Networks currently tracked.
    pub fn tracked(&self) -> usize {
        self.table().nets.len()
    }

    /// Checks `password` for a client at `ip`, counting the attempt against
    /// its networks unless it is `trusted` (`auth.trusted_clients`).
    pub async fn check(
        &self,
        hash: &PasswordHash,
        password: String,
        ip: IpAddr,
        trusted: bool,
        limits: &LoginLimits,
    ) -> Verdict {
        if !trusted {
            if let Some(wait) = self.begin(ip, limits) {
                return Verdict::Limited(wait);
            }
        }
        let ok = if hash.is_slow() {
            let slots = if trusted {
                &self.trusted_argon2
            } else {
                &self.argon2
            };
            let permit =
                match tokio::time::timeout(ARGON2_WAIT, slots.clone().acquire_owned()).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        if !trusted {
                            self.table().refund(ip);
                        }
                        return Verdict::Busy;
                    }
                };
            let hash = hash.clone();
            let joined = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                hash.verify(&password)
            })
            .await;
            joined.unwrap_or(false)
        } else {
            hash.verify(&password)
        };
        if ok {
            if !trusted {
                // The client's own network starts afresh; the wider ones keep counting.
                let mut table = self.table();
                if let Some((net, _)) = nets(ip).into_iter().next() {
                    table.nets.remove(&net);
                }
            }
            Verdict::Accepted
        } else {
            Verdict::Rejected
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "sha1:0e112c3ddfce:a68df677475c2b47b6e86d0467eec97ac5f4b85a";
    const LIMITS: LoginLimits = LoginLimits {
        attempts: 5,
        window: Duration::from_secs(60),
    };

    fn hash() -> PasswordHash {
        HASH.parse().unwrap()
    }

    #[tokio::test]
    async fn concurrent_guesses_cannot_overrun_the_limit() {
        let guard = Arc::new(LoginGuard::default());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let guard = guard.clone();
            tasks.push(tokio::spawn(async move {
                guard
                    .check(&hash(), "wrong".into(), ip, false, &LIMITS)
                    .await
            }));
        }
        let mut rejected = 0;
        for t in tasks {
            match t.await.unwrap() {
                Verdict::Rejected => rejected += 1,
                Verdict::Limited(wait) => assert!(wait <= Duration::from_secs(60)),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(rejected, 5);
        // The right password is refused too while the address waits.
        let v = guard
            .check(&hash(), "mypassword".into(), ip, false, &LIMITS)
            .await;
        assert!(matches!(v, Verdict::Limited(_)), "{v:?}");
        assert!(guard.wait(ip, false, &LIMITS).is_some());
        // Another address is not affected, and neither is a trusted one.
        let other: IpAddr = "192.0.3.8".parse().unwrap();
        let v = guard
            .check(&hash(), "mypassword".into(), other, false, &LIMITS)
            .await;
        assert_eq!(v, Verdict::Accepted);
        let v = guard
            .check(&hash(), "mypassword".into(), ip, true, &LIMITS)
            .await;
        assert_eq!(v, Verdict::Accepted);
        // And an unlock lets the address in again.
        assert!(guard.unlock_all() > 0);
        let v = guard
            .check(&hash(), "mypassword".into(), ip, false, &LIMITS)
            .await;
        assert_eq!(v, Verdict::Accepted);
    }

    #[tokio::test]
    async fn a_flood_from_one_48_is_limited_as_a_whole() {
        let guard = LoginGuard::default();
        let mut rejected = 0;
        let mut limited = 0;
        for i in 0..300u32 {
            // 300 different /64s of 2001:db8:7::/48.
            let group = ((i % 256) << 8) | (i / 256);
            let ip: IpAddr = format!("2001:db8:7:{group:x}::1").parse().unwrap();
            match guard
                .check(&hash(), "wrong".into(), ip, false, &LIMITS)
                .await
            {
                Verdict::Rejected => rejected += 1,
                Verdict::Limited(_) => limited += 1,
                other => panic!("{other:?}"),
            }
        }
        // Each a /56 of its own (20 each); the /48 fills at 16 × 5 = 80.
        assert_eq!(rejected, 80);
        assert_eq!(limited, 220);
        // Another /48 is not affected.
        let v = guard
            .check(
                &hash(),
                "mypassword".into(),
                "2001:db8:8::1".parse().unwrap(),
                false,
                &LIMITS,
            )
            .await;
        assert_eq!(v, Verdict::Accepted);
    }

    #[tokio::test]
    async fn an_ipv4_24_shares_four_clients_budget() {
        let guard = LoginGuard::default();
        let mut rejected = 0;
        for i in 1..=100u8 {
            let ip: IpAddr = format!("198.51.100.{i}").parse().unwrap();
            if guard
                .check(&hash(), "wrong".into(), ip, false, &LIMITS)
                .await
                == Verdict::Rejected
            {
                rejected += 1;
            }
        }
        assert_eq!(rejected, 20);
    }

    #[tokio::test]
    async fn a_flood_over_many_networks_meets_the_global_budget() {
        let guard = LoginGuard::default();
        let mut rejected = 0;
        for i in 0..400u32 {
            let ip: IpAddr = std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8)).into();
            if guard
                .check(&hash(), "wrong".into(), ip, false, &LIMITS)
                .await
                == Verdict::Rejected
            {
                rejected += 1;
            }
        }
        assert_eq!(rejected, LIMITS.global() as usize);
        // Everyone untrusted waits now, even a first attempt; trusted clients do not.
        let fresh: IpAddr = "203.0.113.9".parse().unwrap();
        assert!(matches!(
            guard
                .check(&hash(), "mypassword".into(), fresh, false, &LIMITS)
                .await,
            Verdict::Limited(_)
        ));
        assert_eq!(
            guard
                .check(&hash(), "mypassword".into(), fresh, true, &LIMITS)
                .await,
            Verdict::Accepted
        );
    }

    #[tokio::test]
    async fn the_table_stays_bounded_and_evicts_the_oldest() {
        let guard = LoginGuard::new(1, 50);
        for i in 0..1000u32 {
            let ip: IpAddr = std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8)).into();
            guard.begin(
                ip,
                &LoginLimits {
                    attempts: 5,
                    window: Duration::from_secs(600),
                },
            );
            assert!(guard.tracked() <= 50);
        }
        assert!(guard.table().order.len() <= 200);
    }

    #[test]
    fn argon2_leaves_cores_to_users() {
        assert_eq!(argon2_slots(1), 1);
        assert_eq!(argon2_slots(2), 1);
        assert_eq!(argon2_slots(8), 4);
    }
}
