//! TLS on the NSQ legs as a byte stream, over rustls's unbuffered API ([`session`]): the
//! server side toward clients, the verifying client side toward nsqd. Unlike tokio-rustls (which
//! drives rustls's buffered API, and with it a 4 KiB record buffer per session for the
//! session's life), an idle session here holds no buffer: reads land on the worker's stack and
//! are decrypted there, and only a record cut short by a read is kept until the rest comes.
//!
//! Errors are what tokio-rustls gives, so logs and metrics read the same: rustls's error inside
//! an `InvalidData` I/O error, `UnexpectedEof` for a peer gone without close_notify.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::UnbufferedServerConnection;
use rustls::{ClientConfig, CommonState, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

mod session;

pub use session::Side;
use session::{Progress, Session};

/// What one read from the socket takes at once, on the stack: a whole record of the largest
/// size (16 KiB of data and its framing) fits.
const LANDING: usize = 17 * 1024;

/// What one read takes when the reader has room for more than a record (a large message
/// streaming in): four whole records, so a 64 KiB message is one or two system calls, not
/// four or five.
const LARGE_LANDING: usize = 4 * LANDING;

/// Plaintext encrypted per write at most: one write's records stay bounded.
const WRITE_BATCH: usize = 64 * 1024;

/// The message rustls's buffered reader gives for a peer gone without close_notify.
const UNEXPECTED_EOF: &str = "peer closed connection without sending TLS close_notify: \
https://docs.rs/rustls/latest/rustls/manual/_03_howto/index.html#unexpected-eof";

/// A TLS session over `T`, either side.
pub struct TlsStream<C, T> {
    session: Session<C>,
    io: T,
    /// `io` reached its end.
    eof: bool,
    /// The session failed: every later read and write gives this error again.
    failed: Option<rustls::Error>,
}

/// The client leg's TLS: nsqgate is the server.
pub type ServerTlsStream<T> = TlsStream<UnbufferedServerConnection, T>;
/// The nsqd leg's TLS: nsqgate is the client.
pub type ClientTlsStream<T> = TlsStream<UnbufferedClientConnection, T>;

/// Runs the server handshake on `io`.
pub async fn accept<T>(config: Arc<ServerConfig>, io: T) -> io::Result<ServerTlsStream<T>>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
    TlsStream::new(conn, io).handshake().await
}

/// Runs the client handshake on `io`, verifying the server's certificate for `name`.
pub async fn connect<T>(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    io: T,
) -> io::Result<ClientTlsStream<T>>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedClientConnection::new(config, name).map_err(invalid)?;
    TlsStream::new(conn, io).handshake().await
}

// === impl TlsStream ===

impl<C: Side, T: AsyncRead + AsyncWrite + Unpin> TlsStream<C, T> {
    fn new(conn: C, io: T) -> TlsStream<C, T> {
        TlsStream {
            session: Session::new(conn),
            io,
            eof: false,
            failed: None,
        }
    }

    /// What the handshake settled: peer certificates, suite, version, ALPN, resumption.
    pub fn state(&self) -> &CommonState {
        self.session.state()
    }

    pub fn connection(&self) -> &C {
        self.session.connection()
    }

    async fn handshake(mut self) -> io::Result<Self> {
        poll_fn(|cx| self.poll_handshake(cx)).await?;
        Ok(self)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let progress = match self.session.step() {
                Ok(progress) => progress,
                Err(e) => return Poll::Ready(Err(self.fail(cx, e))),
            };
            ready!(self.poll_send(cx))?;
            match progress {
                Progress::Open | Progress::Closed => {
                    return Pin::new(&mut self.io).poll_flush(cx);
                }
                Progress::Handshaking => {}
            }
            if self.eof {
                let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof");
                return Poll::Ready(Err(eof));
            }
            if let Err(e) = ready!(self.poll_receive(cx, None))? {
                return Poll::Ready(Err(self.fail(cx, e)));
            }
        }
    }

    /// Reads once from `io` and processes what came (plaintext to `into` first). The outer
    /// result is the read's, the inner one rustls's.
    fn poll_receive(
        &mut self,
        cx: &mut Context<'_>,
        into: Option<&mut ReadBuf<'_>>,
    ) -> Poll<io::Result<Result<(), rustls::Error>>> {
        if into.as_ref().is_some_and(|into| into.remaining() > LANDING) {
            self.poll_receive_with::<LARGE_LANDING>(cx, into)
        } else {
            self.poll_receive_with::<LANDING>(cx, into)
        }
    }

    /// [`Self::poll_receive`] through a landing of `N` bytes.
    fn poll_receive_with<const N: usize>(
        &mut self,
        cx: &mut Context<'_>,
        into: Option<&mut ReadBuf<'_>>,
    ) -> Poll<io::Result<Result<(), rustls::Error>>> {
        // A local of this poll, not of the stream: it costs an idle session nothing.
        let mut landing = [MaybeUninit::<u8>::uninit(); N];
        let mut read = ReadBuf::uninit(&mut landing);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
        if read.filled().is_empty() {
            self.eof = true;
            return Poll::Ready(Ok(Ok(())));
        }
        Poll::Ready(Ok(self.session.receive(read.filled_mut(), into).map(drop)))
    }

    /// Sends every queued record; ready once none is left.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.session.outgoing().is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, self.session.outgoing()))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.session.sent(n);
        }
        Poll::Ready(Ok(()))
    }

    /// A failed session: its alert goes out if the socket takes it at once (a last word, as
    /// tokio-rustls sends it), and the error is what the caller sees.
    fn fail(&mut self, cx: &mut Context<'_>, error: rustls::Error) -> io::Error {
        self.session.queue_alert();
        let _ = self.poll_send(cx);
        self.failed = Some(error.clone());
        invalid(error)
    }

    fn failure(&self) -> Option<io::Error> {
        self.failed.clone().map(invalid)
    }
}

impl<C: Side + Unpin, T: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<C, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.failure() {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        loop {
            if this.session.has_plaintext() {
                this.session.take_plaintext(buf);
            }
            if buf.filled().len() > before || buf.remaining() == 0 || this.session.peer_closed() {
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                let eof = io::Error::new(io::ErrorKind::UnexpectedEof, UNEXPECTED_EOF);
                return Poll::Ready(Err(eof));
            }
            // Records queued in reply (a key update) wait for the next write: polling the
            // socket's write side here would take the writer's wake-up.
            if let Err(e) = ready!(this.poll_receive(cx, Some(buf)))? {
                return Poll::Ready(Err(this.fail(cx, e)));
            }
        }
    }
}

impl<C: Side + Unpin, T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<C, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.failure() {
            return Poll::Ready(Err(e));
        }
        // At most one write's records wait: what was taken before goes out first.
        ready!(this.poll_send(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.session.close_notify_queued() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let taken = &buf[..buf.len().min(WRITE_BATCH)];
        match this.session.encrypt(taken) {
            Ok(true) => {}
            Ok(false) => return Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
            Err(e) => return Poll::Ready(Err(this.fail(cx, e))),
        }
        // What the socket does not take now goes out on the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(taken.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.session.close_notify() {
            return Poll::Ready(Err(this.fail(cx, e)));
        }
        ready!(this.poll_send(cx))?;
        match ready!(Pin::new(&mut this.io).poll_shutdown(cx)) {
            // Not connected any more is as shut as it gets.
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

/// rustls's error as tokio-rustls hands it on, which `metrics::handshake_failure_reason` reads.
fn invalid(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

#[cfg(test)]
mod tests;
