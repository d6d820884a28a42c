//! `/health/ready` for this node: which backends answer.

use std::sync::Arc;
use std::time::Duration;

use drover_bus::embedded::EmbeddedLog;
use drover_bus::nats::JetStreamLog;
use drover_registry::Registry;

/// `/health/ready`: the registry answers a query, and NATS (when used) is connected; the
/// embedded log is degraded (the node stays ready) while a stream is out of service.
pub(super) fn readiness(
    registry: Arc<dyn Registry>,
    nats: Option<async_nats::Client>,
    jetstream: Option<Arc<JetStreamLog>>,
    embedded: Option<Arc<EmbeddedLog>>,
) -> drover_api::ReadinessFn {
    use drover_api::health::Check;
    Arc::new(move || {
        let (registry, nats, jetstream) = (registry.clone(), nats.clone(), jetstream.clone());
        let embedded = embedded.clone();
        Box::pin(async move {
            let mut checks = Vec::new();
            checks.push(
                match tokio::time::timeout(Duration::from_secs(2), registry.ping()).await {
                    Ok(Ok(())) => Check::ok("registry"),
                    Ok(Err(e)) => Check::failed("registry", e.to_string()),
                    Err(_) => Check::failed("registry", "no answer within 2 s"),
                },
            );
            if let Some(client) = nats {
                checks.push(match client.connection_state() {
                    async_nats::connection::State::Connected => Check::ok("commandRouting"),
                    state => {
                        Check::failed("commandRouting", format!("NATS not connected ({state})"))
                    }
                });
            }
            if let Some(js) = jetstream {
                checks.push(if js.is_connected() {
                    Check::ok("eventLog")
                } else {
                    Check::failed("eventLog", "NATS JetStream not connected")
                });
            }
            if let Some(log) = embedded {
                checks.push(embedded_log_check(&log));
            }
            checks
        })
    })
}

/// The embedded log serves; it is degraded while streams are out of service (named by
/// application uid and damaged file, without the server's paths).
fn embedded_log_check(log: &EmbeddedLog) -> drover_api::health::Check {
    use drover_api::health::Check;
    let broken = log.out_of_service();
    if broken.is_empty() {
        return Check::ok("eventLog");
    }
    let streams: Vec<String> = broken
        .iter()
        .map(|b| format!("application uid {} ({})", b.app_uid, b.error.brief()))
        .collect();
    Check::degraded(
        "eventLog",
        format!(
            "{} event stream(s) out of service: {}",
            broken.len(),
            streams.join("; ")
        ),
    )
}
