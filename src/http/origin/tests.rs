#![allow(clippy::unwrap_used)]

use ::http::HeaderValue;

use super::*;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

#[test]
fn a_same_origin_browser_request_goes_on() {
    let h = headers(&[
        ("host", "gate.example:4171"),
        ("origin", "https://gate.example:4171"),
        ("sec-fetch-site", "same-origin"),
    ]);
    assert_eq!(check(&Method::POST, &h, &[]), Ok(()));
    assert_eq!(check(&Method::DELETE, &h, &[]), Ok(()));
}

#[test]
fn cross_site_and_same_site_are_refused() {
    let h = headers(&[("host", "gate"), ("sec-fetch-site", "cross-site")]);
    assert!(matches!(
        check(&Method::POST, &h, &[]),
        Err(CrossSite::FetchSite(_))
    ));
    let h = headers(&[("host", "gate"), ("sec-fetch-site", "same-site")]);
    assert!(check(&Method::PUT, &h, &[]).is_err());
    let h = headers(&[("host", "gate"), ("origin", "https://evil.example")]);
    assert!(matches!(
        check(&Method::POST, &h, &[]),
        Err(CrossSite::Origin(_))
    ));
    let h = headers(&[("host", "gate"), ("origin", "null")]);
    assert!(check(&Method::POST, &h, &[]).is_err());
    // Plain http is another origin than the HTTPS front.
    let h = headers(&[("host", "gate"), ("origin", "http://gate")]);
    assert!(check(&Method::POST, &h, &[]).is_err());
}

#[test]
fn reads_non_browsers_and_listed_origins_go_on() {
    let h = headers(&[("host", "gate"), ("origin", "https://evil.example")]);
    assert_eq!(check(&Method::GET, &h, &[]), Ok(()));
    assert_eq!(
        check(&Method::POST, &headers(&[("host", "gate")]), &[]),
        Ok(())
    );
    let h = headers(&[
        ("host", "gate"),
        ("origin", "https://Admin.Example.com"),
        ("sec-fetch-site", "same-site"),
    ]);
    let allowed = [normalize("https://admin.example.com/").unwrap()];
    assert_eq!(check(&Method::POST, &h, &allowed), Ok(()));
}

#[test]
fn allowed_origins_are_bare_origins() {
    assert_eq!(
        normalize("HTTPS://Admin.example.com:8443"),
        Some("https://admin.example.com:8443".into())
    );
    for bad in [
        "admin.example.com",
        "https://a/b",
        "ftp://a",
        "https://",
        "https://u@a",
    ] {
        assert_eq!(normalize(bad), None, "{bad}");
    }
}
