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

#[test]
fn a_lease_is_a_64th_of_the_burst_taken_only_while_the_bucket_stays_half_full() {
    let t0 = Instant::now();
    let mut bucket = TokenBucket::full(rate(1, 640), t0);
    assert_eq!(bucket.lease(), 10);
    // Down to 330: one more lease leaves exactly half; the next would go below it.
    bucket.take(300, t0).unwrap();
    assert_eq!(bucket.lease(), 10);
    assert_eq!(bucket.lease(), 0);
    // Settling a lease gives back what it did not spend, never above the burst.
    bucket.settle(10, 20, t0);
    assert_eq!(bucket.take(340, t0), Ok(()));
    assert!(bucket.take(1, t0).is_err());
    bucket.settle(10, 10_000, t0);
    assert_eq!(bucket.take(640, t0), Ok(()));
    // A burst under 64 never leases: each token is drawn where it is spent.
    let mut small = TokenBucket::full(rate(1, 63), t0);
    assert_eq!(small.lease(), 0);
}

#[test]
fn at_most_an_eighth_of_the_burst_is_out_in_leases() {
    let t0 = Instant::now();
    let mut bucket = TokenBucket::full(rate(1, 6400), t0);
    let leases: Vec<u64> = (0..10).map(|_| bucket.lease()).collect();
    assert_eq!(leases, [100, 100, 100, 100, 100, 100, 100, 100, 0, 0]);
    // One settled (all of it spent): one more may be granted.
    bucket.settle(100, 0, t0);
    assert_eq!(bucket.lease(), 100);
    assert_eq!(bucket.lease(), 0);
}
