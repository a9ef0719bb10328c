//! nsqd's connection states (`protocol_v2.go`: init, subscribed, closing) and the commands
//! each refuses, so nsqgate answers exactly as nsqd would where it must answer itself. Pure.
//!
//! nsqgate answers a state refusal itself when forwarding would go wrong: AUTH (nsqgate handles
//! AUTH), SUB after SUB (the guard would watch the wrong subscription), and RDY/FIN/REQ/TOUCH
//! before SUB (they are owed no reply on success, so nsqd's error would arrive unpaired).
//! CLS before SUB and the commands nsqd accepts in any state are left to nsqd.

use crate::nsq::Command;

/// Where the connection is in nsqd's state machine, as far as forwarded commands tell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum State {
    /// Before a SUB was forwarded.
    #[default]
    Init,
    /// A SUB was forwarded (if nsqd refused it, the connection is closing anyway).
    Subscribed,
    /// CLS was forwarded while subscribed.
    Closing,
}

impl State {
    /// nsqd's `E_INVALID` text for `command` in this state, when nsqgate must say it itself.
    pub(super) fn refusal(self, command: &Command) -> Option<String> {
        let name = command.name();
        let refused = match command {
            Command::Identify { .. } | Command::Auth { .. } | Command::Sub { .. } => {
                self != State::Init
            }
            Command::Rdy { .. }
            | Command::Fin { .. }
            | Command::Req { .. }
            | Command::Touch { .. } => self == State::Init,
            _ => false,
        };
        refused.then(|| format!("cannot {name} in current state"))
    }

    /// The state after `command` was forwarded.
    pub(super) fn after(self, command: &Command) -> State {
        match (self, command) {
            (State::Init, Command::Sub { .. }) => State::Subscribed,
            (State::Subscribed, Command::Cls) => State::Closing,
            (state, _) => state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nsq::MessageId;

    fn id() -> MessageId {
        MessageId(*b"0123456789abcdef")
    }

    #[test]
    fn nsqd_refusals_by_state() {
        let sub = Command::Sub {
            topic: "t".into(),
            channel: "c".into(),
        };
        let auth = Command::Auth { secret: "x".into() };
        assert_eq!(State::Init.refusal(&sub), None);
        assert_eq!(State::Init.refusal(&auth), None);
        assert_eq!(
            State::Subscribed.refusal(&auth).as_deref(),
            Some("cannot AUTH in current state")
        );
        assert_eq!(
            State::Subscribed.refusal(&sub).as_deref(),
            Some("cannot SUB in current state")
        );
        assert_eq!(
            State::Closing.refusal(&sub).as_deref(),
            Some("cannot SUB in current state")
        );
        for command in [
            Command::Rdy { count: 1 },
            Command::Fin { id: id() },
            Command::Req {
                id: id(),
                timeout_ms: 0,
            },
            Command::Touch { id: id() },
        ] {
            let text = format!("cannot {} in current state", command.name());
            assert_eq!(State::Init.refusal(&command), Some(text));
            assert_eq!(State::Subscribed.refusal(&command), None);
            assert_eq!(State::Closing.refusal(&command), None);
        }
        // nsqd answers these itself, each with a reply slot of its own.
        assert_eq!(State::Init.refusal(&Command::Cls), None);
        assert_eq!(State::Subscribed.refusal(&Command::Nop), None);
    }

    #[test]
    fn sub_then_cls_moves_through_the_states() {
        let sub = Command::Sub {
            topic: "t".into(),
            channel: "c".into(),
        };
        assert_eq!(State::Init.after(&Command::Cls), State::Init);
        assert_eq!(State::Init.after(&sub), State::Subscribed);
        assert_eq!(State::Subscribed.after(&Command::Cls), State::Closing);
        assert_eq!(State::Closing.after(&sub), State::Closing);
    }
}
