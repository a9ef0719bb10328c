//! Stream plumbing for the two legs: a boxed byte stream type, and a stream that first replays
//! bytes already read, so a TLS handshake can start on bytes the NSQ reader buffered (and,
//! bounded, hands hyper exactly one HTTP request: `http::kept`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Any byte stream a leg runs over: plain TCP, or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A stream that yields `prefix` before reading from `inner`; writes go straight to `inner`.
pub struct Replay<T> {
    prefix: Bytes,
    inner: T,
    /// Bytes it may still yield, the prefix's included, before it reports the end of the
    /// stream; `None` reads on to `inner`'s end.
    left: Option<u64>,
}

// === impl Replay ===

impl<T> Replay<T> {
    pub fn new(prefix: Bytes, inner: T) -> Replay<T> {
        Replay::bounded(prefix, inner, None)
    }

    /// Yields at most `limit` bytes in all (`prefix` first), then end of stream.
    pub fn bounded(prefix: Bytes, inner: T, limit: Option<u64>) -> Replay<T> {
        // An empty view still holds the buffer it was split from (see poll_read).
        let prefix = match prefix.is_empty() {
            true => Bytes::new(),
            false => prefix,
        };
        Replay {
            prefix,
            inner,
            left: limit,
        }
    }

    /// Whether a bounded replay has yielded every byte of its limit.
    pub fn at_limit(&self) -> bool {
        self.left == Some(0)
    }

    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Replay<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let room = match self.left {
            Some(0) => return Poll::Ready(Ok(())), // the limit, seen as the end of the stream
            Some(left) => usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(buf.remaining()),
            None => buf.remaining(),
        };
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(room);
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if !self.prefix.has_remaining() {
                // An empty view still holds the whole buffer it was split from (a 4 KiB
                // handshake buffer on the nsqd leg), for as long as the connection lives.
                self.prefix = Bytes::new();
            }
            self.spent(n);
            return Poll::Ready(Ok(()));
        }
        if self.left.is_none() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(room));
        let poll = Pin::new(&mut self.inner).poll_read(cx, &mut limited);
        let n = limited.filled().len();
        if let Poll::Ready(Ok(())) = poll {
            buf.advance(n);
            self.spent(n);
        }
        poll
    }
}

impl<T> Replay<T> {
    fn spent(&mut self, n: usize) {
        if let Some(left) = &mut self.left {
            *left = left.saturating_sub(u64::try_from(n).unwrap_or(u64::MAX));
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Replay<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
