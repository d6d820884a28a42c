//! Device authentication, shared by every device endpoint: which device of which application is
//! this, given the credentials it presented — and may it act for another device (gateway)?
//!
//! The registry is reached through the [`DeviceDirectory`] trait (implemented by the registry
//! crate), so this module knows no storage. Password verification is expensive by design
//! (sha512-crypt, bcrypt): it runs on blocking threads, at most a few at a time, behind a cache of
//! successful verifications. A cache entry is only used while the application's and the device's
//! `resourceVersion` are the ones it was made for, so any change to credentials, the device or the
//! application invalidates it at once — without any event plumbing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use drover_model::error::Reason;
use drover_model::spec::{self, Credential, Password};
use drover_model::Resource;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::throttle::{Throttle, Throttled};

mod sas_auth;

/// Reads the registry for authentication. Implementations return resources regardless of who
/// asks (this is the platform itself asking).
#[async_trait]
pub trait DeviceDirectory: Send + Sync + 'static {
    /// The application, if it exists.
    async fn application(&self, app: &str) -> Result<Option<Resource>, DirectoryError>;
    /// The device found by its name or one of its aliases.
    async fn device(
        &self,
        app: &str,
        name_or_alias: &str,
    ) -> Result<Option<Resource>, DirectoryError>;
    /// The device that has a `user` credential with this unique username.
    async fn device_by_username(
        &self,
        app: &str,
        username: &str,
    ) -> Result<Option<Resource>, DirectoryError>;
    /// Applications with a valid trust anchor whose subject DN is `subject`.
    async fn applications_by_trust_anchor(
        &self,
        subject: &str,
    ) -> Result<Vec<Resource>, DirectoryError>;
    /// A certificate the installation's device CA issued, by SHA-256 fingerprint (hex).
    async fn issued_certificate(
        &self,
        fingerprint: &str,
    ) -> Result<Option<IssuedCertificate>, DirectoryError>;
    /// Creates device `device` in `app` for auto-registration (labelled
    /// `drover.io/auto-registered`), or returns the one that exists by now.
    async fn register_device(&self, app: &str, device: &str) -> Result<Resource, DirectoryError>;
    /// Whether the application (by uid) revoked a certificate of its own trust anchors, by
    /// fingerprint or serial (lowercase hex).
    async fn certificate_revoked(
        &self,
        app_uid: &str,
        fingerprint: &str,
        serial: &str,
    ) -> Result<bool, DirectoryError>;
}

/// A certificate the device CA issued, as authentication needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    pub application: String,
    pub device: String,
    pub revoked: bool,
}

/// The directory could not answer (storage down): a retryable failure, not a refusal. Holds
/// the store's reason, with its cause.
#[derive(Debug, Clone, thiserror::Error)]
#[error("device directory unavailable: {0}")]
pub struct DirectoryError(#[source] pub Reason);

/// Credentials a device presented.
#[derive(Clone, PartialEq, Eq)]
pub enum DeviceCredentials {
    /// A user name and password, plus what the transport says about application and device
    /// (HTTP `?application=&device=`, MQTT client id `device@app`).
    Password {
        username: String,
        password: String,
        application: Option<String>,
        device: Option<String>,
    },
    /// A TLS client certificate chain (DER, end entity first), already proven to belong to the
    /// peer by the TLS handshake; `application` narrows the search when the transport says which.
    Certificate {
        chain: Vec<Vec<u8>>,
        application: Option<String>,
    },
    /// A shared access signature (Azure IoT Hub's devices) for device `device` of the
    /// application the hub `hub` stands for; the token's resource must be
    /// `{hub}/devices/{device}`.
    Sas {
        application: String,
        device: String,
        hub: String,
        token: String,
    },
}

impl std::fmt::Debug for DeviceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceCredentials::Password {
                username,
                application,
                device,
                ..
            } => f
                .debug_struct("Password")
                .field("username", username)
                .field("application", application)
                .field("device", device)
                .finish_non_exhaustive(),
            DeviceCredentials::Sas {
                application,
                device,
                hub,
                ..
            } => f
                .debug_struct("Sas")
                .field("application", application)
                .field("device", device)
                .field("hub", hub)
                .finish_non_exhaustive(),
            DeviceCredentials::Certificate { chain, application } => {
                let subject = chain
                    .first()
                    .and_then(|c| crate::x509::client_identity(c).ok())
                    .map(|i| i.subject);
                f.debug_struct("Certificate")
                    .field("subject", &subject)
                    .field("application", application)
                    .finish()
            }
        }
    }
}

/// An authenticated device.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthenticatedDevice {
    pub application: Arc<Resource>,
    pub device: Arc<Resource>,
}

impl AuthenticatedDevice {
    pub fn app_name(&self) -> &str {
        &self.application.metadata.name
    }
    pub fn app_uid(&self) -> &str {
        &self.application.metadata.uid
    }
    pub fn device_name(&self) -> &str {
        &self.device.metadata.name
    }
    pub fn device_uid(&self) -> &str {
        &self.device.metadata.uid
    }
}

/// Why authentication failed. Endpoints answer all of these the same way to the device (no
/// oracle), and log the reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("malformed credentials: {0}")]
    Malformed(String),
    #[error("application '{0}' not found")]
    UnknownApplication(String),
    #[error("application '{0}' is disabled or being deleted")]
    ApplicationDisabled(String),
    #[error("device '{1}' not found in application '{0}'")]
    UnknownDevice(String, String),
    #[error("device '{1}' of application '{0}' is disabled or being deleted")]
    DeviceDisabled(String, String),
    #[error("wrong credentials for device '{1}' of application '{0}'")]
    WrongCredentials(String, String),
    #[error("device '{device}' does not name '{gateway}' as a gateway (spec.gatewaySelector.matchNames)")]
    NotAGateway { gateway: String, device: String },
    #[error("client certificate refused: {0}")]
    Certificate(String),
    #[error("shared access signature refused for device '{device}' of application '{app}'")]
    Token {
        app: String,
        device: String,
        #[source]
        source: crate::sas::SasError,
    },
    /// Too many failed attempts from this source: refused unchecked.
    #[error(transparent)]
    Throttled(#[from] Throttled),
    /// The directory or the authenticator cannot answer now (retry); the reason keeps the
    /// cause.
    #[error("{0}")]
    Unavailable(#[source] Reason),
}

impl AuthError {
    /// A storage failure (retry later), as opposed to a refusal.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, AuthError::Unavailable(_))
    }
}

impl From<DirectoryError> for AuthError {
    fn from(e: DirectoryError) -> Self {
        AuthError::Unavailable(Reason::caused_by("device directory unavailable", e.0))
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    app: String,
    device: String,
    /// The `user` credential name, when one was used.
    user: Option<String>,
    /// SHA-256 of the password: the cache never holds the password itself.
    digest: [u8; 32],
}

#[derive(Clone)]
struct CacheEntry {
    app_version: String,
    device_version: String,
}

/// Maximum number of cached verifications; the cache is cleared when it is full (simple and
/// bounded; a busy fleet refills it at once).
const CACHE_CAPACITY: usize = 200_000;

/// What is told of a device auto-registration created: the device and the certificate.
pub type RegistrationHook = Arc<dyn Fn(&AuthenticatedDevice, &Registration) + Send + Sync>;

/// The certificate a device was auto-registered with.
#[derive(Debug, Clone)]
pub struct Registration {
    pub subject: String,
    pub issuer: String,
    /// SHA-256 of the certificate, hex.
    pub fingerprint: String,
}

/// The label of auto-registered devices.
pub const AUTO_REGISTERED_LABEL: &str = "drover.io/auto-registered";

/// Authenticates devices against a [`DeviceDirectory`].
pub struct DeviceAuthenticator {
    directory: Arc<dyn DeviceDirectory>,
    /// The installation's device CA (certificate DER and subject DN), whose certificates are
    /// found by fingerprint in the directory.
    device_ca: Option<(Vec<u8>, String)>,
    /// Told of every device auto-registration created.
    on_registered: Option<RegistrationHook>,
    cache: Mutex<HashMap<CacheKey, CacheEntry>>,
    hashing: Semaphore,
    throttle: Arc<Throttle>,
}

impl DeviceAuthenticator {
    /// An authenticator that throttles nothing (tests, tools); servers use
    /// [`with_throttle`](Self::with_throttle).
    pub fn new(directory: Arc<dyn DeviceDirectory>) -> Self {
        Self::with_throttle(directory, Arc::new(Throttle::disabled()))
    }

    /// An authenticator whose failed password attempts go through `throttle`.
    pub fn with_throttle(directory: Arc<dyn DeviceDirectory>, throttle: Arc<Throttle>) -> Self {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Self {
            directory,
            device_ca: None,
            on_registered: None,
            cache: Mutex::new(HashMap::new()),
            hashing: Semaphore::new(workers),
            throttle,
        }
    }

    /// Trusts the installation's device CA: certificates it issued authenticate the device
    /// the inventory names for them, unless revoked.
    pub fn with_device_ca(mut self, ca: &crate::ca::DeviceCa) -> Self {
        self.device_ca = Some((ca.cert_der().to_vec(), ca.subject().to_string()));
        self
    }

    /// Calls `hook` for every device auto-registration creates (e.g. to record an event).
    pub fn on_registered(mut self, hook: RegistrationHook) -> Self {
        self.on_registered = Some(hook);
        self
    }

    /// Who is this device, presenting `creds` from `source`? Password attempts go through the
    /// throttle (see [`crate::throttle`]): a locked-out source is refused unchecked
    /// ([`AuthError::Throttled`]), and a failed attempt's answer may wait. Every refusal of a
    /// password costs the same work whether the application and device exist or not (a dummy
    /// hash verification stands in), so timing tells nothing.
    pub async fn authenticate(
        &self,
        creds: &DeviceCredentials,
        source: IpAddr,
    ) -> Result<AuthenticatedDevice, AuthError> {
        match creds {
            DeviceCredentials::Password {
                username,
                password,
                application,
                device,
            } => {
                self.throttle.check(source)?;
                let identity = format!(
                    "device:{}/{}",
                    application.as_deref().unwrap_or(""),
                    device.as_deref().unwrap_or(username)
                );
                let mut hashed = false;
                let result = self
                    .password(
                        username,
                        password,
                        application.as_deref(),
                        device.as_deref(),
                        &mut hashed,
                    )
                    .await;
                match result {
                    Ok(d) => {
                        self.throttle.succeeded(source, &identity);
                        Ok(d)
                    }
                    Err(e) if e.is_unavailable() => Err(e),
                    Err(e) => {
                        if !hashed {
                            self.dummy_verification(password).await;
                        }
                        let wait = self.throttle.failed(source, &identity);
                        if !wait.is_zero() {
                            tokio::time::sleep(wait).await;
                        }
                        Err(e)
                    }
                }
            }
            DeviceCredentials::Certificate { chain, application } => {
                self.certificate(chain, application.as_deref()).await
            }
            DeviceCredentials::Sas {
                application,
                device,
                hub,
                token,
            } => {
                self.throttle.check(source)?;
                let identity = format!("device:{application}/{device}");
                let now = crate::sas::unix_now();
                match self.sas(application, device, hub, token, now).await {
                    Ok(d) => {
                        self.throttle.succeeded(source, &identity);
                        Ok(d)
                    }
                    Err(e) if e.is_unavailable() => Err(e),
                    Err(e) => {
                        let wait = self.throttle.failed(source, &identity);
                        if !wait.is_zero() {
                            tokio::time::sleep(wait).await;
                        }
                        Err(e)
                    }
                }
            }
        }
    }

    /// The throttle of failed attempts (for rate-limited logging of refusals).
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// As much work as verifying a password against a stored hash (SHA-512 crypt, the
    /// registry's default), for refusals that needed none.
    async fn dummy_verification(&self, password: &str) {
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let hash = DUMMY
            .get_or_init(|| crate::password::hash_sha512_crypt("drover-dummy-password"))
            .clone();
        let _ = self.verify(password, vec![Password::Sha512(hash)]).await;
    }

    /// X.509: the application by the certificate's issuer DN (one of its trust anchors), the
    /// chain verified against that application's trust anchors, the device by the certificate's
    /// subject DN (as name or alias), else by its common name.
    async fn certificate(
        &self,
        chain: &[Vec<u8>],
        application: Option<&str>,
    ) -> Result<AuthenticatedDevice, AuthError> {
        let leaf = chain
            .first()
            .ok_or_else(|| AuthError::Certificate("no client certificate".into()))?;
        let id = crate::x509::client_identity(leaf)
            .map_err(|e| AuthError::Certificate(e.to_string()))?;
        let fingerprint = crate::ca::fingerprint(leaf);
        if let Some((ca, subject)) = &self.device_ca {
            if id.issuer == *subject {
                return self.issued(chain, ca, &fingerprint, application).await;
            }
        }
        let candidates = match application {
            Some(app) => vec![self.live_application(app).await?],
            None => {
                self.directory
                    .applications_by_trust_anchor(&id.issuer)
                    .await?
            }
        };
        if candidates.is_empty() {
            return Err(AuthError::Certificate(format!(
                "no application trusts the issuer '{}'",
                id.issuer
            )));
        }
        let mut last = None;
        for app in candidates {
            let name = app.metadata.name.clone();
            if app.is_deleting() || spec::disabled(&app.spec) {
                last = Some(AuthError::ApplicationDisabled(name));
                continue;
            }
            let anchors = spec::trust_anchors(&app.spec);
            if let Err(e) =
                crate::x509::verify_client_chain(chain, &anchors, std::time::SystemTime::now())
            {
                last = Some(AuthError::Certificate(format!(
                    "{e} (application '{name}')"
                )));
                continue;
            }
            if self
                .directory
                .certificate_revoked(&app.metadata.uid, &fingerprint, &id.serial)
                .await?
            {
                last = Some(AuthError::Certificate(format!(
                    "certificate {fingerprint} (serial {}) was revoked by application '{name}'",
                    id.serial
                )));
                continue;
            }
            let mut device = self.directory.device(&name, &id.subject).await?;
            if device.is_none() {
                if let Some(cn) = &id.common_name {
                    device = self.directory.device(&name, cn).await?;
                }
            }
            let mut registered = false;
            if device.is_none() && spec::auto_register(&app.spec) {
                if let Some(cn) = id
                    .common_name
                    .as_deref()
                    .filter(|cn| drover_model::names::validate_device_name(cn).is_ok())
                {
                    device = Some(self.directory.register_device(&name, cn).await?);
                    registered = true;
                }
            }
            let Some(device) = device else {
                last = Some(AuthError::UnknownDevice(name, id.subject.clone()));
                continue;
            };
            check_live_device(&name, &device)?;
            let authenticated = AuthenticatedDevice {
                application: Arc::new(app),
                device: Arc::new(device),
            };
            if registered {
                tracing::info!(app = %name, device = authenticated.device_name(), subject = %id.subject, "auto-registered a device on its first connection");
                if let Some(hook) = &self.on_registered {
                    hook(
                        &authenticated,
                        &Registration {
                            subject: id.subject.clone(),
                            issuer: id.issuer.clone(),
                            fingerprint: fingerprint.clone(),
                        },
                    );
                }
            }
            return Ok(authenticated);
        }
        Err(last.unwrap_or_else(|| AuthError::Certificate("no matching application".into())))
    }

    /// A certificate of the installation's device CA: the chain verified against it, the
    /// device the inventory names for its fingerprint, unless revoked.
    async fn issued(
        &self,
        chain: &[Vec<u8>],
        ca: &[u8],
        fingerprint: &str,
        application: Option<&str>,
    ) -> Result<AuthenticatedDevice, AuthError> {
        crate::x509::verify_chain_to(chain, &[ca.to_vec()], std::time::SystemTime::now())
            .map_err(|e| AuthError::Certificate(format!("{e} (the device CA)")))?;
        let found = self
            .directory
            .issued_certificate(fingerprint)
            .await?
            .ok_or_else(|| {
                AuthError::Certificate(format!(
                    "certificate {fingerprint} names the device CA as issuer but is not in its inventory"
                ))
            })?;
        if found.revoked {
            return Err(AuthError::Certificate(format!(
                "certificate {fingerprint} of device '{}' (application '{}') was revoked",
                found.device, found.application
            )));
        }
        if application.is_some_and(|a| a != found.application) {
            return Err(AuthError::Certificate(format!(
                "certificate {fingerprint} belongs to application '{}'",
                found.application
            )));
        }
        let app = self.live_application(&found.application).await?;
        let device = self
            .directory
            .device(&found.application, &found.device)
            .await?
            .ok_or_else(|| {
                AuthError::UnknownDevice(found.application.clone(), found.device.clone())
            })?;
        check_live_device(&found.application, &device)?;
        Ok(AuthenticatedDevice {
            application: Arc::new(app),
            device: Arc::new(device),
        })
    }

    /// Sets `hashed` when a stored hash was verified (the expensive part).
    async fn password(
        &self,
        username: &str,
        password: &str,
        application: Option<&str>,
        device: Option<&str>,
        hashed: &mut bool,
    ) -> Result<AuthenticatedDevice, AuthError> {
        let (app, name, user) = login_names(username, application, device)?;
        let application = self.live_application(&app).await?;
        let device = match &user {
            Some(_) => self.directory.device(&app, &name).await?,
            None => match self.directory.device(&app, &name).await? {
                Some(d) => Some(d),
                None => self.directory.device_by_username(&app, &name).await?,
            },
        };
        let device = device.ok_or_else(|| AuthError::UnknownDevice(app.clone(), name.clone()))?;
        check_live_device(&app, &device)?;

        let (candidates, found_by_username) = candidates(&device, &name, user.as_deref());
        let dev_name = device.metadata.name.clone();
        if candidates.is_empty() {
            return Err(AuthError::WrongCredentials(app, dev_name));
        }

        let key = CacheKey {
            app: app.clone(),
            device: dev_name.clone(),
            user: user.clone().or(found_by_username.then(|| name.clone())),
            digest: Sha256::digest(password.as_bytes()).into(),
        };
        let cached = self
            .cache
            .lock()
            .map(|c| {
                c.get(&key).is_some_and(|e| {
                    e.app_version == application.metadata.resource_version
                        && e.device_version == device.metadata.resource_version
                })
            })
            .unwrap_or(false);
        if !cached {
            *hashed = candidates.iter().any(|p| !matches!(p, Password::Plain(_)));
            if !self.verify(password, candidates).await? {
                return Err(AuthError::WrongCredentials(app, dev_name));
            }
            if let Ok(mut c) = self.cache.lock() {
                if c.len() >= CACHE_CAPACITY {
                    c.clear();
                }
                c.insert(
                    key,
                    CacheEntry {
                        app_version: application.metadata.resource_version.clone(),
                        device_version: device.metadata.resource_version.clone(),
                    },
                );
            }
        }
        Ok(AuthenticatedDevice {
            application: Arc::new(application),
            device: Arc::new(device),
        })
    }

    async fn verify(&self, password: &str, candidates: Vec<Password>) -> Result<bool, AuthError> {
        // Plain entries (legacy data) need no hashing.
        if candidates
            .iter()
            .any(|p| matches!(p, Password::Plain(s) if crate::password::verify_plain(password, s)))
        {
            return Ok(true);
        }
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| AuthError::Unavailable(Reason::new("authenticator closed")))?;
        let password = password.to_string();
        tokio::task::spawn_blocking(move || {
            candidates.iter().any(|p| match p {
                Password::Plain(_) => false,
                Password::Sha512(h) => crate::password::verify_sha512_crypt(&password, h),
                Password::Bcrypt(h) => crate::password::verify_bcrypt(&password, h),
            })
        })
        .await
        .map_err(|e| AuthError::Unavailable(Reason::caused_by("password verification failed", e)))
    }

    async fn live_application(&self, app: &str) -> Result<Resource, AuthError> {
        let application = self
            .directory
            .application(app)
            .await?
            .ok_or_else(|| AuthError::UnknownApplication(app.to_string()))?;
        if application.is_deleting() || spec::disabled(&application.spec) {
            return Err(AuthError::ApplicationDisabled(app.to_string()));
        }
        Ok(application)
    }

    /// May the authenticated `gateway` act for device `device` of its application? Returns the
    /// device on success.
    pub async fn authorize_as(
        &self,
        gateway: &AuthenticatedDevice,
        device: &str,
    ) -> Result<Arc<Resource>, AuthError> {
        if device == gateway.device_name() {
            return Ok(gateway.device.clone());
        }
        let app = gateway.app_name();
        let target = self
            .directory
            .device(app, device)
            .await?
            .ok_or_else(|| AuthError::UnknownDevice(app.to_string(), device.to_string()))?;
        check_live_device(app, &target)?;
        if !spec::gateways(&target.spec)
            .iter()
            .any(|g| g == gateway.device_name())
        {
            return Err(AuthError::NotAGateway {
                gateway: gateway.device_name().to_string(),
                device: target.metadata.name.clone(),
            });
        }
        Ok(Arc::new(target))
    }
}

/// Application, device and `user` credential name a password login names. The forms of the
/// contract: `device@app` + password; `device` + application; `user` + application + device.
fn login_names(
    username: &str,
    application: Option<&str>,
    device: Option<&str>,
) -> Result<(String, String, Option<String>), AuthError> {
    let (app, name, user) = match (username.rsplit_once('@'), application, device) {
        (_, Some(app), Some(dev)) => (app.to_string(), dev.to_string(), Some(username.to_string())),
        (Some((dev, app)), _, None) if !dev.is_empty() && !app.is_empty() => {
            (app.to_string(), dev.to_string(), None)
        }
        (_, Some(app), None) => (app.to_string(), username.to_string(), None),
        _ => return Err(unknown_application(username)),
    };
    if name.is_empty() {
        return Err(AuthError::Malformed("empty device name".into()));
    }
    Ok((app, name, user))
}

fn unknown_application(username: &str) -> AuthError {
    AuthError::Malformed(format!(
        "cannot tell the application from user name '{username}': use '<device>@<application>'"
    ))
}

/// The stored passwords a login as `name` (with the `user` credential name, if any) may match,
/// and whether the device was found by a unique username rather than its name or an alias.
fn candidates(device: &Resource, name: &str, user: Option<&str>) -> (Vec<Password>, bool) {
    let presented_user = user.unwrap_or(name);
    let found_by_username = user.is_none()
        && device.metadata.name != name
        && !spec::aliases(&device.spec).iter().any(|a| a == name);
    let candidates = spec::credentials(&device.spec)
        .into_iter()
        .filter_map(|c| match c {
            Credential::Pass(p) if user.is_none() && !found_by_username => Some(p),
            Credential::User {
                username, password, ..
            } if username == presented_user => Some(password),
            _ => None,
        })
        .collect();
    (candidates, found_by_username)
}

fn check_live_device(app: &str, device: &Resource) -> Result<(), AuthError> {
    if device.is_deleting() || spec::disabled(&device.spec) {
        return Err(AuthError::DeviceDisabled(
            app.to_string(),
            device.metadata.name.clone(),
        ));
    }
    Ok(())
}
