//! Azure IoT Hub's MQTT dialect, as Microsoft's device SDKs speak it (see
//! `shared/specs/azure-iot.md` §4): the CONNECT username that selects it, the topics a device
//! publishes and subscribes to, property bags, and the topics Drover publishes to a device.
//!
//! Pure: no I/O, no registry. The MQTT device policy decides what the parsed forms mean.
//!
//! Property bags are `k=v&k2=v2`, keys and values percent-encoded (the Python SDK encodes with
//! `quote(safe="")`: `+` is a plus sign, never a space, and `$` arrives as `%24`). System
//! properties are the keys starting with `$.`; every other key is an application property.

use std::fmt;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// What percent-encoding leaves alone in bag keys and values: RFC 3986's unreserved characters.
const BAG: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Most pairs in one property bag.
pub const MAX_BAG_PAIRS: usize = 64;

/// Why a topic, filter, username or bag is not the dialect's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialectError {
    #[error("topic '{0}' is not an IoT Hub device topic")]
    UnknownTopic(String),
    #[error("topic '{topic}' names device '{named}', but this connection is device '{device}'")]
    OtherDevice {
        topic: String,
        named: String,
        device: String,
    },
    #[error("topic filter '{0}' is not one IoT Hub devices may subscribe to")]
    UnknownFilter(String),
    #[error("property bag '{0}' is malformed: {1}")]
    Bag(String, &'static str),
    #[error("'{0}' lacks the request id ($rid)")]
    NoRequestId(String),
    #[error("'{0}' has an invalid status (100 to 999)")]
    Status(String),
}

/// A CONNECT username of the dialect: `{hub}/{deviceId}[/{moduleId}]/?api-version=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username {
    /// The hub as the device names it (the host name it was given).
    pub hub: String,
    pub device: String,
    pub module: Option<String>,
    /// The query pairs (`api-version`, `DeviceClientType`, `model-id`, …), decoded.
    pub params: Vec<(String, String)>,
}

impl Username {
    /// The dialect's username, or `None` when `s` is not one (it is then a Drogue username).
    /// It has the query part with an `api-version` pair; anything else in it is kept.
    pub fn parse(s: &str) -> Option<Username> {
        let (path, query) = s.split_once("/?")?;
        let params = parse_bag(query).ok()?;
        if !params.iter().any(|(k, _)| k == "api-version") {
            return None;
        }
        let mut parts = path.split('/');
        let hub = parts.next().filter(|h| !h.is_empty())?;
        let device = parts.next().filter(|d| !d.is_empty())?;
        let module = match parts.next() {
            None => None,
            Some(m) if !m.is_empty() => Some(m.to_string()),
            Some(_) => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Username {
            hub: hub.to_string(),
            device: device.to_string(),
            module,
            params,
        })
    }

    /// The client id the SDK sends with this username: `{deviceId}` or `{deviceId}/{moduleId}`.
    pub fn client_id(&self) -> String {
        match &self.module {
            Some(m) => format!("{}/{m}", self.device),
            None => self.device.clone(),
        }
    }
}

/// The application a hub name stands for: its first DNS label (`my-app.iot.example.com` and
/// `my-app` both name `my-app`). The rest of the name selects nothing: it is whatever host name
/// the device was given, and the SAS token must be for the whole name as the device sends it.
pub fn application_for_hub(hub: &str) -> Option<&str> {
    hub.split('.').next().filter(|a| !a.is_empty())
}

/// A property bag's pairs, decoded, in order. Empty text is an empty bag; a pair without `=` is
/// a key with an empty value (as IoT Hub reads it).
pub fn parse_bag(s: &str) -> Result<Vec<(String, String)>, DialectError> {
    let bad = |why| DialectError::Bag(s.to_string(), why);
    let mut pairs = Vec::new();
    for part in s.split('&').filter(|p| !p.is_empty()) {
        if pairs.len() == MAX_BAG_PAIRS {
            return Err(bad("more than 64 properties"));
        }
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let k = decode(k).ok_or_else(|| bad("a key is not UTF-8 after percent-decoding"))?;
        let v = decode(v).ok_or_else(|| bad("a value is not UTF-8 after percent-decoding"))?;
        if k.is_empty() {
            return Err(bad("a key is empty"));
        }
        pairs.push((k, v));
    }
    Ok(pairs)
}

fn decode(s: &str) -> Option<String> {
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// A property bag for a topic: pairs percent-encoded, `&`-joined.
pub fn encode_bag(pairs: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.extend(utf8_percent_encode(k, BAG));
        out.push('=');
        out.extend(utf8_percent_encode(v, BAG));
    }
    out
}

/// What a device publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publish {
    /// Telemetry with its property bag.
    Telemetry { properties: Vec<(String, String)> },
    /// `$iothub/twin/GET/?$rid=`: read the twin.
    TwinGet { rid: String },
    /// `$iothub/twin/PATCH/properties/reported/?$rid=`: a merge patch of reported properties.
    ReportedPatch { rid: String },
    /// `$iothub/methods/res/{status}/?$rid=`: the answer to a direct method.
    MethodResponse { status: u16, rid: String },
}

/// Parses a topic published by `device` (the connection's identity).
pub fn parse_publish(topic: &str, device: &str) -> Result<Publish, DialectError> {
    if let Some(rest) = topic.strip_prefix("$iothub/") {
        return parse_iothub_publish(topic, rest);
    }
    let unknown = || DialectError::UnknownTopic(topic.to_string());
    let rest = topic.strip_prefix("devices/").ok_or_else(unknown)?;
    let (named, rest) = rest.split_once('/').ok_or_else(unknown)?;
    let bag = match rest.strip_prefix("messages/events") {
        Some("") => "",
        Some(r) => r.strip_prefix('/').ok_or_else(unknown)?,
        None => return Err(unknown()),
    };
    if named != device {
        return Err(DialectError::OtherDevice {
            topic: topic.to_string(),
            named: named.to_string(),
            device: device.to_string(),
        });
    }
    // Some SDKs put a `?` before the bag.
    let bag = bag.strip_prefix('?').unwrap_or(bag);
    Ok(Publish::Telemetry {
        properties: parse_bag(bag)?,
    })
}

fn parse_iothub_publish(topic: &str, rest: &str) -> Result<Publish, DialectError> {
    let unknown = || DialectError::UnknownTopic(topic.to_string());
    let (path, query) = rest.split_once("/?").ok_or_else(unknown)?;
    let rid = || request_id(topic, query);
    match path {
        "twin/GET" => Ok(Publish::TwinGet { rid: rid()? }),
        "twin/PATCH/properties/reported" => Ok(Publish::ReportedPatch { rid: rid()? }),
        _ => {
            let status = path.strip_prefix("methods/res/").ok_or_else(unknown)?;
            let status = status
                .parse::<u16>()
                .ok()
                .filter(|s| (100..=999).contains(s))
                .ok_or_else(|| DialectError::Status(topic.to_string()))?;
            Ok(Publish::MethodResponse {
                status,
                rid: rid()?,
            })
        }
    }
}

fn request_id(topic: &str, query: &str) -> Result<String, DialectError> {
    parse_bag(query)?
        .into_iter()
        .find(|(k, _)| k == "$rid")
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| DialectError::NoRequestId(topic.to_string()))
}

/// What a device may subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subscription {
    /// `devices/{id}/messages/devicebound/#`: cloud-to-device messages.
    CloudToDevice,
    /// `$iothub/twin/res/#`: answers to twin requests.
    TwinResponses,
    /// `$iothub/twin/PATCH/properties/desired/#`: desired-property changes.
    DesiredPatches,
    /// `$iothub/methods/POST/#`: direct methods.
    Methods,
}

impl fmt::Display for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Subscription::CloudToDevice => "cloud-to-device messages",
            Subscription::TwinResponses => "twin responses",
            Subscription::DesiredPatches => "desired property changes",
            Subscription::Methods => "direct methods",
        })
    }
}

/// Parses a topic filter `device` subscribes to.
pub fn parse_subscription(filter: &str, device: &str) -> Result<Subscription, DialectError> {
    match filter {
        "$iothub/twin/res/#" => return Ok(Subscription::TwinResponses),
        "$iothub/twin/PATCH/properties/desired/#" => return Ok(Subscription::DesiredPatches),
        "$iothub/methods/POST/#" => return Ok(Subscription::Methods),
        _ => {}
    }
    let unknown = || DialectError::UnknownFilter(filter.to_string());
    let rest = filter.strip_prefix("devices/").ok_or_else(unknown)?;
    let (named, rest) = rest.split_once('/').ok_or_else(unknown)?;
    if rest != "messages/devicebound/#" {
        return Err(unknown());
    }
    if named != device {
        return Err(DialectError::OtherDevice {
            topic: filter.to_string(),
            named: named.to_string(),
            device: device.to_string(),
        });
    }
    Ok(Subscription::CloudToDevice)
}

/// The answer to a twin request: `$iothub/twin/res/{status}/?$rid={rid}[&$version={v}]`.
pub fn twin_response_topic(status: u16, rid: &str, version: Option<u64>) -> String {
    let mut pairs = vec![("$rid".to_string(), rid.to_string())];
    if let Some(v) = version {
        pairs.push(("$version".to_string(), v.to_string()));
    }
    format!("$iothub/twin/res/{status}/?{}", encode_query(&pairs))
}

/// A desired-properties change: `$iothub/twin/PATCH/properties/desired/?$version={v}`.
pub fn desired_patch_topic(version: u64) -> String {
    format!("$iothub/twin/PATCH/properties/desired/?$version={version}")
}

/// A direct method call: `$iothub/methods/POST/{name}/?$rid={rid}`.
pub fn method_topic(name: &str, rid: &str) -> String {
    let pairs = [("$rid".to_string(), rid.to_string())];
    format!(
        "$iothub/methods/POST/{}/?{}",
        utf8_percent_encode(name, BAG),
        encode_query(&pairs)
    )
}

/// A cloud-to-device message: `devices/{id}/messages/devicebound/{bag}` (no `?`).
pub fn cloud_to_device_topic(device: &str, properties: &[(String, String)]) -> String {
    format!(
        "devices/{device}/messages/devicebound/{}",
        encode_bag(properties)
    )
}

/// `$`-keys of the query part stay literal (the SDKs match `$rid=` and `$version=` as text).
fn encode_query(pairs: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.extend(utf8_percent_encode(v, BAG));
    }
    out
}

/// The CloudEvent extension a system property becomes (`$.mid` → `messageid`, …); `None` for
/// `$.ct`, which is the event's content type, and for keys IoT Hub does not define.
pub fn system_property_extension(key: &str) -> Option<&'static str> {
    Some(match key {
        "$.mid" => "messageid",
        "$.cid" => "correlationid",
        "$.uid" => "userid",
        "$.ce" => "contentencoding",
        "$.exp" => "expiry",
        "$.to" => "to",
        "$.on" => "outputname",
        "$.ifid" => "interfaceid",
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn usernames() {
        let u = Username::parse(
            "hub.example.net/dev-1/?api-version=2021-04-12&DeviceClientType=py-azure-iot-device%2F2.14.0",
        )
        .unwrap();
        assert_eq!(
            (u.hub.as_str(), u.device.as_str()),
            ("hub.example.net", "dev-1")
        );
        assert_eq!(u.module, None);
        assert_eq!(u.params[1].1, "py-azure-iot-device/2.14.0");
        assert_eq!(u.client_id(), "dev-1");
        let m = Username::parse("h/d/m1/?api-version=x").unwrap();
        assert_eq!(m.module.as_deref(), Some("m1"));
        assert_eq!(m.client_id(), "d/m1");
        for not in [
            "device@app",
            "h/d/?model-id=x",
            "h//?api-version=1",
            "/d/?api-version=1",
            "h/d/m/x/?api-version=1",
            "h/d//?api-version=1",
        ] {
            assert_eq!(Username::parse(not), None, "{not}");
        }
    }

    #[test]
    fn hubs_name_applications() {
        assert_eq!(application_for_hub("app1"), Some("app1"));
        assert_eq!(application_for_hub("app1.drover.example"), Some("app1"));
        assert_eq!(application_for_hub(".drover.example"), None);
    }

    #[test]
    fn telemetry_topics() {
        let t = "devices/d1/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8&temp+alert=a%20b%2Bc";
        assert_eq!(
            parse_publish(t, "d1").unwrap(),
            Publish::Telemetry {
                properties: pairs(&[
                    ("$.ct", "application/json"),
                    ("$.ce", "utf-8"),
                    ("temp+alert", "a b+c")
                ])
            }
        );
        for t in ["devices/d1/messages/events/", "devices/d1/messages/events"] {
            assert_eq!(
                parse_publish(t, "d1").unwrap(),
                Publish::Telemetry { properties: vec![] }
            );
        }
        assert_eq!(
            parse_publish("devices/d1/messages/events/?a=1", "d1").unwrap(),
            Publish::Telemetry {
                properties: pairs(&[("a", "1")])
            }
        );
        assert!(matches!(
            parse_publish("devices/d2/messages/events/", "d1"),
            Err(DialectError::OtherDevice { .. })
        ));
        for t in [
            "devices/d1/messages/eventsx",
            "devices/d1/messages/devicebound/",
            "telemetry",
            "devices/d1",
            "devices/d1/messages/events/%FF=1",
        ] {
            assert!(parse_publish(t, "d1").is_err(), "{t}");
        }
    }

    #[test]
    fn iothub_topics() {
        assert_eq!(
            parse_publish("$iothub/twin/GET/?$rid=42", "d").unwrap(),
            Publish::TwinGet { rid: "42".into() }
        );
        assert_eq!(
            parse_publish("$iothub/twin/PATCH/properties/reported/?$rid=a-b&x=1", "d").unwrap(),
            Publish::ReportedPatch { rid: "a-b".into() }
        );
        assert_eq!(
            parse_publish("$iothub/methods/res/200/?$rid=7", "d").unwrap(),
            Publish::MethodResponse {
                status: 200,
                rid: "7".into()
            }
        );
        assert_eq!(
            parse_publish("$iothub/twin/GET/?x=1", "d"),
            Err(DialectError::NoRequestId("$iothub/twin/GET/?x=1".into()))
        );
        for t in [
            "$iothub/methods/res/abc/?$rid=1",
            "$iothub/methods/res/99/?$rid=1",
            "$iothub/twin/PUT/?$rid=1",
            "$iothub/twin/GET",
        ] {
            assert!(parse_publish(t, "d").is_err(), "{t}");
        }
    }

    #[test]
    fn subscriptions() {
        assert_eq!(
            parse_subscription("devices/d1/messages/devicebound/#", "d1").unwrap(),
            Subscription::CloudToDevice
        );
        assert_eq!(
            parse_subscription("$iothub/methods/POST/#", "d1").unwrap(),
            Subscription::Methods
        );
        assert!(matches!(
            parse_subscription("devices/d2/messages/devicebound/#", "d1"),
            Err(DialectError::OtherDevice { .. })
        ));
        for f in ["#", "devices/+/messages/devicebound/#", "$iothub/twin/#"] {
            assert!(parse_subscription(f, "d1").is_err(), "{f}");
        }
    }

    #[test]
    fn outgoing_topics() {
        assert_eq!(
            twin_response_topic(204, "r 1", Some(5)),
            "$iothub/twin/res/204/?$rid=r%201&$version=5"
        );
        assert_eq!(
            twin_response_topic(200, "9", None),
            "$iothub/twin/res/200/?$rid=9"
        );
        assert_eq!(
            desired_patch_topic(3),
            "$iothub/twin/PATCH/properties/desired/?$version=3"
        );
        assert_eq!(
            method_topic("reboot", "1"),
            "$iothub/methods/POST/reboot/?$rid=1"
        );
        assert_eq!(
            cloud_to_device_topic("d1", &pairs(&[("$.mid", "m1"), ("k", "a/b")])),
            "devices/d1/messages/devicebound/%24.mid=m1&k=a%2Fb"
        );
    }

    #[test]
    fn bag_limits() {
        let many = (0..65)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join("&");
        assert!(parse_bag(&many).is_err());
        assert!(parse_bag("=v").is_err());
        assert_eq!(parse_bag("k").unwrap(), pairs(&[("k", "")]));
    }

    proptest! {
        #[test]
        fn bags_round_trip(p in proptest::collection::vec(("\\PC{1,12}", "\\PC{0,12}"), 0..8)) {
            let encoded = encode_bag(&p);
            prop_assert!(!encoded.contains('/') && !encoded.contains('+') && !encoded.contains('#'));
            prop_assert_eq!(parse_bag(&encoded).unwrap(), p);
        }

        #[test]
        fn any_topic_parses_or_is_refused(topic in "\\PC{0,80}") {
            let _ = parse_publish(&topic, "d1");
            let _ = parse_subscription(&topic, "d1");
            let _ = Username::parse(&topic);
        }
    }
}
