//! The site certificate authority and the daemon's server certificate.
//!
//! On first start the daemon creates a CA (ECDSA P-256) under `etc/tls/` and a server
//! certificate signed by it for the host's names and loopback addresses; the CA certificate is
//! published at `lib/public/site/tls/ca.pem` so that clients (the CLI, booting nodes) can trust
//! the daemon. Private keys are written 0600 and never leave `etc/`.

use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum SiteCaError {
    #[error("failed to read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("failed to generate a certificate")]
    Generate(#[from] rcgen::Error),
    #[error("invalid PEM in {path}")]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("invalid TLS configuration")]
    Tls(#[from] rustls::Error),
}

/// The CA and server credentials, as PEM.
pub struct SiteCa {
    pub ca_cert_pem: String,
    pub server_cert_pem: String,
    server_key_pem: String,
    pub ca_path: PathBuf,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SiteCaError + '_ {
    move |source| SiteCaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), SiteCaError> {
    use std::io::Write;
    let temporary = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(io_error(&temporary))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(&temporary))?;
    fs::rename(&temporary, path).map_err(io_error(path))
}

fn ca_params(common_name: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "Confluent");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(params)
}

/// Names the server certificate is valid for: the host name, `localhost`, loopback addresses and
/// every address of this host's interfaces (booting firmware checks the address in its HTTPS
/// boot URL against the certificate).
fn server_names() -> Vec<SanType> {
    let mut names = vec![
        SanType::DnsName(
            "localhost"
                .try_into()
                .unwrap_or_else(|_| unreachable_name()),
        ),
        SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
    ];
    if let Ok(host) = fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty()
            && host != "localhost"
            && let Ok(name) = host.to_string().try_into()
        {
            names.push(SanType::DnsName(name));
        }
    }
    names.extend(interface_addresses().into_iter().map(SanType::IpAddress));
    names
}

/// The addresses of this host's interfaces, sorted: no loopback, no IPv6 link-local (a URL with
/// one needs a zone, which certificates cannot name).
fn interface_addresses() -> Vec<std::net::IpAddr> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut addresses: Vec<std::net::IpAddr> = interfaces
        .filter_map(|entry| {
            let address = entry.address?;
            if let Some(v4) = address.as_sockaddr_in() {
                Some(std::net::IpAddr::V4(v4.ip()))
            } else {
                address
                    .as_sockaddr_in6()
                    .map(|v6| std::net::IpAddr::V6(v6.ip()))
            }
        })
        .filter(|address| match address {
            std::net::IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified(),
            std::net::IpAddr::V6(v6) => {
                !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
            }
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

/// The names as text, one per line, to tell whether the server certificate still covers them.
fn names_text(names: &[SanType]) -> String {
    names
        .iter()
        .map(|name| match name {
            SanType::DnsName(dns) => format!("dns {}\n", dns.as_str()),
            SanType::IpAddress(address) => format!("ip {address}\n"),
            other => format!("{other:?}\n"),
        })
        .collect()
}

#[allow(clippy::panic)]
fn unreachable_name() -> rcgen::string::Ia5String {
    panic!("localhost is a valid DNS name")
}

impl SiteCa {
    /// Load the CA and server certificate from `tls_dir`, creating them when missing, and
    /// publish the CA certificate at `publish_to`.
    pub fn load_or_create(tls_dir: &Path, publish_to: &Path) -> Result<SiteCa, SiteCaError> {
        fs::create_dir_all(tls_dir).map_err(io_error(tls_dir))?;
        fs::set_permissions(tls_dir, fs::Permissions::from_mode(0o700))
            .map_err(io_error(tls_dir))?;
        let ca_cert_path = tls_dir.join("ca.pem");
        let ca_key_path = tls_dir.join("ca.key");
        let server_cert_path = tls_dir.join("server.pem");
        let server_key_path = tls_dir.join("server.key");
        let name_path = tls_dir.join("ca.name");
        let (ca_key, common_name) = if ca_key_path.exists() && ca_cert_path.exists() {
            let key_pem = fs::read_to_string(&ca_key_path).map_err(io_error(&ca_key_path))?;
            let common_name = fs::read_to_string(&name_path)
                .map(|text| text.trim().to_string())
                .unwrap_or_else(|_| "Confluent site CA".to_string());
            (KeyPair::from_pem(&key_pem)?, common_name)
        } else {
            let key = KeyPair::generate()?;
            let suffix: u32 = rand::random();
            let common_name = format!("Confluent site CA {suffix:08x}");
            let cert = ca_params(&common_name)?.self_signed(&key)?;
            write_private(&ca_key_path, &key.serialize_pem())?;
            fs::write(&name_path, &common_name).map_err(io_error(&name_path))?;
            fs::write(&ca_cert_path, cert.pem()).map_err(io_error(&ca_cert_path))?;
            // A new CA invalidates any older server certificate.
            let _ = fs::remove_file(&server_cert_path);
            (key, common_name)
        };
        let ca_cert_pem = fs::read_to_string(&ca_cert_path).map_err(io_error(&ca_cert_path))?;
        // The server certificate is issued again (by the same CA, so clients that trust the CA
        // are unaffected) when this host's names or addresses are no longer the ones it names.
        let names = server_names();
        let names_path = tls_dir.join("server.names");
        let current_names = names_text(&names);
        let names_changed = fs::read_to_string(&names_path).ok().as_deref() != Some(&current_names);
        if names_changed || !server_cert_path.exists() || !server_key_path.exists() {
            let issuer = Issuer::new(ca_params(&common_name)?, &ca_key);
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            let mut name = DistinguishedName::new();
            name.push(DnType::CommonName, "confluentd");
            params.distinguished_name = name;
            params.subject_alt_names = names;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.not_before = rcgen::date_time_ymd(2024, 1, 1);
            params.not_after = rcgen::date_time_ymd(2124, 1, 1);
            let cert = params.signed_by(&key, &issuer)?;
            write_private(&server_key_path, &key.serialize_pem())?;
            fs::write(&server_cert_path, cert.pem()).map_err(io_error(&server_cert_path))?;
            fs::write(&names_path, &current_names).map_err(io_error(&names_path))?;
        }
        let server_cert_pem =
            fs::read_to_string(&server_cert_path).map_err(io_error(&server_cert_path))?;
        let server_key_pem =
            fs::read_to_string(&server_key_path).map_err(io_error(&server_key_path))?;
        if let Some(parent) = publish_to.parent() {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        fs::write(publish_to, &ca_cert_pem).map_err(io_error(publish_to))?;
        Ok(SiteCa {
            ca_cert_pem,
            server_cert_pem,
            server_key_pem,
            ca_path: publish_to.to_path_buf(),
        })
    }

    /// A rustls server configuration presenting the server certificate (and the CA, so that
    /// clients holding only the CA can build the chain). ALPN offers h2 and http/1.1.
    pub fn server_config(&self, alpn_http: bool) -> Result<Arc<rustls::ServerConfig>, SiteCaError> {
        let mut chain: Vec<CertificateDer<'static>> = Vec::new();
        for pem in [&self.server_cert_pem, &self.ca_cert_pem] {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                chain.push(cert.map_err(|source| SiteCaError::Pem {
                    path: PathBuf::from("server.pem"),
                    source,
                })?);
            }
        }
        let key =
            PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).map_err(|source| {
                SiteCaError::Pem {
                    path: PathBuf::from("server.key"),
                    source,
                }
            })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        if alpn_http {
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        }
        Ok(Arc::new(config))
    }

    /// SHA-256 fingerprint of the server certificate, `sha256$<hex>` (reference section 18).
    pub fn server_fingerprint(&self) -> String {
        use sha2::Digest;
        let der = CertificateDer::pem_slice_iter(self.server_cert_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .map(|cert| cert.to_vec())
            .unwrap_or_default();
        format!("sha256${}", hex::encode(sha2::Sha256::digest(&der)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let publish = dir.path().join("public/site/tls/ca.pem");
        let first = SiteCa::load_or_create(&dir.path().join("tls"), &publish).unwrap();
        let second = SiteCa::load_or_create(&dir.path().join("tls"), &publish).unwrap();
        assert_eq!(first.ca_cert_pem, second.ca_cert_pem);
        assert_eq!(first.server_cert_pem, second.server_cert_pem);
        assert_eq!(fs::read_to_string(&publish).unwrap(), first.ca_cert_pem);
        let mode = fs::metadata(dir.path().join("tls/ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
        assert!(first.server_config(true).is_ok());
        assert!(first.server_fingerprint().starts_with("sha256$"));
        // The certificate names this host's interface addresses, and is issued again (by the
        // same CA) when the recorded names no longer match.
        let der = CertificateDer::from_pem_slice(first.server_cert_pem.as_bytes()).unwrap();
        for address in interface_addresses() {
            // A subjectAltName iPAddress: context tag 7, then the address's bytes.
            let mut encoded = match address {
                std::net::IpAddr::V4(_) => vec![0x87, 4],
                std::net::IpAddr::V6(_) => vec![0x87, 16],
            };
            encoded.extend(match address {
                std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
                std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
            });
            assert!(
                der.windows(encoded.len()).any(|window| window == encoded),
                "{address} is not in the server certificate"
            );
        }
        fs::write(dir.path().join("tls/server.names"), "dns elsewhere\n").unwrap();
        let third = SiteCa::load_or_create(&dir.path().join("tls"), &publish).unwrap();
        assert_eq!(third.ca_cert_pem, first.ca_cert_pem);
        assert_ne!(third.server_cert_pem, first.server_cert_pem);
    }
}
