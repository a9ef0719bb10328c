//! Byte-stream plumbing both listener kinds (NSQ TCP and HTTP) share; no protocol here.
//!
//! - [`accept`]: the accept loop of every listener, under the shared connection caps.
//! - [`stream`]: the boxed stream type of a leg, and a stream that replays bytes already read.
//! - [`tls_stream`]: TLS on the NSQ legs over rustls's unbuffered API; idle sessions hold no buffer.
//! - [`compressed`]: a client leg with snappy or DEFLATE negotiated, as a plain byte stream.
//! - [`proxied`]: the PROXY protocol header a trusted load balancer puts before a connection.
//! - [`operators`]: the bounded accept loop of the admin listener and the auth service.
//! - [`workers`]: the threads connections run on, one single-threaded runtime each.

pub mod accept;
pub mod compressed;
pub mod operators;
pub mod proxied;
pub mod stream;
pub mod tls_stream;
pub mod workers;
