//! CloudEvents 1.0, JSON structured mode: the form every integration delivers by default.

use base64::Engine as _;
use drover_model::Event;
use serde_json::{Map, Value};

/// Context attributes and extensions that extensions from devices may not override.
const RESERVED: &[&str] = &[
    "specversion",
    "id",
    "type",
    "source",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
    "data",
    "data_base64",
    "application",
    "applicationuid",
    "device",
    "deviceuid",
    "sender",
    "senderuid",
    "instance",
    "partitionkey",
];

/// A CloudEvents extension name: lowercase ASCII letters and digits only.
pub fn extension_name(name: &str) -> Option<String> {
    let n: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (!n.is_empty() && !RESERVED.contains(&n.as_str())).then_some(n)
}

fn is_json(ct: &str) -> bool {
    let e = ct.split(';').next().unwrap_or("").trim().as_bytes();
    e.eq_ignore_ascii_case(b"application/json")
        || e.eq_ignore_ascii_case(b"text/json")
        || e.len() >= 5 && e[e.len() - 5..].eq_ignore_ascii_case(b"+json")
}

/// The event as a structured-mode JSON object. JSON payloads are embedded as `data`, text as a
/// `data` string, anything else as `data_base64`.
pub fn to_json(event: &Event) -> Value {
    let mut m = Map::new();
    let s = |v: &str| Value::String(v.to_string());
    m.insert("specversion".into(), s("1.0"));
    m.insert("id".into(), s(&event.id));
    m.insert("type".into(), s(&event.ty));
    m.insert("source".into(), Value::String(event.source()));
    m.insert("subject".into(), s(&event.channel));
    m.insert(
        "time".into(),
        Value::String(
            event
                .time
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        ),
    );
    if let Some(ct) = &event.content_type {
        m.insert("datacontenttype".into(), s(ct));
    }
    if let Some(ds) = &event.data_schema {
        m.insert("dataschema".into(), s(ds));
    }
    m.insert("application".into(), s(&event.application));
    m.insert("applicationuid".into(), s(&event.application_uid));
    m.insert("device".into(), s(&event.device));
    m.insert("deviceuid".into(), s(&event.device_uid));
    m.insert("sender".into(), s(&event.sender));
    m.insert("senderuid".into(), s(&event.sender_uid));
    m.insert("instance".into(), s(&event.instance));
    m.insert("partitionkey".into(), Value::String(event.partition_key()));
    for (k, v) in &event.extensions {
        if let Some(k) = extension_name(k) {
            m.entry(k).or_insert_with(|| s(v));
        }
    }
    if !event.data.is_empty() {
        let ct = event.content_type.as_deref().unwrap_or("");
        let json = is_json(ct)
            .then(|| serde_json::from_slice::<Value>(&event.data).ok())
            .flatten();
        match json {
            Some(v) => {
                m.insert("data".into(), v);
            }
            None => match std::str::from_utf8(&event.data) {
                Ok(text) if ct.starts_with("text/") => {
                    m.insert("data".into(), s(text));
                }
                _ => {
                    m.insert(
                        "data_base64".into(),
                        Value::String(
                            base64::engine::general_purpose::STANDARD.encode(&event.data),
                        ),
                    );
                }
            },
        }
    }
    Value::Object(m)
}

/// Writes the event as structured-mode JSON to `out`: the same document as [`to_json`] (the
/// same members, in the same order — `to_json`'s map is sorted by name), written directly,
/// without building a `serde_json::Value` per event. A JSON payload is embedded as sent
/// (validated, surrounding whitespace trimmed) rather than parsed and printed again.
pub fn write_json(event: &Event, out: &mut Vec<u8>) {
    // The attributes in name order; the data member sorts between `applicationuid` and
    // `datacontenttype` (`data` and `data_base64` alike).
    let members: [(&str, Attr<'_>); 16] = [
        ("application", Attr::Str(&event.application)),
        ("applicationuid", Attr::Str(&event.application_uid)),
        ("data", Attr::Data),
        ("datacontenttype", Attr::Opt(event.content_type.as_deref())),
        ("dataschema", Attr::Opt(event.data_schema.as_deref())),
        ("device", Attr::Str(&event.device)),
        ("deviceuid", Attr::Str(&event.device_uid)),
        ("id", Attr::Str(&event.id)),
        ("instance", Attr::Str(&event.instance)),
        ("partitionkey", Attr::PartitionKey),
        ("sender", Attr::Str(&event.sender)),
        ("senderuid", Attr::Str(&event.sender_uid)),
        ("source", Attr::Source),
        ("specversion", Attr::Str("1.0")),
        ("subject", Attr::Str(&event.channel)),
        ("time", Attr::Time),
    ];
    // Extensions: valid names only, the first of equal names wins, merged in name order.
    let mut extensions: Vec<(String, &str)> = Vec::new();
    for (k, v) in &event.extensions {
        if let Some(k) = extension_name(k) {
            if !extensions.iter().any(|(n, _)| *n == k) {
                extensions.push((k, v));
            }
        }
    }
    extensions.sort_by(|a, b| a.0.cmp(&b.0));
    // `type` sorts last of the attributes but extensions may follow it.
    let ty = ("type", Attr::Str(&event.ty));
    let data = data_form(event);

    out.push(b'{');
    let mut first = true;
    let mut ext = extensions.iter().peekable();
    for (name, attr) in members.iter().chain(std::iter::once(&ty)) {
        // The data member's name depends on its form.
        let name = match attr {
            Attr::Data => match &data {
                Some(DataForm::Base64) => "data_base64",
                Some(_) => "data",
                None => continue,
            },
            _ => name,
        };
        while let Some((k, v)) = ext.next_if(|(k, _)| k.as_str() < name) {
            member_name(out, k, &mut first);
            write_str(out, v);
        }
        match attr {
            Attr::Str(v) => {
                member_name(out, name, &mut first);
                write_str(out, v);
            }
            Attr::Opt(None) => {}
            Attr::Opt(Some(v)) => {
                member_name(out, name, &mut first);
                write_str(out, v);
            }
            Attr::Data => {
                member_name(out, name, &mut first);
                match &data {
                    Some(DataForm::Json(raw)) => out.extend_from_slice(raw),
                    Some(DataForm::Text(text)) => write_str(out, text),
                    Some(DataForm::Base64) => {
                        out.push(b'"');
                        let encoded = base64::engine::general_purpose::STANDARD.encode(&event.data);
                        out.extend_from_slice(encoded.as_bytes());
                        out.push(b'"');
                    }
                    None => {}
                }
            }
            Attr::PartitionKey => {
                member_name(out, name, &mut first);
                if needs_escape(&event.application) || needs_escape(&event.sender) {
                    write_str(out, &event.partition_key());
                } else {
                    out.push(b'"');
                    out.extend_from_slice(event.application.as_bytes());
                    out.push(b'/');
                    out.extend_from_slice(event.sender.as_bytes());
                    out.push(b'"');
                }
            }
            Attr::Source => {
                member_name(out, name, &mut first);
                // Percent-encoding leaves nothing to escape.
                out.extend_from_slice(b"\"drogue://");
                encode_segment(out, &event.application);
                out.push(b'/');
                encode_segment(out, &event.device);
                out.push(b'"');
            }
            Attr::Time => {
                member_name(out, name, &mut first);
                write_time(out, &event.time);
            }
        }
    }
    for (k, v) in ext {
        member_name(out, k, &mut first);
        write_str(out, v);
    }
    out.push(b'}');
}

/// The event as structured-mode JSON bytes (see [`write_json`]).
pub fn to_json_bytes(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(640 + event.data.len() * 4 / 3);
    write_json(event, &mut out);
    out
}

enum Attr<'a> {
    Str(&'a str),
    Opt(Option<&'a str>),
    Data,
    PartitionKey,
    Source,
    Time,
}

enum DataForm<'a> {
    /// Valid JSON, without surrounding whitespace.
    Json(&'a [u8]),
    Text(&'a str),
    Base64,
}

/// How the data goes into the document (the same choice as [`to_json`]).
fn data_form(event: &Event) -> Option<DataForm<'_>> {
    if event.data.is_empty() {
        return None;
    }
    let ct = event.content_type.as_deref().unwrap_or("");
    if is_json(ct) && serde_json::from_slice::<serde::de::IgnoredAny>(&event.data).is_ok() {
        let raw = event.data.trim_ascii();
        return Some(DataForm::Json(raw));
    }
    match std::str::from_utf8(&event.data) {
        Ok(text) if ct.starts_with("text/") => Some(DataForm::Text(text)),
        _ => Some(DataForm::Base64),
    }
}

/// A member's name: an attribute's, or an extension's (lowercase letters and digits, see
/// [`extension_name`]): nothing to escape.
fn member_name(out: &mut Vec<u8>, name: &str, first: &mut bool) {
    if !std::mem::take(first) {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Whether a JSON string needs escapes: control characters, `"` or `\\`. Eight bytes at a
/// time (it runs over every string of every event).
fn needs_escape(s: &str) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Bytes of `x` that are zero / below `n` (n <= 128) set their high bit; exact as to
    // whether there is any.
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut chunks = s.as_bytes().chunks_exact(8);
    for chunk in &mut chunks {
        let Ok(bytes) = <[u8; 8]>::try_from(chunk) else {
            return true;
        };
        let x = u64::from_le_bytes(bytes);
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        if control | zero(x ^ (ONES * u64::from(b'"'))) | zero(x ^ (ONES * u64::from(b'\\'))) != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// A JSON string, escaped as `serde_json` does.
fn write_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s) {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// [`drover_model::names::encode_segment`], into `out`.
fn encode_segment(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// RFC 3339 in UTC with microseconds, as `to_rfc3339_opts(Micros, true)` writes it.
fn write_time(out: &mut Vec<u8>, t: &chrono::DateTime<chrono::Utc>) {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    if !(0..=9999).contains(&year) || t.nanosecond() >= 1_000_000_000 {
        // Rare forms (years beyond four digits, leap seconds): chrono's own formatting.
        write_str(out, &t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        return;
    }
    let digits = |out: &mut Vec<u8>, v: u32, n: u32| {
        for i in (0..n).rev() {
            out.push(b'0' + ((v / 10u32.pow(i)) % 10) as u8);
        }
    };
    out.push(b'"');
    digits(out, year as u32, 4);
    out.push(b'-');
    digits(out, t.month(), 2);
    out.push(b'-');
    digits(out, t.day(), 2);
    out.push(b'T');
    digits(out, t.hour(), 2);
    out.push(b':');
    digits(out, t.minute(), 2);
    out.push(b':');
    digits(out, t.second(), 2);
    out.push(b'.');
    digits(out, t.nanosecond() / 1000, 6);
    out.extend_from_slice(b"Z\"");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn event(ct: Option<&str>, data: &'static [u8]) -> Event {
        Event {
            id: "1".into(),
            ty: "io.drogue.event.v1".into(),
            channel: "telemetry".into(),
            time: chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
                .unwrap()
                .into(),
            content_type: ct.map(str::to_string),
            data_schema: None,
            application: "my-app".into(),
            application_uid: "au".into(),
            device: "dev 1".into(),
            device_uid: "du".into(),
            sender: "gw".into(),
            sender_uid: "gu".into(),
            instance: "drover".into(),
            extensions: vec![
                ("Content-Mode".into(), "x".into()),
                ("device".into(), "evil".into()),
            ],
            data: bytes::Bytes::from_static(data),
        }
    }

    #[test]
    fn structured_mode() {
        let v = to_json(&event(Some("application/json"), b"{\"temp\":21}"));
        assert_eq!(v["data"], json!({"temp": 21}));
        assert_eq!(v["source"], "drogue://my-app/dev%201");
        assert_eq!(v["partitionkey"], "my-app/gw");
        assert_eq!(v["contentmode"], "x");
        assert_eq!(v["device"], "dev 1");
        assert_eq!(v["time"], "2026-01-02T03:04:05.000000Z");
        let v = to_json(&event(Some("application/octet-stream"), b"\x00\x01"));
        assert_eq!(v["data_base64"], "AAE=");
        let v = to_json(&event(Some("text/plain"), b"hi"));
        assert_eq!(v["data"], "hi");
        let v = to_json(&event(None, b""));
        assert!(v.get("data").is_none() && v.get("data_base64").is_none());
    }

    /// `write_json` prints what `to_json` builds, byte for byte, whenever the payload is
    /// printed the way `serde_json` would print it (compact, members in name order).
    #[test]
    fn written_directly_like_the_value() {
        let mut cases = vec![
            event(Some("application/json"), b"{\"temp\":21}"),
            event(Some("application/json"), b"[1,2.5,\"x\",null,true]"),
            event(Some("application/octet-stream"), b"\x00\x01\xff"),
            event(Some("text/plain"), b"hi \"there\"\n"),
            event(Some("text/plain"), b"\xff"),
            event(Some("application/json"), b"not json"),
            event(None, b""),
            event(None, b"x"),
        ];
        let mut odd = event(
            Some("application/cloudevents+json; charset=utf-8"),
            b"{\"a\":{}}",
        );
        odd.application = "\"quoted\" app\\".into();
        odd.device = "d\u{e9}v/1 \u{1}".into();
        odd.sender = "tab\there".into();
        odd.data_schema = Some("urn:x".into());
        odd.extensions = vec![
            ("zeta".into(), "last".into()),
            ("Alpha".into(), "first".into()),
            ("alpha".into(), "dropped".into()),
            ("datax".into(), "after data".into()),
            ("data1".into(), "before data".into()),
            ("type".into(), "reserved".into()),
            ("!!".into(), "no name".into()),
            ("u".into(), "ctl \u{7}".into()),
        ];
        odd.time = chrono::DateTime::parse_from_rfc3339("0999-12-31T23:59:59.123456789Z")
            .unwrap()
            .into();
        cases.push(odd);
        let mut base64_ext = event(Some("application/octet-stream"), b"\x00");
        base64_ext.extensions = vec![("data1".into(), "x".into()), ("datax".into(), "y".into())];
        cases.push(base64_ext);
        for e in &cases {
            let expected = to_json(e).to_string();
            let written = String::from_utf8(to_json_bytes(e)).unwrap();
            assert_eq!(written, expected);
        }
    }

    #[test]
    fn escapes_are_found_anywhere() {
        let plain = "abcdefghijklmnopqrstuvwxyz-0123456789/\u{e9}\u{7f}";
        assert!(!needs_escape(plain));
        for bad in ['"', '\\', '\n', '\u{0}', '\u{1f}'] {
            for at in 0..plain.len() {
                if plain.is_char_boundary(at) {
                    let mut s = plain.to_string();
                    s.insert(at, bad);
                    assert!(needs_escape(&s), "{s:?}");
                }
            }
        }
        assert!(is_json("Application/JSON ; charset=utf-8"));
        assert!(is_json("application/cloudevents+JSON"));
        assert!(!is_json("json"));
        assert!(!is_json("text/plain"));
    }

    #[test]
    fn json_data_is_embedded_as_sent() {
        let e = event(
            Some("application/json"),
            b" \n{ \"b\": 1, \"a\": [ 2 ] }\r\n",
        );
        let written = String::from_utf8(to_json_bytes(&e)).unwrap();
        assert!(
            written.contains(r#""data":{ "b": 1, "a": [ 2 ] },"#),
            "{written}"
        );
        let v: Value = serde_json::from_str(&written).unwrap();
        assert_eq!(v, to_json(&e));
    }
}
