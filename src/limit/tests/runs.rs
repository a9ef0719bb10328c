//! A run of publishes drawn at once from the leases a session holds: all or nothing.

use super::*;

/// `messages` publishes to `t` of 10 bytes each, drawn as one.
fn run(messages: u32) -> Publish<'static> {
    Publish {
        messages,
        bytes: 10 * u64::from(messages),
        ..one("t")
    }
}

#[tokio::test]
async fn a_run_is_drawn_from_the_lease_only_when_it_covers_all_of_it() {
    let limits = leasing(6400);
    let now = Instant::now();
    let mut held = [SessionBuckets::new(&limits, "a")];
    // Before any publish there is no lease: nothing is drawn.
    assert!(!limits.spend_leased_run(&mut held[0], run(2)));
    // One publish: 1 token spent and 100 leased; the bucket holds 6299.
    limits
        .admit_held(&mut held[0], one("t"), now)
        .await
        .unwrap();
    assert!(!limits.spend_leased_run(&mut held[0], run(101)));
    assert!(limits.spend_leased_run(&mut held[0], run(60)));
    assert!(limits.spend_leased_run(&mut held[0], run(40)));
    assert!(!limits.spend_leased_run(&mut held[0], run(1)));
    // The runs spent the whole lease and nothing else: what is left is the bucket's 6299,
    // and nothing of the lease goes back when the session is refused.
    assert_eq!(admitted_in_turn(&limits, &mut held, now).await, 6299);
}

#[tokio::test]
async fn a_run_at_another_rate_than_its_lease_was_taken_at_is_not_drawn_from_it() {
    let limits = leasing(6400);
    let now = Instant::now();
    let mut held = SessionBuckets::new(&limits, "a");
    limits.admit_held(&mut held, one("t"), now).await.unwrap();
    // A reload changes the rate the lease was taken at: the run is drawn publish by publish.
    limits.set_settings(identity_burst(6401));
    assert!(!limits.spend_leased_run(&mut held, run(2)));
}
