//! Snappy's framing format as Go's `github.com/golang/snappy` Reader and Writer (nsqd's and
//! go-nsq's) read and write it: a stream identifier chunk, then chunks of at most 64 KiB of
//! data, each compressed (or stored, when compression saves under 12.5 %) with the masked
//! CRC-32C of its data. Blocks are compressed by the `snap` crate; no I/O here.

use bytes::{Buf, BytesMut};
use tokio::io::ReadBuf;

use super::{CompressionError, Decoded};

/// The most data one chunk carries (Go's `maxBlockSize`).
pub const MAX_BLOCK: usize = 65536;
/// The longest chunk body Go's reader accepts (`maxEncodedLenOfMaxBlockSize` plus the
/// checksum); a longer declared length is refused before it is buffered.
pub const MAX_CHUNK: usize = 76490 + CHECKSUM;

const HEADER: usize = 4;
const CHECKSUM: usize = 4;
const STREAM_IDENTIFIER: &[u8; 10] = b"\xff\x06\x00\x00sNaPpY";

const COMPRESSED: u8 = 0x00;
const UNCOMPRESSED: u8 = 0x01;
const IDENTIFIER: u8 = 0xff;
/// 0x02..=0x7f are reserved and unskippable; 0x80..=0xfe (padding included) are skipped.
const LAST_UNSKIPPABLE: u8 = 0x7f;

/// Writes the framing format: each `encode` call ends on a chunk boundary.
pub struct Encoder {
    raw: snap::raw::Encoder,
    wrote_identifier: bool,
}

/// Reads the framing format one whole chunk at a time.
pub struct Decoder {
    raw: snap::raw::Decoder,
    seen_identifier: bool,
    /// The current chunk's data, handed out from `taken` on.
    block: Vec<u8>,
    taken: usize,
}

// === impl Encoder ===

impl Encoder {
    pub fn new() -> Encoder {
        Encoder {
            raw: snap::raw::Encoder::new(),
            wrote_identifier: false,
        }
    }

    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CompressionError> {
        if !self.wrote_identifier {
            out.extend_from_slice(STREAM_IDENTIFIER);
            self.wrote_identifier = true;
        }
        for block in input.chunks(MAX_BLOCK) {
            let start = out.len();
            let body = start + HEADER + CHECKSUM;
            // Compressed in place, past the header; replaced by the data if it saves too little.
            out.resize(body + snap::raw::max_compress_len(block.len()), 0);
            let compressed = self.raw.compress(block, &mut out[body..])?;
            let (kind, len) = if compressed >= block.len() - block.len() / 8 {
                out.truncate(body);
                out.extend_from_slice(block);
                (UNCOMPRESSED, block.len())
            } else {
                out.truncate(body + compressed);
                (COMPRESSED, compressed)
            };
            let chunk_len = (len + CHECKSUM) as u32;
            let header = [
                kind,
                chunk_len as u8,
                (chunk_len >> 8) as u8,
                (chunk_len >> 16) as u8,
            ];
            out[start..start + HEADER].copy_from_slice(&header);
            out[start + HEADER..body].copy_from_slice(&masked_crc32c(block).to_le_bytes());
        }
        Ok(())
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

// === impl Decoder ===

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            raw: snap::raw::Decoder::new(),
            seen_identifier: false,
            block: Vec::new(),
            taken: 0,
        }
    }

    /// Hands out the current block, or decodes the next whole chunk buffered in `input`.
    pub fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut ReadBuf<'_>,
    ) -> Result<Decoded, CompressionError> {
        loop {
            let left = &self.block[self.taken..];
            if !left.is_empty() {
                // Copied, not decoded, into `out`: none of it is zeroed first.
                let n = left.len().min(out.remaining());
                out.put_slice(&left[..n]);
                self.taken += n;
                return Ok(Decoded::Some(n));
            }
            if !self.next_chunk(input)? {
                return Ok(Decoded::NeedMore);
            }
        }
    }

    /// Takes one whole chunk from `input`; false when it is not all there yet. Its length is
    /// judged from the header alone, so nothing over the limit is ever waited for.
    fn next_chunk(&mut self, input: &mut BytesMut) -> Result<bool, CompressionError> {
        let Some(header) = input.get(..HEADER) else {
            return Ok(false);
        };
        let kind = header[0];
        let len =
            usize::from(header[1]) | usize::from(header[2]) << 8 | usize::from(header[3]) << 16;
        if !self.seen_identifier && kind != IDENTIFIER {
            return Err(CompressionError::MissingIdentifier);
        }
        if len > MAX_CHUNK {
            return Err(CompressionError::ChunkTooLarge(len));
        }
        if input.len() < HEADER + len {
            return Ok(false);
        }
        input.advance(HEADER);
        let body = input.split_to(len);
        match kind {
            COMPRESSED | UNCOMPRESSED => self.data_chunk(kind, &body)?,
            IDENTIFIER => {
                // Go accepts it again anywhere in the stream (pynsq starts one per command).
                if body[..] != STREAM_IDENTIFIER[HEADER..] {
                    return Err(CompressionError::BadIdentifier);
                }
                self.seen_identifier = true;
            }
            kind if kind <= LAST_UNSKIPPABLE => return Err(CompressionError::Unskippable(kind)),
            _ => {} // padding, or reserved and skippable
        }
        Ok(true)
    }

    fn data_chunk(&mut self, kind: u8, body: &[u8]) -> Result<(), CompressionError> {
        let Some((checksum, data)) = body.split_first_chunk::<CHECKSUM>() else {
            return Err(CompressionError::ShortChunk(body.len()));
        };
        let size = match kind {
            COMPRESSED => snap::raw::decompress_len(data)?,
            _ => data.len(),
        };
        if size > MAX_BLOCK {
            return Err(CompressionError::BlockTooLarge(size));
        }
        self.block.clear();
        if kind == COMPRESSED {
            self.block.resize(size, 0);
            let n = self.raw.decompress(data, &mut self.block)?;
            self.block.truncate(n);
        } else {
            self.block.extend_from_slice(data);
        }
        self.taken = 0;
        if masked_crc32c(&self.block) != u32::from_le_bytes(*checksum) {
            self.block.clear();
            return Err(CompressionError::Checksum);
        }
        Ok(())
    }

    /// Frees the block buffer once it has been handed out.
    pub fn shrink(&mut self) {
        if self.taken == self.block.len() {
            self.block = Vec::new();
            self.taken = 0;
        }
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

/// The framing format's checksum: CRC-32C, rotated and offset so that a CRC of data that
/// holds CRCs stays meaningful.
pub(super) fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
        .rotate_right(15)
        .wrapping_add(0xa282_ead8)
}
