use super::*;

#[test]
fn a_hundred_thousand_topics_stay_within_capacity() {
    let mut cache = Decisions::default();
    for n in 0..100_000 {
        let topic = format!("topic.{n}");
        assert_eq!(cache.get(Action::Publish, &topic, ""), None);
        cache.insert(Action::Publish, &topic, "", n % 2 == 0);
        assert!(cache.len() <= CAPACITY);
    }
    assert_eq!(cache.len(), CAPACITY);
    // The most recent ones are there, the old ones were forgotten.
    assert_eq!(cache.get(Action::Publish, "topic.99999", ""), Some(false));
    assert_eq!(cache.get(Action::Publish, "topic.99998", ""), Some(true));
    assert_eq!(cache.get(Action::Publish, "topic.0", ""), None);
}

#[test]
fn a_used_entry_outlives_newer_unused_ones() {
    let mut cache = Decisions::default();
    cache.insert(Action::Subscribe, "orders", "billing", true);
    for n in 0..CAPACITY * 4 {
        // Touching the hot entry each round keeps it at the front.
        assert_eq!(
            cache.get(Action::Subscribe, "orders", "billing"),
            Some(true)
        );
        cache.insert(Action::Publish, &format!("t{n}"), "", true);
    }
    assert_eq!(
        cache.get(Action::Subscribe, "orders", "billing"),
        Some(true)
    );
    // Action and channel are part of the key.
    assert_eq!(cache.get(Action::Publish, "orders", "billing"), None);
    assert_eq!(cache.get(Action::Subscribe, "orders", "ops"), None);
    cache.clear();
    assert_eq!(cache.len(), 0);
}
