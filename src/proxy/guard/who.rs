//! Who is on the other end of a guarded connection, for the relay's integrity audit lines.

use std::net::SocketAddr;

use super::Guard;
use crate::auth::Principal;

// === impl Guard ===

impl Guard {
    /// Who the client is, when known.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}
