//! [`Swap`]: a value replaced whole while readers keep the one they took. A reload stores a
//! new `Arc`; a handshake, session or request loads the one in force once and uses it to the
//! end, so nobody ever sees half of an old and half of a new set-up. The lock is held only to
//! copy or replace the pointer. No I/O.

use std::sync::{Arc, RwLock};

/// The `Arc<T>` in force, replaceable at any time.
#[derive(Debug)]
pub struct Swap<T: ?Sized> {
    current: RwLock<Arc<T>>,
}

impl<T: ?Sized> Swap<T> {
    pub fn new(value: Arc<T>) -> Swap<T> {
        Swap {
            current: RwLock::new(value),
        }
    }

    /// The value in force now.
    pub fn load(&self) -> Arc<T> {
        // The guarded value is a single `Arc`, always whole, so a poisoned lock is still sound.
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts `value` in force for every later [`Swap::load`].
    pub fn store(&self, value: Arc<T>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = value;
    }
}
