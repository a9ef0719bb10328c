//! Connection cap tests: per IP, total, per identity, per nsqd, new connections/s.

use super::*;

#[test]
fn per_ip_cap_frees_slots_on_drop() {
    let limits = ConnLimits::new(ConnSettings {
        max_per_ip: Some(2),
        ..ConnSettings::default()
    });
    let ip: IpAddr = [10, 0, 0, 1].into();
    let mut a = limits.admit().unwrap();
    a.bind_ip(ip).unwrap();
    let mut b = limits.admit().unwrap();
    b.bind_ip(ip).unwrap();
    let mut c = limits.admit().unwrap();
    assert_eq!(c.bind_ip(ip), Err(Refusal::PerIp));
    drop(c);
    drop(a);
    let mut d = limits.admit().unwrap();
    d.bind_ip(ip).unwrap();
    assert_eq!(limits.open(), 2);
    drop((b, d));
    assert!(limits.per_ip.is_empty());
    assert_eq!(limits.refused(), 1);
}

#[test]
fn total_and_identity_caps() {
    let limits = ConnLimits::new(ConnSettings {
        max_total: Some(1),
        max_per_identity: Some(1),
        ..ConnSettings::default()
    });
    let mut a = limits.admit().unwrap();
    assert!(matches!(limits.admit(), Err(Refusal::Total)));
    a.bind_identity("alice").unwrap();
    drop(a);
    let mut b = limits.admit().unwrap();
    b.bind_identity("alice").unwrap();
    assert!(limits.per_identity.contains_key("alice"));
    drop(b);
    assert!(limits.per_identity.is_empty());
}

#[test]
fn nsqd_connections_are_capped_per_address() {
    let limits = ConnLimits::new(ConnSettings {
        max_per_nsqd: Some(1),
        ..ConnSettings::default()
    });
    let a = limits.claim_nsqd("nsqd-a:4150").unwrap();
    assert!(matches!(
        limits.claim_nsqd("nsqd-a:4150"),
        Err(Refusal::PerNsqd)
    ));
    let _b = limits.claim_nsqd("nsqd-b:4150").unwrap();
    drop(a);
    let _again = limits.claim_nsqd("nsqd-a:4150").unwrap();
    assert_eq!(limits.per_nsqd.len(), 2);
}

#[test]
fn default_caps_scale_with_the_descriptor_limit() {
    let small = cap_defaults(1024);
    assert_eq!(small.max_total, 448);
    assert_eq!((small.max_per_ip, small.max_per_identity), (112, 56));
    assert_eq!(small.max_per_nsqd, 448);
    let large = cap_defaults(1 << 20);
    assert_eq!((large.max_per_ip, large.max_per_identity), (1024, 256));
    assert_eq!(large.max_per_nsqd, DEFAULT_MAX_PER_NSQD);
    assert_eq!(cap_defaults(0).max_total, 16);
    assert!(descriptor_limit() > 0);
}

#[test]
fn new_connection_rate_per_ip() {
    let limits = ConnLimits::new(ConnSettings {
        new_per_sec_per_ip: Some((NonZeroU32::MIN, NonZeroU32::MIN.saturating_add(1))),
        ..ConnSettings::default()
    });
    let ip: IpAddr = [10, 0, 0, 2].into();
    let mut permits = Vec::new();
    for _ in 0..2 {
        let mut p = limits.admit().unwrap();
        p.bind_ip(ip).unwrap();
        permits.push(p);
    }
    let mut p = limits.admit().unwrap();
    assert_eq!(p.bind_ip(ip), Err(Refusal::Rate));
}
