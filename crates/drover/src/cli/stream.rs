//! `drover stream`: an application's live events from the WebSocket integration, whose URL the
//! server advertises in `/.well-known/drogue-endpoints` (`websocket_integration.url`). One
//! structured JSON CloudEvent arrives per text frame.

use base64::Engine as _;
use futures::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, AUTHORIZATION, USER_AGENT};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use super::client::{api_error, seg, Api};
use super::grammar::StreamArgs;
use super::output::{line, note, to_yaml, write_stdout, Format};
use super::{CliError, Result};

type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The WebSocket URL of `app`, from the server's endpoints document.
async fn ws_url(api: &Api, a: &StreamArgs) -> Result<url::Url> {
    let doc = api.get("/.well-known/drogue-endpoints").await?;
    let Some(base) = doc["websocket_integration"]["url"].as_str() else {
        return Err(CliError::Other(format!(
            "{} does not offer the WebSocket integration (no websocket_integration in its endpoints document)",
            api.ctx.url
        )));
    };
    let mut url = format!("{}{}", base, seg(&a.app));
    if let Some(c) = &a.channel {
        url = format!("{url}/{}", seg(c));
    }
    let mut url = url::Url::parse(&url).map_err(|e| {
        CliError::Other(format!(
            "the server advertises an invalid WebSocket URL {url:?}: {e}"
        ))
    })?;
    {
        let mut q = url.query_pairs_mut();
        if let Some(g) = &a.group {
            q.append_pair("group_id", g);
        }
        if a.earliest {
            q.append_pair("from", "earliest");
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    Ok(url)
}

/// `2024-05-01T12:00:00.123Z` from the event's RFC 3339 time (as sent if it does not parse).
fn short_time(t: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| {
            d.with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string()
        })
        .unwrap_or_else(|_| t.to_string())
}

/// The payload as text: JSON compact, text as is, binary as text if it is UTF-8.
fn payload(ev: &Value) -> String {
    if let Some(d) = ev.get("data") {
        return match d {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
    }
    if let Some(b) = ev.get("data_base64").and_then(Value::as_str) {
        return match base64::engine::general_purpose::STANDARD.decode(b) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(s) if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => s,
                Ok(s) => format!("<{} bytes, base64 {b}>", s.len()),
                Err(e) => format!("<{} bytes, base64 {b}>", e.as_bytes().len()),
            },
            Err(_) => format!("<base64 {b}>"),
        };
    }
    String::new()
}

/// One event, one line: time, device, channel (and the type when it is not telemetry), payload.
pub fn pretty(ev: &Value) -> String {
    let s = |k: &str| ev[k].as_str().unwrap_or("-").to_string();
    let ty = ev["type"].as_str().unwrap_or("");
    let channel = match ty {
        "io.drogue.event.v1" | "" => s("subject"),
        t => format!(
            "{} [{}]",
            s("subject"),
            t.trim_start_matches("io.drogue.").trim_end_matches(".v1")
        ),
    };
    let line = format!(
        "{}  {}  {}  {}",
        short_time(ev["time"].as_str().unwrap_or("")),
        s("device"),
        channel,
        payload(ev)
    );
    line.replace('\n', "\\n")
}

fn closed_by_server(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> String {
    match frame {
        Some(f) if !f.reason.is_empty() => format!(
            "the server closed the stream: {} (code {})",
            f.reason,
            u16::from(f.code)
        ),
        Some(f) => format!("the server closed the stream (code {})", u16::from(f.code)),
        None => "the server closed the stream".to_string(),
    }
}

/// Opens the WebSocket with the context's credentials; a refusal is the API's error.
async fn connect(api: &Api, url: &url::Url) -> Result<WebSocket> {
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| CliError::Other(format!("invalid WebSocket URL {url}: {e}")))?;
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", api.ctx.user, api.ctx.token));
    let auth = HeaderValue::from_str(&format!("Basic {basic}"))
        .map_err(|_| CliError::Other("the stored credentials are not a valid header".into()))?;
    req.headers_mut().insert(AUTHORIZATION, auth);
    req.headers_mut().insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("drover-cli/", env!("CARGO_PKG_VERSION"))),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(resp) => {
                let body = resp
                    .body()
                    .as_deref()
                    .map(|b| {
                        serde_json::from_slice(b).unwrap_or_else(|_| {
                            Value::String(String::from_utf8_lossy(b).into_owned())
                        })
                    })
                    .unwrap_or(Value::Null);
                api_error(resp.status(), &body)
            }
            e => CliError::Other(format!("cannot connect to {url}: {e}")),
        })?;
    Ok(ws)
}

/// The status line on stderr: what is streamed.
fn announce(a: &StreamArgs) {
    let filter = match (&a.channel, &a.device) {
        (None, None) => String::new(),
        (Some(c), None) => format!(", channel {c}"),
        (None, Some(d)) => format!(", device {d}"),
        (Some(c), Some(d)) => format!(", channel {c}, device {d}"),
    };
    note(&format!(
        "Streaming events of app {}{filter}{} (Ctrl+C to stop)",
        a.app,
        a.group
            .as_ref()
            .map(|g| format!(", group {g}"))
            .unwrap_or_default()
    ));
}

/// The next event's text; `None` when the server ended the stream well (a normal close).
async fn next_text(api: &Api, ws: &mut WebSocket) -> Result<Option<String>> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(Some(t.as_str().to_string())),
            Some(Ok(Message::Close(frame))) => {
                if frame.as_ref().map(|f| f.code) == Some(CloseCode::Normal) {
                    return Ok(None);
                }
                return Err(CliError::Other(closed_by_server(frame)));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                return Err(CliError::Other(format!(
                    "the stream from {} broke: {e}",
                    api.ctx.url
                )))
            }
            None => {
                return Err(CliError::Other(format!(
                    "the connection to {} ended",
                    api.ctx.url
                )))
            }
        }
    }
}

/// Prints one event: as sent (`--raw`, `-o json`), as a YAML document, or as one line.
fn print_event(a: &StreamArgs, format: Format, text: &str, ev: &Value) -> Result<()> {
    if a.raw || format == Format::Json {
        line(text.trim_end())
    } else if format == Format::Yaml {
        write_stdout(format!("---\n{}", to_yaml(ev)).as_bytes())
    } else {
        line(&pretty(ev))
    }
}

pub async fn stream(api: &Api, format: Format, a: StreamArgs) -> Result<()> {
    let url = ws_url(api, &a).await?;
    let mut ws = connect(api, &url).await?;
    announce(&a);
    let mut seen = 0u64;
    if a.count == Some(0) {
        let _ = ws.close(None).await;
        return Ok(());
    }
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let text = tokio::select! {
            t = next_text(api, &mut ws) => t?,
            _ = &mut ctrl_c => {
                let _ = ws.close(None).await;
                return Ok(());
            }
        };
        let Some(text) = text else {
            return Ok(());
        };
        let ev: Value = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
        if let Some(d) = &a.device {
            if ev["device"].as_str() != Some(d.as_str()) {
                continue;
            }
        }
        print_event(&a, format, &text, &ev)?;
        seen += 1;
        if a.count.is_some_and(|n| seen >= n) {
            let _ = ws.close(None).await;
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pretty_lines() {
        let ev = json!({"type": "io.drogue.event.v1", "time": "2024-05-01T12:00:00.123456Z",
            "device": "dev1", "subject": "telemetry", "data": {"temp": 21}});
        assert_eq!(
            pretty(&ev),
            "2024-05-01T12:00:00.123Z  dev1  telemetry  {\"temp\":21}"
        );
        let ev = json!({"type": "io.drogue.connection.v1", "time": "x", "device": "d",
            "subject": "connection", "data_base64": "aGk="});
        assert_eq!(pretty(&ev), "x  d  connection [connection]  hi");
        let ev = json!({"time": "x", "device": "d", "subject": "c", "data_base64": "AAE="});
        assert_eq!(pretty(&ev), "x  d  c  <2 bytes, base64 AAE=>");
        let ev = json!({"time": "x", "device": "d", "subject": "c", "data": "two\nlines"});
        assert_eq!(pretty(&ev), "x  d  c  two\\nlines");
    }
}
