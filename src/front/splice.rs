//! Splicing the two upgraded streams of a WebSocket (client ↔ Jupyter)
//! without a buffer per idle connection.
//!
//! `tokio::io::copy_bidirectional` gives every connection two buffers of
//! its own for as long as it lives, zero-filled at the start. An idle
//! WebSocket (a terminal or a kernel nobody uses) then holds 128 KiB of
//! heap: with glibc's allocator, a round of 1,000 such sockets opened and
//! closed left the freed buffers resident, and the next round, handed that
//! memory back, zero-filled all of it (9 → 45 → 149 MiB).
//!
//! Here each direction reads into its thread's scratch buffer and writes
//! it on at once. Only bytes that the destination does not take right away
//! are copied into a buffer of the connection's own, exactly as large as
//! they are, and freed as soon as they are written. Meanwhile that
//! direction reads no more (backpressure, as with a fixed buffer). An idle
//! WebSocket holds no buffer at all.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most read at once in one direction: large enough for big kernel outputs.
const SCRATCH: usize = 64 * 1024;

thread_local! {
    /// One per worker thread, used only inside a single poll (never across
    /// an await), so every connection on the thread can share it.
    static SCRATCH_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// Copies both ways until both sides have ended (each end of stream is
/// passed on as a shutdown of the other side's writing half) or one fails.
/// Returns the bytes copied from `a` to `b` and from `b` to `a`.
pub async fn splice<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut a_to_b = Direction::default();
    let mut b_to_a = Direction::default();
    poll_fn(|cx| {
        let there = a_to_b.poll(cx, &mut *a, &mut *b)?;
        let back = b_to_a.poll(cx, &mut *b, &mut *a)?;
        match (there, back) {
            (Poll::Ready(x), Poll::Ready(y)) => Poll::Ready(Ok((x, y))),
            _ => Poll::Pending,
        }
    })
    .await
}

/// One direction of a splice.
#[derive(Default)]
struct Direction {
    /// Bytes read but not yet taken by the writer; `None` most of the time.
    pending: Option<Pending>,
    /// Bytes were written since the last flush.
    need_flush: bool,
    /// The reader ended; then the writer is shut down.
    read_done: bool,
    done: bool,
    copied: u64,
}

struct Pending {
    bytes: Box<[u8]>,
    at: usize,
}

impl Direction {
    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.done {
            return Poll::Ready(Ok(self.copied));
        }
        loop {
            // First what the writer has not taken yet.
            if let Some(p) = &mut self.pending {
                while p.at < p.bytes.len() {
                    let n = ready!(Pin::new(&mut *writer).poll_write(cx, &p.bytes[p.at..]))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    p.at += n;
                    self.copied += n as u64;
                    self.need_flush = true;
                }
                self.pending = None;
            }
            if self.read_done {
                ready!(Pin::new(&mut *writer).poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(self.copied));
            }
            match self.read_and_forward(cx, reader, writer) {
                Poll::Ready(result) => result?,
                Poll::Pending => {
                    // Nothing more to read now: what was written must reach the
                    // peer (a TLS stream holds its last record until flushed).
                    if self.need_flush {
                        ready!(Pin::new(&mut *writer).poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Reads once into the thread's scratch buffer and writes what it can;
    /// the rest becomes `pending`.
    fn read_and_forward<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        SCRATCH_BUFFER.with(|scratch| {
            // A second borrow cannot happen: nothing below polls another splice.
            let mut scratch = scratch
                .try_borrow_mut()
                .map_err(|_| io::Error::other("splice scratch buffer in use"))?;
            let mut buf = ReadBuf::new(&mut scratch[..]);
            ready!(Pin::new(&mut *reader).poll_read(cx, &mut buf))?;
            let data = buf.filled();
            if data.is_empty() {
                self.read_done = true;
                return Poll::Ready(Ok(()));
            }
            let mut at = 0;
            while at < data.len() {
                match Pin::new(&mut *writer).poll_write(cx, &data[at..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Ok(n)) => {
                        at += n;
                        self.copied += n as u64;
                        self.need_flush = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            if at < data.len() {
                self.pending = Some(Pending {
                    bytes: data[at..].into(),
                    at: 0,
                });
            }
            Poll::Ready(Ok(()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Both directions arrive intact, also when the writer takes only a few
    /// bytes at a time (a small duplex buffer), and each end of stream is
    /// passed on.
    #[tokio::test]
    async fn copies_both_ways_through_small_buffers_and_passes_on_the_end() {
        let (client, mut front_a) = tokio::io::duplex(7);
        let (mut front_b, jupyter) = tokio::io::duplex(5);
        let up: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..150_000u32).map(|i| (i % 241) as u8).collect();
        let splicer = tokio::spawn(async move { splice(&mut front_a, &mut front_b).await });
        let (up2, down2) = (up.clone(), down.clone());
        let client_side = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(client);
            let send = async {
                w.write_all(&up2).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let recv = r.read_to_end(&mut got);
            let ((), n) = tokio::join!(send, recv);
            n.unwrap();
            got
        });
        let jupyter_side = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(jupyter);
            let send = async {
                w.write_all(&down2).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let recv = r.read_to_end(&mut got);
            let ((), n) = tokio::join!(send, recv);
            n.unwrap();
            got
        });
        let deadline = std::time::Duration::from_secs(30);
        let got_down = tokio::time::timeout(deadline, client_side)
            .await
            .unwrap()
            .unwrap();
        let got_up = tokio::time::timeout(deadline, jupyter_side)
            .await
            .unwrap()
            .unwrap();
        let (a_to_b, b_to_a) = tokio::time::timeout(deadline, splicer)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got_up, up);
        assert_eq!(got_down, down);
        assert_eq!((a_to_b, b_to_a), (up.len() as u64, down.len() as u64));
    }
}
