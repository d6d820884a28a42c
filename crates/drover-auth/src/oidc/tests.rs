//! Tests against a tiny in-process identity provider (axum on 127.0.0.1:0).

mod claims;
mod key_fetching;
mod provider;
mod tokens;
