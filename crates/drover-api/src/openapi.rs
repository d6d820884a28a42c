//! The OpenAPI document: what the handlers' `#[utoipa::path]` attributes say, plus — written once
//! here — the answers every operation of a kind can give, whatever the handler does:
//!
//! | operations | answers |
//! |---|---|
//! | every one | 503 (a backend does not answer; the listener is at its connection cap) |
//! | secured (no `security(())` on the handler) | 400 (more than one credential), 401, 429 (address locked out after failed authentications) |
//! | with a request body | 400, 408 (body timeout), 413 (`api_body_limit`) |
//! | with parameters | 400 |
//!
//! Handlers document what only they answer (403, 404, 409, …). A handler that needs no
//! credentials says so with `security(())`; its operation is marked public (`security: []`).

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi};

use crate::error::ErrorInformation;

/// The answer of every operation on an application the caller may not read.
pub(crate) const NOT_FOUND_APP: &str =
    "NotFound: no such application, or the caller may not read it (never 403 for that)";

#[derive(OpenApi)]
#[openapi(
    info(title = "Drover management API", description = "Registry, admin, tokens and discovery; wire-compatible with Drogue Cloud."),
    components(schemas(ErrorInformation)),
    modifiers(&Security),
    security(("basic" = []), ("bearer" = [])),
    tags((name = "registry"), (name = "admin"), (name = "tokens"), (name = "discovery"), (name = "integrations"), (name = "commands"), (name = "certificates"), (name = "twins"), (name = "provisioning"), (name = "webhooks"))
)]
pub(crate) struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Adds the answers common to kinds of operations (see the module docs) to the document of the
/// routes; run once on the assembled document.
pub(crate) struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for op in ops.into_iter().flatten() {
                complete(op);
            }
        }
    }
}

/// Whether the handler declared that it needs no credentials (`security(())`, i.e. one empty
/// requirement). Such an operation is marked `security: []` (public), overriding the global one.
fn mark_public(op: &mut Operation) -> bool {
    let public = op
        .security
        .as_ref()
        .is_some_and(|s| s.iter().all(|r| *r == SecurityRequirement::default()));
    if public {
        op.security = Some(Vec::new());
    }
    public
}

fn complete(op: &mut Operation) {
    let secured = !mark_public(op);
    let has_body = op.request_body.is_some();
    let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());

    let mut bad_request = Vec::new();
    if has_params {
        bad_request.push("a path or query parameter is invalid");
    }
    if has_body {
        bad_request.push("the body is not valid JSON of the documented form or breaks a rule");
    }
    if secured {
        bad_request.push("the request carries more than one credential");
    }
    if !bad_request.is_empty() {
        add(
            op,
            "400",
            &format!("BadRequest: {}.", bad_request.join("; ")),
            &[],
        );
    }
    if secured {
        add(
            op,
            "401",
            "AuthenticationError: no credential, or one that is not valid. Send HTTP Basic \
             `<user>:<access token>` or a Bearer token.",
            &[("WWW-Authenticate", "`Basic realm=\"drover\"`")],
        );
        add(
            op,
            "429",
            "TooManyRequests: too many failed authentications from the caller's address \
             (`auth_throttle`); retry after `Retry-After` seconds.",
            &[("Retry-After", "Seconds until the address may try again")],
        );
    }
    if has_body {
        add(
            op,
            "408",
            "RequestTimeout: the request body did not arrive within `http_body_timeout`.",
            &[],
        );
        add(
            op,
            "413",
            "PayloadTooLarge: the request body is larger than `api_body_limit`.",
            &[],
        );
    }
    let unavailable = if secured {
        "ServiceUnavailable: a backend (registry, event log, identity provider) does not \
         answer, or the API listener is at its connection cap (`api_max_connections`); retry \
         later."
    } else {
        "ServiceUnavailable: the API listener is at its connection cap (`api_max_connections`); \
         retry later."
    };
    add(
        op,
        "503",
        unavailable,
        &[(
            "Retry-After",
            "Seconds to wait before retrying (when known)",
        )],
    );
}

/// Adds an error answer with the `ErrorInformation` body; when the handler documents the status
/// already, its description is kept and the common cause appended, and a body of another form
/// becomes one of the two.
fn add(op: &mut Operation, status: &str, description: &str, headers: &[(&str, &str)]) {
    let entry = op
        .responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| RefOr::T(Response::new("")));
    let RefOr::T(response) = entry else {
        return;
    };
    response.description = match response.description.trim_end_matches('.') {
        "" => description.to_string(),
        own => format!("{own}. Or: {description}"),
    };
    let error_info = RefOr::Ref(Ref::from_schema_name("ErrorInformation"));
    let json = response
        .content
        .entry("application/json".into())
        .or_insert_with(|| Content::new(None::<RefOr<Schema>>));
    json.schema = match json.schema.take() {
        None => Some(error_info),
        Some(s) if s == error_info => Some(s),
        Some(other) => {
            Some(Schema::OneOf(OneOfBuilder::new().item(other).item(error_info).build()).into())
        }
    };
    for (name, text) in headers {
        response
            .headers
            .entry((*name).to_string())
            .or_insert_with(|| {
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(match *name {
                        "Retry-After" => Type::Integer,
                        _ => Type::String,
                    }))
                    .description(Some(*text))
                    .build()
            });
    }
}
