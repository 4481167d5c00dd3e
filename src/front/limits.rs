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
//!   take: uploads, downloads, long polls).
//! - `Idle`: the response is complete; the connection is closed after
//!   `limits.keep_alive_timeout` without a new request.
//! - `Upgraded`: a WebSocket; no limit here.
//!
//! [`TimedIo`] wraps the connection's stream and sees the bytes arrive;
//! the service marks `Busy` when hyper hands it a request, and a
//! [`ResponseBody`] marks `Idle` when hyper has sent the last byte of it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
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
    pub fn upgraded(&self) {
        self.set(Phase::Upgraded);
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

/// The connection's stream with the header-read and keep-alive clocks.
pub struct TimedIo<I> {
    inner: I,
    state: Arc<ConnState>,
    header_timeout: Duration,
    keep_alive: Duration,
    /// The phase this stream last acted on (to notice `Busy` → `Idle`).
    seen: Phase,
    deadline: Option<Instant>,
    sleep: Pin<Box<Sleep>>,
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
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    fn arm(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
        self.sleep.as_mut().reset(deadline);
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
                if this.deadline.is_some() && this.sleep.as_mut().poll(cx).is_ready() {
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}

/// A connection's place under `limits.max_connections`. A WebSocket keeps
/// it after the upgrade, until the socket closes.
#[derive(Clone)]
pub struct ConnectionSlot(pub Arc<OwnedSemaphorePermit>);

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
