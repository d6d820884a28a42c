//! Device provisioning, compatible with Azure's Device Provisioning Service as its device SDKs
//! speak it (`shared/specs/azure-iot.md` §3): the MQTT username and topics, the REST paths'
//! bodies, and the provisioning service behind both ([`service`]).
//!
//! Over MQTT (the device MQTT listeners, and MQTT over WebSocket) a connection whose username is
//! `{idScope}/registrations/{registrationId}/api-version=...` (no `?`) is a provisioning
//! client: it subscribes to `$dps/registrations/res/#`, registers with
//! `$dps/registrations/PUT/iotdps-register/?$rid={rid}` and polls with
//! `$dps/registrations/GET/iotdps-get-operationstatus/?$rid={rid}&operationId={id}`; answers
//! come on `$dps/registrations/res/{status}/?$rid={rid}[&retry-after={s}]`.

pub mod rest;
pub mod service;

use percent_encoding::percent_decode_str;

/// The topic filter a provisioning client subscribes to.
pub const RESPONSE_FILTER: &str = "$dps/registrations/res/#";
const REGISTER: &str = "$dps/registrations/PUT/iotdps-register/?";
const POLL: &str = "$dps/registrations/GET/iotdps-get-operationstatus/?";

/// A provisioning CONNECT username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username {
    pub id_scope: String,
    pub registration_id: String,
}

impl Username {
    /// `{idScope}/registrations/{registrationId}/api-version=...[&...]`, or `None`.
    pub fn parse(s: &str) -> Option<Username> {
        let mut parts = s.splitn(4, '/');
        let id_scope = parts.next()?;
        if parts.next()? != "registrations" {
            return None;
        }
        let registration_id = percent_decode_str(parts.next()?).decode_utf8().ok()?;
        let query = parts.next()?;
        if !query.split('&').any(|p| p.starts_with("api-version=")) || id_scope.is_empty() {
            return None;
        }
        Some(Username {
            id_scope: id_scope.to_string(),
            registration_id: registration_id.into_owned(),
        })
    }

    /// The resource a SAS token for this registration signs.
    pub fn resource(&self) -> String {
        format!("{}/registrations/{}", self.id_scope, self.registration_id)
    }
}

/// What a provisioning client publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Register { rid: String },
    Poll { rid: String, operation_id: String },
}

fn pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query.split('&').filter_map(|p| p.split_once('='))
}

/// The request a topic is, or why not.
pub fn parse_publish(topic: &str) -> Result<Request, String> {
    if let Some(q) = topic.strip_prefix(REGISTER) {
        let rid = pairs(q)
            .find(|(k, _)| *k == "$rid")
            .map(|(_, v)| v.to_string())
            .ok_or_else(|| format!("'{topic}' lacks the request id ($rid)"))?;
        return Ok(Request::Register { rid });
    }
    if let Some(q) = topic.strip_prefix(POLL) {
        let find = |name: &str| {
            pairs(q)
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let rid = find("$rid").ok_or_else(|| format!("'{topic}' lacks the request id ($rid)"))?;
        let operation_id =
            find("operationId").ok_or_else(|| format!("'{topic}' lacks the operationId"))?;
        return Ok(Request::Poll { rid, operation_id });
    }
    Err(format!("'{topic}' is not a provisioning topic"))
}

/// The topic of an answer. No `$` but the `$rid` key may appear (the Python SDK splits on it).
pub fn response_topic(status: u16, rid: &str, retry_after: Option<u64>) -> String {
    let rid: String = rid.chars().filter(|c| *c != '$' && *c != '&').collect();
    match retry_after {
        Some(s) => format!("$dps/registrations/res/{status}/?$rid={rid}&retry-after={s}"),
        None => format!("$dps/registrations/res/{status}/?$rid={rid}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn usernames_and_topics() {
        let u = Username::parse(
            "0ne0001/registrations/dev-1/api-version=2019-03-31&ClientVersion=azure-iot-device%2F2.14",
        )
        .unwrap();
        assert_eq!(u.id_scope, "0ne0001");
        assert_eq!(u.registration_id, "dev-1");
        assert_eq!(u.resource(), "0ne0001/registrations/dev-1");
        assert!(Username::parse("hub/dev/?api-version=2021-04-12").is_none());
        assert!(Username::parse("dev@app").is_none());
        assert!(Username::parse("scope/registrations/x/no-version").is_none());
        assert_eq!(
            parse_publish("$dps/registrations/PUT/iotdps-register/?$rid=7").unwrap(),
            Request::Register { rid: "7".into() }
        );
        assert_eq!(
            parse_publish(
                "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=8&operationId=op-1"
            )
            .unwrap(),
            Request::Poll {
                rid: "8".into(),
                operation_id: "op-1".into()
            }
        );
        assert!(parse_publish("$dps/registrations/PUT/iotdps-register/?x=1").is_err());
        assert!(parse_publish("devices/x/messages/events/").is_err());
        assert_eq!(
            response_topic(202, "7", Some(3)),
            "$dps/registrations/res/202/?$rid=7&retry-after=3"
        );
    }
}
