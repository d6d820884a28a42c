//! The command line's grammar: every client subcommand, its arguments, help and examples, as
//! clap derive types. What the commands do is elsewhere (`resources`, `registry`, `login`, …);
//! `docs/cli.md` describes them for users.

use clap::{Args, Subcommand};

use super::output::Format;

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
        cmd: MemberCmd,
    },
    /// Hand an application over to another user.
    #[command(
        after_help = "Examples:\n  drover transfer start app1 --to bob\n  drover transfer accept app1 --context bob\n  drover transfer cancel app1"
    )]
    Transfer {
        #[command(flatten)]
        g: Global,
        #[command(subcommand)]
        cmd: TransferCmd,
    },
    /// Follow an application's events live (from the WebSocket integration).
    #[command(
        long_about = "Follow an application's events live, from the WebSocket integration.\n\nBy default one line per event: time, device, channel, payload. `--raw` (or `-o json`) prints each event as the JSON CloudEvent the server sent, one per line. Status messages go to stderr.",
        after_help = "Examples:\n  drover stream app1\n  drover stream app1 --channel telemetry --device dev1\n  drover stream app1 --count 1 --raw | jq .data\n  drover stream app1 --group backend      # resume where the group stopped"
    )]
    Stream {
        #[command(flatten)]
        g: Global,
        #[command(flatten)]
        args: StreamArgs,
    },
    /// Follow the registry's changes (applications and devices created, changed, deleted).
    #[command(
        after_help = "Examples:\n  drover watch\n  drover watch --app app1 --since 120\n  drover watch -o json --count 10"
    )]
    Watch {
        #[command(flatten)]
        g: Global,
        #[command(flatten)]
        args: WatchArgs,
    },
    /// Read a device's twin, change its desired properties or its tags.
    #[command(
        subcommand,
        after_help = "Examples:\n  drover twin show dev1 --app app1\n  drover twin desired dev1 --app app1 --patch '{\"mode\": \"eco\", \"fan\": null}'\n  drover twin tags dev1 --app app1 --set '{\"floor\": 3}'"
    )]
    Twin(TwinCmd),
    /// Device certificates from the installation's device CA: request, list, show, revoke.
    #[command(
        subcommand,
        after_help = "Examples:\n  drover cert request dev1 --app app1\n  drover cert list --app app1\n  drover cert revoke 3f2a...e9 --app app1\n  drover cert ca > device-ca.pem"
    )]
    Cert(super::cert::CertCmd),
    /// Manage an application's webhook subscriptions (its events POSTed to HTTP endpoints).
    #[command(
        after_help = "Examples:\n  drover webhook create fn1 --app app1 --url https://fn.example.com/events --secret $(openssl rand -hex 16)\n  drover webhook create grid --app app1 --url https://sink.example.com/ --schema eventgrid --validation-handshake\n  drover webhook list --app app1\n  drover webhook status fn1 --app app1\n  drover webhook dead-letters fn1 --app app1 -o json"
    )]
    Webhook {
        #[command(flatten)]
        g: Global,
        /// The application.
        #[arg(long, short = 'a', global = true, env = "DROVER_APP")]
        app: Option<String>,
        #[command(subcommand)]
        cmd: WebhookCmd,
    },
    /// Send a command to a device.
    #[command(
        after_help = "Examples:\n  drover cmd dev1 reboot --app app1\n  drover cmd dev1 set-temp --app app1 --payload '{\"target\": 21}' --wait 10\n  drover cmd dev1 update --app app1 --file firmware.bin --ttl 3600"
    )]
    Cmd {
        #[command(flatten)]
        g: Global,
        #[command(flatten)]
        args: CmdArgs,
    },
}

// The arguments of `stream`, `watch` and `cmd` are structs (flattened, so the help is the same as
// if they were written in the variant) because their handlers take them whole.

/// `drover stream`: what to stream and how to print it.
#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    /// The application.
    pub app: String,
    /// Only events of this channel (e.g. telemetry).
    #[arg(long, short = 'c')]
    pub channel: Option<String>,
    /// Only events of this device.
    #[arg(long, short = 'd')]
    pub device: Option<String>,
    /// Exit after this many events.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
    /// Consumer group: resume from the group's committed position (a new group starts live).
    #[arg(long)]
    pub group: Option<String>,
    /// Start with the oldest retained event (when the group has no position yet).
    #[arg(long)]
    pub earliest: bool,
    /// Print each event as a raw JSON line (the CloudEvent as sent).
    #[arg(long)]
    pub raw: bool,
}

/// `drover watch`: which changes, from where, how many.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Only changes of this application.
    #[arg(long, short = 'a')]
    pub app: Option<String>,
    /// Start after this revision (the first column, or a list's `drover-revision` header);
    /// default: from now on.
    #[arg(long)]
    pub since: Option<u64>,
    /// Exit after this many changes.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
}

/// `drover cmd`: the command, its payload and how long to wait.
#[derive(Debug, Clone, Args)]
pub struct CmdArgs {
    /// The device.
    pub device: String,
    /// The command's name.
    pub command: String,
    /// The application.
    #[arg(long, short = 'a', env = "DROVER_APP")]
    pub app: String,
    /// The payload.
    #[arg(long, conflicts_with = "file")]
    pub payload: Option<String>,
    /// Read the payload from a file (`-` for stdin).
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Content type of the payload.
    #[arg(long)]
    pub content_type: Option<String>,
    /// Wait this many seconds for the device's reply and print it.
    #[arg(long, value_name = "SECONDS")]
    pub wait: Option<u64>,
    /// Queue the command this many seconds if the device cannot be reached now.
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum TwinCmd {
    /// Show the twin: desired and reported properties with their versions, and tags.
    #[command(
        after_help = "Examples:\n  drover twin show dev1 --app app1\n  drover twin show dev1 --app app1 -o json | jq .reported"
    )]
    Show {
        #[command(flatten)]
        g: Global,
        #[command(flatten)]
        target: TwinTarget,
    },
    /// Change the desired properties with a JSON merge patch (`null` deletes a member).
    #[command(
        after_help = "Examples:\n  drover twin desired dev1 --app app1 --patch '{\"mode\": \"eco\"}'\n  drover twin desired dev1 --app app1 --file patch.json --if-version 4"
    )]
    Desired {
        #[command(flatten)]
        g: Global,
        #[command(flatten)]
        target: TwinTarget,
        /// The merge patch (JSON object).
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        patch: Option<String>,
        /// Read the merge patch from a file (`-` for stdin).
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// Only if the desired properties are at this version (else exit 4, nothing changed).
        #[arg(long, value_name = "VERSION")]
        if_version: Option<u64>,
    },
    /// Replace the tags (service-side labels devices never see).
    #[command(
        after_help = "Example:\n  drover twin tags dev1 --app app1 --set '{\"floor\": 3, \"site\": \"berlin\"}'"
    )]
    Tags {
        #[command(flatten)]
        g: Global,
        #[command(flatten)]
        target: TwinTarget,
        /// The new tags (JSON object).
        #[arg(long)]
        set: String,
    },
}

// Parsed once per run: the size of `Create` costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum WebhookCmd {
    /// Create a subscription (from options, or a whole spec with --spec / --file).
    #[command(
        after_help = "Examples:\n  drover webhook create fn1 --app app1 --url https://fn.example.com/events\n  drover webhook create temps --app app1 --url https://x.example.com/ --type io.drogue.event.v1 --subject 'temp*' --mode binary\n  drover webhook create grid --app app1 --url https://x.example.com/ --schema eventgrid --validation-handshake --header 'X-Key=abc'\n  drover webhook create full --app app1 --file spec.json"
    )]
    Create {
        /// The subscription's name (a lowercase DNS label).
        name: String,
        /// The target URL.
        #[arg(long, required_unless_present_any = ["spec", "file"])]
        url: Option<String>,
        /// cloudevents (default) or eventgrid.
        #[arg(long)]
        schema: Option<String>,
        /// CloudEvents mode: structured (default) or binary.
        #[arg(long)]
        mode: Option<String>,
        /// Deliver only this event type (repeatable; `*` at the end: prefix).
        #[arg(long = "type", value_name = "TYPE")]
        types: Vec<String>,
        /// Deliver only this subject/channel (repeatable; `*` at the end: prefix).
        #[arg(long = "subject", value_name = "SUBJECT")]
        subjects: Vec<String>,
        /// A header to send, `Name=value` (repeatable).
        #[arg(long = "header", value_name = "NAME=VALUE")]
        headers: Vec<String>,
        /// The HMAC-SHA256 signing secret (16 to 256 bytes).
        #[arg(long)]
        secret: Option<String>,
        /// A PEM file of the CA certificates to trust for an https URL.
        #[arg(long, value_name = "FILE")]
        ca_file: Option<std::path::PathBuf>,
        /// Event Grid: run the subscription validation handshake first.
        #[arg(long)]
        validation_handshake: bool,
        /// Events per request (structured CloudEvents and Event Grid).
        #[arg(long)]
        max_events: Option<u32>,
        /// Attempts per request before its events become dead letters.
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Start with the oldest retained event instead of now.
        #[arg(long)]
        earliest: bool,
        /// The whole spec as JSON (options above are merged into it).
        #[arg(long, conflicts_with = "file")]
        spec: Option<String>,
        /// Read the whole spec from a JSON file (`-` for stdin).
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
    /// List the subscriptions.
    #[command(
        after_help = "Examples:\n  drover webhook list --app app1\n  drover webhook list --app app1 -o yaml"
    )]
    List,
    /// Show a subscription (its secret is never shown).
    #[command(after_help = "Example:\n  drover webhook show fn1 --app app1")]
    Show { name: String },
    /// Delete a subscription and its dead letters.
    #[command(after_help = "Example:\n  drover webhook delete fn1 --app app1")]
    Delete { name: String },
    /// How delivery goes: delivered, failed, retrying, lag, last error.
    #[command(
        after_help = "Examples:\n  drover webhook status fn1 --app app1\n  drover webhook status fn1 --app app1 -o json | jq .lag"
    )]
    Status { name: String },
    /// The events a subscription gave up on, with why.
    #[command(
        name = "dead-letters",
        after_help = "Examples:\n  drover webhook dead-letters fn1 --app app1\n  drover webhook dead-letters fn1 --app app1 --after 120 -o json"
    )]
    DeadLetters {
        name: String,
        /// Only those after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many.
        #[arg(long)]
        limit: Option<u32>,
    },
}

/// Which device's twin.
#[derive(Debug, Clone, Args)]
pub struct TwinTarget {
    /// The device.
    pub device: String,
    /// The application.
    #[arg(long, short = 'a', env = "DROVER_APP")]
    pub app: String,
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
    Label(LabelArgs),
    /// Edit the application as YAML in $EDITOR (then $VISUAL, else vi).
    #[command(
        long_about = edit_about("application"),
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

/// `app|device label`: a resource and the labels to set (`k=v`) or remove (`k-`).
#[derive(Debug, Args)]
pub struct LabelArgs {
    pub name: String,
    #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
    pub labels: Vec<String>,
}

/// The long help of `app|device edit`, for `what` (application, device).
fn edit_about(what: &str) -> String {
    format!(
        "Edit the {what} as YAML in $EDITOR (then $VISUAL, else vi).\n\nOn save the document is sent back with the resourceVersion it was read at. An unchanged (or emptied) file sends nothing. If someone else changed the {what} meanwhile, nothing is applied and the command exits with 4; invalid YAML or a document the server refuses exits with 1. In both cases your edits are kept in the temporary file, whose path is printed."
    )
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
    Label(LabelArgs),
    /// Edit the device as YAML in $EDITOR (then $VISUAL, else vi).
    #[command(
        long_about = edit_about("device"),
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

#[derive(Debug, Subcommand)]
pub enum MemberCmd {
    /// List an application's members and their roles.
    #[command(
        after_help = "Examples:\n  drover member list app1\n  drover member list app1 -o json"
    )]
    List {
        /// The application.
        app: String,
    },
    /// Add a member, or change a member's role.
    #[command(
        after_help = "Examples:\n  drover member add app1 --user bob --role manager\n  drover member add app1 --user '*' --role reader     # every logged-in user may read"
    )]
    Add {
        /// The application.
        app: String,
        /// The user (`*`: every authenticated user).
        #[arg(long, short = 'u')]
        user: String,
        /// The role.
        #[arg(long, short = 'r', value_enum)]
        role: Role,
    },
    /// Remove a member.
    #[command(after_help = "Example:\n  drover member remove app1 --user bob")]
    Remove {
        /// The application.
        app: String,
        /// The user (`*`: every authenticated user).
        #[arg(long, short = 'u')]
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TransferCmd {
    /// Offer the application to another user (owner only); they accept with `transfer accept`.
    #[command(after_help = "Example:\n  drover transfer start app1 --to bob")]
    Start {
        /// The application.
        app: String,
        /// The user to offer it to.
        #[arg(long)]
        to: String,
    },
    /// Show the pending transfer, if any (the owner, or the user it is offered to).
    #[command(after_help = "Example:\n  drover transfer show app1")]
    Show {
        /// The application.
        app: String,
    },
    /// Withdraw a pending offer (owner only).
    #[command(after_help = "Example:\n  drover transfer cancel app1")]
    Cancel {
        /// The application.
        app: String,
    },
    /// Accept an application offered to you: you become its owner.
    #[command(after_help = "Example:\n  drover transfer accept app1 --context bob")]
    Accept {
        /// The application.
        app: String,
    },
}

/// A member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Read the application and its devices.
    Reader,
    /// Read and write the application and its devices.
    Manager,
    /// Manager, plus manage members and delete the application.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Manager => "manager",
            Role::Admin => "admin",
        }
    }
}
