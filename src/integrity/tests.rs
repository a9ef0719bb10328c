use bytes::Bytes;

use super::envelope::{self, Rejection, MAGIC, TAG_LEN};
use super::{Integrity, Key, KeyId, Rule};

fn key(id: &str, fill: u8) -> Key {
    let id = KeyId::parse(id).unwrap();
    Key::new(id, &[fill; 32]).unwrap()
}

fn integrity(signing: Key, accepted: Vec<Key>) -> Integrity {
    let rule = Rule::new(
        &["orders.*".to_owned()],
        signing,
        accepted,
        "quarantine".to_owned(),
    );
    Integrity::new(vec![rule.unwrap()])
}

#[test]
fn a_sealed_body_opens_to_the_same_bytes() {
    let seal = integrity(key("k1", 1), vec![])
        .for_topic("orders.eu")
        .unwrap();
    let body = b"\x00binary\nbody\xff";
    let sealed = seal.seal(body);
    assert_eq!(sealed.len(), body.len() + seal.overhead());
    assert_eq!(seal.open(&sealed).unwrap(), Bytes::from_static(body));
}

#[test]
fn the_layout_is_magic_version_key_id_tag_body() {
    let k = key("k1", 1);
    let sealed = envelope::seal(&k, "orders.eu", b"hi");
    assert_eq!(&sealed[..3], MAGIC);
    assert_eq!(sealed[3], 1);
    assert_eq!(sealed[4], 2);
    assert_eq!(&sealed[5..7], b"k1");
    assert_eq!(&sealed[7 + TAG_LEN..], b"hi");
    assert_eq!(envelope::overhead(&k), 3 + 1 + 1 + 2 + 32);
}

#[test]
fn a_changed_body_fails() {
    let seal = integrity(key("k1", 1), vec![])
        .for_topic("orders.eu")
        .unwrap();
    let mut sealed = seal.seal(b"pay 10").to_vec();
    let last = sealed.len() - 1;
    sealed[last] = b'9';
    assert_eq!(seal.open(&sealed.into()), Err(Rejection::BadSignature));
}

#[test]
fn a_signature_for_another_topic_fails() {
    let rules = integrity(key("k1", 1), vec![]);
    let other = rules.for_topic("orders.us").unwrap().seal(b"pay 10");
    let seal = rules.for_topic("orders.eu").unwrap();
    assert_eq!(seal.open(&other), Err(Rejection::BadSignature));
}

#[test]
fn an_unsigned_body_has_no_envelope() {
    let seal = integrity(key("k1", 1), vec![])
        .for_topic("orders.eu")
        .unwrap();
    assert_eq!(
        seal.open(&Bytes::from_static(b"plain")),
        Err(Rejection::NoEnvelope)
    );
    assert_eq!(seal.open(&Bytes::new()), Err(Rejection::NoEnvelope));
}

#[test]
fn a_cut_short_or_unknown_version_envelope_is_malformed() {
    let seal = integrity(key("k1", 1), vec![])
        .for_topic("orders.eu")
        .unwrap();
    let sealed = seal.seal(b"x");
    for len in 3..(5 + 2 + TAG_LEN) {
        assert_eq!(
            seal.open(&sealed.slice(..len)),
            Err(Rejection::Malformed),
            "{len}"
        );
    }
    let mut v2 = sealed.to_vec();
    v2[3] = 2;
    assert_eq!(seal.open(&v2.into()), Err(Rejection::Malformed));
}

#[test]
fn a_key_id_the_topic_does_not_accept_is_unknown() {
    let stranger = integrity(key("k9", 9), vec![])
        .for_topic("orders.eu")
        .unwrap();
    let seal = integrity(key("k1", 1), vec![])
        .for_topic("orders.eu")
        .unwrap();
    assert_eq!(seal.open(&stranger.seal(b"x")), Err(Rejection::UnknownKey));
}

#[test]
fn the_same_key_id_with_other_material_fails() {
    let forged = integrity(key("k1", 7), vec![])
        .for_topic("orders.eu")
        .unwrap();
    let seal = integrity(key("k1", 1), vec![])
        .for_topic("orders.eu")
        .unwrap();
    assert_eq!(seal.open(&forged.seal(b"x")), Err(Rejection::BadSignature));
}

#[test]
fn after_rotation_the_old_key_still_opens_and_new_messages_use_the_new_one() {
    let old = integrity(key("k1", 1), vec![])
        .for_topic("orders.eu")
        .unwrap();
    let signed_before = old.seal(b"before");
    let rotated = integrity(key("k2", 2), vec![key("k1", 1)]);
    let seal = rotated.for_topic("orders.eu").unwrap();
    assert_eq!(
        seal.open(&signed_before).unwrap(),
        Bytes::from_static(b"before")
    );
    assert_eq!(seal.signing_key().as_str(), "k2");
    assert_eq!(&seal.seal(b"after")[5..7], b"k2");
}

#[test]
fn topics_no_rule_covers_are_not_signed() {
    let rules = integrity(key("k1", 1), vec![]);
    assert!(rules.for_topic("orders").is_none());
    assert!(rules.for_topic("orders.eu.x").is_none());
    assert!(!rules.signs("quarantine"));
}

#[test]
fn key_ids_and_secrets_are_checked() {
    assert!(KeyId::parse("").is_err());
    assert!(KeyId::parse("has space").is_err());
    assert!(KeyId::parse(&"a".repeat(33)).is_err());
    assert!(KeyId::parse("k-2025.01_a").is_ok());
    let short = Key::new(KeyId::parse("k").unwrap(), &[0; 31]);
    assert!(short.is_err());
}

#[test]
fn a_key_never_prints_its_secret() {
    let k = key("k1", 0x41);
    assert_eq!(format!("{k:?}"), "Key { id: KeyId(\"k1\"), .. }");
}

#[test]
fn placeholders_are_refused_in_rules() {
    let rule = Rule::new(
        &["${identity}.x".to_owned()],
        key("k1", 1),
        vec![],
        "q".to_owned(),
    );
    assert!(rule.is_err());
}
