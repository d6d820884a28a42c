//! The services over the backends: authentication (devices, users, throttling), commands, the
//! management API's state, the device endpoints' HTTP routes and MQTT server, the MQTT
//! integration.

use std::sync::Arc;
use std::time::Duration;

use drover_api::certificates::CaSettings;
use drover_api::{ApiSettings, ApiState};
use drover_auth::ca::DeviceCa;
use drover_auth::device::DeviceAuthenticator;
use drover_auth::throttle::{Throttle, ThrottleConfig};
use drover_auth::user::UserAuthenticator;
use drover_auth::{OidcConfig, OidcValidator};
use drover_endpoints::dps::service::Provisioning;
use drover_endpoints::http::HttpSettings;
use drover_endpoints::mqtt::DevicePolicy;
use drover_integrations::commands::CommandService;
use drover_integrations::limits::UserConnections;
use drover_integrations::mqtt::{IntegrationPolicy, IntegrationSettings};
use drover_integrations::outbound::{OutboundClient, OutboundPolicy};
use drover_mqtt::{MqttConfig, MqttServer};

use super::backends::Backends;
use super::bind::Addresses;
use super::StartError;
use crate::config::Config;

/// Everything the listeners serve.
pub(super) struct Services {
    pub api: axum::Router,
    pub device_http: axum::Router,
    pub mqtt: Arc<MqttServer<DevicePolicy>>,
    pub integration: Arc<MqttServer<IntegrationPolicy>>,
    /// The client for URLs tenants write (under the outbound address policy), for webhooks.
    pub outbound: OutboundClient,
}

/// What the services share: authentication and the command service.
struct Shared {
    devices: Arc<DeviceAuthenticator>,
    users: Arc<UserAuthenticator>,
    connections: Arc<UserConnections>,
    outbound_policy: Arc<OutboundPolicy>,
    outbound: OutboundClient,
    commands: Arc<CommandService>,
    device_ca: Arc<CaSettings>,
}

impl Services {
    pub fn build(
        config: &Config,
        b: &Backends,
        addrs: &Addresses,
        device_ca: DeviceCa,
        id_scope: &str,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Services, StartError> {
        let shared = Shared::build(config, b, device_ca)?;
        let provisioning = Arc::new(Provisioning::new(
            b.registry.clone(),
            b.log.clone(),
            id_scope.to_string(),
            config.hub_domain.clone(),
            config.instance.clone(),
        ));
        let mqtt = device_mqtt(config, b, &shared, provisioning.clone());
        let _ = b.mqtt_slot.set(Arc::downgrade(&mqtt));
        let device_http = drover_endpoints::http::router(
            shared.devices.clone(),
            b.log.clone(),
            b.commands.clone(),
            HttpSettings {
                body_limit: config.http_body_limit,
                instance: config.instance.clone(),
                ..HttpSettings::default()
            },
        )
        // MQTT over WebSocket on the HTTP(S) device listeners, served by the same MQTT server.
        .merge(drover_endpoints::mqtt::websocket::router(mqtt.clone()))
        // DPS's REST device API.
        .merge(drover_endpoints::dps::rest::router(provisioning));
        Ok(Services {
            api: drover_api::router(api_state(config, b, addrs, &shared, id_scope, stop)),
            device_http,
            mqtt,
            integration: integration(config, b, &shared).into_server(mqtt_config(config)),
            outbound: shared.outbound.clone(),
        })
    }
}

impl Shared {
    fn build(config: &Config, b: &Backends, device_ca: DeviceCa) -> Result<Shared, StartError> {
        let throttle = Arc::new(Throttle::new(throttle_config(config)));
        let devices = Arc::new(
            DeviceAuthenticator::with_throttle(b.directory.clone(), throttle.clone())
                .with_device_ca(&device_ca)
                .on_registered(registration_events(b.log.clone(), config.instance.clone())),
        );
        let users = Arc::new(UserAuthenticator::new(
            b.users.clone(),
            oidc(config)?,
            throttle,
        ));
        let outbound_policy = Arc::new(OutboundPolicy::new(config.outbound_allow.clone()));
        if !config.outbound_allow.is_empty() {
            let allow: Vec<String> = config
                .outbound_allow
                .iter()
                .map(ToString::to_string)
                .collect();
            tracing::info!(allow = %allow.join(","), "outbound address policy: exceptions allowed");
        }
        let outbound = OutboundClient::new(outbound_policy.clone())
            .map_err(|e| StartError::runtime("cannot create the outbound HTTP client", e))?;
        let commands = Arc::new(CommandService::new(
            b.registry.clone(),
            b.commands.clone(),
            b.log.clone(),
            config.instance.clone(),
            outbound.clone(),
        ));
        Ok(Shared {
            devices,
            users,
            connections: UserConnections::new(config.integration_max_connections_per_user),
            outbound_policy,
            outbound,
            commands,
            device_ca: Arc::new(CaSettings {
                ca: device_ca,
                max_validity: Duration::from_secs(u64::from(config.device_cert_days) * 86_400),
            }),
        })
    }
}

/// Records each auto-registration as an `io.drover.device.registered.v1` event in the
/// application's stream.
fn registration_events(
    log: Arc<dyn drover_bus::EventLog>,
    instance: String,
) -> drover_auth::device::RegistrationHook {
    Arc::new(move |d, r| {
        let event = drover_model::Event {
            id: uuid::Uuid::new_v4().to_string(),
            ty: drover_model::event::DEVICE_REGISTERED_TYPE.to_string(),
            channel: "registration".into(),
            time: chrono::Utc::now(),
            content_type: Some("application/json".into()),
            data_schema: None,
            application: d.app_name().to_string(),
            application_uid: d.app_uid().to_string(),
            device: d.device_name().to_string(),
            device_uid: d.device_uid().to_string(),
            sender: d.device_name().to_string(),
            sender_uid: d.device_uid().to_string(),
            instance: instance.clone(),
            extensions: Vec::new(),
            data: serde_json::json!({
                "subject": r.subject,
                "issuer": r.issuer,
                "fingerprint": r.fingerprint,
            })
            .to_string()
            .into(),
        };
        let (log, stream) = (
            log.clone(),
            drover_bus::StreamKey::new(d.app_name(), d.app_uid()),
        );
        tokio::spawn(async move {
            if let Err(e) = log.append(&stream, event).await {
                tracing::warn!("cannot record a device's auto-registration: {e}");
            }
        });
    })
}

/// The management API's state.
fn api_state(
    config: &Config,
    b: &Backends,
    addrs: &Addresses,
    shared: &Shared,
    id_scope: &str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> ApiState {
    ApiState {
        registry: b.registry.clone(),
        log: Some(b.log.clone()),
        commands: Some(shared.commands.clone()),
        users: shared.users.clone(),
        user_connections: shared.connections.clone(),
        settings: Arc::new(ApiSettings {
            public_url: config.public_url.clone(),
            fallback_host: "localhost".into(),
            body_limit: config.api_body_limit,
            oidc_issuer: config.oidc_issuer_url.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            endpoints: endpoints(addrs),
            ws_max_lag: config.ws_max_lag,
            ws_send_timeout: config.ws_send_timeout,
            readiness: Some(super::health::readiness(
                b.registry.clone(),
                b.nats.clone(),
                b.jetstream.clone(),
                b.embedded.clone(),
            )),
            outbound: shared.outbound_policy.clone(),
            id_scope: Some(id_scope.to_string()),
        }),
        device_ca: Some(shared.device_ca.clone()),
        shutdown: stop,
    }
}

/// The device endpoint's MQTT server (MQTT and MQTTS listeners, MQTT over WebSocket).
fn device_mqtt(
    config: &Config,
    b: &Backends,
    shared: &Shared,
    provisioning: Arc<Provisioning>,
) -> Arc<MqttServer<DevicePolicy>> {
    MqttServer::new(
        DevicePolicy::new(
            shared.devices.clone(),
            b.log.clone(),
            b.commands.clone(),
            b.registry.clone(),
            config.instance.clone(),
        )
        .with_provisioning(provisioning),
        // Publishes of one connection are processed concurrently (PUBACKs stay in order and
        // the device policy keeps the log order), so a device's throughput is not bound by
        // the latency of one fsync.
        MqttConfig {
            inbound_concurrency: 64,
            ..mqtt_config(config)
        },
    )
}

/// The MQTT integration's policy (its consumer groups shared with other nodes on a cluster).
fn integration(config: &Config, b: &Backends, shared: &Shared) -> IntegrationPolicy {
    let mut integration = IntegrationPolicy::new(
        b.registry.clone(),
        shared.users.clone(),
        b.log.clone(),
        IntegrationSettings {
            max_lag: config.integration_max_lag,
            ..IntegrationSettings::default()
        },
    )
    .with_commands(shared.commands.clone())
    .with_user_connections(shared.connections.clone());
    if let Some(client) = &b.nats {
        integration = integration.with_group_peers(drover_bus::cluster::NatsGroups::new(
            client.clone(),
            config.nats_prefix.clone(),
            b.node.clone(),
            b.log.clone(),
        ));
    }
    integration
}

/// Failed-authentication throttling, as configured.
fn throttle_config(config: &Config) -> ThrottleConfig {
    ThrottleConfig {
        enabled: config.auth_throttle,
        free_failures: config.auth_free_failures,
        max_delay: config.auth_max_delay,
        max_identity_delay: config.auth_identity_max_delay,
        ..ThrottleConfig::default()
    }
}

/// The MQTT settings both MQTT listeners (devices, integration) share.
fn mqtt_config(config: &Config) -> MqttConfig {
    MqttConfig {
        max_subscriptions: config.mqtt_max_subscriptions,
        max_filters_per_subscribe: config.mqtt_max_filters_per_subscribe,
        max_topic_length: config.mqtt_max_topic_length,
        packet_timeout: config.mqtt_packet_timeout,
        ..MqttConfig::default()
    }
}

/// Single sign-on, when configured.
fn oidc(config: &Config) -> Result<Option<OidcValidator>, StartError> {
    let Some(o) = config.oidc() else {
        return Ok(None);
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| StartError::runtime("cannot create an HTTP client", e))?;
    Ok(Some(OidcValidator::new(
        OidcConfig {
            issuer_url: o.issuer_url,
            audience: o.audience,
            username_claim: o.username_claim,
            jwks_url: o.jwks_url,
        },
        http,
    )))
}

/// What discovery advertises (`/.well-known/drogue-endpoints`): the device endpoints on the
/// host the client used.
fn endpoints(addrs: &Addresses) -> drover_api::EndpointsFn {
    let http = addrs.http.map(|a| a.port());
    let https = addrs.https.map(|a| a.port());
    let mqtt = addrs.mqtts.or(addrs.mqtt).map(|a| a.port());
    let integration = addrs
        .integration_mqtts
        .or(addrs.integration_mqtt)
        .map(|a| a.port());
    Arc::new(move |host: &str| {
        let mut v = Vec::new();
        match (https, http) {
            (Some(port), _) => v.push((
                "http".to_string(),
                serde_json::json!({ "url": format!("https://{host}:{port}") }),
            )),
            (None, Some(port)) => v.push((
                "http".to_string(),
                serde_json::json!({ "url": format!("http://{host}:{port}") }),
            )),
            (None, None) => {}
        }
        if let Some(port) = mqtt {
            v.push((
                "mqtt".to_string(),
                serde_json::json!({ "host": host, "port": port }),
            ));
        }
        if let Some(port) = integration {
            v.push((
                "mqtt_integration".to_string(),
                serde_json::json!({ "host": host, "port": port }),
            ));
        }
        v
    })
}
