//! `drover twin`: a device's twin through `/api/registry/v1alpha1/apps/{app}/devices/{device}/twin`
//! — show it, change its desired properties with a merge patch, replace its tags.

use reqwest::Method;
use serde_json::Value;

use super::client::{seg, Api};
use super::grammar::{Global, TwinCmd, TwinTarget};
use super::output::{print_doc, Format};
use super::{CliError, Result, REGISTRY};

fn path(t: &TwinTarget) -> String {
    format!(
        "{REGISTRY}/apps/{}/devices/{}/twin",
        seg(&t.app),
        seg(&t.device)
    )
}

/// A JSON object given on the command line (or read from a file): checked here, so that a typo
/// is a usage error with the position, not a server round trip.
pub(super) fn object(what: &str, text: &str) -> Result<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(CliError::Usage(format!("{what} must be a JSON object"))),
        Err(e) => Err(CliError::Usage(format!("{what} is not valid JSON: {e}"))),
    }
}

pub(super) fn read_patch(
    patch: Option<String>,
    file: Option<std::path::PathBuf>,
) -> Result<String> {
    match (patch, file) {
        (Some(p), _) => Ok(p),
        (None, Some(f)) if f.as_os_str() == "-" => std::io::read_to_string(std::io::stdin())
            .map_err(|e| CliError::Other(format!("reading stdin: {e}"))),
        (None, Some(f)) => std::fs::read_to_string(&f)
            .map_err(|e| CliError::Other(format!("cannot read {}: {e}", f.display()))),
        (None, None) => Err(CliError::Usage("pass --patch or --file".into())),
    }
}

/// The twin as printed: YAML for tables (a twin is a document, not a row), else as asked.
fn show(twin: &Value, format: Format) -> Result<()> {
    match format {
        Format::Table => print_doc(twin, Format::Yaml),
        f => print_doc(twin, f),
    }
}

pub async fn twin(cmd: TwinCmd, api: impl Fn(&Global) -> Result<Api>) -> Result<()> {
    match cmd {
        TwinCmd::Show { g, target } => show(&api(&g)?.get(&path(&target)).await?, g.output),
        TwinCmd::Desired {
            g,
            target,
            patch,
            file,
            if_version,
        } => {
            let patch = object("the patch", &read_patch(patch, file)?)?;
            let api = api(&g)?;
            let mut req = api
                .request(Method::PATCH, &format!("{}/desired", path(&target)))
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/merge-patch+json",
                )
                .body(patch.to_string());
            if let Some(v) = if_version {
                req = req.header(reqwest::header::IF_MATCH, format!("\"{v}\""));
            }
            show(&api.send(req).await?.body, g.output)
        }
        TwinCmd::Tags { g, target, set } => {
            let tags = object("the tags", &set)?;
            let twin = api(&g)?
                .put(&format!("{}/tags", path(&target)), &tags)
                .await?;
            show(&twin, g.output)
        }
    }
}
