//! Device certificates on a cluster: one device CA for every node; a certificate issued
//! through node A authenticates on node B, and revoking it through A ends the session on B.

use std::time::{Duration, Instant};

use crate::common::backends::{backends, unique, Cleanup};
use crate::node::{Node, WAIT};
use rumqttc::{Event, Packet};
use serde_json::{json, Value};

#[tokio::test]
#[ignore = "needs PostgreSQL and NATS: set DROVER_TEST_DATABASE_URL and DROVER_TEST_NATS_URL and run with --include-ignored (CI does)"]
async fn a_revocation_through_one_node_ends_the_session_on_another() {
    let (db, nats) = backends();
    let (schema, prefix) = (unique("drover_cert"), unique("cert"));
    let _cleanup = Cleanup {
        db: db.clone(),
        schema: schema.clone(),
        nats: nats.clone(),
        prefix: prefix.clone(),
    };
    let a = Node::start("a", &db, &schema, &nats, &prefix);
    let b = Node::start("b", &db, &schema, &nats, &prefix);
    a.create_device("pw1").await;
    // One device CA for both.
    let ca = |n: &Node| {
        let url = format!("{}/api/certificates/v1alpha1/ca", n.api);
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    assert_eq!(ca(&a).await, ca(&b).await);

    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let r = a
        .admin(
            reqwest::Method::POST,
            "/api/certificates/v1alpha1/apps/app/devices/dev1",
        )
        .body(csr)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let issued: Value = r.json().await.unwrap();
    let cert = issued["certificate"].as_str().unwrap();
    let fingerprint = issued["fingerprint"].as_str().unwrap();

    let options = crate::common::mqtt::mqtts_with_certificate(
        &b._dir.path().join("tls/ca.pem"),
        b.mqtts_port.unwrap(),
        cert,
        &key.serialize_pem(),
    );
    let (_c, mut el) = rumqttc::AsyncClient::new(options, 10);
    let code = tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::ConnAck(a)) = el.poll().await.unwrap() {
                return a.code;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(code, rumqttc::ConnectReturnCode::Success);

    let started = Instant::now();
    let r = a
        .admin(
            reqwest::Method::POST,
            &format!("/api/certificates/v1alpha1/apps/app/{fingerprint}/revoke"),
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        crate::common::mqtt::closes(&mut el, Duration::from_secs(10)).await,
        "the session on B must end"
    );
    println!(
        "the session on node B ended {:?} after the revocation through node A was sent",
        started.elapsed()
    );
}
