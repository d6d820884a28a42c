//! The `drover` command-line client: contexts, registry (with `edit`, members, ownership transfer
//! and certificates), users, tokens, commands and the live event stream, over the REST API and
//! the WebSocket integration. Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 conflict; a
//! reader that closes stdout early (`drover app list | head -1`) ends the command quietly with 0.
//!
//! This module runs a parsed command ([`run`]: runtime, dispatch, the error's one line and exit
//! code). The rest, by idea:
//! - `grammar`: every subcommand, argument, help text and example (clap derive types);
//! - `resources`: the verbs applications and devices share, written once over a kind;
//!   `registry`: `app` and `device` mapped onto them, and each kind's `set` commands;
//!   `certs`: trust anchors and device certificates; `edit`: `$EDITOR` round trips;
//! - `login` (contexts, whoami), `accounts` (tokens, users), `members` (members, transfer),
//!   `command` (`cmd`), `stream` (live events), `watch` (registry changes), `twin`, `webhook`
//!   (webhook subscriptions, their status and dead letters);
//! - `client`: HTTP requests and API errors; `config`: the stored contexts; `output`: tables,
//!   JSON, YAML, and every write to stdout and stderr.

// Output goes through `output`, which ends quietly on a closed pipe instead of panicking.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod accounts;
pub mod cert;
pub mod certs;
pub mod client;
pub mod command;
pub mod config;
pub mod edit;
pub mod grammar;
pub mod login;
pub mod members;
pub mod output;
pub mod registry;
pub mod resources;
pub mod stream;
pub mod twin;
pub mod watch;
pub mod webhook;

use std::process::ExitCode;

pub use grammar::ClientCommand;

use client::Api;
use config::ClientConfig;
use grammar::Global;

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
    /// Whoever read stdout closed it (`| head`): the command stops, quietly, with exit 0.
    StdoutClosed,
}

impl CliError {
    pub fn code(&self) -> u8 {
        match self {
            CliError::StdoutClosed => 0,
            CliError::Other(_) => 1,
            CliError::Usage(_) => 2,
            CliError::NotFound(_) => 3,
            CliError::Conflict(_) => 4,
        }
    }

    /// What is printed after `error: `; nothing for a closed stdout.
    fn message(&self) -> Option<&str> {
        match self {
            CliError::Other(m)
            | CliError::Usage(m)
            | CliError::NotFound(m)
            | CliError::Conflict(m) => Some(m),
            CliError::StdoutClosed => None,
        }
    }
}

type Result<T> = std::result::Result<T, CliError>;

const REGISTRY: &str = "/api/registry/v1alpha1";
const ADMIN: &str = "/api/admin/v1alpha1";
const TOKENS: &str = "/api/tokens/v1alpha1";
const COMMANDS: &str = "/api/command/v1alpha1";

/// Runs a client command; prints errors in one line and returns the exit code.
pub fn run(cmd: ClientCommand) -> ExitCode {
    match crate::runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(rt) => exit_code(rt.block_on(dispatch(cmd))),
        Err(code) => code,
    }
}

/// The exit code of a finished command, after printing its error in one line on stderr (nothing
/// for [`CliError::StdoutClosed`]).
pub fn exit_code(result: Result<()>) -> ExitCode {
    let Err(e) = result else {
        return ExitCode::SUCCESS;
    };
    if let Some(m) = e.message() {
        output::note(&format!("error: {m}"));
    }
    ExitCode::from(e.code())
}

/// The API of the context chosen by `--context`, else the current one.
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
        } => login::login(url, token, name, &g).await,
        ClientCommand::Context(c) => login::context(c),
        ClientCommand::Whoami { g } => login::whoami(&g).await,
        ClientCommand::App { g, cmd } => registry::app(&api(&g)?, g.output, cmd).await,
        ClientCommand::Device { g, app, cmd } => {
            let Some(app) = app else {
                return Err(CliError::Usage(
                    "which application? pass --app <name> (or set DROVER_APP)".into(),
                ));
            };
            registry::device(&api(&g)?, g.output, &app, cmd).await
        }
        ClientCommand::Token { g, cmd } => accounts::token(&api(&g)?, g.output, cmd).await,
        ClientCommand::User { g, cmd } => accounts::user(&api(&g)?, g.output, cmd).await,
        ClientCommand::Member { g, cmd } => members::member(&api(&g)?, g.output, cmd).await,
        ClientCommand::Transfer { g, cmd } => members::transfer(&api(&g)?, g.output, cmd).await,
        ClientCommand::Stream { g, args } => stream::stream(&api(&g)?, g.output, args).await,
        ClientCommand::Watch { g, args } => watch::watch(&api(&g)?, g.output, args).await,
        ClientCommand::Twin(cmd) => twin::twin(cmd, api).await,
        ClientCommand::Cert(cmd) => cert::cert(cmd, api).await,
        ClientCommand::Webhook { g, app, cmd } => {
            let Some(app) = app else {
                return Err(CliError::Usage(
                    "which application? pass --app <name> (or set DROVER_APP)".into(),
                ));
            };
            webhook::webhook(&api(&g)?, g.output, &app, cmd).await
        }
        ClientCommand::Cmd { g, args } => {
            // The payload is read first: a missing file is reported before a missing login.
            let body = command::payload(&args)?;
            command::send(&api(&g)?, g.output, args, body).await
        }
    }
}
