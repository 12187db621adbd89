//! Certificate inspection (`sipedge cert show`) and the cloud-edge
//! certificate rules.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::SystemTime;

use data_encoding::HEXUPPER;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::public_key::PublicKey;

use super::{fsutil, normalize_name, pkcs12, PkiError};

/// What `cert show` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// "PEM", "DER" or "PKCS#12".
    pub format: &'static str,
    pub subject: String,
    pub subject_cn: Option<String>,
    /// `DNS:<name>` / `IP:<addr>`.
    pub sans: Vec<String>,
    pub issuer: String,
    /// Upper-case hex.
    pub serial: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// "RSA" or "EC".
    pub key_type: String,
    pub key_bits: usize,
    /// "serverAuth", "clientAuth", …
    pub eku: Vec<String>,
    pub is_ca: bool,
    /// SHA-256 over the DER, colon-separated upper-case hex.
    pub sha256_fingerprint: String,
    /// Certificates in the file (leaf first).
    pub chain_len: usize,
}

impl fmt::Display for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Format:       {}", self.format)?;
        writeln!(f, "Subject:      {}", self.subject)?;
        writeln!(
            f,
            "SANs:         {}",
            if self.sans.is_empty() {
                "(none)".to_string()
            } else {
                self.sans.join(", ")
            }
        )?;
        writeln!(f, "Issuer:       {}", self.issuer)?;
        writeln!(f, "Serial:       {}", self.serial)?;
        writeln!(f, "Not before:   {}", self.not_before)?;
        writeln!(f, "Not after:    {}", self.not_after)?;
        writeln!(f, "Key:          {} {} bits", self.key_type, self.key_bits)?;
        writeln!(
            f,
            "EKU:          {}",
            if self.eku.is_empty() {
                "(none)".to_string()
            } else {
                self.eku.join(", ")
            }
        )?;
        writeln!(
            f,
            "CA:           {}",
            if self.is_ca { "TRUE" } else { "FALSE" }
        )?;
        writeln!(f, "SHA-256:      {}", self.sha256_fingerprint)?;
        write!(f, "Certificates: {}", self.chain_len)
    }
}

pub(crate) fn parse_cert<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, PkiError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c)
        .map_err(|e| PkiError::invalid(what, format!("not an X.509 certificate: {e}")))
}

/// The DNS and IP names of a certificate's SAN extension.
pub(crate) fn san_names(cert: &X509Certificate<'_>) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for gn in &san.value.general_names {
            match gn {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(raw) => match raw.len() {
                    4 => {
                        let mut a = [0u8; 4];
                        a.copy_from_slice(raw);
                        ips.push(IpAddr::from(a));
                    }
                    16 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(raw);
                        ips.push(IpAddr::from(a));
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    (dns, ips)
}

pub(crate) fn subject_cn(cert: &X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}

fn fingerprint(der: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| HEXUPPER.encode(&[*b]))
        .collect::<Vec<_>>()
        .join(":")
}

fn info_from_der(
    der: &[u8],
    format: &'static str,
    chain_len: usize,
    what: &str,
) -> Result<CertInfo, PkiError> {
    let cert = parse_cert(der, what)?;
    let (dns, ips) = san_names(&cert);
    let mut sans: Vec<String> = dns.into_iter().map(|d| format!("DNS:{d}")).collect();
    sans.extend(ips.into_iter().map(|ip| format!("IP:{ip}")));
    let (key_type, key_bits) = match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => ("RSA".to_string(), rsa.key_size()),
        Ok(PublicKey::EC(ec)) => ("EC".to_string(), ec.key_size()),
        Ok(other) => (format!("{other:?}").chars().take(16).collect(), 0),
        Err(_) => ("unknown".to_string(), 0),
    };
    let mut eku = Vec::new();
    if let Ok(Some(e)) = cert.extended_key_usage() {
        let e = e.value;
        for (on, label) in [
            (e.server_auth, "serverAuth"),
            (e.client_auth, "clientAuth"),
            (e.code_signing, "codeSigning"),
            (e.email_protection, "emailProtection"),
            (e.time_stamping, "timeStamping"),
            (e.ocsp_signing, "OCSPSigning"),
            (e.any, "anyExtendedKeyUsage"),
        ] {
            if on {
                eku.push(label.to_string());
            }
        }
        eku.extend(e.other.iter().map(|o| o.to_id_string()));
    }
    Ok(CertInfo {
        format,
        subject: cert.subject().to_string(),
        subject_cn: subject_cn(&cert),
        sans,
        issuer: cert.issuer().to_string(),
        serial: HEXUPPER.encode(cert.raw_serial()),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        key_type,
        key_bits,
        eku,
        is_ca: cert.is_ca(),
        sha256_fingerprint: fingerprint(der),
        chain_len,
    })
}

/// Describe the (first) certificate of a PEM, DER or PKCS#12 file.
pub fn show_cert(path: &Path, password: Option<&str>) -> Result<CertInfo, PkiError> {
    let data = fsutil::read(path)?;
    show_cert_bytes(&data, password, &path.display().to_string())
}

/// [`show_cert`] over bytes; `what` names the source in errors.
pub fn show_cert_bytes(
    data: &[u8],
    password: Option<&str>,
    what: &str,
) -> Result<CertInfo, PkiError> {
    let trimmed = data.trim_ascii_start();
    if trimmed.starts_with(b"-----BEGIN") {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(data)
            .collect::<Result<_, _>>()
            .map_err(|e| PkiError::invalid(what, format!("bad PEM: {e}")))?;
        let first = certs
            .first()
            .ok_or_else(|| PkiError::invalid(what, "no CERTIFICATE block in the PEM file"))?;
        return info_from_der(first, "PEM", certs.len(), what);
    }
    if pkcs12::looks_like_pkcs12(data) {
        let password = password.ok_or_else(|| {
            PkiError::invalid(
                what,
                "PKCS#12 bundle: a password is needed (--password-file)",
            )
        })?;
        let contents = pkcs12::decode(data, password).map_err(|source| PkiError::Pkcs12 {
            what: what.to_string(),
            source,
        })?;
        let first = contents
            .certs
            .first()
            .ok_or_else(|| PkiError::invalid(what, "PKCS#12 bundle holds no certificate"))?;
        return info_from_der(first, "PKCS#12", contents.certs.len(), what);
    }
    info_from_der(data, "DER", 1, what)
}

/// Severity of a [`Finding`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found by [`check_edge_cert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub text: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{s}: {}", self.text)
    }
}

fn err(text: String) -> Finding {
    Finding {
        severity: Severity::Error,
        text,
    }
}

fn warn(text: String) -> Finding {
    Finding {
        severity: Severity::Warning,
        text,
    }
}

/// Days before expiry that produce a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// Check the cloud-facing (access edge) certificate:
/// subject CN = the access edge FQDN (never `sip.<domain>`), that FQDN and a
/// `sip.<domain>` per SIP domain among the DNS SANs, the issuer chain present,
/// the key matching the certificate, and the validity window (error when
/// expired or not yet valid, warning under 30 days).
pub fn check_edge_cert(
    cert: &CertificateDer<'_>,
    key: &PrivateKeyDer<'_>,
    chain: &[CertificateDer<'_>],
    access_edge_fqdn: &str,
    sip_domains: &[String],
    now: SystemTime,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let parsed = match parse_cert(cert, "certificate") {
        Ok(c) => c,
        Err(e) => return vec![err(e.to_string())],
    };
    let edge = normalize_name(access_edge_fqdn);
    let (dns, _) = san_names(&parsed);
    let dns: Vec<String> = dns.iter().map(|d| normalize_name(d)).collect();
    let sip_names: Vec<String> = sip_domains
        .iter()
        .map(|d| format!("sip.{}", normalize_name(d)))
        .collect();

    match subject_cn(&parsed).map(|cn| normalize_name(&cn)) {
        Some(cn) if cn == edge => {}
        Some(cn) if sip_names.contains(&cn) => out.push(err(format!(
            "subject CN is {cn}; it must be the access edge FQDN {edge} (sip.<domain> names belong in the SANs, never in the subject)"
        ))),
        Some(cn) => out.push(err(format!(
            "subject CN is {cn}; it must be the access edge FQDN {edge}"
        ))),
        None => out.push(err(format!(
            "the subject has no CN; it must be the access edge FQDN {edge}"
        ))),
    }
    if !dns.contains(&edge) {
        out.push(err(format!(
            "no DNS SAN {edge}: TLS peers match names against the SANs only (RFC 6125 §6.4.4)"
        )));
    }
    for (domain, want) in sip_domains.iter().zip(&sip_names) {
        if dns.contains(want) {
            continue;
        }
        let wildcard = format!("*.{}", normalize_name(domain));
        if dns.contains(&wildcard) {
            out.push(warn(format!(
                "{want} is covered only by the wildcard SAN {wildcard}; some peers require the exact name"
            )));
        } else {
            out.push(err(format!(
                "no DNS SAN {want} for SIP domain {}",
                normalize_name(domain)
            )));
        }
    }

    match chain.first() {
        None => out.push(err(
            "no certificate chain: the issuing CA certificate(s) must be configured so peers can build the path".into(),
        )),
        Some(first) => match parse_cert(first, "chain") {
            Ok(issuer) if issuer.subject().as_raw() == parsed.issuer().as_raw() => {}
            Ok(issuer) => out.push(err(format!(
                "the chain starts with {} but the certificate was issued by {}",
                issuer.subject(),
                parsed.issuer()
            ))),
            Err(e) => out.push(err(e.to_string())),
        },
    }

    match rustls::crypto::aws_lc_rs::sign::any_supported_type(key) {
        Ok(signer) => match signer.public_key() {
            Some(spki) if spki.as_ref() == parsed.public_key().raw => {}
            Some(_) => out.push(err(
                "the private key does not match the certificate's public key".into(),
            )),
            None => out.push(warn(
                "could not derive the public key from the private key to compare".into(),
            )),
        },
        Err(e) => out.push(err(format!("unusable private key: {e}"))),
    }

    let now = OffsetDateTime::from(now);
    let nb = parsed.validity().not_before.to_datetime();
    let na = parsed.validity().not_after.to_datetime();
    if now < nb {
        out.push(err(format!("not valid before {nb} (check the clock)")));
    } else if now > na {
        out.push(err(format!("expired on {na}")));
    } else {
        let left = (na - now).whole_days();
        if left < EXPIRY_WARNING_DAYS {
            out.push(warn(format!("expires in {left} days ({na})")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_naming_the_source() {
        let err = show_cert_bytes(b"\x30\x03\x02\x01", None, "x.der").expect_err("garbage");
        assert!(err.to_string().starts_with("x.der:"), "{err}");
        let err = show_cert_bytes(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            None,
            "k.pem",
        )
        .expect_err("no cert");
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
        for n in 0..48u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(29) ^ 0x30).collect();
            let _ = show_cert_bytes(&data, Some("pw"), "fuzz");
        }
    }

    #[test]
    fn fingerprint_is_colon_separated_upper_case_hex() {
        // SHA-256 of the empty string.
        assert_eq!(
            fingerprint(b""),
            "E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:\
             27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55"
        );
    }

    #[test]
    fn self_signed_cert_is_described() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let params =
            rcgen::CertificateParams::new(vec!["a.example".to_string(), "10.0.0.1".to_string()])
                .expect("params");
        let cert = params.self_signed(&key).expect("cert");
        let info = show_cert_bytes(cert.pem().as_bytes(), None, "t").expect("show");
        assert_eq!(info.format, "PEM");
        assert_eq!(
            info.sans,
            vec!["DNS:a.example".to_string(), "IP:10.0.0.1".to_string()]
        );
        assert_eq!((info.key_type.as_str(), info.key_bits), ("EC", 256));
        let der = show_cert_bytes(cert.der(), None, "t").expect("der");
        assert_eq!(der.sha256_fingerprint, info.sha256_fingerprint);
        assert_eq!(der.format, "DER");
    }
}
