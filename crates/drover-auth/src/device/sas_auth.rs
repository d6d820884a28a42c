//! Devices that present a shared access signature (Azure IoT Hub's SAS tokens, see
//! [`crate::sas`]): the application and device the transport names, the token verified over
//! the raw transmitted resource with either of the device's keys, not expired, and for exactly
//! this device of this hub.

use drover_model::spec::{self, Credential};

use super::{check_live_device, AuthError, AuthenticatedDevice, DeviceAuthenticator};
use crate::sas::{device_resource, SasToken};

impl DeviceAuthenticator {
    /// Who is device `device` of application `app`, proving it with `token` for the resource
    /// `{hub}/devices/{device}` at `now` (unix seconds)?
    pub(super) async fn sas(
        &self,
        app: &str,
        device: &str,
        hub: &str,
        token: &str,
        now: u64,
    ) -> Result<AuthenticatedDevice, AuthError> {
        let token = SasToken::parse(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let application = self.live_application(app).await?;
        let found = self
            .directory
            .device(app, device)
            .await?
            .ok_or_else(|| AuthError::UnknownDevice(app.to_string(), device.to_string()))?;
        check_live_device(app, &found)?;
        let keys: Vec<Vec<u8>> = spec::credentials(&found.spec)
            .into_iter()
            .filter_map(|c| match c {
                Credential::Sas(keys) => Some(keys.decoded()),
                _ => None,
            })
            .flatten()
            .collect();
        let name = found.metadata.name.clone();
        if keys.is_empty() {
            return Err(AuthError::WrongCredentials(app.to_string(), name));
        }
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        token
            .verify(&device_resource(hub, device), &keys, now)
            .map_err(|source| AuthError::Token {
                app: app.to_string(),
                device: name,
                source,
            })?;
        Ok(AuthenticatedDevice {
            application: std::sync::Arc::new(application),
            device: std::sync::Arc::new(found),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use async_trait::async_trait;
    use drover_model::Resource;
    use serde_json::json;

    use super::super::{DeviceCredentials, DeviceDirectory, DirectoryError};
    use super::*;
    use crate::sas::{sign, SasError};

    const PRIMARY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const SECONDARY: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

    struct Directory(HashMap<String, Resource>);

    fn resource(v: serde_json::Value) -> Resource {
        serde_json::from_value(v).unwrap()
    }

    #[async_trait]
    impl DeviceDirectory for Directory {
        async fn application(&self, app: &str) -> Result<Option<Resource>, DirectoryError> {
            Ok((app == "hub1").then(|| {
                resource(json!({"metadata": {"name": "hub1", "uid": "u-app",
                    "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 1,
                    "resourceVersion": "1"}}))
            }))
        }
        async fn device(&self, _: &str, name: &str) -> Result<Option<Resource>, DirectoryError> {
            Ok(self.0.get(name).cloned())
        }
        async fn device_by_username(
            &self,
            _: &str,
            _: &str,
        ) -> Result<Option<Resource>, DirectoryError> {
            Ok(None)
        }
        async fn applications_by_trust_anchor(
            &self,
            _: &str,
        ) -> Result<Vec<Resource>, DirectoryError> {
            Ok(Vec::new())
        }
        async fn issued_certificate(
            &self,
            _: &str,
        ) -> Result<Option<crate::device::IssuedCertificate>, DirectoryError> {
            Ok(None)
        }
        async fn certificate_revoked(
            &self,
            _: &str,
            _: &str,
            _: &str,
        ) -> Result<bool, DirectoryError> {
            Ok(false)
        }
        async fn register_device(&self, _: &str, _: &str) -> Result<Resource, DirectoryError> {
            Err(DirectoryError(drover_model::Reason::new(
                "not in these tests",
            )))
        }
    }

    fn device(name: &str, credentials: serde_json::Value) -> (String, Resource) {
        let d = resource(json!({"metadata": {"name": name, "application": "hub1",
            "uid": format!("u-{name}"), "creationTimestamp": "2026-01-01T00:00:00Z",
            "generation": 1, "resourceVersion": "1"},
            "spec": {"authentication": {"credentials": credentials}}}));
        (name.to_string(), d)
    }

    fn authenticator() -> DeviceAuthenticator {
        let devices = [
            device(
                "d1",
                json!([{"sas": {"primaryKey": PRIMARY, "secondaryKey": SECONDARY}}, {"pass": "p"}]),
            ),
            device("pw-only", json!([{"pass": "p"}])),
        ];
        DeviceAuthenticator::new(Arc::new(Directory(devices.into_iter().collect())))
    }

    fn key(b64: &str) -> Vec<u8> {
        crate::sas::decode_key(b64).unwrap()
    }

    fn creds(device: &str, token: String) -> DeviceCredentials {
        DeviceCredentials::Sas {
            application: "hub1".into(),
            device: device.into(),
            hub: "hub1.drover.example".into(),
            token,
        }
    }

    const SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn later() -> u64 {
        crate::sas::unix_now() + 3600
    }

    #[tokio::test]
    async fn either_key_signs_for_this_device_of_this_hub() {
        let auth = authenticator();
        let resource = "hub1.drover.example/devices/d1";
        for k in [PRIMARY, SECONDARY] {
            let token = sign(resource, &key(k), later(), None);
            let d = auth
                .authenticate(&creds("d1", token), SOURCE)
                .await
                .unwrap();
            assert_eq!(d.device_name(), "d1");
        }
    }

    #[tokio::test]
    async fn refusals_name_their_cause() {
        let auth = authenticator();
        let good = |resource: &str, expiry: u64| sign(resource, &key(PRIMARY), expiry, None);
        let expired = good("hub1.drover.example/devices/d1", 1000);
        let other_device = good("hub1.drover.example/devices/d2", later());
        let other_hub = good("hub2.drover.example/devices/d1", later());
        let wrong_key = sign(
            "hub1.drover.example/devices/d1",
            &key(PRIMARY)[..16],
            later(),
            None,
        );
        let cases = [
            (expired, "expired"),
            (other_device, "is for"),
            (other_hub, "is for"),
            (wrong_key, "does not verify"),
            ("SharedAccessSignature sr=x".to_string(), "lacks"),
            ("password".to_string(), "not a shared access signature"),
        ];
        for (token, cause) in cases {
            let e = auth
                .authenticate(&creds("d1", token.clone()), SOURCE)
                .await
                .unwrap_err();
            let shown = drover_model::error::chain(&e);
            assert!(shown.contains(cause), "{token}: {shown}");
        }
        let token = good("hub1.drover.example/devices/pw-only", later());
        let e = auth
            .authenticate(&creds("pw-only", token), SOURCE)
            .await
            .unwrap_err();
        assert!(matches!(e, AuthError::WrongCredentials(..)), "{e}");
        let token = good("hub1.drover.example/devices/nope", later());
        let e = auth
            .authenticate(&creds("nope", token), SOURCE)
            .await
            .unwrap_err();
        assert!(matches!(e, AuthError::UnknownDevice(..)), "{e}");
        let e = AuthError::Token {
            app: "a".into(),
            device: "d".into(),
            source: SasError::BadSignature,
        };
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn tokens_are_not_shown_in_debug() {
        let token = sign("hub1/devices/d1", &key(PRIMARY), later(), None);
        let shown = format!("{:?}", creds("d1", token.clone()));
        assert!(
            !shown.contains(&token) && !shown.contains("sig="),
            "{shown}"
        );
    }
}
