//! The PROXY protocol (v1 text, v2 binary) that TCP load balancers put in front of a
//! connection, read only from configured trusted sources, so limits and the audit log see the
//! real client address. Parsing is the `ppp` crate's; this reads just the header's bytes.

use std::net::SocketAddr;

use bytes::BytesMut;
use ppp::{HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A v2 header may carry TLVs; nothing legitimate needs more than this.
const MAX_HEADER: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("trusted source sent no valid PROXY header: {0}")]
    Invalid(String),
    #[error("PROXY header larger than {MAX_HEADER} bytes")]
    TooLarge,
    #[error("connection closed inside the PROXY header")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads the header; returns the client address it names (`peer` for LOCAL/UNKNOWN) and leaves
/// any bytes after the header in `buf`.
pub async fn read_header(
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
    peer: SocketAddr,
) -> Result<SocketAddr, ProxyHeaderError> {
    loop {
        if let Some((len, client)) = parse(buf, peer)? {
            let _ = buf.split_to(len);
            return Ok(client);
        }
        if buf.len() >= MAX_HEADER {
            return Err(ProxyHeaderError::TooLarge);
        }
        buf.reserve(256);
        if tcp.read_buf(buf).await? == 0 {
            return Err(ProxyHeaderError::Closed);
        }
    }
}

/// Some((header length, client address)) once a whole header is buffered. No I/O.
pub(crate) fn parse(
    buf: &[u8],
    peer: SocketAddr,
) -> Result<Option<(usize, SocketAddr)>, ProxyHeaderError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        return Ok(None);
    }
    match result {
        HeaderResult::V1(Ok(header)) => {
            let client = match header.addresses {
                ppp::v1::Addresses::Tcp4(a) => SocketAddr::from((a.source_address, a.source_port)),
                ppp::v1::Addresses::Tcp6(a) => SocketAddr::from((a.source_address, a.source_port)),
                ppp::v1::Addresses::Unknown => peer,
            };
            Ok(Some((header.header.len(), client)))
        }
        HeaderResult::V2(Ok(header)) => {
            let client = match header.addresses {
                ppp::v2::Addresses::IPv4(a) => SocketAddr::from((a.source_address, a.source_port)),
                ppp::v2::Addresses::IPv6(a) => SocketAddr::from((a.source_address, a.source_port)),
                ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => peer,
            };
            Ok(Some((header.len(), client)))
        }
        HeaderResult::V1(Err(e)) => Err(ProxyHeaderError::Invalid(format!("{e:?}"))),
        HeaderResult::V2(Err(e)) => Err(ProxyHeaderError::Invalid(format!("{e:?}"))),
    }
}

#[cfg(test)]
mod tests;
