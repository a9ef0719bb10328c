//! Opening an NSQ connection the three ways a target may want it: plain TCP, NSQ's in-band TLS
//! upgrade (IDENTIFY with tls_v1, as go-nsq does) or TLS from the first byte (HAProxy,
//! stunnel); then AUTH when the IDENTIFY reply asks for it.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use rustls::client::Resumption;
use rustls::crypto::ring as provider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::counted::Counted;
use tokio_rustls::TlsConnector;

use crate::compress::{Codec, Decoder, Encoder};
use crate::compressed::Compressed;
use crate::wire::{self, Frame, FRAME_ERROR};
use crate::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Plain TCP.
    Plain,
    /// NSQ's in-band upgrade: IDENTIFY {"tls_v1":true} in clear, then TLS.
    Inband,
    /// TLS from the first byte, NSQ inside.
    TlsFirst,
}

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Where and how to connect; shared by every connection of a run.
pub struct Target {
    pub addr: SocketAddr,
    pub mode: Mode,
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Sent as AUTH when the IDENTIFY reply says auth_required.
    pub token: Option<String>,
    /// More IDENTIFY fields (output_buffer_timeout for latency runs).
    pub identify: serde_json::Map<String, serde_json::Value>,
    /// Compression asked for in IDENTIFY, and DEFLATE's level.
    pub compression: Codec,
    pub deflate_level: u32,
    /// Bytes through the sockets of every connection made to this target.
    pub wire: Arc<WireBytes>,
}

/// Bytes read and written on TCP sockets (what TLS and compression put on the wire).
#[derive(Debug, Default)]
pub struct WireBytes {
    pub read: AtomicU64,
    pub written: AtomicU64,
}

impl WireBytes {
    /// Both directions so far.
    pub fn total(&self) -> u64 {
        self.read.load(Ordering::Relaxed) + self.written.load(Ordering::Relaxed)
    }
}

impl Target {
    /// Plain TCP, no AUTH, no compression: how a fill reaches nsqd.
    pub fn plain(addr: SocketAddr) -> Self {
        Self {
            addr,
            mode: Mode::Plain,
            tls: None,
            token: None,
            identify: serde_json::Map::new(),
            compression: Codec::None,
            deflate_level: 6,
            wire: Arc::default(),
        }
    }
}

/// The client TLS set-up: only AES-128-GCM suites (TLS 1.3 where the server allows it, X25519
/// first), so every target is measured with the same cipher.
pub fn tls_connector(ca: &str, resume: bool) -> Result<TlsConnector, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let mut suites = provider::default_provider();
    suites.cipher_suites = vec![
        provider::cipher_suite::TLS13_AES_128_GCM_SHA256,
        provider::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ];
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(suites))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !resume {
        config.resumption = Resumption::disabled();
    }
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Writes all of `bytes` and flushes: a TLS stream may keep the last records of a large write
/// until the next write, and the peer would wait for them while we wait for its replies.
pub async fn send<W: AsyncWrite + Unpin + ?Sized>(io: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

pub struct Conn {
    pub io: Box<dyn Stream>,
    pub buf: BytesMut,
}

impl Conn {
    /// The next frame that is not a heartbeat (each heartbeat is answered with NOP); an error
    /// frame is an error.
    pub async fn read_frame(&mut self) -> Result<Frame, Error> {
        loop {
            while let Some(frame) = wire::take_frame(&mut self.buf)? {
                if frame.is_heartbeat() {
                    let mut out = BytesMut::new();
                    wire::nop(&mut out);
                    send(&mut self.io, &out).await?;
                    continue;
                }
                if frame.kind == FRAME_ERROR {
                    return Err(String::from_utf8_lossy(&frame.data).into_owned().into());
                }
                return Ok(frame);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err("connection closed by the target".into());
            }
        }
    }
}

async fn tls(target: &Target, io: Box<dyn Stream>) -> Result<Box<dyn Stream>, Error> {
    let (connector, name) = target.tls.as_ref().ok_or("this mode needs --ca")?;
    Ok(Box::new(connector.connect(name.clone(), io).await?))
}

/// Connects (from `source` when given), identifies, upgrades and authenticates.
pub async fn connect(target: &Target, source: Option<IpAddr>) -> Result<Conn, Error> {
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let tcp = socket.connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    let mut io: Box<dyn Stream> = Box::new(Counted::new(tcp, target.wire.clone()));
    if target.mode == Mode::TlsFirst {
        io = tls(target, io).await?;
    }
    let mut identify = target.identify.clone();
    identify.insert("feature_negotiation".into(), true.into());
    identify.insert("client_id".into(), "nsqgate-bench".into());
    identify.insert("tls_v1".into(), (target.mode == Mode::Inband).into());
    identify.insert(
        "snappy".into(),
        (target.compression == Codec::Snappy).into(),
    );
    identify.insert(
        "deflate".into(),
        (target.compression == Codec::Deflate).into(),
    );
    identify.insert("deflate_level".into(), target.deflate_level.into());
    let mut out = BytesMut::from(wire::MAGIC_V2);
    wire::identify(
        &mut out,
        serde_json::Value::Object(identify).to_string().as_bytes(),
    );
    send(&mut io, &out).await?;
    let mut conn = Conn {
        io,
        buf: BytesMut::with_capacity(64 * 1024),
    };
    let reply = conn.read_frame().await?;
    let reply: serde_json::Value = serde_json::from_slice(&reply.data)?;
    if target.mode == Mode::Inband {
        if reply["tls_v1"] != true {
            return Err("the target did not agree to the TLS upgrade".into());
        }
        if !conn.buf.is_empty() {
            return Err("bytes in clear after the IDENTIFY reply".into());
        }
        conn.io = tls(target, conn.io).await?;
        conn.read_frame().await?; // OK inside TLS
    }
    if let (Some(encoder), Some(decoder)) = (
        Encoder::new(target.compression, target.deflate_level),
        Decoder::new(target.compression),
    ) {
        let name = if target.compression == Codec::Snappy {
            "snappy"
        } else {
            "deflate"
        };
        if reply[name] != true {
            return Err(format!("the target did not agree to {name}: {reply}").into());
        }
        // What was read past the last reply is already compressed.
        let received = conn.buf.split();
        conn.io = Box::new(Compressed::new(conn.io, encoder, decoder, received));
        conn.read_frame().await?; // OK, compressed
    }
    if reply["auth_required"] == true {
        let token = target
            .token
            .as_ref()
            .ok_or("the target wants AUTH: pass --token")?;
        let mut out = BytesMut::new();
        wire::auth(&mut out, token.as_bytes());
        send(&mut conn.io, &out).await?;
        conn.read_frame().await?;
    }
    Ok(conn)
}
