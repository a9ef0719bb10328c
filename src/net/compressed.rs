//! A compressed client leg as a byte stream, so the relay reads and writes it like any other:
//! reads are decoded into the caller's buffer (never more than it has room for), writes are
//! encoded into a bounded pending buffer that each flush empties (DEFLATE's sync flush
//! included), so compression adds no wait of its own.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

use crate::compress::{Compression, CompressionError, Decoded, Decoder, Encoder};

/// Compressed input is read this much at a time (a snappy chunk may take several reads).
const READ_SIZE: usize = 16 * 1024;
/// A write waits for the peer once this much compressed output is pending.
const PENDING_LIMIT: usize = 64 * 1024;
/// The most input encoded per write call, so pending output stays near its limit.
const WRITE_STEP: usize = 64 * 1024;
/// Buffers larger than this are given back when the connection goes quiet.
const KEEP: usize = 4 * 1024;

/// `inner`, with the client's compression on both directions.
pub struct Compressed<T> {
    inner: T,
    encoder: Encoder,
    decoder: Decoder,
    /// Compressed input not decoded yet.
    input: BytesMut,
    /// Compressed output not written yet, from `written` on.
    output: Vec<u8>,
    written: usize,
    /// The client ended its side (or its compressed stream).
    input_ended: bool,
}

// === impl Compressed ===

impl<T> Compressed<T> {
    /// Wraps `inner`; `already_read` is compressed input read before the upgrade.
    pub fn new(inner: T, compression: Compression, already_read: Bytes) -> Compressed<T> {
        let (encoder, decoder) = compression.codec();
        Compressed {
            inner,
            encoder,
            decoder,
            input: BytesMut::from(&already_read[..]),
            output: Vec::new(),
            written: 0,
            input_ended: false,
        }
    }
}

/// A corrupt stream surfaces as invalid data, with the cause kept for classifying the ending.
fn corrupt(e: CompressionError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// True when `e` says the client's compressed stream was corrupt.
pub fn is_corrupt_stream(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<CompressionError>())
}

impl<T: AsyncWrite + Unpin> Compressed<T> {
    /// Writes pending output until none is left or `inner` would block.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.output.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.output[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.output.clear();
        self.written = 0;
        if self.output.capacity() > PENDING_LIMIT {
            self.output = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Compressed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            match this.decoder.decode(&mut this.input, buf).map_err(corrupt)? {
                Decoded::Some(_) | Decoded::End => return Poll::Ready(Ok(())),
                Decoded::NeedMore if this.input_ended => return Poll::Ready(Ok(())),
                Decoded::NeedMore => {}
            }
            // Read more compressed input behind what is buffered, into room that is not
            // zeroed first (tokio-util does the one unsafe step).
            this.input.reserve(READ_SIZE);
            match poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.input) {
                Poll::Ready(Ok(0)) => this.input_ended = true,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Quiet for now: keep only small buffers while waiting.
                    if this.input.is_empty() && this.input.capacity() > KEEP {
                        this.input = BytesMut::new();
                    }
                    this.decoder.shrink();
                    return Poll::Pending;
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Compressed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.output.len() - this.written >= PENDING_LIMIT {
            ready!(this.poll_drain(cx))?;
        }
        let taken = data.len().min(WRITE_STEP);
        this.encoder
            .encode(&data[..taken], &mut this.output)
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.encoder
            .flush(&mut this.output)
            .map_err(io::Error::other)?;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
