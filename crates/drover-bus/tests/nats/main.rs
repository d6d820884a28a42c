//! The NATS JetStream log: the shared conformance checks, then what only it does (retention
//! mapped to JetStream, deduplication, several nodes on one prefix, a server restart).
//!
//! Tests against the shared server need `DROVER_TEST_NATS_URL` (`.ci/run` sets
//! `nats://127.0.0.1:4222`); each runs under a prefix of its own whose streams and buckets it
//! deletes at the end. The tests that stop a server start a private `nats-server` on a port it
//! picks itself. These tests are `#[ignore]`d; `--include-ignored` runs them (and fails them
//! without the URL or the binary; see `backend/mod.rs`).

#[path = "../backend/mod.rs"]
mod backend;
mod checks;
#[path = "../conformance/mod.rs"]
mod conformance;
mod helpers;
mod jetstream;
mod nodes;
mod servers;
