//! The bytes of an HTTP connection as hyper reads them. One hyper dispatcher serves the whole
//! kept-alive connection, and every request head still passes the smuggling screen
//! (`request::screen_head`) before any byte of it reaches hyper: this stream reads each head
//! itself, screens it, then hands hyper the head and exactly the body its `Content-Length`
//! declares, and only then reads the next head. A head that fails the screen is never seen by
//! hyper (it sees the end of the stream); the caller answers 400 once hyper is done.
//!
//! A chunked body's end only a parser finds: such a request is the connection's last (the
//! `last` flag tells the service to answer `Connection: close`), as is one whose client asked
//! to close.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

use crate::http::request::{self, HeadError};

/// The longest request head nsqgate reads before refusing it.
pub const MAX_HEAD: usize = 64 * 1024;

/// How much room a read of a head asks for at least.
const HEAD_READ: usize = 4096;

/// A connection's stream with every request head screened before hyper reads it.
pub struct Screened<T> {
    io: T,
    /// Read from the client and not yet handed to hyper.
    read: BytesMut,
    /// How much of `read` was already searched for a head's end (a head trickling in is not
    /// searched from its start again at every read).
    searched: usize,
    at: At,
    /// Set once a head makes its request the connection's last.
    last: Arc<AtomicBool>,
}

/// Where the stream is in the connection's requests.
enum At {
    /// Between requests: reading and screening the next head.
    Head,
    /// Handing hyper one request: `left` more bytes of it, head and body (`None`: on to the
    /// end of the stream); then the next head, or the end when it is the `last`.
    Request { left: Option<u64>, last: bool },
    /// Nothing more for hyper: the end of the stream.
    End,
    /// A head failed the screen: hyper sees the end of the stream.
    Refused(HeadError),
}

// === impl Screened ===

impl<T> Screened<T> {
    /// `last` is set when a request turns out to be the connection's last.
    pub fn new(io: T, last: Arc<AtomicBool>) -> Screened<T> {
        Screened {
            io,
            read: BytesMut::new(),
            searched: 0,
            at: At::Head,
            last,
        }
    }

    /// The connection, and why a head was refused if one was (the 400 still to be written).
    pub fn into_parts(self) -> (T, Option<HeadError>) {
        match self.at {
            At::Refused(why) => (self.io, Some(why)),
            _ => (self.io, None),
        }
    }

    /// What follows the whole head `head`: the request it frames, or the refusal.
    fn judge(&self, head: &[u8]) -> At {
        match request::screen_head(head) {
            Err(why) => At::Refused(why),
            Ok(framing) => {
                if framing.last {
                    self.last.store(true, Ordering::Relaxed);
                }
                let head_len = u64::try_from(head.len()).unwrap_or(u64::MAX);
                At::Request {
                    left: framing.body.map(|body| body.saturating_add(head_len)),
                    last: framing.last,
                }
            }
        }
    }
}

fn spent(left: &mut Option<u64>, n: usize) {
    if let Some(left) = left {
        *left = left.saturating_sub(u64::try_from(n).unwrap_or(u64::MAX));
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Screened<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            match &mut this.at {
                At::End | At::Refused(_) => return Poll::Ready(Ok(())),
                At::Head => {
                    // The empty line may have begun in the last two bytes already searched.
                    let from = this.searched.saturating_sub(2);
                    if let Some(end) = request::head_end(&this.read[from..]) {
                        this.searched = 0;
                        this.at = this.judge(&this.read[..from + end]);
                        continue;
                    }
                    this.searched = this.read.len();
                    if this.read.len() >= MAX_HEAD {
                        this.at = At::Refused(HeadError::Malformed);
                        continue;
                    }
                    this.read.reserve(HEAD_READ);
                    if ready!(poll_read_buf(Pin::new(&mut this.io), cx, &mut this.read))? == 0 {
                        // A head cut short is refused as unreadable; none at all is a close.
                        this.at = match this.read.is_empty() {
                            true => At::End,
                            false => At::Refused(HeadError::Malformed),
                        };
                    }
                }
                At::Request {
                    left: Some(0),
                    last,
                } => {
                    this.at = if *last { At::End } else { At::Head };
                }
                At::Request { left, .. } => {
                    let room = match *left {
                        Some(left) => usize::try_from(left)
                            .unwrap_or(usize::MAX)
                            .min(buf.remaining()),
                        None => buf.remaining(),
                    };
                    if !this.read.is_empty() {
                        let n = this.read.len().min(room);
                        buf.put_slice(&this.read[..n]);
                        this.read.advance(n);
                        spent(left, n);
                        return Poll::Ready(Ok(()));
                    }
                    // The body straight into hyper's buffer, never past this request's end.
                    let mut limited = ReadBuf::new(buf.initialize_unfilled_to(room));
                    ready!(Pin::new(&mut this.io).poll_read(cx, &mut limited))?;
                    let n = limited.filled().len();
                    if n == 0 {
                        this.at = At::End;
                        return Poll::Ready(Ok(()));
                    }
                    buf.advance(n);
                    spent(left, n);
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Screened<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
