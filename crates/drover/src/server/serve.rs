//! Serving: every bound listener on its protocol, with its limits; and the orderly stop.

use std::sync::Arc;
use std::time::Duration;

use drover_mqtt::MqttServer;
use drover_net::http::HttpTimeouts;
use drover_net::Listener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::bind::Listeners;
use super::services::Services;
use super::StartError;
use crate::config::Config;
use crate::tls::TlsMaterial;

/// The running listeners.
pub(super) type Servers = JoinSet<anyhow::Result<()>>;

/// Serves every listener until `stop` turns true.
pub(super) fn listeners(
    config: &Config,
    listeners: Listeners,
    services: &Services,
    tls: Option<&TlsMaterial>,
    stop: &watch::Receiver<bool>,
) -> Result<Servers, StartError> {
    let timeouts = HttpTimeouts {
        header: config.http_header_timeout,
        body: config.http_body_timeout,
        idle: config.http_idle_timeout,
    };
    let mut servers = JoinSet::new();
    let api =
        Listener::new(listeners.api, "management API").max_connections(config.api_max_connections);
    servers.spawn(http(api, services.api.clone(), timeouts, stop.clone()));
    if let Some(l) = listeners.http {
        let l =
            Listener::new(l, "HTTP device endpoint").max_connections(config.http_max_connections);
        servers.spawn(http(
            l,
            services.device_http.clone(),
            timeouts,
            stop.clone(),
        ));
    }
    if let (Some(l), Some(tls)) = (listeners.https, tls) {
        // A client that connects and sends nothing is closed after the header timeout, as on
        // the plain HTTP port.
        let l = Listener::new(l, "HTTPS device endpoint")
            .max_connections(config.http_max_connections)
            .tls(acceptor(tls, &[b"h2", b"http/1.1"])?)
            .handshake_timeout(config.http_header_timeout);
        servers.spawn(http(
            l,
            services.device_http.clone(),
            timeouts,
            stop.clone(),
        ));
    }
    let mqtt = &services.mqtt;
    if let Some(l) = listeners.mqtt {
        let l =
            Listener::new(l, "MQTT device endpoint").max_connections(config.mqtt_max_connections);
        servers.spawn(mqtt_on(l, mqtt.clone(), stop.clone()));
    }
    if let (Some(l), Some(tls)) = (listeners.mqtts, tls) {
        let l = Listener::new(l, "MQTT-over-TLS device endpoint")
            .max_connections(config.mqtt_max_connections)
            .tls(acceptor(tls, &[b"mqtt"])?)
            .handshake_timeout(mqtt.config().connect_timeout);
        servers.spawn(mqtt_on(l, mqtt.clone(), stop.clone()));
    }
    let integration = &services.integration;
    if let Some(l) = listeners.integration_mqtt {
        let l = Listener::new(l, "MQTT integration")
            .max_connections(config.integration_max_connections);
        servers.spawn(mqtt_on(l, integration.clone(), stop.clone()));
    }
    if let (Some(l), Some(tls)) = (listeners.integration_mqtts, tls) {
        let l = Listener::new(l, "MQTT integration over TLS")
            .max_connections(config.integration_max_connections)
            .tls(acceptor(tls, &[b"mqtt"])?)
            .handshake_timeout(integration.config().connect_timeout);
        servers.spawn(mqtt_on(l, integration.clone(), stop.clone()));
    }
    Ok(servers)
}

/// Serves one HTTP listener until `stop` turns true, then drains it.
async fn http(
    listener: Listener,
    router: axum::Router,
    timeouts: HttpTimeouts,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    drover_net::http::serve(listener, router, timeouts, stopped(stop)).await;
    Ok(())
}

/// Serves one MQTT listener until `stop` turns true; then the server's connections close.
async fn mqtt_on<P: drover_mqtt::Policy>(
    listener: Listener,
    server: Arc<MqttServer<P>>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    drover_mqtt::serve(listener, server, stopped(stop)).await;
    Ok(())
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A TLS acceptor with the server's certificate, announcing `alpn`.
fn acceptor(tls: &TlsMaterial, alpn: &[&[u8]]) -> Result<tokio_rustls::TlsAcceptor, StartError> {
    drover_endpoints::tls::server_config(tls.chain.clone(), tls.key.clone(), alpn)
        .map(tokio_rustls::TlsAcceptor::from)
        .map_err(|e| StartError::Config(format!("{e} (--tls-cert / --tls-key)")))
}

/// What a stop winds down.
pub(super) struct Running {
    pub stop: watch::Sender<bool>,
    pub servers: Servers,
    pub services: Services,
    pub background: Vec<JoinHandle<()>>,
    /// The webhook delivery: it stops its tasks and gives its subscriptions up on `stop`.
    pub webhooks: JoinHandle<()>,
    pub log: Arc<dyn drover_bus::EventLog>,
    pub registry: Arc<dyn drover_registry::Registry>,
    pub grace: Duration,
}

impl Running {
    /// Stops accepting, ends long-lived streams (watch, WebSocket), lets requests drain within
    /// the grace period (then aborts them), lets integration consumers commit, closes the event
    /// log and the registry.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.services.mqtt.shutdown();
        self.services.integration.shutdown();
        let servers = &mut self.servers;
        let drained = tokio::time::timeout(self.grace, async {
            let mut result = Ok(());
            while let Some(r) = servers.join_next().await {
                if let Ok(Err(e)) = r {
                    result = Err(e);
                }
            }
            result
        })
        .await;
        let result = drained.unwrap_or_else(|_| {
            tracing::warn!("requests still running after the shutdown grace period; closing them");
            self.servers.abort_all();
            Ok(())
        });
        for b in &self.background {
            b.abort();
        }
        // Integration consumers and webhook deliveries make their last commits before the log
        // closes.
        let _ =
            tokio::time::timeout(Duration::from_secs(5), self.services.integration.closed()).await;
        if tokio::time::timeout(Duration::from_secs(5), &mut self.webhooks)
            .await
            .is_err()
        {
            self.webhooks.abort();
        }
        if let Err(e) = self.log.close().await {
            tracing::warn!("closing the event log: {e}");
        }
        self.registry.close().await;
        tracing::info!("stopped");
        result
    }
}
