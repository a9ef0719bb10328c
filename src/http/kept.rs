//! One request's bytes on a kept-alive connection: hyper reads the screened head (already
//! read, replayed) and exactly the body its `Content-Length` declares, then end of stream. So
//! hyper never reads the next request's head, which nsqgate reads and screens itself before
//! handing it on (`server::serve_screened`); whatever the client sent beyond this request
//! stays for the next round.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub struct OneRequest<T> {
    /// The head (and any body bytes read with it) not yet handed to hyper.
    prefix: Bytes,
    inner: T,
    /// Body bytes still to come from `inner`; `None` reads on to the end (a chunked body: the
    /// connection's last request).
    left: Option<u64>,
}

// === impl OneRequest ===

impl<T> OneRequest<T> {
    /// `read` holds what was read so far, head first; `request_len` is the head plus its body
    /// (`None`: unknown). Returns the reader and what `read` holds beyond this request.
    pub fn new(mut read: Bytes, inner: T, request_len: Option<u64>) -> (OneRequest<T>, Bytes) {
        let (prefix, beyond, left) = match request_len {
            Some(len) => {
                let held = u64::try_from(read.len()).unwrap_or(u64::MAX);
                if held >= len {
                    let cut = usize::try_from(len).unwrap_or(read.len());
                    let beyond = read.split_off(cut);
                    (read, beyond, Some(0))
                } else {
                    (read, Bytes::new(), Some(len - held))
                }
            }
            None => (read, Bytes::new(), None),
        };
        (
            OneRequest {
                prefix,
                inner,
                left,
            },
            beyond,
        )
    }

    /// The connection: `Ok` when hyper took exactly this request (head and whole body), so
    /// the next byte starts a new request; `Err` when it did not.
    pub fn finished(self) -> Result<T, T> {
        if self.prefix.is_empty() && self.left == Some(0) {
            Ok(self.inner)
        } else {
            Err(self.inner)
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for OneRequest<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        let Some(left) = self.left else {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        };
        if left == 0 {
            return Poll::Ready(Ok(())); // the end of this request, as hyper sees it
        }
        let room = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(buf.remaining());
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(room));
        let poll = Pin::new(&mut self.inner).poll_read(cx, &mut limited);
        let n = limited.filled().len();
        if let Poll::Ready(Ok(())) = poll {
            buf.advance(n);
            self.left = Some(left.saturating_sub(u64::try_from(n).unwrap_or(left)));
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for OneRequest<T> {
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
