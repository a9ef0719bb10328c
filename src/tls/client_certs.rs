//! The client-certificate verifier of the client leg (client CA and CRLs): a live connection
//! can ask whether the chain it was admitted with would still pass the verifier in force. A
//! reload builds a new one (`super::LiveTls`) with a new server configuration, and so an empty
//! TLS session cache: a resumed session skips certificate verification, so a revoked
//! certificate could otherwise come back through one. PEM files, no sockets.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use super::{load_crl, TlsError};

/// A [`ClientCertVerifier`] over the client CA and CRLs; shared by every listener of a process.
#[derive(Debug)]
pub struct ClientCerts {
    optional: bool,
    /// The CA's subjects, as sent in the CertificateRequest.
    hints: Vec<DistinguishedName>,
    verifier: Arc<dyn ClientCertVerifier>,
}

// === impl ClientCerts ===

impl ClientCerts {
    pub fn load(
        ca: &Path,
        roots: RootCertStore,
        crls: &[PathBuf],
        optional: bool,
        provider: Arc<CryptoProvider>,
    ) -> Result<ClientCerts, TlsError> {
        let verifier = build(ca, &Arc::new(roots), crls, optional, &provider)?;
        Ok(ClientCerts {
            optional,
            hints: verifier.root_hint_subjects().to_vec(),
            verifier,
        })
    }

    /// Whether `chain` (leaf first, as the client sent it) would pass a handshake with this
    /// verifier: the check a live connection makes after a reload. The reason when it would not.
    pub fn still_valid(&self, chain: &[CertificateDer<'static>]) -> Result<(), String> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err("no certificate".into());
        };
        self.verifier()
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn verifier(&self) -> &dyn ClientCertVerifier {
        self.verifier.as_ref()
    }
}

fn build(
    ca: &Path,
    roots: &Arc<RootCertStore>,
    crls: &[PathBuf],
    optional: bool,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let crls = crls
        .iter()
        .map(|path| load_crl(path))
        .collect::<Result<Vec<_>, _>>()?;
    let builder = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .with_crls(crls);
    let builder = if optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    builder.build().map_err(|e| TlsError::Ca {
        path: ca.to_owned(),
        reason: e.to_string(),
    })
}

impl ClientCertVerifier for ClientCerts {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        !self.optional
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verifier()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier().supported_verify_schemes()
    }
}
