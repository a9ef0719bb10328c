//! The guard's charge for new topic and channel names ([`crate::limit::names`]): asked once per
//! allowed decision that is not cached yet, refused with nsqd's own failure code for the command.

use super::{action_name, failed, Guard, Verdict};
use crate::audit::{self, Event};
use crate::auth::identity;
use crate::error::Kind;
use crate::limit::names::NameRefused;
use crate::policy::{Action, Policy};

impl Guard {
    pub(super) fn charge_names(
        &self,
        policy: &Policy,
        topic: &str,
        channel: Option<&str>,
    ) -> Result<(), NameRefused> {
        let Some(principal) = &self.principal else {
            return Ok(());
        };
        let quota = identity::current_subject(principal, policy)
            .ok()
            .and_then(|subject| policy.name_quota_of(&subject));
        self.shared
            .names
            .admit(&principal.identity, quota, topic, channel)
    }

    /// nsqd's own failure code for the command, with a text naming the quota.
    pub(super) fn name_refusal(
        &self,
        command: &str,
        action: Action,
        topic: &str,
        channel: Option<&str>,
        refused: NameRefused,
    ) -> Verdict {
        self.shared.metrics.name_quota_refused();
        let reason = refused.to_string();
        audit::record(&Event {
            remote: Some(self.peer),
            principal: self.principal.as_ref(),
            action: action_name(action),
            topic: Some(topic),
            channel,
            outcome: "deny",
            reason: Some(&reason),
            ..Event::default()
        });
        failed(Kind::Limit, command, &reason)
    }
}
