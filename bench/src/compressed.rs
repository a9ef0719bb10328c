//! A connection after NSQ's compression upgrade: what is written is kept until a flush, then
//! compressed in one go (for DEFLATE with a sync flush) and sent; what is read is decoded
//! before the NSQ codec sees it. The codecs are in compress.rs.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::compress::{Decoder, Encoder};
use crate::conn::Stream;

/// Plain bytes held before they are compressed without waiting for a flush.
const HOLD: usize = 256 * 1024;
const READ_CHUNK: usize = 64 * 1024;

pub struct Compressed {
    inner: Box<dyn Stream>,
    encoder: Encoder,
    decoder: Decoder,
    /// Written, not compressed yet.
    plain_out: BytesMut,
    /// Compressed, not sent yet.
    wire_out: BytesMut,
    /// Received, not decoded yet (an incomplete chunk).
    wire_in: BytesMut,
    /// Decoded, not read yet.
    plain_in: BytesMut,
    /// Where each read from the connection lands.
    scratch: Vec<u8>,
}

fn broken(e: crate::compress::CompressError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Compressed {
    /// `received` holds what was read past the upgrade's reply: already compressed.
    pub fn new(
        inner: Box<dyn Stream>,
        encoder: Encoder,
        decoder: Decoder,
        received: BytesMut,
    ) -> Self {
        Self {
            inner,
            encoder,
            decoder,
            plain_out: BytesMut::new(),
            wire_out: BytesMut::new(),
            wire_in: received,
            plain_in: BytesMut::new(),
            scratch: vec![0; READ_CHUNK],
        }
    }

    fn compress_held(&mut self) -> io::Result<()> {
        if !self.plain_out.is_empty() {
            let plain = self.plain_out.split();
            self.encoder
                .encode(&plain, &mut self.wire_out)
                .map_err(broken)?;
        }
        Ok(())
    }

    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.wire_out.is_empty() {
            let sent = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.wire_out))?;
            if sent == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wire_out.advance(sent);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Compressed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.plain_in.is_empty() {
                let n = buf.remaining().min(this.plain_in.len());
                buf.put_slice(&this.plain_in.split_to(n));
                return Poll::Ready(Ok(()));
            }
            this.decoder
                .decode(&mut this.wire_in, &mut this.plain_in)
                .map_err(broken)?;
            if !this.plain_in.is_empty() {
                continue;
            }
            let mut read = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                if this.wire_in.is_empty() {
                    return Poll::Ready(Ok(())); // the end, between chunks
                }
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            this.wire_in.extend_from_slice(read.filled());
        }
    }
}

impl AsyncWrite for Compressed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.plain_out.len() >= HOLD {
            this.compress_held()?;
            ready!(this.poll_send(cx))?;
        }
        this.plain_out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.compress_held()?;
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
