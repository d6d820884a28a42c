//! The MQTT device endpoint: Drogue's MQTT dialects on top of the session machinery of
//! `drover-mqtt`. This module is the *policy* — who may connect, what a PUBLISH means — and the
//! listeners (plain and TLS).
//!
//! - CONNECT: user name `device@app` + password; user name `user` + password with client id
//!   `device@app` (a `user` credential); or a TLS client certificate. One live connection per
//!   device: the session key is `<app>/<device>`, so a second connection takes over.
//! - PUBLISH, dialect `drogue/v1` (default): `<channel>` for the device itself,
//!   `<channel>/<device>` as a gateway for `<device>`. Dialect `plainTopic`: the topic is the
//!   channel; with `devicePrefix: true` it is `<device>/<channel>`. Set per device or per app in
//!   `spec.mqtt.dialect` (the device's wins).
//! - The event is appended durably before a QoS 1 PUBACK; MQTT 5 content type and user
//!   properties are carried into it.
//! - SUBSCRIBE: the command inboxes `command/inbox//#`, `command/inbox/<device>/#`,
//!   `command/inbox/#`; once one is stored in the session (the `subscribed` hook) the device's
//!   queued commands are handed over; the twin topics (`twin`); anything else is refused.
//! - Twins: `$twin/get`, `$twin/reported`, `$twin/desired`, `$twin/current` (see `twin`).
//! - Provisioning clients (a DPS username, see `crate::dps`) register over the same listeners
//!   (`provision`).
//! - Transports: the MQTT and MQTTS listeners, and WebSocket on the HTTP(S) device listeners
//!   (`websocket`).
//! - Connection changes become `io.drogue.connection.v1` events; a will becomes an event when
//!   the connection ends without a clean DISCONNECT.

mod commands;
mod connect;
mod iothub;
mod provision;
mod publish;
mod topic;
mod twin;
pub mod websocket;

use std::sync::Arc;

use drover_auth::device::{AuthenticatedDevice, DeviceAuthenticator};
use drover_bus::commands::{CommandRouter, SinkRegistration};
use drover_bus::{EventLog, StreamKey};
use drover_model::spec::MqttDialect;
use drover_model::Resource;
use drover_mqtt::{
    Accepted, CloseReason, ConnectRequest, Inbound, Policy, PublishRefusal, QoS, Refusal,
    SessionHandle, SubscribeRefusal, SubscribeRequest, Subscription,
};
use drover_registry::DeviceTwins;

/// Who is connected.
pub struct DeviceConnection {
    pub device: AuthenticatedDevice,
    pub dialect: MqttDialect,
    /// The IoT hub an Azure SDK device named (it speaks Azure's dialect, see `iothub`).
    pub azure: Option<String>,
    stream: StreamKey,
    v5: bool,
    /// Registered with the command router while connected.
    commands: std::sync::Mutex<Option<SinkRegistration>>,
    /// Devices this gateway was authorized to publish for, with when.
    targets:
        std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Arc<Resource>)>>,
    /// Serializes gateway lookups so publishes keep their order (see `gateway_target`).
    lookup: tokio::sync::Mutex<()>,
    /// Puts batches of publishes into the log in packet order (see `publish_batch`).
    order: tokio::sync::Mutex<()>,
}

/// The CloudEvent extension that marks an event an MQTT 3.1.1 device published with RETAIN set
/// (MQTT 5 devices are told retain is not available and are disconnected with 0x9A if they
/// set it). Drover keeps no retained messages.
pub const RETAIN_EXTENSION: &str = "mqttretain";

/// The device endpoint's MQTT policy.
pub struct DevicePolicy {
    auth: Arc<DeviceAuthenticator>,
    log: Arc<dyn EventLog>,
    commands: Arc<CommandRouter>,
    twins: Arc<dyn DeviceTwins>,
    instance: String,
    /// Device provisioning (DPS) over MQTT, when the server offers it.
    provisioning: Option<Arc<crate::dps::service::Provisioning>>,
}

impl DevicePolicy {
    pub fn new(
        auth: Arc<DeviceAuthenticator>,
        log: Arc<dyn EventLog>,
        commands: Arc<CommandRouter>,
        twins: Arc<dyn DeviceTwins>,
        instance: String,
    ) -> Self {
        Self {
            auth,
            log,
            commands,
            twins,
            instance,
            provisioning: None,
        }
    }

    /// Serves provisioning clients (DPS usernames) too.
    pub fn with_provisioning(mut self, p: Arc<crate::dps::service::Provisioning>) -> Self {
        self.provisioning = Some(p);
        self
    }
}

/// Who a connection is: a device, or a provisioning client (before it is a device).
#[derive(Clone)]
pub enum Identity {
    Device(Arc<DeviceConnection>),
    Provisioning(Arc<provision::ProvisioningClient>),
}

impl Policy for DevicePolicy {
    type Identity = Identity;

    async fn connect(&self, req: &ConnectRequest) -> Result<Accepted<Self::Identity>, Refusal> {
        if let Some(client) = self.provisioning_client(req).await? {
            return Ok(client);
        }
        let a = self.accept(req).await?;
        Ok(Accepted {
            identity: Identity::Device(a.identity),
            session_key: a.session_key,
            wildcard_subscriptions: a.wildcard_subscriptions,
            shared_subscriptions: a.shared_subscriptions,
        })
    }

    async fn connected(&self, id: &Self::Identity, session: &SessionHandle, _present: bool) {
        let conn = match id {
            Identity::Device(c) => c,
            Identity::Provisioning(p) => return p.connected(session),
        };
        // On a cluster, the device's connections on other nodes close.
        self.commands.session_started(
            conn.device.app_name(),
            &(
                conn.device.app_uid().to_string(),
                conn.device.device_name().to_string(),
            ),
        );
        commands::register_commands(&self.commands, conn, session, false);
        tracing::debug!(
            app = conn.device.app_name(),
            device = conn.device.device_name(),
            "MQTT device connected"
        );
        self.connection_event(conn, true).await;
    }

    async fn publish(&self, id: &Self::Identity, msg: Inbound) -> Result<(), PublishRefusal> {
        match id {
            Identity::Device(conn) => self.publish_one(conn, msg).await,
            Identity::Provisioning(p) => self.provisioning_publish(p, msg).await,
        }
    }

    /// One log append for the whole batch, in packet order (see `publish_in_order`).
    async fn publish_batch(
        &self,
        id: &Self::Identity,
        messages: Vec<Inbound>,
    ) -> Vec<Result<(), PublishRefusal>> {
        match id {
            Identity::Device(conn) => self.publish_in_order(conn, messages).await,
            Identity::Provisioning(p) => {
                let mut out = Vec::with_capacity(messages.len());
                for m in messages {
                    out.push(self.provisioning_publish(p, m).await);
                }
                out
            }
        }
    }

    async fn subscribe(
        &self,
        id: &Self::Identity,
        _session: &SessionHandle,
        req: &SubscribeRequest,
    ) -> Vec<Result<QoS, SubscribeRefusal>> {
        let conn = match id {
            Identity::Device(c) => c,
            Identity::Provisioning(p) => return p.subscribe(req),
        };
        if conn.azure.is_some() {
            return iothub::subscribe(conn, req);
        }
        req.filters
            .iter()
            .map(|f| {
                if f.share_group.is_some() {
                    Err(SubscribeRefusal::SharedSubscriptionsNotSupported)
                } else if topic::is_command_inbox(&f.filter) {
                    Ok(f.options.qos.min(QoS::AtLeastOnce))
                } else if twin::is_twin_filter(&f.filter) {
                    Ok(twin::twin_qos(f.options.qos))
                } else {
                    tracing::info!(app = conn.device.app_name(), device = conn.device.device_name(), filter = %f.filter, "subscription refused: devices subscribe to command/inbox/... and $twin/... only");
                    Err(SubscribeRefusal::TopicFilterInvalid)
                }
            })
            .collect()
    }

    /// A command inbox is stored in the session now: hand over what waits for the device.
    async fn subscribed(
        &self,
        id: &Self::Identity,
        session: &SessionHandle,
        granted: &[Subscription],
    ) {
        let Identity::Device(conn) = id else {
            return;
        };
        if granted
            .iter()
            .any(|s| topic::is_command_inbox(&s.filter) || conn.azure.is_some())
        {
            // Only while still connected (`disconnected` clears the registration).
            commands::register_commands(&self.commands, conn, session, true);
        }
        if conn.azure.is_none() && granted.iter().any(|s| twin::is_twin_filter(&s.filter)) {
            // The whole twin first, then the changes: a device that was offline catches up.
            let _ = self.send_current_twin(conn).await;
        }
    }

    async fn will(&self, id: &Self::Identity, will: Inbound) {
        let Identity::Device(conn) = id else {
            return;
        };
        match self.event_for(conn, will).await {
            Ok(event) => {
                let _ = self.append(conn, event).await;
            }
            Err(e) => tracing::info!(
                app = conn.device.app_name(),
                device = conn.device.device_name(),
                "will not published: {e:?}"
            ),
        }
    }

    async fn disconnected(&self, id: &Self::Identity, reason: &CloseReason) {
        let Identity::Device(conn) = id else {
            return;
        };
        tracing::debug!(
            app = conn.device.app_name(),
            device = conn.device.device_name(),
            ?reason,
            "MQTT device disconnected"
        );
        *conn.commands.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.connection_event(conn, false).await;
    }
}
