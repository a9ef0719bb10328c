//! The identity of a client certificate: URI SAN, DNS SAN or subject CN, in a configured order.
//!
//! The chain has already been verified by rustls when this runs; this module only reads the
//! leaf certificate's fields (x509-parser, no I/O, no trust decisions).

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer as _;

/// A certificate field that can name a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentitySource {
    /// The first URI subject alternative name, e.g. a SPIFFE ID `spiffe://example.org/app`.
    Uri,
    /// The first DNS subject alternative name.
    Dns,
    /// The subject's common name (legacy, but still common in internal PKIs).
    Cn,
}

/// The identity of the DER certificate `der`: the first source in `order` that is present.
///
/// `None` when the certificate does not parse, or when none of the sources is present or
/// non-empty.
pub fn identity_from_cert(der: &[u8], order: &[IdentitySource]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    order.iter().find_map(|source| from_source(&cert, *source))
}

fn from_source(cert: &X509Certificate<'_>, source: IdentitySource) -> Option<String> {
    let found = match source {
        IdentitySource::Uri => first_san(cert, |name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        }),
        IdentitySource::Dns => first_san(cert, |name| match name {
            GeneralName::DNSName(dns) => Some(*dns),
            _ => None,
        }),
        IdentitySource::Cn => cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok()),
    };
    found.filter(|s| !s.is_empty()).map(str::to_owned)
}

/// The first subject alternative name that `pick` accepts. A malformed or duplicated SAN
/// extension counts as absent.
fn first_san<'a>(
    cert: &'a X509Certificate<'_>,
    pick: impl Fn(&GeneralName<'a>) -> Option<&'a str>,
) -> Option<&'a str> {
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(pick)
}
