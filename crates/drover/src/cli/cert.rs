//! `drover cert`: device certificates from the installation's device CA
//! (`/api/certificates/v1alpha1`) — request one (making the key and CSR here, or sending a CSR
//! of your own), list, show, revoke; and the CA certificate and CRL. Its grammar is here with
//! its handlers (the command is self-contained).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use super::client::{seg, Api};
use super::grammar::Global;
use super::output::{line, note, print_doc, print_table, Format};
use super::{CliError, Result};

const BASE: &str = "/api/certificates/v1alpha1";

#[derive(Debug, Subcommand)]
pub enum CertCmd {
    /// Get a certificate for a device from the device CA. Without --csr, a key (EC P-256) and a
    /// CSR are made here; the key never leaves this machine.
    #[command(
        after_help = "Examples:\n  drover cert request dev1 --app app1\n  drover cert request dev1 --app app1 --key-out dev1.key --out dev1.pem --days 90\n  drover cert request dev1 --app app1 --csr dev1.csr"
    )]
    Request {
        #[command(flatten)]
        g: Global,
        #[command(flatten)]
        target: Target,
        /// A CSR of your own (PEM) instead of a key made here.
        #[arg(long, value_name = "FILE")]
        csr: Option<PathBuf>,
        /// Where the key made here goes (mode 0600; default `<device>-key.pem`).
        #[arg(long, value_name = "FILE", conflicts_with = "csr")]
        key_out: Option<PathBuf>,
        /// Where the certificate goes (default `<device>.pem`).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Days it is valid (default and most: the server's device_cert_days).
        #[arg(long)]
        days: Option<u32>,
    },
    /// List the certificates issued for an application's devices.
    #[command(
        after_help = "Examples:\n  drover cert list --app app1\n  drover cert list --app app1 --device dev1 -o json"
    )]
    List {
        #[command(flatten)]
        g: Global,
        /// The application.
        #[arg(long, short = 'a', env = "DROVER_APP")]
        app: String,
        /// Only this device's.
        #[arg(long)]
        device: Option<String>,
    },
    /// Show an issued certificate.
    #[command(after_help = "Example:\n  drover cert show 3f2a...e9 --app app1")]
    Show {
        #[command(flatten)]
        g: Global,
        /// Its SHA-256 fingerprint (hex).
        fingerprint: String,
        #[arg(long, short = 'a', env = "DROVER_APP")]
        app: String,
    },
    /// Revoke a certificate: one the device CA issued (by fingerprint), or one of the
    /// application's own trust anchors (--file, --serial, or a fingerprint with --device).
    /// Refused at the next handshake on every node; the device's live sessions end.
    #[command(
        after_help = "Examples:\n  drover cert revoke 3f2a...e9 --app app1\n  drover cert revoke --app app1 --file old-dev1.pem\n  drover cert revoke --app app1 --serial 1a:2b:3c --device dev1"
    )]
    Revoke {
        #[command(flatten)]
        g: Global,
        /// The certificate's SHA-256 fingerprint (hex).
        fingerprint: Option<String>,
        #[arg(long, short = 'a', env = "DROVER_APP")]
        app: String,
        /// The certificate (PEM) of the application's own CA to revoke.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["fingerprint", "serial"])]
        file: Option<PathBuf>,
        /// The serial number (hex) of a certificate of the application's own CA.
        #[arg(long, conflicts_with = "fingerprint")]
        serial: Option<String>,
        /// The device whose sessions end (needed with --serial, and with a fingerprint of the
        /// application's own CA).
        #[arg(long)]
        device: Option<String>,
    },
    /// Print the device CA's certificate (PEM), or with --crl its revocation list.
    #[command(
        after_help = "Examples:\n  drover cert ca > device-ca.pem\n  drover cert ca --crl > device-ca.crl.pem"
    )]
    Ca {
        #[command(flatten)]
        g: Global,
        /// The CRL instead.
        #[arg(long)]
        crl: bool,
    },
}

/// Which device.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The device.
    pub device: String,
    /// The application.
    #[arg(long, short = 'a', env = "DROVER_APP")]
    pub app: String,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::Other(format!("cannot read {}: {e}", path.display())))
}

fn write(path: &Path, text: &str, secret: bool) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).map_err(|e| {
        CliError::Other(format!(
            "cannot create {} (it must not exist yet): {e}",
            path.display()
        ))
    })?;
    f.write_all(text.as_bytes())
        .map_err(|e| CliError::Other(format!("cannot write {}: {e}", path.display())))
}

/// A new EC P-256 key and a CSR for it.
fn key_and_csr(device: &str) -> Result<(String, String)> {
    let failed = |e: rcgen::Error| CliError::Other(format!("cannot make a key and CSR: {e}"));
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, device);
    let csr = params.serialize_request(&key).map_err(failed)?;
    Ok((key.serialize_pem(), csr.pem().map_err(failed)?))
}

fn table(certs: &[Value]) -> Result<()> {
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    let rows: Vec<Vec<String>> = certs
        .iter()
        .map(|c| {
            vec![
                text(&c["fingerprint"]),
                text(&c["device"]),
                text(&c["notAfter"]),
                c["revoked"].as_str().unwrap_or("-").to_string(),
            ]
        })
        .collect();
    print_table(&["FINGERPRINT", "DEVICE", "EXPIRES", "REVOKED"], &rows)
}

fn show(cert: &Value, format: Format) -> Result<()> {
    match format {
        Format::Table => table(std::slice::from_ref(cert)),
        f => print_doc(cert, f),
    }
}

pub async fn cert(cmd: CertCmd, api: impl Fn(&Global) -> Result<Api>) -> Result<()> {
    match cmd {
        CertCmd::Request {
            g,
            target,
            csr,
            key_out,
            out,
            days,
        } => request(&api(&g)?, g.output, target, csr, key_out, out, days).await,
        CertCmd::List { g, app, device } => {
            let mut path = format!("{BASE}/apps/{}", seg(&app));
            if let Some(d) = device {
                path.push_str(&format!("?device={}", seg(&d)));
            }
            let list = api(&g)?.get(&path).await?;
            match g.output {
                Format::Table => table(list.as_array().map(Vec::as_slice).unwrap_or(&[])),
                f => print_doc(&list, f),
            }
        }
        CertCmd::Show {
            g,
            fingerprint,
            app,
        } => {
            let path = format!("{BASE}/apps/{}/{}", seg(&app), seg(&fingerprint));
            show(&api(&g)?.get(&path).await?, g.output)
        }
        CertCmd::Revoke {
            g,
            fingerprint,
            app,
            file,
            serial,
            device,
        } => {
            let api = api(&g)?;
            let app_path = format!("{BASE}/apps/{}", seg(&app));
            let body = match (fingerprint, file, serial) {
                (Some(fp), None, None) if device.is_none() => {
                    let cert = api
                        .post(&format!("{app_path}/{}/revoke", seg(&fp)), &json!({}))
                        .await?;
                    return show(&cert, g.output);
                }
                (Some(fp), None, None) => json!({"fingerprint": fp, "device": device}),
                (None, Some(f), None) => json!({"certificate": read(&f)?, "device": device}),
                (None, None, Some(s)) => json!({"serial": s, "device": device}),
                _ => {
                    return Err(CliError::Usage(
                        "which certificate? give a fingerprint, --file or --serial".into(),
                    ))
                }
            };
            let revocation = api.post(&format!("{app_path}/revocations"), &body).await?;
            print_doc(
                &revocation,
                match g.output {
                    Format::Table => Format::Yaml,
                    f => f,
                },
            )
        }
        CertCmd::Ca { g, crl } => {
            let path = if crl {
                format!("{BASE}/crl?format=pem")
            } else {
                format!("{BASE}/ca")
            };
            let api = api(&g)?;
            let reply = api.send(api.request(Method::GET, &path)).await?;
            write_pem(&reply.raw)
        }
    }
}

fn write_pem(raw: &[u8]) -> Result<()> {
    let text = String::from_utf8_lossy(raw);
    line(text.trim_end())
}

async fn request(
    api: &Api,
    format: Format,
    target: Target,
    csr: Option<PathBuf>,
    key_out: Option<PathBuf>,
    out: Option<PathBuf>,
    days: Option<u32>,
) -> Result<()> {
    let out = out.unwrap_or_else(|| PathBuf::from(format!("{}.pem", target.device)));
    if out.exists() {
        return Err(CliError::Usage(format!(
            "{} exists: choose another --out",
            out.display()
        )));
    }
    let (key, csr) = match csr {
        Some(f) => (None, read(&f)?),
        None => {
            let key_out =
                key_out.unwrap_or_else(|| PathBuf::from(format!("{}-key.pem", target.device)));
            if key_out.exists() {
                return Err(CliError::Usage(format!(
                    "{} exists: choose another --key-out",
                    key_out.display()
                )));
            }
            let (key, csr) = key_and_csr(&target.device)?;
            (Some((key_out, key)), csr)
        }
    };
    let mut path = format!(
        "{BASE}/apps/{}/devices/{}",
        seg(&target.app),
        seg(&target.device)
    );
    if let Some(d) = days {
        path.push_str(&format!("?days={d}"));
    }
    let req = api
        .request(Method::POST, &path)
        .header(reqwest::header::CONTENT_TYPE, "application/pkcs10")
        .body(csr);
    let cert = api.send(req).await?.body;
    if let Some((key_out, key)) = key {
        write(&key_out, &key, true)?;
        note(&format!("key written to {}", key_out.display()));
    }
    write(&out, cert["certificate"].as_str().unwrap_or(""), false)?;
    note(&format!("certificate written to {}", out.display()));
    show(&cert, format)
}
