//! End-to-end tests of who may do what: users, access tokens, authentication errors, tenant
//! isolation, member roles, ownership transfer and discovery documents (the OpenAPI document:
//! tests/openapi.rs).
#![allow(clippy::unwrap_used)]

mod authentication;
#[path = "../common/mod.rs"]
mod common;
mod discovery;
mod helpers;
mod isolation;
mod roles;
mod tokens;
mod transfer;
mod users;
