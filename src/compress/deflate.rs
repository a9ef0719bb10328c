//! Raw DEFLATE (no zlib header) as nsqd's `compress/flate` writer and reader use it: output
//! is sync-flushed on every flush, so each write the relay flushes is decodable at once. The
//! work is flate2's; no I/O here.

use bytes::{Buf, BytesMut};
use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::ReadBuf;

use super::{CompressionError, Decoded};

/// Room made in the output per compression step.
const STEP: usize = 8 * 1024;
/// The most output inflated per decoding step (what is zeroed for it first).
const INFLATE_STEP: usize = 16 * 1024;

pub struct Encoder {
    deflate: Compress,
    /// Input was taken since the last sync flush.
    unflushed: bool,
}

pub struct Decoder {
    inflate: Decompress,
    ended: bool,
}

// === impl Encoder ===

impl Encoder {
    pub fn new(level: u32) -> Encoder {
        Encoder {
            deflate: Compress::new(flate2::Compression::new(level), false),
            unflushed: false,
        }
    }

    pub fn encode(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), CompressionError> {
        while !input.is_empty() {
            out.reserve(STEP);
            let before = self.deflate.total_in();
            self.deflate.compress_vec(input, out, FlushCompress::None)?;
            let taken = (self.deflate.total_in() - before) as usize;
            input = &input[taken..];
            self.unflushed = true;
        }
        Ok(())
    }

    /// A sync flush: everything so far, byte-aligned, ending with an empty stored block.
    pub fn flush(&mut self, out: &mut Vec<u8>) -> Result<(), CompressionError> {
        if !self.unflushed {
            return Ok(());
        }
        loop {
            out.reserve(STEP);
            let room = out.capacity() - out.len();
            let before = out.len();
            self.deflate.compress_vec(&[], out, FlushCompress::Sync)?;
            // The flush is done once it no longer fills all the room it was given.
            if out.len() - before < room {
                break;
            }
        }
        self.unflushed = false;
        Ok(())
    }
}

// === impl Decoder ===

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            inflate: Decompress::new(false),
            ended: false,
        }
    }

    /// Inflates from `input` into `out`: never more than `out` holds, whatever the input
    /// declares or repeats.
    pub fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut ReadBuf<'_>,
    ) -> Result<Decoded, CompressionError> {
        if self.ended {
            return Ok(Decoded::End);
        }
        let (in_before, out_before) = (self.inflate.total_in(), self.inflate.total_out());
        // Inflated in place: only this step's room is zeroed first (no unsafe).
        let room = out.initialize_unfilled_to(out.remaining().min(INFLATE_STEP));
        let status = self
            .inflate
            .decompress(input, room, FlushDecompress::None)?;
        input.advance((self.inflate.total_in() - in_before) as usize);
        let produced = (self.inflate.total_out() - out_before) as usize;
        if status == Status::StreamEnd {
            self.ended = true;
        }
        out.advance(produced);
        Ok(match (produced, self.ended) {
            (0, true) => Decoded::End,
            (0, false) => Decoded::NeedMore,
            (n, _) => Decoded::Some(n),
        })
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}
