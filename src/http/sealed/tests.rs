use bytes::Bytes;

use super::seal_body;
use crate::http::publish::Kind;
use crate::integrity::{Integrity, Key, KeyId, Rule, TopicSeal};
use crate::nsq::Limits;

fn seal() -> TopicSeal {
    let key = Key::new(KeyId::parse("k1").unwrap(), &[7; 32]).unwrap();
    let rule = Rule::new(&["t".to_owned()], key, vec![], "q".to_owned()).unwrap();
    Integrity::new(vec![rule]).for_topic("t").unwrap()
}

fn binary(messages: &[&[u8]]) -> Vec<u8> {
    let mut out = (messages.len() as u32).to_be_bytes().to_vec();
    for m in messages {
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}

fn opened(seal: &TopicSeal, body: &[u8]) -> Vec<Bytes> {
    super::binary_messages(body)
        .into_iter()
        .map(|m| seal.open(&Bytes::copy_from_slice(m)).unwrap())
        .collect()
}

#[test]
fn a_text_mpub_becomes_binary_with_each_line_sealed() {
    let seal = seal();
    let sealed = seal_body(Kind::MpubText, b"a\n\nb c\n", &seal, &Limits::default()).unwrap();
    assert_eq!(sealed.kind, Kind::MpubBinary);
    assert_eq!(
        opened(&seal, &sealed.body),
        [Bytes::from("a"), Bytes::from("b c")]
    );
}

#[test]
fn a_binary_mpub_keeps_its_messages_byte_for_byte() {
    let seal = seal();
    let body = binary(&[b"x\ny", b"\0"]);
    let sealed = seal_body(Kind::MpubBinary, &body, &seal, &Limits::default()).unwrap();
    assert_eq!(
        opened(&seal, &sealed.body),
        [Bytes::from("x\ny"), Bytes::from("\0")]
    );
}

#[test]
fn a_pub_that_would_not_fit_once_sealed_is_413() {
    let seal = seal();
    let limits = Limits {
        max_msg_size: 100,
        ..Limits::default()
    };
    let fits = vec![b'a'; 100 - seal.overhead()];
    assert!(seal_body(Kind::Pub, &fits, &seal, &limits).is_ok());
    let refusal = seal_body(Kind::Pub, &[fits, vec![b'a']].concat(), &seal, &limits).unwrap_err();
    assert_eq!(
        (refusal.status.as_u16(), refusal.code),
        (413, "MSG_TOO_BIG")
    );
}

#[test]
fn an_mpub_whose_sealed_body_is_over_the_body_limit_is_413() {
    let seal = seal();
    // Each of the two sealed messages is 1 + 39 bytes: 4 + 2 × (4 + 40) = 92 > 90.
    let limits = Limits {
        max_msg_size: 100,
        max_body_size: 90,
        ..Limits::default()
    };
    assert!(seal_body(Kind::MpubText, b"a\n", &seal, &limits).is_ok());
    let refusal = seal_body(Kind::MpubText, b"a\nb\n", &seal, &limits).unwrap_err();
    assert_eq!(
        (refusal.status.as_u16(), refusal.code),
        (413, "BODY_TOO_BIG")
    );
}
