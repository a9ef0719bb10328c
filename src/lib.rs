//! nsqgate: an authenticating TLS proxy in front of stock NSQ.
//!
//! Layout: each module with what it is and what it refuses to do. Dependencies point one way:
//! the wire format, decisions and configuration import nothing async; `proxy` (NSQ TCP) and
//! `http` are siblings over [`shared`] and [`net`], and `http` imports nothing from `proxy`.
//! - [`nsq`]: the NSQ TCP protocol V2 (commands, frames, nsqd's error texts); no I/O.
//! - [`auth`]: who a client is (JWT, API key, client certificate) as a principal; no I/O but
//!   fetching an issuer's JWKS ([`auth::jwks`]); never decides what the principal may do.
//! - [`policy`]: allow/deny over roles, topics and channels; pure, reads only its files.
//! - [`limit`]: rate buckets, name quotas, connection caps and the unauthenticated memory
//!   budget; counts and refuses, no I/O.
//! - [`compress`]: snappy framing and raw DEFLATE as nsqd speaks them on a client leg;
//!   bounded, no I/O.
//! - [`config`]: the TOML/env configuration parsed into validated values; no sockets.
//! - [`tls`]: rustls set-ups for both legs from [`config`]; reads PEM files, no sockets.
//! - [`certs`]: development CA and leaf certificates (rcgen); never for production.
//! - [`integrity`]: end-to-end message signing: the envelope, keys by id, which topics are
//!   signed; no I/O (the relay and the HTTP front call it).
//! - [`audit`]: the audit trail of security decisions; never a secret.
//! - [`error`]: how a session ended: a closed set of kinds and who is to blame; no I/O.
//! - [`metrics`]: the Prometheus registry every listener counts into; bounded labels, no I/O.
//! - [`logging`]: the log set-up, every field escaped; no raw client bytes reach a log.
//! - [`cluster`]: the Redis client several replicas share limits and revocations through;
//!   every call bounded by `cluster.timeout_ms`.
//! - [`check`]: `check-config`: everything a start loads, loaded; with `--probe`, each nsqd
//!   reached with a verified handshake.
//! - [`explain`]: `policy explain`, the proxy's decision for one caller; no network.
//! - [`swap`]: a value replaced whole while readers keep the one they took; no I/O.
//! - [`shared`]: the process-wide core every listener shares; holds state, does no I/O.
//! - [`net`]: byte-stream plumbing of every listener (accept loop, PROXY header, replay);
//!   no protocol.
//! - [`proxy`]: the NSQ TCP listeners and their sessions; all NSQ TCP network I/O.
//! - [`registry`]: guarded nsqd registration with nsqlookupd (protocol V1 over mutual TLS):
//!   the codec and rules (sans-io), the sidecar and guard roles (their I/O).
//! - [`http`]: HTTPS fronts for nsqd's HTTP API, nsqlookupd and nsqadmin; nothing from
//!   `proxy`.
//! - [`reload`]: re-reads certificates, keys and the policy on SIGHUP and file changes, each
//!   swapped in whole or not at all; no sockets.
//! - [`admin`]: the operators' listener: `/metrics`, `/healthz`, `/readyz` and the nsqd
//!   probes behind readiness.
//! - [`authsvc`]: the HTTP auth server stock nsqd asks (`--auth-http-address`), answered from
//!   the same policy and credentials; grants only, so what an overlapping deny carves out is
//!   left out whole.
//! - [`process`]: the runtime, signals and log sinks around [`app`]; no protocol.
//! - [`app`]: wires configuration to listeners and runs until shutdown; no protocol.
//! - [`fuzz`]: entry points of the fuzz targets in `fuzz/`, one pure call each; no I/O.

pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod authsvc;
pub mod certs;
pub mod check;
pub mod cluster;
pub mod compress;
pub mod config;
pub mod error;
pub mod explain;
pub mod fuzz;
pub mod http;
pub mod integrity;
pub mod limit;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod nsq;
pub mod pidfile;
pub mod policy;
pub mod process;
pub mod proxy;
pub mod registry;
pub mod reload;
pub mod shared;
pub mod swap;
pub mod tls;
