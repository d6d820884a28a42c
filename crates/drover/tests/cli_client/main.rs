//! End-to-end tests of the `drover` command-line client: the built binary against an in-process
//! server, with its configuration in a temporary `DROVER_CONFIG_DIR`.
#![allow(clippy::unwrap_used)]

mod certificates;
#[path = "../common/mod.rs"]
mod common;
mod devices;
mod edit;
mod help;
mod helpers;
mod login;
mod resources;
mod streams;
mod users;
mod webhooks;
