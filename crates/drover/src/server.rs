//! `drover serve`: opens the registry, binds every listener, serves until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use drover_api::{ApiSettings, ApiState};
use drover_auth::device::{DeviceAuthenticator, DeviceDirectory};
use drover_auth::throttle::{Throttle, ThrottleConfig};
use drover_auth::user::{UserAuthenticator, UserDirectory};
use drover_auth::{OidcConfig, OidcValidator};
use drover_bus::cluster::{ClusterConfig, NatsPeers, TakeoverHandler};
use drover_bus::commands::{CommandRouter, RouterConfig};
use drover_bus::embedded::{EmbeddedLog, LogConfig};
use drover_bus::nats::{JetStreamConfig, JetStreamLog};
use drover_bus::{EventLog, StreamKey};
use drover_endpoints::http::HttpSettings;
use drover_endpoints::mqtt::DevicePolicy;
use drover_integrations::limits::UserConnections;
use drover_integrations::mqtt::{IntegrationPolicy, IntegrationSettings};
use drover_integrations::outbound::{OutboundClient, OutboundPolicy};
use drover_model::Kind;
use drover_mqtt::{MqttConfig, MqttServer};
use drover_net::http::HttpTimeouts;
use drover_net::Listener;
use drover_registry::{AdminBootstrap, PgOptions, PostgresRegistry, Registry, SqliteRegistry};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;

/// Why the server could not start. `Config` problems exit with code 64.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Runtime(String),
}

/// How the administrator's token came about at this start.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminToken {
    /// Generated now; shown once and written to this file.
    Generated {
        token: String,
        file: PathBuf,
    },
    Configured,
    Existing {
        file: PathBuf,
    },
}

/// A running server.
pub struct Server {
    /// The bound address of the management API.
    pub api_addr: SocketAddr,
    /// The bound address of the HTTP device endpoint, when on.
    pub http_addr: Option<SocketAddr>,
    /// The bound address of the HTTPS device endpoint, when on.
    pub https_addr: Option<SocketAddr>,
    /// The bound address of the MQTT device endpoint, when on.
    pub mqtt_addr: Option<SocketAddr>,
    /// The bound address of the MQTT-over-TLS device endpoint, when on.
    pub mqtts_addr: Option<SocketAddr>,
    /// The bound address of the MQTT integration, when on.
    pub integration_mqtt_addr: Option<SocketAddr>,
    /// The bound address of the MQTT integration over TLS, when on.
    pub integration_mqtts_addr: Option<SocketAddr>,
    /// The generated development CA (when no certificate is configured): clients trust this file.
    pub dev_ca: Option<PathBuf>,
    pub admin_token: AdminToken,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Stops accepting, waits for requests to finish (within the grace period), closes the store.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await?
    }

    /// Runs until `signal` resolves, then shuts down.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        signal.await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}

fn ensure_data_dir(dir: &Path) -> Result<(), StartError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        StartError::Config(format!(
            "cannot create data directory {} (set --data-dir / DROVER_DATA_DIR): {e}",
            dir.display()
        ))
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

fn write_secret(path: &Path, content: &str) -> Result<(), StartError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| StartError::Runtime(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(format!("{content}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| StartError::Runtime(format!("cannot write {}: {e}", path.display())))
}

async fn bind(
    addr: SocketAddr,
    what: &str,
    flag: &str,
    env: &str,
) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|e| {
        StartError::Config(format!(
            "cannot listen on {addr} for the {what}: {e}; choose another address with {flag} / {env}"
        ))
    })
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

/// Starts every part of the platform and returns once all listeners are bound.
pub async fn start(config: Config) -> Result<Server, StartError> {
    ensure_data_dir(&config.data_dir)?;
    // Bind everything first: a port in use is a configuration problem, reported before any state
    // is touched.
    let api_listener = bind(
        config.api_addr,
        "management API",
        "--api-addr",
        "DROVER_API_ADDR",
    )
    .await?;
    let api_addr = local_addr(&api_listener)?;
    let (http_listener, http_addr) = bind_optional(
        config.http_addr,
        "HTTP device endpoint",
        "--http-addr",
        "DROVER_HTTP_ADDR",
    )
    .await?;
    let (https_listener, https_addr) = bind_optional(
        config.https_addr,
        "HTTPS device endpoint",
        "--https-addr",
        "DROVER_HTTPS_ADDR",
    )
    .await?;
    let (mqtt_listener, mqtt_addr) = bind_optional(
        config.mqtt_addr,
        "MQTT device endpoint",
        "--mqtt-addr",
        "DROVER_MQTT_ADDR",
    )
    .await?;
    let (mqtts_listener, mqtts_addr) = bind_optional(
        config.mqtts_addr,
        "MQTT-over-TLS device endpoint",
        "--mqtts-addr",
        "DROVER_MQTTS_ADDR",
    )
    .await?;
    let (imqtt_listener, integration_mqtt_addr) = bind_optional(
        config.integration_mqtt_addr,
        "MQTT integration",
        "--integration-mqtt-addr",
        "DROVER_INTEGRATION_MQTT_ADDR",
    )
    .await?;
    let (imqtts_listener, integration_mqtts_addr) = bind_optional(
        config.integration_mqtts_addr,
        "MQTT integration over TLS",
        "--integration-mqtts-addr",
        "DROVER_INTEGRATION_MQTTS_ADDR",
    )
    .await?;
    drover_endpoints::tls::install_default_provider();
    let tls = if https_listener.is_some() || mqtts_listener.is_some() || imqtts_listener.is_some() {
        Some(match (&config.tls_cert, &config.tls_key) {
            (Some(c), Some(k)) => crate::tls::load(c, k)?,
            _ => crate::tls::development(&config.data_dir)?,
        })
    } else {
        None
    };
    let dev_ca = tls.as_ref().and_then(|t| t.dev_ca.clone());
    match (&config.database_url, &config.nats_url) {
        (Some(_), None) => tracing::warn!("PostgreSQL registry without NATS: event streams and commands stay on this node; run a single node, or set --nats-url on every node"),
        (None, Some(_)) => tracing::warn!("NATS without a PostgreSQL registry: this node keeps its own registry in its data directory; a cluster needs --database-url on every node"),
        _ => {}
    }
    if dev_ca.is_some() && config.nats_url.is_some() {
        tracing::warn!("this node serves TLS with a development CA of its own: devices that trust it cannot connect to other nodes; give every node the same --tls-cert / --tls-key");
    }

    type Directories = (
        Arc<dyn Registry>,
        Arc<dyn DeviceDirectory>,
        Arc<dyn UserDirectory>,
    );
    let (registry, directory, user_directory): Directories = match &config.database_url {
        Some(url) => {
            let pg = Arc::new(
                    PostgresRegistry::connect(
                        url,
                        PgOptions {
                            schema: config.database_schema.clone(),
                            max_connections: config.database_max_connections,
                            ..PgOptions::default()
                        },
                    )
                    .await
                    .map_err(|e| {
                        StartError::Runtime(format!(
                            "cannot open the PostgreSQL registry (--database-url / DROVER_DATABASE_URL): {e}"
                        ))
                    })?,
                );
            (pg.clone(), pg.clone(), pg)
        }
        None => {
            let sqlite = Arc::new(
                SqliteRegistry::open(&config.data_dir.join("registry.db"))
                    .await
                    .map_err(|e| StartError::Runtime(e.to_string()))?,
            );
            (sqlite.clone(), sqlite.clone(), sqlite)
        }
    };
    let token_file = config.data_dir.join("admin-token");
    let admin_token = match registry
        .bootstrap_admin(config.admin_token.as_deref())
        .await
        .map_err(|e| StartError::Runtime(e.to_string()))?
    {
        AdminBootstrap::Generated(token) => {
            write_secret(&token_file, &token)?;
            AdminToken::Generated {
                token,
                file: token_file,
            }
        }
        AdminBootstrap::Configured => AdminToken::Configured,
        AdminBootstrap::Existing => AdminToken::Existing { file: token_file },
    };

    let log_config = LogConfig {
        max_age: Duration::from_secs(u64::from(config.event_retention_days) * 24 * 3600),
        max_stream_bytes: config.event_retention_bytes,
        // One application's damaged files take its stream out of service, not the server.
        isolate_broken_streams: true,
        ..LogConfig::default()
    };
    let mut embedded = None;
    let (log, jetstream): (Arc<dyn EventLog>, Option<Arc<JetStreamLog>>) = match &config.nats_url {
        Some(url) => {
            let js = Arc::new(
                JetStreamLog::connect(JetStreamConfig {
                    url: url.clone(),
                    prefix: config.nats_prefix.clone(),
                    max_age: log_config.max_age,
                    max_bytes_per_stream: log_config.max_stream_bytes,
                    replicas: config.nats_replicas,
                    connection_name: Some(format!("drover {} (events)", config.instance)),
                    ..JetStreamConfig::default()
                })
                .await
                .map_err(|e| {
                    StartError::Runtime(format!(
                        "cannot open the JetStream event log at {} (--nats-url / DROVER_NATS_URL): {e}",
                        drover_model::redact_url(url)
                    ))
                })?,
            );
            (js.clone(), Some(js))
        }
        None => {
            let log = Arc::new(
                EmbeddedLog::open(&config.data_dir.join("events"), log_config)
                    .await
                    .map_err(|e| StartError::Runtime(format!("cannot open the event log: {e}")))?,
            );
            embedded = Some(log.clone());
            (log, None)
        }
    };
    let nats = match &config.nats_url {
        Some(url) => Some(connect_nats(url, &config.instance).await?),
        None => None,
    };
    let commands = CommandRouter::new(RouterConfig::default());
    // This node's name among its peers: unique even if instances share a name, new per start.
    let node = format!(
        "{}-{}",
        config.instance,
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    // On a cluster, the device's other connections are closed when it connects here; the MQTT
    // server that holds them exists only further down.
    let mqtt_slot: Arc<std::sync::OnceLock<std::sync::Weak<MqttServer<DevicePolicy>>>> =
        Arc::default();
    let _peers = match &nats {
        Some(client) => {
            let slot = mqtt_slot.clone();
            let takeover: TakeoverHandler = Arc::new(move |app: &str, device: &str| {
                if let Some(mqtt) = slot.get().and_then(std::sync::Weak::upgrade) {
                    if let Some(session) = mqtt.session(&format!("{app}/{device}")) {
                        if session.disconnect(drover_mqtt::ReasonCode::SESSION_TAKEN_OVER) {
                            tracing::info!(
                                app,
                                device,
                                "the device connected to another node: closed its connection here"
                            );
                        }
                    }
                }
            });
            Some(
                NatsPeers::start(
                    client.clone(),
                    ClusterConfig {
                        prefix: config.nats_prefix.clone(),
                        node: node.clone(),
                        replicas: config.nats_replicas,
                        ..ClusterConfig::default()
                    },
                    &commands,
                    takeover,
                )
                .await
                .map_err(|e| StartError::Runtime(e.to_string()))?,
            )
        }
        None => None,
    };
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
        .map_err(|e| StartError::Runtime(e.to_string()))?;
    let command_service = Arc::new(drover_integrations::commands::CommandService::new(
        registry.clone(),
        commands.clone(),
        log.clone(),
        config.instance.clone(),
        outbound,
    ));
    let throttle = Arc::new(Throttle::new(throttle_config(&config)));
    let authenticator = Arc::new(DeviceAuthenticator::with_throttle(
        directory.clone(),
        throttle.clone(),
    ));

    let http = reqwest_client()?;
    let oidc = config.oidc().map(|o| {
        OidcValidator::new(
            OidcConfig {
                issuer_url: o.issuer_url.clone(),
                audience: o.audience.clone(),
                username_claim: o.username_claim.clone(),
                jwks_url: o.jwks_url.clone(),
            },
            http.clone(),
        )
    });
    let users = Arc::new(UserAuthenticator::new(
        user_directory,
        oidc,
        throttle.clone(),
    ));
    let user_connections = UserConnections::new(config.integration_max_connections_per_user);
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let advertised_http = http_addr.map(|a| a.port());
    let advertised_https = https_addr.map(|a| a.port());
    let advertised_mqtt = mqtts_addr.or(mqtt_addr).map(|a| a.port());
    let advertised_integration = integration_mqtts_addr
        .or(integration_mqtt_addr)
        .map(|a| a.port());
    let state = ApiState {
        registry: registry.clone(),
        log: Some(log.clone()),
        commands: Some(command_service.clone()),
        users: users.clone(),
        user_connections: user_connections.clone(),
        settings: Arc::new(ApiSettings {
            public_url: config.public_url.clone(),
            fallback_host: "localhost".into(),
            body_limit: config.api_body_limit,
            oidc_issuer: config.oidc_issuer_url.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            endpoints: Arc::new(move |host: &str| {
                let mut v = Vec::new();
                match (advertised_https, advertised_http) {
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
                if let Some(port) = advertised_mqtt {
                    v.push((
                        "mqtt".to_string(),
                        serde_json::json!({ "host": host, "port": port }),
                    ));
                }
                if let Some(port) = advertised_integration {
                    v.push((
                        "mqtt_integration".to_string(),
                        serde_json::json!({ "host": host, "port": port }),
                    ));
                }
                v
            }),
            ws_max_lag: config.ws_max_lag,
            ws_send_timeout: config.ws_send_timeout,
            readiness: Some(readiness(
                registry.clone(),
                nats.clone(),
                jetstream.clone(),
                embedded,
            )),
            outbound: outbound_policy,
        }),
        shutdown: stop_rx.clone(),
    };

    let limits = &config;
    let http_timeouts = HttpTimeouts {
        header: limits.http_header_timeout,
        body: limits.http_body_timeout,
        idle: limits.http_idle_timeout,
    };
    let mut servers = tokio::task::JoinSet::new();
    servers.spawn(serve_http(
        Listener::new(api_listener, "management API").max_connections(limits.api_max_connections),
        drover_api::router(state),
        http_timeouts,
        stop_rx.clone(),
    ));
    let device_http = drover_endpoints::http::router(
        authenticator.clone(),
        log.clone(),
        commands.clone(),
        HttpSettings {
            body_limit: config.http_body_limit,
            instance: config.instance.clone(),
            ..HttpSettings::default()
        },
    );
    if let Some(listener) = http_listener {
        servers.spawn(serve_http(
            Listener::new(listener, "HTTP device endpoint")
                .max_connections(limits.http_max_connections),
            device_http.clone(),
            http_timeouts,
            stop_rx.clone(),
        ));
    }
    let mqtt = MqttServer::new(
        DevicePolicy::new(
            authenticator.clone(),
            log.clone(),
            commands.clone(),
            config.instance.clone(),
        ),
        // Publishes of one connection are processed concurrently (PUBACKs stay in order and
        // the device policy keeps the log order), so a device's throughput is not bound by
        // the latency of one fsync.
        MqttConfig {
            inbound_concurrency: 64,
            ..mqtt_config(&config)
        },
    );
    let _ = mqtt_slot.set(Arc::downgrade(&mqtt));
    if let Some(listener) = mqtt_listener {
        let listener = Listener::new(listener, "MQTT device endpoint")
            .max_connections(limits.mqtt_max_connections);
        servers.spawn(serve_mqtt(listener, mqtt.clone(), stop_rx.clone()));
    }
    if let (Some(listener), Some(tls)) = (mqtts_listener, &tls) {
        let listener = Listener::new(listener, "MQTT-over-TLS device endpoint")
            .max_connections(limits.mqtt_max_connections)
            .tls(tls_acceptor(tls, &[b"mqtt"])?)
            .handshake_timeout(mqtt.config().connect_timeout);
        servers.spawn(serve_mqtt(listener, mqtt.clone(), stop_rx.clone()));
    }
    let mut integration = IntegrationPolicy::new(
        registry.clone(),
        users.clone(),
        log.clone(),
        IntegrationSettings {
            max_lag: config.integration_max_lag,
            ..IntegrationSettings::default()
        },
    )
    .with_commands(command_service.clone())
    .with_user_connections(user_connections.clone());
    if let Some(client) = &nats {
        integration = integration.with_group_peers(drover_bus::cluster::NatsGroups::new(
            client.clone(),
            config.nats_prefix.clone(),
            node.clone(),
            log.clone(),
        ));
    }
    let integration = integration.into_server(mqtt_config(&config));
    if let Some(listener) = imqtt_listener {
        let listener = Listener::new(listener, "MQTT integration")
            .max_connections(limits.integration_max_connections);
        servers.spawn(serve_mqtt(listener, integration.clone(), stop_rx.clone()));
    }
    if let (Some(listener), Some(tls)) = (imqtts_listener, &tls) {
        let listener = Listener::new(listener, "MQTT integration over TLS")
            .max_connections(limits.integration_max_connections)
            .tls(tls_acceptor(tls, &[b"mqtt"])?)
            .handshake_timeout(integration.config().connect_timeout);
        servers.spawn(serve_mqtt(listener, integration.clone(), stop_rx.clone()));
    }
    if let (Some(listener), Some(tls)) = (https_listener, &tls) {
        // A client that connects and sends nothing is closed after the header timeout, as on
        // the plain HTTP port.
        let listener = Listener::new(listener, "HTTPS device endpoint")
            .max_connections(limits.http_max_connections)
            .tls(tls_acceptor(tls, &[b"h2", b"http/1.1"])?)
            .handshake_timeout(limits.http_header_timeout);
        servers.spawn(serve_http(
            listener,
            device_http,
            http_timeouts,
            stop_rx.clone(),
        ));
    }
    let background = vec![
        tokio::spawn(prune_changes(
            registry.clone(),
            config.change_retention_days,
        )),
        tokio::spawn(expire_commands(
            commands.clone(),
            log.clone(),
            config.instance.clone(),
        )),
        tokio::spawn(follow_registry_changes(
            registry.clone(),
            directory.clone(),
            log.clone(),
            mqtt.clone(),
        )),
    ];
    let grace = Duration::from_secs(config.shutdown_grace);
    let task = tokio::spawn(async move {
        let _ = shutdown_rx.await;
        // Stop accepting, end long-lived streams (watch, WebSocket), let requests drain.
        let _ = stop_tx.send(true);
        mqtt.shutdown();
        integration.shutdown();
        let drained = tokio::time::timeout(grace, async {
            let mut result = Ok(());
            while let Some(r) = servers.join_next().await {
                if let Ok(Err(e)) = r {
                    result = Err(e);
                }
            }
            result
        })
        .await;
        let result = match drained {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(
                    "requests still running after the shutdown grace period; closing them"
                );
                servers.abort_all();
                Ok(())
            }
        };
        for b in background {
            b.abort();
        }
        // Integration consumers make their last commits before the log closes.
        let _ = tokio::time::timeout(Duration::from_secs(5), integration.closed()).await;
        if let Err(e) = log.close().await {
            tracing::warn!("closing the event log: {e}");
        }
        registry.close().await;
        tracing::info!("stopped");
        result
    });
    Ok(Server {
        api_addr,
        http_addr,
        https_addr,
        mqtt_addr,
        mqtts_addr,
        integration_mqtt_addr,
        integration_mqtts_addr,
        dev_ca,
        admin_token,
        shutdown: Some(shutdown_tx),
        task,
    })
}

/// Binds a listener that may be `off` (`None`); returns it with its bound address.
async fn bind_optional(
    addr: Option<SocketAddr>,
    what: &str,
    flag: &str,
    env: &str,
) -> Result<(Option<TcpListener>, Option<SocketAddr>), StartError> {
    match addr {
        Some(a) => {
            let l = bind(a, what, flag, env).await?;
            let bound = local_addr(&l)?;
            Ok((Some(l), Some(bound)))
        }
        None => Ok((None, None)),
    }
}

fn local_addr(l: &TcpListener) -> Result<SocketAddr, StartError> {
    l.local_addr()
        .map_err(|e| StartError::Runtime(format!("cannot read the bound address: {e}")))
}

/// Serves one HTTP listener until `stop` turns true, then drains it.
async fn serve_http(
    listener: Listener,
    router: axum::Router,
    timeouts: HttpTimeouts,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    drover_net::http::serve(listener, router, timeouts, stopped(stop)).await;
    Ok(())
}

/// Serves one MQTT listener until `stop` turns true; then the server's connections close.
async fn serve_mqtt<P: drover_mqtt::Policy>(
    listener: Listener,
    server: Arc<MqttServer<P>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    drover_mqtt::serve(listener, server, stopped(stop)).await;
    Ok(())
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A TLS acceptor with the server's certificate, announcing `alpn`.
fn tls_acceptor(
    tls: &crate::tls::TlsMaterial,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::TlsAcceptor, StartError> {
    drover_endpoints::tls::server_config(tls.chain.clone(), tls.key.clone(), alpn)
        .map(tokio_rustls::TlsAcceptor::from)
        .map_err(|e| StartError::Config(format!("{e} (--tls-cert / --tls-key)")))
}

/// Follows the registry's change feed and applies what it means for live traffic:
/// - an application deleted for good loses its event stream;
/// - a device that is deleted, disabled or whose credentials changed is disconnected (it must
///   authenticate again, with what the registry says now);
/// - every device of an application that is disabled or being deleted is disconnected.
async fn follow_registry_changes(
    registry: Arc<dyn Registry>,
    directory: Arc<dyn DeviceDirectory>,
    log: Arc<dyn EventLog>,
    mqtt: Arc<MqttServer<DevicePolicy>>,
) {
    let mut rx = registry.subscribe();
    let mut since = *rx.borrow_and_update();
    loop {
        let batch = match registry.changes_since(since, 500).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("cannot read registry changes: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() {
            if rx.changed().await.is_err() {
                return;
            }
            continue;
        }
        for c in batch {
            since = c.revision;
            match (c.kind, &c.device) {
                (Kind::Application, _) => {
                    application_changed(&registry, &directory, &log, &mqtt, &c).await
                }
                (Kind::Device, Some(device)) => {
                    let relevant = matches!(
                        c.path.as_str(),
                        "." | ".metadata"
                            | ".spec.core"
                            | ".spec.authentication"
                            | ".spec.credentials"
                    );
                    if !relevant {
                        continue;
                    }
                    let live = match directory.device(&c.application, device).await {
                        Ok(Some(d)) => {
                            d.metadata.uid == c.uid
                                && !d.is_deleting()
                                && !drover_model::spec::disabled(&d.spec)
                        }
                        Ok(None) => false,
                        Err(_) => continue,
                    };
                    let credentials =
                        c.path.starts_with(".spec.authentication") || c.path == ".spec.credentials";
                    if !live || credentials {
                        let why = if live {
                            "its credentials changed"
                        } else {
                            "it was deleted or disabled"
                        };
                        kick(&mqtt, &c.application, device, why);
                    }
                }
                (Kind::Device, None) => {}
            }
        }
    }
}

async fn application_changed(
    registry: &Arc<dyn Registry>,
    directory: &Arc<dyn DeviceDirectory>,
    log: &Arc<dyn EventLog>,
    mqtt: &Arc<MqttServer<DevicePolicy>>,
    c: &drover_registry::Change,
) {
    let app = match directory.application(&c.application).await {
        Ok(app) => app.filter(|a| a.metadata.uid == c.uid),
        Err(_) => return,
    };
    match app {
        None if c.path == "." => {
            let key = StreamKey::new(c.application.clone(), c.uid.clone());
            match log.delete_stream(&key).await {
                Ok(()) => {
                    tracing::info!(app = %c.application, "deleted the event stream of a deleted application")
                }
                Err(e) => tracing::warn!(app = %c.application, "cannot delete event stream: {e}"),
            }
        }
        Some(app) if app.is_deleting() || drover_model::spec::disabled(&app.spec) => {
            let system = drover_model::Principal::SystemAdmin("drover".into());
            if let Ok(devices) = registry
                .list_devices(&system, &c.application, &Default::default())
                .await
            {
                for d in devices.items {
                    kick(
                        mqtt,
                        &c.application,
                        &d.metadata.name,
                        "its application was disabled or is being deleted",
                    );
                }
            }
        }
        _ => {}
    }
}

/// Disconnects a device's MQTT connection, if it has one.
fn kick(mqtt: &MqttServer<DevicePolicy>, app: &str, device: &str, why: &str) {
    if let Some(session) = mqtt.session(&format!("{app}/{device}")) {
        if session.disconnect(drover_mqtt::ReasonCode::NOT_AUTHORIZED) {
            tracing::info!(app, device, "disconnected the device: {why}");
        }
    }
}

/// Reports queued commands whose time to live ended, as events in their application's stream.
async fn expire_commands(commands: Arc<CommandRouter>, log: Arc<dyn EventLog>, instance: String) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for c in commands.expire(std::time::Instant::now()) {
            tracing::info!(app = %c.app, device = %c.device, command = %c.name, "queued command expired undelivered");
            let event = drover_model::Event {
                id: uuid::Uuid::new_v4().to_string(),
                ty: drover_model::event::COMMAND_EXPIRED_TYPE.to_string(),
                channel: c.name.clone(),
                time: chrono::Utc::now(),
                content_type: c.content_type.clone(),
                data_schema: None,
                application: c.app.clone(),
                application_uid: c.app_uid.clone(),
                device: c.device.clone(),
                device_uid: String::new(),
                sender: c.device.clone(),
                sender_uid: String::new(),
                instance: instance.clone(),
                extensions: vec![("commandid".into(), c.id.clone())],
                data: c.payload.clone(),
            };
            if let Err(e) = log
                .append(&StreamKey::new(c.app.clone(), c.app_uid.clone()), event)
                .await
            {
                tracing::warn!("cannot record an expired command: {e}");
            }
        }
    }
}

/// Prunes registry change events past their retention, at start and then hourly.
async fn prune_changes(registry: Arc<dyn Registry>, days: u32) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let before = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
        match registry.prune_changes(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!("pruned {n} registry change events older than {days} days"),
            Err(e) => tracing::warn!("cannot prune registry change events: {e}"),
        }
    }
}

/// Connects to NATS (the event log and command routing of a cluster). Unreachable at start is
/// an error; later outages are ridden out by the client's reconnects.
async fn connect_nats(url: &str, instance: &str) -> Result<async_nats::Client, StartError> {
    let shown = drover_model::redact_url(url);
    async_nats::ConnectOptions::new()
        .name(format!("drover {instance}"))
        .connection_timeout(Duration::from_secs(5))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Disconnected => {
                    tracing::warn!("NATS connection lost; reconnecting")
                }
                async_nats::Event::Connected => tracing::info!("NATS connected"),
                other => tracing::info!("NATS: {other}"),
            }
        })
        .connect(url)
        .await
        .map_err(|e| {
            StartError::Runtime(format!(
                "cannot connect to NATS at {shown} (--nats-url / DROVER_NATS_URL): {e}"
            ))
        })
}

/// `/health/ready`: the registry answers a query, and NATS (when used) is connected; the
/// embedded log is degraded (the node stays ready) while a stream is out of service.
fn readiness(
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

fn reqwest_client() -> Result<reqwest::Client, StartError> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| StartError::Runtime(format!("cannot create HTTP client: {e}")))
}
