//! HTTPS with the generated development CA, and X.509 client certificates verified against the
//! application's trust anchors.
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine as _;
use common::TestServer;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use reqwest::StatusCode;
use serde_json::json;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ca {
        cert: p.self_signed(&key).unwrap(),
        key,
    }
}

/// A client certificate `CN=<cn>, O=Devices` issued by `ca`, as a PEM identity (cert + key).
fn client(ca: &Ca, cn: &str, expired: bool) -> reqwest::Identity {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "Devices");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    reqwest::Identity::from_pem(format!("{}{}", cert.pem(), key.serialize_pem()).as_bytes())
        .unwrap()
}

fn https_client(t: &TestServer, identity: Option<reqwest::Identity>) -> reqwest::Client {
    let ca = std::fs::read(t.data_dir.join("tls/ca.pem")).unwrap();
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap());
    if let Some(id) = identity {
        b = b.identity(id);
    }
    b.build().unwrap()
}

fn https_url(t: &TestServer, path: &str) -> String {
    let port = t.server.as_ref().unwrap().https_addr.unwrap().port();
    // The development certificate names localhost and 127.0.0.1.
    format!("https://localhost:{port}{path}")
}

#[tokio::test]
async fn x509_devices_publish_over_https() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let device_ca = ca("Device CA");
    let anchor = base64::engine::general_purpose::STANDARD.encode(device_ca.cert.pem());
    let r = admin
        .post("/api/registry/v1alpha1/apps", &json!({"metadata": {"name": "certs"}, "spec": {"trustAnchors": {"anchors": [{"certificate": anchor}]}}}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // One device found by its subject DN (as drg's `create device-cert` writes it), one by CN.
    admin
        .create_device(
            "certs",
            json!({"metadata": {"name": "by-dn"}, "spec": {"alias": ["CN=by-dn, O=Devices"]}}),
        )
        .await;
    admin
        .create_device("certs", json!({"metadata": {"name": "by-cn"}, "spec": {"authentication": {"credentials": [{"pass": "pw"}]}}}))
        .await;

    let post = |c: reqwest::Client, path: &'static str| {
        let url = https_url(&t, path);
        async move { c.post(url).body("{\"x\":1}").send().await.unwrap().status() }
    };
    assert_eq!(
        post(
            https_client(&t, Some(client(&device_ca, "by-dn", false))),
            "/v1/telemetry"
        )
        .await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        post(
            https_client(&t, Some(client(&device_ca, "by-cn", false))),
            "/v1/telemetry"
        )
        .await,
        StatusCode::ACCEPTED
    );
    // Untrusted CA, expired certificate, unknown device: refused.
    let other = ca("Device CA");
    assert_eq!(
        post(
            https_client(&t, Some(client(&other, "by-dn", false))),
            "/v1/telemetry"
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post(
            https_client(&t, Some(client(&device_ca, "by-dn", true))),
            "/v1/telemetry"
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post(
            https_client(&t, Some(client(&device_ca, "ghost", false))),
            "/v1/telemetry"
        )
        .await,
        StatusCode::FORBIDDEN
    );
    // Without a certificate: a password over HTTPS works, nothing at all is 401.
    let c = https_client(&t, None);
    let r = c
        .post(https_url(&t, "/v1/telemetry"))
        .basic_auth("by-cn@certs", Some("pw"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        post(https_client(&t, None), "/v1/telemetry").await,
        StatusCode::UNAUTHORIZED
    );

    // The events name the devices.
    let (_, token) = admin.user.clone().unwrap();
    let url = format!(
        "{}?username=admin&api_key={token}&from=earliest",
        t.ws_url("certs")
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    use futures::StreamExt;
    let mut devices = Vec::new();
    while devices.len() < 3 {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let ev: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            devices.push(ev["device"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(devices, ["by-dn", "by-cn", "by-cn"]);

    // Removing the trust anchor stops certificate authentication at once.
    let mut app = admin.get_json("/api/registry/v1alpha1/apps/certs").await;
    app["spec"] = json!({});
    assert_eq!(
        admin
            .put("/api/registry/v1alpha1/apps/certs", &app)
            .await
            .status(),
        204
    );
    assert_eq!(
        post(
            https_client(&t, Some(client(&device_ca, "by-dn", false))),
            "/v1/telemetry"
        )
        .await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn development_ca_is_generated_once() {
    let mut t = TestServer::start().await;
    let ca1 = std::fs::read(t.data_dir.join("tls/ca.pem")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(t.data_dir.join("tls/ca-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(
        t.server.as_ref().unwrap().dev_ca.as_deref(),
        Some(t.data_dir.join("tls/ca.pem").as_path())
    );
    t.restart().await;
    assert_eq!(std::fs::read(t.data_dir.join("tls/ca.pem")).unwrap(), ca1);
    // A client trusting only that CA connects (the certificate is valid for localhost).
    let r = https_client(&t, None)
        .post(https_url(&t, "/v1/telemetry"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// Whether a client trusting only the development CA completes a TLS handshake with the HTTPS
/// device endpoint when it asks for `host`.
async fn handshake_as(t: &TestServer, host: &str) -> bool {
    let addr = t.server.as_ref().unwrap().https_addr.unwrap();
    let ca = std::fs::read(t.data_dir.join("tls/ca.pem")).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .resolve(host, addr)
        .build()
        .unwrap();
    let url = format!("https://{host}:{}/v1/telemetry", addr.port());
    match client.post(url).send().await {
        Ok(r) => r.status() == StatusCode::UNAUTHORIZED,
        Err(_) => false,
    }
}

#[tokio::test]
async fn development_certificate_names_public_hosts_and_hubs() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = common::config(dir.path());
    c.public_hosts = drover::config::value::List(vec!["drover.example.com".into()]);
    c.hub_domain = Some("iot.example.com".into());
    let mut t = TestServer::start_with(c.clone()).await;
    let ca = std::fs::read(t.data_dir.join("tls/ca.pem")).unwrap();
    for host in ["localhost", "drover.example.com", "my-app.iot.example.com"] {
        assert!(handshake_as(&t, host).await, "the certificate names {host}");
    }
    assert!(!handshake_as(&t, "elsewhere.example.com").await);
    // A wildcard covers one label only.
    assert!(!handshake_as(&t, "a.b.iot.example.com").await);

    // Other settings: a new server certificate from the same CA.
    c.hub_domain = Some("hubs.example.org".into());
    t.restart_with(c).await;
    assert_eq!(std::fs::read(t.data_dir.join("tls/ca.pem")).unwrap(), ca);
    assert!(handshake_as(&t, "my-app.hubs.example.org").await);
    assert!(!handshake_as(&t, "my-app.iot.example.com").await);
    assert!(handshake_as(&t, "drover.example.com").await);
}
