//! The CloudEvent writer with arbitrary payloads, content types and extensions: the JSON it
//! writes directly must parse, and be the document `to_json` builds (the differential check).
#![no_main]

use arbitrary::Arbitrary;
use drover_model::Event;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    channel: String,
    content_type: Option<String>,
    data_schema: Option<String>,
    application: String,
    device: String,
    sender: String,
    extensions: Vec<(String, String)>,
    data: Vec<u8>,
    seconds: i32,
    nanos: u32,
}

fuzz_target!(|i: Input| {
    let time = chrono::DateTime::from_timestamp(i64::from(i.seconds), i.nanos % 1_000_000_000)
        .unwrap_or_default();
    let event = Event {
        id: "id".into(),
        ty: drover_model::event::EVENT_TYPE.into(),
        channel: i.channel,
        time,
        content_type: i.content_type,
        data_schema: i.data_schema,
        application: i.application,
        application_uid: "app-uid".into(),
        device: i.device,
        device_uid: "dev-uid".into(),
        sender: i.sender,
        sender_uid: "sender-uid".into(),
        instance: "fuzz".into(),
        extensions: i.extensions,
        data: i.data.into(),
    };
    let mut written = Vec::new();
    drover_integrations::cloudevent::write_json(&event, &mut written);
    let parsed: serde_json::Value = match serde_json::from_slice(&written) {
        Ok(v) => v,
        Err(e) => panic!("write_json wrote invalid JSON ({e}): {}", String::from_utf8_lossy(&written)),
    };
    let built = drover_integrations::cloudevent::to_json(&event);
    assert_eq!(parsed, built, "write_json and to_json disagree");
});
