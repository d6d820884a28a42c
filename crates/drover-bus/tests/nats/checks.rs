//! The shared conformance checks on the JetStream log, also with tiny read batches.

use crate::backend;
use crate::conformance;
use crate::helpers::{config, connect, Prefix};
use drover_bus::nats::JetStreamConfig;
use drover_bus::EventLog;

#[tokio::test]
#[ignore = "needs NATS with JetStream: set DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn conformance() {
    let Some(url) = backend::nats_url() else {
        return;
    };
    let own = Prefix::new(&url);
    let prefix = own.name.as_str();
    let log = connect(config(&url, prefix)).await;
    conformance::all(&log).await;
    log.close().await.expect("close");
}

#[tokio::test]
#[ignore = "needs NATS with JetStream: set DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn conformance_with_tiny_read_batches() {
    // The same checks with a pull of two messages at a time.
    let Some(url) = backend::nats_url() else {
        return;
    };
    let own = Prefix::new(&url);
    let prefix = own.name.as_str();
    let log = connect(JetStreamConfig {
        read_batch: 2,
        ..config(&url, prefix)
    })
    .await;
    conformance::all(&log).await;
    log.close().await.expect("close");
}
