//! Health of the node for load balancers and orchestrators: `/health/live` (the process
//! answers) and `/health/ready` (its backends answer: registry, event log, command routing).
//! Neither needs credentials; neither tells more than which backend fails and why.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ApiState;

/// One backend's answer to a readiness probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `registry`, `eventLog`, `commandRouting`, ...
    pub name: String,
    /// `None` when healthy, else why not.
    pub problem: Option<String>,
}

impl Check {
    pub fn ok(name: &str) -> Self {
        Self {
            name: name.into(),
            problem: None,
        }
    }

    pub fn failed(name: &str, problem: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            problem: Some(problem.into()),
        }
    }
}

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
}

/// The process is up and serving HTTP.
#[utoipa::path(get, path = "/health/live", tag = "discovery",
    responses((status = 200, description = "Alive")))]
async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "live" }))
}

/// The node can do its work: every backend answers (200), else 503 naming the failing ones.
/// A node shutting down is not ready.
#[utoipa::path(get, path = "/health/ready", tag = "discovery",
    responses((status = 200, description = "Ready"), (status = 503, description = "A backend does not answer, or the node is stopping")))]
async fn ready(State(state): State<ApiState>) -> Response {
    let mut checks = match &state.settings.readiness {
        Some(probe) => probe().await,
        None => Vec::new(),
    };
    if *state.shutdown.borrow() {
        checks.push(Check::failed("node", "shutting down"));
    }
    let ready = checks.iter().all(|c| c.problem.is_none());
    let mut detail = Map::new();
    for c in checks {
        detail.insert(c.name, json!(c.problem.unwrap_or_else(|| "ok".to_string())));
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": detail,
    });
    (status, Json(body)).into_response()
}
