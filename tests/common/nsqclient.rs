//! A raw NSQ client for tests that need exact bytes on the wire: plain, TLS-first, or the
//! in-band TLS upgrade, built on tokio + rustls like a real client.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use nsqgate::nsq::{self, Command, Frame};
use nsqgate::proxy::stream::{Io, Replay};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub struct RawClient {
    io: Box<dyn Io>,
    buf: BytesMut,
}

pub fn tls_connector(ca: &Path, client_cert: Option<(&Path, &Path)>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in nsqgate::tls::load_certs(ca).expect("CA") {
        roots.add(cert).expect("add CA");
    }
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
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let mut client = RawClient {
            io: Box::new(tcp),
            buf: BytesMut::new(),
        };
        client.send_raw(nsq::MAGIC_V2).await;
        client
    }

    /// Plain TCP, nothing sent yet.
    pub async fn plain_without_magic(addr: SocketAddr) -> RawClient {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        RawClient {
            io: Box::new(tcp),
            buf: BytesMut::new(),
        }
    }

    /// TLS from the first byte, then the magic inside TLS.
    pub async fn tls_first(addr: SocketAddr, connector: &TlsConnector) -> RawClient {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        let mut client = RawClient {
            io: Box::new(tls),
            buf: BytesMut::new(),
        };
        client.send_raw(nsq::MAGIC_V2).await;
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
        client.send_raw(nsq::MAGIC_V2).await;
        client.upgrade(connector, identify).await
    }

    /// IDENTIFY with tls_v1 on a connection that sent the magic, the upgrade and its OK.
    async fn upgrade(
        self,
        connector: &TlsConnector,
        identify: serde_json::Value,
    ) -> (RawClient, serde_json::Value) {
        let mut client = self;
        let mut body = identify;
        body["tls_v1"] = true.into();
        body["feature_negotiation"] = true.into();
        client
            .send(&Command::Identify {
                body: body.to_string().into(),
            })
            .await;
        let reply = client.read_frame().await.expect("IDENTIFY reply");
        let json: serde_json::Value = serde_json::from_slice(&reply.data).unwrap_or_else(|_| {
            panic!("IDENTIFY reply: {:?}", String::from_utf8_lossy(&reply.data))
        });
        assert_eq!(json["tls_v1"], true, "{json}");
        let raw = Replay::new(client.buf.split().freeze(), client.io);
        let name = ServerName::try_from("127.0.0.1").expect("name");
        let tls = connector.connect(name, raw).await.expect("TLS upgrade");
        let mut client = RawClient {
            io: Box::new(tls),
            buf: BytesMut::new(),
        };
        let ok = client.read_frame().await.expect("OK after upgrade");
        assert_eq!(&ok.data[..], b"OK");
        (client, json)
    }

    pub async fn send(&mut self, command: &Command) {
        let mut out = BytesMut::new();
        command.encode(&mut out);
        self.send_raw(&out).await;
    }

    /// Sends bytes; a peer that already closed is not an error here (tests read the outcome).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.io.write_all(bytes).await;
        let _ = self.io.flush().await;
    }

    /// The next frame that is not a heartbeat; None when the peer closed (or 10 s passed).
    pub async fn read_frame(&mut self) -> Option<Frame> {
        self.read_frame_within(Duration::from_secs(10)).await
    }

    pub async fn read_frame_within(&mut self, limit: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match nsq::decode_frame(&mut self.buf, 64 * 1024 * 1024) {
                Ok(Some(frame)) if frame.is_heartbeat() => {
                    self.send(&Command::Nop).await;
                    continue;
                }
                Ok(Some(frame)) => return Some(frame),
                Ok(None) => {}
                Err(e) => panic!("bad frame from server: {e}"),
            }
            match tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The next frame, heartbeats included (not answered).
    pub async fn read_raw_frame_within(&mut self, limit: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match nsq::decode_frame(&mut self.buf, 64 * 1024 * 1024) {
                Ok(Some(frame)) => return Some(frame),
                Ok(None) => {}
                Err(e) => panic!("bad frame from server: {e}"),
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

    pub async fn publish(&mut self, topic: &str, body: &[u8]) -> Option<Frame> {
        self.send(&Command::Pub {
            topic: topic.into(),
            body: body.to_vec().into(),
        })
        .await;
        self.read_frame().await
    }
}

/// "E_CODE text" of an error frame, or the response text.
pub fn frame_text(frame: &Frame) -> String {
    String::from_utf8_lossy(&frame.data).into_owned()
}
