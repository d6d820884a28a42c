//! End-to-end tests of the `drover` binary: configuration layering and errors, the banner, the
//! generated administrator token, and shutdown on SIGTERM.
#![allow(clippy::unwrap_used)]

mod config;
mod config_errors;
mod helpers;
mod serve;
