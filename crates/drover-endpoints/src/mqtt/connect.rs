//! CONNECT: the device's credentials (password, `user` credential, client certificate) and
//! its dialect.

use std::sync::Arc;

use drover_auth::device::{AuthError, AuthenticatedDevice, DeviceCredentials};
use drover_bus::StreamKey;
use drover_model::spec::MqttDialect;
use drover_model::Resource;
use drover_mqtt::{Accepted, ConnectRequest, Refusal};

use super::{DeviceConnection, DevicePolicy};

impl DevicePolicy {
    /// Authenticates a CONNECT: one live connection per device, the session key is
    /// `<app>/<device>`.
    pub(super) async fn accept(
        &self,
        req: &ConnectRequest,
    ) -> Result<Accepted<Arc<DeviceConnection>>, Refusal> {
        let azure = crate::azure::Username::parse(req.username.as_deref().unwrap_or(""));
        if let Some(module) = azure.as_ref().and_then(|u| u.module.as_ref()) {
            tracing::info!(peer = %req.connection.peer_addr, client_id = %req.client_id, module, "MQTT connect refused: IoT Hub module identities are not supported");
            return Err(Refusal::BadCredentials);
        }
        let creds = match &azure {
            Some(u) => azure_credentials(req, u),
            None => credentials(req),
        };
        let Some(creds) = creds else {
            tracing::info!(peer = %req.connection.peer_addr, client_id = %req.client_id, "MQTT connect refused: no credentials (user name `device@app` and password, or a client certificate)");
            return Err(Refusal::BadCredentials);
        };
        let peer = req.connection.peer_addr;
        let device = self.auth.authenticate(&creds, peer.ip()).await.map_err(|e: AuthError| {
            if e.is_unavailable() {
                tracing::warn!(%peer, "MQTT connect: authentication unavailable: {e}");
                return Refusal::ServerUnavailable;
            }
            if let Some(held_back) = self.auth.throttle().admit_log() {
                tracing::info!(%peer, client_id = %req.client_id, credentials = ?creds, held_back, "MQTT connect refused: {e}");
            }
            match e {
                AuthError::Throttled(_) => Refusal::ConnectionRateExceeded,
                _ => Refusal::BadCredentials,
            }
        })?;
        let key = format!("{}/{}", device.app_name(), device.device_name());
        if let Some(u) = &azure {
            if device.device_name() != u.device {
                tracing::info!(%peer, client_id = %req.client_id, "MQTT connect refused: the client certificate is device '{}', the user name names '{}'", device.device_name(), u.device);
                return Err(Refusal::BadCredentials);
            }
        }
        let conn = DeviceConnection {
            azure: azure.map(|u| u.hub),
            dialect: dialect(&device),
            stream: StreamKey::new(device.app_name(), device.app_uid()),
            device,
            v5: req.protocol.is_v5(),
            commands: std::sync::Mutex::new(None),
            targets: std::sync::Mutex::new(std::collections::HashMap::new()),
            lookup: tokio::sync::Mutex::new(()),
            order: tokio::sync::Mutex::new(()),
        };
        Ok(Accepted::new(Arc::new(conn), key)
            .shared_subscriptions(false)
            .wildcard_subscriptions(true))
    }
}

fn credentials(req: &ConnectRequest) -> Option<DeviceCredentials> {
    let username = req.username.as_ref().map(|u| u.to_string());
    let password = req
        .password
        .as_ref()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    match (username, password) {
        (Some(username), Some(password)) => {
            if username.contains('@') {
                Some(DeviceCredentials::Password {
                    username,
                    password,
                    application: None,
                    device: None,
                })
            } else {
                // `user` credential: the client id says which device of which app.
                let (device, app) = req.client_id.rsplit_once('@')?;
                Some(DeviceCredentials::Password {
                    username,
                    password,
                    application: Some(app.to_string()),
                    device: Some(device.to_string()),
                })
            }
        }
        _ => req.connection.client_certificates.as_ref().map(|chain| {
            DeviceCredentials::Certificate {
                chain: chain.clone(),
                application: req
                    .client_id
                    .rsplit_once('@')
                    .map(|(_, app)| app.to_string()),
            }
        }),
    }
}

/// An Azure SDK device: a SAS token as password, or a client certificate; the hub's first
/// label names the application.
fn azure_credentials(
    req: &ConnectRequest,
    u: &crate::azure::Username,
) -> Option<DeviceCredentials> {
    let app = crate::azure::application_for_hub(&u.hub)?.to_string();
    match &req.password {
        Some(p) => Some(DeviceCredentials::Sas {
            application: app,
            device: u.device.clone(),
            hub: u.hub.clone(),
            token: String::from_utf8_lossy(p).into_owned(),
        }),
        None => req.connection.client_certificates.as_ref().map(|chain| {
            DeviceCredentials::Certificate {
                chain: chain.clone(),
                application: Some(app),
            }
        }),
    }
}

fn dialect(conn: &AuthenticatedDevice) -> MqttDialect {
    let of = |r: &Resource| {
        r.spec
            .get("mqtt")
            .and_then(|m| serde_json::from_value::<drover_model::spec::Mqtt>(m.clone()).ok())
            .map(|m| m.dialect)
    };
    of(&conn.device)
        .or_else(|| of(&conn.application))
        .unwrap_or_default()
}
