//! `drover serve`: opens the registry, binds every listener, serves until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use drover_api::{ApiSettings, ApiState};
use drover_auth::{OidcConfig, OidcValidator};
use drover_registry::{AdminBootstrap, Registry, SqliteRegistry};
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

/// Starts every part of the platform and returns once all listeners are bound.
pub async fn start(config: Config) -> Result<Server, StartError> {
    ensure_data_dir(&config.data_dir)?;
    let api_listener = bind(
        config.api_addr,
        "management API",
        "--api-addr",
        "DROVER_API_ADDR",
    )
    .await?;
    let api_addr = api_listener
        .local_addr()
        .map_err(|e| StartError::Runtime(format!("cannot read the bound address: {e}")))?;

    let db = config.data_dir.join("registry.db");
    let registry = Arc::new(
        SqliteRegistry::open(&db)
            .await
            .map_err(|e| StartError::Runtime(e.to_string()))?,
    );
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

    let http = reqwest_client()?;
    let oidc = config.oidc.as_ref().map(|o| {
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
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let (stop_streams_tx, stop_streams_rx) = tokio::sync::watch::channel(false);
    let state = ApiState {
        registry: registry.clone(),
        oidc,
        settings: Arc::new(ApiSettings {
            public_url: config.public_url.clone(),
            fallback_host: "localhost".into(),
            body_limit: config.api_body_limit,
            oidc_issuer: config.oidc.as_ref().map(|o| o.issuer_url.clone()),
            version: env!("CARGO_PKG_VERSION").into(),
            endpoints: Arc::new(|_| Vec::new()),
        }),
        shutdown: stop_streams_rx,
    };
    let router = drover_api::router(state);
    let grace = Duration::from_secs(config.shutdown_grace);
    let pruner = tokio::spawn(prune_changes(
        registry.clone(),
        config.change_retention_days,
    ));
    let (grace_tx, grace_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let serve = axum::serve(
            api_listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = shutdown_rx.await;
            // Long-lived streams (watch) end now so the drain can finish.
            let _ = stop_streams_tx.send(true);
            let _ = grace_tx.send(());
        });
        let mut serve = tokio::spawn(async move { serve.await });
        let result = tokio::select! {
            r = &mut serve => r.map_err(anyhow::Error::from).and_then(|r| r.map_err(anyhow::Error::from)),
            _ = async {
                let _ = grace_rx.await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!("requests still running after the shutdown grace period; closing them");
                serve.abort();
                Ok(())
            }
        };
        pruner.abort();
        registry.close().await;
        tracing::info!("stopped");
        result
    });
    Ok(Server {
        api_addr,
        admin_token,
        shutdown: Some(shutdown_tx),
        task,
    })
}

/// Prunes registry change events past their retention, at start and then hourly.
async fn prune_changes(registry: Arc<SqliteRegistry>, days: u32) {
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

fn reqwest_client() -> Result<reqwest::Client, StartError> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| StartError::Runtime(format!("cannot create HTTP client: {e}")))
}
