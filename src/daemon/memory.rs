//! Giving memory back to the system once connections close.
//!
//! glibc's allocator returns freed memory to the system only from the top of
//! each heap; what a burst of connections freed in the middle (TLS state,
//! buffers of every connection, one heap per worker thread) stays resident
//! for good. Measured: 1,000 idle WebSockets opened and closed left
//! notebookd at 5× its fresh RSS with no connection open. `malloc_trim`
//! hands the free pages of every heap back; it is called here a little
//! after connections closed, at most every [`EVERY`], never while nothing
//! changed (it walks every heap, holding each heap's lock).

use std::sync::Arc;
use std::time::Duration;

use crate::front::App;

/// How often closed connections are looked for.
const EVERY: Duration = Duration::from_secs(2);

/// Runs for the life of the daemon.
pub async fn release_after_closes(app: Arc<App>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closed = app.closed_connections();
    let mut websockets = app.upstream.open_websockets();
    loop {
        tick.tick().await;
        let now_closed = app.closed_connections();
        let now_websockets = app.upstream.open_websockets();
        if now_closed != closed || now_websockets < websockets {
            release_free_memory();
        }
        closed = now_closed;
        websockets = now_websockets;
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
