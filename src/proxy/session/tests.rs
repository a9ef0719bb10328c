//! What a connection's task holds for its whole life.

use super::serve;

/// The size of the future `f` returns for five arguments.
fn future_size<A, B, C, D, E, F>(_: impl FnOnce(A, B, C, D, E) -> F) -> usize {
    std::mem::size_of::<F>()
}

#[test]
fn an_idle_connections_task_holds_little_beyond_the_relay() {
    // The task is as large as its largest state, kept from accept to close: it was 5.4 KiB,
    // with the session's phases, their arguments and the relay's kept twice over.
    let size = future_size(serve);
    assert!(size <= 2048, "a connection's task is {size} bytes");
}
