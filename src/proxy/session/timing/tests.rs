//! The decision as a table: one row per situation a client can be in.

use super::*;
use crate::auth::{Method, Proof};

use ClientCertMode::{None as NoCerts, Optional, Required};
use ClientTls::{Plain, Secure};
use NsqdOpens::*;

fn principal() -> Principal {
    Principal {
        identity: "alice".to_owned(),
        method: Method::Named,
        claimed_roles: Vec::new(),
        expires_at: None,
        proof: Proof::SelfContained,
        token_id: None,
    }
}

fn identify(body: &str) -> ClientIdentify {
    ClientIdentify::parse(body.as_bytes()).unwrap()
}

const UPGRADE: &str = r#"{"feature_negotiation":true,"tls_v1":true}"#;
const NO_UPGRADE: &str = r#"{"feature_negotiation":true}"#;
/// tls_v1 without feature negotiation: nsqd answers a bare OK and upgrades nothing.
const TLS_WITHOUT_NEGOTIATION: &str = r#"{"tls_v1":true}"#;

#[test]
fn when_nsqd_opens_for_each_situation() {
    let known = principal();
    // (require_identity, client_cert, IDENTIFY body or None, client TLS, known?, expected)
    let table = [
        // A certificate named the client: now, whatever else holds.
        (true, Required, Some(UPGRADE), Secure, true, Now),
        (false, Optional, None, Secure, true, Now),
        (true, Optional, Some(NO_UPGRADE), Secure, true, Now),
        // An upgrade to come may bring a certificate that names the client.
        (true, Required, Some(UPGRADE), Plain, false, AfterUpgrade),
        (true, Optional, Some(UPGRADE), Plain, false, AfterUpgrade),
        (false, Optional, Some(UPGRADE), Plain, false, AfterUpgrade),
        // No certificates asked for: the upgrade names nobody.
        (true, NoCerts, Some(UPGRADE), Plain, false, AfterAuth),
        (false, NoCerts, Some(UPGRADE), Plain, false, AtFirstCommand),
        // Already TLS, or no upgrade asked for: AUTH, or the first command nsqd must see.
        (true, Optional, Some(UPGRADE), Secure, false, AfterAuth),
        (true, Required, Some(NO_UPGRADE), Plain, false, AfterAuth),
        (
            true,
            Optional,
            Some(TLS_WITHOUT_NEGOTIATION),
            Plain,
            false,
            AfterAuth,
        ),
        (true, Optional, None, Plain, false, AfterAuth),
        (false, Optional, None, Secure, false, AtFirstCommand),
        (
            false,
            Required,
            Some(NO_UPGRADE),
            Plain,
            false,
            AtFirstCommand,
        ),
    ];
    for (row, (require_identity, client_cert, body, tls, is_known, expected)) in
        table.into_iter().enumerate()
    {
        let rules = IdentityRules {
            require_identity,
            client_cert,
        };
        let identify = body.map(identify);
        let principal = is_known.then_some(&known);
        assert_eq!(
            when_nsqd_opens(rules, identify.as_ref(), tls, principal),
            expected,
            "row {row}"
        );
    }
}

#[test]
fn the_reply_asks_for_auth_unless_known_or_a_certificate_is_required_next() {
    let known = principal();
    // (require_identity, client_cert, IDENTIFY body, client TLS, known?, auth_required)
    let table = [
        (true, Optional, UPGRADE, Plain, false, true),
        (true, NoCerts, UPGRADE, Plain, false, true),
        (true, Required, UPGRADE, Plain, false, false),
        (true, Required, NO_UPGRADE, Plain, false, true),
        (true, Required, UPGRADE, Secure, true, false),
        (true, Optional, NO_UPGRADE, Secure, false, true),
        (false, Optional, UPGRADE, Plain, false, false),
        (false, NoCerts, NO_UPGRADE, Plain, false, false),
    ];
    for (row, (require_identity, client_cert, body, tls, is_known, expected)) in
        table.into_iter().enumerate()
    {
        let rules = IdentityRules {
            require_identity,
            client_cert,
        };
        let principal = is_known.then_some(&known);
        assert_eq!(
            auth_required(rules, &identify(body), tls, principal),
            expected,
            "row {row}"
        );
    }
}
