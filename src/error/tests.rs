use super::*;
use crate::nsq::ProtocolError;

#[test]
fn every_kind_has_its_own_series_labelled_with_kind_and_blame() {
    let metrics = Metrics::new().unwrap();
    for (at, kind) in Kind::ALL.into_iter().enumerate() {
        for _ in 0..=at {
            metrics.session_ended(Ending::of(kind));
        }
    }
    let out = metrics.render();
    let series = "nsqgate_sessions_ended_total";
    assert!(
        out.contains(&format!("{series}{{blame=\"none\",kind=\"closed\"}} 1\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{series}{{blame=\"nsqgate\",kind=\"internal\"}} 11\n"
        )),
        "{out}"
    );
    let labels: std::collections::HashSet<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(labels.len(), Kind::ALL.len());
}

#[test]
fn a_reason_given_for_the_log_is_not_sent_to_the_client() {
    let refusal = FatalReply::new(Kind::Identity, ErrorCode::AuthFailed, "AUTH failed")
        .because("unknown API key");
    assert_eq!(refusal.text(), "E_AUTH_FAILED AUTH failed");
    assert_eq!(
        refusal.to_string(),
        "E_AUTH_FAILED AUTH failed: unknown API key"
    );
}

#[test]
fn the_normal_course_is_nobodys_fault_and_logged_at_debug() {
    for kind in [Kind::Closed, Kind::Shutdown] {
        assert_eq!(Ending::of(kind).blame, None);
        assert_eq!(kind.level(), tracing::Level::DEBUG);
    }
}

#[test]
fn the_level_rises_with_who_failed() {
    for kind in Kind::ALL {
        let expected = match kind.usual_blame() {
            None => tracing::Level::DEBUG,
            Some(Blame::Client) => tracing::Level::INFO,
            Some(Blame::Upstream | Blame::Configuration) => tracing::Level::WARN,
            Some(Blame::Nsqgate) => tracing::Level::ERROR,
        };
        assert_eq!(kind.level(), expected, "{kind}");
    }
}

#[test]
fn nsqds_fatal_errors_say_who_failed() {
    let cases = [
        (
            Some(ErrorCode::BadTopic),
            Kind::ClientProtocol,
            Blame::Client,
        ),
        (
            Some(ErrorCode::Invalid),
            Kind::ClientProtocol,
            Blame::Client,
        ),
        (
            Some(ErrorCode::BadMessage),
            Kind::ClientProtocol,
            Blame::Client,
        ),
        (
            Some(ErrorCode::PubFailed),
            Kind::UpstreamUnavailable,
            Blame::Upstream,
        ),
        (
            Some(ErrorCode::SubFailed),
            Kind::UpstreamUnavailable,
            Blame::Upstream,
        ),
        (
            Some(ErrorCode::AuthFailed),
            Kind::Identity,
            Blame::Configuration,
        ),
        (
            Some(ErrorCode::Unauthorized),
            Kind::Policy,
            Blame::Configuration,
        ),
        (None, Kind::UpstreamProtocol, Blame::Upstream),
    ];
    for (code, kind, blame) in cases {
        let ending = Ending::after_nsqd_error(code);
        assert_eq!((ending.kind, ending.blame), (kind, Some(blame)), "{code:?}");
    }
}

#[test]
fn a_malformed_command_is_answered_with_the_codecs_own_frame() {
    let error = ProtocolError::InvalidCommand {
        name: Bytes::from_static(b"F\xffO"),
    };
    let reply = FatalReply::malformed(&error);
    // Bytes as the client sent them, not a lossy re-rendering.
    assert_eq!(reply.frame(), Some(&error.to_frame()));
    assert_eq!(reply.ending(), Ending::of(Kind::ClientProtocol));
}

#[test]
fn an_over_long_line_closes_without_a_word_as_nsqd_does() {
    let reply = FatalReply::malformed(&ProtocolError::LineTooLong { limit: 16 });
    assert_eq!(reply.frame(), None);
    assert!(reply
        .to_string()
        .contains("command line longer than 16 bytes"));
}

#[test]
fn nsqds_words_are_relayed_as_nsqd_wrote_them() {
    let reply = FatalReply::from_nsqd(
        Kind::ClientProtocol,
        "E_BAD_BODY",
        "IDENTIFY heartbeat interval (100) is invalid",
    );
    assert_eq!(
        reply.text(),
        "E_BAD_BODY IDENTIFY heartbeat interval (100) is invalid"
    );
    let bare = FatalReply::from_nsqd(Kind::ClientProtocol, "E_BAD_BODY", "");
    assert_eq!(bare.text(), "E_BAD_BODY");
    assert_eq!(
        bare.frame().map(|f| f.len()),
        Some(4 + 4 + "E_BAD_BODY".len())
    );
}

#[test]
fn a_refusal_can_name_a_different_culprit() {
    let reply = FatalReply::new(Kind::Limit, ErrorCode::IdentifyFailed, "nsqgate refused")
        .blaming(Blame::Configuration);
    assert_eq!(reply.ending().kind, Kind::Limit);
    assert_eq!(reply.ending().blame, Some(Blame::Configuration));
    assert_eq!(reply.text(), "E_IDENTIFY_FAILED nsqgate refused");
}
