//! nsqgate: an authenticating TLS proxy in front of stock NSQ.
//!
//! Layout:
//! - [`nsq`]: the NSQ TCP protocol V2, sans-io (bytes in, values out).
//! - [`auth`]: who a client is: JWT, API key or client certificate.
//! - [`identity`]: a presented secret (JWT or API key) turned into a principal.
//! - [`jwks`]: fetching and refreshing an issuer's JWKS over verified HTTPS.
//! - [`limit`]: publish rate limits and connection limits (flood and exhaustion defences).
//! - [`policy`]: pure allow/deny decisions over roles, topics and channels.
//! - [`config`]: the TOML/env configuration, parsed into validated values.
//! - [`explain`]: `policy explain`, the proxy's decision for one caller and action.
//! - [`tls`]: rustls server and client configurations built from [`config`].
//! - [`certs`]: development certificate authority and leaf certificates (rcgen).
//! - [`proxy`]: the listeners and the per-connection NSQ sessions (all network I/O).
//! - [`http`]: HTTPS fronts for nsqd's HTTP API, nsqlookupd and nsqadmin.
//! - [`audit`]: the audit trail of authentication and authorization decisions.
//! - [`error`]: how a session ended: a closed set of kinds, who is to blame, counted per kind.
//! - [`logging`]: the log set-up: escaped fields, audit JSON lines, the audit file sink.
//! - [`app`]: wires configuration to listeners and runs until shutdown.

pub mod app;
pub mod audit;
pub mod auth;
pub mod certs;
pub mod config;
pub mod error;
pub mod explain;
pub mod http;
pub mod limit;
pub mod logging;
pub mod net;
pub mod nsq;
pub mod policy;
pub mod proxy;
pub mod tls;
