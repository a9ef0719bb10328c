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
mod tests;
