//! The `[http]` section: HTTPS fronts for nsqd's HTTP API, nsqlookupd and nsqadmin. The serde
//! shape ([`RawHttp`]) and its validated form ([`HttpConfig`]); no I/O here.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use super::locate::millis;
use super::{ConfigError, Locator};

// === raw, as written ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// Deadline for an upstream's response head (nsqd's /debug/pprof/profile takes 30 s).
    #[serde(default = "default_upstream_timeout")]
    pub upstream_timeout_ms: u64,
    /// Deadline for reading a client's request head and body.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// Idle connections kept for reuse per upstream on each connection worker; 0: none.
    #[serde(default = "default_upstream_max_idle")]
    pub upstream_max_idle: u32,
    /// How long an unused upstream connection is kept (nsqd v1.3.0 keeps one forever).
    #[serde(default = "default_upstream_idle_timeout")]
    pub upstream_idle_timeout_ms: u64,
    /// Browser origins (`https://host[:port]`) trusted to send state-changing requests besides
    /// each front's own; default none.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    pub nsqd: Option<RawNsqdFront>,
    pub lookupd: Option<RawLookupdFront>,
    pub nsqadmin: Option<RawAdminFront>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNsqdFront {
    pub listen: String,
    pub plain_listen: Option<String>,
    pub upstream: String,
    #[serde(default = "default_true")]
    pub upstream_tls: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLookupdFront {
    pub listen: String,
    pub plain_listen: Option<String>,
    pub upstream: String,
    /// Callers without any credential may discover (`/lookup`, `/nodes`: producers only).
    #[serde(default)]
    pub anonymous_discovery: bool,
    #[serde(default)]
    pub nodes: Vec<RawNode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub broadcast_address: String,
    pub tcp_port: u16,
    pub http_port: u16,
    pub gate_address: String,
    pub gate_tcp_port: u16,
    pub gate_http_port: u16,
    /// The IPs this nsqd registers with nsqlookupd from; default: `broadcast_address`
    /// (resolved when it is a name).
    #[serde(default)]
    pub registered_from: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdminFront {
    pub listen: String,
    pub upstream: String,
}

fn default_true() -> bool {
    true
}

fn default_upstream_timeout() -> u64 {
    60_000
}

fn default_request_timeout() -> u64 {
    30_000
}

fn default_upstream_max_idle() -> u32 {
    16
}

/// Below the idle timeouts of the load balancers commonly put in front of nsqd (60 s and
/// more), so nsqgate closes an idle connection before anything else would.
fn default_upstream_idle_timeout() -> u64 {
    30_000
}

/// More idle connections than this per upstream and worker is a typo, not a need.
const MAX_UPSTREAM_IDLE: u32 = 1024;

// === validated ===

#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub upstream_timeout: Duration,
    pub request_timeout: Duration,
    /// Idle upstream connections kept per upstream on each connection worker (0: none).
    pub upstream_max_idle: usize,
    pub upstream_idle_timeout: Duration,
    /// Normalized (`scheme://host[:port]`, lower case): other origins whose browser requests
    /// may change state (CSRF defence; a front's own origin always may).
    pub allowed_origins: Vec<String>,
    pub nsqd: Option<NsqdFront>,
    pub lookupd: Option<LookupdFront>,
    pub nsqadmin: Option<AdminFront>,
}

/// The HTTPS front of nsqd's HTTP API.
#[derive(Clone, Debug)]
pub struct NsqdFront {
    pub listen: SocketAddr,
    /// A plain-HTTP listener that only tells clients to move to `listen` (403 TLS_REQUIRED).
    pub plain_listen: Option<SocketAddr>,
    /// nsqd's `--https-address` (or its plain `--http-address` when `upstream_tls` is off).
    pub upstream: String,
    /// Verified TLS to nsqd with the `[upstream]` CA and server name; off only when the file
    /// says `upstream_tls = false`.
    pub upstream_tls: bool,
}

/// The HTTPS front of nsqlookupd, rewriting producers to nsqgate addresses.
#[derive(Clone, Debug)]
pub struct LookupdFront {
    pub listen: SocketAddr,
    pub plain_listen: Option<SocketAddr>,
    /// nsqlookupd's HTTP address; nsqlookupd has no TLS, so this leg is plain HTTP.
    pub upstream: String,
    /// The nsqd instances nsqgate fronts; producers not listed here are dropped.
    pub nodes: Vec<NodeMapping>,
    /// Callers with no credential and no certificate may use `/lookup` and `/nodes` (which
    /// nsqgate addresses serve a topic; no channels, no topic lists) and nothing else, for
    /// clients that send no credential to lookupd (pynsq, nsqjs).
    pub anonymous_discovery: bool,
}

/// One nsqd as nsqlookupd knows it, and the nsqgate address clients should use instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeMapping {
    pub broadcast_address: String,
    pub tcp_port: u16,
    pub http_port: u16,
    pub gate_address: String,
    pub gate_tcp_port: u16,
    pub gate_http_port: u16,
    /// The addresses nsqlookupd may have seen this nsqd's registration come from (its
    /// `remote_address`); empty: `broadcast_address`, resolved when a producer is matched.
    pub registered_from: Vec<IpAddr>,
}

/// The HTTPS front of nsqadmin.
#[derive(Clone, Debug)]
pub struct AdminFront {
    pub listen: SocketAddr,
    /// nsqadmin's `--http-address` (plain HTTP; run it where only nsqgate can reach it).
    pub upstream: String,
}

// === impl HttpConfig ===

impl HttpConfig {
    /// Validates the section; `upstream_tls_configured` says whether `[upstream]` has TLS
    /// settings (CA and server name) the nsqd front can verify nsqd's HTTPS port with.
    pub(super) fn from_raw(
        raw: RawHttp,
        upstream_tls_configured: bool,
        at: &Locator<'_>,
    ) -> Result<HttpConfig, ConfigError> {
        let nsqd = match raw.nsqd {
            Some(front) => Some(nsqd_front(front, upstream_tls_configured, at)?),
            None => None,
        };
        let lookupd = match raw.lookupd {
            Some(front) => Some(lookupd_front(front, at)?),
            None => None,
        };
        let nsqadmin = match raw.nsqadmin {
            Some(front) => Some(AdminFront {
                listen: address(at, "http.nsqadmin.listen", &front.listen)?,
                upstream: host_port(at, "http.nsqadmin.upstream", front.upstream)?,
            }),
            None => None,
        };
        let mut seen = HashSet::new();
        let listeners = [
            ("http.nsqd.listen", nsqd.as_ref().map(|f| f.listen)),
            (
                "http.nsqd.plain_listen",
                nsqd.as_ref().and_then(|f| f.plain_listen),
            ),
            ("http.lookupd.listen", lookupd.as_ref().map(|f| f.listen)),
            (
                "http.lookupd.plain_listen",
                lookupd.as_ref().and_then(|f| f.plain_listen),
            ),
            ("http.nsqadmin.listen", nsqadmin.as_ref().map(|f| f.listen)),
        ];
        for (key, listen) in listeners {
            if let Some(listen) = listen {
                if listen.port() != 0 && !seen.insert(listen) {
                    return Err(at.invalid(key, format!("{listen} is used by another listener")));
                }
            }
        }
        let allowed_origins = raw
            .allowed_origins
            .iter()
            .map(|origin| {
                crate::http::origin::normalize(origin).ok_or_else(|| {
                    at.invalid(
                        "http.allowed_origins",
                        format!("{origin:?} is not an origin (scheme://host[:port], no path)"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HttpConfig {
            upstream_timeout: millis(at, "http.upstream_timeout_ms", raw.upstream_timeout_ms)?,
            request_timeout: millis(at, "http.request_timeout_ms", raw.request_timeout_ms)?,
            upstream_max_idle: max_idle(at, raw.upstream_max_idle)?,
            upstream_idle_timeout: millis(
                at,
                "http.upstream_idle_timeout_ms",
                raw.upstream_idle_timeout_ms,
            )?,
            allowed_origins,
            nsqd,
            lookupd,
            nsqadmin,
        })
    }
}

fn nsqd_front(
    raw: RawNsqdFront,
    upstream_tls_configured: bool,
    at: &Locator<'_>,
) -> Result<NsqdFront, ConfigError> {
    if raw.upstream_tls && !upstream_tls_configured {
        return Err(at.invalid(
            "http.nsqd.upstream_tls",
            "verifying nsqd's HTTPS port needs [upstream] tls_ca and tls_server_name; \
             set upstream_tls = false only for a plaintext nsqd on the same host"
                .into(),
        ));
    }
    Ok(NsqdFront {
        listen: address(at, "http.nsqd.listen", &raw.listen)?,
        plain_listen: match &raw.plain_listen {
            Some(plain) => Some(address(at, "http.nsqd.plain_listen", plain)?),
            None => None,
        },
        upstream: host_port(at, "http.nsqd.upstream", raw.upstream)?,
        upstream_tls: raw.upstream_tls,
    })
}

fn lookupd_front(raw: RawLookupdFront, at: &Locator<'_>) -> Result<LookupdFront, ConfigError> {
    let mut known = HashSet::new();
    let mut nodes = Vec::with_capacity(raw.nodes.len());
    for (index, node) in raw.nodes.into_iter().enumerate() {
        if node.broadcast_address.is_empty() || node.gate_address.is_empty() {
            return Err(at.invalid(
                "http.lookupd.nodes",
                format!("nodes[{index}]: broadcast_address and gate_address may not be empty"),
            ));
        }
        let key = (
            node.broadcast_address.clone(),
            node.tcp_port,
            node.http_port,
        );
        if !known.insert(key) {
            return Err(at.invalid(
                "http.lookupd.nodes",
                format!(
                    "nodes[{index}]: {}:{} is listed twice",
                    node.broadcast_address, node.tcp_port
                ),
            ));
        }
        let registered_from = node
            .registered_from
            .iter()
            .map(|ip| {
                ip.parse().map_err(|_| {
                    at.invalid(
                        "http.lookupd.nodes",
                        format!("nodes[{index}]: registered_from {ip:?} is not an IP address"),
                    )
                })
            })
            .collect::<Result<Vec<IpAddr>, _>>()?;
        nodes.push(NodeMapping {
            broadcast_address: node.broadcast_address,
            tcp_port: node.tcp_port,
            http_port: node.http_port,
            gate_address: node.gate_address,
            gate_tcp_port: node.gate_tcp_port,
            gate_http_port: node.gate_http_port,
            registered_from,
        });
    }
    Ok(LookupdFront {
        listen: address(at, "http.lookupd.listen", &raw.listen)?,
        plain_listen: match &raw.plain_listen {
            Some(plain) => Some(address(at, "http.lookupd.plain_listen", plain)?),
            None => None,
        },
        upstream: host_port(at, "http.lookupd.upstream", raw.upstream)?,
        nodes,
        anonymous_discovery: raw.anonymous_discovery,
    })
}

fn max_idle(at: &Locator<'_>, value: u32) -> Result<usize, ConfigError> {
    if value > MAX_UPSTREAM_IDLE {
        let why = format!("at most {MAX_UPSTREAM_IDLE} (per upstream, on each worker)");
        return Err(at.invalid("http.upstream_max_idle", why));
    }
    usize::try_from(value).map_err(|e| at.invalid("http.upstream_max_idle", e.to_string()))
}

fn address(at: &Locator<'_>, key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse()
        .map_err(|e| at.invalid(key, format!("not an IP:port address: {e}")))
}

/// `host:port`, resolved at connect time so a container name works.
fn host_port(at: &Locator<'_>, key: &str, text: String) -> Result<String, ConfigError> {
    let valid = text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if valid && !text.contains('/') {
        Ok(text)
    } else {
        Err(at.invalid(key, "expected host:port (no scheme, no path)".into()))
    }
}
