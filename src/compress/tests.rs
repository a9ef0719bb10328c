use std::io::{Read, Write};

use bytes::BytesMut;

use super::*;

/// Text that compresses, with a binary tail that does not.
fn sample(len: usize) -> Vec<u8> {
    let mut data = b"PUB topic\n".repeat(len / 20);
    data.extend((0..len / 2).map(|i| (i * 7919 % 251) as u8));
    data
}

/// Everything `decoder` yields from `input`, `step` bytes of output at a time.
fn decode_all(
    decoder: &mut Decoder,
    input: &[u8],
    step: usize,
) -> Result<Vec<u8>, CompressionError> {
    let mut input = BytesMut::from(input);
    let mut out = Vec::new();
    let mut chunk = vec![0; step];
    loop {
        match decoder.decode(&mut input, &mut ReadBuf::new(&mut chunk))? {
            Decoded::Some(n) => {
                assert!(n <= step);
                out.extend_from_slice(&chunk[..n]);
            }
            Decoded::NeedMore | Decoded::End => return Ok(out),
        }
    }
}

fn encode(compression: Compression, data: &[u8]) -> Vec<u8> {
    let (mut encoder, _) = compression.codec();
    let mut out = Vec::new();
    encoder.encode(data, &mut out).unwrap();
    encoder.flush(&mut out).unwrap();
    out
}

#[test]
fn snappy_output_reads_back_with_the_snap_crates_frame_decoder() {
    let data = sample(300_000);
    let encoded = encode(Compression::Snappy, &data);
    assert!(encoded.starts_with(b"\xff\x06\x00\x00sNaPpY"));
    let mut decoded = Vec::new();
    snap::read::FrameDecoder::new(&encoded[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, data);
}

#[test]
fn snappy_input_from_the_snap_crates_frame_encoder_decodes() {
    let data = sample(200_000);
    let mut encoder = snap::write::FrameEncoder::new(Vec::new());
    encoder.write_all(&data).unwrap();
    let encoded = encoder.into_inner().unwrap();
    let (_, mut decoder) = Compression::Snappy.codec();
    assert_eq!(decode_all(&mut decoder, &encoded, 1000).unwrap(), data);
}

/// pynsq starts a new stream (identifier included) for every command it sends.
#[test]
fn snappy_accepts_a_stream_identifier_anywhere() {
    let mut stream = encode(Compression::Snappy, b"NOP\n");
    stream.extend(encode(Compression::Snappy, b"NOP\n"));
    let (_, mut decoder) = Compression::Snappy.codec();
    assert_eq!(
        decode_all(&mut decoder, &stream, 64).unwrap(),
        b"NOP\nNOP\n"
    );
}

#[test]
fn snappy_waits_for_a_whole_chunk_and_skips_padding() {
    let mut stream = encode(Compression::Snappy, b"hello");
    stream.extend_from_slice(b"\xfe\x03\x00\x00pad");
    stream.extend(&encode(Compression::Snappy, b" world")[10..]);
    let (_, mut decoder) = Compression::Snappy.codec();
    let mut input = BytesMut::new();
    let mut out = Vec::new();
    let mut buf = [0u8; 64];
    for byte in stream {
        input.extend_from_slice(&[byte]);
        while let Decoded::Some(n) = decoder
            .decode(&mut input, &mut ReadBuf::new(&mut buf))
            .unwrap()
        {
            out.extend_from_slice(&buf[..n]);
        }
    }
    assert_eq!(out, b"hello world");
}

#[test]
fn snappy_refuses_what_gos_reader_refuses() {
    let start = b"\xff\x06\x00\x00sNaPpY".to_vec();
    let with = |tail: &[u8]| [&start[..], tail].concat();
    let cases: [(Vec<u8>, &str); 6] = [
        (
            b"\x01\x05\x00\x00\x00\x00\x00\x00x".to_vec(),
            "does not start",
        ),
        (b"\xff\x06\x00\x00sNaPpX".to_vec(), "not \"sNaPpY\""),
        (with(b"\x00\xcf\x2a\x01"), "over the 76494-byte limit"),
        (with(b"\x01\x03\x00\x00abc"), "shorter than its checksum"),
        (
            with(b"\x01\x05\x00\x00\x00\x00\x00\x00x"),
            "checksum mismatch",
        ),
        (with(b"\x7f\x00\x00\x00"), "cannot be skipped"),
    ];
    for (stream, expected) in cases {
        let (_, mut decoder) = Compression::Snappy.codec();
        let error = decode_all(&mut decoder, &stream, 64).unwrap_err();
        assert!(
            error.to_string().contains(expected),
            "{error} for {stream:?}"
        );
    }
}

/// A compressed chunk that declares more than one block is refused from its varint header.
#[test]
fn snappy_refuses_a_block_declared_over_64_kib() {
    let data = vec![b'a'; 65_537];
    let mut block = vec![0; snap::raw::max_compress_len(data.len())];
    let n = snap::raw::Encoder::new()
        .compress(&data, &mut block)
        .unwrap();
    let mut stream = b"\xff\x06\x00\x00sNaPpY".to_vec();
    let len = (n + 4) as u32;
    stream.extend_from_slice(&[
        0x00,
        len as u8,
        (len >> 8) as u8,
        (len >> 16) as u8,
        0,
        0,
        0,
        0,
    ]);
    stream.extend_from_slice(&block[..n]);
    let (_, mut decoder) = Compression::Snappy.codec();
    let error = decode_all(&mut decoder, &stream, 64).unwrap_err();
    assert!(
        matches!(error, CompressionError::BlockTooLarge(65_537)),
        "{error}"
    );
}

#[test]
fn deflate_output_is_raw_and_decodable_after_each_flush() {
    let (mut encoder, _) = Compression::Deflate { level: 6 }.codec();
    let mut out = Vec::new();
    encoder.encode(b"first frame", &mut out).unwrap();
    encoder.flush(&mut out).unwrap();
    // A sync flush ends with an empty stored block, so everything so far decodes.
    assert!(out.ends_with(&[0x00, 0x00, 0xff, 0xff]));
    let mut decoder = flate2::write::DeflateDecoder::new(Vec::new());
    decoder.write_all(&out).unwrap();
    decoder.flush().unwrap();
    assert_eq!(decoder.get_ref(), b"first frame");
    // A flush with nothing new adds nothing.
    let before = out.len();
    encoder.flush(&mut out).unwrap();
    assert_eq!(out.len(), before);
}

#[test]
fn deflate_input_from_flate2_decodes_at_every_level() {
    let data = sample(150_000);
    for level in [1, 6, 9] {
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
        encoder.write_all(&data).unwrap();
        let encoded = encoder.finish().unwrap();
        let (_, mut decoder) = Compression::Deflate { level: 6 }.codec();
        assert_eq!(
            decode_all(&mut decoder, &encoded, 4096).unwrap(),
            data,
            "level {level}"
        );
        let mut rest = BytesMut::new();
        assert_eq!(
            decoder
                .decode(&mut rest, &mut ReadBuf::new(&mut [0; 8]))
                .unwrap(),
            Decoded::End
        );
    }
}

/// A bomb yields at most the room it is given per step, whatever it expands to.
#[test]
fn deflate_never_yields_more_than_the_room_given() {
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![0u8; 8 * 1024 * 1024]).unwrap();
    let bomb = encoder.finish().unwrap();
    let (_, mut decoder) = Compression::Deflate { level: 6 }.codec();
    let mut input = BytesMut::from(&bomb[..]);
    let mut out = [0u8; 100];
    assert_eq!(
        decoder
            .decode(&mut input, &mut ReadBuf::new(&mut out))
            .unwrap(),
        Decoded::Some(100)
    );
}

#[test]
fn deflate_refuses_a_corrupt_stream() {
    let (_, mut decoder) = Compression::Deflate { level: 6 }.codec();
    let error = decode_all(&mut decoder, &[0x07, 0xff, 0xff], 64).unwrap_err();
    assert!(
        error.to_string().contains("corrupt deflate stream"),
        "{error}"
    );
}

proptest::proptest! {
    /// Any bytes, cut anywhere, after a valid start or not: each decoder yields data, asks
    /// for more, or refuses; it never panics and never yields past the room it was given.
    #[test]
    fn decoders_take_any_input(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
        valid_start in proptest::prelude::any::<bool>(),
        room in 1usize..300,
    ) {
        for compression in [Compression::Snappy, Compression::Deflate { level: 6 }] {
            let mut stream = match valid_start {
                true => encode(compression, b"NOP\n"),
                false => Vec::new(),
            };
            stream.extend_from_slice(&bytes);
            let (_, mut decoder) = compression.codec();
            let _ = decode_all(&mut decoder, &stream, room);
        }
    }
}

#[test]
fn snappy_checksums_are_masked_crc32c() {
    // CRC-32C("123456789") is 0xe3069283 (RFC 3720's check value), then masked as the
    // framing format says: rotated right by 15 bits, plus 0xa282ead8.
    assert_eq!(super::snappy::masked_crc32c(b"123456789"), 0xc78a_b0e5);
    assert_eq!(super::snappy::masked_crc32c(b""), 0xa282_ead8);
}
