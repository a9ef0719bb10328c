//! Hostile TLS (issue 13): bytes that are not TLS where TLS was negotiated, TLS 1.0/1.1
//! ClientHellos written by hand, and a client-initiated renegotiation. Each ends in a TLS
//! alert or a close, and nothing reaches nsqd. (Client certificates and server names:
//! `hostile_tls_certs.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;
mod hostile_support;

use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::wire::MAGIC_V2;
use hostile_support::{setup, with_body, ANSWER_LIMIT};

/// How a TLS peer ended a connection it refused.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// A fatal alert record with this description (70 protocol_version, 50 decode_error...),
    /// then the close.
    Alert(u8),
    /// One TLS 1.3 record as long as an encrypted alert (2 bytes, the content type and a
    /// 16-byte tag), then the close: TLS 1.3 encrypts alerts after the handshake.
    EncryptedAlert,
    /// The close with nothing sent.
    Close,
}

const PROTOCOL_VERSION: u8 = 70;
const HANDSHAKE_FAILURE: u8 = 40;
const DECODE_ERROR: u8 = 50;

/// Reads whatever the peer sends until it closes: a run of TLS alert records (the last one's
/// description is the outcome) or nothing. Anything else (an NSQ frame, TLS data) is an error.
async fn ending(tcp: &mut TcpStream) -> Result<Ending, String> {
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(ANSWER_LIMIT, async {
        let mut chunk = [0u8; 4096];
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    if read.is_err() {
        return Err(format!(
            "still open after {ANSWER_LIMIT:?}; got {bytes:02x?}"
        ));
    }
    let mut last = None;
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        // An alert record: type 21, a version, length 2, level and description.
        match rest {
            [21, 3, _, 0, 2, _, description, tail @ ..] => {
                last = Some(Ending::Alert(*description));
                rest = tail;
            }
            [23, 3, 3, 0, 19, tail @ ..] if tail.len() >= 19 => {
                last = Some(Ending::EncryptedAlert);
                rest = &tail[19..];
            }
            _ => return Err(format!("not a TLS alert: {bytes:02x?}")),
        }
    }
    Ok(last.unwrap_or(Ending::Close))
}

/// A TLS ClientHello as a TLS 1.0/1.1 client writes it: `version` in the record and the
/// hello, CBC suites, no supported_versions extension (so nothing offers 1.2 or 1.3). A real
/// 1.0/1.1 client sends no signature_algorithms either (it came with TLS 1.2);
/// `signature_algorithms` adds one, as a newer client capped at 1.1 would.
fn old_client_hello(version: [u8; 2], signature_algorithms: bool) -> Vec<u8> {
    let suites: &[u8] = &[
        0xc0, 0x13, 0xc0, 0x14, 0xc0, 0x09, 0xc0, 0x0a, 0x00, 0x2f, 0x00, 0x35,
    ];
    let mut hello = version.to_vec();
    hello.extend_from_slice(&[0x5a; 32]); // random
    hello.push(0); // no session id
    hello.extend_from_slice(&(suites.len() as u16).to_be_bytes());
    hello.extend_from_slice(suites);
    hello.extend_from_slice(&[1, 0]); // compression: null only
    if signature_algorithms {
        // Extensions (12 bytes): signature_algorithms (13, 8 bytes), 6 bytes of schemes:
        // ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256.
        hello.extend_from_slice(&[0, 12, 0, 13, 0, 8, 0, 6, 4, 3, 8, 4, 4, 1]);
    }
    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![22, version[0], version[1]];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Magic and IDENTIFY asking for TLS; the JSON reply read (nsqgate then expects a handshake).
async fn negotiated(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let body = br#"{"tls_v1":true,"feature_negotiation":true}"#;
    let identify = with_body(b"IDENTIFY\n", body.len() as i32, body);
    tcp.write_all(&[MAGIC_V2.as_slice(), &identify].concat())
        .await
        .unwrap();
    let mut size = [0u8; 4];
    tcp.read_exact(&mut size).await.unwrap();
    let mut reply = vec![0u8; u32::from_be_bytes(size) as usize];
    tcp.read_exact(&mut reply).await.unwrap();
    let json = String::from_utf8_lossy(&reply[4..]).into_owned();
    assert!(json.contains(r#""tls_v1":true"#), "{json}");
    tcp
}

#[tokio::test]
async fn bytes_that_are_not_tls_where_tls_was_negotiated_end_the_connection() {
    let setup = setup();
    let mut wrong = Vec::new();

    // A plaintext command where the handshake should start: not a TLS record.
    let mut tcp = negotiated(setup.gate.addr).await;
    tcp.write_all(&with_body(b"PUB plain\n", 1, b"x"))
        .await
        .unwrap();
    let seen = ending(&mut tcp).await;
    if seen != Ok(Ending::Alert(DECODE_ERROR)) {
        wrong.push(format!("plaintext PUB after tls_v1: {seen:?}"));
    }

    // Garbage on the wire after the upgrade's OK, under the TLS layer.
    let tls = upgraded_by_hand(setup.gate.addr, &setup.connector).await;
    let (mut tcp, _) = tls.into_inner();
    tcp.write_all(b"PUB garbage\n\0\0\0\x01x").await.unwrap();
    let seen = ending(&mut tcp).await;
    if seen != Ok(Ending::EncryptedAlert) {
        wrong.push(format!("garbage after the upgrade: {seen:?}"));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    setup.assert_nsqd_untouched();
}

/// The in-band upgrade by hand, up to nsqgate's OK inside TLS; the TLS stream is returned so
/// the test can reach the TCP stream under it.
async fn upgraded_by_hand(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = negotiated(addr).await;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("TLS upgrade");
    let mut ok = [0u8; 10];
    tls.read_exact(&mut ok).await.expect("OK after the upgrade");
    assert_eq!(&ok[8..], b"OK");
    tls
}

#[tokio::test]
async fn tls_1_0_and_1_1_client_hellos_are_refused_with_an_alert() {
    let setup = setup();
    let mut wrong = Vec::new();
    // rustls wants signature_algorithms before it looks at the version: an old client's
    // hello gets handshake_failure, a capped newer one's protocol_version.
    let hellos = [
        ("TLS 1.0", [3, 1], false, HANDSHAKE_FAILURE),
        ("TLS 1.1", [3, 2], false, HANDSHAKE_FAILURE),
        (
            "TLS 1.0 with signature_algorithms",
            [3, 1],
            true,
            PROTOCOL_VERSION,
        ),
        (
            "TLS 1.1 with signature_algorithms",
            [3, 2],
            true,
            PROTOCOL_VERSION,
        ),
    ];
    for (name, version, signature_algorithms, alert) in hellos {
        let hello = old_client_hello(version, signature_algorithms);
        // TLS from the first byte.
        let mut tcp = TcpStream::connect(setup.gate.addr).await.unwrap();
        tcp.write_all(&hello).await.unwrap();
        let seen = ending(&mut tcp).await;
        if seen != Ok(Ending::Alert(alert)) {
            wrong.push(format!("{name} first: {seen:?}"));
        }
        // In-band, after IDENTIFY negotiated TLS.
        let mut tcp = negotiated(setup.gate.addr).await;
        tcp.write_all(&hello).await.unwrap();
        let seen = ending(&mut tcp).await;
        if seen != Ok(Ending::Alert(alert)) {
            wrong.push(format!("{name} after IDENTIFY: {seen:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    setup.assert_nsqd_untouched();
}

/// A client-initiated renegotiation (a second ClientHello inside a TLS 1.2 session; rustls
/// clients cannot send one, so OpenSSL's `s_client` does, on its `R` command): nsqgate's
/// rustls answers the no_renegotiation alert, and the connection does not renegotiate.
#[tokio::test]
async fn a_client_initiated_renegotiation_is_refused() {
    let setup = setup();
    let mut child = std::process::Command::new("openssl")
        .args(["s_client", "-tls1_2", "-msg", "-connect"])
        .arg(setup.gate.addr.to_string())
        .arg("-CAfile")
        .arg(setup.ca_path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl s_client (the openssl command line tool)");
    // s_client reads commands once the handshake is done: give it that time, then `R`.
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    use std::io::Write;
    let _ = stdin.write_all(b"R\n");
    let _ = stdin.flush();
    std::thread::sleep(Duration::from_secs(2));
    drop(stdin);
    let (_, stdout, stderr) =
        common::wait_output(child, ANSWER_LIMIT, std::path::Path::new("openssl"));
    let out = format!("{}\n{stderr}", String::from_utf8_lossy(&stdout));
    assert!(
        out.contains("RENEGOTIATING"),
        "s_client did not try:\n{out}"
    );
    let log = setup.gate.log();
    let (_, after) = out.split_once("RENEGOTIATING").unwrap();
    let server_hellos = out.matches("ServerHello\n").count();
    assert_eq!(server_hellos, 1, "a second handshake:\n{out}\n{log}");
    assert!(
        after.contains("unexpected eof"),
        "not closed:\n{out}\n{log}"
    );
    setup.assert_nsqd_untouched();
}
