//! Trust anchors and device certificates through the command line.

use crate::common::TestServer;
use crate::helpers::{drover, fails, login_admin, ok};
use reqwest::StatusCode;

struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

fn ca(name: &str) -> Ca {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
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

/// A client certificate `CN=<cn>, O=Devices` by `ca`, as PEM: certificate, then key.
fn client_pem(ca: &Ca, cn: &str) -> String {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name
        .push(DnType::OrganizationName, "Devices");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    format!("{}{}", cert.pem(), key.serialize_pem())
}

/// Publishes over HTTPS with a client certificate; the status.
async fn publish_with_cert(t: &TestServer, identity_pem: &str) -> StatusCode {
    let dev_ca = std::fs::read(t.data_dir.join("tls/ca.pem")).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&dev_ca).unwrap())
        .identity(reqwest::Identity::from_pem(identity_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let port = t.server.as_ref().unwrap().https_addr.unwrap().port();
    client
        .post(format!("https://localhost:{port}/v1/telemetry"))
        .body("{}")
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn trust_anchors_and_device_certificates() {
    let t = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    login_admin(&t, d).await;
    let device_ca = ca("Device CA");
    let ca_pem = d.join("ca.pem");
    std::fs::write(&ca_pem, device_ca.cert.pem()).unwrap();
    let ca_file = ca_pem.to_str().unwrap();
    // The device's certificate names another CN than the device: only its subject DN finds it.
    let identity = client_pem(&device_ca, "sensor-x");
    let dev_pem = d.join("dev1.pem");
    std::fs::write(&dev_pem, &identity).unwrap();
    let dev_file = dev_pem.to_str().unwrap();

    ok(d, &["app", "create", "certs"]).await;
    ok(d, &["device", "create", "dev1", "--app", "certs"]).await;
    ok(
        d,
        &[
            "device", "set", "alias", "dev1", "serial-1", "--app", "certs",
        ],
    )
    .await;

    // A CA file with a private key is refused; a file without a certificate too.
    let with_key = d.join("ca-and-key.pem");
    std::fs::write(
        &with_key,
        format!("{}{}", device_ca.cert.pem(), device_ca.key.serialize_pem()),
    )
    .unwrap();
    let o = fails(
        d,
        &[
            "app",
            "set",
            "trust-anchor",
            "certs",
            "--file",
            with_key.to_str().unwrap(),
        ],
        1,
    )
    .await;
    assert!(o.stderr.contains("private key"), "{}", o.stderr);
    let empty = d.join("empty.pem");
    std::fs::write(&empty, "nothing here\n").unwrap();
    fails(
        d,
        &[
            "app",
            "set",
            "trust-anchor",
            "certs",
            "-f",
            empty.to_str().unwrap(),
        ],
        1,
    )
    .await;
    assert_eq!(
        drover(d, &["app", "set", "trust-anchor", "certs"])
            .await
            .code,
        2
    );

    let o = ok(
        d,
        &["app", "set", "trust-anchor", "certs", "--file", ca_file],
    )
    .await;
    assert!(
        o.stdout
            .starts_with("app certs: trust anchors set\nSUBJECT"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .lines()
            .any(|l| l.starts_with("CN=Device CA") && l.ends_with("valid")),
        "{}",
        o.stdout
    );
    // --add keeps the existing anchor, the same one twice is kept once.
    let other_ca = ca("Other CA");
    let other_pem = d.join("other.pem");
    std::fs::write(&other_pem, other_ca.cert.pem()).unwrap();
    let app = ok(
        d,
        &[
            "app",
            "set",
            "trust-anchor",
            "certs",
            "--file",
            other_pem.to_str().unwrap(),
            "-f",
            ca_file,
            "--add",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    let anchors = app["status"]["trustAnchors"]["anchors"].as_array().unwrap();
    let subjects: Vec<&str> = anchors
        .iter()
        .map(|a| a["valid"]["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["CN=Device CA", "CN=Other CA"]);

    // Before: the device cannot authenticate with its certificate (CN sensor-x is no device).
    assert_eq!(
        publish_with_cert(&t, &identity).await,
        StatusCode::FORBIDDEN
    );
    let o = ok(
        d,
        &[
            "device", "set", "cert", "dev1", "--app", "certs", "--file", dev_file,
        ],
    )
    .await;
    assert_eq!(
        o.stdout,
        "device dev1: known by certificate subject\n  CN=sensor-x, O=Devices\n"
    );
    assert!(o.stderr.is_empty(), "{}", o.stderr);
    assert_eq!(publish_with_cert(&t, &identity).await, StatusCode::ACCEPTED);
    let dev = ok(
        d,
        &["device", "get", "dev1", "--app", "certs", "-o", "json"],
    )
    .await
    .json();
    assert_eq!(
        dev["spec"]["alias"],
        serde_json::json!(["serial-1", "CN=sensor-x, O=Devices"])
    );

    // Setting another subject replaces the old one, other aliases stay.
    let dev = ok(
        d,
        &[
            "device",
            "set",
            "cert",
            "dev1",
            "--app",
            "certs",
            "--subject",
            "CN=next, O=Devices",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(
        dev["spec"]["alias"],
        serde_json::json!(["serial-1", "CN=next, O=Devices"])
    );
    assert_eq!(
        publish_with_cert(&t, &identity).await,
        StatusCode::FORBIDDEN
    );

    // A certificate from a CA the app does not trust: set, with a note saying why it will fail.
    let stranger = ca("Stranger CA");
    let foreign = d.join("foreign.pem");
    std::fs::write(&foreign, client_pem(&stranger, "dev1")).unwrap();
    let o = ok(
        d,
        &[
            "device",
            "set",
            "cert",
            "dev1",
            "--app",
            "certs",
            "-f",
            foreign.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        o.stderr
            .starts_with("note: app certs has no trust anchor with subject \"CN=Stranger CA\""),
        "{}",
        o.stderr
    );

    // Usage and not found.
    fails(
        d,
        &[
            "device",
            "set",
            "cert",
            "dev1",
            "--app",
            "certs",
            "--subject",
            "dev1",
        ],
        2,
    )
    .await;
    assert_eq!(
        drover(d, &["device", "set", "cert", "dev1", "--app", "certs"])
            .await
            .code,
        2
    );
    fails(
        d,
        &[
            "device", "set", "cert", "nope", "--app", "certs", "-f", dev_file,
        ],
        3,
    )
    .await;
    fails(d, &["app", "set", "trust-anchor", "nope", "-f", ca_file], 3).await;

    // Clearing.
    let o = ok(
        d,
        &["device", "set", "cert", "dev1", "--app", "certs", "--clear"],
    )
    .await;
    assert_eq!(o.stdout.trim(), "device dev1: certificate subjects cleared");
    let dev = ok(
        d,
        &["device", "get", "dev1", "--app", "certs", "-o", "json"],
    )
    .await
    .json();
    assert_eq!(dev["spec"]["alias"], serde_json::json!(["serial-1"]));
    let o = ok(d, &["app", "set", "trust-anchor", "certs", "--clear"]).await;
    assert_eq!(o.stdout.trim(), "app certs: no trust anchors");
    let app = ok(d, &["app", "get", "certs", "-o", "json"]).await.json();
    assert!(app["spec"].get("trustAnchors").is_none(), "{app}");
}
