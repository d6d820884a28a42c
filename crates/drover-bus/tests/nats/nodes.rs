//! Several nodes on one prefix share streams, groups and deletions.

use std::time::{Duration, Instant};

use crate::backend;
use crate::conformance::{append_n, event, ids, key, take, within};
use crate::helpers::{config, connect, Prefix};
use drover_bus::{BusError, EventLog, Offset, StartFrom};

#[tokio::test]
#[ignore = "needs NATS with JetStream: set DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn two_nodes_share_streams_groups_and_deletions() {
    let Some(url) = backend::nats_url() else {
        return;
    };
    let own = Prefix::new(&url);
    let prefix = own.name.as_str();
    let a = connect(config(&url, prefix)).await;
    let b = connect(config(&url, prefix)).await;
    let s = key("nodes");

    // Appends through A are consumed through B, live and from the start.
    let mut live = b.consume(&s, StartFrom::Latest).await.expect("consume");
    append_n(&a, &s, "e", 3).await;
    assert_eq!(ids(&take(&mut *live, 3).await), ["e0", "e1", "e2"]);
    assert_eq!(live.end(), 3);
    let mut all = b.consume(&s, StartFrom::Earliest).await.expect("consume");
    assert_eq!(ids(&take(&mut *all, 3).await), ["e0", "e1", "e2"]);
    // Both append; offsets stay dense and each sees the other's.
    let offsets = futures::future::join_all((0..10).map(|i| {
        let log = if i % 2 == 0 { &a } else { &b };
        log.append(&s, event(&s, format!("x{i}")))
    }))
    .await;
    let mut offsets: Vec<Offset> = offsets.into_iter().map(|o| o.expect("append")).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (4..=13).collect::<Vec<_>>());
    let mut from_a = a.consume(&s, StartFrom::After(3)).await.expect("consume");
    assert_eq!(take(&mut *from_a, 10).await.len(), 10);
    assert_eq!(take(&mut *live, 10).await.len(), 10);

    // A group committed through A is where B finds it.
    a.commit(&s, "shared", 2).await.expect("commit");
    assert_eq!(b.committed(&s, "shared").await.expect("committed"), Some(2));
    // B knows of offsets appended through A (it read them) and may commit them.
    b.commit(&s, "shared", 13).await.expect("commit");
    assert_eq!(
        a.committed(&s, "shared").await.expect("committed"),
        Some(13)
    );

    // Deleting through A ends B's waiting consumer, and B's appends are refused.
    let waiting = tokio::spawn(async move { live.next().await });
    let deleting = Instant::now();
    a.delete_stream(&s).await.expect("delete");
    let ended = within("B's consumer ends", waiting).await.expect("join");
    assert!(matches!(ended, Ok(None)), "{ended:?}");
    // JetStream tells B's pull consumer at once (no waiting for missed heartbeats).
    let took = deleting.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "B's consumer ended after {took:?}"
    );
    assert!(matches!(
        b.append(&s, event(&s, "zombie")).await,
        Err(BusError::Invalid(_))
    ));
    assert_eq!(b.committed(&s, "shared").await.expect("committed"), None);
    let mut c = b.consume(&s, StartFrom::Earliest).await.expect("consume");
    assert_eq!(within("ends", c.next()).await.expect("next"), None);
    // B deleting it too is fine.
    b.delete_stream(&s).await.expect("delete again");

    a.close().await.expect("close");
    b.close().await.expect("close");
}
