//! The device directory device authentication reads: applications, devices by name, alias or
//! unique username, applications by trust-anchor subject.

use drover_registry::Preconditions;
use serde_json::json;

use crate::{admin, input, new_app, Subject};

conformance!(
    devices_are_found_by_name_alias_and_username,
    applications_are_found_by_trust_anchor_subject,
);

pub(crate) fn ca_certificate(cn: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, cn);
    dn.push(rcgen::DnType::OrganizationName, "Drover");
    params.distinguished_name = dn;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

async fn devices_are_found_by_name_alias_and_username(reg: Subject) {
    new_app(&reg, "dir").await;
    assert_eq!(
        reg.application("dir").await.unwrap().unwrap().metadata.name,
        "dir"
    );
    assert!(reg.application("none").await.unwrap().is_none());
    let dev = reg
        .create_device(
            &admin(),
            "dir",
            input(json!({"metadata": {"name": "d"}, "spec": {
                "alias": ["serial-1"],
                "authentication": {"credentials": [
                    {"user": {"username": "login", "password": "p", "unique": true}},
                    {"user": {"username": "local", "password": "p"}}
                ]}
            }})),
        )
        .await
        .unwrap();
    for name in ["d", "serial-1"] {
        assert_eq!(reg.device("dir", name).await.unwrap(), Some(dev.clone()));
    }
    assert_eq!(
        reg.device_by_username("dir", "login").await.unwrap(),
        Some(dev.clone())
    );
    // A username is no device name, nor is a name a username; a non-unique one is neither.
    assert!(reg.device("dir", "login").await.unwrap().is_none());
    assert!(reg.device_by_username("dir", "d").await.unwrap().is_none());
    assert!(reg
        .device_by_username("dir", "local")
        .await
        .unwrap()
        .is_none());
    assert!(reg.device("other", "d").await.unwrap().is_none());
    // Renamed aliases follow the device; deleted devices are gone.
    let dev = reg
        .update_device(
            &admin(),
            "dir",
            "d",
            input(json!({"metadata": {"name": "d"}, "spec": {"alias": ["serial-2"]}})),
        )
        .await
        .unwrap();
    assert!(reg.device("dir", "serial-1").await.unwrap().is_none());
    assert_eq!(reg.device("dir", "serial-2").await.unwrap(), Some(dev));
    assert!(reg
        .device_by_username("dir", "login")
        .await
        .unwrap()
        .is_none());
    reg.delete_device(&admin(), "dir", "d", Preconditions::default())
        .await
        .unwrap();
    assert!(reg.device("dir", "serial-2").await.unwrap().is_none());
    assert!(reg.device("dir", "d").await.unwrap().is_none());
}

async fn applications_are_found_by_trust_anchor_subject(reg: Subject) {
    let ca = ca_certificate("Directory Test CA");
    let anchors = |certs: &[&str]| {
        let anchors: Vec<_> = certs.iter().map(|c| json!({"certificate": c})).collect();
        json!({"trustAnchors": {"anchors": anchors}})
    };
    let app = reg
        .create_app(
            &admin(),
            input(
                json!({"metadata": {"name": "ta1"}, "spec": anchors(&[&ca, "not a certificate"])}),
            ),
        )
        .await
        .unwrap();
    let subject = app.status["trustAnchors"]["anchors"][0]["valid"]["subject"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(subject.contains("CN=Directory Test CA"), "{subject}");
    assert!(app.status["trustAnchors"]["anchors"][1]["invalid"].is_object());
    reg.create_app(
        &admin(),
        input(json!({"metadata": {"name": "ta0"}, "spec": anchors(&[&ca])})),
    )
    .await
    .unwrap();
    new_app(&reg, "plain").await;
    let names = |apps: Vec<drover_model::Resource>| {
        apps.into_iter()
            .map(|a| a.metadata.name)
            .collect::<Vec<_>>()
    };
    let found = reg.applications_by_trust_anchor(&subject).await.unwrap();
    assert_eq!(names(found), ["ta0", "ta1"]);
    assert!(reg
        .applications_by_trust_anchor("CN=Nobody")
        .await
        .unwrap()
        .is_empty());
    // Another anchor, then none: the index follows the application.
    let other = ca_certificate("Other CA");
    reg.update_app(
        &admin(),
        "ta1",
        input(json!({"metadata": {"name": "ta1"}, "spec": anchors(&[&other])})),
    )
    .await
    .unwrap();
    assert_eq!(
        names(reg.applications_by_trust_anchor(&subject).await.unwrap()),
        ["ta0"]
    );
    reg.delete_app(&admin(), "ta0", Preconditions::default())
        .await
        .unwrap();
    assert!(reg
        .applications_by_trust_anchor(&subject)
        .await
        .unwrap()
        .is_empty());
}
