//! The server's TLS material: the configured certificate and key, or — without them — a
//! development CA, generated once in `<data-dir>/tls/` so clients can trust the CA file, and a
//! server certificate it signs for localhost, 127.0.0.1, ::1, the configured public host names
//! and `*.<hub domain>` ([`server_names`]); when those settings change, the next start issues a
//! new server certificate from the same CA.

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

/// The names the development server certificate is for: localhost and the loopback addresses,
/// `public_hosts`, and `hub_domain` with its wildcard (each application is the IoT hub
/// `<app>.<hub_domain>`).
pub fn server_names(public_hosts: &[String], hub_domain: Option<&str>) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .map(String::from)
        .collect();
    names.extend(public_hosts.iter().cloned());
    if let Some(d) = hub_domain {
        names.push(d.to_string());
        names.push(format!("*.{d}"));
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.to_ascii_lowercase()));
    names
}

/// Loads the development material from `<data_dir>/tls`, generating the CA on first use and a
/// server certificate whenever `names` differ from those of the one there.
pub fn development(data_dir: &Path, names: &[String]) -> Result<TlsMaterial, StartError> {
    let dir = data_dir.join("tls");
    let files = DevFiles::in_dir(&dir);
    let failed =
        |what: &str, e| StartError::runtime(format!("cannot {what} in {}", dir.display()), e);
    if !(files.ca.exists() && files.ca_key.exists()) {
        std::fs::create_dir_all(&dir).map_err(|e| failed("create the directory", e.into()))?;
        generate_ca(&files).map_err(|e| failed("generate the development CA", e))?;
        tracing::info!("generated a development CA in {}", dir.display());
    }
    let wanted = names.join("\n");
    let current = std::fs::read_to_string(&files.names).ok();
    if current.as_deref().map(str::trim_end) != Some(wanted.as_str())
        || !(files.cert.exists() && files.key.exists())
    {
        issue_server(&files, names)
            .map_err(|e| failed("issue the development server certificate", e))?;
        tracing::info!(names = %names.join(", "), "issued a development server certificate");
    }
    let mut m = load(&files.cert, &files.key)?;
    m.dev_ca = Some(files.ca);
    Ok(m)
}

/// The files of the development material.
struct DevFiles {
    ca: PathBuf,
    ca_key: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// The names `cert` is for, one a line.
    names: PathBuf,
}

impl DevFiles {
    fn in_dir(dir: &Path) -> DevFiles {
        DevFiles {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
            names: dir.join("server-names"),
        }
    }
}

type GenResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn generate_ca(files: &DevFiles) -> GenResult {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
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
    // The key first: a CA file without its key would be issued from by nobody.
    write(&files.ca_key, &ca_key.serialize_pem(), true)?;
    write(&files.ca, &ca_cert.pem(), false)?;
    Ok(())
}

/// A server certificate for `names`, signed by the development CA (a new key each time).
fn issue_server(files: &DevFiles, names: &[String]) -> GenResult {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose};
    let now = time::OffsetDateTime::now_utc();
    let ca_pem = std::fs::read_to_string(&files.ca)?;
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(&files.ca_key)?)?;
    let ca_cert = CertificateParams::from_ca_cert_pem(&ca_pem)?.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let mut server = CertificateParams::new(names.to_vec())?;
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
    write(&files.key, &key.serialize_pem(), true)?;
    write(
        &files.cert,
        &format!("{}{}", server_cert.pem(), ca_pem),
        false,
    )?;
    write(&files.names, &format!("{}\n", names.join("\n")), false)?;
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
