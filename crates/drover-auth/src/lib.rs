//! Authentication primitives for Drover.
//!
//! This crate owns the pieces of authentication that do not depend on how a request arrived or
//! where credentials are kept:
//!
//! - [`token`]: Drogue-format access tokens (`drg_…` API keys): generation, shape and checksum
//!   validation, and the hash under which they are stored.
//! - [`password`]: password hashes as Drogue stores them (SHA-512 crypt, bcrypt, plain) and the
//!   shape checks used to validate client-supplied hashes.
//! - [`oidc`]: validation of Bearer JWTs issued by a configured OpenID Connect provider, with
//!   lazily fetched and cached signing keys.
//! - [`x509`]: parsing of application trust anchors (base64-encoded PEM certificates).
//! - [`ca`]: the installation's device CA: generating it, issuing device certificates from
//!   CSRs, CRLs.
//! - [`device`]: device authentication (passwords, X.509) against a `DeviceDirectory`.
//! - [`user`]: user authentication (access tokens, OIDC JWT) against a `UserDirectory`, and
//!   the re-check of long-lived sessions when access may have been taken away.
//! - [`sas`]: Azure shared access signatures: parsing, verification with a device's keys,
//!   signing (for tools and tests), DPS group key derivation.
//! - [`throttle`]: defence against guessing credentials (per-source lockout, per-identity
//!   delays) and rate-limited logging of failures.
//!
//! It knows nothing of transports (HTTP, MQTT, CoAP) and nothing of storage: callers look up
//! the stored hash or trust anchor and hand it in. Expensive verifications (bcrypt, SHA-512 crypt)
//! are plain blocking functions; async callers run them on `spawn_blocking`, behind a cache.
//! Nothing here reads environment variables or files.

pub mod ca;
pub mod device;
pub mod oidc;
pub mod password;
pub mod sas;
pub mod throttle;
pub mod token;
pub mod user;
pub mod x509;

pub use oidc::{OidcConfig, OidcError, OidcValidator};
pub use token::{AccessToken, TokenFormatError};
pub use x509::{CertificateError, CertificateInfo};
