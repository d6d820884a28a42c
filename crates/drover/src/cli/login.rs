//! `drover login`, `drover context` and `drover whoami`: which server, as which user, the other
//! commands talk to (the contexts themselves are stored by `config`).

use serde_json::{json, Value};

use super::client::Api;
use super::config::{ClientConfig, Context};
use super::grammar::{ContextCmd, Global};
use super::output::{done, line, print_list};
use super::{api, CliError, Result, ADMIN};

/// Checks the credentials against the server, then stores them as a context and makes it the
/// current one.
pub async fn login(url: String, token: String, name: Option<String>, g: &Global) -> Result<()> {
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
    done(
        g.output,
        &json!({"context": name, "url": url, "user": user}),
        &format!("Logged in to {url} as {user} (context {name:?})."),
    )
}

pub fn context(cmd: ContextCmd) -> Result<()> {
    let mut cfg = ClientConfig::load()?;
    match cmd {
        ContextCmd::List { output } => {
            let current = cfg.current.clone().unwrap_or_default();
            let contexts: Vec<Value> = cfg
                .contexts
                .iter()
                .map(|(n, c)| json!({"name": n, "url": c.url, "user": c.user, "current": *n == current}))
                .collect();
            print_list(output, contexts, &["CURRENT", "NAME", "URL", "USER"], |c| {
                let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
                let mark = if c["current"] == true { "*" } else { "" };
                vec![mark.into(), s("name"), s("url"), s("user")]
            })
        }
        ContextCmd::Use { name } => {
            if !cfg.contexts.contains_key(&name) {
                return Err(CliError::NotFound(format!("no context named {name:?}")));
            }
            cfg.current = Some(name.clone());
            cfg.save()?;
            line(&format!("Switched to context {name:?}."))
        }
        ContextCmd::Delete { name } => {
            if cfg.contexts.remove(&name).is_none() {
                return Err(CliError::NotFound(format!("no context named {name:?}")));
            }
            if cfg.current.as_deref() == Some(name.as_str()) {
                cfg.current = None;
            }
            cfg.save()?;
            line(&format!("Deleted context {name:?}."))
        }
    }
}

pub async fn whoami(g: &Global) -> Result<()> {
    let api = api(g)?;
    let me = api.get(&format!("{ADMIN}/user/whoami")).await?;
    let name = me["name"].as_str().unwrap_or("?");
    let admin = if me["admin"].as_bool() == Some(true) {
        " (system administrator)"
    } else {
        ""
    };
    done(g.output, &me, &format!("{name}{admin} at {}", api.ctx.url))
}
