//! X.509: an application's trust anchors (`spec.trustAnchors`) and the certificate subjects a
//! device is known by (DN aliases). This is what the server authenticates certificates with: the
//! issuer names the application (a trust anchor with that subject), the chain must verify against
//! that application's anchors, and the subject DN names the device (its name or an alias), else
//! the common name does.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use drover_auth::x509::{self, CertificateInfo};
use serde_json::{json, Map, Value};

use super::output::{line, note, print_doc, print_table, Format};
use super::resources::{spec_mut, Kind, Resources};
use super::{CliError, Result};

const BEGIN: &str = "-----BEGIN ";
const END: &str = "-----END ";

/// The PEM blocks of a text: (label, the block's full text).
fn pem_blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start + BEGIN.len()..];
        let Some(label_end) = after.find("-----") else {
            break;
        };
        let label = after[..label_end].to_string();
        let end_marker = format!("{END}{label}-----");
        let Some(end) = rest[start..].find(&end_marker) else {
            break;
        };
        let stop = start + end + end_marker.len();
        out.push((label, format!("{}\n", &rest[start..stop])));
        rest = &rest[stop..];
    }
    out
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| CliError::Other(format!("cannot read {}: {e}", path.display())))
}

/// The certificates of a PEM file, each parsed as the server will.
fn certificates(path: &Path, allow_keys: bool) -> Result<Vec<(String, CertificateInfo)>> {
    let text = read(path)?;
    let blocks = pem_blocks(&text);
    if !allow_keys && blocks.iter().any(|(l, _)| l.contains("PRIVATE KEY")) {
        return Err(CliError::Other(format!(
            "{} holds a private key: pass only the CA's certificate (a private key never leaves your machine)",
            path.display()
        )));
    }
    let certs: Vec<(String, CertificateInfo)> = blocks
        .into_iter()
        .filter(|(l, _)| l == "CERTIFICATE")
        .map(|(_, pem)| {
            x509::parse_trust_anchor(&pem)
                .map(|info| (pem, info))
                .map_err(|e| CliError::Other(format!("{}: {e}", path.display())))
        })
        .collect::<Result<_>>()?;
    if certs.is_empty() {
        return Err(CliError::Other(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// `drover app set trust-anchor`: replaces (or with `add` extends) `spec.trustAnchors.anchors`
/// with the certificates of `files` (each certificate of a bundle becomes one anchor), or clears
/// them. `r` acts on applications.
pub async fn set_trust_anchors(
    r: &Resources<'_>,
    app: &str,
    files: &[PathBuf],
    add: bool,
    clear: bool,
) -> Result<()> {
    let mut new: Vec<Value> = Vec::new();
    for f in files {
        for (pem, _) in certificates(f, false)? {
            new.push(json!({
                "certificate": base64::engine::general_purpose::STANDARD.encode(pem.as_bytes())
            }));
        }
    }
    let res = r
        .modify(app, |res| {
            let spec = spec_mut(res)?;
            if clear {
                spec.remove("trustAnchors");
                return Ok(());
            }
            let mut anchors = if add {
                spec.get("trustAnchors").map_or(Vec::new(), |t| {
                    t["anchors"].as_array().cloned().unwrap_or_default()
                })
            } else {
                Vec::new()
            };
            for a in new {
                if !anchors.contains(&a) {
                    anchors.push(a);
                }
            }
            spec.insert("trustAnchors".into(), json!({ "anchors": anchors }));
            Ok(())
        })
        .await?;
    if r.format != Format::Table {
        return print_doc(&res, r.format);
    }
    print_anchor_status(app, &res)
}

/// The anchors as the server checked them: subject, expiry, valid or why not.
fn print_anchor_status(app: &str, res: &Value) -> Result<()> {
    let status = res["status"]["trustAnchors"]["anchors"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if status.is_empty() {
        return line(&format!("app {app}: no trust anchors"));
    }
    line(&format!("app {app}: trust anchors set"))?;
    let rows: Vec<Vec<String>> = status
        .iter()
        .map(|a| {
            if let Some(v) = a.get("valid") {
                vec![
                    v["subject"].as_str().unwrap_or("").to_string(),
                    v["notAfter"].as_str().unwrap_or("").to_string(),
                    "valid".to_string(),
                ]
            } else {
                vec![
                    String::new(),
                    String::new(),
                    format!(
                        "invalid: {}",
                        a["invalid"]["message"].as_str().unwrap_or("?")
                    ),
                ]
            }
        })
        .collect();
    print_table(&["SUBJECT", "NOT AFTER", "STATUS"], &rows)
}

/// Aliases that are certificate subjects (distinguished names such as `CN=x, O=y`).
fn is_dn(alias: &str) -> bool {
    alias.contains('=')
}

/// A device certificate read from a file: the file, the certificate, its issuer's DN.
type Issued = (PathBuf, CertificateInfo, String);

/// `drover device set cert`: the device's certificate subjects (its DN aliases) become the
/// subjects of `files` and `subjects`; its other aliases stay. `r` acts on the devices of `app`.
pub async fn set_device_cert(
    r: &Resources<'_>,
    app: &str,
    device: &str,
    files: &[PathBuf],
    subjects: &[String],
    clear: bool,
) -> Result<()> {
    let (wanted, issued) = wanted_subjects(files, subjects)?;
    let res = r
        .modify(device, |res| {
            set_dn_aliases(spec_mut(res)?, &wanted, clear);
            Ok(())
        })
        .await?;
    // Will the server accept these certificates? Say so now rather than at the device's first try.
    let notes = if issued.is_empty() {
        Vec::new()
    } else {
        let app_res = r.api.get(&Kind::App.path(app)).await?;
        trust_notes(app, &app_res, &issued)
    };
    match r.format {
        Format::Table if clear || wanted.is_empty() => {
            line(&format!("device {device}: certificate subjects cleared"))?
        }
        Format::Table => {
            line(&format!("device {device}: known by certificate subject"))?;
            for s in &wanted {
                line(&format!("  {s}"))?;
            }
        }
        f => print_doc(&res, f)?,
    }
    for n in notes {
        note(&n);
    }
    Ok(())
}

/// The subject DNs of the certificates in `files` (the first of each file: the device's own) and
/// the `subjects` given, and what each file's certificate is.
fn wanted_subjects(files: &[PathBuf], subjects: &[String]) -> Result<(Vec<String>, Vec<Issued>)> {
    let mut wanted: Vec<String> = Vec::new();
    let mut issued: Vec<Issued> = Vec::new();
    for f in files {
        // The device's leaf certificate comes first; a key in the same file never leaves here.
        let (_, info) = certificates(f, true)?.remove(0);
        let id = x509::client_identity(&info.der)
            .map_err(|e| CliError::Other(format!("{}: {e}", f.display())))?;
        wanted.push(id.subject.clone());
        issued.push((f.clone(), info, id.issuer));
    }
    for s in subjects {
        if !is_dn(s) {
            return Err(CliError::Usage(format!(
                "--subject {s:?} is not a distinguished name such as \"CN=sensor-1, O=Example\""
            )));
        }
        wanted.push(s.trim().to_string());
    }
    Ok((wanted, issued))
}

/// Replaces the DN aliases of a device's spec with `wanted` (none if `clear`).
fn set_dn_aliases(spec: &mut Map<String, Value>, wanted: &[String], clear: bool) {
    let mut aliases: Vec<String> = spec
        .get("alias")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    aliases.retain(|a| !is_dn(a));
    if !clear {
        for s in wanted {
            if !aliases.contains(s) {
                aliases.push(s.clone());
            }
        }
    }
    if aliases.is_empty() {
        spec.remove("alias");
    } else {
        spec.insert("alias".into(), json!(aliases));
    }
}

/// Notes on certificates the server will refuse: an issuer that is no trust anchor of the
/// application (`app_res`), or an expired certificate.
fn trust_notes(app: &str, app_res: &Value, issued: &[Issued]) -> Vec<String> {
    let trusted: Vec<String> = app_res["status"]["trustAnchors"]["anchors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["valid"]["subject"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut notes = Vec::new();
    for (f, info, issuer) in issued {
        if !trusted.contains(issuer) {
            notes.push(format!(
                "note: app {app} has no trust anchor with subject \"{issuer}\", the issuer of {}: add its CA with `drover app set trust-anchor {app} --file <ca.pem> --add`",
                f.display()
            ));
        }
        if info.not_after < chrono::Utc::now() {
            notes.push(format!(
                "note: {} expired at {}",
                f.display(),
                info.not_after.to_rfc3339()
            ));
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_pem_bundles() {
        let text = "junk\n-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n\
                    -----BEGIN PRIVATE KEY-----\nBBB\n-----END PRIVATE KEY-----\n\
                    -----BEGIN CERTIFICATE-----\nCCC\n-----END CERTIFICATE-----\n";
        let b = pem_blocks(text);
        assert_eq!(b.len(), 3);
        assert_eq!(b[0].0, "CERTIFICATE");
        assert_eq!(
            b[0].1,
            "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n"
        );
        assert_eq!(b[1].0, "PRIVATE KEY");
        assert!(b[2].1.contains("CCC"));
        assert!(pem_blocks("-----BEGIN CERTIFICATE-----\nAAA\n").is_empty());
    }
}
