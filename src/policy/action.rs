//! What a client asks to do, as the policy file names it (`publish`, `subscribe`, `admin`).

use std::fmt;
use std::str::FromStr;

/// What a client asks to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// `PUB`/`MPUB`/`DPUB` to a topic (and creating it as a side effect).
    Publish,
    /// `SUB` to a channel of a topic.
    Subscribe,
    /// Topic or channel management (create, delete, empty, pause) through the HTTP API.
    Admin,
}

// === impl Action ===

impl Action {
    /// Every action, in the order the file format lists them.
    pub const ALL: [Action; 3] = [Action::Publish, Action::Subscribe, Action::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
            Action::Admin => "admin",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not `publish`, `subscribe` or `admin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown action {0:?}; expected \"publish\", \"subscribe\" or \"admin\"")]
pub struct UnknownAction(pub String);

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Action, UnknownAction> {
        Action::ALL
            .into_iter()
            .find(|action| action.as_str() == s)
            .ok_or_else(|| UnknownAction(s.to_owned()))
    }
}
