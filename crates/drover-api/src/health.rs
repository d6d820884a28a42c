//! Health of the node for load balancers and orchestrators: `/health/live` (the process
//! answers) and `/health/ready` (its backends answer: registry, event log, command routing).
//! Neither needs credentials; neither tells more than which backend fails and why.
//!
//! A backend can also be *degraded*: part of it is out of service (one application's event
//! stream whose files are damaged) while the node serves everything else. That is reported
//! (`"degraded"` lists the checks) but leaves the node ready: a load balancer taking the node
//! out would stop every other tenant's traffic without helping the damaged one, whose data is
//! on this node's disk.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ApiState;

/// One backend's answer to a readiness probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `registry`, `eventLog`, `commandRouting`, ...
    pub name: String,
    pub state: CheckState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckState {
    Ok,
    /// Part of the backend is out of service, the rest serves: reported, the node stays ready.
    Degraded(String),
    /// The backend does not serve: the node is not ready.
    Failed(String),
}

impl Check {
    pub fn ok(name: &str) -> Self {
        Self {
            name: name.into(),
            state: CheckState::Ok,
        }
    }

    pub fn degraded(name: &str, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            state: CheckState::Degraded(detail.into()),
        }
    }

    pub fn failed(name: &str, problem: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            state: CheckState::Failed(problem.into()),
        }
    }
}

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(ready))
}

/// The process is up and serving HTTP.
#[utoipa::path(get, path = "/health/live", tag = "discovery", security(()),
    responses((status = 200, description = "Alive")))]
async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "live" }))
}

/// The node can do its work: every backend answers (200), else 503 naming the failing ones.
/// A node shutting down is not ready. A degraded backend (part of it out of service, e.g. one
/// application's event stream) is named in `degraded` and its check, and the node stays ready.
#[utoipa::path(get, path = "/health/ready", tag = "discovery", security(()),
    responses((status = 200, description = "Ready (possibly with degraded checks)", body = Readiness),
        (status = 503, description = "A backend does not answer, or the node is stopping", body = Readiness)))]
async fn ready(State(state): State<ApiState>) -> Response {
    let mut checks = match &state.settings.readiness {
        Some(probe) => probe().await,
        None => Vec::new(),
    };
    if *state.shutdown.borrow() {
        checks.push(Check::failed("node", "shutting down"));
    }
    let ready = !checks
        .iter()
        .any(|c| matches!(c.state, CheckState::Failed(_)));
    let mut body = Readiness {
        status: if ready { "ready" } else { "unavailable" },
        checks: BTreeMap::new(),
        degraded: Vec::new(),
    };
    for c in checks {
        let text = match c.state {
            CheckState::Ok => "ok".to_string(),
            CheckState::Degraded(d) => {
                body.degraded.push(c.name.clone());
                format!("degraded: {d}")
            }
            CheckState::Failed(problem) => problem,
        };
        body.checks.insert(c.name, text);
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// The answer of `/health/ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `unavailable`.
    #[schema(pattern = "^(ready|unavailable)$")]
    status: &'static str,
    /// Each backend's state: `ok`, `degraded: <detail>`, or what fails.
    checks: BTreeMap<String, String>,
    /// The checks that are degraded (absent when none is).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    degraded: Vec<String>,
}
