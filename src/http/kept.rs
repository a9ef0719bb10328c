//! One request's bytes on a kept-alive connection: hyper reads the screened head (already
//! read, replayed) and exactly the body its `Content-Length` declares, then end of stream. So
//! hyper never reads the next request's head, which nsqgate reads and screens itself before
//! handing it on (`server::serve_screened`); whatever the client sent beyond this request
//! stays for the next round.

use bytes::Bytes;

use crate::net::stream::Replay;

/// `read` holds what was read so far, head first; `request_len` is the head plus its body
/// (`None`: unknown, a chunked body: read on to the end). Returns the stream hyper reads and
/// what `read` holds beyond this request.
pub fn one_request<T>(mut read: Bytes, io: T, request_len: Option<u64>) -> (Replay<T>, Bytes) {
    let beyond = match request_len.map(usize::try_from) {
        Some(Ok(len)) if read.len() > len => read.split_off(len),
        _ => Bytes::new(),
    };
    (Replay::bounded(read, io, request_len), beyond)
}

/// The connection: `Ok` when hyper took exactly this request (head and whole body), so the
/// next byte starts a new request; `Err` when it did not.
pub fn finished<T>(one: Replay<T>) -> Result<T, T> {
    if one.at_limit() {
        Ok(one.into_inner())
    } else {
        Err(one.into_inner())
    }
}

#[cfg(test)]
mod tests;
