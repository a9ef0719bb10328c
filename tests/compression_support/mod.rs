//! A blocking raw client for compressed connections: its compressed streams are the `snap` and
//! `flate2` crates' own stream encoders and decoders (as a client library would use them),
//! its frames the harness's `wire` module's. Plus nsqgate set-ups and readings for the tests.

use std::io::{BufReader, Cursor, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::common::wire::{self, Command, Frame, FrameType};
use crate::common::{Gate, GateConfig, Nsqd, Pki};

/// What a snappy stream starts with: the stream identifier chunk.
pub const SNAPPY_STREAM_START: &[u8] = b"\xff\x06\x00\x00sNaPpY";

const READ_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_FRAME: u32 = 16 * 1024 * 1024;

/// nsqgate in front of `nsqd`, anonymous, with a plain client leg allowed (compression is
/// negotiated without TLS too, as nsqd does).
pub fn plain_gate(pki: &Pki, nsqd: &Nsqd) -> Gate {
    GateConfig::anonymous(nsqd.tcp)
        .client("require_tls = false")
        .start(pki)
}

/// The reply to `body` sent as IDENTIFY on a fresh connection: the JSON, or
/// `{"error": "<the error frame's text>"}`.
pub fn identify_reply(addr: SocketAddr, body: &serde_json::Value) -> serde_json::Value {
    let mut tcp = connect(addr);
    tcp.write_all(wire::MAGIC_V2).unwrap();
    let identify = Command::Identify {
        body: body.to_string().into(),
    };
    tcp.write_all(&identify.to_bytes()).unwrap();
    let frame = read_frame_from(&mut tcp);
    match frame.frame_type {
        FrameType::Error => serde_json::json!({ "error": frame.text() }),
        _ => serde_json::from_slice(&frame.data)
            .unwrap_or_else(|_| panic!("IDENTIFY reply from {addr}: {}", frame.text())),
    }
}

/// nsqd's /stats entries for the clients of `topic`'s channels.
pub fn nsqd_clients(nsqd: &Nsqd, topic: &str) -> Vec<serde_json::Value> {
    let topic = nsqd.topic(topic).expect("topic in nsqd's stats");
    let clients: Vec<serde_json::Value> = topic["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|channel| channel["clients"].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(!clients.is_empty(), "no clients in {topic}");
    clients
}

/// nsqgate's log once it holds `needle` (an ending is logged after the linger that follows the
/// close); panics with the log after 10 s.
pub fn wait_log(gate: &Gate, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = gate.log();
        if log.contains(needle) {
            return log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} in: {log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

fn connect(addr: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    tcp
}

fn read_frame_from(reader: &mut dyn Read) -> Frame {
    wire::read_frame_from(reader, MAX_FRAME)
}

/// A connection that negotiated compression: what it sends is compressed and flushed at once.
pub struct Compressed {
    reader: Box<dyn Read>,
    writer: Box<dyn Write>,
    raw: TcpStream,
    /// The first bytes after the IDENTIFY reply (snappy: its stream identifier).
    pub first_bytes: Vec<u8>,
}

impl Compressed {
    pub fn snappy(addr: SocketAddr) -> (Compressed, serde_json::Value) {
        Compressed::open(addr, "snappy", 0)
    }

    pub fn deflate(addr: SocketAddr, level: u32) -> (Compressed, serde_json::Value) {
        Compressed::open(addr, "deflate", level)
    }

    /// Snappy, with `pipelined` (already compressed) sent in the same write as IDENTIFY.
    pub fn open_pipelining(addr: SocketAddr, pipelined: &[u8]) -> (Compressed, serde_json::Value) {
        Compressed::open_with(addr, "snappy", 0, pipelined)
    }

    /// Magic, IDENTIFY asking for `compression`, the reply in clear, then the upgrade's `OK`
    /// read through the decompressor.
    pub fn open(
        addr: SocketAddr,
        compression: &str,
        level: u32,
    ) -> (Compressed, serde_json::Value) {
        Compressed::open_with(addr, compression, level, &[])
    }

    fn open_with(
        addr: SocketAddr,
        compression: &str,
        level: u32,
        pipelined: &[u8],
    ) -> (Compressed, serde_json::Value) {
        let mut body = serde_json::json!({ "feature_negotiation": true, compression: true });
        if compression == "deflate" {
            body["deflate_level"] = level.into();
        }
        let mut raw = connect(addr);
        raw.write_all(wire::MAGIC_V2).unwrap();
        let identify = Command::Identify {
            body: body.to_string().into(),
        };
        raw.write_all(&[&identify.to_bytes()[..], pipelined].concat())
            .unwrap();
        let reply = read_frame_from(&mut raw);
        let reply: serde_json::Value = serde_json::from_slice(&reply.data)
            .unwrap_or_else(|_| panic!("IDENTIFY reply: {}", reply.text()));
        let from = raw.try_clone().unwrap();
        let to = raw.try_clone().unwrap();
        let (reader, writer, first_bytes): (Box<dyn Read>, Box<dyn Write>, Vec<u8>) =
            match compression {
                "snappy" => {
                    let mut first = vec![0u8; SNAPPY_STREAM_START.len()];
                    raw.read_exact(&mut first).expect("snappy's first chunk");
                    let replayed = Cursor::new(first.clone()).chain(from);
                    let reader = Box::new(snap::read::FrameDecoder::new(replayed));
                    (reader, Box::new(snap::write::FrameEncoder::new(to)), first)
                }
                _ => {
                    // flate2's reader asks its input for more before handing out what it
                    // has already inflated: one large read takes a whole flush at once.
                    let inflate = flate2::read::DeflateDecoder::new(from);
                    let reader = Box::new(BufReader::with_capacity(64 * 1024, inflate));
                    let level = flate2::Compression::new(level);
                    let writer = Box::new(flate2::write::DeflateEncoder::new(to, level));
                    (reader, writer, Vec::new())
                }
            };
        let mut client = Compressed {
            reader,
            writer,
            raw,
            first_bytes,
        };
        let ok = client.read_frame();
        assert!(ok.is_ok(), "after the {compression} upgrade: {}", ok.text());
        (client, reply)
    }

    /// Sends `bytes` compressed, flushed (DEFLATE: a sync flush).
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
        self.writer.flush().unwrap();
    }

    /// Sends bytes as they are, past the compressor; a peer that closed is no error here.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.raw.write_all(bytes);
    }

    /// The next frame that is not a heartbeat.
    pub fn read_frame(&mut self) -> Frame {
        loop {
            let frame = read_frame_from(&mut self.reader);
            if !frame.is_heartbeat() {
                return frame;
            }
        }
    }

    /// True when the server closes the connection within `limit` (a reset counts).
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        self.raw.set_read_timeout(Some(limit)).unwrap();
        let mut scratch = [0u8; 4096];
        loop {
            match self.raw.read(&mut scratch) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
                Err(_) => return true,
            }
        }
    }
}
