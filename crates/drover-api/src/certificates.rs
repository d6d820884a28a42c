//! `/api/certificates/v1alpha1`: the installation's device CA and the certificates it issues.
//!
//! - `GET /ca` (PEM) and `GET /crl` (DER, or PEM with `?format=pem`): public, for clients and
//!   devices that check certificates.
//! - `POST /apps/{app}/devices/{device}` with a CSR (PEM) as the body: a certificate for the
//!   device (manager role on the application), 201 with the certificate and its fingerprint.
//! - `GET /apps/{app}` (reader role): the certificates issued for the application's devices;
//!   `GET /apps/{app}/{fingerprint}`: one; `POST /apps/{app}/{fingerprint}/revoke` (manager).
//! - `POST /apps/{app}/revocations` (manager): revokes a certificate chained to the
//!   application's own trust anchors, by fingerprint, serial or the certificate itself;
//!   `GET /apps/{app}/revocations`.
//!
//! A revocation takes effect at the next TLS handshake on every node and ends the device's live
//! sessions (the registry emits a device change every node follows).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use drover_auth::ca::{CaError, DeviceCa, RevokedSerial};
use drover_registry::{CertificateRecord, Revocation, RevokedBy};
use serde::Deserialize;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorInformation};
use crate::extract::{JsonBody, Path, Query, RawBody};
use crate::params::{
    app_param, device_name, page_params, path_param, query_param, AppPath, DevicePath,
};
use crate::ApiState;

pub const BASE: &str = "/api/certificates/v1alpha1";

/// The device CA as the API uses it.
pub struct CaSettings {
    pub ca: DeviceCa,
    /// The longest validity of an issued certificate (and the default).
    pub max_validity: Duration,
}

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(ca_certificate))
        .routes(routes!(crl))
        .routes(routes!(issue))
        .routes(routes!(list))
        .routes(routes!(get_certificate))
        .routes(routes!(revoke))
        .routes(routes!(revoke_external, list_revocations))
}

const NOT_FOUND_APP: &str = crate::openapi::NOT_FOUND_APP;
const FORBIDDEN_WRITE: &str =
    "AuthenticationError: the caller may read the application but not write to it";

fn ca(s: &ApiState) -> ApiResult<&Arc<CaSettings>> {
    s.device_ca
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("the device CA is not available on this node".into()))
}

fn ca_error(e: CaError) -> ApiError {
    match e {
        CaError::BadRequest(m) => ApiError::BadRequest(m),
        e @ CaError::Unusable(_) => ApiError::Unavailable(e.to_string()),
    }
}

fn pem(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/x-pem-file")], body).into_response()
}

/// The device CA's certificate (PEM): what clients trust to verify device certificates Drover
/// issued.
#[utoipa::path(get, path = "/ca", tag = "certificates", security(()),
    responses((status = 200, description = "The CA certificate", content_type = "application/x-pem-file", body = String),
        (status = 503, description = "The device CA is not available", body = ErrorInformation)))]
async fn ca_certificate(State(s): State<ApiState>) -> ApiResult<Response> {
    Ok(pem(ca(&s)?.ca.cert_pem().to_string()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CrlQuery {
    /// `pem` for PEM; DER otherwise.
    format: Option<String>,
}

/// The certificate revocation list of the device CA: every revoked certificate it issued that
/// has not expired. DER (`application/pkix-crl`), or PEM with `?format=pem`; valid for a day.
#[utoipa::path(get, path = "/crl", tag = "certificates", security(()), params(CrlQuery),
    responses((status = 200, description = "The CRL", content_type = "application/pkix-crl", body = Vec<u8>),
        (status = 503, description = "The device CA or the registry is not available", body = ErrorInformation)))]
async fn crl(State(s): State<ApiState>, Query(q): Query<CrlQuery>) -> ApiResult<Response> {
    let as_pem = match q.format.as_deref() {
        None | Some("der") => false,
        Some("pem") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format '{other}': use 'pem' or 'der'"
            )))
        }
    };
    let settings = ca(&s)?;
    let revoked: Vec<RevokedSerial> = s
        .registry
        .revoked_serials()
        .await?
        .into_iter()
        .map(|(serial, revoked_at)| RevokedSerial { serial, revoked_at })
        .collect();
    // The CRL number moves with time (RFC 5280 asks only that it increase).
    let number = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
    let (der, text) = settings.ca.crl(&revoked, number).map_err(ca_error)?;
    if as_pem {
        return Ok(pem(text));
    }
    Ok(([(header::CONTENT_TYPE, "application/pkix-crl")], der).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct IssueQuery {
    /// Days the certificate is valid (at most the installation's `device_cert_days`, which is
    /// also the default).
    days: Option<u32>,
}

/// Issue a certificate for a device from a certificate signing request (PEM: `-----BEGIN
/// CERTIFICATE REQUEST-----`). Only the CSR's public key is used — RSA of 2048 bits or more, or
/// EC P-256/P-384 — and its signature checked; the certificate names the device as
/// `CN=<device>, O=<app>`, is for TLS client authentication, and authenticates the device on
/// every TLS listener. Needs the manager role.
#[utoipa::path(post, path = "/apps/{app}/devices/{device}", tag = "certificates", params(DevicePath, IssueQuery),
    request_body(content = String, description = "The CSR, PEM", content_type = "application/pkcs10"),
    responses((status = 201, description = "The certificate", body = CertificateRecord),
        (status = 400, description = "BadRequest: not a CSR, a bad signature, a weak or unsupported key, or days out of range", body = ErrorInformation),
        (status = 403, description = FORBIDDEN_WRITE, body = ErrorInformation),
        (status = 404, description = "NotFound: no such device or application, or the caller may not read it", body = ErrorInformation),
        (status = 409, description = "Conflict: the device is being deleted", body = ErrorInformation)))]
async fn issue(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(DevicePath { app, device }): Path<DevicePath>,
    Query(q): Query<IssueQuery>,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let settings = ca(&s)?;
    let max_days = settings.max_validity.as_secs() / 86_400;
    let days = u64::from(
        q.days
            .unwrap_or(u32::try_from(max_days).unwrap_or(u32::MAX)),
    );
    if days == 0 || days > max_days {
        return Err(ApiError::BadRequest(format!(
            "days must be 1 to {max_days} (the installation's device_cert_days)"
        )));
    }
    // Who may write, and that the device exists, before anything is signed.
    s.registry
        .authorize(&who, &app, drover_model::Permission::Write)
        .await?;
    s.registry.get_device(&who, &app, &device).await?;
    let csr = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("the CSR must be PEM text".into()))?;
    let issued = settings
        .ca
        .issue(csr, &app, &device, Duration::from_secs(days * 86_400))
        .map_err(ca_error)?;
    let record = CertificateRecord {
        fingerprint: issued.fingerprint,
        serial: issued.serial,
        application: app.clone(),
        device,
        subject: issued.subject,
        not_before: issued.not_before,
        not_after: issued.not_after,
        issued: chrono::Utc::now(),
        revoked: None,
        certificate: issued.pem,
    };
    let record = s.registry.record_certificate(&who, &app, record).await?;
    tracing::info!(app = %app, device = %record.device, fingerprint = %record.fingerprint, user = who.name(), "issued a device certificate");
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    device: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

impl IntoParams for ListQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let mut params = vec![query_param(
            "device",
            "Only this device's certificates",
            false,
            device_name(),
        )];
        params.extend(page_params());
        params
    }
}

/// The certificates issued for an application's devices, oldest first (reader role).
#[utoipa::path(get, path = "/apps/{app}", tag = "certificates", params(AppPath, ListQuery),
    responses((status = 200, description = "The certificates", body = Vec<CertificateRecord>),
        (status = 404, description = NOT_FOUND_APP, body = ErrorInformation)))]
async fn list(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(AppPath { app }): Path<AppPath>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<CertificateRecord>>> {
    let items = s
        .registry
        .certificates(
            &who,
            &app,
            q.device.as_deref(),
            q.limit,
            q.offset.unwrap_or(0),
        )
        .await?;
    Ok(Json(items))
}

/// `{app}/{fingerprint}`.
#[derive(Debug, Deserialize)]
struct CertificatePath {
    app: String,
    fingerprint: String,
}

impl IntoParams for CertificatePath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            app_param(),
            path_param(
                "fingerprint",
                "SHA-256 of the certificate (DER), lowercase hex",
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some("^[0-9a-f]{64}$"))
                    .build(),
            ),
        ]
    }
}

/// An issued certificate of the application (reader role).
#[utoipa::path(get, path = "/apps/{app}/{fingerprint}", tag = "certificates", params(CertificatePath),
    responses((status = 200, description = "The certificate", body = CertificateRecord),
        (status = 404, description = "NotFound: no such certificate or application, or the caller may not read it", body = ErrorInformation)))]
async fn get_certificate(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(CertificatePath { app, fingerprint }): Path<CertificatePath>,
) -> ApiResult<Json<CertificateRecord>> {
    Ok(Json(
        s.registry.certificate(&who, &app, &fingerprint).await?,
    ))
}

/// Revoke an issued certificate (manager role): refused at the next TLS handshake on every
/// node, and the device's live sessions end within a second. Revoking again changes nothing.
#[utoipa::path(post, path = "/apps/{app}/{fingerprint}/revoke", tag = "certificates", params(CertificatePath),
    responses((status = 200, description = "The revoked certificate", body = CertificateRecord),
        (status = 403, description = FORBIDDEN_WRITE, body = ErrorInformation),
        (status = 404, description = "NotFound: no such certificate or application, or the caller may not read it", body = ErrorInformation)))]
async fn revoke(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(CertificatePath { app, fingerprint }): Path<CertificatePath>,
) -> ApiResult<Json<CertificateRecord>> {
    let record = s
        .registry
        .revoke_certificate(&who, &app, &fingerprint)
        .await?;
    tracing::info!(app = %app, device = %record.device, fingerprint = %fingerprint, user = who.name(), "revoked a device certificate");
    Ok(Json(record))
}

/// A certificate of the application's own trust anchors to revoke: by `fingerprint` (SHA-256,
/// hex), `serial` (hex) or the `certificate` itself (PEM); `device` names the device whose
/// sessions end (found from the certificate's common name when the certificate is given).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RevocationRequest {
    fingerprint: Option<String>,
    serial: Option<String>,
    certificate: Option<String>,
    device: Option<String>,
}

/// Revoke a certificate chained to the application's own trust anchors (manager role): refused
/// at the next TLS handshake on every node, and the device's live sessions end.
#[utoipa::path(post, path = "/apps/{app}/revocations", tag = "certificates", params(AppPath),
    request_body = RevocationRequest,
    responses((status = 201, description = "The revocation", body = Revocation),
        (status = 400, description = "BadRequest: not exactly one of fingerprint, serial and certificate, a malformed value, or no device", body = ErrorInformation),
        (status = 403, description = FORBIDDEN_WRITE, body = ErrorInformation),
        (status = 404, description = "NotFound: no such application or device, or the caller may not read it", body = ErrorInformation)))]
async fn revoke_external(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(AppPath { app }): Path<AppPath>,
    JsonBody(r): JsonBody<RevocationRequest>,
) -> ApiResult<Response> {
    let (kind, value, device) = revocation_target(r)?;
    let revocation = s
        .registry
        .revoke_external(&who, &app, kind, &value, &device)
        .await?;
    tracing::info!(app = %app, device = %device, kind = kind.as_str(), value = %value, user = who.name(), "revoked a certificate of the application's trust anchors");
    Ok((StatusCode::CREATED, Json(revocation)).into_response())
}

/// What a revocation request names: by what, which value, and the device.
fn revocation_target(r: RevocationRequest) -> ApiResult<(RevokedBy, String, String)> {
    let hex = |what: &str, v: String, len: Option<usize>| {
        let v = v.trim().to_ascii_lowercase().replace(':', "");
        let ok = !v.is_empty()
            && v.len() <= 128
            && v.bytes().all(|b| b.is_ascii_hexdigit())
            && len.is_none_or(|l| v.len() == l);
        ok.then_some(v).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{what} must be hexadecimal{}",
                match len {
                    Some(l) => format!(" ({l} digits)"),
                    None => String::new(),
                }
            ))
        })
    };
    let named = |device: Option<String>| {
        device.ok_or_else(|| {
            ApiError::BadRequest(
                "device is needed: the device whose sessions end (or give the certificate)".into(),
            )
        })
    };
    match (r.fingerprint, r.serial, r.certificate) {
        (Some(f), None, None) => Ok((
            RevokedBy::Fingerprint,
            hex("fingerprint", f, Some(64))?,
            named(r.device)?,
        )),
        (None, Some(s), None) => {
            // As certificates print it: no leading zeros.
            let serial = hex("serial", s, None)?;
            let serial = match serial.trim_start_matches('0') {
                "" => "0".to_string(),
                s => s.to_string(),
            };
            Ok((RevokedBy::Serial, serial, named(r.device)?))
        }
        (None, None, Some(pem)) => {
            let (fingerprint, id) = drover_auth::ca::identify_pem(&pem)
                .map_err(|e| ApiError::BadRequest(format!("certificate: {e}")))?;
            let device = match r.device.or(id.common_name) {
                Some(d) => d,
                None => {
                    return Err(ApiError::BadRequest(
                        "the certificate has no common name: give device".into(),
                    ))
                }
            };
            Ok((RevokedBy::Fingerprint, fingerprint, device))
        }
        _ => Err(ApiError::BadRequest(
            "give exactly one of fingerprint, serial and certificate".into(),
        )),
    }
}

/// The revocations of the application's own certificates, newest first (reader role).
#[utoipa::path(get, path = "/apps/{app}/revocations", tag = "certificates", params(AppPath),
    responses((status = 200, description = "The revocations", body = Vec<Revocation>),
        (status = 404, description = NOT_FOUND_APP, body = ErrorInformation)))]
async fn list_revocations(
    State(s): State<ApiState>,
    Caller(who): Caller,
    Path(AppPath { app }): Path<AppPath>,
) -> ApiResult<Json<Vec<Revocation>>> {
    Ok(Json(s.registry.revocations(&who, &app).await?))
}
