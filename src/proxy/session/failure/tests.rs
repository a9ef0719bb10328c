//! What a client hears when its nsqd connection cannot be opened, and whose fault each
//! failure of the opening is.

use super::*;
use crate::limit::conn::Refusal;

fn unavailable(cause: UpstreamError, at_auth: bool) -> SessionError {
    SessionError::NsqdUnavailable {
        address: "nsqd:4150".to_owned(),
        cause,
        at_auth,
    }
}

#[test]
fn the_client_hears_only_that_nsqd_is_unavailable_and_the_log_hears_why() {
    let cause = UpstreamError::TlsNotOffered;
    let e = unavailable(cause, false);
    let told = e.told().unwrap();
    assert_eq!(told.text(), "E_IDENTIFY_FAILED nsqd unavailable");
    assert_eq!(
        e.to_string(),
        "nsqd unavailable: nsqd at nsqd:4150: nsqd did not offer TLS \
         (is it started with --tls-cert and --tls-key?)"
    );
    assert_eq!(e.ending().kind, Kind::UpstreamUnavailable);
    assert_eq!(e.ending().blame, Some(Blame::Configuration));
}

#[test]
fn after_a_successful_auth_it_is_an_auth_failure() {
    let cause = UpstreamError::Timeout("nsqd:4150".to_owned());
    let e = unavailable(cause, true);
    assert_eq!(
        e.told().unwrap().text(),
        "E_AUTH_FAILED AUTH failed: nsqd unavailable"
    );
    assert_eq!(e.ending().blame, Some(Blame::Upstream));
    // The cause names the address already: the log line says it once.
    assert_eq!(
        e.to_string(),
        "nsqd unavailable: nsqd at nsqd:4150 did not answer in time"
    );
}

#[test]
fn the_cap_on_connections_to_nsqd_is_a_limit_set_by_the_operator() {
    let cause = UpstreamError::Limited {
        address: "nsqd:4150".to_owned(),
        refusal: Refusal::PerNsqd,
    };
    let e = unavailable(cause, false);
    assert!(e
        .told()
        .unwrap()
        .text()
        .starts_with("E_IDENTIFY_FAILED nsqgate refused: "));
    assert_eq!(e.ending().kind, Kind::Limit);
    assert_eq!(e.ending().blame, Some(Blame::Configuration));
}

#[test]
fn what_the_client_is_not_told_is_still_classified() {
    let cases = [
        (SessionError::Timeout("IDENTIFY"), Kind::ClientTimeout),
        (SessionError::Closed("IDENTIFY"), Kind::Closed),
        (SessionError::Stopping, Kind::Shutdown),
        (SessionError::Limited(Refusal::PerIp), Kind::Limit),
        (
            SessionError::ProxyHeader(ProxyHeaderError::TooLarge),
            Kind::ClientProtocol,
        ),
        (
            SessionError::Io(std::io::Error::from(std::io::ErrorKind::InvalidData)),
            Kind::Tls,
        ),
        (
            SessionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            Kind::Closed,
        ),
    ];
    for (e, kind) in cases {
        assert!(e.told().is_none(), "{e}");
        assert_eq!(e.ending().kind, kind, "{e}");
    }
}

#[test]
fn an_identify_nsqd_would_refuse_is_the_clients_protocol_error() {
    let e = SessionError::from(IdentifyRefusal::Invalid {
        what: "heartbeat interval",
        value: 100,
    });
    assert_eq!(
        e.told().unwrap().text(),
        "E_BAD_BODY IDENTIFY heartbeat interval (100) is invalid"
    );
    assert_eq!(e.ending().kind, Kind::ClientProtocol);
}
