//! The client leg's compression as NSQ negotiates it in IDENTIFY, written here without I/O:
//! snappy's framing format (as golang/snappy, which nsqd uses, reads and writes it: a stream
//! identifier, then chunks of at most 64 KiB of input, each with its masked CRC-32C) and raw
//! DEFLATE (no zlib header, as Go's compress/flate) with a sync flush at every flush, so
//! nothing written waits in the compressor. Stream wrapper: compressed.rs.

use bytes::{Buf, BufMut, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

#[cfg(test)]
mod tests;

/// Which compression a run asks for in IDENTIFY.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Codec {
    None,
    Snappy,
    Deflate,
}

const STREAM_IDENTIFIER: &[u8] = b"\xff\x06\x00\x00sNaPpY";
const CHUNK_COMPRESSED: u8 = 0x00;
const CHUNK_UNCOMPRESSED: u8 = 0x01;
const CHUNK_STREAM_IDENTIFIER: u8 = 0xff;
/// The most input one snappy chunk carries.
const SNAPPY_BLOCK: usize = 64 * 1024;
/// Room given to the inflater per step (a DEFLATE stream may expand 1000-fold).
const INFLATE_STEP: usize = 64 * 1024;

#[derive(Debug)]
pub enum CompressError {
    Snappy(snap::Error),
    SnappyChecksum,
    SnappyUnskippableChunk(u8),
    SnappyBadIdentifier,
    Deflate(String),
}

impl std::fmt::Display for CompressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Snappy(e) => write!(f, "snappy: {e}"),
            Self::SnappyChecksum => write!(f, "snappy: a chunk's CRC-32C does not match"),
            Self::SnappyUnskippableChunk(kind) => write!(f, "snappy: reserved chunk {kind:#x}"),
            Self::SnappyBadIdentifier => write!(f, "snappy: bad stream identifier"),
            Self::Deflate(e) => write!(f, "deflate: {e}"),
        }
    }
}

impl std::error::Error for CompressError {}

/// CRC-32C (Castagnoli)'s 256-entry table, built once per codec.
fn crc32c_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    for (i, entry) in table.iter_mut().enumerate() {
        let mut crc = i as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
        *entry = crc;
    }
    table
}

pub fn crc32c(table: &[u32; 256], data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc = table[((crc ^ byte as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The framing format stores the CRC rotated and offset ("masked").
fn masked(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One direction's encoder: what is written goes in, the compressed bytes come out.
pub enum Encoder {
    Snappy {
        raw: Box<snap::raw::Encoder>,
        crc: Box<[u32; 256]>,
        started: bool,
    },
    Deflate(Box<Compress>),
}

/// One direction's decoder: compressed bytes go in (partial chunks wait), plain bytes out.
pub enum Decoder {
    Snappy {
        raw: snap::raw::Decoder,
        crc: Box<[u32; 256]>,
    },
    Deflate(Box<Decompress>),
}

impl Encoder {
    /// None for `Codec::None`; `level` is DEFLATE's (1-9).
    pub fn new(codec: Codec, level: u32) -> Option<Self> {
        match codec {
            Codec::None => None,
            Codec::Snappy => Some(Self::Snappy {
                raw: Box::new(snap::raw::Encoder::new()),
                crc: Box::new(crc32c_table()),
                started: false,
            }),
            Codec::Deflate => Some(Self::Deflate(Box::new(Compress::new(
                Compression::new(level),
                false,
            )))),
        }
    }

    /// Compresses all of `input` onto `out`, flushed: the peer can decode every byte of it.
    pub fn encode(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), CompressError> {
        match self {
            Self::Snappy { raw, crc, started } => {
                if !*started {
                    out.put_slice(STREAM_IDENTIFIER);
                    *started = true;
                }
                for block in input.chunks(SNAPPY_BLOCK) {
                    let compressed = raw.compress_vec(block).map_err(CompressError::Snappy)?;
                    // As golang/snappy: a block that does not shrink by 1/8 goes as it is.
                    let (kind, body) = if compressed.len() < block.len() - block.len() / 8 {
                        (CHUNK_COMPRESSED, &compressed[..])
                    } else {
                        (CHUNK_UNCOMPRESSED, block)
                    };
                    let length = (4 + body.len()) as u32;
                    out.put_u32_le(u32::from(kind) | (length << 8));
                    out.put_u32_le(masked(crc32c(crc, block)));
                    out.put_slice(body);
                }
                Ok(())
            }
            Self::Deflate(compress) => deflate(compress, input, out),
        }
    }
}

fn deflate(compress: &mut Compress, input: &[u8], out: &mut BytesMut) -> Result<(), CompressError> {
    let mut done = 0usize;
    loop {
        let room = input.len() - done + 1024;
        let mut scratch = vec![0u8; room];
        let (in0, out0) = (compress.total_in(), compress.total_out());
        compress
            .compress(&input[done..], &mut scratch, FlushCompress::Sync)
            .map_err(|e| CompressError::Deflate(e.to_string()))?;
        done += (compress.total_in() - in0) as usize;
        let produced = (compress.total_out() - out0) as usize;
        out.put_slice(&scratch[..produced]);
        // The sync flush is complete once all input is in and the output did not fill up.
        if done == input.len() && produced < room {
            return Ok(());
        }
    }
}

impl Decoder {
    pub fn new(codec: Codec) -> Option<Self> {
        match codec {
            Codec::None => None,
            Codec::Snappy => Some(Self::Snappy {
                raw: snap::raw::Decoder::new(),
                crc: Box::new(crc32c_table()),
            }),
            Codec::Deflate => Some(Self::Deflate(Box::new(Decompress::new(false)))),
        }
    }

    /// Decodes what `input` holds onto `out`; an incomplete chunk stays in `input`.
    pub fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<(), CompressError> {
        match self {
            Self::Snappy { raw, crc } => unframe(raw, crc, input, out),
            Self::Deflate(decompress) => inflate(decompress, input, out),
        }
    }
}

fn unframe(
    raw: &mut snap::raw::Decoder,
    crc: &[u32; 256],
    input: &mut BytesMut,
    out: &mut BytesMut,
) -> Result<(), CompressError> {
    while input.len() >= 4 {
        let header = u32::from_le_bytes([input[0], input[1], input[2], input[3]]);
        let (kind, length) = ((header & 0xff) as u8, (header >> 8) as usize);
        if input.len() < 4 + length {
            return Ok(());
        }
        input.advance(4);
        let body = input.split_to(length);
        match kind {
            CHUNK_STREAM_IDENTIFIER if &body[..] != b"sNaPpY" => {
                return Err(CompressError::SnappyBadIdentifier)
            }
            CHUNK_COMPRESSED | CHUNK_UNCOMPRESSED => {
                if body.len() < 4 {
                    return Err(CompressError::SnappyChecksum);
                }
                let expected = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
                let data = if kind == CHUNK_COMPRESSED {
                    raw.decompress_vec(&body[4..])
                        .map_err(CompressError::Snappy)?
                } else {
                    body[4..].to_vec()
                };
                if masked(crc32c(crc, &data)) != expected {
                    return Err(CompressError::SnappyChecksum);
                }
                out.put_slice(&data);
            }
            0x02..=0x7f => return Err(CompressError::SnappyUnskippableChunk(kind)),
            _ => {} // the identifier again, padding, or a skippable chunk
        }
    }
    Ok(())
}

fn inflate(
    decompress: &mut Decompress,
    input: &mut BytesMut,
    out: &mut BytesMut,
) -> Result<(), CompressError> {
    let mut scratch = vec![0u8; INFLATE_STEP];
    loop {
        let (in0, out0) = (decompress.total_in(), decompress.total_out());
        let status = decompress
            .decompress(input, &mut scratch, FlushDecompress::None)
            .map_err(|e| CompressError::Deflate(e.to_string()))?;
        let consumed = (decompress.total_in() - in0) as usize;
        let produced = (decompress.total_out() - out0) as usize;
        input.advance(consumed);
        out.put_slice(&scratch[..produced]);
        if status == Status::StreamEnd {
            return Err(CompressError::Deflate("the peer ended its stream".into()));
        }
        if produced < scratch.len() && (consumed == 0 || input.is_empty()) {
            return Ok(());
        }
    }
}
