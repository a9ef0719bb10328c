//! Name quota tests: new topics and channels held to the minute, the most-names cap.

use super::*;

fn quota(topics: u32, channels: u32, max: u32) -> NameQuota {
    NameQuota {
        new_topics_per_minute: Some(topics),
        new_channels_per_minute: Some(channels),
        max_names: Some(max),
    }
}

#[test]
fn new_topics_are_held_to_the_minute_and_known_ones_are_free() {
    let names = NameQuotas::new(quota(3, 100, 0));
    for n in 0..3 {
        names.admit("a", None, &format!("t{n}"), None).unwrap();
    }
    assert_eq!(
        names.admit("a", None, "t3", None),
        Err(NameRefused::TopicsPerMinute(3))
    );
    // Known names cost nothing, for anyone; another identity has its own minute.
    names.admit("a", None, "t0", None).unwrap();
    names.admit("b", None, "t1", None).unwrap();
    names.admit("b", None, "t3", None).unwrap();
    // Now t3 is known: a's refusal charged nothing and the name is free for it too.
    names.admit("a", None, "t3", None).unwrap();
}

#[test]
fn a_sub_charges_its_channel_and_the_most_names_cap_holds() {
    let names = NameQuotas::new(quota(100, 2, 3));
    names.admit("a", None, "t", Some("c1")).unwrap(); // topic + channel: 2 names
    names.admit("a", None, "t", Some("c2")).unwrap(); // channel: 3 names
    assert_eq!(
        names.admit("a", None, "t", Some("c3")),
        Err(NameRefused::MaxNames(3))
    );
    // A role that raises the cap still meets the per-minute channel quota.
    let role = Some(NameQuota {
        max_names: Some(10),
        ..NameQuota::default()
    });
    assert_eq!(
        names.admit("a", role, "t", Some("c3")),
        Err(NameRefused::ChannelsPerMinute(2))
    );
    let unlimited = Some(quota(0, 0, 0));
    for n in 0..500 {
        names
            .admit("a", unlimited, "t", Some(&format!("x{n}")))
            .unwrap();
    }
}

#[test]
fn the_most_generous_role_wins_field_by_field() {
    let a = Some(NameQuota {
        new_topics_per_minute: Some(10),
        max_names: Some(0),
        ..NameQuota::default()
    });
    let b = Some(NameQuota {
        new_topics_per_minute: Some(50),
        new_channels_per_minute: Some(5),
        max_names: Some(100),
    });
    assert_eq!(
        NameQuota::most_generous(a, b),
        Some(NameQuota {
            new_topics_per_minute: Some(50),
            new_channels_per_minute: Some(5),
            max_names: Some(0),
        })
    );
    assert_eq!(NameQuota::most_generous(None, a), a);
}
