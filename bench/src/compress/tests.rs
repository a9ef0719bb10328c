use std::io::{Read, Write};

use bytes::BytesMut;

use super::*;

/// Text that compresses about as well as JSON does (not a run of one byte).
fn sample(len: usize) -> Vec<u8> {
    let words = [
        "alpha", "beta", "gamma", "delta", "\"id\":", "{\"ts\":", "}\n",
    ];
    let mut out = Vec::with_capacity(len + 8);
    let mut i = 7u32;
    while out.len() < len {
        i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        out.extend_from_slice(words[(i >> 16) as usize % words.len()].as_bytes());
        out.extend_from_slice((i % 1000).to_string().as_bytes());
    }
    out.truncate(len);
    out
}

/// Feeds `wire` to the decoder a few bytes at a time, as reads may deliver it.
fn decode_in_pieces(decoder: &mut Decoder, wire: &[u8], piece: usize) -> Vec<u8> {
    let (mut input, mut out) = (BytesMut::new(), BytesMut::new());
    for part in wire.chunks(piece) {
        input.extend_from_slice(part);
        decoder.decode(&mut input, &mut out).ok();
    }
    assert!(input.is_empty(), "{} bytes left undecoded", input.len());
    out.to_vec()
}

#[test]
fn crc32c_matches_the_standard_check_value() {
    assert_eq!(crc32c(&crc32c_table(), b"123456789"), 0xe306_9283);
}

#[test]
fn snappy_frames_are_read_by_the_reference_decoder() {
    let data = sample(150_000); // three chunks
    let mut encoder = Encoder::new(Codec::Snappy, 6).unwrap();
    let mut wire = BytesMut::new();
    encoder.encode(&data[..1000], &mut wire).unwrap();
    encoder.encode(&data[1000..], &mut wire).unwrap();
    assert!(
        wire.len() < data.len() * 3 / 4,
        "text should compress: {}",
        wire.len()
    );
    let mut read = Vec::new();
    snap::read::FrameDecoder::new(&wire[..])
        .read_to_end(&mut read)
        .unwrap();
    assert_eq!(read, data);
}

#[test]
fn snappy_frames_of_the_reference_encoder_decode_in_pieces() {
    let data = sample(100_000);
    let mut writer = snap::write::FrameEncoder::new(Vec::new());
    writer.write_all(&data).unwrap();
    let wire = writer.into_inner().unwrap();
    let mut decoder = Decoder::new(Codec::Snappy).unwrap();
    assert_eq!(decode_in_pieces(&mut decoder, &wire, 7), data);
}

#[test]
fn a_snappy_chunk_with_a_wrong_checksum_is_an_error() {
    let mut encoder = Encoder::new(Codec::Snappy, 6).unwrap();
    let mut wire = BytesMut::new();
    encoder.encode(&sample(500), &mut wire).unwrap();
    let crc_at = STREAM_IDENTIFIER.len() + 4;
    wire[crc_at] ^= 1;
    let mut decoder = Decoder::new(Codec::Snappy).unwrap();
    let result = decoder.decode(&mut wire, &mut BytesMut::new());
    assert!(
        matches!(result, Err(CompressError::SnappyChecksum)),
        "{result:?}"
    );
}

#[test]
fn each_deflate_encode_is_complete_for_the_reference_inflater() {
    let data = sample(20_000);
    let mut encoder = Encoder::new(Codec::Deflate, 6).unwrap();
    let mut wire = BytesMut::new();
    encoder.encode(&data[..300], &mut wire).unwrap();
    // Sync-flushed: the first write decodes in full before the second is sent.
    let mut first = vec![0u8; 300];
    flate2::read::DeflateDecoder::new(&wire[..])
        .read_exact(&mut first)
        .unwrap();
    assert_eq!(first, data[..300]);
    encoder.encode(&data[300..], &mut wire).unwrap();
    let mut decoder = Decoder::new(Codec::Deflate).unwrap();
    assert_eq!(decode_in_pieces(&mut decoder, &wire, 5), data);
}

#[test]
fn deflate_that_expands_a_lot_decodes_in_full() {
    let data = vec![b'x'; 1_000_000];
    let mut writer = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    writer.write_all(&data).unwrap();
    writer.flush().unwrap();
    let wire = writer.get_ref().clone();
    let mut decoder = Decoder::new(Codec::Deflate).unwrap();
    assert_eq!(
        decode_in_pieces(&mut decoder, &wire, 1000).len(),
        data.len()
    );
}

#[test]
fn no_codec_for_none() {
    assert!(Encoder::new(Codec::None, 6).is_none());
    assert!(Decoder::new(Codec::None).is_none());
}
