//! The server's TLS material: the configured certificate and key, or — without them — a
//! development CA and a server certificate for localhost/127.0.0.1/::1, generated once in
//! `<data-dir>/tls/` so clients can trust the CA file.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::server::StartError;

/// Certificate chain (DER, server first) and private key (DER).
pub struct TlsMaterial {
    pub chain: Vec<Vec<u8>>,
    pub key: Vec<u8>,
    /// The development CA's certificate file, when generated material is used.
    pub dev_ca: Option<PathBuf>,
}

fn config_err(e: impl std::fmt::Display) -> StartError {
    StartError::Config(e.to_string())
}

/// Loads PEM files given with `--tls-cert` / `--tls-key`.
pub fn load(cert: &Path, key: &Path) -> Result<TlsMaterial, StartError> {
    let chain: Vec<Vec<u8>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| {
            config_err(format!(
                "cannot read tls_cert {} (--tls-cert / DROVER_TLS_CERT): {e}",
                cert.display()
            ))
        })?
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| {
            config_err(format!(
                "invalid PEM in tls_cert {} (--tls-cert / DROVER_TLS_CERT): {e}",
                cert.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(config_err(format!(
            "tls_cert {} holds no CERTIFICATE (--tls-cert / DROVER_TLS_CERT)",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        config_err(format!(
            "cannot read a private key from tls_key {} (--tls-key / DROVER_TLS_KEY): {e}",
            key.display()
        ))
    })?;
    Ok(TlsMaterial {
        chain,
        key: key.secret_der().to_vec(),
        dev_ca: None,
    })
}

/// Loads the development material from `<data_dir>/tls`, generating it on first use.
pub fn development(data_dir: &Path) -> Result<TlsMaterial, StartError> {
    let dir = data_dir.join("tls");
    let (ca, cert, key) = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server-key.pem"),
    );
    if !(ca.exists() && cert.exists() && key.exists()) {
        generate(&dir).map_err(|e| {
            StartError::runtime(
                format!("cannot generate the development CA in {}", dir.display()),
                e,
            )
        })?;
        tracing::info!(
            "generated a development CA and server certificate in {}",
            dir.display()
        );
    }
    let mut m = load(&cert, &key)?;
    m.dev_ca = Some(ca);
    Ok(m)
}

fn generate(dir: &Path) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    std::fs::create_dir_all(dir)?;
    let now = time::OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "Drover development CA");
    ca.distinguished_name
        .push(DnType::OrganizationName, "Drover");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = now - time::Duration::days(1);
    ca.not_after = now + time::Duration::days(3650);
    let ca_cert = ca.self_signed(&ca_key)?;

    let key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server.not_before = now - time::Duration::days(1);
    server.not_after = now + time::Duration::days(3650);
    let server_cert = server.signed_by(&key, &ca_cert, &ca_key)?;

    write(&dir.join("ca.pem"), &ca_cert.pem(), false)?;
    write(&dir.join("ca-key.pem"), &ca_key.serialize_pem(), true)?;
    write(
        &dir.join("server.pem"),
        &format!("{}{}", server_cert.pem(), ca_cert.pem()),
        false,
    )?;
    write(&dir.join("server-key.pem"), &key.serialize_pem(), true)?;
    Ok(())
}

fn write(path: &Path, content: &str, secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()
}
