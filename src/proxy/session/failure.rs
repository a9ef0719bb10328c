//! How a session's opening fails, what the client hears then, and which kind of ending each
//! failure is (classified once, when the session ends). No I/O here.

use crate::error::{Blame, Classify, Ending, FatalReply, Kind};
use crate::limit::conn::Refusal;
use crate::net::proxied::ProxyHeaderError;
use crate::nsq::{ErrorCode, IdentifyRefusal};
use crate::proxy::relay::{self, RelayError};
use crate::proxy::upstream::UpstreamError;

/// Why a session ended before or instead of a clean end of its relay.
#[derive(Debug, thiserror::Error)]
pub(super) enum SessionError {
    /// Not told yet: the client hears it (nsqd's code and text, or nsqd's own words), then
    /// the connection closes.
    #[error("{0}")]
    Refused(FatalReply),
    /// nsqd could not be used for this client. The client hears only that (an IDENTIFY
    /// failure, or an AUTH failure when it was opened for AUTH); the log hears why.
    #[error("nsqd unavailable: {}", naming_nsqd(.address, .cause))]
    NsqdUnavailable {
        address: String,
        cause: UpstreamError,
        /// The connection was opened for a successful AUTH, whose reply this becomes.
        at_auth: bool,
    },
    #[error("client TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("client did not finish {0} in time")]
    Timeout(&'static str),
    #[error("client closed the connection during {0}")]
    Closed(&'static str),
    #[error("shutting down")]
    Stopping,
    #[error("connection limit: {0}")]
    Limited(#[from] Refusal),
    /// A cap counted over every replica could not be checked (Redis away in `closed` mode):
    /// not a cap the client went over.
    #[error("connection refused: {}", crate::cluster::slots::UNAVAILABLE)]
    SharedStateUnavailable,
    #[error("{0}")]
    ProxyHeader(#[from] ProxyHeaderError),
    /// Reading from or writing to the client failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Relay(#[from] RelayError),
}

impl From<IdentifyRefusal> for SessionError {
    fn from(e: IdentifyRefusal) -> SessionError {
        let refusal = FatalReply::new(Kind::ClientProtocol, e.code(), &e.to_string());
        SessionError::Refused(refusal)
    }
}

// === impl SessionError ===

impl SessionError {
    /// What the client hears before the connection closes, for the errors that are the
    /// client's to hear.
    pub(super) fn told(&self) -> Option<FatalReply> {
        match self {
            SessionError::Refused(refusal) => Some(refusal.clone()),
            SessionError::NsqdUnavailable { cause, at_auth, .. } => {
                Some(nsqd_unavailable_reply(cause, *at_auth))
            }
            _ => None,
        }
    }
}

impl Classify for SessionError {
    fn ending(&self) -> Ending {
        match self {
            SessionError::Refused(refusal) => refusal.ending(),
            SessionError::NsqdUnavailable { cause, .. } => nsqd_unavailable_ending(cause),
            SessionError::Tls(_) => Ending::of(Kind::Tls),
            SessionError::Timeout(_) => Ending::of(Kind::ClientTimeout),
            SessionError::Closed(_) => Ending::of(Kind::Closed),
            SessionError::Stopping => Ending::of(Kind::Shutdown),
            SessionError::Limited(_) => Ending::of(Kind::Limit),
            // Refusing what cannot be checked is the operator's choice (`closed`).
            SessionError::SharedStateUnavailable => {
                Ending::of(Kind::Limit).blaming(Blame::Configuration)
            }
            SessionError::ProxyHeader(ProxyHeaderError::Closed) => Ending::of(Kind::Closed),
            SessionError::ProxyHeader(ProxyHeaderError::Io(e)) => relay::client_io_ending(e),
            SessionError::ProxyHeader(_) => Ending::of(Kind::ClientProtocol),
            SessionError::Io(e) => relay::client_io_ending(e),
            SessionError::Relay(e) => e.ending(),
        }
    }
}

/// What a client is told when its nsqd connection cannot be opened: only that it cannot.
fn nsqd_unavailable_reply(cause: &UpstreamError, at_auth: bool) -> FatalReply {
    let ending = nsqd_unavailable_ending(cause);
    let text = match cause {
        UpstreamError::Limited { refusal, .. } => format!("nsqgate refused: {refusal}"),
        _ => "nsqd unavailable".to_owned(),
    };
    let (code, text) = match at_auth {
        true => (ErrorCode::AuthFailed, format!("AUTH failed: {text}")),
        false => (ErrorCode::IdentifyFailed, text),
    };
    let refusal = FatalReply::new(ending.kind, code, &text);
    match ending.blame {
        Some(blame) => refusal.blaming(blame),
        None => refusal,
    }
}

/// Why nsqd could not be used: nsqd's fault, the operator's settings, or a cap.
fn nsqd_unavailable_ending(cause: &UpstreamError) -> Ending {
    let unavailable = Ending::of(Kind::UpstreamUnavailable);
    match cause {
        UpstreamError::Connect { .. }
        | UpstreamError::Timeout(_)
        | UpstreamError::Tls(_)
        | UpstreamError::Io(_) => unavailable,
        UpstreamError::Refused { .. }
        | UpstreamError::TlsNotOffered
        | UpstreamError::AuthRequired
        | UpstreamError::EmptyPool => unavailable.blaming(Blame::Configuration),
        UpstreamError::Protocol(_) => Ending::of(Kind::UpstreamProtocol),
        UpstreamError::Limited { .. } => Ending::of(Kind::Limit).blaming(Blame::Configuration),
    }
}

/// The cause's text, with the nsqd it concerns in front when the text does not name it
/// already ("cannot connect to nsqd at ADDR: ..." does; "TLS with nsqd failed" does not).
fn naming_nsqd(address: &str, cause: &UpstreamError) -> String {
    let text = cause.to_string();
    if text.contains(address) {
        text
    } else {
        format!("nsqd at {address}: {text}")
    }
}

#[cfg(test)]
mod tests;
