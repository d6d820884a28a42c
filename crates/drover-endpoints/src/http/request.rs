//! What a device's HTTP request says, read without touching anything: the query, the channel,
//! the credentials, the content type and whether the payload fits it. Every byte of a request
//! the endpoint looks at passes through here (and through the fuzz targets in `fuzz/`).

use axum::http::{header, HeaderMap, StatusCode};
use base64::Engine as _;
use drover_auth::device::DeviceCredentials;
use serde::Deserialize;

use super::error::{bad_request, error, HttpError};
use crate::event::validate_channel;
use drover_model::event::is_json;

/// The query of `POST /v1/{channel}`.
#[derive(Debug, Default, Deserialize)]
pub struct PublishQuery {
    pub application: Option<String>,
    pub device: Option<String>,
    pub data_schema: Option<String>,
    #[serde(rename = "as")]
    pub as_device: Option<String>,
    pub ct: Option<u64>,
    #[serde(rename = "commandTimeout")]
    pub command_timeout: Option<u64>,
}

/// The query of `POST /command-reply/{id}`.
#[derive(Debug, Default, Deserialize)]
pub struct ReplyQuery {
    pub status: Option<u16>,
    pub application: Option<String>,
    pub device: Option<String>,
}

/// A telemetry request, read.
#[derive(Debug)]
pub struct PublishRequest {
    pub channel: String,
    pub query: PublishQuery,
    pub credentials: DeviceCredentials,
    /// The declared content type, if it is readable.
    pub content_type: Option<String>,
}

/// A command reply, read.
#[derive(Debug)]
pub struct ReplyRequest {
    pub status: u16,
    pub credentials: DeviceCredentials,
    pub content_type: Option<String>,
}

/// Reads a query string as `T` (a missing query is the empty one).
fn query<T: for<'de> Deserialize<'de>>(raw: Option<&str>) -> Result<T, HttpError> {
    serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| bad_request(format!("invalid query: {e}")))
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl PublishRequest {
    /// Reads `POST /v1/{channel}?{raw_query}`; `client_certificates` are those the TLS handshake
    /// proved the client holds (used when there is no `Authorization`).
    pub fn parse(
        channel: String,
        raw_query: Option<&str>,
        headers: &HeaderMap,
        client_certificates: Option<&[Vec<u8>]>,
    ) -> Result<PublishRequest, HttpError> {
        let q: PublishQuery = query(raw_query)?;
        validate_channel(&channel).map_err(|why| bad_request(format!("invalid channel: {why}")))?;
        let credentials = match (basic_credentials(headers)?, client_certificates) {
            (Some((username, password)), _) => DeviceCredentials::Password {
                username,
                password,
                application: q.application.clone(),
                device: q.device.clone(),
            },
            (None, Some(chain)) => DeviceCredentials::Certificate {
                chain: chain.to_vec(),
                application: q.application.clone(),
            },
            (None, None) => {
                return Err(error(
                    StatusCode::UNAUTHORIZED,
                    "AuthenticationError",
                    "credentials required: HTTP Basic '<device>@<application>:<password>' or a TLS client certificate",
                ))
            }
        };
        Ok(PublishRequest {
            channel,
            query: q,
            credentials,
            content_type: content_type(headers),
        })
    }

    /// How long to wait for a command (`ct` / `commandTimeout`), at most `max` seconds.
    pub fn command_wait(&self, max: u64) -> u64 {
        self.query
            .ct
            .or(self.query.command_timeout)
            .unwrap_or(0)
            .min(max)
    }
}

impl ReplyRequest {
    /// Reads `POST /command-reply/{id}?{raw_query}`.
    pub fn parse(raw_query: Option<&str>, headers: &HeaderMap) -> Result<ReplyRequest, HttpError> {
        let q: ReplyQuery = query(raw_query)?;
        let status = q.status.unwrap_or(200);
        if !(100..600).contains(&status) {
            return Err(bad_request("status must be 100..599"));
        }
        let Some((username, password)) = basic_credentials(headers)? else {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "AuthenticationError",
                "credentials required",
            ));
        };
        Ok(ReplyRequest {
            status,
            credentials: DeviceCredentials::Password {
                username,
                password,
                application: q.application,
                device: q.device,
            },
            content_type: content_type(headers),
        })
    }
}

/// HTTP Basic credentials: `None` without an `Authorization` header.
pub fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, HttpError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(bad_request("more than one Authorization header"));
    }
    let bad = || {
        error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationError",
            "malformed Basic credentials: expected base64 of 'user:password'",
        )
    };
    let v = v.to_str().map_err(|_| bad())?;
    let (scheme, rest) = v.split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationError",
            format!("unsupported authorization scheme '{scheme}': devices use Basic"),
        ));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let (u, p) = decoded.split_once(':').ok_or_else(bad)?;
    Ok(Some((u.to_string(), p.to_string())))
}

/// A payload declared JSON must be JSON (406 otherwise).
pub fn check_payload(content_type: Option<&str>, body: &[u8]) -> Result<(), HttpError> {
    if let Some(ct) = content_type.filter(|ct| is_json(ct)) {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            return Err(error(
                StatusCode::NOT_ACCEPTABLE,
                "NotAcceptable",
                format!("content type '{ct}' but the payload is not valid JSON: {e}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: Option<&str>, ct: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(a).expect("header"),
            );
        }
        if let Some(c) = ct {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(c).expect("header"),
            );
        }
        h
    }

    #[test]
    fn publish_requests_are_read() {
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("d@app:pw")
        );
        let r = PublishRequest::parse(
            "telemetry".into(),
            Some("ct=90&data_schema=s"),
            &headers(Some(&basic), Some("application/json")),
            None,
        )
        .expect("read");
        assert_eq!(r.command_wait(60), 60);
        assert_eq!(r.query.data_schema.as_deref(), Some("s"));
        assert!(
            matches!(r.credentials, DeviceCredentials::Password { ref username, .. } if username == "d@app")
        );
        let e = PublishRequest::parse("t".into(), Some("ct=x"), &headers(Some(&basic), None), None)
            .expect_err("bad query");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = PublishRequest::parse("t".into(), None, &headers(None, None), None)
            .expect_err("no credentials");
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        let e = PublishRequest::parse("a+b".into(), None, &headers(Some(&basic), None), None)
            .expect_err("bad channel");
        assert!(e.message.contains("invalid channel"));
    }

    #[test]
    fn payloads_declared_json_must_be_json() {
        assert!(check_payload(Some("application/json"), b"{\"a\":1}").is_ok());
        assert!(check_payload(Some("text/plain"), b"{").is_ok());
        let e = check_payload(Some("application/json; charset=utf-8"), b"{").expect_err("406");
        assert_eq!(e.status, StatusCode::NOT_ACCEPTABLE);
    }
}
