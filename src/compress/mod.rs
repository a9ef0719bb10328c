//! The client leg's compression as nsqd v1.3.0 speaks it after IDENTIFY: snappy's framing
//! format ([`snappy`]) or raw DEFLATE with a sync flush per flush ([`deflate`]). Sans-io: bytes
//! in, bytes out, no sockets (the stream adapter is `net::compressed`).
//!
//! Bounded by construction: a decoder never produces more than the caller's output buffer, and
//! a snappy chunk's declared sizes are checked before anything is buffered or inflated, so a
//! decompression bomb costs at most one chunk of input and one 64 KiB block.

pub mod deflate;
pub mod snappy;

use tokio::io::ReadBuf;

/// What a client negotiated for its leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Snappy,
    /// Raw DEFLATE at this level (1..=9, as nsqd's --max-deflate-level allows).
    Deflate {
        level: u32,
    },
}

/// Why a compressed stream from the client cannot be read (or, for the encoder, written).
#[derive(Debug, thiserror::Error)]
pub enum CompressionError {
    #[error("snappy stream does not start with its stream identifier")]
    MissingIdentifier,
    #[error("snappy stream identifier is not \"sNaPpY\"")]
    BadIdentifier,
    #[error("snappy chunk of {0} bytes is over the {max}-byte limit", max = snappy::MAX_CHUNK)]
    ChunkTooLarge(usize),
    #[error("snappy data chunk of {0} bytes is shorter than its checksum")]
    ShortChunk(usize),
    #[error("snappy block declares {0} bytes, over the {max}-byte block limit", max = snappy::MAX_BLOCK)]
    BlockTooLarge(usize),
    #[error("snappy chunk type {0:#04x} is reserved and cannot be skipped")]
    Unskippable(u8),
    #[error("snappy checksum mismatch")]
    Checksum,
    #[error("corrupt snappy block: {0}")]
    Snappy(#[from] snap::Error),
    #[error("corrupt deflate stream: {0}")]
    Inflate(#[from] flate2::DecompressError),
    #[error("deflate compression failed: {0}")]
    Deflate(#[from] flate2::CompressError),
}

/// Compresses what nsqgate writes to the client.
pub enum Encoder {
    /// Boxed: snap's encoder carries its 2 KiB hash table inline.
    Snappy(Box<snappy::Encoder>),
    Deflate(deflate::Encoder),
}

/// Decompresses what the client sends.
pub enum Decoder {
    Snappy(snappy::Decoder),
    Deflate(deflate::Decoder),
}

/// What one decoding step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// This many bytes written to the output (never 0).
    Some(usize),
    /// Nothing can be produced until more input arrives.
    NeedMore,
    /// The compressed stream ended (DEFLATE's final block): as if the client closed.
    End,
}

// === impl Compression ===

impl Compression {
    /// A fresh encoder and decoder for one connection.
    pub fn codec(self) -> (Encoder, Decoder) {
        match self {
            Compression::Snappy => (
                Encoder::Snappy(Box::default()),
                Decoder::Snappy(snappy::Decoder::new()),
            ),
            Compression::Deflate { level } => (
                Encoder::Deflate(deflate::Encoder::new(level)),
                Decoder::Deflate(deflate::Decoder::new()),
            ),
        }
    }

    /// The most one connection's codec holds at once, buffers of its stream adapter included:
    /// what an unauthenticated client is charged for it. DEFLATE's is flate2's (miniz_oxide)
    /// compressor and inflater state; snappy's one chunk of input and one decoded block.
    pub fn memory_bound(self) -> usize {
        match self {
            Compression::Snappy => 192 * 1024,
            Compression::Deflate { .. } => 384 * 1024,
        }
    }

    /// The label for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Snappy => "snappy",
            Compression::Deflate { .. } => "deflate",
        }
    }
}

// === impl Encoder ===

impl Encoder {
    /// Appends `input`, compressed, to `out` (DEFLATE may hold some back until `flush`).
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CompressionError> {
        match self {
            Encoder::Snappy(e) => e.encode(input, out),
            Encoder::Deflate(e) => e.encode(input, out),
        }
    }

    /// Appends whatever the client needs to decode everything encoded so far.
    pub fn flush(&mut self, out: &mut Vec<u8>) -> Result<(), CompressionError> {
        match self {
            // Every snappy chunk is complete when encoded.
            Encoder::Snappy(_) => Ok(()),
            Encoder::Deflate(e) => e.flush(out),
        }
    }
}

// === impl Decoder ===

impl Decoder {
    /// Decodes from the front of `input` (taking what it used) into the unfilled part of
    /// `out`, initializing no more of it than a step needs: a read's buffer may be 64 KiB of
    /// which one small command is filled, and zeroing all of it per read cost more than the
    /// decoding.
    pub fn decode(
        &mut self,
        input: &mut bytes::BytesMut,
        out: &mut ReadBuf<'_>,
    ) -> Result<Decoded, CompressionError> {
        match self {
            Decoder::Snappy(d) => d.decode(input, out),
            Decoder::Deflate(d) => d.decode(input, out),
        }
    }

    /// Gives back buffers kept between blocks, for a connection going quiet.
    pub fn shrink(&mut self) {
        if let Decoder::Snappy(d) = self {
            d.shrink();
        }
    }
}

#[cfg(test)]
mod tests;
