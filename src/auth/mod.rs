//! Authentication: password hashes, session cookies, the login page, and
//! the limits that keep a guessing flood from hurting logged-in users.

pub mod login;
pub mod password;
pub mod session;

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
    /// When `ip` may try again, if it has used up its attempts.
    pub fn retry_after(&self, ip: IpAddr, max: u32, window: Duration) -> Option<Duration> {
        let attempts = self.attempts.lock().ok()?;
        let w = attempts.get(&ip)?;
        let elapsed = w.start.elapsed();
        (elapsed < window && w.failures >= max).then(|| window - elapsed)
    }

    fn record_failure(&self, ip: IpAddr, window: Duration) {
        let Ok(mut attempts) = self.attempts.lock() else {
            return;
        };
        if attempts.len() >= MAX_TRACKED {
            attempts.retain(|_, w| w.start.elapsed() < window);
        }
        let now = Instant::now();
        let w = attempts.entry(ip).or_insert(Window {
            start: now,
            failures: 0,
        });
        if now.duration_since(w.start) >= window {
            *w = Window {
                start: now,
                failures: 0,
            };
        }
        w.failures += 1;
    }

    fn clear(&self, ip: IpAddr) {
        if let Ok(mut attempts) = self.attempts.lock() {
            attempts.remove(&ip);
        }
    }

    /// Checks `password` for a client at `ip`, counting failures against it.
    pub async fn check(
        &self,
        hash: &PasswordHash,
        password: String,
        ip: IpAddr,
        max: u32,
        window: Duration,
    ) -> Verdict {
        if let Some(wait) = self.retry_after(ip, max, window) {
            return Verdict::Limited(wait);
        }
        let ok =
            if hash.is_slow() {
                let permit =
                    match tokio::time::timeout(ARGON2_WAIT, self.argon2.clone().acquire_owned())
                        .await
                    {
                        Ok(Ok(p)) => p,
                        _ => return Verdict::Busy,
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
            self.clear(ip);
            Verdict::Accepted
        } else {
            self.record_failure(ip, window);
            Verdict::Rejected
        }
    }
}
