//! One memory budget shared by every connection that has no identity yet: the bytes their
//! command buffers hold together (`limits.max_unauthenticated_memory`). A connection charges
//! what its buffer is to hold before it holds it (the capacity it reads into, or the bytes a
//! read on the stack brought); over budget it is refused, so strangers cannot make nsqgate
//! hold more than the budget however many of them connect. No I/O here.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
}

/// The budget could not cover a connection's buffer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{wanted} bytes would exceed the {limit}-byte budget for unauthenticated connections")]
pub struct OverBudget {
    pub wanted: usize,
    pub limit: usize,
}

/// One connection's share; given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<Budget>,
    held: usize,
}

// === impl Budget ===

impl Budget {
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// An empty share for one connection.
    pub fn charge(self: &Arc<Self>) -> Charge {
        Charge {
            budget: self.clone(),
            held: 0,
        }
    }

    /// Bytes charged now, over all connections.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

// === impl Charge ===

impl Charge {
    /// Holds exactly `bytes` from now on; refused (and unchanged) when the budget cannot grow
    /// by the difference.
    pub fn hold(&mut self, bytes: usize) -> Result<(), OverBudget> {
        if bytes <= self.held {
            self.budget
                .used
                .fetch_sub(self.held - bytes, Ordering::AcqRel);
            self.held = bytes;
            return Ok(());
        }
        let more = bytes - self.held;
        let limit = self.budget.limit;
        self.budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|total| *total <= limit)
            })
            .map_err(|_| OverBudget {
                wanted: bytes,
                limit,
            })?;
        self.held = bytes;
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.held, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;
