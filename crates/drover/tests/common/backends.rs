//! The shared PostgreSQL and NATS servers of the multi-node tests (`DROVER_TEST_DATABASE_URL`,
//! `DROVER_TEST_NATS_URL`; CI sets both): unique names per test, and removal of what a test
//! created on them even when it failed.

use std::process::{Command, Stdio};

use futures::StreamExt;

/// The database and NATS URLs. Tests that need them are `#[ignore]`d (a plain `cargo test`
/// lists them as ignored); `--include-ignored` runs them, as CI does.
///
/// # Panics
/// When a variable is not set: the test was asked to run and cannot.
pub fn backends() -> (String, String) {
    match (
        std::env::var("DROVER_TEST_DATABASE_URL"),
        std::env::var("DROVER_TEST_NATS_URL"),
    ) {
        (Ok(db), Ok(nats)) => (db, nats),
        _ => panic!("this test needs PostgreSQL and NATS: set DROVER_TEST_DATABASE_URL and DROVER_TEST_NATS_URL"),
    }
}

/// A name no other test run uses (schema, subject prefix).
pub fn unique(what: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{what}_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        chrono::Utc::now().timestamp_millis() % 1_000_000
    )
}

/// Removes what the test created on the shared servers — its schema and its streams — even when
/// it failed (on a thread and runtime of its own: the test's may be unwinding).
pub struct Cleanup {
    pub db: String,
    pub schema: String,
    pub nats: String,
    pub prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(&self.db)
            .args([
                "-qc",
                &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let (nats, prefix) = (self.nats.clone(), self.prefix.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(delete_streams(&nats, &prefix));
            }
        })
        .join();
    }
}

/// Deletes the JetStream streams of the test's own prefix (events, command queue, groups).
pub async fn delete_streams(nats: &str, prefix: &str) {
    let Ok(client) = async_nats::connect(nats).await else {
        return;
    };
    let js = async_nats::jetstream::new(client);
    let names: Vec<String> = js
        .stream_names()
        .filter_map(|n| async move { n.ok() })
        .collect()
        .await;
    let ours = prefix.to_uppercase();
    for name in names {
        if name.to_uppercase().starts_with(&ours)
            || name.to_uppercase().starts_with(&format!("KV_{ours}"))
        {
            let _ = js.delete_stream(&name).await;
        }
    }
}
