//! `drover`: the Drover IoT platform in one binary.

use std::process::ExitCode;

mod cli;
mod migrate;

use clap::{Parser, Subcommand};
use drover::{AdminToken, Config, ServeArgs, StartError};

/// Exit code for configuration problems (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "drover",
    version,
    about = "Drover: an IoT cloud platform in one binary",
    propagate_version = true,
    after_help = "Examples:\n  drover serve                                   # run the platform\n  drover login http://localhost:8011 --token admin:drg_...\n  drover app create app1\n  drover device create dev1 --app app1 --password s3cret\n  drover stream app1\n\nEvery command has examples in its --help. Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 conflict."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Command {
    /// Run the platform: registry, management API, device endpoints and integrations.
    #[command(
        after_help = "Examples:\n  drover serve\n  drover serve --data-dir /var/lib/drover --api-addr 0.0.0.0:8011\n  drover serve --print-config"
    )]
    Serve {
        #[command(flatten)]
        args: ServeArgs,
        /// Print the effective configuration (secrets redacted) and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Move an embedded installation (SQLite registry, embedded event log) to a cluster's
    /// PostgreSQL registry and NATS JetStream log; stop the server first.
    #[command(
        after_help = "Copies applications, devices, members, users and token hashes (tokens keep working), the revision and the change feed into an empty PostgreSQL registry; with --nats-url also every application's retained events, in order, and the consumer groups' offsets. See docs/deployment.md.\n\nExamples:\n  drover migrate --data-dir ./drover-data --database-url postgres://drover@db/drover --dry-run\n  drover migrate --data-dir ./drover-data --database-url postgres://drover@db/drover --nats-url nats://nats:4222\n\nExit codes: 0 ok, 1 failure (nothing or, see the message, part was copied), 64 bad usage or configuration."
    )]
    Migrate {
        #[command(flatten)]
        args: migrate::MigrateArgs,
    },
    #[command(flatten)]
    Client(cli::ClientCommand),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  drover completions bash > ~/.local/share/bash-completion/completions/drover\n  drover completions zsh > \"${fpath[1]}/_drover\"\n  drover completions fish > ~/.config/fish/completions/drover.fish"
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `drover migrate` exits with 64 on bad usage, as on bad configuration.
        Err(e) if e.use_stderr() && std::env::args().nth(1).as_deref() == Some("migrate") => {
            let _ = e.print();
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) => e.exit(),
    };
    match cli.command {
        Command::Serve { args, print_config } => serve(args, print_config),
        Command::Migrate { args } => migrate::run(args),
        Command::Client(cmd) => cli::run(cmd),
        Command::Completions { shell } => {
            // Generated whole first: clap_complete panics on a failed write (`| head`).
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "drover", &mut script);
            cli::exit_code(cli::output::write_stdout(&script))
        }
    }
}

fn serve(args: ServeArgs, print_config: bool) -> ExitCode {
    let config = match Config::load(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if print_config {
        return cli::exit_code(cli::output::write_stdout(config.to_toml().as_bytes()));
    }
    init_tracing();
    let rt = match runtime(tokio::runtime::Builder::new_multi_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let server = match drover::start(config.clone()).await {
            Ok(s) => s,
            Err(StartError::Config(e)) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            Err(e @ StartError::Runtime { .. }) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let signal = shutdown_signal();
        banner(&config, &server);
        match server.run_until(signal).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}", error_line(e.as_ref()));
                ExitCode::FAILURE
            }
        }
    })
}

/// A Tokio runtime with every driver enabled, or (after saying why in one line) exit code 1.
fn runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("DROVER_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// What a newcomer needs: where things are and how to log in.
fn banner(config: &Config, server: &drover::Server) {
    let addr = server.api_addr;
    let url = match &config.public_url {
        Some(u) => u.clone(),
        None if addr.ip().is_unspecified() => format!("http://localhost:{}", addr.port()),
        None => format!("http://{addr}"),
    };
    println!("Drover {} is running.", env!("CARGO_PKG_VERSION"));
    println!("  Management API   {url}   (listening on {addr})");
    println!("  OpenAPI          {url}/api/openapi.json");
    print_endpoints(&url, server);
    print_storage(config);
    print_login(&url, &server.admin_token);
    println!("Press Ctrl+C to stop.");
}

/// The listeners devices and applications connect to.
fn print_endpoints(url: &str, server: &drover::Server) {
    let host = url.split_once("://").map(|(_, h)| h).unwrap_or(url);
    let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    let apps = "   (integration: app/<app>)";
    let listeners = [
        ("HTTP devices ", "http", server.http_addr, "/v1/<channel>"),
        ("HTTPS devices", "https", server.https_addr, "/v1/<channel>"),
        ("MQTT devices ", "mqtt", server.mqtt_addr, ""),
        ("MQTTS devices", "mqtts", server.mqtts_addr, ""),
        ("MQTT/WSS dev.", "wss", server.https_addr, "/mqtt"),
        ("MQTT apps    ", "mqtt", server.integration_mqtt_addr, apps),
        (
            "MQTTS apps   ",
            "mqtts",
            server.integration_mqtts_addr,
            apps,
        ),
    ];
    for (what, scheme, addr, path) in listeners {
        if let Some(a) = addr {
            println!(
                "  {what}    {scheme}://{host}:{}{path}   (listening on {a})",
                a.port()
            );
        }
    }
    if let Some(ca) = &server.dev_ca {
        println!(
            "  Development CA   {}   (trust it in clients, e.g. curl --cacert)",
            ca.display()
        );
    }
    println!(
        "  Provisioning     ID scope {}   (DPS: MQTT and HTTPS device listeners)",
        server.id_scope
    );
    let ws = url.replacen("http", "ws", 1);
    println!("  WebSocket        {ws}{}<app>", drover_api::WS_PATH);
    println!("  Change watch     {url}/api/registry/v1alpha1/watch");
}

/// Where the registry and the event log are.
fn print_storage(config: &Config) {
    println!("  Data directory   {}", config.data_dir.display());
    match &config.database_url {
        Some(u) => println!(
            "  Registry         PostgreSQL {} (schema {})",
            drover_model::redact_url(u),
            config.database_schema.as_deref().unwrap_or("public")
        ),
        None => println!(
            "  Registry         SQLite {}",
            config.data_dir.join("registry.db").display()
        ),
    }
    match &config.nats_url {
        Some(u) => println!(
            "  Event log        NATS JetStream {} (prefix {}); commands routed between nodes",
            drover_model::redact_url(u),
            config.nats_prefix
        ),
        None => println!(
            "  Event log        embedded {}",
            config.data_dir.join("events").display()
        ),
    }
}

/// How the administrator logs in.
fn print_login(url: &str, token: &AdminToken) {
    println!();
    match token {
        AdminToken::Generated { token, file } => {
            println!(
                "  Administrator token (shown once, saved to {}):",
                file.display()
            );
            println!("    admin:{token}");
            println!();
            println!("Log in with drg:");
            println!(
                "  drg login {url} --access-token admin:$(cat {})",
                file.display()
            );
        }
        AdminToken::Existing { file } if file.exists() => {
            println!("Log in with drg:");
            println!(
                "  drg login {url} --access-token admin:$(cat {})",
                file.display()
            );
        }
        AdminToken::Existing { file } => {
            println!(
                "The administrator already exists (another node created it). Its token is in the"
            );
            println!(
                "admin-token file of that node's data directory (not in {}):",
                file.display()
            );
            println!("  drg login {url} --access-token admin:<that token>");
        }
        AdminToken::Configured => {
            println!("Log in with drg:");
            println!("  drg login {url} --access-token admin:$DROVER_ADMIN_TOKEN");
        }
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called (not when the
/// future is first polled), so a signal sent right after the banner is never missed.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// An error on one line, with each of its causes its own message leaves out (the one way the
/// binary prints errors: most already show their causes, `anyhow` contexts do not).
pub(crate) fn error_line(e: &(dyn std::error::Error + 'static)) -> String {
    drover_model::error::chain(e)
}
