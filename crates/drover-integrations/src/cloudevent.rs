//! CloudEvents 1.0, JSON structured mode: the form every integration delivers by default.

use base64::Engine as _;
use drover_model::event::is_json;
use drover_model::names::encoded_segment;
use drover_model::Event;
use serde_json::{Map, Value};

/// A context attribute of the events Drover delivers: its name, whether CloudEvents defines it,
/// and where an event holds its value.
#[derive(Clone, Copy)]
pub struct ContextAttribute {
    /// The member name (lowercase letters and digits: nothing to escape).
    pub name: &'static str,
    /// Defined by CloudEvents 1.0 (`false`: an extension Drover sets on every event).
    pub core: bool,
    value: for<'e> fn(&'e Event) -> Attr<'e>,
}

/// Every context attribute of Drover's events, once: those CloudEvents defines in the order it
/// lists them, then Drover's own extensions. Every place that enumerates attributes uses this
/// list: [`to_json`], [`write_json`], [`extension_name`] (device extensions may not override
/// them) and the MQTT binary mode's user properties.
pub const CONTEXT_ATTRIBUTES: [ContextAttribute; 16] = [
    attribute("specversion", true, |_| Attr::Str("1.0")),
    attribute("id", true, |e| Attr::Str(&e.id)),
    attribute("type", true, |e| Attr::Str(&e.ty)),
    attribute("source", true, |_| Attr::Source),
    attribute("subject", true, |e| Attr::Str(&e.channel)),
    attribute("time", true, |_| Attr::Time),
    attribute("datacontenttype", true, |e| {
        Attr::Opt(e.content_type.as_deref())
    }),
    attribute("dataschema", true, |e| Attr::Opt(e.data_schema.as_deref())),
    attribute("application", false, |e| Attr::Str(&e.application)),
    attribute("applicationuid", false, |e| Attr::Str(&e.application_uid)),
    attribute("device", false, |e| Attr::Str(&e.device)),
    attribute("deviceuid", false, |e| Attr::Str(&e.device_uid)),
    attribute("sender", false, |e| Attr::Str(&e.sender)),
    attribute("senderuid", false, |e| Attr::Str(&e.sender_uid)),
    attribute("instance", false, |e| Attr::Str(&e.instance)),
    attribute("partitionkey", false, |_| Attr::PartitionKey),
];

const fn attribute(
    name: &'static str,
    core: bool,
    value: for<'e> fn(&'e Event) -> Attr<'e>,
) -> ContextAttribute {
    ContextAttribute { name, core, value }
}

/// The members that carry the data (never extension names either).
const DATA_MEMBERS: [&str; 2] = ["data", "data_base64"];

/// Positions in [`CONTEXT_ATTRIBUTES`] in name order: the order of a JSON object's members
/// sorted by name, as [`write_json`] writes them.
const BY_NAME: [usize; CONTEXT_ATTRIBUTES.len()] = by_name();

const fn by_name() -> [usize; CONTEXT_ATTRIBUTES.len()] {
    let mut order = [0; CONTEXT_ATTRIBUTES.len()];
    let mut i = 0;
    while i < order.len() {
        order[i] = i;
        let mut j = i;
        while j > 0
            && name_less(
                CONTEXT_ATTRIBUTES[order[j]].name,
                CONTEXT_ATTRIBUTES[order[j - 1]].name,
            )
        {
            let t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
            j -= 1;
        }
        i += 1;
    }
    order
}

/// `a < b` for `&str`, in a `const fn`.
const fn name_less(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
        i += 1;
    }
    a.len() < b.len()
}

/// A CloudEvents extension name: lowercase ASCII letters and digits only, and not the name of
/// a context attribute or data member (extensions from devices may not override those).
pub fn extension_name(name: &str) -> Option<String> {
    let n: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let reserved =
        CONTEXT_ATTRIBUTES.iter().any(|a| a.name == n) || DATA_MEMBERS.contains(&n.as_str());
    (!n.is_empty() && !reserved).then_some(n)
}

/// The event as a structured-mode JSON object. JSON payloads are embedded as `data`, text as a
/// `data` string, anything else as `data_base64`.
pub fn to_json(event: &Event) -> Value {
    let mut m = Map::new();
    for a in &CONTEXT_ATTRIBUTES {
        if let Some(v) = (a.value)(event).into_string(event) {
            m.insert(a.name.into(), Value::String(v));
        }
    }
    for (k, v) in &event.extensions {
        if let Some(k) = extension_name(k) {
            m.entry(k).or_insert_with(|| Value::String(v.clone()));
        }
    }
    if let Some((name, data)) = data_member(event) {
        m.insert(name.into(), data);
    }
    Value::Object(m)
}

/// The event's attributes for a binary mode (the data travels alone): those of [`to_json`]
/// but `datacontenttype` (the protocol's content type carries it), the ones CloudEvents
/// defines first, in its order, then the others (Drover's and the device's extensions) by
/// name. Used by the MQTT binding's user properties and the HTTP binding's `ce-` headers.
pub fn binary_attributes(event: &Event) -> Vec<(String, String)> {
    let mut attributes = match to_json(&Event {
        data: bytes::Bytes::new(),
        ..event.clone()
    }) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    attributes.remove("datacontenttype");
    let mut out = Vec::with_capacity(attributes.len());
    let mut push = |k: &str, v: Value| {
        if let Value::String(s) = v {
            out.push((k.to_string(), s));
        }
    };
    for a in CONTEXT_ATTRIBUTES.iter().filter(|a| a.core) {
        if let Some(v) = attributes.remove(a.name) {
            push(a.name, v);
        }
    }
    for (k, v) in attributes {
        push(&k, v);
    }
    out
}

/// The data member of [`to_json`]'s document, if the event has data: `data` with the JSON
/// payload or the text, else `data_base64` with the bytes in base64.
pub fn data_member(event: &Event) -> Option<(&'static str, Value)> {
    if event.data.is_empty() {
        return None;
    }
    let ct = event.content_type.as_deref().unwrap_or("");
    let json = is_json(ct)
        .then(|| serde_json::from_slice::<Value>(&event.data).ok())
        .flatten();
    Some(match json {
        Some(v) => ("data", v),
        None => match std::str::from_utf8(&event.data) {
            Ok(text) if ct.starts_with("text/") => ("data", Value::String(text.to_string())),
            _ => (
                "data_base64",
                Value::String(base64::engine::general_purpose::STANDARD.encode(&event.data)),
            ),
        },
    })
}

/// Writes the event as structured-mode JSON to `out`: the same document as [`to_json`] (the
/// same members, in the same order — `to_json`'s map is sorted by name), written directly,
/// without building a `serde_json::Value` per event. A JSON payload is embedded as sent
/// (validated, surrounding whitespace trimmed) rather than parsed and printed again.
pub fn write_json(event: &Event, out: &mut Vec<u8>) {
    let extensions = extensions(event);
    let mut extensions = extensions.iter().map(|(k, v)| (k.as_str(), *v)).peekable();
    let mut data = data_form(event);
    let attributes = &CONTEXT_ATTRIBUTES;
    let mut w = Members { out, first: true };
    w.out.push(b'{');
    for a in BY_NAME.iter().map(|&i| &attributes[i]) {
        // The data member sorts among the attributes by its name.
        if let Some(d) = data.take_if(|d| d.name() < a.name) {
            w.extensions_before(&mut extensions, d.name());
            w.data(event, &d);
        }
        w.extensions_before(&mut extensions, a.name);
        w.attribute(event, a.name, (a.value)(event));
    }
    if let Some(d) = data {
        w.extensions_before(&mut extensions, d.name());
        w.data(event, &d);
    }
    for (k, v) in extensions {
        w.string(k, v);
    }
    w.out.push(b'}');
}

/// The event's extensions as [`to_json`] keeps them: valid names only, the first of equal names
/// wins; in name order.
fn extensions(event: &Event) -> Vec<(String, &str)> {
    let mut extensions: Vec<(String, &str)> = Vec::new();
    for (k, v) in &event.extensions {
        if let Some(k) = extension_name(k) {
            if !extensions.iter().any(|(n, _)| *n == k) {
                extensions.push((k, v));
            }
        }
    }
    extensions.sort_by(|a, b| a.0.cmp(&b.0));
    extensions
}

/// Writes the members of one JSON object.
struct Members<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl Members<'_> {
    /// A member's name: an attribute's, or an extension's (lowercase letters and digits, see
    /// [`extension_name`]): nothing to escape.
    fn name(&mut self, name: &str) {
        if !std::mem::take(&mut self.first) {
            self.out.push(b',');
        }
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn string(&mut self, name: &str, value: &str) {
        self.name(name);
        write_str(self.out, value);
    }

    /// The extensions whose names sort before `name`.
    fn extensions_before<'a>(
        &mut self,
        extensions: &mut std::iter::Peekable<impl Iterator<Item = (&'a str, &'a str)>>,
        name: &str,
    ) {
        while let Some((k, v)) = extensions.next_if(|(k, _)| *k < name) {
            self.string(k, v);
        }
    }

    fn attribute(&mut self, event: &Event, name: &str, value: Attr<'_>) {
        match value {
            Attr::Opt(None) => {}
            Attr::Str(v) | Attr::Opt(Some(v)) => self.string(name, v),
            Attr::PartitionKey => {
                self.name(name);
                write_partition_key(self.out, event);
            }
            Attr::Source => {
                self.name(name);
                write_source(self.out, event);
            }
            Attr::Time => {
                self.name(name);
                write_time(self.out, &event.time);
            }
        }
    }

    fn data(&mut self, event: &Event, data: &DataForm<'_>) {
        self.name(data.name());
        match data {
            DataForm::Json(raw) => self.out.extend_from_slice(raw),
            DataForm::Text(text) => write_str(self.out, text),
            DataForm::Base64 => {
                self.out.push(b'"');
                let encoded = base64::engine::general_purpose::STANDARD.encode(&event.data);
                self.out.extend_from_slice(encoded.as_bytes());
                self.out.push(b'"');
            }
        }
    }
}

/// The event as structured-mode JSON bytes (see [`write_json`]).
pub fn to_json_bytes(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(640 + event.data.len() * 4 / 3);
    write_json(event, &mut out);
    out
}

/// The value of a context attribute of one event.
#[derive(Clone, Copy)]
enum Attr<'a> {
    Str(&'a str),
    /// Absent when `None`.
    Opt(Option<&'a str>),
    PartitionKey,
    Source,
    Time,
}

impl Attr<'_> {
    /// The value as a string (`None`: the attribute is absent).
    fn into_string(self, event: &Event) -> Option<String> {
        match self {
            Attr::Str(v) => Some(v.to_string()),
            Attr::Opt(v) => v.map(str::to_string),
            Attr::PartitionKey => Some(event.partition_key()),
            Attr::Source => Some(event.source()),
            Attr::Time => Some(
                event
                    .time
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ),
        }
    }
}

enum DataForm<'a> {
    /// Valid JSON, without surrounding whitespace.
    Json(&'a [u8]),
    Text(&'a str),
    Base64,
}

impl DataForm<'_> {
    /// The member's name.
    fn name(&self) -> &'static str {
        match self {
            DataForm::Base64 => "data_base64",
            DataForm::Json(_) | DataForm::Text(_) => "data",
        }
    }
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

/// [`Event::partition_key`] as a JSON string.
fn write_partition_key(out: &mut Vec<u8>, event: &Event) {
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

/// [`Event::source`] as a JSON string (percent-encoding leaves nothing to escape).
fn write_source(out: &mut Vec<u8>, event: &Event) {
    out.extend_from_slice(b"\"drogue://");
    out.extend(encoded_segment(&event.application));
    out.push(b'/');
    out.extend(encoded_segment(&event.device));
    out.push(b'"');
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
    fn attributes_by_name() {
        let names: Vec<&str> = BY_NAME
            .iter()
            .map(|&i| CONTEXT_ATTRIBUTES[i].name)
            .collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
        assert_eq!(names.len(), CONTEXT_ATTRIBUTES.len());
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
