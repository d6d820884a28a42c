//! Client contexts: where the CLI keeps servers and credentials.
//!
//! The file is `$DROVER_CONFIG_DIR/config.toml`, else `$XDG_CONFIG_HOME/drover/config.toml`, else
//! `~/.config/drover/config.toml`, written with mode 0600 (it holds access tokens).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::CliError;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ClientConfig {
    /// The context used when `--context` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Context {
    pub url: String,
    pub user: String,
    pub token: String,
}

pub fn config_dir() -> Result<PathBuf, CliError> {
    if let Some(d) = std::env::var_os("DROVER_CONFIG_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("drover"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".config").join("drover")),
        None => Err(CliError::Other(
            "cannot find a configuration directory: set DROVER_CONFIG_DIR or HOME".into(),
        )),
    }
}

pub fn config_file() -> Result<PathBuf, CliError> {
    Ok(config_dir()?.join("config.toml"))
}

impl ClientConfig {
    pub fn load() -> Result<ClientConfig, CliError> {
        let path = config_file()?;
        match std::fs::read_to_string(&path) {
            Ok(s) => toml::from_str(&s)
                .map_err(|e| CliError::Other(format!("cannot read {}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientConfig::default()),
            Err(e) => Err(CliError::Other(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    pub fn save(&self) -> Result<(), CliError> {
        let path = config_file()?;
        let err =
            |e: std::io::Error| CliError::Other(format!("cannot write {}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let text = toml::to_string(self)
            .map_err(|e| CliError::Other(format!("cannot encode the configuration: {e}")))?;
        let tmp = path.with_extension("toml.tmp");
        {
            use std::io::Write as _;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp).map_err(err)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt as _;
                f.set_permissions(std::fs::Permissions::from_mode(0o600))
                    .map_err(err)?;
            }
            f.write_all(text.as_bytes()).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, &path).map_err(err)?;
        Ok(())
    }

    /// The context to use: `--context`, else the current one.
    pub fn resolve(&self, name: Option<&str>) -> Result<(String, Context), CliError> {
        let name = match name.map(str::to_string).or_else(|| self.current.clone()) {
            Some(n) => n,
            None => {
                return Err(CliError::Other(
                    "not logged in: run `drover login <url> --token <user>:<token>` first".into(),
                ))
            }
        };
        match self.contexts.get(&name) {
            Some(c) => Ok((name, c.clone())),
            None => Err(CliError::NotFound(format!(
                "no context named {name:?} (see `drover context list`)"
            ))),
        }
    }
}
