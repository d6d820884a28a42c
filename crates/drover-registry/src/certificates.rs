//! Device certificates in the registry: the installation's device CA (its certificate and key),
//! the certificates it issued (by SHA-256 fingerprint), and revocations of certificates chained
//! to an application's own trust anchors. Signing is `drover-auth::ca`'s; this keeps the
//! records.
//!
//! Revoking a certificate (issued or external) emits a change of its device at the path
//! `.status.certificates`, on which every node ends the device's live sessions; deleting a
//! device revokes the certificates issued for it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use drover_model::Principal;
use serde::Serialize;

use crate::Result;

/// A certificate the device CA issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRecord {
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint: String,
    /// Lowercase hex.
    pub serial: String,
    pub application: String,
    /// The device it belongs to.
    pub device: String,
    pub subject: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub issued: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<DateTime<Utc>>,
    /// The certificate, PEM.
    pub certificate: String,
}

/// What identifies a revoked certificate of an application's own trust anchors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum RevokedBy {
    Fingerprint,
    Serial,
}

impl RevokedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokedBy::Fingerprint => "fingerprint",
            RevokedBy::Serial => "serial",
        }
    }
}

/// A revoked certificate of an application's own trust anchors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    pub kind: RevokedBy,
    /// The fingerprint or serial, lowercase hex.
    pub value: String,
    /// The device whose sessions ended when it was revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub revoked: DateTime<Utc>,
}

/// Device certificates (part of [`crate::Registry`]).
#[async_trait]
pub trait CertificateStore: Send + Sync {
    /// The stored device CA (certificate and key, PEM), if any.
    async fn device_ca(&self) -> Result<Option<(String, String)>>;
    /// Stores the device CA unless one is stored already, and returns the stored one (the
    /// first node of a cluster to start wins).
    async fn init_device_ca(&self, cert: &str, key: &str) -> Result<(String, String)>;
    /// Records a certificate issued for a device of `app` (`who` must be allowed to write to
    /// the application; the device must exist and not be deleting).
    async fn record_certificate(
        &self,
        who: &Principal,
        app: &str,
        record: CertificateRecord,
    ) -> Result<CertificateRecord>;
    /// The issued certificates of an application (of one device), oldest first.
    async fn certificates(
        &self,
        who: &Principal,
        app: &str,
        device: Option<&str>,
        limit: Option<usize>,
        offset: usize,
    ) -> Result<Vec<CertificateRecord>>;
    /// An issued certificate of an application, by fingerprint.
    async fn certificate(
        &self,
        who: &Principal,
        app: &str,
        fingerprint: &str,
    ) -> Result<CertificateRecord>;
    /// Revokes an issued certificate (write permission); revoking it again changes nothing.
    async fn revoke_certificate(
        &self,
        who: &Principal,
        app: &str,
        fingerprint: &str,
    ) -> Result<CertificateRecord>;
    /// Revokes a certificate chained to the application's trust anchors (write permission);
    /// the live sessions of `device` end.
    async fn revoke_external(
        &self,
        who: &Principal,
        app: &str,
        kind: RevokedBy,
        value: &str,
        device: &str,
    ) -> Result<Revocation>;
    /// The revocations of an application's own certificates, newest first.
    async fn revocations(&self, who: &Principal, app: &str) -> Result<Vec<Revocation>>;
    /// Serials and times of every revoked issued certificate not yet expired (the CRL).
    async fn revoked_serials(&self) -> Result<Vec<(String, DateTime<Utc>)>>;
}
