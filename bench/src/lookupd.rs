//! Registrations as nsqd makes them, over nsqlookupd's TCP protocol V1 (written here from the
//! protocol, sharing no code with nsqgate's guard): the `"  V1"` magic, IDENTIFY with a
//! 4-byte length and JSON, `REGISTER`/`UNREGISTER topic [channel]` lines, each answered by a
//! 4-byte length and its data (`OK`, IDENTIFY's JSON, or `E_...`). The target is nsqlookupd
//! itself or a registration sidecar in front of nsqgate's guard.
//!
//! Two loads, one command in flight per connection as nsqd sends them:
//! - commands: each connection identifies once, then cycles REGISTER topic, REGISTER topic
//!   channel, UNREGISTER topic channel, UNREGISTER topic; one operation is one command.
//! - fresh: one operation is a whole registration on a new connection: connect, magic,
//!   IDENTIFY, REGISTER, close (what a starting or reconnecting nsqd waits for).

use std::net::SocketAddr;

use bytes::{Buf, BufMut, BytesMut};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::repeat::{self, Operation};
use crate::window::Watched;
use crate::{Error, Timing};

const MAGIC_V1: &[u8] = b"  V1";
/// nsqlookupd's answers are short (IDENTIFY's JSON is about 150 bytes).
const MAX_RESPONSE: usize = 64 * 1024;

#[derive(Clone, Debug, clap::Args)]
pub struct Registration {
    /// nsqlookupd's TCP address, or the sidecar's.
    #[arg(long)]
    pub addr: SocketAddr,
    /// Connections (each its own peer at nsqlookupd).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// A new connection per registration instead of commands on open connections.
    #[arg(long)]
    pub fresh: bool,
    /// What IDENTIFY announces (the guard checks it against the certificate's identity).
    #[arg(long, default_value = "127.0.0.1")]
    pub broadcast_address: String,
    #[arg(long, default_value_t = 4150)]
    pub tcp_port: u16,
    #[arg(long, default_value_t = 4151)]
    pub http_port: u16,
}

fn identify(out: &mut BytesMut, args: &Registration) {
    let body = json!({
        "broadcast_address": args.broadcast_address,
        "tcp_port": args.tcp_port,
        "http_port": args.http_port,
        "version": "1.3.0",
        "hostname": "nsqgate-bench",
    })
    .to_string();
    out.put_slice(b"IDENTIFY\n");
    out.put_u32(body.len() as u32);
    out.put_slice(body.as_bytes());
}

struct Peer {
    io: TcpStream,
    buf: BytesMut,
}

impl Peer {
    async fn open(args: &Registration) -> Result<Peer, Error> {
        let io = TcpStream::connect(args.addr).await?;
        io.set_nodelay(true)?;
        let mut peer = Peer {
            io,
            buf: BytesMut::with_capacity(1024),
        };
        let mut out = BytesMut::from(MAGIC_V1);
        identify(&mut out, args);
        peer.ask(&out).await?;
        Ok(peer)
    }

    /// Sends one command and reads its one response; an `E_...` answer is an error.
    async fn ask(&mut self, command: &[u8]) -> Result<(), Error> {
        self.io.write_all(command).await?;
        loop {
            if self.buf.len() >= 4 {
                let size = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if size > MAX_RESPONSE {
                    return Err(format!("response size {size} out of range").into());
                }
                if self.buf.len() >= 4 + size {
                    self.buf.advance(4);
                    let data = self.buf.split_to(size);
                    if data.starts_with(b"E_") {
                        return Err(String::from_utf8_lossy(&data).into_owned().into());
                    }
                    return Ok(());
                }
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err("connection closed by the target".into());
            }
        }
    }
}

/// Registers and unregisters its own topic and channel on one open connection.
struct Commands {
    peer: Peer,
    cycle: [Vec<u8>; 4],
    next: usize,
}

impl Operation for Commands {
    async fn once(&mut self) -> Result<(), Error> {
        let command = &self.cycle[self.next];
        self.next = (self.next + 1) % self.cycle.len();
        self.peer.ask(command).await
    }
}

/// A whole registration on a new connection, closed after its OK.
struct Fresh {
    args: Registration,
    register: Vec<u8>,
}

impl Operation for Fresh {
    async fn once(&mut self) -> Result<(), Error> {
        let mut peer = Peer::open(&self.args).await?;
        peer.ask(&self.register).await?;
        peer.io.shutdown().await?;
        Ok(())
    }
}

pub async fn run(
    args: &Registration,
    timing: &Timing,
    watched: &[Watched],
) -> Result<Map<String, Value>, Error> {
    let (warmup, seconds) = (timing.warmup(), timing.seconds());
    let mut out = if args.fresh {
        let ops = (0..args.connections)
            .map(|i| Fresh {
                args: args.clone(),
                register: format!("REGISTER fresh{i}\n").into_bytes(),
            })
            .collect();
        repeat::repeat::<Fresh>(ops, warmup, seconds, watched).await?
    } else {
        let mut ops = Vec::with_capacity(args.connections);
        for i in 0..args.connections {
            let (topic, channel) = (format!("churn{i}"), "ch");
            ops.push(Commands {
                peer: Peer::open(args).await?,
                cycle: [
                    format!("REGISTER {topic}\n").into_bytes(),
                    format!("REGISTER {topic} {channel}\n").into_bytes(),
                    format!("UNREGISTER {topic} {channel}\n").into_bytes(),
                    format!("UNREGISTER {topic}\n").into_bytes(),
                ],
                next: 0,
            });
        }
        repeat::repeat::<Commands>(ops, warmup, seconds, watched).await?
    };
    let what = if args.fresh {
        "registrations"
    } else {
        "commands"
    };
    out.insert("counted".into(), json!(what));
    Ok(out)
}
