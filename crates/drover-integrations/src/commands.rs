//! Sending commands on behalf of an application user — shared by the command API and the MQTT
//! integration: authorization (manager role), the device's routing targets (itself, then its
//! gateways), the audit event, the router, and waiting for the reply.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use drover_bus::commands::{Command, CommandError, CommandRouter, Outcome, Reply};
use drover_bus::{EventLog, StreamKey};
use drover_model::{Event, Permission, Principal};
use drover_registry::{AccessReader, RegistryError};
use tokio::sync::oneshot;

use crate::outbound::{OutboundClient, OutboundError, OutboundPolicy, OutboundRefusal};

/// Longest time (seconds) a caller may wait for a reply.
pub const MAX_TIMEOUT: u64 = 300;
/// Longest time (seconds) a command may wait for an offline device.
pub const MAX_TTL: u64 = 7 * 24 * 3600;

/// A command as an application asks for it.
#[derive(Debug, Clone)]
pub struct CommandRequest {
    pub app: String,
    pub device: String,
    pub name: String,
    pub payload: Bytes,
    pub content_type: Option<String>,
    /// Wait for the device's reply.
    pub timeout: Option<Duration>,
    /// Queue for a device that cannot be reached now.
    pub ttl: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{0}")]
    Disabled(String),
    #[error(transparent)]
    Routing(#[from] CommandError),
    #[error("the external command endpoint failed: {0}")]
    External(#[source] ExternalError),
}

/// Why an external command endpoint did not take a command.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    #[error("invalid method '{method}' for {url}")]
    Method {
        url: String,
        method: String,
        #[source]
        source: axum::http::method::InvalidMethod,
    },
    #[error("{url} answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error(transparent)]
    Outbound(#[from] OutboundError),
}

impl ExternalError {
    /// Worth another attempt: the endpoint may be back (connection errors, time-outs, 5xx; not
    /// a request that cannot be built, e.g. a bad header).
    fn is_transient(&self) -> bool {
        match self {
            ExternalError::Status { status, .. } => status.is_server_error(),
            ExternalError::Outbound(OutboundError::Transport(e)) => !e.is_builder(),
            _ => false,
        }
    }
}

/// An external command endpoint in a device's spec that the outbound address policy refuses.
#[derive(Debug, thiserror::Error)]
#[error("spec.commands: the external endpoint '{url}' is {source}")]
pub struct EndpointRefused {
    pub url: String,
    #[source]
    pub source: OutboundRefusal,
}

/// Write-time check of a device's `spec.commands`: refuses external endpoints whose URL names a
/// literal address or `localhost` the policy does not allow. Host names are judged when a command
/// is sent (on what they resolve to then); a section that does not parse is left to the
/// registry's validation.
pub fn check_endpoints(
    policy: &OutboundPolicy,
    spec: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), EndpointRefused> {
    let Some(section) = spec.get("commands") else {
        return Ok(());
    };
    let Ok(commands) = serde_json::from_value::<drover_model::spec::Commands>(section.clone())
    else {
        return Ok(());
    };
    for drover_model::spec::CommandEndpoint::External(e) in commands.commands {
        if let Ok(url) = reqwest::Url::parse(&e.url) {
            policy.check_url(&url).map_err(|source| EndpointRefused {
                url: e.url.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

/// A sent command; with a timeout, the reply to wait for.
pub struct Sent {
    pub command: Command,
    pub outcome: Outcome,
    pub reply: Option<oneshot::Receiver<Reply>>,
}

/// Sends commands for application users.
pub struct CommandService {
    registry: Arc<dyn AccessReader>,
    router: Arc<CommandRouter>,
    log: Arc<dyn EventLog>,
    instance: String,
    outbound: OutboundClient,
}

/// Attempts of an external endpoint call.
const EXTERNAL_ATTEMPTS: u32 = 3;
/// Time limit of one external endpoint call.
const EXTERNAL_TIMEOUT: Duration = Duration::from_secs(5);

fn validate(req: &CommandRequest) -> Result<(), SendError> {
    let n = &req.name;
    if n.is_empty()
        || n.len() > 255
        || n.contains(['/', '+', '#'])
        || n.chars().any(char::is_control)
    {
        return Err(SendError::Invalid(format!(
            "invalid command name '{n}': 1 to 255 characters without '/', '+', '#' or control characters"
        )));
    }
    if let Some(t) = req.timeout {
        if t.is_zero() || t > Duration::from_secs(MAX_TIMEOUT) {
            return Err(SendError::Invalid(format!(
                "timeout must be 1 to {MAX_TIMEOUT} seconds"
            )));
        }
    }
    if let Some(t) = req.ttl {
        if t.is_zero() || t > Duration::from_secs(MAX_TTL) {
            return Err(SendError::Invalid(format!(
                "ttl must be 1 to {MAX_TTL} seconds"
            )));
        }
    }
    Ok(())
}

impl CommandService {
    /// `outbound` makes the calls to external endpoints (under the outbound address policy).
    pub fn new(
        registry: Arc<dyn AccessReader>,
        router: Arc<CommandRouter>,
        log: Arc<dyn EventLog>,
        instance: String,
        outbound: OutboundClient,
    ) -> Self {
        Self {
            registry,
            router,
            log,
            instance,
            outbound,
        }
    }

    /// Calls an external endpoint (`spec.commands.commands[].external` of the device or of a
    /// gateway): `{"application", "device", "command", "payload": base64}` by default method
    /// POST, retried on connection errors and 5xx. Refusals by the outbound address policy,
    /// redirects (not followed) and 4xx are not retried.
    async fn call_external(
        &self,
        endpoint: &drover_model::spec::ExternalEndpoint,
        command: &Command,
    ) -> Result<(), ExternalError> {
        use base64::Engine as _;
        let method = endpoint.method.as_deref().unwrap_or("POST");
        let method = method
            .parse::<reqwest::Method>()
            .map_err(|source| ExternalError::Method {
                url: endpoint.url.clone(),
                method: method.to_string(),
                source,
            })?;
        let body = serde_json::json!({
            "application": command.app,
            "device": command.device,
            "command": command.name,
            "payload": base64::engine::general_purpose::STANDARD.encode(&command.payload),
        });
        let mut attempt = 1;
        loop {
            let mut req = self
                .outbound
                .request(method.clone(), &endpoint.url)?
                .timeout(EXTERNAL_TIMEOUT)
                .json(&body);
            for (k, v) in &endpoint.headers {
                req = req.header(k, v);
            }
            let error = match self.outbound.send(req).await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => ExternalError::Status {
                    url: endpoint.url.clone(),
                    status: r.status(),
                },
                Err(e) => e.into(),
            };
            if attempt >= EXTERNAL_ATTEMPTS || !error.is_transient() {
                return Err(error);
            }
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            attempt += 1;
        }
    }

    /// External endpoints that take commands for `device`: its own, then its gateways'.
    async fn external_endpoints(
        &self,
        app: &str,
        device: &drover_model::Resource,
        gateways: &[String],
    ) -> Vec<drover_model::spec::ExternalEndpoint> {
        let system = Principal::SystemAdmin("drover".into());
        let mut docs = vec![device.clone()];
        for g in gateways {
            if let Ok(gw) = self.registry.get_device(&system, app, g).await {
                docs.push(gw);
            }
        }
        docs.iter()
            .filter_map(|d| d.spec.get("commands"))
            .filter_map(|c| serde_json::from_value::<drover_model::spec::Commands>(c.clone()).ok())
            .flat_map(|c| c.commands)
            .map(|drover_model::spec::CommandEndpoint::External(e)| e)
            .collect()
    }

    pub fn router(&self) -> &Arc<CommandRouter> {
        &self.router
    }

    /// Sends a command as `who` (who needs the manager role on the application).
    pub async fn send(&self, who: &Principal, req: CommandRequest) -> Result<Sent, SendError> {
        validate(&req)?;
        let (application, target) = self.resolve(who, &req).await?;
        let command = Command {
            id: uuid::Uuid::new_v4().to_string(),
            app: req.app.clone(),
            app_uid: application.metadata.uid.clone(),
            device: target.metadata.name.clone(),
            name: req.name.clone(),
            payload: req.payload.clone(),
            content_type: req.content_type.clone(),
            expects_reply: req.timeout.is_some(),
        };
        // The device itself first, then the gateways it names.
        let responders: Vec<String> = std::iter::once(target.metadata.name.clone())
            .chain(drover_model::spec::gateways(&target.spec))
            .collect();
        let reply = match req.timeout {
            Some(_) => Some(self.router.expect_reply(&command, responders.clone())?),
            None => None,
        };
        let outcome = match self.deliver(&command, &target, &responders, req.ttl).await {
            Ok(outcome) => outcome,
            Err(e) => {
                self.router.forget(&command.id);
                return Err(e);
            }
        };
        self.record(who, &command, &target).await;
        tracing::info!(app = %command.app, device = %command.device, command = %command.name, ?outcome, user = who.name(), "command sent");
        Ok(Sent {
            command,
            outcome,
            reply,
        })
    }

    /// The application (`who` needs write access to it) and the device a request names; both
    /// must be enabled and not being deleted.
    async fn resolve(
        &self,
        who: &Principal,
        req: &CommandRequest,
    ) -> Result<(drover_model::Resource, drover_model::Resource), SendError> {
        let application = self
            .registry
            .authorize(who, &req.app, Permission::Write)
            .await?;
        let target = self.registry.get_device(who, &req.app, &req.device).await?;
        if application.is_deleting() || drover_model::spec::disabled(&application.spec) {
            return Err(SendError::Disabled(format!(
                "application '{}' is disabled or being deleted",
                req.app
            )));
        }
        if target.is_deleting() || drover_model::spec::disabled(&target.spec) {
            return Err(SendError::Disabled(format!(
                "device '{}' is disabled or being deleted",
                req.device
            )));
        }
        Ok((application, target))
    }

    /// Hands the command on: to the external endpoints of the device or its gateways when there
    /// are any (devices whose last mile belongs to another system, e.g. a LoRaWAN network
    /// server: the first that takes it), else to the router, for `responders` (the device, then
    /// its gateways).
    async fn deliver(
        &self,
        command: &Command,
        target: &drover_model::Resource,
        responders: &[String],
        ttl: Option<Duration>,
    ) -> Result<Outcome, SendError> {
        let gateways = responders.get(1..).unwrap_or_default();
        let external = self
            .external_endpoints(&command.app, target, gateways)
            .await;
        if let Some((first, rest)) = external.split_first() {
            let mut result = self.call_external(first, command).await;
            for endpoint in rest {
                if result.is_ok() {
                    break;
                }
                result = self.call_external(endpoint, command).await;
            }
            return match result {
                Ok(()) => Ok(Outcome::Delivered),
                Err(e) => {
                    tracing::warn!(app = %command.app, device = %command.device, "external command endpoint failed: {e}");
                    Err(SendError::External(e))
                }
            };
        }
        let targets: Vec<_> = responders
            .iter()
            .map(|d| (command.app_uid.clone(), d.clone()))
            .collect();
        Ok(self.router.route(command.clone(), &targets, ttl).await?)
    }

    /// Audit: every command is in the application's stream (a failure is logged only).
    async fn record(&self, who: &Principal, command: &Command, target: &drover_model::Resource) {
        let event = Event {
            id: uuid::Uuid::new_v4().to_string(),
            ty: drover_model::event::COMMAND_TYPE.to_string(),
            channel: command.name.clone(),
            time: chrono::Utc::now(),
            content_type: command.content_type.clone(),
            data_schema: None,
            application: command.app.clone(),
            application_uid: command.app_uid.clone(),
            device: command.device.clone(),
            device_uid: target.metadata.uid.clone(),
            sender: who.name().to_string(),
            sender_uid: String::new(),
            instance: self.instance.clone(),
            extensions: vec![
                ("commandid".into(), command.id.clone()),
                ("command".into(), command.name.clone()),
            ],
            data: command.payload.clone(),
        };
        let stream = StreamKey::new(command.app.clone(), command.app_uid.clone());
        if let Err(e) = self.log.append(&stream, event).await {
            tracing::warn!(app = %command.app, "cannot record the command in the event stream: {e}");
        }
    }

    /// Waits for the reply of a sent command (`None`: none in time; the wait is then forgotten).
    pub async fn wait(&self, sent: Sent, timeout: Duration) -> Option<Reply> {
        let rx = sent.reply?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => Some(r),
            _ => {
                self.router.forget(&sent.command.id);
                None
            }
        }
    }
}
