//! The CloudEvent `source` of a change: percent-encoded only where it must be.

use crate::common::TestServer;
use crate::helpers::list_revision;
use crate::sse::Sse;
use serde_json::json;

/// CloudEvent `source` is compared as a string by consumers: RFC 3986 producers must not
/// percent-encode unreserved characters (`A-Z a-z 0-9 - . _ ~`), so `drogue://my-app/dev-1.a_b~c`
/// stays as it is, while reserved characters of device names are encoded.
#[tokio::test]
async fn change_event_source_encodes_only_what_it_must() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let start = list_revision(&admin).await;
    let mut w = Sse::open(&admin, &format!("?since={start}"), None).await;
    admin.create_app("my-app").await;
    admin
        .create_device("my-app", json!({"metadata": {"name": "dev-1.a_b~c"}}))
        .await;
    admin
        .create_device("my-app", json!({"metadata": {"name": "a/b c"}}))
        .await;
    let cs = w.changes(3).await;
    assert_eq!(cs[0].event["source"], "drogue://my-app");
    assert_eq!(cs[1].event["source"], "drogue://my-app/dev-1.a_b~c");
    assert_eq!(cs[2].event["source"], "drogue://my-app/a%2Fb%20c");
}
