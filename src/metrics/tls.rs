//! Why a TLS handshake failed, as a small closed set of metric labels: rustls' error (carried
//! inside the I/O error tokio-rustls returns) or the I/O failure itself. No I/O here.

/// Which side of nsqgate a handshake was on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leg {
    /// Toward a client: the NSQ listeners, the HTTPS fronts, the admin listener.
    Client,
    /// Toward nsqd.
    Upstream,
}

impl Leg {
    pub fn as_str(self) -> &'static str {
        match self {
            Leg::Client => "client",
            Leg::Upstream => "upstream",
        }
    }
}

/// The label for a failed handshake: `certificate` (the peer's was refused or missing),
/// `alert` (the peer refused ours, or gave up), `incompatible` (no common version or cipher),
/// `protocol` (not TLS, or TLS broken), `closed` (the peer hung up), `io` otherwise.
pub fn handshake_failure_reason(error: &std::io::Error) -> &'static str {
    let tls = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented) => {
            "certificate"
        }
        Some(rustls::Error::AlertReceived(_)) => "alert",
        Some(rustls::Error::PeerIncompatible(_)) => "incompatible",
        Some(_) => "protocol",
        None => match error.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe => "closed",
            std::io::ErrorKind::InvalidData => "protocol",
            std::io::ErrorKind::TimedOut => "timeout",
            _ => "io",
        },
    }
}

/// The failure label of a handshake run under a deadline; None when it succeeded.
pub fn handshake_failure<T>(
    handshake: &Result<std::io::Result<T>, tokio::time::error::Elapsed>,
) -> Option<&'static str> {
    match handshake {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(handshake_failure_reason(e)),
        Err(_) => Some("timeout"),
    }
}
