//! A raw NSQ client for tests that need exact bytes on the wire: plain, TLS-first, or the
//! in-band TLS upgrade, built on tokio + rustls like a real client. It builds and reads bytes
//! with the harness's own [`wire`](super::wire) module, never with nsqgate's codec.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::wire::{self, Command, Frame, FrameType};

/// Largest frame the client accepts from the server (size field).
const MAX_FRAME_SIZE: u32 = 64 * 1024 * 1024;

/// Any byte stream the client can speak over: TCP, TLS, or TCP with bytes already read.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct RawClient {
    io: Box<dyn Io>,
    buf: BytesMut,
}

/// The certificates of the CA file `ca`, as the roots a test client trusts.
pub fn ca_roots(ca: &Path) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in nsqgate::tls::load_certs(ca).expect("CA") {
        roots.add(cert).expect("add CA");
    }
    roots
}

pub fn tls_connector(ca: &Path, client_cert: Option<(&Path, &Path)>) -> TlsConnector {
    let roots = ca_roots(ca);
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let config = match client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                nsqgate::tls::load_certs(cert).expect("cert"),
                nsqgate::tls::load_key(key).expect("key"),
            )
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

impl RawClient {
    /// Plain TCP, magic sent.
    pub async fn plain(addr: SocketAddr) -> RawClient {
        let mut client = RawClient::plain_without_magic(addr).await;
        client.send_raw(wire::MAGIC_V2).await;
        client
    }

    /// Plain TCP, nothing sent yet.
    pub async fn plain_without_magic(addr: SocketAddr) -> RawClient {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        RawClient::over(tcp)
    }

    /// TLS from the first byte, then the magic inside TLS.
    pub async fn tls_first(addr: SocketAddr, connector: &TlsConnector) -> RawClient {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        let mut client = RawClient::over(tls);
        client.send_raw(wire::MAGIC_V2).await;
        client
    }

    /// Magic, IDENTIFY with tls_v1, the in-band upgrade and its OK, as go-nsq does it.
    /// Returns the IDENTIFY reply.
    pub async fn upgraded(
        addr: SocketAddr,
        connector: &TlsConnector,
        identify: serde_json::Value,
    ) -> (RawClient, serde_json::Value) {
        RawClient::plain(addr)
            .await
            .upgrade(connector, identify)
            .await
    }

    /// `prefix` (e.g. a PROXY protocol header) first, then as [`RawClient::upgraded`].
    pub async fn upgraded_after(
        addr: SocketAddr,
        prefix: &[u8],
        connector: &TlsConnector,
        identify: serde_json::Value,
    ) -> (RawClient, serde_json::Value) {
        let mut client = RawClient::plain_without_magic(addr).await;
        client.send_raw(prefix).await;
        client.send_raw(wire::MAGIC_V2).await;
        client.upgrade(connector, identify).await
    }

    /// Upgraded with an empty IDENTIFY, then AUTH with `secret`, which must succeed.
    pub async fn authenticated(
        addr: SocketAddr,
        connector: &TlsConnector,
        secret: &str,
    ) -> RawClient {
        let (mut client, reply) = RawClient::upgraded(addr, connector, serde_json::json!({})).await;
        assert_eq!(reply["auth_required"], true, "{reply}");
        client.assert_auth(secret).await;
        client
    }

    /// Upgraded with an empty IDENTIFY, then AUTH with `secret`: the client when AUTH is
    /// answered (its JSON), the error frame's text when refused.
    pub async fn try_authenticated(
        addr: SocketAddr,
        connector: &TlsConnector,
        secret: &str,
    ) -> Result<RawClient, String> {
        let (mut client, _) = RawClient::upgraded(addr, connector, serde_json::json!({})).await;
        let reply = client.auth(secret).await.expect("AUTH reply");
        let text = frame_text(&reply);
        if text.starts_with('{') {
            Ok(client)
        } else {
            Err(text)
        }
    }

    fn over(io: impl Io + 'static) -> RawClient {
        RawClient {
            io: Box::new(io),
            buf: BytesMut::new(),
        }
    }

    /// IDENTIFY with tls_v1 on a connection that sent the magic, the upgrade and its OK.
    async fn upgrade(
        mut self,
        connector: &TlsConnector,
        identify: serde_json::Value,
    ) -> (RawClient, serde_json::Value) {
        let mut body = identify;
        body["tls_v1"] = true.into();
        body["feature_negotiation"] = true.into();
        self.send(&Command::Identify {
            body: body.to_string().into(),
        })
        .await;
        let reply = self.read_frame().await.expect("IDENTIFY reply");
        let json: serde_json::Value = serde_json::from_slice(&reply.data)
            .unwrap_or_else(|_| panic!("IDENTIFY reply: {}", reply.text()));
        assert_eq!(json["tls_v1"], true, "{json}");
        // The server may have sent handshake bytes right behind its reply: they are TLS's.
        let raw = Replay {
            prefix: self.buf.split().freeze(),
            inner: self.io,
        };
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let tls = connector.connect(name, raw).await.expect("TLS upgrade");
        let mut client = RawClient::over(tls);
        let ok = client.read_frame().await.expect("OK after upgrade");
        assert!(ok.is_ok(), "after the upgrade: {}", ok.text());
        (client, json)
    }

    pub async fn send(&mut self, command: &Command) {
        self.send_raw(&command.to_bytes()).await;
    }

    /// Sends bytes; a peer that already closed is not an error here (tests read the outcome).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.io.write_all(bytes).await;
        let _ = self.io.flush().await;
    }

    /// Ends what the client sends (TCP FIN; close_notify first over TLS) and keeps reading:
    /// the server sees a truncated command end, and can still answer.
    pub async fn finish_sending(&mut self) {
        let _ = self.io.shutdown().await;
    }

    /// AUTH with `secret`; the reply (None when the server closed).
    pub async fn auth(&mut self, secret: &str) -> Option<Frame> {
        self.send(&Command::Auth {
            secret: secret.as_bytes().to_vec().into(),
        })
        .await;
        self.read_frame().await
    }

    /// AUTH with `secret`, which must succeed; nsqd's JSON reply.
    pub async fn assert_auth(&mut self, secret: &str) -> serde_json::Value {
        let reply = self.auth(secret).await.expect("AUTH reply");
        assert_eq!(
            reply.frame_type,
            FrameType::Response,
            "AUTH: {}",
            reply.text()
        );
        serde_json::from_slice(&reply.data)
            .unwrap_or_else(|_| panic!("AUTH reply is not JSON: {}", reply.text()))
    }

    /// SUB; the reply (None when the server closed).
    pub async fn sub(&mut self, topic: &str, channel: &str) -> Option<Frame> {
        self.send(&Command::Sub {
            topic: topic.into(),
            channel: channel.into(),
        })
        .await;
        self.read_frame().await
    }

    /// PUB; the reply (None when the server closed).
    pub async fn publish(&mut self, topic: &str, body: &[u8]) -> Option<Frame> {
        self.send(&Command::Pub {
            topic: topic.into(),
            body: body.to_vec().into(),
        })
        .await;
        self.read_frame().await
    }

    /// The next reply must be `OK`; `what` names the command in the failure.
    pub async fn assert_ok(&mut self, what: &str) {
        let reply = self.read_frame().await;
        assert_ok(reply, what);
    }

    /// The next reply must be an error frame with `code`; returns its whole text.
    pub async fn assert_error(&mut self, code: &str, what: &str) -> String {
        let reply = self.read_frame().await;
        assert_error(reply, code, what)
    }

    /// The next frame that is not a heartbeat; None when the peer closed (or 10 s passed).
    pub async fn read_frame(&mut self) -> Option<Frame> {
        self.read_frame_within(Duration::from_secs(10)).await
    }

    pub async fn read_frame_within(&mut self, limit: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let frame = self.next_frame(deadline).await?;
            if !frame.is_heartbeat() {
                return Some(frame);
            }
            self.send(&Command::Nop).await;
        }
    }

    /// The next frame, heartbeats included (not answered).
    pub async fn read_raw_frame_within(&mut self, limit: Duration) -> Option<Frame> {
        self.next_frame(tokio::time::Instant::now() + limit).await
    }

    async fn next_frame(&mut self, deadline: tokio::time::Instant) -> Option<Frame> {
        loop {
            match wire::decode_frame(&mut self.buf, MAX_FRAME_SIZE) {
                Ok(Some(frame)) => return Some(frame),
                Ok(None) => {}
                Err(e) => panic!("bad frame from server: {e:?}"),
            }
            match tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// True when the server closed the connection (EOF or reset) within `limit`.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let mut scratch = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.io.read(&mut scratch)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// "E_CODE text" of an error frame, or the response text.
pub fn frame_text(frame: &Frame) -> String {
    frame.text()
}

/// `reply` must be `OK`; `what` names the command in the failure.
#[track_caller]
pub fn assert_ok(reply: Option<Frame>, what: &str) {
    let frame = reply.unwrap_or_else(|| panic!("{what}: connection closed instead of OK"));
    assert!(
        frame.is_ok(),
        "{what}: expected OK, got {:?} {}",
        frame.frame_type,
        frame.text()
    );
}

/// `reply` must be an error frame whose code is `code` (e.g. `E_UNAUTHORIZED`); returns its
/// whole text.
#[track_caller]
pub fn assert_error(reply: Option<Frame>, code: &str, what: &str) -> String {
    let frame = reply.unwrap_or_else(|| panic!("{what}: connection closed instead of {code}"));
    assert_eq!(
        frame.error_code().as_deref(),
        Some(code),
        "{what}: expected {code}, got {}",
        frame.text()
    );
    frame.text()
}

/// A stream with bytes already read from it put back in front: the in-band TLS upgrade reads
/// the IDENTIFY reply and may have read the server's first handshake bytes with it.
struct Replay {
    prefix: Bytes,
    inner: Box<dyn Io>,
}

impl AsyncRead for Replay {
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
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
