//! Opening the backends: the registry (SQLite, or PostgreSQL on a cluster), the event log
//! (embedded, or NATS JetStream), NATS itself and the command routing between nodes; and
//! bootstrapping the administrator.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use drover_auth::device::DeviceDirectory;
use drover_auth::user::UserDirectory;
use drover_bus::cluster::{ClusterConfig, NatsPeers, TakeoverHandler};
use drover_bus::commands::{CommandRouter, RouterConfig};
use drover_bus::embedded::{EmbeddedLog, LogConfig};
use drover_bus::nats::{JetStreamConfig, JetStreamLog};
use drover_bus::EventLog;
use drover_endpoints::mqtt::DevicePolicy;
use drover_mqtt::MqttServer;
use drover_registry::{AdminBootstrap, PgOptions, PostgresRegistry, Registry, SqliteRegistry};

use super::{AdminToken, StartError};
use crate::config::Config;

/// The device endpoint's MQTT server, once it exists: commands from other nodes close its
/// connections (a device that connected elsewhere), and it is made after the backends.
pub(super) type MqttSlot = Arc<OnceLock<Weak<MqttServer<DevicePolicy>>>>;

/// What the services run on.
pub(super) struct Backends {
    pub registry: Arc<dyn Registry>,
    pub directory: Arc<dyn DeviceDirectory>,
    pub users: Arc<dyn UserDirectory>,
    pub admin_token: AdminToken,
    pub log: Arc<dyn EventLog>,
    /// The embedded log, when used (its health is reported).
    pub embedded: Option<Arc<EmbeddedLog>>,
    /// The JetStream log, when used.
    pub jetstream: Option<Arc<JetStreamLog>>,
    pub nats: Option<async_nats::Client>,
    pub commands: Arc<CommandRouter>,
    /// This node's name among its peers: unique even if instances share a name, new per start.
    pub node: String,
    pub mqtt_slot: MqttSlot,
    /// Command routing between nodes (kept alive while the server runs).
    pub _peers: Option<Arc<NatsPeers>>,
}

impl Backends {
    pub async fn open(config: &Config) -> Result<Backends, StartError> {
        let (registry, directory, users) = open_registry(config).await?;
        let admin_token = bootstrap_admin(&*registry, config).await?;
        let (log, embedded, jetstream) = open_log(config).await?;
        let nats = match &config.nats_url {
            Some(url) => Some(connect_nats(url, &config.instance).await?),
            None => None,
        };
        let commands = CommandRouter::new(RouterConfig::default());
        let node = format!(
            "{}-{}",
            config.instance,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mqtt_slot = MqttSlot::default();
        let peers = match &nats {
            Some(client) => {
                Some(start_peers(config, client, &commands, &node, mqtt_slot.clone()).await?)
            }
            None => None,
        };
        Ok(Backends {
            registry,
            directory,
            users,
            admin_token,
            log,
            embedded,
            jetstream,
            nats,
            commands,
            node,
            mqtt_slot,
            _peers: peers,
        })
    }
}

type Directories = (
    Arc<dyn Registry>,
    Arc<dyn DeviceDirectory>,
    Arc<dyn UserDirectory>,
);

async fn open_registry(config: &Config) -> Result<Directories, StartError> {
    Ok(match &config.database_url {
        Some(url) => {
            let options = PgOptions {
                schema: config.database_schema.clone(),
                max_connections: config.database_max_connections,
                ..PgOptions::default()
            };
            let pg = Arc::new(PostgresRegistry::connect(url, options).await.map_err(|e| {
                StartError::runtime(
                    "cannot open the PostgreSQL registry (--database-url / DROVER_DATABASE_URL)",
                    e,
                )
            })?);
            (pg.clone(), pg.clone(), pg)
        }
        None => {
            let path = config.data_dir.join("registry.db");
            let sqlite = Arc::new(
                SqliteRegistry::open(&path)
                    .await
                    .map_err(|e| StartError::runtime("cannot open the registry", e))?,
            );
            (sqlite.clone(), sqlite.clone(), sqlite)
        }
    })
}

/// Ensures the administrator exists; a generated token is written to `<data_dir>/admin-token`.
async fn bootstrap_admin(
    registry: &dyn Registry,
    config: &Config,
) -> Result<AdminToken, StartError> {
    let token_file = config.data_dir.join("admin-token");
    let bootstrap = registry
        .bootstrap_admin(config.admin_token.as_deref())
        .await
        .map_err(|e| StartError::runtime("cannot set up the administrator", e))?;
    Ok(match bootstrap {
        AdminBootstrap::Generated(token) => {
            write_secret(&token_file, &token)?;
            AdminToken::Generated {
                token,
                file: token_file,
            }
        }
        AdminBootstrap::Configured => AdminToken::Configured,
        AdminBootstrap::Existing => AdminToken::Existing { file: token_file },
    })
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
    let failed = |e| StartError::runtime(format!("cannot write {}", path.display()), e);
    let mut f = opts.open(path).map_err(failed)?;
    f.write_all(format!("{content}\n").as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(failed)
}

type Logs = (
    Arc<dyn EventLog>,
    Option<Arc<EmbeddedLog>>,
    Option<Arc<JetStreamLog>>,
);

async fn open_log(config: &Config) -> Result<Logs, StartError> {
    let log_config = LogConfig {
        max_age: Duration::from_secs(u64::from(config.event_retention_days) * 24 * 3600),
        max_stream_bytes: config.event_retention_bytes,
        // One application's damaged files take its stream out of service, not the server.
        isolate_broken_streams: true,
        ..LogConfig::default()
    };
    Ok(match &config.nats_url {
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
                    StartError::runtime(
                        format!(
                            "cannot open the JetStream event log at {} (--nats-url / DROVER_NATS_URL)",
                            drover_model::redact_url(url)
                        ),
                        e,
                    )
                })?,
            );
            (js.clone(), None, Some(js))
        }
        None => {
            let dir: PathBuf = config.data_dir.join("events");
            let log = Arc::new(
                EmbeddedLog::open(&dir, log_config)
                    .await
                    .map_err(|e| StartError::runtime("cannot open the event log", e))?,
            );
            (log.clone(), Some(log), None)
        }
    })
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
            StartError::runtime(
                format!("cannot connect to NATS at {shown} (--nats-url / DROVER_NATS_URL)"),
                e,
            )
        })
}

/// Command routing between the nodes; a device that connects to another node has its
/// connection here closed.
async fn start_peers(
    config: &Config,
    client: &async_nats::Client,
    commands: &Arc<CommandRouter>,
    node: &str,
    slot: MqttSlot,
) -> Result<Arc<NatsPeers>, StartError> {
    let takeover: TakeoverHandler = Arc::new(move |app: &str, device: &str| {
        let Some(mqtt) = slot.get().and_then(Weak::upgrade) else {
            return;
        };
        if let Some(session) = mqtt.session(&format!("{app}/{device}")) {
            if session.disconnect(drover_mqtt::ReasonCode::SESSION_TAKEN_OVER) {
                tracing::info!(
                    app,
                    device,
                    "the device connected to another node: closed its connection here"
                );
            }
        }
    });
    let cluster = ClusterConfig {
        prefix: config.nats_prefix.clone(),
        node: node.to_string(),
        replicas: config.nats_replicas,
        ..ClusterConfig::default()
    };
    NatsPeers::start(client.clone(), cluster, commands, takeover)
        .await
        .map_err(|e| StartError::runtime("cannot start the command routing between nodes", e))
}
