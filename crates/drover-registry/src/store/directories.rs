//! The lookups of authentication: [`DeviceDirectory`] (device endpoints) and [`UserDirectory`]
//! (user authentication), answered from the store without access checks (the authenticators
//! decide).

use async_trait::async_trait;
use drover_auth::device::{DeviceDirectory, DirectoryError, IssuedCertificate};
use drover_auth::user::UserDirectory;
use drover_model::Resource;
use tokio::sync::watch;

use super::{tables, Backend, SqlRegistry};
use crate::sql::Fallible;
use crate::RegistryError;

type Directory<T> = std::result::Result<T, DirectoryError>;

/// A directory answer: every failure is the store's (the directory refuses nothing).
fn directory<T>(answer: Fallible<T>) -> Directory<T> {
    answer.map_err(|f| DirectoryError(RegistryError::from(f).into_reason()))
}

#[async_trait]
impl<B: Backend> DeviceDirectory for SqlRegistry<B> {
    async fn application(&self, app: &str) -> Directory<Option<Resource>> {
        let app = tables::load_app(&mut self.backend.pool(), app).await;
        directory(app.map(|row| row.map(|r| r.doc)))
    }

    async fn device(&self, app: &str, name_or_alias: &str) -> Directory<Option<Resource>> {
        directory(tables::device_by_name(&mut self.backend.pool(), app, "id", name_or_alias).await)
    }

    async fn device_by_username(&self, app: &str, username: &str) -> Directory<Option<Resource>> {
        directory(tables::device_by_name(&mut self.backend.pool(), app, "username", username).await)
    }

    async fn applications_by_trust_anchor(&self, subject: &str) -> Directory<Vec<Resource>> {
        directory(tables::apps_by_trust_anchor(&mut self.backend.pool(), subject).await)
    }

    async fn issued_certificate(&self, fingerprint: &str) -> Directory<Option<IssuedCertificate>> {
        let found = super::certificates::issued(&mut self.backend.pool(), fingerprint).await;
        directory(found.map(|f| {
            f.map(|(application, device, revoked)| IssuedCertificate {
                application,
                device,
                revoked,
            })
        }))
    }

    async fn register_device(&self, app: &str, device: &str) -> Directory<Resource> {
        use crate::Registry;
        let input: crate::ResourceInput = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": device,
                "labels": {drover_auth::device::AUTO_REGISTERED_LABEL: "true"},
            },
        }))
        .map_err(|e| DirectoryError(drover_model::Reason::new(format!("device input: {e}"))))?;
        let system = drover_model::Principal::SystemAdmin("drover".into());
        match self.create_device(&system, app, input).await {
            Ok(d) => Ok(d),
            // Registered by a concurrent connection meanwhile: that one.
            Err(RegistryError::Conflict(_)) => {
                let found = tables::load_device(&mut self.backend.pool(), app, device).await;
                match directory(found)? {
                    Some(d) => Ok(d),
                    None => Err(DirectoryError(drover_model::Reason::new(format!(
                        "device '{device}' was neither created nor found"
                    )))),
                }
            }
            Err(e) => Err(DirectoryError(e.into_reason())),
        }
    }

    async fn certificate_revoked(
        &self,
        app_uid: &str,
        fingerprint: &str,
        serial: &str,
    ) -> Directory<bool> {
        let pool = &mut self.backend.pool();
        directory(super::certificates::revoked_external(pool, app_uid, fingerprint, serial).await)
    }
}

#[async_trait]
impl<B: Backend> UserDirectory for SqlRegistry<B> {
    async fn token_owner(&self, token_hash: &str) -> Directory<Option<(String, bool)>> {
        directory(tables::token_owner_by_hash(&mut self.backend.pool(), token_hash).await)
    }

    async fn user_admin(&self, user: &str) -> Directory<Option<bool>> {
        directory(tables::user_admin(&mut self.backend.pool(), user).await)
    }

    fn access_changes(&self) -> watch::Receiver<u64> {
        self.access.subscribe()
    }
}
