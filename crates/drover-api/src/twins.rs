//! `/api/registry/v1alpha1/apps/{app}/devices/{device}/twin`: a device's twin — read it, patch
//! its desired properties (JSON merge patch), replace its tags. Reading needs the reader role,
//! writing the manager role, as for the device.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use drover_model::twin::Twin;
use serde_json::{Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorInformation};
use crate::extract::{JsonBody, Path};
use crate::params::DevicePath;
use crate::ApiState;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(get_twin))
        .routes(routes!(patch_desired))
        .routes(routes!(replace_tags))
}

const NOT_FOUND_DEVICE: &str =
    "NotFound: no such device, or no such application, or the caller may not read it";
const FORBIDDEN_WRITE: &str =
    "AuthenticationError: the caller may read the application but not write to it";

/// The twin, with `ETag: "<desiredVersion>"` (what `If-Match` on a desired patch compares).
fn twin_response(twin: Twin) -> Response {
    let etag = HeaderValue::from_str(&format!("\"{}\"", twin.desired_version));
    let mut resp = Json(twin).into_response();
    if let Ok(etag) = etag {
        resp.headers_mut().insert(header::ETAG, etag);
    }
    resp
}

/// The desired version `If-Match` asks for: `"3"`, `3`, `W/"3"`; `*` or no header: any.
fn if_match(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::BadRequest(
            "If-Match must be the desired properties' version, e.g. \"3\" (or *)".into(),
        )
    };
    let v = v.to_str().map_err(|_| bad())?.trim();
    if v == "*" {
        return Ok(None);
    }
    let v = v.strip_prefix("W/").unwrap_or(v);
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v);
    v.parse().map(Some).map_err(|_| bad())
}

/// Read a device's twin: `desired` and `reported` with their versions, and `tags`.
#[utoipa::path(get, path = "/apps/{app}/devices/{device}/twin", tag = "twins", params(DevicePath),
    responses((status = 200, description = "The twin; `ETag` is the desired properties' version", body = Twin),
        (status = 404, description = NOT_FOUND_DEVICE, body = ErrorInformation)))]
async fn get_twin(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(DevicePath { app, device }): Path<DevicePath>,
) -> ApiResult<Response> {
    Ok(twin_response(s.registry.twin(&who, &app, &device).await?))
}

/// Change a device's desired properties with a JSON merge patch (RFC 7386: `null` deletes a
/// member, objects merge, anything else replaces). The desired version moves when something
/// changed; `If-Match: "<version>"` refuses the patch unless the desired properties are at
/// that version. Limits: 32 KiB of JSON, 10 levels, keys of at most 1 KiB without `.`, `$`,
/// spaces or control characters, strings of at most 4 KiB, integers within ±2^52.
#[utoipa::path(patch, path = "/apps/{app}/devices/{device}/twin/desired", tag = "twins", params(DevicePath,
        ("If-Match" = Option<String>, Header, description = "Only if the desired properties are at this version (`\"3\"`)")),
    request_body(content = Object, description = "A JSON merge patch", content_type = "application/merge-patch+json"),
    responses((status = 200, description = "The twin after the patch", body = Twin),
        (status = 400, description = "BadRequest: not a JSON object, or a key, value, depth or size over the limits", body = ErrorInformation),
        (status = 403, description = FORBIDDEN_WRITE, body = ErrorInformation),
        (status = 404, description = NOT_FOUND_DEVICE, body = ErrorInformation),
        (status = 409, description = "OptimisticLockFailed: the desired properties are not at the version If-Match names", body = ErrorInformation)))]
async fn patch_desired(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(DevicePath { app, device }): Path<DevicePath>,
    headers: HeaderMap,
    JsonBody(patch): JsonBody<Map<String, Value>>,
) -> ApiResult<Response> {
    let expected = if_match(&headers)?;
    let update = s
        .registry
        .patch_desired(&who, &app, &device, &patch, expected)
        .await?;
    Ok(twin_response(update.twin))
}

/// Replace a device's tags (service-side labels devices never see; 8 KiB of JSON at most).
#[utoipa::path(put, path = "/apps/{app}/devices/{device}/twin/tags", tag = "twins", params(DevicePath),
    request_body(content = Object, description = "The new tags"),
    responses((status = 200, description = "The twin with the new tags", body = Twin),
        (status = 400, description = "BadRequest: not a JSON object, or over the limits", body = ErrorInformation),
        (status = 403, description = FORBIDDEN_WRITE, body = ErrorInformation),
        (status = 404, description = NOT_FOUND_DEVICE, body = ErrorInformation)))]
async fn replace_tags(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(DevicePath { app, device }): Path<DevicePath>,
    JsonBody(tags): JsonBody<Map<String, Value>>,
) -> ApiResult<Response> {
    let update = s.registry.replace_tags(&who, &app, &device, tags).await?;
    Ok(twin_response(update.twin))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::IF_MATCH, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn if_match_forms() {
        assert_eq!(if_match(&HeaderMap::new()).unwrap(), None);
        assert_eq!(if_match(&headers("*")).unwrap(), None);
        assert_eq!(if_match(&headers("\"3\"")).unwrap(), Some(3));
        assert_eq!(if_match(&headers("W/\"12\"")).unwrap(), Some(12));
        assert_eq!(if_match(&headers("7")).unwrap(), Some(7));
        assert!(if_match(&headers("\"x\"")).is_err());
        assert!(if_match(&headers("-1")).is_err());
    }
}
