//! Token bucket tests over explicit instants: bursts, waits, quota changes. No I/O.

use super::*;

fn rate(per_sec: u32, burst: u32) -> Rate {
    Rate { per_sec, burst }
}

#[test]
fn takes_up_to_the_burst_then_says_how_long_to_wait() {
    let t0 = Instant::now();
    let mut bucket = TokenBucket::full(rate(10, 5), t0);
    for _ in 0..5 {
        assert_eq!(bucket.take(1, t0), Ok(()));
    }
    assert_eq!(
        bucket.take(1, t0),
        Err(Short::Wait(Duration::from_millis(100)))
    );
    assert_eq!(bucket.take(1, t0 + Duration::from_millis(100)), Ok(()));
    assert_eq!(
        bucket.take(6, t0 + Duration::from_secs(60)),
        Err(Short::OverBurst)
    );
}

#[test]
fn a_changed_quota_never_refills() {
    let t0 = Instant::now();
    let mut bucket = TokenBucket::full(rate(1, 5), t0);
    assert_eq!(bucket.take(5, t0), Ok(()));
    // A more generous quota raises the ceiling, not the level.
    bucket.set_rate(rate(1, 100), t0);
    assert!(matches!(bucket.take(1, t0), Err(Short::Wait(_))));
    // A smaller burst caps what was saved.
    let later = t0 + Duration::from_secs(50);
    bucket.set_rate(rate(1, 3), later);
    assert_eq!(bucket.take(3, later), Ok(()));
    assert!(matches!(bucket.take(1, later), Err(Short::Wait(_))));
    assert!(!bucket.is_full(later));
    assert!(bucket.is_full(later + Duration::from_secs(3)));
}
