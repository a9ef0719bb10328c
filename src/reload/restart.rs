//! Keys only a restart can change: listeners are bound, connections to nsqd are set up and
//! background tasks are started from them once. A reload keeps them as they were at start and
//! names each one that changed in the file ("needs restart"), instead of ignoring it silently.
//! Everything else (limits, timeouts, rate and name quotas, audit settings, JWT settings and
//! keys, TLS files, `require_identity`, `proxy_protocol_from`...) applies on reload.

use std::fmt::Debug;

use crate::config::Config;

/// The restart-only keys whose value in `new` differs from the one in force (`old`).
pub(super) fn changed(old: &Config, new: &Config) -> Vec<&'static str> {
    // The config types do not implement PartialEq; their Debug output covers every field.
    fn differs<T: Debug>(a: &T, b: &T) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    let (up, new_up) = (&old.upstream, &new.upstream);
    let server_name = |c: &Config| c.upstream.tls.as_ref().map(|t| t.server_name.clone());
    [
        ("client.listen", old.client.listen != new.client.listen),
        (
            "upstream.nsqd_tcp_address",
            up.nsqd_tcp_address != new_up.nsqd_tcp_address,
        ),
        ("upstream.tls", up.tls.is_some() != new_up.tls.is_some()),
        (
            "upstream.tls_server_name",
            server_name(old) != server_name(new),
        ),
        ("upstream.auth_secret", up.auth_secret != new_up.auth_secret),
        (
            "upstream.nsqd_options",
            up.nsqd_options != new_up.nsqd_options,
        ),
        ("nodes", differs(&old.nodes, &new.nodes)),
        (
            "producer_pool",
            differs(&old.producer_pool, &new.producer_pool),
        ),
        ("http", differs(&old.http, &new.http)),
        (
            "auth.policy_dir",
            old.auth.policy_dir != new.auth.policy_dir,
        ),
        (
            "auth.policy_reload_ms",
            old.auth.policy_reload != new.auth.policy_reload,
        ),
        (
            "auth.jwt.jwks_url",
            differs(&old.auth.jwks_source, &new.auth.jwks_source),
        ),
        ("audit.file", old.audit_file != new.audit_file),
        (
            "limits.max_unauthenticated_memory",
            old.max_unauthenticated_memory != new.max_unauthenticated_memory,
        ),
        ("connections", differs(&old.connections, &new.connections)),
        ("admin", differs(&old.admin, &new.admin)),
        ("cluster", differs(&old.cluster, &new.cluster)),
        (
            "auth_service",
            differs(&old.auth_service, &new.auth_service),
        ),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// `new` with every restart-only key set back to the value in force (`old`).
pub(super) fn keep(old: &Config, new: &mut Config) {
    new.client.listen = old.client.listen;
    let (up, new_up) = (&old.upstream, &mut new.upstream);
    new_up.nsqd_tcp_address.clone_from(&up.nsqd_tcp_address);
    new_up.auth_secret.clone_from(&up.auth_secret);
    new_up.nsqd_options = up.nsqd_options;
    match (&up.tls, new_up.tls.as_mut()) {
        (Some(tls), Some(new_tls)) => new_tls.server_name = tls.server_name.clone(),
        _ => new_up.tls.clone_from(&up.tls),
    }
    new.nodes.clone_from(&old.nodes);
    new.producer_pool.clone_from(&old.producer_pool);
    new.http.clone_from(&old.http);
    new.auth.policy_dir.clone_from(&old.auth.policy_dir);
    new.auth.policy_reload = old.auth.policy_reload;
    new.auth.jwks_source.clone_from(&old.auth.jwks_source);
    new.audit_file.clone_from(&old.audit_file);
    new.max_unauthenticated_memory = old.max_unauthenticated_memory;
    new.connections.clone_from(&old.connections);
    // The admin listener is bound, its TLS set up and its probes started once.
    new.admin.clone_from(&old.admin);
    // The Redis client and its watchers are set up once.
    new.cluster.clone_from(&old.cluster);
    // So is the auth service, with its TLS and the ttl it answers with.
    new.auth_service.clone_from(&old.auth_service);
    new.allow_insecure_permissions = old.allow_insecure_permissions;
}
