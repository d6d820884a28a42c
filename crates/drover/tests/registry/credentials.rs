//! Device credentials: password hashing on write, and computed trust anchor status.

use crate::common::TestServer;
use crate::helpers::{app_path, apps, device_path, devices, generation, list, put_ok, rv};
use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn password_spec(pass: Value) -> Value {
    json!({"authentication": {"credentials": [{"pass": pass}]}})
}

/// A self-signed CA certificate (CN=Registry Test CA, O=Drover, 2024-01-01 .. 2034-01-01) as the
/// base64 of its PEM text.
fn ca_certificate_b64() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "Registry Test CA");
    dn.push(rcgen::DnType::OrganizationName, "Drover");
    params.distinguished_name = dn;
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2034, 1, 1);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    base64::engine::general_purpose::STANDARD.encode(cert.pem())
}

#[tokio::test]
async fn plain_passwords_are_hashed_on_write() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;
    let spec = json!({
        "authentication": {"credentials": [
            {"pass": "PlainSecretOne"},
            {"pass": {"plain": "PlainSecretTwo"}},
            {"user": {"username": "u1", "password": "PlainSecretThree", "unique": true}},
            {"user": {"username": "u2", "password": {"plain": "PlainSecretFour"}}},
        ]},
        "credentials": {"credentials": [
            {"pass": "PlainSecretOne"},
            {"pass": {"plain": "PlainSecretFive"}},
        ]},
    });
    let r = c
        .post(
            &devices("app"),
            &json!({"metadata": {"name": "dev"}, "spec": spec}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created = r.text().await.unwrap();
    assert!(
        !created.contains("PlainSecret"),
        "plain text in the create response: {created}"
    );

    let r = c.get(&device_path("app", "dev")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("PlainSecret"),
        "plain text in the GET body: {text}"
    );
    let (items, _) = list(&c, &devices("app"), &[]).await;
    assert!(!serde_json::to_string(&items)
        .unwrap()
        .contains("PlainSecret"));

    let d: Value = serde_json::from_str(&text).unwrap();
    let sha = |v: &Value| -> String {
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("password is not an object: {v}"));
        assert_eq!(obj.len(), 1, "{v}");
        let h = obj["sha512"]
            .as_str()
            .unwrap_or_else(|| panic!("not a sha512 hash: {v}"))
            .to_string();
        assert!(h.starts_with("$6$"), "{h}");
        h
    };
    let auth = d["spec"]["authentication"]["credentials"]
        .as_array()
        .unwrap();
    assert_eq!(auth.len(), 4);
    let h1 = sha(&auth[0]["pass"]);
    let h2 = sha(&auth[1]["pass"]);
    sha(&auth[2]["user"]["password"]);
    assert_eq!(auth[2]["user"]["username"], "u1");
    assert_eq!(auth[2]["user"]["unique"], true);
    sha(&auth[3]["user"]["password"]);
    assert_eq!(auth[3]["user"]["username"], "u2");
    assert_ne!(h1, h2);
    let legacy = d["spec"]["credentials"]["credentials"].as_array().unwrap();
    assert_eq!(legacy.len(), 2);
    sha(&legacy[0]["pass"]);
    let h5 = sha(&legacy[1]["pass"]);
    assert_ne!(h5, h1);

    // On update too.
    let mut body = d.clone();
    body["spec"]["authentication"] =
        password_spec(json!({"plain": "PlainSecretSix"}))["authentication"].clone();
    put_ok(&c, &device_path("app", "dev"), &body).await;
    let text = c
        .get(&device_path("app", "dev"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !text.contains("PlainSecret"),
        "plain text after update: {text}"
    );
    let d: Value = serde_json::from_str(&text).unwrap();
    sha(&d["spec"]["authentication"]["credentials"][0]["pass"]);
}

#[tokio::test]
async fn client_hashes_are_kept_and_resending_a_password_is_a_no_op() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_app("app").await;

    // bcrypt and sha512-crypt from the client are stored as they are.
    let bcrypt = "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";
    let sha512 = "$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/";
    let spec = json!({
        "authentication": {"credentials": [{"pass": {"bcrypt": bcrypt}}, {"pass": {"sha512": sha512}}]},
        "credentials": {"credentials": [{"pass": {"sha512": sha512}}]},
    });
    let d = c
        .create_device("app", json!({"metadata": {"name": "hashed"}, "spec": spec}))
        .await;
    assert_eq!(d["spec"], spec);
    assert_eq!(
        c.get_json(&device_path("app", "hashed")).await["spec"],
        spec
    );

    // A plain password, then the same one again.
    let p = device_path("app", "dev");
    c.create_device(
        "app",
        json!({"metadata": {"name": "dev"}, "spec": password_spec(json!("pw-one"))}),
    )
    .await;
    let v1 = c.get_json(&p).await;
    let h1 = v1["spec"]["authentication"]["credentials"][0]["pass"]["sha512"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(h1.starts_with("$6$"));

    for form in [json!("pw-one"), json!({"plain": "pw-one"})] {
        let mut body = v1.clone();
        body["spec"] = password_spec(form.clone());
        put_ok(&c, &p, &body).await;
        let v = c.get_json(&p).await;
        assert_eq!(
            v["spec"]["authentication"]["credentials"][0]["pass"]["sha512"],
            h1.as_str(),
            "{form}"
        );
        assert_eq!(
            generation(&v),
            1,
            "re-sending {form} changed the generation"
        );
        assert_eq!(
            rv(&v),
            rv(&v1),
            "re-sending {form} changed the resourceVersion"
        );
    }

    // A different password is a change.
    let mut body = v1.clone();
    body["spec"] = password_spec(json!("pw-two"));
    put_ok(&c, &p, &body).await;
    let v2 = c.get_json(&p).await;
    let h2 = v2["spec"]["authentication"]["credentials"][0]["pass"]["sha512"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(h2.starts_with("$6$"));
    assert_ne!(h2, h1);
    assert_eq!(generation(&v2), 2);
    assert_ne!(rv(&v2), rv(&v1));

    // And back to the first one: a new hash again (the old one is gone), another change.
    let mut body = v2.clone();
    body["spec"] = password_spec(json!("pw-one"));
    put_ok(&c, &p, &body).await;
    let v3 = c.get_json(&p).await;
    assert_eq!(generation(&v3), 3);
    assert_ne!(
        v3["spec"]["authentication"]["credentials"][0]["pass"]["sha512"],
        h2.as_str()
    );
}

#[tokio::test]
async fn trust_anchor_status_is_computed() {
    let t = TestServer::start().await;
    let c = t.admin();
    let cert = ca_certificate_b64();
    let forged = json!({"anchors": [{"valid": {"subject": "CN=Forged", "certificate": "x", "notBefore": "2000-01-01T00:00:00Z", "notAfter": "2001-01-01T00:00:00Z"}}]});

    let r = c
        .post(
            &apps(),
            &json!({"metadata": {"name": "ta"},
                "spec": {"trustAnchors": {"anchors": [{"certificate": cert}, {"certificate": "!!! not a certificate !!!"}]}},
                "status": {"trustAnchors": forged}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    let app = c.get_json(&app_path("ta")).await;
    assert_eq!(created, app);

    let anchors = app["status"]["trustAnchors"]["anchors"]
        .as_array()
        .unwrap_or_else(|| panic!("no status.trustAnchors: {app}"));
    assert_eq!(anchors.len(), 2, "{app}");
    let valid = &anchors[0]["valid"];
    let subject = valid["subject"].as_str().unwrap_or_else(|| panic!("{app}"));
    assert!(
        subject.contains("CN=Registry Test CA") && subject.contains("O=Drover"),
        "{subject}"
    );
    assert_eq!(valid["certificate"], cert.as_str());
    assert_eq!(valid["notBefore"], "2024-01-01T00:00:00Z");
    assert_eq!(valid["notAfter"], "2034-01-01T00:00:00Z");
    let invalid = &anchors[1]["invalid"];
    assert!(
        !invalid["error"].as_str().unwrap_or_default().is_empty(),
        "{app}"
    );
    assert!(
        !invalid["message"].as_str().unwrap_or_default().is_empty(),
        "{app}"
    );
    assert!(anchors[1].get("valid").is_none());

    // A client-sent status is overwritten on update too.
    let mut body = app.clone();
    body["status"]["trustAnchors"] = forged.clone();
    put_ok(&c, &app_path("ta"), &body).await;
    assert_eq!(c.get_json(&app_path("ta")).await["status"], app["status"]);

    // Only the good anchor: one valid entry.
    let mut body = c.get_json(&app_path("ta")).await;
    body["spec"]["trustAnchors"] = json!({"anchors": [{"certificate": cert}]});
    put_ok(&c, &app_path("ta"), &body).await;
    let v = c.get_json(&app_path("ta")).await;
    assert_eq!(
        v["status"]["trustAnchors"]["anchors"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        v["status"]["trustAnchors"]["anchors"][0]["valid"]["certificate"],
        cert.as_str()
    );

    // Removing the spec section removes the status (even if the client sends it back).
    let mut body = v.clone();
    body["spec"].as_object_mut().unwrap().remove("trustAnchors");
    put_ok(&c, &app_path("ta"), &body).await;
    let v = c.get_json(&app_path("ta")).await;
    assert!(v["status"].get("trustAnchors").is_none(), "{v}");
    assert!(v["spec"].get("trustAnchors").is_none(), "{v}");

    // An app without trust anchors cannot claim any.
    let r = c
        .post(
            &apps(),
            &json!({"metadata": {"name": "ta2"}, "status": {"trustAnchors": forged}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v = c.get_json(&app_path("ta2")).await;
    assert!(v["status"].get("trustAnchors").is_none(), "{v}");
}
