//! `drover watch`: the registry's change feed (server-sent events from
//! `/api/registry/v1alpha1/watch`), one line per change, resumable with `--since`.

use futures::StreamExt;
use serde_json::Value;

use super::client::{api_error, seg, Api};
use super::grammar::WatchArgs;
use super::output::{self, note, Format};
use super::{CliError, Result};

/// One human line: revision, time, kind, application[/device], changed path.
fn line(ev: &Value) -> String {
    let kind = match ev["type"].as_str().unwrap_or("") {
        t if t.ends_with(".device") => "device",
        t if t.ends_with(".application") => "app",
        other => other,
    };
    let what = match ev["device"].as_str() {
        Some(d) => format!("{}/{d}", ev["application"].as_str().unwrap_or("?")),
        None => ev["application"].as_str().unwrap_or("?").to_string(),
    };
    format!(
        "{:>8}  {}  {kind:<6}  {what}  {}",
        ev["id"].as_str().unwrap_or("?"),
        ev["time"].as_str().unwrap_or(""),
        ev["subject"].as_str().unwrap_or("")
    )
}

pub async fn watch(api: &Api, format: Format, a: WatchArgs) -> Result<()> {
    let mut path = "/api/registry/v1alpha1/watch".to_string();
    let mut query = Vec::new();
    if let Some(s) = a.since {
        query.push(format!("since={s}"));
    }
    if let Some(app) = &a.app {
        // An unknown or unreadable application: the server answers 404 (exit 3).
        query.push(format!("app={}", seg(app)));
    }
    if !query.is_empty() {
        path = format!("{path}?{}", query.join("&"));
    }
    let resp = api
        .request(reqwest::Method::GET, &path)
        .header("accept", "text/event-stream")
        .send()
        .await
        .map_err(|e| CliError::Other(format!("cannot reach {}: {e}", api.ctx.url)))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.bytes().await.unwrap_or_default();
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        return Err(api_error(status, &body));
    }
    note("Watching registry changes… (Ctrl+C to stop)");
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut seen = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| CliError::Other(format!("the change stream broke off: {e}")))?;
        buf.push_str(&String::from_utf8_lossy(&chunk));
        // Server-sent events end with a blank line; a `data:` line holds the CloudEvent.
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let data: String = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            if data.is_empty() {
                continue; // keep-alive comment
            }
            let ev: Value = serde_json::from_str(&data)
                .map_err(|e| CliError::Other(format!("unreadable change event: {e}")))?;
            match format {
                Format::Table => output::line(&line(&ev))?,
                _ => output::line(&ev.to_string())?,
            }
            seen += 1;
            if a.count.is_some_and(|n| seen >= n) {
                return Ok(());
            }
        }
    }
    Err(CliError::Other(
        "the server ended the change stream (shutting down?); resume with --since <last revision>"
            .into(),
    ))
}
