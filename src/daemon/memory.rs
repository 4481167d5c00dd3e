//! Giving memory back to the system once connections close.
//!
//! glibc's allocator returns freed memory to the system only from the top of
//! each heap; what a burst of connections freed in the middle (TLS state,
//! buffers of every connection, one heap per worker thread) stays resident
//! for good. Measured: 1,000 idle WebSockets opened and closed left
//! notebookd at 5× its fresh RSS with no connection open. `malloc_trim`
//! hands the free pages of every heap back; it is called here once a burst
//! of closes is over (no close for [`CHECK`]), and during a long stream of
//! closes at least every [`AT_MOST_DELAYED`]; never while nothing changed
//! (it walks every heap, holding each heap's lock).
//!
//! Closing is seen in two counters: served connections that ended (a
//! WebSocket's at its upgrade) and open WebSockets falling. The unused
//! connections to Jupyter that closed client connections left are closed
//! then too: they would keep their read buffers.
//!
//! Another allocator instead of glibc's was measured and not taken:
//! mimalloc 2.3 as the global allocator (`./dev bench --only
//! sockets,memory,api`, one run after the other) started at 23.5 MiB RSS
//! instead of 9.8, held 4.4× its fresh RSS once 9,500 idle WebSockets had
//! closed (glibc with the release here: 1.8×), and did not lower the CPU
//! per proxied request (1.08× nginx's, glibc 1.06× in the same hour).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::front::App;

/// How often the counters are looked at; a burst of closes is over when
/// one look finds nothing new.
const CHECK: Duration = Duration::from_millis(500);

/// The longest a release waits while closes keep coming.
const AT_MOST_DELAYED: Duration = Duration::from_secs(2);

/// Runs for the life of the daemon.
pub async fn release_after_closes(app: Arc<App>) {
    let mut tick = tokio::time::interval(CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut releases = Releases::new(counters(&app));
    loop {
        tick.tick().await;
        if releases.due(counters(&app), Instant::now()) {
            // Their buffers first, so that what they held goes back too.
            app.upstream.close_idle();
            release_free_memory();
        }
    }
}

fn counters(app: &App) -> Counters {
    Counters {
        closed: app.closed_connections(),
        websockets: app.upstream.open_websockets(),
    }
}

/// What [`Releases`] watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counters {
    closed: u64,
    websockets: usize,
}

/// When to release: after closes, once they stop (or have gone on for
/// [`AT_MOST_DELAYED`]).
struct Releases {
    last: Counters,
    /// The first close not yet followed by a release.
    pending_since: Option<Instant>,
}

impl Releases {
    fn new(now: Counters) -> Releases {
        Releases {
            last: now,
            pending_since: None,
        }
    }

    /// Looks at the counters; true when memory should be released now.
    fn due(&mut self, now: Counters, at: Instant) -> bool {
        let closed_some = now.closed != self.last.closed || now.websockets < self.last.websockets;
        self.last = now;
        match (closed_some, self.pending_since) {
            (true, None) => {
                self.pending_since = Some(at);
                false
            }
            (true, Some(since)) if at.duration_since(since) < AT_MOST_DELAYED => false,
            (false, None) => false,
            // Quiet again, or closing for a while already.
            (_, Some(_)) => {
                self.pending_since = None;
                true
            }
        }
    }
}

/// Above this size an allocation gets pages of its own from the kernel,
/// which go back to it when freed.
pub const MMAP_THRESHOLD: usize = 1 << 20;

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD`]. By default the
/// threshold rises to the size of each mmapped block freed (up to 32 MiB):
/// after the first login, every argon2 verification's 10 MiB comes from a
/// worker thread's heap, and a guessing flood then leaves tens of MiB there
/// (measured: 14 → 57 MiB after a 15-second flood from 100 addresses).
/// Nothing on the request path allocates a MiB at once, so only the
/// verifications (a few per second at most) pay for fresh pages.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune_allocator() {
    let threshold = libc::c_int::try_from(MMAP_THRESHOLD).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt takes no pointer; it sets one of the allocator's
    // parameters under its lock and may be called at any time.
    let set = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, threshold) };
    if set != 1 {
        tracing::debug!("mallopt(M_MMAP_THRESHOLD) was refused");
    }
}

/// Other allocators (musl's) map large blocks on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}

/// Returns the allocator's free pages to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointer and only changes the allocator's
    // own free lists (under their locks); any thread may call it at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators (musl's) give memory back on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(closed: u64, websockets: usize) -> Counters {
        Counters { closed, websockets }
    }

    #[test]
    fn releases_once_closes_stop_and_not_while_nothing_closes() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut r = Releases::new(c(0, 0));
        assert!(!r.due(c(0, 0), at(500)), "nothing happened");
        // WebSockets open: their upgrades count as closed HTTP connections.
        assert!(!r.due(c(3, 3), at(1000)));
        assert!(r.due(c(3, 3), at(1500)), "quiet again: release");
        assert!(!r.due(c(3, 3), at(2000)), "released already");
        // The WebSockets close: released at the first quiet look.
        assert!(!r.due(c(3, 1), at(2500)));
        assert!(!r.due(c(3, 0), at(3000)));
        assert!(r.due(c(3, 0), at(3500)));
        assert!(!r.due(c(3, 0), at(4000)));
    }

    #[test]
    fn a_long_stream_of_closes_releases_at_least_every_few_seconds() {
        let t0 = Instant::now();
        let mut r = Releases::new(c(0, 0));
        let mut released = Vec::new();
        for i in 1..=20u64 {
            if r.due(c(i * 10, 0), t0 + CHECK * i as u32) {
                released.push(i);
            }
        }
        assert!(!released.is_empty());
        let mut last = 0;
        for i in released {
            assert!(CHECK * (i - last) as u32 <= AT_MOST_DELAYED + CHECK);
            last = i;
        }
    }
}
