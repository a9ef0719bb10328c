use super::*;

fn args(token: Option<&str>) -> HttpPub {
    HttpPub {
        addr: "127.0.0.1:4151".parse().unwrap(),
        ca: None,
        server_name: None,
        token: token.map(String::from),
        topic: "t1".into(),
        connections: 1,
        size: 100,
        body: Body::Repeated,
    }
}

#[test]
fn the_request_declares_its_body_and_carries_the_token() {
    let bytes = request(&args(Some("abc")));
    let (end, length) = header_end(&bytes).unwrap();
    assert_eq!(length, Some(100));
    assert_eq!(bytes.len(), end + 100);
    let head = String::from_utf8_lossy(&bytes[..end]);
    assert!(
        head.starts_with("POST /pub?topic=t1 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nAuthorization: Bearer abc\r\n"), "{head}");
    assert!(!String::from_utf8_lossy(&request(&args(None))).contains("Authorization"));
}

#[test]
fn status_and_connection_close_are_read_from_the_head() {
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";
    assert_eq!(status_of(ok).unwrap(), (200, false));
    let closing = b"HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n\r\n";
    assert_eq!(status_of(closing).unwrap(), (401, true));
    assert!(status_of(b"garbage").is_err());
}
