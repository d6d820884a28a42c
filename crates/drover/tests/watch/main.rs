//! End-to-end tests of the change watch: server-sent events at `/api/registry/v1alpha1/watch`,
//! one CloudEvent per changed path, resumable from any revision, filtered by what the caller may
//! read.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod deletes;
mod delivery;
mod filtering;
mod helpers;
mod source;
mod sse;
