//! [`Swap`]: a value replaced whole while readers keep the one they took. A reload stores a
//! new `Arc`; a handshake, session or request loads the one in force once and uses it to the
//! end, so nobody ever sees half of an old and half of a new set-up. Built on `arc-swap`:
//! loading takes no lock, so a reload never stalls the handshakes and publishes reading it.
//! No I/O.

use std::sync::Arc;

use arc_swap::ArcSwap;

/// The `Arc<T>` in force, replaceable at any time.
#[derive(Debug)]
pub struct Swap<T> {
    current: ArcSwap<T>,
}

impl<T> Swap<T> {
    pub fn new(value: Arc<T>) -> Swap<T> {
        Swap {
            current: ArcSwap::new(value),
        }
    }

    /// The value in force now.
    pub fn load(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// Puts `value` in force for every later [`Swap::load`].
    pub fn store(&self, value: Arc<T>) {
        self.current.store(value);
    }
}
