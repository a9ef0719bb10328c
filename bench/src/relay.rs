//! A floor for issue 11's "P0 at no more CPU per message than HAProxy": the least a relay on
//! tokio does, run by bench/run as targets F0 and F0-framed (named in `--targets` only).
//!
//! - F0 copies bytes both ways as they come (`tokio::io::copy_bidirectional`), as HAProxy's
//!   TCP mode does: what tokio's event loop and the two sockets cost, with no NSQ at all.
//! - F0-framed forwards only whole NSQ frames (commands toward nsqd, frames toward the
//!   client), straight from its read buffer: the least any hop that looks at each command
//!   must do, with no decoding, policy, limits or metrics.
//!
//! Shaped as nsqgate's workers are: one thread per core, each with its own single-threaded
//! runtime and its own `SO_REUSEPORT` socket on the listening address, and a connection kept
//! by the worker that accepted it. It has no timeouts and no limits: never a product.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::Error;

/// The buffer each direction reads into; a frame declared larger grows it to its own size.
const READ_SIZE: usize = 64 * 1024;
/// The largest frame either way (nsqd's own default `--max-msg-size` is 1 MiB).
const MAX_FRAME: usize = 16 * 1024 * 1024;
/// The protocol magic a client sends first.
const MAGIC: &[u8; 4] = b"  V2";

#[derive(Clone, Debug, clap::Args)]
pub struct Relay {
    /// Where clients connect.
    #[arg(long)]
    listen: SocketAddr,
    /// nsqd's plaintext TCP address.
    #[arg(long)]
    upstream: SocketAddr,
    /// Forward whole NSQ frames only (F0-framed); otherwise bytes as they come (F0).
    #[arg(long)]
    framed: bool,
    /// Worker threads; default: the cores this process may use, as nsqgate.
    #[arg(long)]
    workers: Option<usize>,
}

/// Runs the relay until the process is killed. Returns early only when a worker cannot
/// listen.
pub fn serve(relay: &Relay) -> Result<(), Error> {
    let workers = match relay.workers {
        Some(count) => count.max(1),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let (bound, listening) = std::sync::mpsc::channel::<io::Result<()>>();
    let mut threads = Vec::with_capacity(workers);
    for index in 0..workers {
        let (relay, bound) = (relay.clone(), bound.clone());
        let thread = std::thread::Builder::new()
            .name(format!("relay-w{index}"))
            .spawn(move || worker(&relay, &bound))?;
        threads.push(thread);
    }
    drop(bound);
    for said in listening {
        said?;
    }
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}

/// One worker: its own runtime and listening socket; each connection a task of its own.
fn worker(relay: &Relay, bound: &std::sync::mpsc::Sender<io::Result<()>>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = bound.send(Err(e));
            return;
        }
    };
    runtime.block_on(async {
        let listener = match listen(relay.listen) {
            Ok(listener) => listener,
            Err(e) => {
                let _ = bound.send(Err(e));
                return;
            }
        };
        let _ = bound.send(Ok(()));
        loop {
            let client = match listener.accept().await {
                Ok((client, _)) => client,
                Err(e) => {
                    // Out of descriptors, say: wait a little rather than spin on the error.
                    eprintln!("relay: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let (upstream, framed) = (relay.upstream, relay.framed);
            tokio::spawn(async move {
                if let Err(e) = connection(client, upstream, framed).await {
                    eprintln!("relay: connection ended: {e}");
                }
            });
        }
    });
}

fn listen(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}

async fn connection(mut client: TcpStream, upstream: SocketAddr, framed: bool) -> io::Result<()> {
    let mut nsqd = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    nsqd.set_nodelay(true)?;
    if !framed {
        tokio::io::copy_bidirectional(&mut client, &mut nsqd).await?;
        return Ok(());
    }
    let (client_read, client_write) = client.into_split();
    let (nsqd_read, nsqd_write) = nsqd.into_split();
    tokio::try_join!(
        forward(
            client_read,
            nsqd_write,
            Walk::Commands { magic_seen: false }
        ),
        forward(nsqd_read, client_write, Walk::Frames),
    )?;
    Ok(())
}

/// Reads from one side and writes every whole frame it holds to the other, once per read.
async fn forward(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut walk: Walk,
) -> io::Result<()> {
    let mut buf = vec![0u8; READ_SIZE];
    let mut held = 0;
    loop {
        let n = from.read(&mut buf[held..]).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        held += n;
        let (whole, wanted) = walk.whole(&buf[..held])?;
        if whole > 0 {
            to.write_all(&buf[..whole]).await?;
            buf.copy_within(whole..held, 0);
            held -= whole;
        }
        // Room for the rest of a large frame, and for a read of useful size after it.
        let room = wanted.max(held + READ_SIZE / 2).max(READ_SIZE);
        if buf.len() < room {
            buf.resize(room, 0);
        } else if held == 0 && buf.len() > READ_SIZE {
            buf.truncate(READ_SIZE);
            buf.shrink_to_fit();
        }
    }
}

/// Where frames end in one direction's stream.
enum Walk {
    /// Client to nsqd: the magic once, then command lines, some with a sized body.
    Commands { magic_seen: bool },
    /// nsqd to client: 4-byte size, then that many bytes.
    Frames,
}

impl Walk {
    /// How many leading bytes of `held` are whole frames, and the size the buffer needs to
    /// hold the next frame when its length is already known.
    fn whole(&mut self, held: &[u8]) -> io::Result<(usize, usize)> {
        let mut at = 0;
        if let Walk::Commands { magic_seen } = self {
            if !*magic_seen {
                if held.len() < MAGIC.len() {
                    return Ok((0, 0));
                }
                *magic_seen = true;
                at = MAGIC.len();
            }
        }
        loop {
            let next = match self {
                Walk::Commands { .. } => command_end(&held[at..])?,
                Walk::Frames => frame_end(&held[at..])?,
            };
            match next {
                End::At(length) => at += length,
                End::Needs(length) => return Ok((at, length)),
            }
        }
    }
}

enum End {
    /// A whole frame of this many bytes.
    At(usize),
    /// Not whole yet; it will be this many bytes (0: not known yet).
    Needs(usize),
}

fn command_end(rest: &[u8]) -> io::Result<End> {
    let Some(newline) = memchr::memchr(b'\n', rest) else {
        return Ok(End::Needs(0));
    };
    let name = rest[..newline]
        .split(|&b| b == b' ')
        .next()
        .unwrap_or_default();
    if !matches!(name, b"PUB" | b"MPUB" | b"DPUB" | b"IDENTIFY" | b"AUTH") {
        return Ok(End::At(newline + 1));
    }
    sized(&rest[newline + 1..], newline + 1)
}

fn frame_end(rest: &[u8]) -> io::Result<End> {
    sized(rest, 0)
}

/// A 4-byte big-endian size and its body, after `before` bytes already walked.
fn sized(rest: &[u8], before: usize) -> io::Result<End> {
    let Some(size) = rest.get(..4) else {
        return Ok(End::Needs(0));
    };
    let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
    if size > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let total = before + 4 + size;
    Ok(if rest.len() >= 4 + size {
        End::At(total)
    } else {
        End::Needs(total)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `stream` to a walker in pieces of `step` bytes, as reads would bring it, and
    /// returns the frames it would forward, each as the bytes written at once.
    fn forwarded(mut walk: Walk, stream: &[u8], step: usize) -> Vec<Vec<u8>> {
        let (mut held, mut writes) = (Vec::new(), Vec::new());
        for piece in stream.chunks(step) {
            held.extend_from_slice(piece);
            let (whole, _) = walk.whole(&held).unwrap();
            if whole > 0 {
                writes.push(held.drain(..whole).collect());
            }
        }
        assert!(held.is_empty(), "left over: {held:?}");
        writes
    }

    #[test]
    fn commands_are_forwarded_whole_however_the_reads_cut_them() {
        let stream =
            b"  V2IDENTIFY\n\0\0\0\x02{}SUB t c\nRDY 1\nPUB t\n\0\0\0\x03abcFIN 0123456789abcdef\n";
        let whole = forwarded(Walk::Commands { magic_seen: false }, stream, stream.len());
        assert_eq!(whole, vec![stream.to_vec()]);
        // One byte per read: a write exactly at the magic's end and at each command's.
        let ends: Vec<usize> = forwarded(Walk::Commands { magic_seen: false }, stream, 1)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(ends, [4, 15, 8, 6, 13, 21]);
    }

    #[test]
    fn frames_from_nsqd_are_forwarded_whole() {
        let stream = b"\0\0\0\x06\0\0\0\0OK\0\0\0\x06\0\0\0\0OK";
        assert_eq!(forwarded(Walk::Frames, stream, 5).len(), 2);
        assert_eq!(forwarded(Walk::Frames, stream, stream.len()).len(), 1);
    }

    #[test]
    fn the_size_a_partial_frame_needs_is_known_and_bounded() {
        let mut walk = Walk::Frames;
        assert_eq!(walk.whole(b"\0\0\x01\0abc").unwrap(), (0, 4 + 256));
        let too_large = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert!(Walk::Frames.whole(&too_large).is_err());
    }
}
