//! How each direction of the relay reads: into the connection's own buffer while data streams
//! in (large reads while they come back full), and into no buffer of its own while the
//! connection is quiet. Most connections are quiet nearly all the time (a consumer waiting for
//! messages, a producer between bursts): a quiet read lands on the worker's stack, and only the
//! bytes that came are copied into a buffer, so an idle connection holds no read buffer.
//!
//! The small buffers quiet connections give back are kept by their worker thread, a few dozen
//! at most, for the next quiet read of any of its connections: a 1-deep producer's every PUB
//! and every OK came in a quiet read, and allocating and freeing a buffer (and the handle its
//! split-off frames share) for each was four of the hop's allocations per message.

use std::cell::RefCell;
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

/// The least a spare buffer holds, so that it fits most quiet reads after the first.
const SPARE_SIZE: usize = SMALL_READ;
/// How many given-back buffers a worker thread keeps, each of `SPARE_SIZE` to `QUIET_READ`
/// bytes (at most 128 KiB in all).
const SPARES_KEPT: usize = 64;

thread_local! {
    /// Buffers given back by this thread's connections as they went quiet.
    static SPARES: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// One direction's reading state.
#[derive(Default)]
pub(super) struct Reader {
    last_read_full: bool,
    /// The buffer is one `spare_for` gave and has not grown since: it may be kept for the
    /// thread's next quiet read once drained.
    small: bool,
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
        // Room made here may move the buffer to a larger allocation: not one to keep.
        self.small = false;
        prepare(buf, self.last_read_full);
        let spare = buf.capacity() - buf.len();
        let n = from.read_buf(buf).await?;
        self.last_read_full = n == spare;
        Ok(n)
    }

    /// Nothing buffered and nothing streaming: the buffer is given back before the wait (which
    /// may last hours), and the next bytes get a small one of the thread's, or a fresh one.
    async fn read_quiet<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        from: &mut R,
        buf: &mut BytesMut,
    ) -> io::Result<usize> {
        let drained = std::mem::take(buf);
        if std::mem::take(&mut self.small) {
            give_back(drained);
        }
        let n = poll_fn(|cx| {
            // A local of this poll, not of the future: it costs the idle connection nothing.
            let mut landing = [MaybeUninit::<u8>::uninit(); QUIET_READ];
            let mut read = ReadBuf::uninit(&mut landing);
            ready!(Pin::new(&mut *from).poll_read(cx, &mut read))?;
            *buf = spare_for(read.filled().len());
            buf.extend_from_slice(read.filled());
            Poll::Ready(Ok::<_, io::Error>(read.filled().len()))
        })
        .await?;
        self.small = true;
        self.last_read_full = n == QUIET_READ;
        Ok(n)
    }
}

/// Keeps a drained buffer `spare_for` gave for this thread's next quiet read.
fn give_back(buf: BytesMut) {
    if buf.capacity() > QUIET_READ {
        return;
    }
    let _ = SPARES.try_with(|spares| {
        let mut spares = spares.borrow_mut();
        if spares.len() < SPARES_KEPT {
            spares.push(buf);
        }
    });
}

/// How many buffers this thread keeps now.
#[cfg(test)]
fn spares_kept() -> usize {
    SPARES.with(|spares| spares.borrow().len())
}

/// An empty buffer with room for `len` bytes: a kept one when the last kept one is no longer
/// shared with frames split off it (in flight, or held by a batch), else a new one.
fn spare_for(len: usize) -> BytesMut {
    let kept = SPARES
        .try_with(|spares| spares.borrow_mut().pop())
        .ok()
        .flatten();
    if let Some(mut spare) = kept {
        // `try_reclaim` never takes back memory a split-off frame still points into.
        if spare.try_reclaim(len) {
            return spare;
        }
    }
    BytesMut::with_capacity(len.max(SPARE_SIZE))
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
