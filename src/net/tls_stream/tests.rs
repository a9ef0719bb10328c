use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::{accept, connect, ClientTlsStream, ServerTlsStream};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server config with a fresh certificate for "nsqd.test", and a client config trusting it
/// (or, `trusted` false, trusting another).
fn configs(
    versions: &[&'static rustls::SupportedProtocolVersion],
    trusted: bool,
) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let made = rcgen::generate_simple_self_signed(vec!["nsqd.test".into()]).unwrap();
    let cert = CertificateDer::from(made.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
    let server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let mut roots = RootCertStore::empty();
    match trusted {
        true => roots.add(cert).unwrap(),
        false => {
            let other = rcgen::generate_simple_self_signed(vec!["nsqd.test".into()]).unwrap();
            roots
                .add(CertificateDer::from(other.cert.der().to_vec()))
                .unwrap();
        }
    }
    let client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// Both handshakes over an in-memory pipe, each side's outcome.
async fn handshakes(
    versions: &[&'static rustls::SupportedProtocolVersion],
    trusted: bool,
) -> (
    std::io::Result<ServerTlsStream<DuplexStream>>,
    std::io::Result<ClientTlsStream<DuplexStream>>,
) {
    let (server_config, client_config) = configs(versions, trusted);
    let (a, b) = duplex(64 * 1024);
    let name = ServerName::try_from("nsqd.test").unwrap();
    tokio::join!(accept(server_config, a), connect(client_config, name, b))
}

async fn pair(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (ServerTlsStream<DuplexStream>, ClientTlsStream<DuplexStream>) {
    let (server, client) = handshakes(versions, true).await;
    (server.unwrap(), client.unwrap())
}

/// The rustls error inside an I/O error, as the stream hands it on.
fn rustls_error(error: &std::io::Error) -> Option<&rustls::Error> {
    error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
}

const BOTH: [&[&rustls::SupportedProtocolVersion]; 2] =
    [&[&rustls::version::TLS12], &[&rustls::version::TLS13]];

#[tokio::test]
async fn carries_bytes_both_ways_and_holds_no_buffer_when_idle() {
    for versions in BOTH {
        let (mut server, mut client) = pair(versions).await;
        // Larger than a record, read in small pieces: records cut short by reads, plaintext
        // kept across reads.
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let sending = big.clone();
        let write = async move {
            client.write_all(&sending).await.unwrap();
            client.flush().await.unwrap();
            client
        };
        let read = async {
            let mut got = vec![0u8; big.len()];
            let mut at = 0;
            while at < got.len() {
                let end = (at + 700).min(got.len());
                let n = server.read(&mut got[at..end]).await.unwrap();
                assert_ne!(n, 0);
                at += n;
            }
            got
        };
        let (mut client, got) = tokio::join!(write, read);
        assert!(got == big);
        server.write_all(b"OK").await.unwrap();
        server.flush().await.unwrap();
        let mut reply = [0u8; 2];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply, b"OK");
        assert_eq!(server.session.held(), 0, "server side, {versions:?}");
        assert_eq!(client.session.held(), 0, "client side, {versions:?}");
        assert!(server.state().negotiated_cipher_suite().is_some());
    }
}

#[tokio::test]
async fn close_notify_is_a_clean_end_and_a_bare_close_is_not() {
    for versions in BOTH {
        let (mut server, mut client) = pair(versions).await;
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(server.read_to_end(&mut rest).await.unwrap(), 0);

        let (mut server, client) = pair(versions).await;
        drop(client);
        let e = server.read(&mut [0u8; 16]).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}

#[tokio::test]
async fn an_untrusted_certificate_fails_both_ends_with_rustls_errors() {
    for versions in BOTH {
        let (server, client) = handshakes(versions, false).await;
        let client = client.err().unwrap();
        assert!(
            matches!(
                rustls_error(&client),
                Some(rustls::Error::InvalidCertificate(_))
            ),
            "{client}"
        );
        // The client's alert reached the server.
        let server = server.err().unwrap();
        assert!(
            matches!(rustls_error(&server), Some(rustls::Error::AlertReceived(_))),
            "{server}"
        );
    }
}

#[tokio::test]
async fn garbage_under_tls_fails_the_read_and_sends_one_alert() {
    for versions in BOTH {
        let (mut server, mut client) = pair(versions).await;
        client
            .io
            .write_all(b"PUB garbage\n\0\0\0\x01x")
            .await
            .unwrap();
        let e = server.read(&mut [0u8; 16]).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        // The alert, a record of its own: an alert record (TLS 1.2), or application data
        // hiding one (TLS 1.3).
        let mut alert = [0u8; 64];
        let n = client.io.read(&mut alert).await.unwrap();
        assert!(
            n > 5 && (alert[0] == 21 || alert[0] == 23),
            "{:?}",
            &alert[..n]
        );
        // Failed for good, with no second alert.
        assert!(server.read(&mut [0u8; 16]).await.is_err());
    }
}
