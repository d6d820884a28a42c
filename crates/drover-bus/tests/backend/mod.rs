//! What tests that need a backend server get it from, and what happens when it is missing.
//!
//! The convention (the same in every Drover test crate): a test that needs NATS with
//! JetStream takes its URL from `DROVER_TEST_NATS_URL` (`.ci/run` sets it), and one that
//! starts a private server needs the `nats-server` binary. When what it needs is missing the
//! test **fails**, naming it — a test that passes without having run would be a lie — unless
//! `DROVER_SKIP_BACKEND_TESTS=1` is set: then it prints `SKIPPED: <test> needs <what>` to
//! stderr and returns (run `cargo test -- --nocapture` to see the lines). The tests are not
//! `#[ignore]`d, so `cargo test` runs them wherever the backend is there.

#![allow(dead_code)]

use std::path::PathBuf;

/// The shared NATS server's URL, or `None` (said on stderr) when backend tests are skipped.
/// Panics when it is not set and skipping was not asked for.
pub fn nats_url() -> Option<String> {
    match std::env::var("DROVER_TEST_NATS_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => missing("DROVER_TEST_NATS_URL (NATS with JetStream, e.g. nats://127.0.0.1:4222)"),
    }
}

/// The `nats-server` binary (on `PATH`, or in `/usr/sbin` or `/usr/local/bin`), or `None`
/// (said on stderr) when backend tests are skipped. Panics when there is none and skipping
/// was not asked for.
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

/// Skips (with a line on stderr) or fails the running test, which needs `what`.
fn missing<T>(what: &str) -> Option<T> {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("this test");
    if std::env::var("DROVER_SKIP_BACKEND_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: {test} needs {what}");
        None
    } else {
        panic!(
            "{test} needs {what}; set DROVER_SKIP_BACKEND_TESTS=1 to skip the tests that need \
             a backend instead"
        );
    }
}
