//! How each direction of the relay reads: into the connection's own buffer while data streams
//! in (large reads while they come back full), and into no buffer of its own while the
//! connection is quiet. Most connections are quiet nearly all the time (a consumer waiting for
//! messages, a producer between bursts): a quiet read lands on the worker's stack, and only the
//! bytes that came are copied into a buffer, so an idle connection holds no read buffer.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Read sizes while data streams in: small after a read that did not fill the buffer, large
/// while reads come back full. A frame larger than either grows the buffer only to its own
/// (limit-checked) size.
pub(super) const SMALL_READ: usize = 512;
pub(super) const LARGE_READ: usize = 64 * 1024;
/// What a quiet read takes at once, on the stack: a 100 B publish or a few small replies.
pub(super) const QUIET_READ: usize = 2048;

/// One direction's reading state.
#[derive(Default)]
pub(super) struct Reader {
    last_read_full: bool,
}

impl Reader {
    /// Reads what the peer sent next, appending it to `buf`; 0 is the end of the stream.
    /// Cancel-safe: bytes reach `buf` only when the read completes.
    pub(super) async fn read<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        from: &mut R,
        buf: &mut BytesMut,
    ) -> io::Result<usize> {
        if buf.is_empty() && !self.last_read_full {
            return self.read_quiet(from, buf).await;
        }
        prepare(buf, self.last_read_full);
        let spare = buf.capacity() - buf.len();
        let n = from.read_buf(buf).await?;
        self.last_read_full = n == spare;
        Ok(n)
    }

    /// Nothing buffered and nothing streaming: the buffer is given back before the wait (which
    /// may last hours), and the next bytes get a fresh one of their own size.
    async fn read_quiet<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        from: &mut R,
        buf: &mut BytesMut,
    ) -> io::Result<usize> {
        *buf = BytesMut::new();
        let n = poll_fn(|cx| {
            // A local of this poll, not of the future: it costs the idle connection nothing.
            let mut landing = [MaybeUninit::<u8>::uninit(); QUIET_READ];
            let mut read = ReadBuf::uninit(&mut landing);
            ready!(Pin::new(&mut *from).poll_read(cx, &mut read))?;
            buf.extend_from_slice(read.filled());
            Poll::Ready(Ok::<_, io::Error>(read.filled().len()))
        })
        .await?;
        self.last_read_full = n == QUIET_READ;
        Ok(n)
    }
}

/// Room for the next read: small after a short read, large while reads come back full; a
/// drained buffer that grew for one large frame is given back.
fn prepare(buf: &mut BytesMut, last_read_full: bool) {
    if buf.is_empty() && buf.capacity() > LARGE_READ {
        *buf = BytesMut::new();
    }
    let want = if last_read_full {
        LARGE_READ
    } else {
        SMALL_READ
    };
    if buf.capacity() - buf.len() < want / 2 {
        buf.reserve(want);
    }
}

#[cfg(test)]
mod tests;
