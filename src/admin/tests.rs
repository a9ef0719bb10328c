use std::time::Duration;

use ::http::Method;

use super::ready::Readiness;
use super::{route, Endpoint};

#[test]
fn three_paths_for_get_and_head_everything_else_refused() {
    assert_eq!(route(&Method::GET, "/metrics"), Endpoint::Metrics);
    assert_eq!(route(&Method::HEAD, "/healthz"), Endpoint::Healthz);
    assert_eq!(route(&Method::GET, "/readyz"), Endpoint::Readyz);
    assert_eq!(route(&Method::POST, "/metrics"), Endpoint::MethodNotAllowed);
    assert_eq!(route(&Method::GET, "/metrics/"), Endpoint::NotFound);
    assert_eq!(route(&Method::GET, "/"), Endpoint::NotFound);
}

const FRESH: Duration = Duration::from_secs(60);

#[test]
fn ready_only_once_every_nsqd_passed_its_probe() {
    let ready = Readiness::default();
    assert!(ready.report(FRESH).ready(), "nothing to wait for");
    ready.expect_upstream("10.0.0.1:4150");
    ready.expect_upstream("10.0.0.2:4150");
    let report = ready.report(FRESH);
    assert_eq!(report.not_ready["nsqd 10.0.0.1:4150"], "not probed yet");
    assert_eq!(ready.probed("10.0.0.1:4150", Ok(())), Some(true));
    assert_eq!(ready.probed("10.0.0.1:4150", Ok(())), None, "no change");
    let refused = Err("connection refused".to_owned());
    assert_eq!(ready.probed("10.0.0.2:4150", refused.clone()), Some(false));
    assert_eq!(ready.probed("10.0.0.2:4150", refused), None);
    let report = ready.report(FRESH);
    assert!(!report.ready());
    assert_eq!(report.not_ready.len(), 1, "{:?}", report.not_ready);
    assert_eq!(
        report.not_ready["nsqd 10.0.0.2:4150"],
        "nsqd unavailable: connection refused"
    );
    assert_eq!(report.to_json()["ready"], false);
    assert_eq!(ready.probed("10.0.0.2:4150", Ok(())), Some(true));
    assert!(ready.report(FRESH).ready());
    assert_eq!(
        ready.report(FRESH).to_json(),
        serde_json::json!({"ready": true})
    );
}

#[test]
fn a_passed_probe_goes_stale_when_probing_stops() {
    let ready = Readiness::default();
    ready.expect_upstream("10.0.0.1:4150");
    ready.probed("10.0.0.1:4150", Ok(()));
    std::thread::sleep(Duration::from_millis(5));
    let report = ready.report(Duration::ZERO);
    assert!(report.not_ready["nsqd 10.0.0.1:4150"].contains("probe overdue"));
}

#[test]
fn a_reported_failure_holds_until_cleared() {
    let ready = Readiness::default();
    ready.set_failed("certificates", "client.tls_cert: no PEM certificate");
    let report = ready.report(FRESH);
    assert_eq!(
        report.not_ready["certificates"],
        "client.tls_cert: no PEM certificate"
    );
    ready.clear("certificates");
    assert!(ready.report(FRESH).ready());
}
