//! Per-connection HTTP limits that hyper does not enforce the way a
//! front door needs: the header read timeout (slowloris) answered with a
//! `408`, the idle keep-alive timeout, and the connection slot a WebSocket
//! keeps after its upgrade.
//!
//! A connection is in one [`Phase`] at a time:
//! - `Fresh`: accepted, no byte of a request yet; closed after
//!   `limits.header_read_timeout`.
//! - `Head`: the first bytes of a request arrived; the whole head must follow
//!   within `limits.header_read_timeout`, else `408 Request Timeout`.
//! - `Busy`: a request is being answered (bodies may take as long as they
//!   take: uploads, downloads, long polls, as long as they move; see below).
//! - `Idle`: the response is complete; the connection is closed after
//!   `limits.keep_alive_timeout` without a new request.
//! - `Upgraded`: a WebSocket; no limit here.
//!
//! [`TimedIo`] wraps the connection's stream and sees the bytes arrive;
//! the service marks `Busy` when hyper hands it a request, and a
//! [`ResponseBody`] marks `Idle` when hyper has sent the last byte of it.
//!
//! Two progress deadlines hold in every phase, each on its own timer so that
//! a silent peer cannot stop the clock: a write the client does not take
//! within `limits.send_timeout` fails the connection (hyper closes it; a
//! client that pipelines requests and never reads cannot hold it), and a
//! request body whose next bytes do not come within
//! `limits.body_read_timeout` fails with [`BodyTimedOut`] ([`ProgressBody`],
//! answered with a `408`).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

/// Sent when a request head does not arrive in time.
const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
X-Content-Type-Options: nosniff\r\n\
Connection: close\r\n\
Content-Length: 67\r\n\
\r\n\
The request headers took too long (limits.header_read_timeout).\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Fresh = 0,
    Head = 1,
    Busy = 2,
    Idle = 3,
    Upgraded = 4,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Fresh,
            1 => Phase::Head,
            2 => Phase::Busy,
            3 => Phase::Idle,
            _ => Phase::Upgraded,
        }
    }
}

/// The phase of one connection, shared by its stream, its service and its
/// response bodies (all polled by the one connection task).
#[derive(Default)]
pub struct ConnState {
    phase: AtomicU8,
    /// The connection task, parked while `Busy`: woken when the response ends
    /// so that the keep-alive clock starts even if the client stays silent.
    waker: Mutex<Option<Waker>>,
}

impl ConnState {
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    fn set(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Release);
    }

    /// hyper handed a complete request head to the service.
    pub fn request_started(&self) {
        self.set(Phase::Busy);
    }

    /// The response switched protocols: the stream is no longer HTTP.
    ///
    /// The parked waker goes: it is the connection task's, which ends with
    /// the upgrade, and a waker keeps a finished task's memory (its whole
    /// future, about 11 KiB) allocated for as long as it lives, here as
    /// long as the WebSocket.
    pub fn upgraded(&self) {
        self.set(Phase::Upgraded);
        if let Ok(mut w) = self.waker.lock() {
            *w = None;
        }
    }

    fn response_done(&self) {
        if self
            .phase
            .compare_exchange(
                Phase::Busy as u8,
                Phase::Idle as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            if let Some(w) = self.waker.lock().ok().and_then(|mut w| w.take()) {
                w.wake();
            }
        }
    }

    fn park(&self, cx: &Context<'_>) {
        if let Ok(mut w) = self.waker.lock() {
            match &*w {
                Some(old) if old.will_wake(cx.waker()) => {}
                _ => *w = Some(cx.waker().clone()),
            }
        }
    }
}

/// The connection's stream with the header-read, keep-alive and send clocks.
///
/// Once upgraded (a WebSocket, which may stay open and idle for days) it
/// keeps no timer it does not use: a registered timer holds the waker of
/// the task that last polled it, the connection task that ended with the
/// upgrade, and with it that task's memory.
pub struct TimedIo<I> {
    inner: I,
    state: Arc<ConnState>,
    header_timeout: Duration,
    keep_alive: Duration,
    /// The phase this stream last acted on (to notice `Busy` → `Idle`).
    seen: Phase,
    deadline: Option<Instant>,
    /// The header-read and keep-alive clock; `None` once upgraded.
    sleep: Option<Pin<Box<Sleep>>>,
    send: SendClock,
}

/// The deadline of a write the client does not take.
struct SendClock {
    timeout: Duration,
    /// Set while a write waits; cleared by any progress.
    armed: bool,
    /// Made when a write first waits.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl SendClock {
    fn new(timeout: Duration) -> SendClock {
        SendClock {
            timeout,
            armed: false,
            sleep: None,
        }
    }

    /// Drops the timer unless a write is waiting on it.
    fn release_idle(&mut self) {
        if !self.armed {
            self.sleep = None;
        }
    }

    /// Passes on a write's outcome; a write still pending after the
    /// deadline becomes an error.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        res: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if res.is_ready() {
            self.armed = false;
            return res;
        }
        if !self.armed {
            self.armed = true;
            let deadline = Instant::now() + self.timeout;
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let timeout = self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took nothing for limits.send_timeout",
            )));
        }
        Poll::Pending
    }
}

impl<I> TimedIo<I> {
    pub fn new(
        inner: I,
        state: Arc<ConnState>,
        header_timeout: Duration,
        keep_alive: Duration,
    ) -> TimedIo<I> {
        let deadline = Instant::now() + header_timeout;
        TimedIo {
            inner,
            state,
            header_timeout,
            keep_alive,
            seen: Phase::Fresh,
            deadline: Some(deadline),
            sleep: Some(Box::pin(tokio::time::sleep_until(deadline))),
            send: SendClock::new(Duration::from_secs(60)),
        }
    }

    /// Sets `limits.send_timeout`.
    pub fn with_send_timeout(mut self, timeout: Duration) -> TimedIo<I> {
        self.send = SendClock::new(timeout);
        self
    }

    fn arm(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
        match &mut self.sleep {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }

    /// Whether the header-read or keep-alive deadline has passed.
    fn deadline_passed(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.is_some()
            && self
                .sleep
                .as_mut()
                .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> TimedIo<I> {
    /// Best effort: the 408 goes out if the socket takes it right away.
    fn send_request_timeout(&mut self, cx: &mut Context<'_>) {
        let mut written = 0;
        while written < REQUEST_TIMEOUT.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &REQUEST_TIMEOUT[written..]) {
                Poll::Ready(Ok(n)) if n > 0 => written += n,
                _ => return,
            }
        }
        let _ = Pin::new(&mut self.inner).poll_flush(cx);
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for TimedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let phase = this.state.phase();
        match phase {
            Phase::Busy | Phase::Upgraded => {
                if phase == Phase::Upgraded && this.seen != Phase::Upgraded {
                    this.deadline = None;
                    this.sleep = None;
                    this.send.release_idle();
                }
                let res = Pin::new(&mut this.inner).poll_read(cx, buf);
                if res.is_pending() && phase == Phase::Busy {
                    this.state.park(cx);
                    this.deadline = None;
                }
                this.seen = phase;
                return res;
            }
            Phase::Idle if this.seen != Phase::Idle => {
                this.seen = Phase::Idle;
                this.arm(Instant::now() + this.keep_alive);
            }
            _ => {}
        }
        // Fresh, Head or Idle: do bytes of a request arrive?
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                match phase {
                    Phase::Idle => {
                        this.arm(Instant::now() + this.header_timeout);
                        this.state.set(Phase::Head);
                    }
                    // The clock started at accept: a slow first request gets no more time.
                    Phase::Fresh => this.state.set(Phase::Head),
                    _ => {}
                }
                this.seen = Phase::Head;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if this.deadline_passed(cx) {
                    this.deadline = None;
                    if phase == Phase::Head {
                        this.send_request_timeout(cx);
                    }
                    // End of stream: hyper closes the connection.
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for TimedIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.send.check(cx, res)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_flush(cx);
        this.send.check(cx, res)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.send.check(cx, res)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.send.check(cx, res)
    }
}

/// `limits.body_read_timeout` and `jupyter.response_timeout`.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    pub body: Duration,
    pub response: Duration,
}

impl Deadlines {
    pub fn of(config: &crate::config::Config) -> Deadlines {
        Deadlines {
            body: config.limits.body_read_timeout.get(),
            response: config.jupyter.response_timeout.get(),
        }
    }
}

/// How far a [`ProgressBody`] got: shared with whoever forwards it.
#[derive(Default)]
pub struct BodyProgress {
    timed_out: std::sync::atomic::AtomicBool,
    ended: Mutex<Option<Instant>>,
}

impl BodyProgress {
    /// The client stopped sending for `limits.body_read_timeout`.
    pub fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Acquire)
    }

    /// When the last byte of the body was read; `None` while it streams.
    pub fn ended(&self) -> Option<Instant> {
        *self.ended.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn end(&self) {
        let mut ended = self.ended.lock().unwrap_or_else(PoisonError::into_inner);
        if ended.is_none() {
            *ended = Some(Instant::now());
        }
    }
}

/// A request body whose next bytes did not come within `limits.body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no more of the request body for limits.body_read_timeout")]
pub struct BodyTimedOut;

/// A request body with a progress deadline: each wait for its next frame
/// may last `timeout`, on a timer of its own (a client that sends nothing
/// cannot delay it). After the deadline it fails with [`BodyTimedOut`] and
/// says so in its [`BodyProgress`], so that whoever forwarded it can answer
/// `408`; the progress also tells when the body ended, from when Jupyter's
/// answer is awaited.
pub struct ProgressBody<B> {
    inner: B,
    timeout: Duration,
    armed: bool,
    /// Made at the first wait: most requests (a GET) have no body to wait for.
    sleep: Option<Pin<Box<Sleep>>>,
    progress: Arc<BodyProgress>,
}

impl<B: Body> ProgressBody<B> {
    pub fn new(inner: B, timeout: Duration) -> ProgressBody<B> {
        let progress = Arc::new(BodyProgress::default());
        if inner.is_end_stream() {
            progress.end();
        }
        ProgressBody {
            inner,
            timeout,
            armed: false,
            sleep: None,
            progress,
        }
    }

    pub fn progress(&self) -> Arc<BodyProgress> {
        self.progress.clone()
    }
}

impl<B> Body for ProgressBody<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                if frame.is_none() || this.inner.is_end_stream() {
                    this.progress.end();
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = Instant::now() + this.timeout;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.armed {
                    this.armed = true;
                    sleep.as_mut().reset(deadline);
                }
                if sleep.as_mut().poll(cx).is_ready() {
                    this.progress.timed_out.store(true, Ordering::Release);
                    return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's place under `limits.max_connections`. A WebSocket keeps
/// it after the upgrade, until the socket closes.
#[derive(Clone)]
pub struct ConnectionSlot(pub Arc<Held>);

/// What an open connection holds: its place under `limits.max_connections`
/// and under `limits.max_connections_per_client`.
pub struct Held {
    _slot: OwnedSemaphorePermit,
    _client: Option<ClientHold>,
}

impl Held {
    pub fn new(slot: OwnedSemaphorePermit, client: Option<ClientHold>) -> Held {
        Held {
            _slot: slot,
            _client: client,
        }
    }
}

/// Open connections per client (`limits.max_connections_per_client`). Only
/// clients with an open connection have an entry, so the table is no
/// bigger than `limits.max_connections`.
#[derive(Default)]
pub struct ClientCounts(Mutex<HashMap<IpAddr, u32>>);

impl ClientCounts {
    /// Counts a new connection of `ip`, or refuses it if the client already
    /// has `max` open.
    pub fn enter(self: &Arc<Self>, ip: IpAddr, max: u32) -> Option<ClientHold> {
        let key = client_key(ip);
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(key).or_insert(0);
        if *n >= max {
            if *n == 0 {
                counts.remove(&key);
            }
            return None;
        }
        *n += 1;
        Some(ClientHold {
            counts: self.clone(),
            key,
        })
    }

    /// Open connections of the client at `ip`.
    pub fn of(&self, ip: IpAddr) -> u32 {
        let counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        counts.get(&client_key(ip)).copied().unwrap_or(0)
    }
}

/// One connection counted against its client; uncounted when dropped.
pub struct ClientHold {
    counts: Arc<ClientCounts>,
    key: IpAddr,
}

impl Drop for ClientHold {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// The unit a client is counted in: an IPv4 address, or an IPv6 /64 (one
/// host usually holds a whole /64).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match crate::config::canonical_ip(ip) {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

/// A warning that clients can cause over and over: written at most once per
/// interval, with the number of times it happened since the last line.
pub struct WarnThrottle {
    last: AtomicU64,
    count: AtomicU64,
}

impl WarnThrottle {
    pub const fn new() -> WarnThrottle {
        WarnThrottle {
            last: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Counts one occurrence; `Some(n)` when a line is due, `n` occurrences
    /// (this one included) since the last line.
    pub fn hit(&self, interval_secs: u64) -> Option<u64> {
        self.count.fetch_add(1, Ordering::Relaxed);
        let now = crate::auth::session::unix_now();
        let last = self.last.load(Ordering::Relaxed);
        if last + interval_secs > now {
            return None;
        }
        if self
            .last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return None;
        }
        Some(self.count.swap(0, Ordering::Relaxed).max(1))
    }
}

impl Default for WarnThrottle {
    fn default() -> Self {
        WarnThrottle::new()
    }
}

/// A response body that tells the connection when hyper is done with it.
pub struct ResponseBody<B> {
    inner: B,
    state: Arc<ConnState>,
}

impl<B> ResponseBody<B> {
    pub fn new(inner: B, state: Arc<ConnState>) -> ResponseBody<B> {
        ResponseBody { inner, state }
    }
}

impl<B> Drop for ResponseBody<B> {
    fn drop(&mut self) {
        self.state.response_done();
    }
}

impl<B: Body + Unpin> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waker that counts its clones (each keeps a task's memory).
    struct CountedWake;

    impl std::task::Wake for CountedWake {
        fn wake(self: Arc<Self>) {}
    }

    /// Once upgraded, nothing of the connection keeps a waker of the task
    /// that served its requests: the WebSocket's own task reads it now, and
    /// a waker would keep the ended task's memory for the socket's life.
    #[tokio::test]
    async fn an_upgraded_connection_keeps_no_waker_of_the_ended_task() {
        let (ours, _peer) = tokio::io::duplex(64);
        let state = Arc::new(ConnState::default());
        let mut io = TimedIo::new(
            ours,
            state.clone(),
            Duration::from_secs(10),
            Duration::from_secs(75),
        );
        let served_by = Arc::new(CountedWake);
        let waker = Waker::from(served_by.clone());
        let mut cx = Context::from_waker(&waker);
        let mut space = [0u8; 16];
        // The request task waits for a head (its timer holds the waker),
        // then for a body while busy (the state parks it).
        let mut buf = ReadBuf::new(&mut space);
        assert!(Pin::new(&mut io).poll_read(&mut cx, &mut buf).is_pending());
        state.request_started();
        let mut buf = ReadBuf::new(&mut space);
        assert!(Pin::new(&mut io).poll_read(&mut cx, &mut buf).is_pending());
        drop(waker);
        assert!(
            Arc::strong_count(&served_by) > 1,
            "the waits hold the waker"
        );

        state.upgraded();
        let websocket = Arc::new(CountedWake);
        let waker = Waker::from(websocket.clone());
        let mut cx = Context::from_waker(&waker);
        let mut buf = ReadBuf::new(&mut space);
        assert!(Pin::new(&mut io).poll_read(&mut cx, &mut buf).is_pending());
        assert_eq!(
            Arc::strong_count(&served_by),
            1,
            "a waker of the ended task is still held"
        );
    }

    #[test]
    fn clients_are_counted_per_address_and_ipv6_per_64() {
        let counts = Arc::new(ClientCounts::default());
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "192.0.2.1".parse().unwrap();
        let first = counts.enter(a, 2).unwrap();
        let second = counts.enter(b, 2).unwrap();
        assert!(counts.enter(a, 2).is_none(), "a third from the same /64");
        assert!(
            counts.enter(c, 2).is_some(),
            "another client is not affected"
        );
        drop(first);
        let third = counts.enter(b, 2);
        assert!(third.is_some());
        drop((second, third));
        assert_eq!(counts.of(a), 0);
        assert!(counts.0.lock().unwrap().is_empty(), "no entry stays behind");
        // An IPv4-mapped IPv6 address is the IPv4 client.
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_key(mapped), c);
    }

    #[test]
    fn throttled_warnings_count_what_they_left_out() {
        let t = WarnThrottle::new();
        assert_eq!(t.hit(3600), Some(1));
        for _ in 0..99 {
            assert_eq!(t.hit(3600), None);
        }
        t.last.store(0, Ordering::Relaxed);
        assert_eq!(t.hit(3600), Some(100));
    }

    #[test]
    fn request_timeout_response_has_the_right_length() {
        let text = std::str::from_utf8(super::REQUEST_TIMEOUT).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let declared: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(declared, body.len());
    }
}
