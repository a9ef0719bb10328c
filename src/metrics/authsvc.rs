//! The auth service's counters (`[auth_service]`): what nsqd asked and what it was told.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// How one answer to nsqd went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The credential is valid and the subject holds at least one grant.
    Granted,
    /// The credential is valid but nothing nsqd can express is allowed.
    NoGrants,
    /// Unknown, revoked, expired or malformed credential (nsqd: not authorized).
    Refused,
    /// Not a well-formed auth request (400, 404, 405, 414).
    BadRequest,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Granted,
        Outcome::NoGrants,
        Outcome::Refused,
        Outcome::BadRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Granted => "granted",
            Outcome::NoGrants => "no_grants",
            Outcome::Refused => "refused",
            Outcome::BadRequest => "bad_request",
        }
    }
}

/// Pre-resolved: one atomic add per answer.
pub struct AuthServiceCounters {
    /// In the order of [`Outcome::ALL`].
    requests: [IntCounter; 4],
    /// Allow patterns left out because a deny overlaps them (nsqd can only allow).
    pub grants_omitted: IntCounter,
}

impl AuthServiceCounters {
    pub(super) fn register(registry: &Registry) -> Result<AuthServiceCounters, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "nsqgate_auth_service_requests_total",
                "Requests from nsqd to the auth service ([auth_service]) by outcome.",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        let grants_omitted = IntCounter::with_opts(Opts::new(
            "nsqgate_auth_service_grants_omitted_total",
            "Allow patterns left out of answers to nsqd because a deny rule overlaps them.",
        ))?;
        registry.register(Box::new(grants_omitted.clone()))?;
        Ok(AuthServiceCounters {
            requests: Outcome::ALL.map(|o| requests.with_label_values(&[o.as_str()])),
            grants_omitted,
        })
    }

    /// One answer given.
    pub fn answered(&self, outcome: Outcome) {
        let [granted, no_grants, refused, bad_request] = &self.requests;
        let counter = match outcome {
            Outcome::Granted => granted,
            Outcome::NoGrants => no_grants,
            Outcome::Refused => refused,
            Outcome::BadRequest => bad_request,
        };
        counter.inc();
    }
}
