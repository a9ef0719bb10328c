//! [`GateConfig`]: the nsqgate config of one test, built by section instead of hand-written
//! TOML. Listeners default to port 0; [`super::Gate`] reads what nsqgate bound from its ready
//! file.

use std::net::SocketAddr;
use std::path::Path;

use super::{write_secret, Gate, Pki};

/// An nsqgate config: a client listener on a port nsqgate picks, in front of one nsqd that it
/// verifies as `127.0.0.1` against the test CA. Lines added to `[client]`, `[upstream]` and
/// `[auth]` land in those tables; anything else is added as whole tables.
#[derive(Clone, Debug)]
pub struct GateConfig {
    nsqd: SocketAddr,
    /// The name nsqd's certificate must carry, and the CA file that must have signed it.
    upstream_name: String,
    upstream_ca: String,
    client: Vec<String>,
    upstream: Vec<String>,
    auth: Vec<String>,
    /// Whole tables after the three above (`[limits]`, `[http.nsqd]`, `[[nodes]]`...).
    tables: Vec<String>,
}

impl GateConfig {
    /// In front of `nsqd`, with no `[auth]` table (nsqgate's defaults: an identity required).
    pub fn new(nsqd: SocketAddr) -> GateConfig {
        GateConfig {
            nsqd,
            upstream_name: "127.0.0.1".into(),
            upstream_ca: "ca.pem".into(),
            client: vec![
                "listen = \"127.0.0.1:0\"".into(),
                "tls_cert = \"gate.pem\"".into(),
                "tls_key = \"gate.key\"".into(),
            ],
            upstream: Vec::new(),
            auth: Vec::new(),
            tables: Vec::new(),
        }
    }

    /// For tests of the transport alone: no identity needed, and the policy (`open-policy`,
    /// which [`Pki::new`] writes) lets the anonymous caller publish and subscribe anywhere.
    pub fn anonymous(nsqd: SocketAddr) -> GateConfig {
        GateConfig::new(nsqd)
            .auth("require_identity = false")
            .policy("open-policy")
    }

    /// `[auth] policy_dir`: a folder below the PKI folder ([`Pki::write_policy`]).
    pub fn policy(self, dir: &str) -> GateConfig {
        self.auth(&format!("policy_dir = \"{dir}\""))
    }

    /// nsqd's certificate checked for `server_name` against the CA in `ca`.
    pub fn verify_upstream_as(mut self, server_name: &str, ca: &str) -> GateConfig {
        self.upstream_name = server_name.into();
        self.upstream_ca = ca.into();
        self
    }

    /// Lines inside `[client]`.
    pub fn client(mut self, lines: &str) -> GateConfig {
        self.client.push(lines.into());
        self
    }

    /// Lines inside `[upstream]`.
    pub fn upstream(mut self, lines: &str) -> GateConfig {
        self.upstream.push(lines.into());
        self
    }

    /// Lines inside `[auth]`.
    pub fn auth(mut self, lines: &str) -> GateConfig {
        self.auth.push(lines.into());
        self
    }

    /// Whole tables, header included (`"[limits]\nmax_msg_size = 1024"`).
    pub fn table(mut self, toml: &str) -> GateConfig {
        self.tables.push(toml.into());
        self
    }

    /// The nsqd HTTPS front on a port nsqgate picks (read it with `Gate::http("nsqd")`), with
    /// its plain `TLS_REQUIRED` listener (`Gate::http("nsqd-plain")`), in front of `upstream`.
    pub fn http_nsqd(self, upstream: SocketAddr) -> GateConfig {
        self.table(&format!(
            "[http.nsqd]\nlisten = \"127.0.0.1:0\"\nplain_listen = \"127.0.0.1:0\"\nupstream = \"{upstream}\""
        ))
    }

    /// The config file's text.
    pub fn toml(&self) -> String {
        let upstream: Vec<String> = [
            format!("nsqd_tcp_address = \"{}\"", self.nsqd),
            format!("tls_server_name = \"{}\"", self.upstream_name),
            format!("tls_ca = \"{}\"", self.upstream_ca),
        ]
        .into_iter()
        .chain(self.upstream.iter().cloned())
        .collect();
        let mut text = String::new();
        for (header, lines) in [
            ("[client]", &self.client),
            ("[upstream]", &upstream),
            ("[auth]", &self.auth),
        ] {
            if !lines.is_empty() {
                text += &format!("{header}\n{}\n\n", lines.join("\n"));
            }
        }
        text + &self.tables.join("\n\n") + "\n"
    }

    /// Writes the config readable by its owner only: it may carry a secret
    /// (`upstream.auth_secret`), and nsqgate refuses such a file readable by others.
    pub fn write(&self, path: &Path) {
        write_secret(path, self.toml().as_bytes());
    }

    /// Starts nsqgate with this config; returns once every listener is bound.
    pub fn start(&self, pki: &Pki) -> Gate {
        Gate::start_config(pki, &self.toml())
    }

    /// As [`GateConfig::start`], with `env` (e.g. `NSQGATE_<SECTION>__<KEY>` overrides) set.
    pub fn start_env(&self, pki: &Pki, env: &[(&str, &str)]) -> Gate {
        Gate::start_config_env(pki, &self.toml(), env)
    }
}
