#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use tokio::io::AsyncReadExt;

use super::*;

/// A stream over `client` (what the client sent, then its close).
fn screened(client: &'static [u8]) -> (Screened<&'static [u8]>, Arc<AtomicBool>) {
    let last = Arc::new(AtomicBool::new(false));
    (Screened::new(client, last.clone()), last)
}

/// Everything the stream yields until its end, read in steps of at most `step` bytes.
async fn read_all(stream: &mut Screened<&'static [u8]>, step: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = vec![0u8; step];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

const TWO: &[u8] =
    b"POST /pub HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcdeGET /next HTTP/1.1\r\n\r\n";

#[tokio::test]
async fn kept_alive_requests_pass_whole_head_and_declared_body_then_the_next() {
    for step in [1, 7, 4096] {
        let (mut stream, last) = screened(TWO);
        assert_eq!(read_all(&mut stream, step).await, TWO, "step {step}");
        assert!(stream.into_parts().1.is_none());
        assert!(!last.load(Ordering::Relaxed));
    }
}

/// A client whose bytes arrive one at a time.
struct Trickle(&'static [u8]);

impl tokio::io::AsyncRead for Trickle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some((first, rest)) = self.0.split_first() {
            buf.put_slice(&[*first]);
            self.0 = rest;
        }
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn heads_trickling_in_a_byte_at_a_time_are_found() {
    // Each empty line that ends a head arrives split across reads, a byte per read.
    let client: &[u8] = b"GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nokGET /c HTTP/1.1\r\n\r\n";
    let mut stream = Screened::new(Trickle(client), Arc::default());
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    assert_eq!(out, client);
    assert!(stream.into_parts().1.is_none());
}

#[tokio::test]
async fn a_head_failing_the_screen_is_never_handed_on() {
    // The second head has both framings: hyper gets the first request, then the end.
    let client: &[u8] = b"GET /ping HTTP/1.1\r\n\r\nPOST /pub HTTP/1.1\r\nContent-Length: 4\r\n\
Transfer-Encoding: chunked\r\n\r\nsmug";
    let (mut stream, _) = screened(client);
    assert_eq!(
        read_all(&mut stream, 4096).await,
        b"GET /ping HTTP/1.1\r\n\r\n"
    );
    assert_eq!(stream.into_parts().1, Some(HeadError::LengthAndChunked));
}

#[tokio::test]
async fn a_body_that_looks_like_a_request_is_body_not_head() {
    // A body is passed on as the length says; the bad head after it is still screened.
    let client: &[u8] = b"POST /pub HTTP/1.1\r\nContent-Length: 19\r\n\r\nGET /x HTTP/1.1\r\n\r\n\
GET /y HTTP/1.1\r\nHost a\r\n\r\n";
    let (mut stream, _) = screened(client);
    let got = read_all(&mut stream, 4096).await;
    assert!(got.ends_with(b"GET /x HTTP/1.1\r\n\r\n"), "{got:?}");
    assert_eq!(stream.into_parts().1, Some(HeadError::Malformed));
}

#[tokio::test]
async fn a_chunked_request_is_the_last_and_passes_on_to_the_end() {
    let client: &[u8] = b"POST /pub HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nmore";
    let (mut stream, last) = screened(client);
    assert_eq!(read_all(&mut stream, 4096).await, client);
    assert!(last.load(Ordering::Relaxed));
    assert!(stream.into_parts().1.is_none());
}

#[tokio::test]
async fn nothing_is_read_past_a_request_whose_client_asked_to_close() {
    let client: &[u8] = b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
    let (mut stream, last) = screened(client);
    assert_eq!(
        read_all(&mut stream, 4096).await,
        b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n"
    );
    assert!(last.load(Ordering::Relaxed));
}

#[tokio::test]
async fn a_head_cut_short_or_too_long_is_refused_and_a_quiet_close_is_not() {
    let (mut stream, _) = screened(b"GET /a HTTP/1.1\r\nHost:");
    assert!(read_all(&mut stream, 4096).await.is_empty());
    assert_eq!(stream.into_parts().1, Some(HeadError::Malformed));

    let endless: &'static [u8] = Vec::leak([b'a'; MAX_HEAD + 10].to_vec());
    let (mut stream, _) = screened(endless);
    assert!(read_all(&mut stream, 4096).await.is_empty());
    assert_eq!(stream.into_parts().1, Some(HeadError::Malformed));

    let (mut stream, _) = screened(b"");
    assert!(read_all(&mut stream, 4096).await.is_empty());
    assert!(stream.into_parts().1.is_none());
}
