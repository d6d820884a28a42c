//! Device provisioning (Azure DPS compatible) end to end: enrollments through the API, a
//! group-enrolled device registering over MQTT and then connecting to its assigned hub, an
//! individual enrollment over REST with its initial twin and labels, and the refusals (wrong
//! key, disabled enrollment, unknown ID scope, no credentials); keys hidden from readers.
#![allow(clippy::unwrap_used)]

mod common;

use common::mqtt::{publish_on, published, refusal, subscribe_all};
use common::TestServer;
use reqwest::{Method, StatusCode};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::{json, Value};

const GROUP_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const DEVICE_KEY: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
const BASE: &str = "/api/provisioning/v1alpha1";

fn token(resource: &str, key: &str) -> String {
    let key = drover_auth::sas::decode_key(key).unwrap();
    drover_auth::sas::sign(
        resource,
        &key,
        drover_auth::sas::unix_now() + 3600,
        Some("registration"),
    )
}

async fn setup(t: &TestServer) -> String {
    let admin = t.admin();
    admin.create_app("fleet").await;
    let r = admin
        .put(
            &format!("{BASE}/apps/fleet/groups/factory"),
            &json!({"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": GROUP_KEY}},
                    "labels": {"source": "factory"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = admin
        .put(
            &format!("{BASE}/apps/fleet/enrollments/special-1"),
            &json!({"deviceId": "special", "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": DEVICE_KEY}},
                    "initialTwin": {"desired": {"interval": 5}, "tags": {"site": "berlin"}},
                    "labels": {"line": "a"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let info: Value = admin.get_json(&format!("{BASE}/info")).await;
    info["idScope"].as_str().unwrap().to_string()
}

fn dps_options(t: &TestServer, scope: &str, registration: &str, password: String) -> MqttOptions {
    let port = t.server.as_ref().unwrap().mqtt_addr.unwrap().port();
    let mut o = MqttOptions::new(registration, "127.0.0.1", port);
    o.set_credentials(
        format!("{scope}/registrations/{registration}/api-version=2019-03-31&ClientVersion=test"),
        password,
    );
    o
}

#[tokio::test]
async fn a_group_device_provisions_over_mqtt_and_connects_to_its_hub() {
    let t = TestServer::start().await;
    let scope = setup(&t).await;
    let group_key = drover_auth::sas::decode_key(GROUP_KEY).unwrap();
    let key = drover_auth::sas::derive_group_key(&group_key, "dev-7");
    let password = token(&format!("{scope}/registrations/dev-7"), &key);
    let (c, mut el) = AsyncClient::new(dps_options(&t, &scope, "dev-7", password), 10);
    subscribe_all(&c, &mut el, &["$dps/registrations/res/#"]).await;
    c.publish(
        "$dps/registrations/PUT/iotdps-register/?$rid=1",
        QoS::AtLeastOnce,
        false,
        json!({"registrationId": "dev-7", "payload": {"model": "m1"}}).to_string(),
    )
    .await
    .unwrap();
    let res = publish_on(&mut el, "$dps/registrations/res/").await;
    assert_eq!(
        res.topic,
        "$dps/registrations/res/202/?$rid=1&retry-after=1"
    );
    let body: Value = serde_json::from_slice(&res.payload).unwrap();
    assert_eq!(body["status"], "assigning");
    let op = body["operationId"].as_str().unwrap();
    c.publish(
        format!("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId={op}"),
        QoS::AtLeastOnce,
        false,
        " ",
    )
    .await
    .unwrap();
    let res = publish_on(&mut el, "$dps/registrations/res/").await;
    assert_eq!(res.topic, "$dps/registrations/res/200/?$rid=2");
    let body: Value = serde_json::from_slice(&res.payload).unwrap();
    assert_eq!(body["status"], "assigned");
    let state = &body["registrationState"];
    assert_eq!(state["deviceId"], "dev-7");
    assert_eq!(state["assignedHub"], "fleet");
    assert_eq!(state["substatus"], "initialAssignment");
    assert_eq!(state["symmetricKey"]["enrollmentGroupId"], "factory");
    assert_eq!(state["payload"], json!({"model": "m1"}));

    // The device exists, labelled, and connects to its hub with the derived key.
    let device: Value = t
        .admin()
        .get_json("/api/registry/v1alpha1/apps/fleet/devices/dev-7")
        .await;
    assert_eq!(device["metadata"]["labels"]["source"], "factory");
    let port = t.server.as_ref().unwrap().mqtt_addr.unwrap().port();
    let mut o = MqttOptions::new("dev-7", "127.0.0.1", port);
    o.set_credentials(
        "fleet/dev-7/?api-version=2021-04-12",
        drover_auth::sas::sign(
            "fleet/devices/dev-7",
            &drover_auth::sas::decode_key(&key).unwrap(),
            drover_auth::sas::unix_now() + 3600,
            None,
        ),
    );
    let (hub, mut hub_el) = AsyncClient::new(o, 10);
    published(
        &hub,
        &mut hub_el,
        "devices/dev-7/messages/events/",
        "{\"t\": 1}",
    )
    .await;

    // The registration is recorded and in the stream.
    let regs: Value = t
        .admin()
        .get_json(&format!("{BASE}/apps/fleet/registrations"))
        .await;
    assert_eq!(regs[0]["registrationId"], "dev-7");
    let mut ws = common::stream::open(&t, "fleet", "from=earliest").await;
    let ev = common::stream::next_of_type(&mut ws, "io.drover.device.provisioned.v1").await;
    assert_eq!(ev["device"], "dev-7");
}

#[tokio::test]
async fn an_individual_enrollment_over_rest_and_refusals() {
    let t = TestServer::start().await;
    let scope = setup(&t).await;
    let http = reqwest::Client::new();
    let base = &t.http_base;
    let auth = token(&format!("{scope}/registrations/special-1"), DEVICE_KEY);
    let r = http
        .put(format!(
            "{base}/{scope}/registrations/special-1/register?api-version=2019-03-31"
        ))
        .header("authorization", &auth)
        .json(&json!({"registrationId": "special-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["retry-after"], "1");
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let r = http
        .get(format!("{base}{location}?api-version=2019-03-31"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["registrationState"]["deviceId"], "special");
    let twin: Value = t
        .admin()
        .get_json("/api/registry/v1alpha1/apps/fleet/devices/special/twin")
        .await;
    assert_eq!(twin["desired"], json!({"interval": 5}));
    assert_eq!(twin["tags"], json!({"site": "berlin"}));

    // Refusals: no credentials, a wrong key, an unknown scope, a disabled enrollment.
    let r = http
        .put(format!("{base}/{scope}/registrations/special-1/register"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().await.unwrap()["errorCode"], 401002);
    let wrong = token(&format!("{scope}/registrations/special-1"), GROUP_KEY);
    let r = http
        .put(format!("{base}/{scope}/registrations/special-1/register"))
        .header("authorization", wrong)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http
        .put(format!("{base}/0neOTHER/registrations/special-1/register"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = t
        .admin()
        .put(
            &format!("{BASE}/apps/fleet/enrollments/special-1"),
            &json!({"deviceId": "special", "provisioningStatus": "disabled",
                    "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": DEVICE_KEY}}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = http
        .put(format!("{base}/{scope}/registrations/special-1/register"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("disabled"));
    // Over MQTT, the wrong key is refused at CONNECT.
    let wrong = token(&format!("{scope}/registrations/dev-9"), DEVICE_KEY);
    let (_c, mut el) = AsyncClient::new(dps_options(&t, &scope, "dev-9", wrong), 10);
    let e = refusal(&mut el).await;
    assert!(e.contains("BadUserNamePassword"), "{e}");

    // Bad enrollments; keys hidden from readers; other tenants see nothing.
    for body in [
        json!({"attestation": {"type": "tpm"}}),
        json!({"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "short"}}}),
        json!({"attestation": {"type": "symmetricKey"}}),
    ] {
        let r = t
            .admin()
            .put(&format!("{BASE}/apps/fleet/groups/bad"), &body)
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    let reader = t.user("reader").await;
    let r = t
        .admin()
        .put(
            "/api/admin/v1alpha1/apps/fleet/members",
            &json!({"members": {"reader": {"role": "reader"}}}),
        )
        .await;
    assert!(r.status().is_success(), "{}", r.status());
    let g: Value = reader
        .get_json(&format!("{BASE}/apps/fleet/groups/factory"))
        .await;
    assert_eq!(g["attestation"]["symmetricKey"]["primaryKey"], "<redacted>");
    let g: Value = t
        .admin()
        .get_json(&format!("{BASE}/apps/fleet/groups/factory"))
        .await;
    assert_eq!(g["attestation"]["symmetricKey"]["primaryKey"], GROUP_KEY);
    let r = reader
        .request(Method::DELETE, &format!("{BASE}/apps/fleet/groups/factory"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let stranger = t.user("stranger").await;
    let r = stranger
        .get(&format!("{BASE}/apps/fleet/enrollments"))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
