//! Authentication policy, without HTTP: password hashes, session cookies,
//! the server-side session table, API tokens,
//! and the limits that keep a guessing flood from hurting logged-in users.
//! The login page that uses it is [`crate::front::login`].

pub mod password;
pub mod session;
pub mod sessions;
pub mod tokens;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use password::PasswordHash;

/// At most this many argon2 verifications run at once (each takes a core for
/// tens of milliseconds); more wait their turn, briefly.
const ARGON2_SLOTS: usize = 2;
const ARGON2_WAIT: Duration = Duration::from_secs(5);
/// Tracked client addresses; beyond this the oldest windows are dropped.
const MAX_TRACKED: usize = 100_000;

/// Per-address login attempt counting and the global argon2 slots.
pub struct LoginGuard {
    attempts: Mutex<HashMap<IpAddr, Window>>,
    argon2: Arc<Semaphore>,
}

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

/// The outcome of checking a password.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Rejected,
    /// Too many attempts from this address: try again after this long.
    Limited(Duration),
    /// The server is too busy verifying other attempts.
    Busy,
}

impl Default for LoginGuard {
    fn default() -> Self {
        LoginGuard {
            attempts: Mutex::new(HashMap::new()),
            argon2: Arc::new(Semaphore::new(ARGON2_SLOTS)),
        }
    }
}

impl LoginGuard {
    /// Counts an attempt by `client` before its password is checked, so that
    /// many guesses sent at once cannot get past the limit. Returns how long
    /// to wait when the client has used up its attempts.
    fn begin(&self, client: IpAddr, max: u32, window: Duration) -> Option<Duration> {
        let mut attempts = self.attempts.lock().ok()?;
        if attempts.len() >= MAX_TRACKED {
            attempts.retain(|_, w| w.start.elapsed() < window);
        }
        let now = Instant::now();
        let w = attempts.entry(client).or_insert(Window {
            start: now,
            failures: 0,
        });
        let elapsed = now.duration_since(w.start);
        if elapsed >= window {
            *w = Window {
                start: now,
                failures: 0,
            };
        } else if w.failures >= max {
            return Some(window - elapsed);
        }
        w.failures += 1;
        None
    }

    /// Gives back an attempt that was never checked (the server was too busy).
    fn refund(&self, client: IpAddr) {
        if let Ok(mut attempts) = self.attempts.lock() {
            if let Some(w) = attempts.get_mut(&client) {
                w.failures = w.failures.saturating_sub(1);
            }
        }
    }

    fn clear(&self, client: IpAddr) {
        if let Ok(mut attempts) = self.attempts.lock() {
            attempts.remove(&client);
        }
    }

    /// Checks `password` for a client at `ip`, counting failures against it
    /// (an IPv6 client is counted with the rest of its /64).
    pub async fn check(
        &self,
        hash: &PasswordHash,
        password: String,
        ip: IpAddr,
        max: u32,
        window: Duration,
    ) -> Verdict {
        let client = rate_key(ip);
        if let Some(wait) = self.begin(client, max, window) {
            return Verdict::Limited(wait);
        }
        let ok =
            if hash.is_slow() {
                let permit =
                    match tokio::time::timeout(ARGON2_WAIT, self.argon2.clone().acquire_owned())
                        .await
                    {
                        Ok(Ok(p)) => p,
                        _ => {
                            self.refund(client);
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
            self.clear(client);
            Verdict::Accepted
        } else {
            Verdict::Rejected
        }
    }
}

impl LoginGuard {
    /// How long `ip` must wait when it has used up its attempts (wrong
    /// passwords and wrong API tokens alike); `None` if it may try.
    pub fn limited(&self, ip: IpAddr, max: u32, window: Duration) -> Option<Duration> {
        let attempts = self.attempts.lock().ok()?;
        let w = attempts.get(&rate_key(ip))?;
        let elapsed = w.start.elapsed();
        (elapsed < window && w.failures >= max).then(|| window - elapsed)
    }

    /// Counts a wrong API token against `ip`, as a wrong password counts.
    pub fn token_failed(&self, ip: IpAddr, max: u32, window: Duration) {
        let _ = self.begin(rate_key(ip), max, window);
    }
}

/// The unit of rate limiting: an IPv4 address, or an IPv6 /64 (one host
/// usually holds a whole /64, so counting single IPv6 addresses would let it
/// guess without limit).
fn rate_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "sha1:0e112c3ddfce:a68df677475c2b47b6e86d0467eec97ac5f4b85a";

    #[tokio::test]
    async fn concurrent_guesses_cannot_overrun_the_limit() {
        let guard = std::sync::Arc::new(LoginGuard::default());
        let hash: PasswordHash = HASH.parse().unwrap();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (guard, hash) = (guard.clone(), hash.clone());
            tasks.push(tokio::spawn(async move {
                guard
                    .check(&hash, "wrong".into(), ip, 5, Duration::from_secs(60))
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
            .check(&hash, "mypassword".into(), ip, 5, Duration::from_secs(60))
            .await;
        assert!(matches!(v, Verdict::Limited(_)), "{v:?}");
        // Another address is not affected.
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let v = guard
            .check(
                &hash,
                "mypassword".into(),
                other,
                5,
                Duration::from_secs(60),
            )
            .await;
        assert_eq!(v, Verdict::Accepted);
    }

    #[test]
    fn ipv6_is_counted_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(rate_key(a), rate_key(b));
        assert_ne!(rate_key(a), rate_key(c));
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(rate_key(v4), v4);
    }
}
