//! `drover serve`: binds every listener, opens the backends, builds the services, serves until
//! shutdown. [`start`] runs the stages in order, each in a module of its own:
//!
//! 1. [`bind`]: every listener (a port in use is a configuration problem, before any state is
//!    touched), and the TLS material if a TLS listener is on;
//! 2. [`backends`]: registry, administrator, event log, NATS and command routing between nodes;
//! 3. [`services`]: authentication, commands, the API, the device endpoints, the integration;
//! 4. [`serve`]: each listener on its protocol, with its limits; the orderly stop;
//! 5. [`tasks`]: background work (registry changes applied to live traffic, expired commands,
//!    change-feed pruning), and the twin relay and webhook delivery of `drover-integrations`;
//!    [`health`] says whether the node is ready.

mod backends;
mod bind;
mod device_ca;
mod health;
mod serve;
mod services;
mod tasks;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;

/// Why the server could not start. `Config` problems exit with code 64.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting cannot work (a port in use, an unreadable certificate, …): one line.
    #[error("{0}")]
    Config(String),
    /// Something the configuration could not have prevented failed.
    #[error("{context}: {source}")]
    Runtime {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StartError {
    /// `context` failed because of `source`.
    pub fn runtime(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StartError::Runtime {
            context: context.into(),
            source: source.into(),
        }
    }
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
    /// The provisioning ID scope devices give (DPS).
    pub id_scope: String,
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

/// Starts every part of the platform and returns once all listeners are bound.
pub async fn start(config: Config) -> Result<Server, StartError> {
    ensure_data_dir(&config.data_dir)?;
    let (listeners, addrs) = bind::Listeners::bind(&config).await?;
    drover_endpoints::tls::install_default_provider();
    let tls = if listeners.need_tls() {
        Some(match (&config.tls_cert, &config.tls_key) {
            (Some(c), Some(k)) => crate::tls::load(c, k)?,
            _ => crate::tls::development(
                &config.data_dir,
                &crate::tls::server_names(&config.public_hosts.0, config.hub_domain.as_deref()),
            )?,
        })
    } else {
        None
    };
    let dev_ca = tls.as_ref().and_then(|t| t.dev_ca.clone());
    warn_about_half_clusters(&config, dev_ca.is_some());

    let backends = backends::Backends::open(&config).await?;
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let device_ca = device_ca::load(&config, &backends).await?;
    let id_scope = config
        .id_scope
        .clone()
        .unwrap_or_else(|| device_ca::id_scope(&device_ca));
    let services = services::Services::build(
        &config,
        &backends,
        &addrs,
        device_ca,
        &id_scope,
        stop_rx.clone(),
    )?;
    let servers = serve::listeners(&config, listeners, &services, tls.as_ref(), &stop_rx)?;
    let background = vec![
        tokio::spawn(tasks::prune_changes(
            backends.registry.clone(),
            config.change_retention_days,
        )),
        tokio::spawn(tasks::expire_commands(
            backends.commands.clone(),
            backends.log.clone(),
            config.instance.clone(),
        )),
        tokio::spawn(tasks::follow_registry_changes(
            backends.registry.clone(),
            backends.directory.clone(),
            backends.log.clone(),
            services.mqtt.clone(),
        )),
        tokio::spawn(
            drover_integrations::twins::TwinRelay::new(
                backends.registry.clone(),
                backends.log.clone(),
                Some(backends.commands.clone()),
                config.instance.clone(),
            )
            .run(stop_rx.clone()),
        ),
    ];
    let webhooks = tokio::spawn(
        drover_integrations::webhooks::WebhookDelivery::new(
            backends.registry.clone(),
            backends.log.clone(),
            services.outbound.clone(),
            &config.instance,
        )
        .run(stop_rx.clone()),
    );
    let admin_token = backends.admin_token.clone();
    let running = serve::Running {
        stop,
        servers,
        services,
        background,
        webhooks,
        log: backends.log.clone(),
        registry: backends.registry.clone(),
        grace: Duration::from_secs(config.shutdown_grace),
    };
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        // The backends (NATS peers among them) live as long as the server.
        let _backends = backends;
        let _ = shutdown_rx.await;
        running.stop().await
    });
    Ok(Server {
        api_addr: addrs.api,
        http_addr: addrs.http,
        https_addr: addrs.https,
        mqtt_addr: addrs.mqtt,
        mqtts_addr: addrs.mqtts,
        integration_mqtt_addr: addrs.integration_mqtt,
        integration_mqtts_addr: addrs.integration_mqtts,
        dev_ca,
        admin_token,
        id_scope,
        shutdown: Some(shutdown_tx),
        task,
    })
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

/// A cluster needs both backends, and one certificate on every node.
fn warn_about_half_clusters(config: &Config, dev_ca: bool) {
    match (&config.database_url, &config.nats_url) {
        (Some(_), None) => tracing::warn!("PostgreSQL registry without NATS: event streams and commands stay on this node; run a single node, or set --nats-url on every node"),
        (None, Some(_)) => tracing::warn!("NATS without a PostgreSQL registry: this node keeps its own registry in its data directory; a cluster needs --database-url on every node"),
        _ => {}
    }
    if dev_ca && config.nats_url.is_some() {
        tracing::warn!("this node serves TLS with a development CA of its own: devices that trust it cannot connect to other nodes; give every node the same --tls-cert / --tls-key");
    }
}
