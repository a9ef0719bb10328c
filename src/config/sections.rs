//! The sections of the configuration that need more than a field-by-field copy: listeners,
//! TLS files, the upstream and its nodes, connection caps and rate limits. No I/O but checking
//! that named files exist.

use std::time::Duration;

use crate::limit::conn::ConnSettings;
use crate::limit::RateSettings;

use super::locate::{millis, Locator};
use super::raw::{
    RawClient, RawConnections, RawNode, RawNsqdOptions, RawPool, RawRateLimits, RawUpstream,
};
use super::{
    ClientCertMode, ClientConfig, ConfigError, NodeConfig, NsqdOptions, PoolConfig, TlsVersion,
    UpstreamConfig, UpstreamTls,
};

pub(super) fn client(raw: RawClient, at: &Locator<'_>) -> Result<ClientConfig, ConfigError> {
    let listen = raw
        .listen
        .parse()
        .map_err(|e| at.invalid("client.listen", format!("not an IP:port address: {e}")))?;
    let tls_min_version = match raw.tls_min_version.as_str() {
        "1.2" | "tls1.2" => TlsVersion::V1_2,
        "1.3" | "tls1.3" => TlsVersion::V1_3,
        other => {
            return Err(at.invalid(
                "client.tls_min_version",
                format!("{other:?} is not supported; use \"1.2\" or \"1.3\""),
            ))
        }
    };
    let client_cert = match (raw.client_cert.as_deref(), &raw.tls_client_ca) {
        (None | Some("none"), None) => ClientCertMode::None,
        (None | Some("optional"), Some(_)) => ClientCertMode::Optional,
        (Some("required"), Some(_)) => ClientCertMode::Required,
        (Some("optional" | "required"), None) => {
            return Err(at.invalid(
                "client.tls_client_ca",
                "required when client_cert is optional or required".into(),
            ))
        }
        (Some("none"), Some(_)) => {
            return Err(at.invalid(
                "client.client_cert",
                "\"none\" contradicts tls_client_ca; remove one".into(),
            ))
        }
        (Some(other), _) => {
            return Err(at.invalid(
                "client.client_cert",
                format!("{other:?}: use \"none\", \"optional\" or \"required\""),
            ))
        }
    };
    let tls_client_ca = match &raw.tls_client_ca {
        Some(ca) => Some(at.existing("client.tls_client_ca", ca)?),
        None => None,
    };
    let tls_client_crls = raw
        .tls_client_crls
        .iter()
        .map(|crl| at.existing("client.tls_client_crls", crl))
        .collect::<Result<Vec<_>, _>>()?;
    if raw.cert_identity_order.is_empty() {
        return Err(at.invalid(
            "client.cert_identity_order",
            "name at least one of \"uri\", \"dns\", \"cn\"".into(),
        ));
    }
    Ok(ClientConfig {
        listen,
        require_tls: raw.require_tls,
        tls_cert: at.existing("client.tls_cert", &raw.tls_cert)?,
        tls_key: at.existing("client.tls_key", &raw.tls_key)?,
        tls_min_version,
        client_cert,
        tls_client_ca,
        tls_client_crls,
        cert_identity_order: raw.cert_identity_order,
    })
}

pub(super) fn upstream(up: RawUpstream, at: &Locator<'_>) -> Result<UpstreamConfig, ConfigError> {
    if !up.nsqd_tcp_address.contains(':') {
        return Err(at.invalid("upstream.nsqd_tcp_address", "expected host:port".into()));
    }
    let tls = if up.tls {
        let ca = up.tls_ca.as_deref().ok_or_else(|| {
            at.invalid(
                "upstream.tls_ca",
                "required while upstream.tls is on: the CA that signed nsqd's certificate".into(),
            )
        })?;
        let server_name = up.tls_server_name.clone().ok_or_else(|| {
            at.invalid(
                "upstream.tls_server_name",
                "required while upstream.tls is on: the name nsqd's certificate must carry".into(),
            )
        })?;
        let server_name = rustls_pki_types::ServerName::try_from(server_name)
            .map_err(|e| at.invalid("upstream.tls_server_name", e.to_string()))?;
        let client_cert = match (&up.tls_cert, &up.tls_key) {
            (Some(cert), Some(key)) => Some((
                at.existing("upstream.tls_cert", cert)?,
                at.existing("upstream.tls_key", key)?,
            )),
            (None, None) => None,
            (Some(_), None) => {
                return Err(at.invalid(
                    "upstream.tls_key",
                    "tls_cert is set, so tls_key is required".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(at.invalid(
                    "upstream.tls_cert",
                    "tls_key is set, so tls_cert is required".into(),
                ))
            }
        };
        Some(UpstreamTls {
            server_name,
            ca: at.existing("upstream.tls_ca", ca)?,
            client_cert,
        })
    } else {
        None
    };
    Ok(UpstreamConfig {
        nsqd_tcp_address: up.nsqd_tcp_address,
        tls,
        auth_secret: up.auth_secret.filter(|s| !s.is_empty()),
        forward_client_metadata: up.forward_client_metadata,
        nsqd_options: nsqd_options(&up.nsqd_options, at)?,
    })
}

fn nsqd_options(raw: &RawNsqdOptions, at: &Locator<'_>) -> Result<NsqdOptions, ConfigError> {
    let positive = |key: &str, value: Option<u64>| -> Result<Option<i64>, ConfigError> {
        match value.map(i64::try_from) {
            None => Ok(None),
            Some(Ok(v)) if v > 0 => Ok(Some(v)),
            Some(_) => Err(at.invalid(
                &format!("upstream.nsqd_options.{key}"),
                "must be a positive number, as nsqd's flag of that name".into(),
            )),
        }
    };
    let options = NsqdOptions {
        max_heartbeat_interval_ms: positive(
            "max_heartbeat_interval_ms",
            raw.max_heartbeat_interval_ms,
        )?,
        max_output_buffer_size: positive("max_output_buffer_size", raw.max_output_buffer_size)?,
        min_output_buffer_timeout_ms: positive(
            "min_output_buffer_timeout_ms",
            raw.min_output_buffer_timeout_ms,
        )?,
        max_output_buffer_timeout_ms: positive(
            "max_output_buffer_timeout_ms",
            raw.max_output_buffer_timeout_ms,
        )?,
        snappy: raw.snappy,
        deflate: raw.deflate,
    };
    if let (Some(min), Some(max)) = (
        options.min_output_buffer_timeout_ms,
        options.max_output_buffer_timeout_ms,
    ) {
        if min > max {
            return Err(at.invalid(
                "upstream.nsqd_options.min_output_buffer_timeout_ms",
                "must not exceed max_output_buffer_timeout_ms".into(),
            ));
        }
    }
    Ok(options)
}

/// Connection caps: a key left out gets its default (sized from `descriptors`), 0 switches
/// the cap off (and earns a warning).
pub(super) fn connections(
    c: &RawConnections,
    descriptors: u64,
    at: &Locator<'_>,
    warnings: &mut Vec<String>,
) -> Result<ConnSettings, ConfigError> {
    let defaults = crate::limit::conn::cap_defaults(descriptors);
    let mut cap = |key: &str, value: Option<usize>, default: usize, guards: &str| match value {
        None => Some(default),
        Some(0) => {
            warnings.push(format!(
                "{}: `{key}` = 0 switches the cap off: {guards}",
                at.file.display()
            ));
            None
        }
        Some(n) => Some(n),
    };
    let max_total = cap(
        "connections.max_total",
        c.max_total,
        defaults.max_total,
        "nsqgate can run out of descriptors and stop accepting anyone",
    );
    let max_per_ip = cap(
        "connections.max_per_ip",
        c.max_per_ip,
        defaults.max_per_ip,
        "one address can hold every connection",
    );
    let max_per_identity = cap(
        "connections.max_per_identity",
        c.max_per_identity,
        defaults.max_per_identity,
        "one credential can hold every connection",
    );
    let max_per_nsqd = cap(
        "connections.max_per_nsqd",
        c.max_per_nsqd,
        defaults.max_per_nsqd,
        "clients can exhaust an nsqd's descriptors (it then refuses everyone)",
    );
    let new_per_sec_per_ip = new_per_ip(c, at)?;
    Ok(ConnSettings {
        max_total,
        max_per_ip,
        max_per_identity,
        new_per_sec_per_ip,
        max_per_nsqd,
    })
}

/// `[connections] workers`: the threads connections run on; the cores this process may use
/// when left out.
pub(super) fn workers(
    c: &RawConnections,
    at: &Locator<'_>,
) -> Result<std::num::NonZeroUsize, ConfigError> {
    match c.workers {
        None => Ok(crate::net::workers::default_count()),
        Some(n) => std::num::NonZeroUsize::new(n)
            .filter(|n| n.get() <= MAX_WORKERS)
            .ok_or_else(|| {
                at.invalid(
                    "connections.workers",
                    format!("must be from 1 to {MAX_WORKERS} (leave it out for one per core)"),
                )
            }),
    }
}

/// More event loops than this only add threads: a bound that catches a typo.
const MAX_WORKERS: usize = 1024;

/// `new_per_sec_per_ip` with its burst (the rate when left out); a burst alone is an error.
fn new_per_ip(
    c: &RawConnections,
    at: &Locator<'_>,
) -> Result<Option<(std::num::NonZeroU32, std::num::NonZeroU32)>, ConfigError> {
    match (c.new_per_sec_per_ip, c.new_burst_per_ip) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(at.invalid(
            "connections.new_burst_per_ip",
            "needs connections.new_per_sec_per_ip".into(),
        )),
        (Some(rate), burst) => {
            let rate = std::num::NonZeroU32::new(rate).ok_or_else(|| {
                at.invalid(
                    "connections.new_per_sec_per_ip",
                    "must be greater than 0 (leave it out for no limit)".into(),
                )
            })?;
            let burst = match burst {
                Some(b) => std::num::NonZeroU32::new(b).ok_or_else(|| {
                    at.invalid(
                        "connections.new_burst_per_ip",
                        "must be greater than 0".into(),
                    )
                })?,
                None => rate,
            };
            Ok(Some((rate, burst)))
        }
    }
}

pub(super) fn rates(
    r: RawRateLimits,
    at: &Locator<'_>,
    warnings: &mut Vec<String>,
) -> Result<RateSettings, ConfigError> {
    if r.identity
        .is_none_or(|q| q == crate::policy::RateQuota::default())
    {
        warnings.push(format!(
            "{}: `rate_limits.identity` = {{}} switches the default publish limit off: one \
             identity can publish as fast as nsqd takes it (roles may still set `rate`)",
            at.file.display()
        ));
    }
    for (key, quota) in [
        ("rate_limits.identity", &r.identity),
        ("rate_limits.identity_topic", &r.identity_topic),
        ("rate_limits.topic", &r.topic),
    ] {
        if let Some(quota) = quota {
            quota.validate().map_err(|reason| at.invalid(key, reason))?;
        }
    }
    Ok(RateSettings {
        on_limit: r.on_limit,
        max_delay: Duration::from_millis(r.max_delay_ms),
        idle_evict: Duration::from_secs(r.idle_evict_secs.max(1)),
        identity: r.identity,
        identity_topic: r.identity_topic,
        topic: r.topic,
    })
}

pub(super) fn nodes(
    raw: Vec<RawNode>,
    upstream: &UpstreamConfig,
    at: &Locator<'_>,
) -> Result<Vec<NodeConfig>, ConfigError> {
    let mut nodes = Vec::new();
    for (index, node) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("nodes[{index}].{field}");
        let listen = node
            .listen
            .parse()
            .map_err(|e| at.invalid(&key("listen"), format!("not an IP:port address: {e}")))?;
        if !node.nsqd_tcp_address.contains(':') {
            return Err(at.invalid(&key("nsqd_tcp_address"), "expected host:port".into()));
        }
        let mut upstream = upstream.clone();
        upstream.nsqd_tcp_address = node.nsqd_tcp_address;
        if let (Some(tls), Some(name)) = (upstream.tls.as_mut(), node.tls_server_name) {
            tls.server_name = rustls_pki_types::ServerName::try_from(name)
                .map_err(|e| at.invalid(&key("tls_server_name"), e.to_string()))?;
        }
        nodes.push(NodeConfig { listen, upstream });
    }
    Ok(nodes)
}

pub(super) fn pool(
    raw: Option<RawPool>,
    at: &Locator<'_>,
) -> Result<Option<PoolConfig>, ConfigError> {
    Ok(match raw {
        Some(pool) => Some(PoolConfig {
            listen: pool.listen.parse().map_err(|e| {
                at.invalid(
                    "producer_pool.listen",
                    format!("not an IP:port address: {e}"),
                )
            })?,
            health_check: millis(at, "producer_pool.health_check_ms", pool.health_check_ms)?,
        }),
        None => None,
    })
}

/// A `[[http.lookupd.nodes]]` entry whose `gate_tcp_port` is one of this nsqgate's own NSQ
/// listeners must give, as `gate_http_port`, one of its HTTP fronts: consumers and nsqadmin
/// that follow it would otherwise reach nothing. (Entries naming another nsqgate, and
/// listeners on port 0, cannot be checked here.)
pub(super) fn check_node_fronts(
    config: &super::Config,
    at: &Locator<'_>,
) -> Result<(), ConfigError> {
    let Some(http) = &config.http else {
        return Ok(());
    };
    let Some(lookupd) = &http.lookupd else {
        return Ok(());
    };
    let own_nsq: Vec<u16> = std::iter::once(config.client.listen)
        .chain(config.nodes.iter().map(|n| n.listen))
        .chain(config.producer_pool.iter().map(|p| p.listen))
        .map(|a| a.port())
        .filter(|port| *port != 0)
        .collect();
    let fronts: Vec<u16> = (http.nsqd.iter())
        .flat_map(|f| std::iter::once(f.listen).chain(f.plain_listen))
        .map(|a| a.port())
        .collect();
    for (index, node) in lookupd.nodes.iter().enumerate() {
        if own_nsq.contains(&node.gate_tcp_port) && !fronts.contains(&node.gate_http_port) {
            let fronts: Vec<String> = fronts.iter().map(ToString::to_string).collect();
            let known = if fronts.is_empty() {
                "it has no [http.nsqd] front".to_owned()
            } else {
                format!("its nsqd front listens on port {}", fronts.join(", "))
            };
            return Err(at.invalid(
                &format!("http.lookupd.nodes[{index}].gate_http_port"),
                format!(
                    "port {} is no HTTP front of this nsqgate (gate_tcp_port {} is one of its NSQ listeners; {known})",
                    node.gate_http_port, node.gate_tcp_port
                ),
            ));
        }
    }
    Ok(())
}
