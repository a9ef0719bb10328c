//! How a session ended, in one taxonomy: a closed set of [`Kind`]s, who is to [`Blame`], the
//! level its last log line gets, and a count per kind and blame in the metrics. A refusal
//! told to a client ([`FatalReply`]) names its kind where it is made (the guard knows a rate
//! limit from a denial); the session classifies its ending once, where it ends. No I/O here.

use std::borrow::Cow;
use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::metrics::Metrics;
use crate::nsq::{self, ErrorCode, FrameType, ProtocolError};

/// What ended a session. Closed: every ending maps onto exactly one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The normal course: the client hung up (or vanished), or nsqd closed after it did.
    Closed,
    /// nsqgate is shutting down.
    Shutdown,
    /// The client broke the protocol: bad magic, a malformed or out-of-state command,
    /// IDENTIFY settings nsqd refuses, or a command nsqd refused before closing.
    ClientProtocol,
    /// The client missed a deadline: TLS handshake, IDENTIFY, AUTH, a half-sent command, two
    /// heartbeats, or taking the bytes written to it.
    ClientTimeout,
    /// The client leg's TLS failed: handshake (certificate refused) or a bad record.
    Tls,
    /// No acceptable identity: AUTH failed or never sent, a token expired, a credential
    /// revoked by a reload.
    Identity,
    /// The policy denied a command, or no longer allows a subscription.
    Policy,
    /// A limit refused it: connection caps, rate limits, name quotas, the memory budget for
    /// unauthenticated connections.
    Limit,
    /// nsqd could not be reached, verified or authenticated to, or failed mid-session.
    UpstreamUnavailable,
    /// nsqd sent something that is not NSQ, or a reply nobody asked for.
    UpstreamProtocol,
    /// nsqgate could not do its own part: a decision the audit log could not record.
    Internal,
}

/// Who caused an ending that is a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Blame {
    Client,
    Upstream,
    /// The operator's settings (nsqd without TLS, a missing `upstream.auth_secret`, a cap).
    Configuration,
    Nsqgate,
}

/// One session's ending, classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ending {
    pub kind: Kind,
    /// None for the endings that are nobody's fault (closed, shutdown).
    pub blame: Option<Blame>,
}

/// Something a session can end with: it says which ending it is.
pub trait Classify: fmt::Display {
    fn ending(&self) -> Ending;
}

// === impl Kind ===

impl Kind {
    /// Every kind, in the order `/metrics` lists them.
    pub const ALL: [Kind; 11] = [
        Kind::Closed,
        Kind::Shutdown,
        Kind::ClientProtocol,
        Kind::ClientTimeout,
        Kind::Tls,
        Kind::Identity,
        Kind::Policy,
        Kind::Limit,
        Kind::UpstreamUnavailable,
        Kind::UpstreamProtocol,
        Kind::Internal,
    ];

    /// The metric label and log value, e.g. `"client_protocol"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Closed => "closed",
            Kind::Shutdown => "shutdown",
            Kind::ClientProtocol => "client_protocol",
            Kind::ClientTimeout => "client_timeout",
            Kind::Tls => "tls",
            Kind::Identity => "identity",
            Kind::Policy => "policy",
            Kind::Limit => "limit",
            Kind::UpstreamUnavailable => "upstream_unavailable",
            Kind::UpstreamProtocol => "upstream_protocol",
            Kind::Internal => "internal",
        }
    }

    /// Who is usually to blame; [`Ending::blaming`] says otherwise where it is known better.
    pub fn usual_blame(self) -> Option<Blame> {
        match self {
            Kind::Closed | Kind::Shutdown => None,
            Kind::ClientProtocol
            | Kind::ClientTimeout
            | Kind::Tls
            | Kind::Identity
            | Kind::Policy
            | Kind::Limit => Some(Blame::Client),
            Kind::UpstreamUnavailable | Kind::UpstreamProtocol => Some(Blame::Upstream),
            Kind::Internal => Some(Blame::Nsqgate),
        }
    }

    /// The level of the line that records the ending: the normal course is debug, a client's
    /// doing info (clients can produce them at will), nsqd's warn, nsqgate's own error.
    pub fn level(self) -> tracing::Level {
        match self {
            Kind::Closed | Kind::Shutdown => tracing::Level::DEBUG,
            Kind::ClientProtocol
            | Kind::ClientTimeout
            | Kind::Tls
            | Kind::Identity
            | Kind::Policy
            | Kind::Limit => tracing::Level::INFO,
            Kind::UpstreamUnavailable | Kind::UpstreamProtocol => tracing::Level::WARN,
            Kind::Internal => tracing::Level::ERROR,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Blame ===

impl Blame {
    pub fn as_str(self) -> &'static str {
        match self {
            Blame::Client => "client",
            Blame::Upstream => "upstream",
            Blame::Configuration => "configuration",
            Blame::Nsqgate => "nsqgate",
        }
    }
}

// === impl Ending ===

impl Ending {
    /// `kind`, blamed as usual.
    pub fn of(kind: Kind) -> Ending {
        Ending {
            kind,
            blame: kind.usual_blame(),
        }
    }

    pub fn blaming(self, blame: Blame) -> Ending {
        Ending {
            blame: Some(blame),
            ..self
        }
    }

    /// The ending when nsqd closes a connection right after a fatal error frame with `code`
    /// (None: a code nsqgate does not know). nsqd refused the client's command, failed at its
    /// own work, or its own authorization refused what nsqgate's allowed.
    pub fn after_nsqd_error(code: Option<ErrorCode>) -> Ending {
        use ErrorCode::*;
        let Some(code) = code else {
            return Ending::of(Kind::UpstreamProtocol);
        };
        match code {
            Invalid | BadBody | BadTopic | BadChannel | BadMessage | BadProtocol
            | IdentifyFailed => Ending::of(Kind::ClientProtocol),
            PubFailed | MpubFailed | DpubFailed | SubFailed | FinFailed | ReqFailed
            | TouchFailed => Ending::of(Kind::UpstreamUnavailable),
            AuthFirst | AuthFailed | AuthDisabled | AuthError => {
                Ending::of(Kind::Identity).blaming(Blame::Configuration)
            }
            Unauthorized => Ending::of(Kind::Policy).blaming(Blame::Configuration),
        }
    }

    /// The `blame` value of a log line.
    pub fn blame_str(&self) -> &'static str {
        self.blame.map_or("none", Blame::as_str)
    }
}

/// Records how a session ended: counted under its kind and blame, and one log line at its
/// kind's level (with the error's text, escaped by the log formatter like every field).
pub fn record(metrics: &Metrics, ended: &dyn Classify) {
    let ending = ended.ending();
    metrics.session_ended(ending);
    let (kind, blame) = (ending.kind.as_str(), ending.blame_str());
    match ending.kind.level() {
        tracing::Level::ERROR => tracing::error!(kind, blame, error = %ended, "connection ended"),
        tracing::Level::WARN => tracing::warn!(kind, blame, error = %ended, "connection ended"),
        tracing::Level::INFO => tracing::info!(kind, blame, error = %ended, "connection ended"),
        _ => tracing::debug!(kind, blame, reason = %ended, "closed"),
    }
}

// === impl FatalReply ===

/// An error frame after which the connection closes, as nsqd closes after its fatal errors,
/// and the ending it makes. Sent as it is: nsqd's code and text, nsqd's own words when nsqd
/// said them, or nothing where nsqd closes without a word.
#[derive(Clone, Debug)]
pub struct FatalReply {
    /// The whole frame: `[size][type = 1][E_CODE text]`.
    frame: Bytes,
    /// nsqd closes without sending this (an over-long line): it goes to the log only.
    silent: bool,
    ending: Ending,
    /// Why, for the log only, where the client hears less (AUTH failed: which check).
    because: Option<String>,
}

impl FatalReply {
    /// nsqgate's refusal: `code` and `text` as nsqd would write them.
    pub fn new(kind: Kind, code: ErrorCode, text: &str) -> FatalReply {
        FatalReply {
            frame: nsq::error_frame(code, text),
            silent: false,
            ending: Ending::of(kind),
            because: None,
        }
    }

    /// A command that failed to decode, answered as nsqd answers it: the codec's own frame,
    /// bytes as sent, or silence where nsqd closes silently.
    pub fn malformed(error: &ProtocolError) -> FatalReply {
        FatalReply {
            frame: error.to_frame(),
            silent: error.closes_silently(),
            ending: Ending::of(Kind::ClientProtocol),
            because: None,
        }
    }

    /// nsqd's own refusal relayed word for word (`code` as nsqd wrote it, `text` after it).
    pub fn from_nsqd(kind: Kind, code: &str, text: &str) -> FatalReply {
        let payload = match text.is_empty() {
            true => code.to_owned(),
            false => format!("{code} {text}"),
        };
        let mut frame = BytesMut::new();
        nsq::encode_frame(FrameType::Error, payload.as_bytes(), &mut frame);
        FatalReply {
            frame: frame.freeze(),
            silent: false,
            ending: Ending::of(kind),
            because: None,
        }
    }

    pub fn blaming(self, blame: Blame) -> FatalReply {
        FatalReply {
            ending: self.ending.blaming(blame),
            ..self
        }
    }

    /// Adds why, for the log: the client still hears only the frame.
    pub fn because(self, reason: &str) -> FatalReply {
        FatalReply {
            because: Some(reason.to_owned()),
            ..self
        }
    }

    /// The frame to send before closing; None when nsqd would close without a word.
    pub fn frame(&self) -> Option<&Bytes> {
        (!self.silent).then_some(&self.frame)
    }

    /// `E_CODE text` as the client reads it.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.frame.get(8..).unwrap_or_default())
    }
}

impl Classify for FatalReply {
    fn ending(&self) -> Ending {
        self.ending
    }
}

impl fmt::Display for FatalReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())?;
        if let Some(reason) = &self.because {
            write!(f, ": {reason}")?;
        }
        if self.silent {
            f.write_str(" (not sent: nsqd closes without a word here)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
