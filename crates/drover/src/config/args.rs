//! Where settings' text comes from: the TOML file, the environment and the flags, layered in that
//! order. The flags (and their environment variables) are made from the settings table, so a
//! setting is declared once; clap reads them as text and [`Config`](super::Config) checks them,
//! so a bad value exits with code 64 and one line, whichever layer it came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};

use super::{ConfigError, Setting, SETTINGS};

/// The settings of `drover serve`.
pub const SERVE: u8 = 1;
/// The settings `drover migrate` reads as well.
pub const MIGRATE: u8 = 2;

/// The text of each setting given on the command line or in the environment (by key), plus the
/// configuration file, for the settings of one command (`SCOPE`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SettingArgs<const SCOPE: u8> {
    /// The TOML configuration file (`--config` / `DROVER_CONFIG`).
    pub config: Option<PathBuf>,
    /// Setting key → text, from flags and environment variables.
    pub values: BTreeMap<&'static str, String>,
}

/// The flags of `drover serve`.
pub type ServeArgs = SettingArgs<SERVE>;

impl<const SCOPE: u8> SettingArgs<SCOPE> {
    /// Settings given as `(key, text)` pairs, as if by flags (for tests and embedding).
    ///
    /// # Panics
    /// On a key that is not a setting.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut values = BTreeMap::new();
        for (key, text) in pairs {
            let Some(setting) = SETTINGS.iter().find(|s| s.key == key) else {
                panic!("'{key}' is not a setting");
            };
            values.insert(setting.key, text.to_string());
        }
        SettingArgs {
            config: None,
            values,
        }
    }

    /// The text of every setting: the file's, overridden by the environment's and the flags'.
    pub(super) fn layered(&self) -> Result<BTreeMap<&'static str, String>, ConfigError> {
        let mut layered = match &self.config {
            Some(path) => read_file(path)?,
            None => BTreeMap::new(),
        };
        for (key, text) in &self.values {
            layered.insert(key, text.clone());
        }
        Ok(layered)
    }
}

/// `--flag` / `DROVER_ENV` of each setting, made once (clap keeps `'static` names).
fn names() -> &'static [(&'static str, &'static str)] {
    static NAMES: OnceLock<Vec<(&'static str, &'static str)>> = OnceLock::new();
    NAMES.get_or_init(|| {
        SETTINGS
            .iter()
            .map(|s| {
                let flag: &'static str = Box::leak(s.flag_name().into_boxed_str());
                let env: &'static str = Box::leak(s.env().into_boxed_str());
                (flag, env)
            })
            .collect()
    })
}

fn help(s: &Setting) -> String {
    if s.default.is_empty() {
        s.help.to_string()
    } else {
        format!("{} [default: {}]", s.help, s.default)
    }
}

impl<const SCOPE: u8> Args for SettingArgs<SCOPE> {
    fn augment_args(cmd: Command) -> Command {
        let mut cmd = cmd.arg(
            Arg::new("config")
                .long("config")
                .env("DROVER_CONFIG")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("TOML configuration file (keys as in `drover serve --print-config`); the environment and flags override it"),
        );
        for (s, (flag, env)) in SETTINGS.iter().zip(names()) {
            if s.scopes & SCOPE == 0 {
                continue;
            }
            cmd = cmd.arg(
                Arg::new(s.key)
                    .long(*flag)
                    .env(*env)
                    .value_name(s.value_name)
                    .hide_env_values(s.secret)
                    .help(help(s)),
            );
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl<const SCOPE: u8> FromArgMatches for SettingArgs<SCOPE> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut values = BTreeMap::new();
        for s in SETTINGS.iter().filter(|s| s.scopes & SCOPE != 0) {
            if let Some(text) = m.get_one::<String>(s.key) {
                values.insert(s.key, text.clone());
            }
        }
        Ok(SettingArgs {
            config: m.get_one::<PathBuf>("config").cloned(),
            values,
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

/// The file's settings as text, by key (`[oidc] issuer_url` is `oidc.issuer_url`).
fn read_file(path: &Path) -> Result<BTreeMap<&'static str, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "cannot read config file {} (--config / DROVER_CONFIG): {e}",
            path.display()
        ))
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        let msg = e.message().replace('\n', " ");
        ConfigError(format!("invalid config file {}: {msg}", path.display()))
    })?;
    let mut out = BTreeMap::new();
    flatten(path, "", &table, &mut out)?;
    Ok(out)
}

fn flatten(
    path: &Path,
    prefix: &str,
    table: &toml::Table,
    out: &mut BTreeMap<&'static str, String>,
) -> Result<(), ConfigError> {
    for (name, value) in table {
        let key = format!("{prefix}{name}");
        if let toml::Value::Table(inner) = value {
            flatten(path, &format!("{key}."), inner, out)?;
            continue;
        }
        let Some(setting) = SETTINGS.iter().find(|s| s.key == key) else {
            return Err(ConfigError(format!(
                "invalid config file {}: unknown setting '{key}' (see `drover serve --print-config` for the keys)",
                path.display()
            )));
        };
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            other => {
                return Err(ConfigError(format!(
                    "invalid config file {}: '{key}' cannot be {}",
                    path.display(),
                    other.type_str()
                )))
            }
        };
        out.insert(setting.key, text);
    }
    Ok(())
}
