//! Certificate expiry for the metrics: the earliest notAfter among the certificates of one
//! loaded file. No I/O here (the TLS set-up reads the files).

use std::path::Path;

use crate::config::Config;

/// The earliest notAfter (Unix seconds) among `ders`; None when none parses.
pub fn earliest_expiry(ders: &[impl AsRef<[u8]>]) -> Option<i64> {
    ders.iter()
        .filter_map(|der| x509_parser::parse_x509_certificate(der.as_ref()).ok())
        .map(|(_, cert)| cert.validity().not_after.timestamp())
        .min()
}

/// Every certificate file the configuration names, with its `certificate` label. The HTTP
/// fronts present the client listener's certificate; the admin listener's own are recorded
/// where its TLS is set up.
pub fn configured_certificates(config: &Config) -> Vec<(&'static str, &Path)> {
    let mut files: Vec<(&'static str, &Path)> = vec![("client", config.client.tls_cert.as_path())];
    if let Some(ca) = &config.client.tls_client_ca {
        files.push(("client_ca", ca.as_path()));
    }
    if let Some(tls) = &config.upstream.tls {
        files.push(("upstream_ca", tls.ca.as_path()));
        if let Some((cert, _)) = &tls.client_cert {
            files.push(("upstream_client", cert.as_path()));
        }
    }
    if let Some(tls) = config.admin.as_ref().and_then(|admin| admin.tls.as_ref()) {
        files.push(("admin", tls.cert.as_path()));
        if let Some(ca) = &tls.client_ca {
            files.push(("admin_client_ca", ca.as_path()));
        }
    }
    if let Some(tls) = config
        .auth_service
        .as_ref()
        .and_then(|service| service.tls.as_ref())
    {
        files.push(("auth_service", tls.cert.as_path()));
    }
    files
}
