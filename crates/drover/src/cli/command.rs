//! `drover cmd`: a command sent to a device through `/api/command/v1alpha1`, optionally waiting
//! for the device's reply (printed as the device sent it).

use reqwest::Method;
use serde_json::json;

use super::client::{seg, Api};
use super::grammar::CmdArgs;
use super::output::{done, print_doc, write_stdout, Format};
use super::{CliError, Result, COMMANDS};

/// The command's payload: `--payload`, the `--file` (`-`: stdin), or nothing.
pub fn payload(a: &CmdArgs) -> Result<Vec<u8>> {
    match (&a.payload, &a.file) {
        (Some(p), _) => Ok(p.clone().into_bytes()),
        (None, Some(f)) if f.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .map_err(|e| CliError::Other(format!("reading stdin: {e}")))?;
            Ok(buf)
        }
        (None, Some(f)) => std::fs::read(f)
            .map_err(|e| CliError::Other(format!("cannot read {}: {e}", f.display()))),
        (None, None) => Ok(Vec::new()),
    }
}

/// Sends the command with `body`; with `--wait`, prints the device's reply.
pub async fn send(api: &Api, format: Format, a: CmdArgs, body: Vec<u8>) -> Result<()> {
    let mut query: Vec<(&str, String)> = vec![("command", a.command.clone())];
    if let Some(w) = a.wait {
        query.push(("timeout", w.to_string()));
    }
    if let Some(t) = a.ttl {
        query.push(("ttl", t.to_string()));
    }
    let path = format!("{COMMANDS}/apps/{}/devices/{}", seg(&a.app), seg(&a.device));
    let mut req = api.request(Method::POST, &path).query(&query).body(body);
    if let Some(ct) = a.content_type {
        req = req.header(reqwest::header::CONTENT_TYPE, ct);
    }
    let reply = api.send(req).await?;
    if a.wait.is_some() && reply.status == reqwest::StatusCode::OK {
        match format {
            Format::Table => {
                let mut raw = reply.raw;
                if !raw.ends_with(b"\n") && !raw.is_empty() {
                    raw.push(b'\n');
                }
                write_stdout(&raw)
            }
            f => print_doc(&reply.body, f),
        }
    } else {
        done(
            format,
            &json!({"status": reply.status.as_u16()}),
            &format!("command {} sent to device {}", a.command, a.device),
        )
    }
}
