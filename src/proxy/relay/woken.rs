//! Per-branch wake-ups for a task that waits on several futures at once. A task has one waker,
//! so whatever woke it, `select!` polls every branch again: nsqd's `OK` re-polled the client
//! side's whole wait, and a client's PUB re-polled nsqd's side. [`WhenWoken`] gives its future
//! a waker of its own and polls it only after that waker fired: the other branches cost one
//! atomic swap each (docs/perf-profile.md, "Where P0's instructions go").

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// `inner`, polled only when its own waker was woken since its last poll (and on the first).
pub(super) struct WhenWoken<F> {
    inner: F,
    flag: Arc<Flag>,
    /// `flag` as a waker, made once: what `inner` registers wherever it waits.
    waker: Waker,
}

/// Set when the inner future's waker fires; wakes the task that polls the wrapper.
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

// === impl WhenWoken ===

impl<F: Future + Unpin> WhenWoken<F> {
    pub(super) fn new(inner: F) -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(flag.clone());
        WhenWoken { inner, flag, waker }
    }

    /// The future itself, to be replaced once it completed (the next poll polls the new one).
    pub(super) fn set(&mut self, inner: F) {
        self.inner = inner;
        self.flag.woken.store(true, Ordering::Release);
    }
}

impl<F: Future + Unpin> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // Registered before the flag is read: a wake-up in between finds the task's waker.
        this.flag.task.register(cx.waker());
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let mut own = Context::from_waker(&this.waker);
        Pin::new(&mut this.inner).poll(&mut own)
    }
}

// === impl Flag ===

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `ready` is set, and wakes whoever polled it when asked.
    struct Probe {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.ready.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    /// A waker that counts how often the task was woken.
    struct Task(AtomicUsize);
    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_inner_future_is_polled_only_after_its_own_waker_fired() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let inner_waker = Arc::new(std::sync::Mutex::new(None));
        let probe = Probe {
            polls: polls.clone(),
            ready: ready.clone(),
            waker: inner_waker.clone(),
        };
        let mut wrapped = WhenWoken::new(probe);
        let task = Arc::new(Task(AtomicUsize::new(0)));
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);

        // The first poll reaches the inner future.
        assert!(Pin::new(&mut wrapped).poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // The task woken for something else: the inner future is not polled again.
        assert!(Pin::new(&mut wrapped).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut wrapped).poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1);

        // Its own waker fires: the task is woken, and the next poll reaches it.
        ready.store(true, Ordering::SeqCst);
        let own = inner_waker.lock().unwrap().take().unwrap();
        own.wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert!(Pin::new(&mut wrapped).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_replaced_future_is_polled_at_the_next_poll() {
        let polls = Arc::new(AtomicUsize::new(0));
        let probe = |ready: bool| Probe {
            polls: polls.clone(),
            ready: Arc::new(AtomicBool::new(ready)),
            waker: Arc::new(std::sync::Mutex::new(None)),
        };
        let mut wrapped = WhenWoken::new(probe(false));
        let waker = Waker::from(Arc::new(Task(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut wrapped).poll(&mut cx).is_pending());
        wrapped.set(probe(true));
        assert!(Pin::new(&mut wrapped).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }
}
