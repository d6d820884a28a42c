//! Trust anchors of applications.
//!
//! An application's `spec.trustAnchors.anchors[].certificate` holds a CA certificate as the
//! base64 encoding of its PEM text (as in Drogue Cloud). [`parse_trust_anchor`] decodes and
//! checks it; the PEM text itself is accepted too.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use chrono::{DateTime, Utc};
use x509_parser::pem::Pem;

/// Standard alphabet, padding optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

const PEM_BEGIN: &str = "-----BEGIN";

/// What Drover needs to know about a trust anchor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Subject distinguished name, RFC 4514 style as x509-parser prints it, e.g.
    /// `CN=Example CA, O=Example`.
    pub subject: String,
    /// The certificate, DER-encoded.
    pub der: Vec<u8>,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    /// Whether basic constraints mark it as a CA.
    pub is_ca: bool,
}

/// Why a trust anchor cannot be used.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum CertificateError {
    /// Neither PEM text nor valid base64.
    #[error("trust anchor is not valid base64: {0}")]
    InvalidBase64(String),
    /// No well-formed PEM block.
    #[error("trust anchor is not valid PEM: {0}")]
    InvalidPem(String),
    /// A PEM block other than `CERTIFICATE` (e.g. a private key).
    #[error("trust anchor contains a '{0}' PEM block, only a single CERTIFICATE block is allowed")]
    UnexpectedPemBlock(String),
    /// More than one certificate.
    #[error("trust anchor contains {0} CERTIFICATE blocks, expected exactly one")]
    MultipleCertificates(usize),
    /// The block's content is not an X.509 certificate.
    #[error("trust anchor is not a valid X.509 certificate: {0}")]
    InvalidCertificate(String),
}

impl CertificateError {
    /// A short, stable error code for API responses.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidBase64(_) => "InvalidBase64",
            Self::InvalidPem(_) => "InvalidPem",
            Self::UnexpectedPemBlock(_) => "UnexpectedPemBlock",
            Self::MultipleCertificates(_) => "MultipleCertificates",
            Self::InvalidCertificate(_) => "InvalidCertificate",
        }
    }
}

/// Parses a trust anchor: base64 of a PEM text holding exactly one `CERTIFICATE` block, or
/// that PEM text directly (if it starts with `-----BEGIN`). Whitespace around and inside the
/// base64 is ignored, and padding is optional.
pub fn parse_trust_anchor(base64_pem: &str) -> Result<CertificateInfo, CertificateError> {
    let input = base64_pem.trim();
    let decoded;
    let pem_bytes = if input.starts_with(PEM_BEGIN) {
        input.as_bytes()
    } else {
        let compact: Vec<u8> = input.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        if compact.is_empty() {
            return Err(CertificateError::InvalidPem(
                "trust anchor is empty".to_string(),
            ));
        }
        decoded = BASE64
            .decode(&compact)
            .map_err(|e| CertificateError::InvalidBase64(e.to_string()))?;
        &decoded[..]
    };
    parse_pem(pem_bytes)
}

/// Parses a bundle of CA certificates (PEM text, one or more `CERTIFICATE` blocks), each of which
/// must be a valid X.509 certificate (for the CA a tenant gives its webhook's HTTPS target).
pub fn parse_ca_bundle(pem: &str) -> Result<Vec<CertificateInfo>, CertificateError> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|e| CertificateError::InvalidPem(e.to_string()))?;
        if block.label != "CERTIFICATE" {
            return Err(CertificateError::UnexpectedPemBlock(block.label));
        }
        out.push(parse_der(block.contents)?);
    }
    if out.is_empty() {
        return Err(CertificateError::InvalidPem(
            "no '-----BEGIN CERTIFICATE-----' block found".to_string(),
        ));
    }
    Ok(out)
}

fn parse_pem(pem: &[u8]) -> Result<CertificateInfo, CertificateError> {
    if std::str::from_utf8(pem).is_err() {
        return Err(CertificateError::InvalidPem(
            "decoded data is not text (the base64 of a DER certificate is not accepted, encode the PEM text)"
                .to_string(),
        ));
    }
    if !contains(pem, PEM_BEGIN.as_bytes()) {
        return Err(CertificateError::InvalidPem(
            "no '-----BEGIN CERTIFICATE-----' block found".to_string(),
        ));
    }

    let mut certificates = Vec::new();
    for block in Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| CertificateError::InvalidPem(e.to_string()))?;
        if block.label != "CERTIFICATE" {
            return Err(CertificateError::UnexpectedPemBlock(block.label));
        }
        certificates.push(block.contents);
    }
    let der = match certificates.len() {
        0 => {
            return Err(CertificateError::InvalidPem(
                "no complete PEM block found".to_string(),
            ))
        }
        1 => certificates.remove(0),
        n => return Err(CertificateError::MultipleCertificates(n)),
    };
    parse_der(der)
}

fn parse_der(der: Vec<u8>) -> Result<CertificateInfo, CertificateError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| CertificateError::InvalidCertificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertificateError::InvalidCertificate(format!(
            "{} bytes of trailing data after the certificate",
            rest.len()
        )));
    }
    let validity = cert.validity();
    let time = |t: &x509_parser::time::ASN1Time, what: &str| {
        DateTime::<Utc>::from_timestamp(t.timestamp(), 0)
            .ok_or_else(|| CertificateError::InvalidCertificate(format!("{what} is out of range")))
    };
    let not_before = time(&validity.not_before, "notBefore")?;
    let not_after = time(&validity.not_after, "notAfter")?;
    let subject = cert.subject().to_string();
    let is_ca = cert.is_ca();
    drop(cert);
    Ok(CertificateInfo {
        subject,
        der,
        not_before,
        not_after,
        is_ca,
    })
}

/// Who a client certificate names: its subject and issuer DNs (as x509-parser prints them, e.g.
/// `CN=sensor-1, O=Drogue IoT, OU=my-app`) and its common name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub subject: String,
    pub issuer: String,
    pub common_name: Option<String>,
    /// The serial number, lowercase hex without leading zeros.
    pub serial: String,
}

/// Reads the identity of a client's end-entity certificate (DER).
pub fn client_identity(leaf_der: &[u8]) -> Result<ClientIdentity, CertificateError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf_der)
        .map_err(|e| CertificateError::InvalidCertificate(e.to_string()))?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    Ok(ClientIdentity {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        common_name,
        serial: cert
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    })
}

/// Verifies a client certificate chain (end entity first, then intermediates, DER) against
/// trust anchors given as in `spec.trustAnchors` (base64 of PEM): signatures, validity at `now`,
/// and the client-authentication key usage. The error says why it failed.
pub fn verify_client_chain(
    chain: &[Vec<u8>],
    anchors: &[String],
    now: std::time::SystemTime,
) -> Result<(), String> {
    let anchor_ders: Vec<Vec<u8>> = anchors
        .iter()
        .filter_map(|a| parse_trust_anchor(a).ok())
        .map(|info| info.der)
        .collect();
    if anchor_ders.is_empty() {
        return Err("the application has no valid trust anchor".into());
    }
    verify_chain_to(chain, &anchor_ders, now)
}

/// Verifies a client certificate chain (DER, end entity first) against trust anchors given as
/// DER certificates, as [`verify_client_chain`] does.
pub fn verify_chain_to(
    chain: &[Vec<u8>],
    anchor_ders: &[Vec<u8>],
    now: std::time::SystemTime,
) -> Result<(), String> {
    use rustls_pki_types::{CertificateDer, UnixTime};
    let (leaf, intermediates) = chain.split_first().ok_or("no client certificate")?;
    let anchor_ders: Vec<CertificateDer<'_>> = anchor_ders
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let trust_anchors = anchor_ders
        .iter()
        .map(webpki::anchor_from_trusted_cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("unusable trust anchor: {e}"))?;
    let leaf = CertificateDer::from(leaf.as_slice());
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let ee = webpki::EndEntityCert::try_from(&leaf)
        .map_err(|e| format!("invalid client certificate: {e}"))?;
    let since_epoch = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| "system clock before 1970".to_string())?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &trust_anchors,
        &intermediates,
        UnixTime::since_unix_epoch(since_epoch),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map(drop)
    .map_err(|e| match e {
        webpki::Error::CertExpired { .. } => "client certificate expired".to_string(),
        webpki::Error::CertNotValidYet { .. } => "client certificate not valid yet".to_string(),
        webpki::Error::UnknownIssuer => {
            "client certificate not issued by the application's trust anchors".to_string()
        }
        e => format!("client certificate chain invalid: {e}"),
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};

    fn certificate(is_ca: bool) -> rcgen::Certificate {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Drover Test CA");
        dn.push(DnType::OrganizationName, "Drover");
        params.distinguished_name = dn;
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2034, 1, 1);
        if is_ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        params.self_signed(&key).unwrap()
    }

    #[test]
    fn parses_base64_pem() {
        let cert = certificate(true);
        let info = parse_trust_anchor(&STANDARD.encode(cert.pem())).unwrap();
        assert_eq!(info.subject, "CN=Drover Test CA, O=Drover");
        assert_eq!(info.der, cert.der().to_vec());
        assert!(info.is_ca);
        assert_eq!(info.not_before.to_rfc3339(), "2024-01-01T00:00:00+00:00");
        assert_eq!(info.not_after.to_rfc3339(), "2034-01-01T00:00:00+00:00");
    }

    #[test]
    fn parses_pem_text_and_tolerant_base64() {
        let cert = certificate(false);
        let pem = cert.pem();
        let direct = parse_trust_anchor(&pem).unwrap();
        assert!(!direct.is_ca);
        assert_eq!(direct.der, cert.der().to_vec());

        // CRLF line endings.
        let crlf = pem.replace('\n', "\r\n");
        assert_eq!(parse_trust_anchor(&crlf).unwrap(), direct);

        // Wrapped like `base64` output, surrounded by whitespace, without padding.
        let encoded = STANDARD.encode(&pem);
        let wrapped: Vec<String> = encoded
            .as_bytes()
            .chunks(76)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect();
        let wrapped = format!("\n  {}\n", wrapped.join("\n"));
        assert_eq!(parse_trust_anchor(&wrapped).unwrap(), direct);
        let unpadded = encoded.trim_end_matches('=');
        assert_eq!(parse_trust_anchor(unpadded).unwrap(), direct);
    }

    #[test]
    fn rejects_garbage() {
        let cases: &[(&str, &str)] = &[
            ("", "InvalidPem"),
            ("   ", "InvalidPem"),
            ("not base64!", "InvalidBase64"),
            ("aGVsbG8gd29ybGQ=", "InvalidPem"), // "hello world"
            ("-----BEGIN CERTIFICATE-----\nAAAA\n", "InvalidPem"),
            (
                "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                "InvalidPem",
            ),
            (
                "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
                "InvalidCertificate",
            ),
        ];
        for (input, kind) in cases {
            let err = parse_trust_anchor(input).unwrap_err();
            assert_eq!(err.kind(), *kind, "{input:?}: {err}");
            let encoded = STANDARD.encode(input);
            if !input.trim().is_empty() && input.starts_with(PEM_BEGIN) {
                let err = parse_trust_anchor(&encoded).unwrap_err();
                assert_eq!(err.kind(), *kind, "{encoded:?}: {err}");
            }
        }

        // Base64 of DER rather than of PEM.
        let cert = certificate(true);
        let err = parse_trust_anchor(&STANDARD.encode(cert.der())).unwrap_err();
        assert_eq!(err.kind(), "InvalidPem");
        assert!(err.to_string().contains("encode the PEM text"), "{err}");
    }

    #[test]
    fn exactly_one_certificate_block() {
        let a = certificate(true).pem();
        let b = certificate(true).pem();
        let err = parse_trust_anchor(&STANDARD.encode(format!("{a}{b}"))).unwrap_err();
        assert_eq!(err, CertificateError::MultipleCertificates(2));
        assert_eq!(err.kind(), "MultipleCertificates");
        assert_eq!(
            err.to_string(),
            "trust anchor contains 2 CERTIFICATE blocks, expected exactly one"
        );

        let key = KeyPair::generate().unwrap().serialize_pem();
        let err = parse_trust_anchor(&STANDARD.encode(format!("{a}{key}"))).unwrap_err();
        assert_eq!(
            err,
            CertificateError::UnexpectedPemBlock("PRIVATE KEY".to_string())
        );
        assert_eq!(err.kind(), "UnexpectedPemBlock");

        // Text around the block is ignored.
        let annotated = format!("Our CA\n{a}\n");
        assert!(parse_trust_anchor(&STANDARD.encode(annotated)).is_ok());
    }

    #[test]
    fn trailing_data_after_der() {
        let cert = certificate(true);
        let mut der = cert.der().to_vec();
        der.extend_from_slice(b"junk");
        let body = STANDARD.encode(&der);
        let pem = format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n");
        let err = parse_trust_anchor(&pem).unwrap_err();
        assert_eq!(err.kind(), "InvalidCertificate");
        assert!(err.to_string().contains("trailing data"), "{err}");
    }
}
