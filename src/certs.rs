//! Development PKI: one CA and the leaf certificates a dev or test setup needs (nsqgate's
//! server certificate, nsqd's, and a client's), made with rcgen. Never for production.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber,
};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: cannot write: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// A PEM certificate and its PEM private key.
#[derive(Clone, Debug)]
pub struct Pem {
    pub cert: String,
    pub key: String,
    /// The certificate's serial number, to name it in a CRL.
    pub serial: Vec<u8>,
}

/// A certificate authority that can issue more leaves after generation.
pub struct DevCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// Who a client certificate names: its subject CN and optional URI SANs (e.g. SPIFFE IDs).
#[derive(Clone, Debug, Default)]
pub struct ClientSubject {
    pub common_name: String,
    pub uris: Vec<String>,
    pub dns_names: Vec<String>,
}

// === impl DevCa ===

impl DevCa {
    pub fn generate(name: &str) -> Result<DevCa, CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(DevCa { issuer })
    }

    pub fn pem(&self) -> Pem {
        Pem {
            cert: self.issuer.pem(),
            key: self.issuer.key().serialize_pem(),
            serial: Vec::new(),
        }
    }

    /// A server certificate valid for every name or IP in `hosts`.
    pub fn issue_server(&self, common_name: &str, hosts: &[String]) -> Result<Pem, CertError> {
        let mut params = CertificateParams::new(hosts.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate for mutual TLS.
    pub fn issue_client(&self, subject: &ClientSubject) -> Result<Pem, CertError> {
        let mut params = CertificateParams::new(subject.dns_names.clone())?;
        params
            .distinguished_name
            .push(DnType::CommonName, subject.common_name.as_str());
        for uri in &subject.uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into()?));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    /// A PEM CRL, signed by this CA, revoking the certificates with these serial numbers.
    pub fn crl(&self, revoked: &[&[u8]]) -> Result<String, CertError> {
        let now = time::OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(1),
            next_update: now + time::Duration::days(30),
            crl_number: SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: now - time::Duration::minutes(1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }

    fn sign(&self, mut params: CertificateParams) -> Result<Pem, CertError> {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        // Random positive serials, so a CRL can name one certificate.
        let mut serial: [u8; 16] = rand::random();
        serial[0] &= 0x7f;
        serial[0] |= 0x01;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
            serial: serial.to_vec(),
        })
    }
}

/// Writes the full dev set into `dir`: ca, nsqgate, nsqd (servers for `hosts`) and client.
pub fn write_dev_set(dir: &Path, hosts: &[String]) -> Result<Vec<String>, CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    let ca = DevCa::generate("nsqgate dev CA")?;
    let client = ca.issue_client(&ClientSubject {
        common_name: "dev-client".into(),
        uris: vec!["spiffe://nsqgate.dev/dev-client".into()],
        dns_names: Vec::new(),
    })?;
    let set = [
        ("ca", ca.pem()),
        ("nsqgate", ca.issue_server("nsqgate", hosts)?),
        ("nsqd", ca.issue_server("nsqd", hosts)?),
        ("client", client),
    ];
    let mut written = Vec::new();
    for (name, pem) in set {
        for (ext, text, mode) in [("pem", &pem.cert, 0o644), ("key", &pem.key, 0o600)] {
            let path = dir.join(format!("{name}.{ext}"));
            write_new(&path, text.as_bytes(), mode).map_err(|source| CertError::Write {
                path: path.display().to_string(),
                source,
            })?;
            written.push(path.display().to_string());
        }
    }
    Ok(written)
}

/// Writes `path` through a fresh sibling file created with `mode`, then renames it over the
/// target: a private key is never readable by others, not even for a moment, and an old file
/// with a wider mode is replaced rather than reused.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".{}.tmp", std::process::id()));
    let temp = std::path::PathBuf::from(temp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}
