//! `/api/registry/v1alpha1/watch`: the registry's change events as server-sent events, from any
//! revision, in order, without gaps or duplicates. Each SSE message has `id: <revision>` so a
//! client resumes with `?since=<last id>` (or the `Last-Event-ID` header) after any restart.

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use drover_model::Principal;
use drover_registry::Change;
use futures::Stream;
use serde::Deserialize;
use serde_json::json;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorInformation};
use crate::extract::Query;
use crate::openapi::NOT_FOUND_APP;
use crate::params::query_param;
use crate::ApiState;

/// Change events read per batch.
const BATCH: usize = 500;

pub fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new().routes(routes!(watch))
}

/// `since` and `app`.
#[derive(Debug, Deserialize)]
pub struct WatchQuery {
    since: Option<u64>,
    app: Option<String>,
}

impl IntoParams for WatchQuery {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let revision = ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .maximum(Some(u64::MAX as usize))
            .build();
        vec![
            query_param(
                "since",
                "Deliver changes after this revision (from a list's `drover-revision` header or \
                 the last event id). Without it the stream starts at the current revision.",
                false,
                revision,
            ),
            query_param(
                "app",
                "Only changes of this application",
                false,
                crate::params::app_name(),
            ),
        ]
    }
}

/// The CloudEvent of a registry change.
pub fn change_event(c: &Change) -> serde_json::Value {
    let enc = crate::encode_segment;
    let source = match &c.device {
        Some(d) => format!("drogue://{}/{}", enc(&c.application), enc(d)),
        None => format!("drogue://{}", enc(&c.application)),
    };
    let mut ev = json!({
        "specversion": "1.0",
        "id": c.revision.to_string(),
        "type": c.kind.change_event_type(),
        "source": source,
        "subject": c.path,
        "time": c.time,
        "datacontenttype": "application/json",
        "application": c.application,
        "data": {"revision": c.resource_version, "uid": c.uid},
    });
    if let Some(d) = &c.device {
        ev["device"] = json!(d);
    }
    ev
}

/// Follow registry changes (server-sent events). Each event is a CloudEvent of type
/// `io.drogue.registry.change.application|device`, subject = changed path, data
/// `{"revision", "uid"}`; the SSE id is the change's revision. System administrators see every
/// change; other users see the changes of applications they may read. With `app`, an
/// application that does not exist or that the caller may not read is a 404, as everywhere in
/// the API (checked when the watch starts).
#[utoipa::path(get, path = "/api/registry/v1alpha1/watch", tag = "registry", 
    params(WatchQuery, ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this revision (takes precedence over `since`)")),
    responses((status = 200, description = "text/event-stream of change CloudEvents", content_type = "text/event-stream"),
        (status = 400, description = "BadRequest: also a `Last-Event-ID` that is not a revision number", body = ErrorInformation),
        (status = 404, description = NOT_FOUND_APP, body = ErrorInformation),
        (status = 410, description = "Gone: the revision is older than the retained history; list again", body = ErrorInformation)))]
async fn watch(
    State(s): State<ApiState>,
    Caller(who): Caller,
    headers: HeaderMap,
    Query(q): Query<WatchQuery>,
) -> ApiResult<Response> {
    let last_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest("Last-Event-ID must be a revision number".into())
                })
        })
        .transpose()?;
    if let Some(app) = &q.app {
        // An unknown or unreadable application is a 404, as for every other call naming one.
        s.registry.get_app(&who, app).await?;
    }
    let mut rx = s.registry.subscribe();
    let current = *rx.borrow_and_update();
    let since = last_id.or(q.since).unwrap_or(current);
    let compacted = s.registry.compacted_revision().await?;
    if since < compacted {
        return Err(ApiError::Gone(format!(
            "revision {since} is older than the retained change history (events up to {compacted} were pruned): list again and watch from the list's drover-revision"
        )));
    }
    let stream = changes(s, who, since, q.app, rx);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn changes(
    s: ApiState,
    who: Principal,
    mut since: u64,
    app: Option<String>,
    mut rx: tokio::sync::watch::Receiver<u64>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    async_stream::stream! {
        // Applications this caller could read at some point during this watch: their deletion
        // events are still delivered after the application is gone.
        let mut seen: HashSet<String> = HashSet::new();
        loop {
            let batch = match s.registry.changes_since(since, BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("watch stopped: {e}");
                    yield Ok(Event::default().event("error").data(e.to_string()));
                    return;
                }
            };
            if batch.is_empty() {
                let mut stop = s.shutdown.clone();
                if *stop.borrow_and_update() {
                    return;
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return },
                    _ = stop.changed() => return,
                }
                continue;
            }
            let readable = match s.registry.readable_apps(&who).await {
                Ok(r) => r,
                Err(e) => {
                    yield Ok(Event::default().event("error").data(e.to_string()));
                    return;
                }
            };
            if let Some(r) = &readable {
                seen.extend(r.iter().cloned());
            }
            for c in batch {
                since = c.revision;
                if app.as_ref().is_some_and(|a| *a != c.application) {
                    continue;
                }
                if readable.is_some() && !seen.contains(&c.application) {
                    continue;
                }
                let data = change_event(&c).to_string();
                yield Ok(Event::default().id(c.revision.to_string()).event("change").data(data));
            }
        }
    }
}
