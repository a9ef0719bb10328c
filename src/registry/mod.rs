//! Guarded registration: nsqd's registrations with nsqlookupd (TCP protocol V1) carried over
//! mutual TLS and checked against what each nsqd may announce.
//!
//! - [`wire`]: the V1 codec, bounded (sans-io).
//! - [`rules`]: what one nsqd identity may announce and register (pure).
pub mod rules;
pub mod wire;
