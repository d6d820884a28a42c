//! The device CA: a certificate issued from a CSR authenticates its device over HTTPS and MQTTS;
//! revoking it refuses the next handshake and ends the live MQTT session; the CRL lists it;
//! certificates of an application's own trust anchors are revoked by certificate, fingerprint
//! or serial; deleting a device revokes its certificates; bad CSRs and other tenants' requests
//! are refused.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::mqtt::until;
use common::TestServer;
use rcgen::{CertificateParams, DnType, KeyPair};
use reqwest::{Method, StatusCode};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use serde_json::{json, Value};

const BASE: &str = "/api/certificates/v1alpha1";

/// A key and a CSR for it (the CSR's subject is ignored by Drover).
fn key_and_csr() -> (KeyPair, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "whatever");
    let csr = p.serialize_request(&key).unwrap().pem().unwrap();
    (key, csr)
}

async fn issue(t: &TestServer, app: &str, device: &str, csr: &str) -> reqwest::Response {
    t.admin()
        .request(Method::POST, &format!("{BASE}/apps/{app}/devices/{device}"))
        .header("content-type", "application/pkcs10")
        .body(csr.to_string())
        .send()
        .await
        .unwrap()
}

fn https(t: &TestServer, cert: &str, key: &KeyPair) -> reqwest::Client {
    let ca = std::fs::read(t.data_dir.join("tls/ca.pem")).unwrap();
    let identity =
        reqwest::Identity::from_pem(format!("{cert}{}", key.serialize_pem()).as_bytes()).unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .identity(identity)
        .build()
        .unwrap()
}

async fn publish_https(c: &reqwest::Client, t: &TestServer) -> StatusCode {
    let port = t.server.as_ref().unwrap().https_addr.unwrap().port();
    c.post(format!("https://localhost:{port}/v1/telemetry"))
        .body("{\"t\":1}")
        .send()
        .await
        .unwrap()
        .status()
}

/// MQTTS options with a client certificate, trusting the development CA.
fn mqtts(t: &TestServer, cert: &str, key: &KeyPair) -> MqttOptions {
    let port = t.server.as_ref().unwrap().mqtts_addr.unwrap().port();
    common::mqtt::mqtts_with_certificate(
        &t.data_dir.join("tls/ca.pem"),
        port,
        cert,
        &key.serialize_pem(),
    )
}

#[tokio::test]
async fn issued_certificates_authenticate_until_revoked() {
    let t = TestServer::start().await;
    let admin = t.admin();
    admin.create_app("fleet").await;
    admin
        .create_device("fleet", json!({"metadata": {"name": "d1"}}))
        .await;

    // The CA is public.
    let r = t.anonymous().get(&format!("{BASE}/ca")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r
        .text()
        .await
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));

    let (key, csr) = key_and_csr();
    let r = issue(&t, "fleet", "d1", &csr).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let issued: Value = r.json().await.unwrap();
    let fingerprint = issued["fingerprint"].as_str().unwrap().to_string();
    let cert = issued["certificate"].as_str().unwrap().to_string();
    assert_eq!(issued["subject"], "CN=d1, O=fleet");
    assert_eq!(issued["device"], "d1");
    assert!(issued.get("revoked").is_none());

    // The certificate authenticates d1 over HTTPS and MQTTS, with no trust anchor set.
    let client = https(&t, &cert, &key);
    assert_eq!(publish_https(&client, &t).await, StatusCode::ACCEPTED);
    let (_c, mut el) = AsyncClient::new(mqtts(&t, &cert, &key), 10);
    let code = until(&mut el, |e| match e {
        Event::Incoming(Packet::ConnAck(a)) => Some(a.code),
        _ => None,
    })
    .await;
    assert_eq!(code, rumqttc::ConnectReturnCode::Success);

    // Listed and shown.
    let list: Value = admin
        .get_json(&format!("{BASE}/apps/fleet?device=d1"))
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["fingerprint"], fingerprint);

    // Revoked: the live session ends, the next request is refused, the CRL lists it.
    let started = Instant::now();
    let r = admin
        .post(
            &format!("{BASE}/apps/fleet/{fingerprint}/revoke"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.json::<Value>().await.unwrap()["revoked"].is_string());
    assert!(
        common::mqtt::closes(&mut el, Duration::from_secs(10)).await,
        "the MQTT session must end"
    );
    println!(
        "MQTT session closed {:?} after the revocation",
        started.elapsed()
    );
    assert_eq!(publish_https(&client, &t).await, StatusCode::FORBIDDEN);
    let (_c, mut el) = AsyncClient::new(mqtts(&t, &cert, &key), 10);
    let e = common::mqtt::refusal(&mut el).await;
    assert!(
        e.contains("NotAuthorized") || e.contains("BadUserNamePassword"),
        "{e}"
    );
    let crl = t
        .anonymous()
        .get(&format!("{BASE}/crl?format=pem"))
        .await
        .text()
        .await
        .unwrap();
    assert!(crl.starts_with("-----BEGIN X509 CRL-----"), "{crl}");
    let der = t.anonymous().get(&format!("{BASE}/crl")).await;
    assert_eq!(
        der.headers()["content-type"].to_str().unwrap(),
        "application/pkix-crl"
    );
    let serial = issued["serial"].as_str().unwrap();
    let bytes = der.bytes().await.unwrap();
    let serial_bytes: Vec<u8> = (0..serial.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&serial[i..i + 2], 16).unwrap())
        .collect();
    assert!(
        bytes.windows(serial_bytes.len()).any(|w| w == serial_bytes),
        "the CRL lists the serial"
    );
}

#[tokio::test]
async fn bad_requests_and_other_tenants() {
    let t = TestServer::start().await;
    let admin = t.admin();
    admin.create_app("fleet").await;
    admin
        .create_device("fleet", json!({"metadata": {"name": "d1"}}))
        .await;
    let error = |r: reqwest::Response| async move {
        let status = r.status();
        (
            status,
            r.json::<Value>().await.unwrap()["message"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    };
    let (status, m) = error(issue(&t, "fleet", "d1", "not a csr").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(m.contains("not a PEM certificate signing request"), "{m}");
    let (_, csr) = key_and_csr();
    let (status, _) = error(issue(&t, "fleet", "nobody", &csr).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let r = admin
        .request(
            Method::POST,
            &format!("{BASE}/apps/fleet/devices/d1?days=100000"),
        )
        .body(csr.clone())
        .send()
        .await
        .unwrap();
    let (status, m) = error(r).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(m.contains("days must be 1 to 365"), "{m}");

    // Another user sees nothing of the application.
    let mallory = t.user("mallory").await;
    let fp = "0".repeat(64);
    for (method, path) in [
        (Method::GET, format!("{BASE}/apps/fleet")),
        (Method::GET, format!("{BASE}/apps/fleet/{fp}")),
        (Method::POST, format!("{BASE}/apps/fleet/{fp}/revoke")),
        (Method::POST, format!("{BASE}/apps/fleet/devices/d1")),
    ] {
        let r = mallory
            .request(method, &path)
            .body(csr.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let r = mallory
        .post(
            &format!("{BASE}/apps/fleet/revocations"),
            &json!({"fingerprint": fp, "device": "d1"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Malformed revocations.
    for body in [
        json!({}),
        json!({"fingerprint": "xyz", "device": "d1"}),
        json!({"fingerprint": fp}),
        json!({"fingerprint": fp, "serial": "01", "device": "d1"}),
    ] {
        let r = admin
            .post(&format!("{BASE}/apps/fleet/revocations"), &body)
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
    }
}

#[tokio::test]
async fn trust_anchor_certificates_are_revoked_and_deleted_devices_lose_theirs() {
    let t = TestServer::start().await;
    let admin = t.admin();
    // An application with its own CA as trust anchor, and a device certificate from it.
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "Own CA");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let own_ca = p.self_signed(&ca_key).unwrap();
    let anchor = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, own_ca.pem());
    let r = admin
        .post(
            "/api/registry/v1alpha1/apps",
            &json!({"metadata": {"name": "own"}, "spec": {"trustAnchors": {"anchors": [{"certificate": anchor}]}}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    for name in ["ext1", "ext2", "gone"] {
        admin
            .create_device("own", json!({"metadata": {"name": name}}))
            .await;
    }
    let device_cert = |cn: &str, serial: u64| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serial_number = Some(rcgen::SerialNumber::from(serial));
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        (p.signed_by(&key, &own_ca, &ca_key).unwrap().pem(), key)
    };
    let (cert1, key1) = device_cert("ext1", 0x1001);
    let (cert2, key2) = device_cert("ext2", 0x2002);
    let c1 = https(&t, &cert1, &key1);
    let c2 = https(&t, &cert2, &key2);
    assert_eq!(publish_https(&c1, &t).await, StatusCode::ACCEPTED);
    assert_eq!(publish_https(&c2, &t).await, StatusCode::ACCEPTED);

    // By the certificate itself (its common name names the device), and by serial.
    let r = admin
        .post(
            &format!("{BASE}/apps/own/revocations"),
            &json!({"certificate": cert1}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let rev: Value = r.json().await.unwrap();
    assert_eq!(rev["device"], "ext1");
    assert_eq!(rev["kind"], "fingerprint");
    let r = admin
        .post(
            &format!("{BASE}/apps/own/revocations"),
            &json!({"serial": "00:20:02", "device": "ext2"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(publish_https(&c1, &t).await, StatusCode::FORBIDDEN);
    assert_eq!(publish_https(&c2, &t).await, StatusCode::FORBIDDEN);
    let list: Value = admin
        .get_json(&format!("{BASE}/apps/own/revocations"))
        .await;
    assert_eq!(list.as_array().unwrap().len(), 2);

    // An issued certificate goes (revoked) with its device.
    let (key, csr) = key_and_csr();
    let issued: Value = issue(&t, "own", "gone", &csr).await.json().await.unwrap();
    let cert = issued["certificate"].as_str().unwrap();
    let client = https(&t, cert, &key);
    assert_eq!(publish_https(&client, &t).await, StatusCode::ACCEPTED);
    let r = admin
        .delete("/api/registry/v1alpha1/apps/own/devices/gone")
        .await;
    assert!(r.status().is_success());
    let fp = issued["fingerprint"].as_str().unwrap();
    let shown: Value = admin.get_json(&format!("{BASE}/apps/own/{fp}")).await;
    assert!(shown["revoked"].is_string(), "{shown}");
    // A device of the same name later is not authenticated by it.
    admin
        .create_device("own", json!({"metadata": {"name": "gone"}}))
        .await;
    assert_eq!(publish_https(&client, &t).await, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn auto_registration_creates_devices_on_first_connection() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let ca_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "Factory CA");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let factory = p.self_signed(&ca_key).unwrap();
    let anchor = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, factory.pem());
    let device_cert = |cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        (p.signed_by(&key, &factory, &ca_key).unwrap().pem(), key)
    };
    for (app, auto) in [("manual", false), ("auto", true)] {
        let r = admin
            .post(
                "/api/registry/v1alpha1/apps",
                &json!({"metadata": {"name": app}, "spec": {"trustAnchors": {"anchors": [{"certificate": anchor}], "autoRegister": auto}}}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let mut events = common::stream::open(&t, "auto", "from=earliest").await;
    let (cert, key) = device_cert("sensor-42");
    let client = https(&t, &cert, &key);
    // The first connection creates the device; the next ones find it.
    let port = t.server.as_ref().unwrap().https_addr.unwrap().port();
    for _ in 0..2 {
        let r = client
            .post(format!(
                "https://localhost:{port}/v1/telemetry?application=auto"
            ))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    let device: Value = admin
        .get_json("/api/registry/v1alpha1/apps/auto/devices/sensor-42")
        .await;
    assert_eq!(
        device["metadata"]["labels"]["drover.io/auto-registered"],
        "true"
    );
    let registered =
        common::stream::next_of_type(&mut events, "io.drover.device.registered.v1").await;
    assert_eq!(registered["device"], "sensor-42");
    assert_eq!(registered["data"]["subject"], "CN=sensor-42");
    // Without autoRegister, an unknown device stays unknown.
    let r = client
        .post(format!(
            "https://localhost:{port}/v1/telemetry?application=manual"
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = admin
        .get("/api/registry/v1alpha1/apps/manual/devices/sensor-42")
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // A common name that is no device name registers nothing.
    let (cert, key) = device_cert("");
    let r = https(&t, &cert, &key)
        .post(format!(
            "https://localhost:{port}/v1/telemetry?application=auto"
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}
