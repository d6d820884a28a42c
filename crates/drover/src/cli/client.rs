//! The HTTP side: requests as the context's user, and API errors mapped to CLI errors.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::config::Context;
use super::CliError;

pub struct Api {
    pub ctx: Context,
    http: reqwest::Client,
}

/// A successful response: status and body (JSON if it parses, else a string; `Null` if empty).
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub raw: Vec<u8>,
}

impl Api {
    pub fn new(ctx: Context) -> Result<Api, CliError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("drover-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Other(format!("cannot create the HTTP client: {e}")))?;
        Ok(Api { ctx, http })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.ctx.url.trim_end_matches('/'), path)
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .basic_auth(&self.ctx.user, Some(&self.ctx.token))
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<Reply, CliError> {
        let resp = req.send().await.map_err(|e| {
            CliError::Other(format!("cannot reach {}: {}", self.ctx.url, root_cause(&e)))
        })?;
        let status = resp.status();
        let raw = resp
            .bytes()
            .await
            .map_err(|e| CliError::Other(format!("reading the response: {e}")))?
            .to_vec();
        let body = if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).into_owned()))
        };
        if status.is_success() {
            return Ok(Reply { status, body, raw });
        }
        Err(api_error(status, &body))
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        Ok(self.send(self.request(Method::GET, path)).await?.body)
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        Ok(self
            .send(self.request(Method::POST, path).json(body))
            .await?
            .body)
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        Ok(self
            .send(self.request(Method::PUT, path).json(body))
            .await?
            .body)
    }

    pub async fn delete(&self, path: &str) -> Result<Value, CliError> {
        Ok(self.send(self.request(Method::DELETE, path)).await?.body)
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

/// `{"error": "<Kind>", "message": "..."}` to an error with the server's message.
pub fn api_error(status: StatusCode, body: &Value) -> CliError {
    let message = body["message"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            body.as_str()
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("request failed")
                .to_string()
        });
    let kind = body["error"].as_str().unwrap_or("");
    let text = if kind.is_empty() {
        format!("{message} (HTTP {})", status.as_u16())
    } else {
        format!("{message} ({kind}, HTTP {})", status.as_u16())
    };
    match status {
        StatusCode::NOT_FOUND => CliError::NotFound(text),
        StatusCode::CONFLICT => CliError::Conflict(text),
        _ => CliError::Other(text),
    }
}

/// Percent-encodes one path segment.
pub fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The items of a list reply (`{"items": [...]}` or a bare array).
pub fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("items") {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}
