//! The `drover` binary's library half: configuration, wiring and lifecycle of the whole platform
//! (`serve`), usable in-process by tests (`server::start` on port 0).

#![forbid(unsafe_code)]

pub mod config;
pub mod server;
pub mod tls;

pub use config::{Config, ConfigError, ServeArgs, SettingArgs};
pub use server::{start, AdminToken, Server, StartError};
