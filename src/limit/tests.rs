//! Rate limiter tests: reject and delay modes, role quotas, idle keys evicted.

use super::*;
use crate::policy::{Grant, RoleQuota};

fn settings(on_limit: OnLimit) -> RateSettings {
    RateSettings {
        on_limit,
        max_delay: Duration::from_millis(300),
        idle_evict: Duration::from_secs(60),
        identity: Some(RateQuota {
            messages_per_sec: Some(10),
            burst_messages: Some(5),
            ..RateQuota::default()
        }),
        identity_topic: None,
        topic: None,
    }
}

#[tokio::test]
async fn reject_mode_refuses_past_the_burst_and_keys_are_separate() {
    let limits = RateLimits::new(settings(OnLimit::Reject));
    for _ in 0..5 {
        limits
            .admit("a", "t", RoleRates::default(), 1, 10)
            .await
            .unwrap();
    }
    let err = limits
        .admit("a", "t", RoleRates::default(), 1, 10)
        .await
        .unwrap_err();
    assert_eq!(err.scope(), "identity");
    // Another identity has its own bucket.
    limits
        .admit("b", "t", RoleRates::default(), 1, 10)
        .await
        .unwrap();
    // More than the burst in one MPUB can never pass.
    assert!(limits
        .admit("c", "t", RoleRates::default(), 6, 10)
        .await
        .is_err());
}

#[tokio::test]
async fn kept_buckets_draw_from_the_identitys_one_bucket_and_follow_the_identity() {
    let limits = RateLimits::new(settings(OnLimit::Reject));
    let kept = std::sync::Mutex::new(None);
    let one = |topic| Publish {
        topic,
        rates: RoleRates::default(),
        messages: 1,
        bytes: 0,
    };
    // The burst of 5 is shared with `admit` for the same identity, through the kept buckets.
    limits
        .admit("a", "t", RoleRates::default(), 2, 0)
        .await
        .unwrap();
    for topic in ["t", "u", "t"] {
        limits.admit_kept(&kept, "a", one(topic)).await.unwrap();
    }
    let held = |kept: &std::sync::Mutex<Option<SessionBuckets>>| {
        kept.lock()
            .unwrap()
            .as_ref()
            .map(|h| h.identity().to_owned())
    };
    assert_eq!(held(&kept).as_deref(), Some("a"));
    let refused = limits.admit_kept(&kept, "a", one("t")).await.unwrap_err();
    assert_eq!(refused.scope(), "identity");
    assert!(limits
        .admit("a", "t", RoleRates::default(), 1, 0)
        .await
        .is_err());
    // Another identity on the same connection draws from its own bucket, never a's.
    limits.admit_kept(&kept, "b", one("t")).await.unwrap();
    assert_eq!(held(&kept).as_deref(), Some("b"));
    // Back to a: its buckets looked up again are the same, still empty.
    assert!(limits.admit_kept(&kept, "a", one("t")).await.is_err());
}

#[tokio::test]
async fn delay_mode_waits_for_tokens_within_the_bound() {
    let limits = RateLimits::new(settings(OnLimit::Delay));
    limits
        .admit("a", "t", RoleRates::default(), 5, 0)
        .await
        .unwrap();
    let started = Instant::now();
    // 10/s: one more token takes ~100 ms, inside the 300 ms bound.
    limits
        .admit("a", "t", RoleRates::default(), 1, 0)
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(50));
    // Five more would need ~500 ms: past the bound, refused.
    assert!(limits
        .admit("a", "t", RoleRates::default(), 5, 0)
        .await
        .is_err());
}

#[tokio::test]
async fn role_quota_overrides_the_default_and_idle_keys_are_evicted() {
    let mut s = settings(OnLimit::Reject);
    s.idle_evict = Duration::from_secs(0);
    let limits = RateLimits::new(s);
    let generous = RoleRates {
        identity: RoleQuota {
            messages: Grant::Set(Rate {
                per_sec: 1000,
                burst: 1000,
            }),
            bytes: Grant::Default,
        },
        identity_topic: RoleQuota::default(),
    };
    for _ in 0..50 {
        limits.admit("a", "t", generous, 1, 0).await.unwrap();
    }
    assert_eq!(limits.len(), 1);
    // Kept while short of tokens (evicting it would refill it), dropped once full again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while limits.evict_idle() == 0 {
        assert!(
            Instant::now() < deadline,
            "a refilled idle bucket is evicted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(limits.is_empty());
}

fn burst_of(burst: u32) -> RoleRates {
    RoleRates {
        identity: RoleQuota {
            messages: Grant::Set(Rate { per_sec: 1, burst }),
            bytes: Grant::Default,
        },
        identity_topic: RoleQuota::default(),
    }
}

#[tokio::test]
async fn switching_quotas_never_refills_the_one_bucket() {
    let limits = RateLimits::new(settings(OnLimit::Reject));
    let (five, ten) = (burst_of(5), burst_of(10));
    let mut admitted = 0;
    for round in 0..100 {
        let rates = if round % 2 == 0 { five } else { ten };
        if limits.admit("a", "t", rates, 1, 0).await.is_err() {
            break;
        }
        admitted += 1;
    }
    // 5 at start, plus at most a token or two of refill at 1/s while the loop runs.
    assert!((5..=7).contains(&admitted), "{admitted}");
    assert_eq!(limits.len(), 1);
}

#[tokio::test]
async fn a_role_setting_only_messages_keeps_the_default_byte_quota() {
    let mut s = settings(OnLimit::Reject);
    s.identity = Some(RateQuota {
        bytes_per_sec: Some(1),
        burst_bytes: Some(100),
        ..RateQuota::default()
    });
    let limits = RateLimits::new(s);
    let messages_only = RoleRates {
        identity: RoleQuota {
            messages: Grant::Set(Rate {
                per_sec: 1000,
                burst: 1000,
            }),
            bytes: Grant::Default,
        },
        identity_topic: RoleQuota::default(),
    };
    limits.admit("a", "t", messages_only, 1, 60).await.unwrap();
    let err = limits
        .admit("a", "t", messages_only, 1, 60)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Limited::Exceeded { detail, .. } if detail.starts_with("bytes")),
        "{err}"
    );
}

/// Reject mode, and an identity quota of `burst` messages refilled at 1/s.
fn identity_burst(burst: u32) -> RateSettings {
    RateSettings {
        identity: Some(RateQuota {
            messages_per_sec: Some(1),
            burst_messages: Some(burst),
            ..RateQuota::default()
        }),
        ..settings(OnLimit::Reject)
    }
}

fn one(topic: &str) -> Publish<'_> {
    Publish {
        topic,
        rates: RoleRates::default(),
        messages: 1,
        bytes: 10,
    }
}

#[tokio::test]
async fn a_bucket_a_session_holds_is_never_evicted_so_newcomers_share_it() {
    let limits = RateLimits::new(RateSettings {
        idle_evict: Duration::ZERO,
        ..settings(OnLimit::Reject)
    });
    let mut held = SessionBuckets::new(&limits, "a");
    limits
        .admit_held(&mut held, one("t"), Instant::now())
        .await
        .unwrap();
    // Refilled (10/s): full and idle, but held.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(limits.evict_idle(), 0);
    for _ in 0..5 {
        limits
            .admit_held(&mut held, one("t"), Instant::now())
            .await
            .unwrap();
    }
    // Another connection of the same identity draws from the very same (empty) bucket.
    let err = limits
        .admit("a", "t", RoleRates::default(), 1, 10)
        .await
        .unwrap_err();
    assert_eq!(err.scope(), "identity");
    drop(held);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(limits.evict_idle(), 1, "unheld, refilled and idle");
}

#[tokio::test]
async fn a_session_sees_reloaded_rate_limits_at_its_next_publish() {
    let limits = RateLimits::new(settings(OnLimit::Reject));
    let mut held = SessionBuckets::new(&limits, "a");
    let now = Instant::now();
    limits.admit_held(&mut held, one("t"), now).await.unwrap();
    // Burst 5 -> 1: the 4 tokens left are capped at 1.
    limits.set_settings(identity_burst(1));
    limits.admit_held(&mut held, one("t"), now).await.unwrap();
    let err = limits
        .admit_held(&mut held, one("t"), now)
        .await
        .unwrap_err();
    assert_eq!(err.scope(), "identity");
}

#[tokio::test]
async fn a_session_holds_the_buckets_of_its_recent_topics_only() {
    let limits = RateLimits::new(RateSettings {
        identity: None,
        topic: Some(RateQuota {
            messages_per_sec: Some(10),
            burst_messages: Some(5),
            ..RateQuota::default()
        }),
        ..settings(OnLimit::Reject)
    });
    let mut held = SessionBuckets::new(&limits, "a");
    let now = Instant::now();
    for n in 0..20 {
        let topic = format!("t{n}");
        limits
            .admit_held(&mut held, one(&topic), now)
            .await
            .unwrap();
    }
    assert_eq!(held.topics_held(), held::TOPICS);
    assert_eq!(limits.len(), 20);
    // A topic forgotten by the session is looked up again: the same bucket, 4 tokens left.
    for _ in 0..4 {
        limits.admit_held(&mut held, one("t0"), now).await.unwrap();
    }
    let err = limits
        .admit_held(&mut held, one("t0"), now)
        .await
        .unwrap_err();
    assert_eq!(err.scope(), "topic");
}

/// `[rate_limits]` as bench/run configures P1: far above anything one machine can publish.
fn not_binding() -> RateSettings {
    RateSettings {
        on_limit: OnLimit::Delay,
        identity: Some(RateQuota {
            messages_per_sec: Some(100_000_000),
            bytes_per_sec: Some(4_000_000_000),
            ..RateQuota::default()
        }),
        identity_topic: Some(RateQuota {
            messages_per_sec: Some(100_000_000),
            ..RateQuota::default()
        }),
        topic: None,
        ..settings(OnLimit::Delay)
    }
}

#[test]
fn limits_that_do_not_bind_admit_every_publish_at_once() {
    // Four sessions of one identity share its buckets, each with the clock reading of its
    // own batch (older and newer ones interleaved, as the connections' batches are): every
    // publish is admitted synchronously, so none can ever wait on a timer.
    let limits = RateLimits::new(not_binding());
    let mut sessions: Vec<_> = (0..4)
        .map(|_| SessionBuckets::new(&limits, "bench"))
        .collect();
    let start = Instant::now();
    for n in 0..200_000u32 {
        let batch_read = start + Duration::from_micros(u64::from(n / 8) * 10);
        let stale = batch_read - Duration::from_micros(u64::from(n % 7) * 300);
        let held = &mut sessions[n as usize % 4];
        let publish = Publish {
            bytes: 100,
            ..one("latency-10k")
        };
        let now = if n % 3 == 0 { stale } else { batch_read };
        assert_eq!(
            limits.admit_now(held, publish, now),
            Drawn::All,
            "publish {n}"
        );
    }
}

#[tokio::test]
async fn a_publish_short_in_a_later_scope_is_charged_each_draw_once() {
    // Identity: burst 5. Identity and topic: burst 1. Reject mode.
    let limits = RateLimits::new(RateSettings {
        identity_topic: Some(RateQuota {
            messages_per_sec: Some(1),
            burst_messages: Some(1),
            ..RateQuota::default()
        }),
        ..settings(OnLimit::Reject)
    });
    let mut held = SessionBuckets::new(&limits, "a");
    let now = Instant::now();
    assert_eq!(limits.admit_now(&mut held, one("t"), now), Drawn::All);
    // The identity's token is taken, the pair's is missing: the rest goes on from there.
    let next = match limits.admit_now(&mut held, one("t"), now) {
        Drawn::UpTo(next) => next,
        Drawn::All => panic!("the pair's bucket is empty"),
    };
    assert_eq!(next, 2, "the identity and topic scope's messages");
    let err = limits
        .admit_rest(&mut held, one("t"), now, next)
        .await
        .unwrap_err();
    assert_eq!(err.scope(), "identity and topic");
    // 5 - 2 = 3 identity tokens left: the resumed draw did not take the identity's again.
    for topic in ["u", "v", "w"] {
        limits.admit_held(&mut held, one(topic), now).await.unwrap();
    }
    let err = limits
        .admit_held(&mut held, one("x"), now)
        .await
        .unwrap_err();
    assert_eq!(err.scope(), "identity");
}

/// Identity quota of `burst` messages refilled at 1/s, in reject mode.
fn leasing(burst: u32) -> RateLimits {
    RateLimits::new(identity_burst(burst))
}

/// Publishes one message at a time, in turn on each session, until every one is refused;
/// how many were admitted. `now` stands still: nothing refills.
async fn admitted_in_turn(
    limits: &RateLimits,
    sessions: &mut [SessionBuckets],
    now: Instant,
) -> usize {
    let mut admitted = 0;
    let mut refused = vec![false; sessions.len()];
    while !refused.iter().all(|r| *r) {
        for (held, refused) in sessions.iter_mut().zip(refused.iter_mut()) {
            match limits.admit_held(held, one("t"), now).await {
                Ok(()) => admitted += 1,
                Err(_) => *refused = true,
            }
        }
    }
    admitted
}

#[tokio::test]
async fn sessions_leasing_from_one_bucket_together_get_exactly_its_burst() {
    let limits = leasing(6400);
    let mut sessions: Vec<_> = (0..3).map(|_| SessionBuckets::new(&limits, "a")).collect();
    let now = Instant::now();
    assert_eq!(admitted_in_turn(&limits, &mut sessions, now).await, 6400);
    // Each refused session gave back its lease: nothing is left anywhere.
    let mut fresh = SessionBuckets::new(&limits, "a");
    assert!(limits.admit_held(&mut fresh, one("t"), now).await.is_err());
}

#[tokio::test]
async fn a_session_that_ends_gives_back_what_it_leased() {
    let limits = leasing(6400);
    let now = Instant::now();
    let mut first = SessionBuckets::new(&limits, "a");
    limits.admit_held(&mut first, one("t"), now).await.unwrap();
    drop(first);
    let mut second = [SessionBuckets::new(&limits, "a")];
    assert_eq!(admitted_in_turn(&limits, &mut second, now).await, 6399);
}

#[tokio::test]
async fn a_lease_taken_under_one_rate_is_not_spent_under_another() {
    let limits = leasing(6400);
    let now = Instant::now();
    let mut held = [SessionBuckets::new(&limits, "a")];
    // One publish: 1 token spent and 100 leased; the bucket holds 6299.
    limits
        .admit_held(&mut held[0], one("t"), now)
        .await
        .unwrap();
    // A reload lowers the burst to 64: the lease goes back and the bucket is capped at 64.
    limits.set_settings(identity_burst(64));
    assert_eq!(admitted_in_turn(&limits, &mut held, now).await, 64);
}

mod runs;
