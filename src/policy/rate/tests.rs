//! Rate grant tests: how role quotas merge with the `[rate_limits]` defaults. No I/O.

use super::*;

fn quota(messages: Option<(u32, u32)>, bytes: Option<(u32, u32)>) -> RateQuota {
    RateQuota {
        messages_per_sec: messages.map(|m| m.0),
        burst_messages: messages.map(|m| m.1),
        bytes_per_sec: bytes.map(|b| b.0),
        burst_bytes: bytes.map(|b| b.1),
    }
}

#[test]
fn roles_merge_with_the_defaults_field_by_field() {
    let default = Some(quota(Some((100, 100)), Some((1000, 2000))));
    let only_messages = quota(Some((10, 50)), None);
    let merged = RoleQuota::of_roles([&only_messages]).over(default);
    assert_eq!(merged, Some(quota(Some((10, 50)), Some((1000, 2000)))));
    // No role with a quota: the defaults as they are (unlimited stays unlimited).
    assert_eq!(RoleQuota::of_roles([]).over(default), default);
    assert_eq!(RoleQuota::of_roles([]).over(None), None);
}

#[test]
fn the_most_generous_role_wins_and_a_left_out_field_counts_as_the_default() {
    let default = Some(quota(Some((100, 100)), Some((1000, 1000))));
    let slow = quota(Some((5, 5)), Some((10, 10)));
    let fast_messages = quota(Some((500, 600)), None);
    let merged = RoleQuota::of_roles([&slow, &fast_messages]).over(default);
    // Messages: both set, the wider wins. Bytes: one role leaves it to the default.
    assert_eq!(merged, Some(quota(Some((500, 600)), Some((1000, 1000)))));
    // A field left to an unlimited default is unlimited.
    let merged = RoleQuota::of_roles([&slow, &fast_messages]).over(None);
    assert_eq!(merged, Some(quota(Some((500, 600)), None)));
    // Every role sets it: the roles decide, whatever the default.
    let merged = RoleQuota::of_roles([&slow]).over(default);
    assert_eq!(merged, Some(slow));
}
