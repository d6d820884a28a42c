//! End-to-end tests of the registry API semantics (contract `drogue-compat.md` §2) over real
//! HTTP against the in-process server.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod create;
mod credentials;
mod deletion;
mod helpers;
mod listing;
mod persistence;
mod uniqueness;
mod update;
mod validation;
