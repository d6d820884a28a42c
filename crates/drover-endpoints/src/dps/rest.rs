//! DPS's REST device API on the HTTP(S) device listeners:
//! `PUT /{idScope}/registrations/{registrationId}/register` (body `{"registrationId",
//! "payload"?}`) → 202 with the operation, `Retry-After` and `Location`;
//! `GET /{idScope}/registrations/{registrationId}/operations/{operationId}` → 200 with the
//! registration; `POST /{idScope}/registrations/{registrationId}` → 200 with the registration
//! state. Authorization: the registration's SAS token. Errors: DPS's error body.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::Value;

use super::service::{Attested, DpsError, Provisioning, RETRY_AFTER};

/// The routes, served by `service`.
pub fn router(service: Arc<Provisioning>) -> Router {
    Router::new()
        .route("/{scope}/registrations/{id}/register", put(register))
        .route(
            "/{scope}/registrations/{id}/operations/{op}",
            get(operation),
        )
        .route("/{scope}/registrations/{id}", post(lookup))
        .with_state(service)
}

fn error(e: DpsError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(e.body())).into_response()
}

async fn attest(
    service: &Provisioning,
    scope: &str,
    id: &str,
    headers: &HeaderMap,
) -> Result<Attested, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            error(DpsError {
                status: 401,
                error_code: 401002,
                message: "Authorization: a SharedAccessSignature is needed".into(),
            })
        })?;
    service.attest(scope, id, token).await.map_err(|e| {
        tracing::info!(registration = %id, "provisioning refused: {}", e.message);
        error(e)
    })
}

async fn register(
    State(service): State<Arc<Provisioning>>,
    Path((scope, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let a = match attest(&service, &scope, &id, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return error(DpsError {
                    status: 400,
                    error_code: 400004,
                    message: format!("the registration body is not JSON: {e}"),
                })
            }
        }
    };
    let payload = body.get("payload").filter(|p| !p.is_null()).cloned();
    match service.register(&a, payload).await {
        Ok(r) => {
            let mut resp =
                (StatusCode::ACCEPTED, Json(Provisioning::assigning(&r))).into_response();
            let h = resp.headers_mut();
            h.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER));
            let location = format!("/{scope}/registrations/{id}/operations/{}", r.operation_id);
            if let Ok(v) = HeaderValue::from_str(&location) {
                h.insert(header::LOCATION, v);
            }
            resp
        }
        Err(e) => error(e),
    }
}

async fn operation(
    State(service): State<Arc<Provisioning>>,
    Path((scope, id, op)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = attest(&service, &scope, &id, &headers).await {
        return r;
    }
    match service.operation(&id, &op).await {
        Ok(r) => Json(service.status(&r)).into_response(),
        Err(e) => error(e),
    }
}

async fn lookup(
    State(service): State<Arc<Provisioning>>,
    Path((scope, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = attest(&service, &scope, &id, &headers).await {
        return r;
    }
    match service.registration(&id).await {
        Ok(r) => Json(service.registration_state(&r)).into_response(),
        Err(e) => error(e),
    }
}
