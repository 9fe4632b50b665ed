//! How the CLI trusts a remote daemon's TLS certificate (reference 1.8): the site CA from
//! `~/.confluent/ca.pem` when present; otherwise trust on first use of the certificate's
//! SHA-512 fingerprint, remembered per `<port>@<host>` in `~/.confluent/knownhosts`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest;

/// The TLS configuration plus, after a refused handshake, the (known, presented) fingerprints.
pub struct TrustConfig {
    pub config: Arc<rustls::ClientConfig>,
    pub changed: Arc<Mutex<Option<(String, String)>>>,
}

fn confluent_dir() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"));
    home.join(".confluent")
}

/// `sha512$<hex>` of a certificate.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha512${}", hex::encode(sha2::Sha512::digest(der)))
}

pub fn client_config(host: &str, port: u16) -> Result<TrustConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?;
    let changed = Arc::new(Mutex::new(None));
    let ca_path = confluent_dir().join("ca.pem");
    let config = if ca_path.exists() {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&ca_path).map_err(|error| error.to_string())? {
            roots
                .add(cert.map_err(|error| error.to_string())?)
                .map_err(|error| error.to_string())?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(TrustOnFirstUse {
                key: format!("{port}@{host}"),
                provider,
                changed: changed.clone(),
            }))
            .with_no_client_auth()
    };
    Ok(TrustConfig {
        config: Arc::new(config),
        changed,
    })
}

#[derive(Debug)]
struct TrustOnFirstUse {
    key: String,
    provider: Arc<CryptoProvider>,
    changed: Arc<Mutex<Option<(String, String)>>>,
}

impl TrustOnFirstUse {
    fn known(&self) -> Option<String> {
        let text = std::fs::read_to_string(confluent_dir().join("knownhosts")).ok()?;
        text.lines().find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == self.key).then(|| value.trim().to_string())
        })
    }

    fn remember(&self, fingerprint: &str) {
        use std::io::Write;
        let dir = confluent_dir();
        let _ = std::fs::create_dir_all(&dir);
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("knownhosts"))
        {
            let _ = writeln!(file, "{} {fingerprint}", self.key);
        }
    }
}

impl ServerCertVerifier for TrustOnFirstUse {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = fingerprint(end_entity);
        match self.known() {
            Some(known) if known == presented => Ok(ServerCertVerified::assertion()),
            Some(known) => {
                if let Ok(mut slot) = self.changed.lock() {
                    *slot = Some((known, presented));
                }
                Err(rustls::Error::General(
                    "server certificate fingerprint changed".into(),
                ))
            }
            None => {
                self.remember(&presented);
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
