//! What an nsqd identity may announce and register, rule by rule.

use super::*;

fn grant() -> NsqdGrant {
    let patterns = |texts: &[&str]| -> Vec<Pattern> {
        texts
            .iter()
            .filter_map(|t| Pattern::parse(t).ok())
            .collect()
    };
    NsqdGrant {
        identity: "nsqd-a".into(),
        broadcast_addresses: vec!["nsqd-a.internal".into()],
        tcp_port: 4150,
        http_port: 4151,
        topics: patterns(&["orders.*", "${identity}.**"]),
        channels: patterns(&["archive", "**#ephemeral"]),
    }
}

const GOOD: &str = r#"{"broadcast_address":"nsqd-a.internal","tcp_port":4150,"http_port":4151,"version":"1.3.0","hostname":"host-a"}"#;

#[test]
fn its_own_address_and_ports_pass_and_are_reencoded_from_the_checked_fields() {
    let with_extra = GOOD.replace("\"hostname\"", "\"extra\":[1,2],\"hostname\"");
    let checked = grant().check_identify(with_extra.as_bytes());
    let Ok((announced, body)) = checked else {
        panic!("refused: {checked:?}");
    };
    assert_eq!(announced.tcp_port, 4150);
    assert_eq!(&body[..], GOOD.as_bytes());
}

#[test]
fn another_hosts_address_or_ports_are_refused() {
    let other = GOOD.replace("nsqd-a.internal", "nsqd-b.internal");
    assert!(matches!(
        grant().check_identify(other.as_bytes()),
        Err(Refusal::WrongAddress { .. })
    ));
    let port = GOOD.replace("4151", "4999");
    assert!(matches!(
        grant().check_identify(port.as_bytes()),
        Err(Refusal::WrongPort {
            port: "http_port",
            ..
        })
    ));
}

#[test]
fn a_second_spelling_of_a_field_cannot_smuggle_another_address() {
    // Go's decoder would take the later, differently cased key; serde refuses the duplicate
    // and drops the other spelling from what is forwarded.
    let duplicate = GOOD.replace("}", r#","broadcast_address":"evil"}"#);
    assert!(matches!(
        grant().check_identify(duplicate.as_bytes()),
        Err(Refusal::BadIdentify(_))
    ));
    let cased = GOOD.replace("}", r#","BROADCAST_ADDRESS":"evil"}"#);
    let forwarded = grant()
        .check_identify(cased.as_bytes())
        .map(|(_, body)| body);
    assert_eq!(forwarded.as_deref(), Ok(GOOD.as_bytes()));
}

#[test]
fn missing_or_empty_required_fields_are_refused() {
    for body in [
        r#"{"tcp_port":4150,"http_port":4151,"version":"1.3.0"}"#,
        r#"{"broadcast_address":"nsqd-a.internal","tcp_port":4150,"http_port":4151,"version":""}"#,
        "not json",
    ] {
        assert!(
            matches!(
                grant().check_identify(body.as_bytes()),
                Err(Refusal::BadIdentify(_))
            ),
            "{body}"
        );
    }
}

#[test]
fn topics_and_channels_follow_the_patterns_with_identity_and_ephemeral_rules() {
    let g = grant();
    assert_eq!(g.check_registration("orders.eu", None), Ok(()));
    assert_eq!(g.check_registration("nsqd-a.x.y", Some("archive")), Ok(()));
    assert_eq!(
        g.check_registration("orders.eu", Some("tail#ephemeral")),
        Ok(())
    );
    assert!(matches!(
        g.check_registration("orders.eu.x", None),
        Err(Refusal::Topic(_))
    ));
    assert!(matches!(
        g.check_registration("payments", None),
        Err(Refusal::Topic(_))
    ));
    assert!(matches!(
        g.check_registration("orders.eu", Some("billing")),
        Err(Refusal::Channel { .. })
    ));
}

#[test]
fn only_refused_registrations_leave_the_connection_open() {
    assert!(!Refusal::Topic("t".into()).is_fatal());
    assert!(Refusal::UnknownIdentity.is_fatal());
    assert!(Refusal::IdentifyAgain.is_fatal());
    assert!(Refusal::Topic("t".into())
        .response()
        .starts_with("E_UNAUTHORIZED "));
}
