//! The client-certificate verifier of the client leg, with CRLs that can be re-read while
//! nsqgate runs: the next handshake uses the new CRLs, and a live connection can ask whether the
//! chain it was admitted with would still pass. A reload also forgets the TLS sessions cached so
//! far: a resumed session skips certificate verification, so a revoked certificate could
//! otherwise come back through one. The CA stays as loaded at start; only the CRL files are
//! re-read (PEM files, no sockets).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use super::{load_crl, TlsError};

/// How many TLS sessions the client leg remembers for resumption (rustls' default).
const SESSIONS: usize = 256;

/// A [`ClientCertVerifier`] whose CRLs can be replaced; shared by every listener of a process.
#[derive(Debug)]
pub struct ClientCerts {
    ca: PathBuf,
    crls: Vec<PathBuf>,
    optional: bool,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    /// The CA's subjects, as sent in the CertificateRequest; they do not change on reload.
    hints: Vec<DistinguishedName>,
    current: RwLock<Arc<dyn ClientCertVerifier>>,
    sessions: Arc<Sessions>,
}

/// The server's session cache, replaced by an empty one when the CRLs are reloaded.
#[derive(Debug)]
pub struct Sessions {
    current: RwLock<Arc<dyn StoresServerSessions>>,
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
        let roots = Arc::new(roots);
        let verifier = build(ca, &roots, crls, optional, &provider)?;
        Ok(ClientCerts {
            ca: ca.to_owned(),
            crls: crls.to_vec(),
            optional,
            hints: verifier.root_hint_subjects().to_vec(),
            roots,
            provider,
            current: RwLock::new(verifier),
            sessions: Arc::new(Sessions {
                current: RwLock::new(ServerSessionMemoryCache::new(SESSIONS)),
            }),
        })
    }

    /// The session cache to give the server configuration that uses this verifier.
    pub fn sessions(&self) -> Arc<Sessions> {
        self.sessions.clone()
    }

    /// The CRL files, for change detection.
    pub fn crl_files(&self) -> &[PathBuf] {
        &self.crls
    }

    /// Re-reads every CRL file; on an error the CRLs in force stay (and the error says which
    /// file), so a half-written file never opens the door to a revoked certificate.
    pub fn reload(&self) -> Result<(), TlsError> {
        let next = build(
            &self.ca,
            &self.roots,
            &self.crls,
            self.optional,
            &self.provider,
        )?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        *self
            .sessions
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner()) = ServerSessionMemoryCache::new(SESSIONS);
        Ok(())
    }

    /// Whether `chain` (leaf first, as the client sent it) would pass a handshake now: the
    /// check a live connection makes after a CRL reload. The reason when it would not.
    pub fn still_valid(&self, chain: &[CertificateDer<'static>]) -> Result<(), String> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err("no certificate".into());
        };
        self.verifier()
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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

impl Sessions {
    fn store(&self) -> Arc<dyn StoresServerSessions> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl StoresServerSessions for Sessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.store().put(key, value)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.store().get(key)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.store().take(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}
