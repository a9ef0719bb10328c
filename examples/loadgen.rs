//! A small NSQ load generator for scripts/bench: N connections, each with the in-band TLS
//! upgrade (as go-nsq does) and an optional AUTH, publishing PUBs `depth` deep for a fixed
//! time. Prints one JSON line: messages acknowledged, seconds, msg/s. Closed loop.
//!
//! cargo run --release --example loadgen -- ADDR CA_PEM CONNECTIONS DEPTH SECONDS SIZE [SECRET]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use nsqgate::net::stream::{Io, Replay};
use nsqgate::nsq::{self, Command, FrameType};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    addr: String,
    ca: String,
    connections: usize,
    depth: usize,
    seconds: u64,
    size: usize,
    secret: Option<String>,
}

fn args() -> Result<Args, Error> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 6 {
        return Err("usage: loadgen ADDR CA_PEM CONNECTIONS DEPTH SECONDS SIZE [SECRET]".into());
    }
    Ok(Args {
        addr: a[0].clone(),
        ca: a[1].clone(),
        connections: a[2].parse()?,
        depth: a[3].parse()?,
        seconds: a[4].parse()?,
        size: a[5].parse()?,
        secret: a.get(6).cloned(),
    })
}

async fn read_frame(io: &mut Box<dyn Io>, buf: &mut BytesMut) -> Result<nsq::Frame, Error> {
    loop {
        if let Some(frame) = nsq::decode_frame(buf, 16 * 1024 * 1024)? {
            if frame.is_heartbeat() {
                let mut out = BytesMut::new();
                Command::Nop.encode(&mut out);
                io.write_all(&out).await?;
                continue;
            }
            if frame.frame_type == FrameType::Error {
                return Err(String::from_utf8_lossy(&frame.data).into_owned().into());
            }
            return Ok(frame);
        }
        if io.read_buf(buf).await? == 0 {
            return Err("connection closed".into());
        }
    }
}

async fn connect(args: &Args, connector: &TlsConnector) -> Result<(Box<dyn Io>, BytesMut), Error> {
    let tcp = TcpStream::connect(&args.addr).await?;
    tcp.set_nodelay(true)?;
    let mut io: Box<dyn Io> = Box::new(tcp);
    let mut out = BytesMut::new();
    out.extend_from_slice(nsq::MAGIC_V2);
    Command::Identify {
        body: br#"{"feature_negotiation":true,"tls_v1":true}"#.to_vec().into(),
    }
    .encode(&mut out);
    io.write_all(&out).await?;
    let mut buf = BytesMut::new();
    read_frame(&mut io, &mut buf).await?;
    let host = args
        .addr
        .rsplit_once(':')
        .map_or("127.0.0.1", |(h, _)| h)
        .to_owned();
    let tls = connector
        .connect(
            ServerName::try_from(host)?,
            Replay::new(buf.split().freeze(), io),
        )
        .await?;
    let mut io: Box<dyn Io> = Box::new(tls);
    read_frame(&mut io, &mut buf).await?;
    if let Some(secret) = &args.secret {
        let mut out = BytesMut::new();
        Command::Auth {
            secret: secret.clone().into_bytes().into(),
        }
        .encode(&mut out);
        io.write_all(&out).await?;
        read_frame(&mut io, &mut buf).await?;
    }
    Ok((io, buf))
}

async fn publish(
    args: Arc<Args>,
    connector: TlsConnector,
    deadline: Instant,
) -> Result<u64, Error> {
    let (mut io, mut buf) = connect(&args, &connector).await?;
    let mut pub_frame = BytesMut::new();
    Command::Pub {
        topic: "bench".into(),
        body: vec![b'x'; args.size].into(),
    }
    .encode(&mut pub_frame);
    let mut acked = 0u64;
    let mut in_flight = 0usize;
    let mut batch = BytesMut::new();
    loop {
        // Refill in batches once half the window is acknowledged, as a pipelining producer
        // does, so each write carries many commands.
        let sending = Instant::now() < deadline && in_flight <= args.depth / 2;
        while sending && in_flight < args.depth {
            batch.extend_from_slice(&pub_frame);
            in_flight += 1;
        }
        if !batch.is_empty() {
            io.write_all(&batch.split()).await?;
        }
        if in_flight == 0 {
            return Ok(acked);
        }
        read_frame(&mut io, &mut buf).await?;
        acked += 1;
        in_flight -= 1;
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Arc::new(args()?);
    let mut roots = rustls::RootCertStore::empty();
    for cert in nsqgate::tls::load_certs(std::path::Path::new(&args.ca))? {
        roots.add(cert)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(config));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        tasks.spawn(publish(args.clone(), connector.clone(), deadline));
    }
    let mut acked = 0;
    while let Some(result) = tasks.join_next().await {
        acked += result??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"acked\":{acked},\"seconds\":{secs:.3},\"msg_per_sec\":{:.0}}}",
        acked as f64 / secs
    );
    Ok(())
}
