//! A publish drawn from the rate limits: from the buckets this connection holds, under the
//! quotas its roles grant, both worked out once (the quotas again after a policy change).

use std::time::Instant;

use super::{failed, Guard, Verdict};
use crate::audit::{self, Event};
use crate::auth::identity;
use crate::error::Kind;
use crate::limit::{Publish, SessionBuckets};
use crate::nsq::{Command, DecodedCommand};

impl Guard {
    /// Draws a publish from the rate limits; waits in delay mode. Some(refusal) when over.
    /// `now` is the caller's clock reading for its batch of commands.
    pub async fn admit(&mut self, decoded: &DecodedCommand, now: Instant) -> Option<Verdict> {
        let principal = self.principal.as_ref()?;
        let topic = match &decoded.command {
            Command::Pub { topic, .. }
            | Command::Mpub { topic, .. }
            | Command::Dpub { topic, .. } => topic,
            _ => return None,
        };
        let rates = *self.rates.get_or_insert_with(|| {
            let policy = self.policy.borrow();
            // A principal that no longer stands is refused by the re-check after admission.
            identity::current_subject(principal, &policy)
                .map(|subject| policy.rates_of(&subject))
                .unwrap_or_default()
        });
        let held = self
            .buckets
            .get_or_insert_with(|| SessionBuckets::new(&self.shared.rates, &principal.identity));
        let publish = Publish {
            topic,
            rates,
            messages: decoded.command.message_count(),
            bytes: decoded.command.payload_bytes(),
        };
        let admitted = self.shared.rates.admit_held(held, publish, now).await;
        let limited = admitted.err()?;
        self.shared.metrics.rate_limited();
        audit::record(&Event {
            remote: Some(self.peer),
            principal: Some(principal),
            action: "publish",
            topic: Some(topic),
            outcome: "deny",
            reason: Some(&limited.to_string()),
            ..Event::default()
        });
        Some(failed(
            Kind::Limit,
            decoded.command.name(),
            &limited.to_string(),
        ))
    }
}
