//! Two `drover serve` processes on one PostgreSQL registry and one NATS JetStream server
//! (`DROVER_TEST_DATABASE_URL`, `DROVER_TEST_NATS_URL`; CI sets both): telemetry into node A is
//! consumed from node B (and a WebSocket consumer group resumes on the other node), commands
//! sent through B reach a device on A and its reply comes back, a credential change made
//! through A is enforced on B, a device connecting to B closes its connection on A. Each test
//! has its own PostgreSQL schema and NATS prefix. Outages of NATS and PostgreSQL use private
//! servers of their own.
#![allow(clippy::unwrap_used)]

mod certificates;
mod clients;
#[path = "../common/mod.rs"]
mod common;
mod nats_outage;
mod node;
mod postgres_outage;
mod shared;
mod twins;
