//! Configuration, connection and a prefix of its own (cleaned up when dropped) for each test.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::conformance::within;
use drover_bus::nats::{JetStreamConfig, JetStreamLog};
use futures::StreamExt;

/// A prefix no other test (or run) uses; it holds no `_`, so `<PREFIX>_` matches only its own
/// streams and buckets.
pub(crate) fn unique_prefix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() % 1_000_000_000);
    format!("t{}n{n}s{ms}", std::process::id())
}

pub(crate) fn config(url: &str, prefix: &str) -> JetStreamConfig {
    JetStreamConfig {
        url: url.into(),
        prefix: prefix.into(),
        ..JetStreamConfig::default()
    }
}

pub(crate) async fn connect(config: JetStreamConfig) -> JetStreamLog {
    within("connect", JetStreamLog::connect(config))
        .await
        .expect("connect")
}

/// Deletes every stream and bucket of `prefix` (and nothing else).
pub(crate) async fn clean_up(url: &str, prefix: &str) {
    let client = async_nats::connect(url)
        .await
        .expect("connect for clean-up");
    let js = async_nats::jetstream::new(client);
    let upper = prefix.to_uppercase();
    let ours = [format!("{upper}_"), format!("KV_{upper}_")];
    let names: Vec<String> = js
        .stream_names()
        .filter_map(|n| async move { n.ok() })
        .collect()
        .await;
    for name in names
        .into_iter()
        .filter(|n| ours.iter().any(|p| n.starts_with(p.as_str())))
    {
        js.delete_stream(&name).await.expect("delete a test stream");
    }
}

/// A test's own prefix, cleaned up when the test ends, passed or failed.
pub(crate) struct Prefix {
    pub(crate) url: String,
    pub(crate) name: String,
}

impl Prefix {
    pub(crate) fn new(url: &str) -> Self {
        Self {
            url: url.into(),
            name: unique_prefix(),
        }
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        let (url, prefix) = (self.url.clone(), self.name.clone());
        // On a thread of its own: this may run inside the test's runtime.
        let done = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(clean_up(&url, &prefix));
        })
        .join();
        if done.is_err() && !std::thread::panicking() {
            panic!("cleaning up {} failed", self.name);
        }
    }
}
