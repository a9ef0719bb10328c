use std::future::Future;
use std::pin::pin;
use std::task::{Context, Waker};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::*;

/// Polls a read once: it waits, as on a connection with nothing to say.
fn poll_once<F: Future>(read: F) -> bool {
    let mut read = pin!(read);
    read.as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_pending()
}

#[tokio::test]
async fn a_quiet_connection_holds_no_buffer_and_still_reads_the_next_frame() {
    let (mut far, mut near) = tokio::io::duplex(64 * 1024);
    let mut reader = Reader::default();
    // Left over from earlier traffic, drained.
    let mut buf = BytesMut::with_capacity(SMALL_READ);
    assert!(poll_once(reader.read(&mut near, &mut buf)));
    assert_eq!(buf.capacity(), 0, "an idle connection kept its read buffer");

    far.write_all(b"PUB topic\n\0\0\0\x05hello").await.unwrap();
    let n = reader.read(&mut near, &mut buf).await.unwrap();
    assert_eq!(n, 19);
    assert_eq!(&buf[..], b"PUB topic\n\0\0\0\x05hello");
}

#[tokio::test]
async fn a_partial_frame_reads_on_into_its_buffer() {
    let (mut far, mut near) = tokio::io::duplex(64 * 1024);
    let mut reader = Reader::default();
    let mut buf = BytesMut::from(&b"PUB to"[..]);
    far.write_all(b"pic\n").await.unwrap();
    reader.read(&mut near, &mut buf).await.unwrap();
    assert_eq!(&buf[..], b"PUB topic\n");
    assert!(buf.capacity() >= SMALL_READ);
}

#[tokio::test]
async fn reads_that_come_back_full_grow_to_large_ones() {
    let (mut far, mut near) = tokio::io::duplex(256 * 1024);
    let sent: Vec<u8> = (0..3 * QUIET_READ).map(|i| i as u8).collect();
    far.write_all(&sent).await.unwrap();
    let mut reader = Reader::default();
    let mut buf = BytesMut::new();
    assert_eq!(reader.read(&mut near, &mut buf).await.unwrap(), QUIET_READ);
    reader.read(&mut near, &mut buf).await.unwrap();
    assert!(buf.capacity() >= LARGE_READ, "{}", buf.capacity());
    assert_eq!(&buf[..], &sent[..]);
}

/// Reads `bytes` in a quiet read (`buf` drained) and returns what came.
async fn quiet_read(reader: &mut Reader, buf: &mut BytesMut, bytes: &[u8]) -> BytesMut {
    let (mut far, mut near) = tokio::io::duplex(64 * 1024);
    far.write_all(bytes).await.unwrap();
    let n = reader.read(&mut near, buf).await.unwrap();
    buf.split_to(n)
}

#[tokio::test]
async fn a_drained_buffer_serves_the_next_quiet_read() {
    let mut reader = Reader::default();
    let mut buf = BytesMut::new();
    let first = quiet_read(&mut reader, &mut buf, b"PUB t\n\0\0\0\x01a").await;
    let at = first.as_ptr();
    drop(first);
    // Drained and waiting: the buffer is the thread's, not the connection's.
    let (_far, mut near) = tokio::io::duplex(64);
    assert!(poll_once(reader.read(&mut near, &mut buf)));
    assert_eq!((buf.capacity(), spares_kept()), (0, 1));
    let second = quiet_read(&mut reader, &mut buf, b"PUB t\n\0\0\0\x01b").await;
    assert_eq!(&second[..], b"PUB t\n\0\0\0\x01b");
    assert_eq!(spares_kept(), 0, "the kept buffer was not taken");
    // Kept by the thread, the first buffer's memory cannot have gone to a new one.
    let within = (at as usize..at as usize + SMALL_READ).contains(&(second.as_ptr() as usize));
    assert!(within, "the drained buffer was not used again");
}

#[tokio::test]
async fn a_buffer_that_grew_for_a_large_frame_is_not_kept() {
    let mut reader = Reader::default();
    let mut buf = BytesMut::new();
    let start = quiet_read(&mut reader, &mut buf, b"PUB t\n").await;
    // The rest of a large frame comes in reads that grow the buffer.
    buf.unsplit(start);
    let (mut far, mut near) = tokio::io::duplex(256 * 1024);
    far.write_all(&[7u8; 8 * 1024]).await.unwrap();
    while buf.len() < 6 + 8 * 1024 {
        reader.read(&mut near, &mut buf).await.unwrap();
    }
    drop(buf.split());
    let next = quiet_read(&mut reader, &mut buf, b"NOP\n").await;
    let size = next.len() + buf.capacity();
    assert!(
        size <= QUIET_READ,
        "a grown buffer was kept for quiet reads ({size} bytes)"
    );
}
