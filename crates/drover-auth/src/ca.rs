//! The installation's device certificate authority: generating it, issuing device certificates
//! from certificate signing requests, and certificate revocation lists. Pure crypto: where the
//! CA's certificate and key are kept, and which certificates were issued or revoked, is the
//! registry's business; the caller hands them in.
//!
//! Issued certificates name their device as `CN=<device>, O=<application>`, carry the TLS
//! client-authentication extended key usage, and have a random 128-bit serial. Only the public
//! key of a CSR is used (and its signature checked): its subject and extensions are ignored.
//! Keys: RSA of 2048 bits or more, or EC on P-256 or P-384.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use x509_parser::prelude::FromDer;

/// The largest CSR accepted, PEM.
pub const MAX_CSR_PEM: usize = 16 * 1024;

/// Why a CSR was not signed, or the CA could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaError {
    /// The CSR is malformed, badly signed or has an unacceptable key: the caller's fault.
    #[error("{0}")]
    BadRequest(String),
    /// The CA's own material is unusable (a configuration problem).
    #[error("device CA unusable: {0}")]
    Unusable(String),
}

/// The device CA: its certificate and key (PEM).
#[derive(Clone)]
pub struct DeviceCa {
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: String,
    /// The subject DN as x509-parser prints it (what client certificates name as issuer).
    subject: String,
}

impl std::fmt::Debug for DeviceCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCa")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// A certificate the CA issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub pem: String,
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint: String,
    /// The serial number, lowercase hex.
    pub serial: String,
    pub subject: String,
    pub not_before: chrono::DateTime<chrono::Utc>,
    pub not_after: chrono::DateTime<chrono::Utc>,
}

/// A revoked certificate, for the CRL.
#[derive(Debug, Clone)]
pub struct RevokedSerial {
    /// Lowercase hex.
    pub serial: String,
    pub revoked_at: chrono::DateTime<chrono::Utc>,
}

/// SHA-256 of a certificate (DER), lowercase hex: how Drover names certificates.
pub fn fingerprint(der: &[u8]) -> String {
    hex(&Sha256::digest(der))
}

/// The fingerprint and identity of a certificate given as PEM.
pub fn identify_pem(pem: &str) -> Result<(String, crate::x509::ClientIdentity), String> {
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| "not a PEM certificate (-----BEGIN CERTIFICATE-----)".to_string())?;
    let id = crate::x509::client_identity(&der).map_err(|e| e.to_string())?;
    Ok((fingerprint(&der), id))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn to_chrono(t: time::OffsetDateTime) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t.unix_timestamp(), 0).unwrap_or_default()
}

fn to_time(t: chrono::DateTime<chrono::Utc>) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn unusable(e: impl std::fmt::Display) -> CaError {
    CaError::Unusable(e.to_string())
}

impl DeviceCa {
    /// A new CA (EC P-256, 20 years), named with `installation` so that two installations'
    /// CAs never share a subject.
    pub fn generate(installation: &str) -> Result<DeviceCa, CaError> {
        let key = KeyPair::generate().map_err(unusable)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(unusable)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "Drover device CA");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Drover");
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, installation);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(20 * 365);
        let cert = params.self_signed(&key).map_err(unusable)?;
        DeviceCa::load(&cert.pem(), &key.serialize_pem())
    }

    /// The CA from its certificate and key (PEM): they must belong together and the
    /// certificate must be a CA's.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<DeviceCa, CaError> {
        let cert_der = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .next()
            .ok_or_else(|| unusable("no CERTIFICATE in the CA certificate"))?
            .map_err(unusable)?
            .to_vec();
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der).map_err(unusable)?;
        if !parsed.is_ca() {
            return Err(unusable("the certificate is not a CA certificate"));
        }
        let key = KeyPair::from_pem(key_pem).map_err(unusable)?;
        if key.public_key_raw() != parsed.public_key().subject_public_key.data.as_ref() {
            return Err(unusable("the key does not belong to the certificate"));
        }
        Ok(DeviceCa {
            subject: parsed.subject().to_string(),
            cert_pem: cert_pem.to_string(),
            cert_der,
            key_pem: key_pem.to_string(),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The CA's subject DN, as client certificates name their issuer.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The signer: the CA's certificate (as rcgen holds it) and key.
    fn signer(&self) -> Result<(rcgen::Certificate, KeyPair), CaError> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(unusable)?;
        let cert = CertificateParams::from_ca_cert_pem(&self.cert_pem)
            .map_err(unusable)?
            .self_signed(&key)
            .map_err(unusable)?;
        Ok((cert, key))
    }

    /// Issues a certificate for `device` of `app` from a CSR (PEM), valid for `validity`.
    pub fn issue(
        &self,
        csr_pem: &str,
        app: &str,
        device: &str,
        validity: Duration,
    ) -> Result<Issued, CaError> {
        let csr = check_csr(csr_pem)?;
        let mut request = CertificateSigningRequestParams::from_der(&csr.as_slice().into())
            .map_err(|e| CaError::BadRequest(csr_refusal(&e)))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, device);
        dn.push(DnType::OrganizationName, app);
        let now = time::OffsetDateTime::now_utc();
        let mut serial = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut serial);
        // Positive, and no leading zero digit: its hex is the same however it is printed.
        serial[0] = (serial[0] & 0x7f) | 0x10;
        let validity = time::Duration::try_from(validity).map_err(unusable)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + validity;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        request.params = params;
        let (ca, key) = self.signer()?;
        let cert = request.signed_by(&ca, &key).map_err(unusable)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).map_err(unusable)?;
        Ok(Issued {
            pem: cert.pem(),
            fingerprint: fingerprint(cert.der()),
            serial: hex(&serial),
            subject: parsed.subject().to_string(),
            not_before: to_chrono(parsed.validity().not_before.to_datetime()),
            not_after: to_chrono(parsed.validity().not_after.to_datetime()),
        })
    }

    /// A CRL of `revoked`, numbered `number`, valid for a day.
    pub fn crl(
        &self,
        revoked: &[RevokedSerial],
        number: u64,
    ) -> Result<(Vec<u8>, String), CaError> {
        let now = time::OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + time::Duration::days(1),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .filter_map(|r| {
                    Some(RevokedCertParams {
                        serial_number: SerialNumber::from_slice(&unhex(&r.serial)?),
                        revocation_time: to_time(r.revoked_at),
                        reason_code: None,
                        invalidity_date: None,
                    })
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let (ca, key) = self.signer()?;
        let crl = params.signed_by(&ca, &key).map_err(unusable)?;
        Ok((crl.der().to_vec(), crl.pem().map_err(unusable)?))
    }
}

/// The CSR's DER, once its PEM parses and its key is acceptable.
fn check_csr(csr_pem: &str) -> Result<Vec<u8>, CaError> {
    let bad = |m: &str| CaError::BadRequest(m.to_string());
    if csr_pem.len() > MAX_CSR_PEM {
        return Err(bad("the CSR is larger than 16 KiB"));
    }
    let der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|_| {
            bad("not a PEM certificate signing request (-----BEGIN CERTIFICATE REQUEST-----)")
        })?;
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
            .map_err(|e| {
                CaError::BadRequest(format!("malformed certificate signing request: {e}"))
            })?;
    // The key first: a weak key is the more useful answer (and ring verifies no RSA signature
    // under 2048 bits).
    check_key(&csr.certification_request_info.subject_pki)?;
    csr.verify_signature().map_err(|_| {
        bad("the CSR's signature does not verify with its own key (a corrupted or forged request)")
    })?;
    Ok(der.as_ref().to_vec())
}

/// RSA of 2048 bits or more, or EC on P-256 or P-384.
fn check_key(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<(), CaError> {
    use x509_parser::public_key::PublicKey;
    const P256: &str = "1.2.840.10045.3.1.7";
    const P384: &str = "1.3.132.0.34";
    match spki.parsed() {
        Ok(PublicKey::RSA(k)) if k.key_size() >= 2048 => Ok(()),
        Ok(PublicKey::RSA(k)) => Err(CaError::BadRequest(format!(
            "the CSR's RSA key has {} bits: at least 2048 are needed",
            k.key_size()
        ))),
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match curve.as_deref() {
                Some(P256 | P384) => Ok(()),
                other => Err(CaError::BadRequest(format!(
                    "the CSR's EC key is on curve {}: P-256 or P-384 are accepted",
                    other.unwrap_or("(unnamed)")
                ))),
            }
        }
        _ => Err(CaError::BadRequest(
            "the CSR's key is neither RSA nor EC: RSA (2048 bits or more) or EC P-256/P-384 are accepted"
                .into(),
        )),
    }
}

fn csr_refusal(e: &rcgen::Error) -> String {
    match e {
        rcgen::Error::UnsupportedExtension => {
            "the CSR requests an extension Drover does not sign (only subjectAltName is allowed; \
             the certificate's extensions are Drover's)"
                .into()
        }
        rcgen::Error::UnsupportedSignatureAlgorithm => {
            "the CSR is signed with an algorithm Drover does not support".into()
        }
        e => format!("unusable certificate signing request: {e}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn csr(key: &KeyPair) -> String {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "ignored");
        p.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn issues_client_certificates_that_chain_to_the_ca() {
        let ca = DeviceCa::generate("test").unwrap();
        let again = DeviceCa::load(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(again.subject(), ca.subject());
        let key = KeyPair::generate().unwrap();
        let issued = ca
            .issue(&csr(&key), "app", "dev-1", Duration::from_secs(86_400))
            .unwrap();
        assert_eq!(issued.subject, "CN=dev-1, O=app");
        assert_eq!(issued.fingerprint.len(), 64);
        let der = rustls_pki_types::CertificateDer::from_pem_slice(issued.pem.as_bytes()).unwrap();
        assert_eq!(fingerprint(&der), issued.fingerprint);
        let ca_der = rustls_pki_types::CertificateDer::from(ca.cert_der());
        let anchor = webpki::anchor_from_trusted_cert(&ca_der).unwrap();
        let ee = webpki::EndEntityCert::try_from(&der).unwrap();
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &[],
            rustls_pki_types::UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(hex(parsed.raw_serial()), issued.serial);
        let (crl_der, crl_pem) = ca
            .crl(
                &[RevokedSerial {
                    serial: issued.serial.clone(),
                    revoked_at: chrono::Utc::now(),
                }],
                7,
            )
            .unwrap();
        assert!(crl_pem.starts_with("-----BEGIN X509 CRL-----"));
        let (_, crl) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(&crl_der).unwrap();
        let serials: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| hex(r.raw_serial()))
            .collect();
        assert_eq!(serials, vec![issued.serial]);
    }

    #[test]
    fn refuses_bad_requests() {
        let ca = DeviceCa::generate("test").unwrap();
        let day = Duration::from_secs(86_400);
        let refusal = |pem: &str| match ca.issue(pem, "a", "d", day) {
            Err(CaError::BadRequest(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(refusal("hello").contains("not a PEM certificate signing request"));
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(ca.issue(&csr(&p384), "a", "d", day).is_ok());
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert!(refusal(&csr(&ed)).contains("neither RSA nor EC"));
        // A CSR whose body was altered after signing.
        let good = csr(&KeyPair::generate().unwrap());
        let der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(good.as_bytes())
            .unwrap();
        let mut bytes = der.as_ref().to_vec();
        let at = bytes.windows(7).position(|w| w == b"ignored").unwrap();
        bytes[at] = b'J';
        let pem = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &bytes)
        );
        assert!(
            refusal(&pem).contains("does not verify"),
            "{}",
            refusal(&pem)
        );
        // A CA whose key is another's.
        let other = KeyPair::generate().unwrap();
        assert!(matches!(
            DeviceCa::load(ca.cert_pem(), &other.serialize_pem()),
            Err(CaError::Unusable(_))
        ));
    }
}
