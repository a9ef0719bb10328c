use std::io;

use rustls::pki_types::pem::PemObject;

use super::*;
use crate::error::{Blame, Kind};

#[test]
fn every_family_is_rendered_with_help_and_type() {
    let metrics = Metrics::new().unwrap();
    // Families with labels appear once a series exists.
    metrics.listener("nsq", "127.0.0.1:4150").accepted();
    metrics.tls_handshake(Leg::Client, Some("certificate"));
    metrics.authentication("api_key", true);
    metrics.decision("publish", false);
    metrics.size_limited("message");
    metrics.session_ended(Ending::of(Kind::Policy));
    metrics.reloaded("policy", false);
    metrics.upstream_probed("127.0.0.1:4150", true);
    let out = metrics.render();
    for family in [
        "nsqgate_build_info",
        "nsqgate_connections_accepted_total",
        "nsqgate_connections_open",
        "nsqgate_connections_refused_total",
        "nsqgate_tls_handshakes_total",
        "nsqgate_tls_handshake_failures_total",
        "nsqgate_authentications_total",
        "nsqgate_decisions_total",
        "nsqgate_rate_limit_refusals_total",
        "nsqgate_size_limit_refusals_total",
        "nsqgate_name_quota_refusals_total",
        "nsqgate_revocations_total",
        "nsqgate_sessions_ended_total",
        "nsqgate_messages_total",
        "nsqgate_bytes_total",
        "nsqgate_upstream_connect_duration_seconds",
        "nsqgate_publish_round_trip_seconds",
        "nsqgate_reloads_total",
        "nsqgate_upstream_ready",
        "nsqgate_audit_write_failures_total",
        "nsqgate_jwks_stale",
        "nsqgate_http_requests_total",
        "nsqgate_rogue_nsqd_dropped_total",
    ] {
        assert!(
            out.contains(&format!("# HELP {family} ")),
            "{family}:\n{out}"
        );
        assert!(
            out.contains(&format!("# TYPE {family} ")),
            "{family}:\n{out}"
        );
    }
    let version = env!("CARGO_PKG_VERSION");
    assert!(out.contains(&format!("nsqgate_build_info{{version=\"{version}\"}} 1\n")));
    assert!(out.contains("nsqgate_decisions_total{action=\"publish\",outcome=\"deny\"} 1\n"));
    assert!(out.contains("nsqgate_sessions_ended_total{blame=\"client\",kind=\"policy\"} 1\n"));
    assert!(out.contains(
        "nsqgate_tls_handshake_failures_total{leg=\"client\",reason=\"certificate\"} 1\n"
    ));
    assert!(out.contains("# TYPE nsqgate_publish_round_trip_seconds histogram\n"));
}

#[test]
fn a_listeners_open_count_falls_when_its_connection_ends() {
    let metrics = Metrics::new().unwrap();
    let counts = metrics.listener("nsq", "127.0.0.1:1");
    counts.accepted();
    let open = counts.opened();
    let series = "nsqgate_connections_open{address=\"127.0.0.1:1\",kind=\"nsq\"}";
    assert!(metrics.render().contains(&format!("{series} 1\n")));
    drop(open);
    assert!(metrics.render().contains(&format!("{series} 0\n")));
}

#[test]
fn the_hot_path_counters_add_to_their_direction() {
    let metrics = Metrics::new().unwrap();
    metrics.messages_published.inc_by(3);
    metrics.bytes_to_client.inc_by(10);
    metrics.publish_answered(Duration::from_millis(2));
    let out = metrics.render();
    assert!(
        out.contains("nsqgate_messages_total{direction=\"to_nsqd\"} 3\n"),
        "{out}"
    );
    assert!(
        out.contains("nsqgate_messages_total{direction=\"to_client\"} 0\n"),
        "{out}"
    );
    assert!(
        out.contains("nsqgate_bytes_total{direction=\"to_client\"} 10\n"),
        "{out}"
    );
    assert!(
        out.contains("nsqgate_publish_round_trip_seconds_count 1\n"),
        "{out}"
    );
    assert!(
        out.contains("nsqgate_publish_round_trip_seconds_bucket{le=\"0.0025\"} 1\n"),
        "{out}"
    );
}

#[test]
fn handshake_failures_are_told_apart_by_a_small_set_of_reasons() {
    let tls = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
    let bad_cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
    assert_eq!(handshake_failure_reason(&tls(bad_cert)), "certificate");
    let missing = rustls::Error::NoCertificatesPresented;
    assert_eq!(handshake_failure_reason(&tls(missing)), "certificate");
    let alert = rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA);
    assert_eq!(handshake_failure_reason(&tls(alert)), "alert");
    let incompatible =
        rustls::Error::PeerIncompatible(rustls::PeerIncompatible::NoCipherSuitesInCommon);
    assert_eq!(handshake_failure_reason(&tls(incompatible)), "incompatible");
    let garbage = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
    assert_eq!(handshake_failure_reason(&tls(garbage)), "protocol");
    let gone = io::Error::new(io::ErrorKind::UnexpectedEof, "eof");
    assert_eq!(handshake_failure_reason(&gone), "closed");
    assert_eq!(handshake_failure_reason(&io::Error::other("?")), "io");
}

#[test]
fn certificate_expiry_is_the_earliest_not_after_in_the_file() {
    let ca = crate::certs::DevCa::generate("expiry test").unwrap();
    let leaf = ca.issue_server("leaf", &["localhost".to_string()]).unwrap();
    let mut ders = Vec::new();
    for pem in [&leaf.cert, &ca.pem().cert] {
        for der in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            ders.push(der.unwrap());
        }
    }
    let expiry = earliest_expiry(&ders).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(expiry > now, "{expiry} is in the past");
    assert_eq!(earliest_expiry(&[b"not a certificate".to_vec()]), None);

    let metrics = Metrics::new().unwrap();
    metrics.certificate_loaded("client", &ders);
    let series = format!(
        "nsqgate_certificate_expiry_timestamp_seconds{{certificate=\"client\"}} {expiry}\n"
    );
    assert!(metrics.render().contains(&series), "{}", metrics.render());
    metrics.certificate_loaded("client", &[b"garbage".to_vec()]);
    assert!(!metrics.render().contains("certificate=\"client\""));
}

#[test]
fn blame_none_is_its_own_label() {
    let metrics = Metrics::new().unwrap();
    metrics.session_ended(Ending::of(Kind::Closed));
    metrics.session_ended(Ending::of(Kind::Limit).blaming(Blame::Configuration));
    let out = metrics.render();
    assert!(out.contains("nsqgate_sessions_ended_total{blame=\"none\",kind=\"closed\"} 1\n"));
    assert!(
        out.contains("{blame=\"configuration\",kind=\"limit\"} 1\n"),
        "{out}"
    );
}
