//! What tests that need a backend server get it from, and what happens when it is missing.
//!
//! The convention (the same in every Drover test crate): a test that needs NATS with
//! JetStream, or the `nats-server` binary, is `#[ignore]`d with the reason — a plain
//! `cargo test` lists it as ignored, never as passed — and `--include-ignored` runs it, as
//! `.ci/run` does with `DROVER_TEST_NATS_URL` set. Asked to run without what it needs, it
//! **fails**, naming it: a test that passes without having run would be a lie.

#![allow(dead_code)]

use std::path::PathBuf;

/// The shared NATS server's URL. Panics when it is not set (never `None`; an `Option` so that
/// callers read the same as before).
pub fn nats_url() -> Option<String> {
    match std::env::var("DROVER_TEST_NATS_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => missing("DROVER_TEST_NATS_URL (NATS with JetStream, e.g. nats://127.0.0.1:4222)"),
    }
}

/// The `nats-server` binary (on `PATH`, or in `/usr/sbin` or `/usr/local/bin`). Panics when
/// there is none.
pub fn nats_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/bin".into()])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file());
    match found {
        Some(binary) => Some(binary),
        None => missing("the nats-server binary (Debian: apt-get install nats-server)"),
    }
}

/// Fails the running test, which needs `what`.
fn missing<T>(what: &str) -> Option<T> {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("this test");
    panic!("{test} needs {what}")
}
