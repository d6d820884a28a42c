//! The `drover` command-line client: contexts, registry (with `edit`, members, ownership transfer
//! and certificates), users, tokens, commands and the live event stream, over the REST API and
//! the WebSocket integration. Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 conflict.

pub mod certs;
pub mod client;
pub mod config;
pub mod edit;
pub mod members;
pub mod output;
pub mod stream;
pub mod watch;

use std::process::ExitCode;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Map, Value};

use client::{seg, Api};
use config::{ClientConfig, Context};
use output::{age, labels, list, print_doc, print_table, Format};

/// A failed command, with its exit code.
#[derive(Debug)]
pub enum CliError {
    /// Anything else (exit 1).
    Other(String),
    /// Bad arguments (exit 2).
    Usage(String),
    /// Not found (exit 3).
    NotFound(String),
    /// Conflict (exit 4).
    Conflict(String),
}

impl CliError {
    pub fn code(&self) -> u8 {
        match self {
            CliError::Other(_) => 1,
            CliError::Usage(_) => 2,
            CliError::NotFound(_) => 3,
            CliError::Conflict(_) => 4,
        }
    }
    fn message(&self) -> &str {
        match self {
            CliError::Other(m)
            | CliError::Usage(m)
            | CliError::NotFound(m)
            | CliError::Conflict(m) => m,
        }
    }
}

type Result<T> = std::result::Result<T, CliError>;

const REGISTRY: &str = "/api/registry/v1alpha1";
const ADMIN: &str = "/api/admin/v1alpha1";
const TOKENS: &str = "/api/tokens/v1alpha1";
const COMMANDS: &str = "/api/command/v1alpha1";

/// Options every client command takes.
#[derive(Debug, Args, Clone)]
pub struct Global {
    /// The context (server and credentials) to use instead of the current one.
    #[arg(long, global = true, env = "DROVER_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// The client subcommands, flattened into the binary's command list next to `serve`.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Log in to a Drover server with an access token and make it the current context.
    #[command(
        after_help = "Examples:\n  drover login http://localhost:8080 --token admin:drg_...\n  drover login https://iot.example.com --token alice:drg_... --name prod"
    )]
    Login {
        /// The server's URL.
        url: String,
        /// Credentials: `<user>:<access token>`.
        #[arg(long, env = "DROVER_TOKEN", value_name = "USER:TOKEN")]
        token: String,
        /// Name of the context to store (default: the server's host and port).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        g: Global,
    },
    /// Manage contexts: list, switch, delete.
    #[command(
        subcommand,
        after_help = "Examples:\n  drover context list\n  drover context use prod\n  drover context delete old"
    )]
    Context(ContextCmd),
    /// Show who you are logged in as.
    #[command(after_help = "Examples:\n  drover whoami\n  drover whoami --context prod -o json")]
    Whoami {
        #[command(flatten)]
        g: Global,
    },
    /// Manage applications.
    #[command(
        after_help = "Examples:\n  drover app create app1 --label env=prod\n  drover app list -o json\n  drover app edit app1\n  drover app set trust-anchor app1 --file ca.pem"
    )]
    App {
        #[command(flatten)]
        g: Global,
        #[command(subcommand)]
        cmd: AppCmd,
    },
    /// Manage devices of an application.
    #[command(
        after_help = "Examples:\n  drover device create dev1 --app app1 --password s3cret\n  drover device list --app app1\n  drover device edit dev1 --app app1\n  drover device set cert dev1 --app app1 --file dev1.pem"
    )]
    Device {
        #[command(flatten)]
        g: Global,
        /// The application.
        #[arg(long, short = 'a', global = true, env = "DROVER_APP")]
        app: Option<String>,
        #[command(subcommand)]
        cmd: DeviceCmd,
    },
    /// Manage your access tokens.
    #[command(
        after_help = "Examples:\n  drover token create --description ci\n  drover token list\n  drover token delete drg_Ab12Cd"
    )]
    Token {
        #[command(flatten)]
        g: Global,
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Manage users (system administrators).
    #[command(
        after_help = "Examples:\n  drover user create alice\n  drover user list\n  drover user delete alice"
    )]
    User {
        #[command(flatten)]
        g: Global,
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// Manage an application's members and their roles.
    #[command(
        after_help = "Examples:\n  drover member list app1\n  drover member add app1 --user bob --role manager\n  drover member remove app1 --user bob"
    )]
    Member {
        #[command(flatten)]
        g: Global,
        #[command(subcommand)]
        cmd: members::MemberCmd,
    },
    /// Hand an application over to another user.
    #[command(
        after_help = "Examples:\n  drover transfer start app1 --to bob\n  drover transfer accept app1 --context bob\n  drover transfer cancel app1"
    )]
    Transfer {
        #[command(flatten)]
        g: Global,
        #[command(subcommand)]
        cmd: members::TransferCmd,
    },
    /// Follow an application's events live (from the WebSocket integration).
    #[command(
        long_about = "Follow an application's events live, from the WebSocket integration.\n\nBy default one line per event: time, device, channel, payload. `--raw` (or `-o json`) prints each event as the JSON CloudEvent the server sent, one per line. Status messages go to stderr.",
        after_help = "Examples:\n  drover stream app1\n  drover stream app1 --channel telemetry --device dev1\n  drover stream app1 --count 1 --raw | jq .data\n  drover stream app1 --group backend      # resume where the group stopped"
    )]
    Stream {
        #[command(flatten)]
        g: Global,
        /// The application.
        app: String,
        /// Only events of this channel (e.g. telemetry).
        #[arg(long, short = 'c')]
        channel: Option<String>,
        /// Only events of this device.
        #[arg(long, short = 'd')]
        device: Option<String>,
        /// Exit after this many events.
        #[arg(long, short = 'n')]
        count: Option<u64>,
        /// Consumer group: resume from the group's committed position (a new group starts live).
        #[arg(long)]
        group: Option<String>,
        /// Start with the oldest retained event (when the group has no position yet).
        #[arg(long)]
        earliest: bool,
        /// Print each event as a raw JSON line (the CloudEvent as sent).
        #[arg(long)]
        raw: bool,
    },
    /// Follow the registry's changes (applications and devices created, changed, deleted).
    #[command(
        after_help = "Examples:\n  drover watch\n  drover watch --app app1 --since 120\n  drover watch -o json --count 10"
    )]
    Watch {
        #[command(flatten)]
        g: Global,
        /// Only changes of this application.
        #[arg(long, short = 'a')]
        app: Option<String>,
        /// Start after this revision (the first column, or a list's `drover-revision` header);
        /// default: from now on.
        #[arg(long)]
        since: Option<u64>,
        /// Exit after this many changes.
        #[arg(long, short = 'n')]
        count: Option<u64>,
    },
    /// Send a command to a device.
    #[command(
        after_help = "Examples:\n  drover cmd dev1 reboot --app app1\n  drover cmd dev1 set-temp --app app1 --payload '{\"target\": 21}' --wait 10\n  drover cmd dev1 update --app app1 --file firmware.bin --ttl 3600"
    )]
    Cmd {
        #[command(flatten)]
        g: Global,
        /// The device.
        device: String,
        /// The command's name.
        command: String,
        /// The application.
        #[arg(long, short = 'a', env = "DROVER_APP")]
        app: String,
        /// The payload.
        #[arg(long, conflicts_with = "file")]
        payload: Option<String>,
        /// Read the payload from a file (`-` for stdin).
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// Content type of the payload.
        #[arg(long)]
        content_type: Option<String>,
        /// Wait this many seconds for the device's reply and print it.
        #[arg(long, value_name = "SECONDS")]
        wait: Option<u64>,
        /// Queue the command this many seconds if the device cannot be reached now.
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ContextCmd {
    /// List contexts (`*` marks the current one).
    #[command(after_help = "Examples:\n  drover context list\n  drover context list -o json")]
    List {
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
    },
    /// Make a context the current one.
    #[command(after_help = "Example:\n  drover context use prod")]
    Use { name: String },
    /// Delete a context (and its stored token).
    #[command(after_help = "Example:\n  drover context delete old")]
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum AppCmd {
    /// Create an application.
    #[command(after_help = "Example:\n  drover app create app1 --label env=prod")]
    Create {
        name: String,
        /// Labels, `key=value` (repeatable).
        #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// The spec as JSON.
        #[arg(long)]
        spec: Option<String>,
    },
    /// Show an application.
    #[command(after_help = "Examples:\n  drover app get app1\n  drover app get app1 -o yaml")]
    Get { name: String },
    /// List applications.
    #[command(after_help = "Example:\n  drover app list --selector env=prod -o json")]
    List {
        /// Label selector (`k=v`, `k!=v`, `k in (a,b)`, `k`, `!k`; comma = AND).
        #[arg(long, short = 'l')]
        selector: Option<String>,
    },
    /// Delete an application (and its devices).
    #[command(after_help = "Example:\n  drover app delete app1")]
    Delete { name: String },
    /// Set (`k=v`) or remove (`k-`) labels.
    #[command(after_help = "Example:\n  drover app label app1 env=prod tier-")]
    Label {
        name: String,
        #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
        labels: Vec<String>,
    },
    /// Edit the application as YAML in $EDITOR (then $VISUAL, else vi).
    #[command(
        long_about = "Edit the application as YAML in $EDITOR (then $VISUAL, else vi).\n\nOn save the document is sent back with the resourceVersion it was read at. An unchanged (or emptied) file sends nothing. If someone else changed the application meanwhile, nothing is applied and the command exits with 4; invalid YAML or a document the server refuses exits with 1. In both cases your edits are kept in the temporary file, whose path is printed.",
        after_help = "Examples:\n  drover app edit app1\n  EDITOR=nano drover app edit app1"
    )]
    Edit { name: String },
    /// Change one part of an application's spec.
    #[command(
        subcommand,
        after_help = "Examples:\n  drover app set trust-anchor app1 --file device-ca.pem\n  drover app set trust-anchor app1 --clear"
    )]
    Set(AppSetCmd),
}

#[derive(Debug, Subcommand)]
pub enum AppSetCmd {
    /// Set the CA certificates the application trusts for devices' X.509 client certificates.
    #[command(
        long_about = "Set the CA certificates the application trusts for devices' X.509 client certificates (spec.trustAnchors).\n\nEach certificate in the PEM files becomes one trust anchor; the anchors are replaced unless --add is given. A file holding a private key is refused. A device certificate issued by one of these CAs authenticates as the device its subject DN names (see `drover device set cert`), else as the device named by its common name.",
        after_help = "Examples:\n  drover app set trust-anchor app1 --file device-ca.pem\n  drover app set trust-anchor app1 --file new-ca.pem --add\n  drover app set trust-anchor app1 --clear"
    )]
    TrustAnchor {
        /// The application.
        app: String,
        /// A PEM file with one or more CA certificates (repeatable).
        #[arg(
            long = "file",
            short = 'f',
            value_name = "PEM",
            required_unless_present = "clear"
        )]
        files: Vec<std::path::PathBuf>,
        /// Keep the existing trust anchors and add these.
        #[arg(long, conflicts_with = "clear")]
        add: bool,
        /// Remove all trust anchors.
        #[arg(long, conflicts_with = "files")]
        clear: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeviceCmd {
    /// Create a device.
    #[command(after_help = "Example:\n  drover device create dev1 --app app1 --password secret")]
    Create {
        name: String,
        /// Labels, `key=value` (repeatable).
        #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// A password the device authenticates with.
        #[arg(long)]
        password: Option<String>,
        /// The spec as JSON.
        #[arg(long)]
        spec: Option<String>,
    },
    /// Show a device.
    #[command(
        after_help = "Examples:\n  drover device get dev1 --app app1\n  drover device get dev1 --app app1 -o yaml"
    )]
    Get { name: String },
    /// List the application's devices.
    #[command(
        after_help = "Examples:\n  drover device list --app app1\n  drover device list --app app1 --selector floor=2 -o json"
    )]
    List {
        /// Label selector (`k=v`, `k!=v`, `k in (a,b)`, `k`, `!k`; comma = AND).
        #[arg(long, short = 'l')]
        selector: Option<String>,
    },
    /// Delete a device.
    #[command(after_help = "Example:\n  drover device delete dev1 --app app1")]
    Delete { name: String },
    /// Set (`k=v`) or remove (`k-`) labels.
    #[command(after_help = "Example:\n  drover device label dev1 floor=2 room- --app app1")]
    Label {
        name: String,
        #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
        labels: Vec<String>,
    },
    /// Edit the device as YAML in $EDITOR (then $VISUAL, else vi).
    #[command(
        long_about = "Edit the device as YAML in $EDITOR (then $VISUAL, else vi).\n\nOn save the document is sent back with the resourceVersion it was read at. An unchanged (or emptied) file sends nothing. If someone else changed the device meanwhile, nothing is applied and the command exits with 4; invalid YAML or a document the server refuses exits with 1. In both cases your edits are kept in the temporary file, whose path is printed.",
        after_help = "Examples:\n  drover device edit dev1 --app app1\n  EDITOR=nano drover device edit dev1 --app app1"
    )]
    Edit { name: String },
    /// Change one part of a device's spec.
    #[command(
        subcommand,
        after_help = "Examples:\n  drover device set password dev1 s3cret --app app1\n  drover device set alias dev1 serial-0042 --app app1\n  drover device set cert dev1 --app app1 --file dev1.pem\n  drover device set disabled dev1 --app app1"
    )]
    Set(SetCmd),
}

#[derive(Debug, Subcommand)]
pub enum SetCmd {
    /// Replace the device's password credentials.
    #[command(after_help = "Example:\n  drover device set password dev1 s3cret --app app1")]
    Password {
        device: String,
        password: String,
        /// Username for username/password credentials (default: the device's own name).
        #[arg(long)]
        username: Option<String>,
    },
    /// Set the gateways allowed to act for the device (none: clear).
    #[command(
        after_help = "Examples:\n  drover device set gateway dev1 gw1 gw2 --app app1\n  drover device set gateway dev1 --app app1      # no gateway"
    )]
    Gateway {
        device: String,
        gateways: Vec<String>,
    },
    /// Set the device's aliases (none: clear).
    #[command(
        after_help = "Examples:\n  drover device set alias dev1 serial-0042 --app app1\n  drover device set alias dev1 --app app1        # no alias"
    )]
    Alias {
        device: String,
        aliases: Vec<String>,
    },
    /// Disable (default) or enable the device.
    #[command(
        after_help = "Examples:\n  drover device set disabled dev1 --app app1\n  drover device set disabled dev1 false --app app1"
    )]
    Disabled {
        device: String,
        #[arg(default_value_t = true, action = clap::ArgAction::Set)]
        disabled: bool,
    },
    /// Let the device authenticate with X.509 client certificates of these subjects.
    #[command(
        long_about = "Let the device authenticate with X.509 client certificates of these subjects.\n\nThe server finds a certificate's device by its subject DN, which must be the device's name or one of its aliases (else by its common name). This command makes the subject DNs of the given certificates (or --subject DNs) the device's certificate aliases: aliases containing `=` are replaced, other aliases are kept. Only the subject is sent; a private key in the same file never leaves your machine. The certificates' CA must be a trust anchor of the application (`drover app set trust-anchor`); the command notes when it is not.",
        after_help = "Examples:\n  drover device set cert dev1 --app app1 --file dev1.pem\n  drover device set cert dev1 --app app1 --subject 'CN=dev1, O=Example'\n  drover device set cert dev1 --app app1 --clear"
    )]
    Cert {
        device: String,
        /// The device's certificate (PEM; the first certificate in the file is used). Repeatable.
        #[arg(long = "file", short = 'f', value_name = "PEM", required_unless_present_any = ["subjects", "clear"])]
        files: Vec<std::path::PathBuf>,
        /// A subject DN as the server prints it, e.g. "CN=dev1, O=Example". Repeatable.
        #[arg(long = "subject", value_name = "DN")]
        subjects: Vec<String>,
        /// Remove the device's certificate subjects.
        #[arg(long, conflicts_with_all = ["files", "subjects"])]
        clear: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create an access token (shown only once).
    #[command(after_help = "Example:\n  drover token create --description ci -o json")]
    Create {
        #[arg(long)]
        description: Option<String>,
    },
    /// List your tokens (prefixes only).
    #[command(after_help = "Example:\n  drover token list")]
    List,
    /// Delete a token by its prefix.
    #[command(after_help = "Example:\n  drover token delete drg_Ab12Cd")]
    Delete { prefix: String },
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a user and its first access token (shown only once).
    #[command(
        after_help = "Examples:\n  drover user create alice\n  drover user create ops --admin -o json"
    )]
    Create {
        name: String,
        /// Make the user a system administrator.
        #[arg(long)]
        admin: bool,
    },
    /// List users.
    #[command(after_help = "Example:\n  drover user list")]
    List,
    /// Delete a user.
    #[command(after_help = "Example:\n  drover user delete alice")]
    Delete { name: String },
}

/// Runs a client command; prints errors in one line and returns the exit code.
pub fn run(cmd: ClientCommand) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message());
            ExitCode::from(e.code())
        }
    }
}

fn api(g: &Global) -> Result<Api> {
    let cfg = ClientConfig::load()?;
    let (_, ctx) = cfg.resolve(g.context.as_deref())?;
    Api::new(ctx)
}

async fn dispatch(cmd: ClientCommand) -> Result<()> {
    match cmd {
        ClientCommand::Login {
            url,
            token,
            name,
            g,
        } => login(url, token, name, &g).await,
        ClientCommand::Context(c) => context(c),
        ClientCommand::Whoami { g } => whoami(&g).await,
        ClientCommand::App { g, cmd } => app(&api(&g)?, g.output, cmd).await,
        ClientCommand::Device { g, app, cmd } => {
            let Some(app) = app else {
                return Err(CliError::Usage(
                    "which application? pass --app <name> (or set DROVER_APP)".into(),
                ));
            };
            device(&api(&g)?, g.output, &app, cmd).await
        }
        ClientCommand::Token { g, cmd } => token(&api(&g)?, g.output, cmd).await,
        ClientCommand::User { g, cmd } => user(&api(&g)?, g.output, cmd).await,
        ClientCommand::Member { g, cmd } => members::member(&api(&g)?, g.output, cmd).await,
        ClientCommand::Transfer { g, cmd } => members::transfer(&api(&g)?, g.output, cmd).await,
        ClientCommand::Stream {
            g,
            app,
            channel,
            device,
            count,
            group,
            earliest,
            raw,
        } => {
            stream::stream(
                &api(&g)?,
                g.output,
                stream::StreamArgs {
                    app,
                    channel,
                    device,
                    count,
                    group,
                    earliest,
                    raw,
                },
            )
            .await
        }
        ClientCommand::Watch {
            g,
            app,
            since,
            count,
        } => watch::watch(&api(&g)?, g.output, watch::WatchArgs { app, since, count }).await,
        ClientCommand::Cmd {
            g,
            device,
            command,
            app,
            payload,
            file,
            content_type,
            wait,
            ttl,
        } => {
            let body = match (payload, file) {
                (Some(p), _) => p.into_bytes(),
                (None, Some(f)) if f.as_os_str() == "-" => {
                    let mut buf = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                        .map_err(|e| CliError::Other(format!("reading stdin: {e}")))?;
                    buf
                }
                (None, Some(f)) => std::fs::read(&f)
                    .map_err(|e| CliError::Other(format!("cannot read {}: {e}", f.display())))?,
                (None, None) => Vec::new(),
            };
            send_command(
                &api(&g)?,
                g.output,
                &app,
                &device,
                &command,
                body,
                content_type,
                wait,
                ttl,
            )
            .await
        }
    }
}

async fn login(url: String, token: String, name: Option<String>, g: &Global) -> Result<()> {
    let Some((user, secret)) = token.split_once(':') else {
        return Err(CliError::Usage(
            "--token must be <user>:<access token>".into(),
        ));
    };
    let url = url.trim_end_matches('/').to_string();
    let parsed =
        url::Url::parse(&url).map_err(|e| CliError::Usage(format!("invalid URL {url:?}: {e}")))?;
    let ctx = Context {
        url: url.clone(),
        user: user.to_string(),
        token: secret.to_string(),
    };
    let api = Api::new(ctx.clone())?;
    api.get("/api/console/v1alpha1/info")
        .await
        .map_err(|e| match e {
            CliError::Other(m) => CliError::Other(format!("login failed: {m}")),
            e => e,
        })?;
    let name = name.unwrap_or_else(|| {
        let host = parsed.host_str().unwrap_or("drover");
        match parsed.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        }
    });
    let mut cfg = ClientConfig::load()?;
    cfg.contexts.insert(name.clone(), ctx);
    cfg.current = Some(name.clone());
    cfg.save()?;
    match g.output {
        Format::Table => println!("Logged in to {url} as {user} (context {name:?})."),
        f => print_doc(&json!({"context": name, "url": url, "user": user}), f),
    }
    Ok(())
}

fn context(cmd: ContextCmd) -> Result<()> {
    let mut cfg = ClientConfig::load()?;
    match cmd {
        ContextCmd::List { output } => {
            let current = cfg.current.clone().unwrap_or_default();
            match output {
                Format::Table => {
                    let rows: Vec<Vec<String>> = cfg
                        .contexts
                        .iter()
                        .map(|(n, c)| {
                            vec![
                                if *n == current {
                                    "*".into()
                                } else {
                                    String::new()
                                },
                                n.clone(),
                                c.url.clone(),
                                c.user.clone(),
                            ]
                        })
                        .collect();
                    print_table(&["CURRENT", "NAME", "URL", "USER"], &rows);
                }
                f => {
                    let items: Vec<Value> = cfg
                        .contexts
                        .iter()
                        .map(|(n, c)| json!({"name": n, "url": c.url, "user": c.user, "current": *n == current}))
                        .collect();
                    print_doc(&Value::Array(items), f);
                }
            }
        }
        ContextCmd::Use { name } => {
            if !cfg.contexts.contains_key(&name) {
                return Err(CliError::NotFound(format!("no context named {name:?}")));
            }
            cfg.current = Some(name.clone());
            cfg.save()?;
            println!("Switched to context {name:?}.");
        }
        ContextCmd::Delete { name } => {
            if cfg.contexts.remove(&name).is_none() {
                return Err(CliError::NotFound(format!("no context named {name:?}")));
            }
            if cfg.current.as_deref() == Some(name.as_str()) {
                cfg.current = None;
            }
            cfg.save()?;
            println!("Deleted context {name:?}.");
        }
    }
    Ok(())
}

async fn whoami(g: &Global) -> Result<()> {
    let api = api(g)?;
    let me = api.get(&format!("{ADMIN}/user/whoami")).await?;
    match g.output {
        Format::Table => {
            let name = me["name"].as_str().unwrap_or("?");
            let admin = if me["admin"].as_bool() == Some(true) {
                " (system administrator)"
            } else {
                ""
            };
            println!("{name}{admin} at {}", api.ctx.url);
        }
        f => print_doc(&me, f),
    }
    Ok(())
}

/// Parses `k=v` labels for creation.
fn parse_labels(items: &[String]) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    for l in items {
        let Some((k, v)) = l.split_once('=') else {
            return Err(CliError::Usage(format!("label {l:?} is not key=value")));
        };
        m.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(m)
}

/// Applies `k=v` (set) and `k-` (remove) to a resource's labels.
fn apply_labels(res: &mut Value, items: &[String]) -> Result<()> {
    let meta = res
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| CliError::Other("the server returned no metadata".into()))?;
    let labels = meta
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    if !labels.is_object() {
        *labels = Value::Object(Map::new());
    }
    let Some(labels) = labels.as_object_mut() else {
        return Ok(());
    };
    for l in items {
        if let Some((k, v)) = l.split_once('=') {
            labels.insert(k.to_string(), Value::String(v.to_string()));
        } else if let Some(k) = l.strip_suffix('-') {
            labels.remove(k);
        } else {
            return Err(CliError::Usage(format!(
                "label {l:?} is neither key=value nor key-"
            )));
        }
    }
    Ok(())
}

fn parse_spec(spec: Option<String>) -> Result<Option<Value>> {
    spec.map(|s| {
        serde_json::from_str::<Value>(&s)
            .map_err(|e| CliError::Usage(format!("--spec is not valid JSON: {e}")))
    })
    .transpose()
}

fn new_resource(name: &str, labels: &[String], spec: Option<Value>) -> Result<Value> {
    let mut meta = Map::new();
    meta.insert("name".into(), Value::String(name.to_string()));
    let l = parse_labels(labels)?;
    if !l.is_empty() {
        meta.insert("labels".into(), Value::Object(l));
    }
    let mut body = json!({ "metadata": meta });
    if let Some(s) = spec {
        body["spec"] = s;
    }
    Ok(body)
}

/// PUT, then the stored resource (the API answers 204, so it is read again).
async fn put_and_read(api: &Api, path: &str, res: &Value) -> Result<Value> {
    let body = api.put(path, res).await?;
    if body.is_null() {
        api.get(path).await
    } else {
        Ok(body)
    }
}

/// PUT with the resourceVersion read; a 409 explained. Returns the stored resource.
async fn update(api: &Api, path: &str, what: &str, res: &Value) -> Result<Value> {
    put_and_read(api, path, res).await.map_err(|e| match e {
        CliError::Conflict(m) => CliError::Conflict(format!(
            "{what} was changed by someone else since you read it; run the command again ({m})"
        )),
        e => e,
    })
}

fn show_resources(items: &[Value], format: Format, device: bool) {
    if format != Format::Table {
        return print_doc(&Value::Array(items.to_vec()), format);
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|r| {
            let m = &r["metadata"];
            let mut row = vec![
                m["name"].as_str().unwrap_or("").to_string(),
                age(m["creationTimestamp"].as_str()),
            ];
            if device {
                row.push(list(&r["spec"]["alias"]));
                row.push(
                    if r["spec"]["core"]["disabled"].as_bool() == Some(true) {
                        "yes"
                    } else {
                        "no"
                    }
                    .into(),
                );
            }
            row.push(labels(&m["labels"]));
            row
        })
        .collect();
    if device {
        print_table(&["NAME", "AGE", "ALIASES", "DISABLED", "LABELS"], &rows);
    } else {
        print_table(&["NAME", "AGE", "LABELS"], &rows);
    }
}

fn show_one(res: &Value, format: Format, device: bool) {
    match format {
        Format::Table => show_resources(std::slice::from_ref(res), format, device),
        f => print_doc(res, f),
    }
}

fn list_path(base: String, selector: Option<String>) -> String {
    match selector {
        Some(s) => format!(
            "{base}?labels={}",
            url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
        ),
        None => base,
    }
}

fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("items") {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

async fn app(api: &Api, format: Format, cmd: AppCmd) -> Result<()> {
    let path = |n: &str| format!("{REGISTRY}/apps/{}", seg(n));
    match cmd {
        AppCmd::Create { name, labels, spec } => {
            let body = new_resource(&name, &labels, parse_spec(spec)?)?;
            let res = api.post(&format!("{REGISTRY}/apps"), &body).await?;
            done(format, &res, &format!("app {name} created"));
        }
        AppCmd::Get { name } => show_one(&api.get(&path(&name)).await?, format, false),
        AppCmd::List { selector } => {
            let v = api
                .get(&list_path(format!("{REGISTRY}/apps"), selector))
                .await?;
            show_resources(&items(v), format, false);
        }
        AppCmd::Delete { name } => {
            api.delete(&path(&name)).await?;
            done(
                format,
                &json!({"deleted": name}),
                &format!("app {name} deleted"),
            );
        }
        AppCmd::Label { name, labels } => {
            let mut res = api.get(&path(&name)).await?;
            apply_labels(&mut res, &labels)?;
            let res = update(api, &path(&name), &format!("app {name}"), &res).await?;
            done(format, &res, &format!("app {name} labeled"));
        }
        AppCmd::Edit { name } => {
            let p = path(&name);
            edit::edit(
                api,
                format,
                edit::Target {
                    path: &p,
                    what: format!("app {name}"),
                    again: format!("drover app edit {name}"),
                    file_stem: format!("app-{name}"),
                },
            )
            .await?;
        }
        AppCmd::Set(AppSetCmd::TrustAnchor {
            app,
            files,
            add,
            clear,
        }) => {
            certs::set_trust_anchors(api, format, &app, &path(&app), &files, add, clear).await?;
        }
    }
    Ok(())
}

fn done(format: Format, doc: &Value, text: &str) {
    match format {
        Format::Table => println!("{text}"),
        f => print_doc(doc, f),
    }
}

async fn device(api: &Api, format: Format, app: &str, cmd: DeviceCmd) -> Result<()> {
    let base = format!("{REGISTRY}/apps/{}/devices", seg(app));
    let path = |n: &str| format!("{base}/{}", seg(n));
    match cmd {
        DeviceCmd::Create {
            name,
            labels,
            password,
            spec,
        } => {
            let mut body = new_resource(&name, &labels, parse_spec(spec)?)?;
            if let Some(p) = password {
                if !body["spec"].is_object() {
                    body["spec"] = json!({});
                }
                body["spec"]["authentication"] = json!({"credentials": [{"pass": p}]});
            }
            let res = api.post(&base, &body).await?;
            done(format, &res, &format!("device {name} created in app {app}"));
        }
        DeviceCmd::Get { name } => show_one(&api.get(&path(&name)).await?, format, true),
        DeviceCmd::List { selector } => {
            let v = api.get(&list_path(base.clone(), selector)).await?;
            show_resources(&items(v), format, true);
        }
        DeviceCmd::Delete { name } => {
            api.delete(&path(&name)).await?;
            done(
                format,
                &json!({"deleted": name}),
                &format!("device {name} deleted from app {app}"),
            );
        }
        DeviceCmd::Label { name, labels } => {
            let mut res = api.get(&path(&name)).await?;
            apply_labels(&mut res, &labels)?;
            let res = update(api, &path(&name), &format!("device {name}"), &res).await?;
            done(format, &res, &format!("device {name} labeled"));
        }
        DeviceCmd::Edit { name } => {
            let p = path(&name);
            edit::edit(
                api,
                format,
                edit::Target {
                    path: &p,
                    what: format!("device {name}"),
                    again: format!("drover device edit {name} --app {app}"),
                    file_stem: format!("device-{app}-{name}"),
                },
            )
            .await?;
        }
        DeviceCmd::Set(SetCmd::Cert {
            device,
            files,
            subjects,
            clear,
        }) => {
            certs::set_device_cert(
                api,
                format,
                app,
                &format!("{REGISTRY}/apps/{}", seg(app)),
                &device,
                &path(&device),
                &files,
                &subjects,
                clear,
            )
            .await?;
        }
        DeviceCmd::Set(set) => {
            let (name, what) = match &set {
                SetCmd::Password { device, .. } => (device.clone(), "password"),
                SetCmd::Gateway { device, .. } => (device.clone(), "gateways"),
                SetCmd::Alias { device, .. } => (device.clone(), "aliases"),
                SetCmd::Disabled { device, .. } => (device.clone(), "disabled"),
                // Handled above, with the application's trust anchors.
                SetCmd::Cert { device, .. } => (device.clone(), "certificates"),
            };
            let mut res = api.get(&path(&name)).await?;
            if !res["spec"].is_object() {
                res["spec"] = json!({});
            }
            let Some(spec) = res["spec"].as_object_mut() else {
                return Err(CliError::Other("the device has no spec object".into()));
            };
            match set {
                SetCmd::Password {
                    password, username, ..
                } => {
                    let mut creds: Vec<Value> = spec
                        .get("authentication")
                        .and_then(|a| a["credentials"].as_array())
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|c| c.get("pass").is_none() && c.get("user").is_none())
                        .collect();
                    creds.push(match username {
                        Some(u) => json!({"user": {"username": u, "password": password}}),
                        None => json!({"pass": password}),
                    });
                    let auth = spec.entry("authentication").or_insert_with(|| json!({}));
                    if !auth.is_object() {
                        *auth = json!({});
                    }
                    auth["credentials"] = Value::Array(creds);
                }
                SetCmd::Gateway { gateways, .. } => {
                    if gateways.is_empty() {
                        spec.remove("gatewaySelector");
                    } else {
                        spec.insert("gatewaySelector".into(), json!({"matchNames": gateways}));
                    }
                }
                SetCmd::Alias { aliases, .. } => {
                    if aliases.is_empty() {
                        spec.remove("alias");
                    } else {
                        spec.insert("alias".into(), json!(aliases));
                    }
                }
                SetCmd::Disabled { disabled, .. } => {
                    let core = spec.entry("core").or_insert_with(|| json!({}));
                    if !core.is_object() {
                        *core = json!({});
                    }
                    core["disabled"] = Value::Bool(disabled);
                }
                SetCmd::Cert { .. } => {}
            }
            let res = update(api, &path(&name), &format!("device {name}"), &res).await?;
            done(format, &res, &format!("device {name}: {what} set"));
        }
    }
    Ok(())
}

async fn token(api: &Api, format: Format, cmd: TokenCmd) -> Result<()> {
    match cmd {
        TokenCmd::Create { description } => {
            let mut req = api.request(Method::POST, TOKENS);
            if let Some(d) = &description {
                req = req.query(&[("description", d)]);
            }
            let v = api.send(req).await?.body;
            match format {
                Format::Table => {
                    println!(
                        "Token {} created; it is shown only this once:",
                        v["prefix"].as_str().unwrap_or("?")
                    );
                    println!("{}", v["token"].as_str().unwrap_or(""));
                }
                f => print_doc(&v, f),
            }
        }
        TokenCmd::List => {
            let v = items(api.get(TOKENS).await?);
            match format {
                Format::Table => {
                    let rows: Vec<Vec<String>> = v
                        .iter()
                        .map(|t| {
                            vec![
                                t["prefix"].as_str().unwrap_or("").to_string(),
                                age(t["created"].as_str()),
                                t["description"].as_str().unwrap_or("").to_string(),
                            ]
                        })
                        .collect();
                    print_table(&["PREFIX", "AGE", "DESCRIPTION"], &rows);
                }
                f => print_doc(&Value::Array(v), f),
            }
        }
        TokenCmd::Delete { prefix } => {
            api.delete(&format!("{TOKENS}/{}", seg(&prefix))).await?;
            done(
                format,
                &json!({"deleted": prefix}),
                &format!("token {prefix} deleted"),
            );
        }
    }
    Ok(())
}

async fn user(api: &Api, format: Format, cmd: UserCmd) -> Result<()> {
    match cmd {
        UserCmd::Create { name, admin } => {
            let v = api
                .post(
                    &format!("{ADMIN}/users"),
                    &json!({"name": name, "admin": admin}),
                )
                .await?;
            match format {
                Format::Table => {
                    println!("user {name} created; its access token is shown only this once:");
                    println!("{name}:{}", v["token"].as_str().unwrap_or(""));
                }
                f => print_doc(&v, f),
            }
        }
        UserCmd::List => {
            let v = items(api.get(&format!("{ADMIN}/users")).await?);
            match format {
                Format::Table => {
                    let rows: Vec<Vec<String>> = v
                        .iter()
                        .map(|u| {
                            vec![
                                u["name"].as_str().unwrap_or("").to_string(),
                                age(u["created"].as_str()),
                                if u["admin"].as_bool() == Some(true) {
                                    "yes"
                                } else {
                                    "no"
                                }
                                .into(),
                            ]
                        })
                        .collect();
                    print_table(&["NAME", "AGE", "ADMIN"], &rows);
                }
                f => print_doc(&Value::Array(v), f),
            }
        }
        UserCmd::Delete { name } => {
            api.delete(&format!("{ADMIN}/users/{}", seg(&name))).await?;
            done(
                format,
                &json!({"deleted": name}),
                &format!("user {name} deleted"),
            );
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn send_command(
    api: &Api,
    format: Format,
    app: &str,
    device: &str,
    command: &str,
    body: Vec<u8>,
    content_type: Option<String>,
    wait: Option<u64>,
    ttl: Option<u64>,
) -> Result<()> {
    let mut query: Vec<(&str, String)> = vec![("command", command.to_string())];
    if let Some(w) = wait {
        query.push(("timeout", w.to_string()));
    }
    if let Some(t) = ttl {
        query.push(("ttl", t.to_string()));
    }
    let mut req = api
        .request(
            Method::POST,
            &format!("{COMMANDS}/apps/{}/devices/{}", seg(app), seg(device)),
        )
        .query(&query)
        .body(body);
    if let Some(ct) = content_type {
        req = req.header(reqwest::header::CONTENT_TYPE, ct);
    }
    let reply = api.send(req).await?;
    if wait.is_some() && reply.status == reqwest::StatusCode::OK {
        match format {
            Format::Table => {
                use std::io::Write as _;
                let mut out = std::io::stdout();
                let _ = out.write_all(&reply.raw);
                if !reply.raw.ends_with(b"\n") && !reply.raw.is_empty() {
                    let _ = out.write_all(b"\n");
                }
            }
            f => print_doc(&reply.body, f),
        }
    } else {
        done(
            format,
            &json!({"status": reply.status.as_u16()}),
            &format!("command {command} sent to device {device}"),
        );
    }
    Ok(())
}
