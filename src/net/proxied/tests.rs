use super::*;

fn peer() -> SocketAddr {
    "10.0.0.9:1234".parse().unwrap()
}

#[test]
fn v1_header_names_the_client_and_leaves_the_rest() {
    let wire = b"PROXY TCP4 192.0.2.7 10.0.0.1 5555 4150\r\n  V2";
    let (len, client) = parse(wire, peer()).unwrap().unwrap();
    assert_eq!(client, "192.0.2.7:5555".parse().unwrap());
    assert_eq!(&wire[len..], b"  V2");
    assert!(parse(&wire[..20], peer()).unwrap().is_none());
}

#[test]
fn v2_header_names_the_client() {
    let mut wire = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    wire.extend_from_slice(&[0x21, 0x11, 0, 12]);
    wire.extend_from_slice(&[198, 51, 100, 4, 10, 0, 0, 1]);
    wire.extend_from_slice(&7000u16.to_be_bytes());
    wire.extend_from_slice(&4150u16.to_be_bytes());
    wire.extend_from_slice(b"  V2");
    let (len, client) = parse(&wire, peer()).unwrap().unwrap();
    assert_eq!(client, "198.51.100.4:7000".parse().unwrap());
    assert_eq!(&wire[len..], b"  V2");
}

#[test]
fn garbage_from_a_trusted_source_is_refused() {
    assert!(parse(b"  V2IDENTIFY\n", peer()).is_err());
}
