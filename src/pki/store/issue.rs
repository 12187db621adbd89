//! Issuing leaves: `ca issue` (we generate the key), `ca sign` (from a CSR,
//! of which only the public key is used) and `ca renew`; the name rules and
//! the one place a leaf certificate is built and signed.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use data_encoding::HEXUPPER;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    PublicKeyData, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::FromDer;

use super::index::{CertStatus, IndexEntry, Origin};
use super::serial::random_serial;
use super::{check_days, generate_key, now, CaStore, LoadedCa, BACKDATE, DEFAULT_LEAF_DAYS};
use crate::pki::fsutil::{self, PUBLIC, SECRET};
use crate::pki::{normalize_name, pkcs12, KeyType, NamePolicy, PkiError};

/// What `ca issue` needs.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// FQDN or IP address; becomes the subject CN and the SAN.
    pub name: String,
    /// Extra IP SANs.
    pub ips: Vec<IpAddr>,
    pub days: u32,
    pub out_dir: PathBuf,
    /// PKCS#12 password; `None` generates one, written beside the bundle.
    pub p12_password: Option<String>,
    /// Issue for a name outside the policy / overwrite existing files.
    pub force: bool,
    /// Leaf key type; `None` follows the CA's.
    pub key_type: Option<KeyType>,
    /// Explicit (notBefore, notAfter) instead of now-1h .. now+days. For
    /// tests (expired / not-yet-valid certificates) and migrations; the CLI
    /// never sets it.
    pub validity: Option<(OffsetDateTime, OffsetDateTime)>,
}

impl IssueRequest {
    pub fn new(name: impl Into<String>, out_dir: impl Into<PathBuf>) -> Self {
        IssueRequest {
            name: name.into(),
            ips: Vec::new(),
            days: DEFAULT_LEAF_DAYS,
            out_dir: out_dir.into(),
            p12_password: None,
            force: false,
            key_type: None,
            validity: None,
        }
    }
}

/// Files written for one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    pub serial: String,
    pub name: String,
    pub not_after: OffsetDateTime,
    /// Private key (0600); `None` for CSR-signed certificates.
    pub key_path: Option<PathBuf>,
    pub cert_path: PathBuf,
    /// Leaf + root, PEM.
    pub chain_path: PathBuf,
    /// PKCS#12 (key + chain), 0600; `None` for CSR-signed certificates.
    pub p12_path: Option<PathBuf>,
    /// Generated PKCS#12 password file (0600) when no password was given.
    pub p12_password_path: Option<PathBuf>,
}

/// Internal description of a leaf to sign.
pub(super) struct LeafSpec {
    pub(super) cn: String,
    pub(super) dns: Vec<String>,
    pub(super) ips: Vec<IpAddr>,
    pub(super) file_stem: String,
    pub(super) not_before: OffsetDateTime,
    pub(super) not_after: OffsetDateTime,
    pub(super) out_dir: PathBuf,
    pub(super) p12_password: Option<String>,
    pub(super) force: bool,
    pub(super) origin: Origin,
}

/// Validate a DNS name or IP literal to be a certificate subject.
pub(super) fn validate_name(name: &str) -> Result<String, PkiError> {
    let n = normalize_name(name);
    if IpAddr::from_str(&n).is_ok() {
        return Ok(n);
    }
    let bad = |reason: &str| PkiError::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if n.is_empty() || n.len() > 253 {
        return Err(bad("must be 1..253 characters"));
    }
    for label in n.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("every label must be 1..63 characters"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("labels may not start or end with '-'"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(bad(
                "only letters, digits, '-' and '.' are allowed (no wildcards)",
            ));
        }
    }
    Ok(n)
}

pub(super) fn file_stem_for(name: &str) -> String {
    name.replace(':', "_")
}

impl CaStore {
    /// Issue a key and certificate for a gateway (or any allowed name).
    pub fn issue(&self, policy: &NamePolicy, req: &IssueRequest) -> Result<IssuedCert, PkiError> {
        let name = validate_name(&req.name)?;
        if !req.force && !policy.permits(&name) {
            return Err(PkiError::NameNotAllowed { name });
        }
        check_days(req.days, "--days")?;
        let _lock = self.lock()?;
        let ca = self.load()?;
        let (dns, mut ips) = match IpAddr::from_str(&name) {
            Ok(ip) => (Vec::new(), vec![ip]),
            Err(_) => (vec![name.clone()], Vec::new()),
        };
        for ip in &req.ips {
            if !ips.contains(ip) {
                ips.push(*ip);
            }
        }
        let (not_before, not_after) = validity(req.days, req.validity)?;
        let spec = LeafSpec {
            file_stem: file_stem_for(&name),
            cn: name,
            dns,
            ips,
            not_before,
            not_after,
            out_dir: req.out_dir.clone(),
            p12_password: req.p12_password.clone(),
            force: req.force,
            origin: Origin::Issued,
        };
        let mut index = self.list()?;
        let issued = self.issue_leaf(&ca, spec, req.key_type, &mut index)?;
        self.save_index(&index)?;
        Ok(issued)
    }

    /// Generate a key pair and sign it.
    pub(super) fn issue_leaf(
        &self,
        ca: &LoadedCa,
        spec: LeafSpec,
        key_type: Option<KeyType>,
        index: &mut Vec<IndexEntry>,
    ) -> Result<IssuedCert, PkiError> {
        let key_path = spec.out_dir.join(format!("{}.key", spec.file_stem));
        let p12_path = spec.out_dir.join(format!("{}.p12", spec.file_stem));
        let pass_path = spec.out_dir.join(format!("{}.p12.pass", spec.file_stem));
        self.refuse_existing(&spec, &[&key_path, &p12_path])?;
        let key_type = key_type.unwrap_or(ca.key_type);
        let key = generate_key(key_type)?;
        let (mut issued, leaf_der) = self.sign_leaf(ca, &spec, &key, key_type, index)?;

        fsutil::write_atomic(&key_path, key.serialize_pem().as_bytes(), SECRET)?;
        let (password, generated) = match &spec.p12_password {
            Some(p) => (p.clone(), false),
            None => (random_password(), true),
        };
        let p12 = pkcs12::encode(
            key.serialized_der(),
            &[leaf_der.as_ref(), ca.cert_der.as_ref()],
            &password,
            &spec.cn,
        )
        .map_err(|source| PkiError::Pkcs12 {
            what: p12_path.display().to_string(),
            source,
        })?;
        fsutil::write_atomic(&p12_path, &p12, SECRET)?;
        if generated {
            fsutil::write_atomic(&pass_path, format!("{password}\n").as_bytes(), SECRET)?;
            issued.p12_password_path = Some(pass_path);
        }
        issued.key_path = Some(key_path);
        issued.p12_path = Some(p12_path);
        Ok(issued)
    }

    fn refuse_existing(&self, spec: &LeafSpec, extra: &[&Path]) -> Result<(), PkiError> {
        if spec.force {
            return Ok(());
        }
        let cert = spec.out_dir.join(format!("{}.crt", spec.file_stem));
        let chain = spec.out_dir.join(format!("{}.chain.pem", spec.file_stem));
        for p in [cert.as_path(), chain.as_path()].iter().chain(extra.iter()) {
            if p.exists() {
                return Err(PkiError::FileExists(p.to_path_buf()));
            }
        }
        Ok(())
    }

    /// Sign a leaf for `public_key` with our policy and write cert + chain.
    fn sign_leaf(
        &self,
        ca: &LoadedCa,
        spec: &LeafSpec,
        public_key: &impl PublicKeyData,
        key_type: KeyType,
        index: &mut Vec<IndexEntry>,
    ) -> Result<(IssuedCert, CertificateDer<'static>), PkiError> {
        let serial = random_serial();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, spec.cn.clone());
        params.distinguished_name = dn;
        for d in &spec.dns {
            let ia5 = rcgen::string::Ia5String::try_from(d.as_str())
                .map_err(|e| PkiError::invalid(format!("name {d:?}"), e))?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        for ip in &spec.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        // CA:FALSE written explicitly (RFC 5280 §4.2.1.9).
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = match key_type {
            KeyType::Rsa3072 => vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ],
            // RFC 5480 §3: keyEncipherment MUST NOT be asserted for
            // id-ecPublicKey.
            KeyType::EcdsaP256 => vec![KeyUsagePurpose::DigitalSignature],
        };
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(public_key, &ca.issuer)
            .map_err(|e| PkiError::rcgen(format!("signing the certificate for {}", spec.cn), e))?;

        let cert_path = spec.out_dir.join(format!("{}.crt", spec.file_stem));
        let chain_path = spec.out_dir.join(format!("{}.chain.pem", spec.file_stem));
        let serial_hex = HEXUPPER.encode(&serial);
        fsutil::write_atomic(
            &self
                .ca_dir()
                .join("issued")
                .join(format!("{serial_hex}.pem")),
            cert.pem().as_bytes(),
            PUBLIC,
        )?;
        fsutil::write_atomic(&cert_path, cert.pem().as_bytes(), PUBLIC)?;
        let chain = format!("{}{}", cert.pem(), ca.cert_pem);
        fsutil::write_atomic(&chain_path, chain.as_bytes(), PUBLIC)?;

        let mut sans = spec.dns.clone();
        sans.extend(spec.ips.iter().map(IpAddr::to_string));
        index.push(IndexEntry {
            serial: serial_hex.clone(),
            name: spec.cn.clone(),
            sans,
            not_before: spec.not_before,
            not_after: spec.not_after,
            status: CertStatus::Valid,
            revocation: None,
            origin: spec.origin,
            out_dir: spec.out_dir.clone(),
        });
        tracing::info!(name = %spec.cn, serial = %serial_hex, "certificate issued");
        Ok((
            IssuedCert {
                serial: serial_hex,
                name: spec.cn.clone(),
                not_after: spec.not_after,
                key_path: None,
                cert_path,
                chain_path,
                p12_path: None,
                p12_password_path: None,
            },
            cert.der().clone(),
        ))
    }

    /// Sign a PKCS#10 CSR. The request's signature is verified, then ONLY its
    /// public key is used: subject, SANs, key usage, EKU, basic constraints
    /// and validity come from our policy (a CSR asking for CA:TRUE, extra
    /// SANs or a long validity gets none of it).
    pub fn sign_csr(
        &self,
        policy: &NamePolicy,
        csr_pem: &str,
        name: &str,
        out_dir: &Path,
        force: bool,
    ) -> Result<IssuedCert, PkiError> {
        let name = validate_name(name)?;
        if !force && !policy.permits(&name) {
            return Err(PkiError::NameNotAllowed { name });
        }
        let _lock = self.lock()?;
        let ca = self.load()?;
        let csr_der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|e| PkiError::invalid("CSR", format!("not a PEM CERTIFICATE REQUEST: {e}")))?;
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&csr_der)
                .map_err(|e| PkiError::invalid("CSR", format!("not a PKCS#10 request: {e}")))?;
        csr.verify_signature()
            .map_err(|e| PkiError::invalid("CSR", format!("signature does not verify: {e}")))?;
        let spki = &csr.certification_request_info.subject_pki;
        let key_type = match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
                let bits = rsa.key_size();
                if bits < 2048 {
                    return Err(PkiError::invalid(
                        "CSR",
                        format!("RSA key of {bits} bits is too small (minimum 2048)"),
                    ));
                }
                KeyType::Rsa3072
            }
            Ok(x509_parser::public_key::PublicKey::EC(_)) => KeyType::EcdsaP256,
            _ => {
                return Err(PkiError::invalid(
                    "CSR",
                    "unsupported public key type (RSA or ECDSA P-256 only)",
                ))
            }
        };
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(spki.raw)
            .map_err(|e| PkiError::rcgen("CSR public key", e))?;
        let (dns, ips) = match IpAddr::from_str(&name) {
            Ok(ip) => (Vec::new(), vec![ip]),
            Err(_) => (vec![name.clone()], Vec::new()),
        };
        let (not_before, not_after) = validity(DEFAULT_LEAF_DAYS, None)?;
        let spec = LeafSpec {
            file_stem: file_stem_for(&name),
            cn: name,
            dns,
            ips,
            not_before,
            not_after,
            out_dir: out_dir.to_path_buf(),
            p12_password: None,
            force,
            origin: Origin::Csr,
        };
        self.refuse_existing(&spec, &[])?;
        let mut index = self.list()?;
        let (issued, _) = self.sign_leaf(&ca, &spec, &public_key, key_type, &mut index)?;
        self.save_index(&index)?;
        Ok(issued)
    }

    /// Re-issue the newest valid certificate of `name` (new key, new serial,
    /// same SANs, same validity length, same output directory); the old one
    /// is marked superseded.
    pub fn renew(&self, name: &str) -> Result<IssuedCert, PkiError> {
        let _lock = self.lock()?;
        let ca = self.load()?;
        let mut index = self.list()?;
        let wanted = normalize_name(name);
        let pos = index
            .iter()
            .rposition(|e| e.status == CertStatus::Valid && normalize_name(&e.name) == wanted)
            .ok_or_else(|| PkiError::NotFound(format!("name {name} (no valid certificate)")))?;
        let old = index
            .get(pos)
            .cloned()
            .ok_or_else(|| PkiError::NotFound(name.into()))?;
        if old.origin == Origin::Csr {
            return Err(PkiError::invalid(
                format!("name {name}"),
                "was signed from a CSR (we do not hold its key); sign a new CSR with `ca sign`",
            ));
        }
        let days = (old.not_after - old.not_before).whole_days().max(1);
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for s in &old.sans {
            match IpAddr::from_str(s) {
                Ok(ip) => ips.push(ip),
                Err(_) => dns.push(s.clone()),
            }
        }
        let t = now();
        let spec = LeafSpec {
            file_stem: file_stem_for(&old.name),
            cn: old.name.clone(),
            dns,
            ips,
            not_before: t - BACKDATE,
            not_after: t + Duration::days(days),
            out_dir: old.out_dir.clone(),
            p12_password: None,
            force: true,
            origin: old.origin,
        };
        let issued = self.issue_leaf(&ca, spec, None, &mut index)?;
        if let Some(e) = index.get_mut(pos) {
            e.status = CertStatus::Superseded;
        }
        self.save_index(&index)?;
        Ok(issued)
    }
}

fn validity(
    days: u32,
    explicit: Option<(OffsetDateTime, OffsetDateTime)>,
) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
    if let Some((nb, na)) = explicit {
        if na <= nb {
            return Err(PkiError::invalid(
                "validity",
                "notAfter must be after notBefore",
            ));
        }
        return Ok((nb, na));
    }
    let t = now();
    Ok((t - BACKDATE, t + Duration::days(i64::from(days))))
}

fn random_password() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 24)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert_eq!(
            validate_name("GW1.Lab.Example.").ok().as_deref(),
            Some("gw1.lab.example")
        );
        assert!(validate_name("10.1.2.3").is_ok());
        assert!(validate_name("::1").is_ok());
        assert!(validate_name("*.lab.example").is_err());
        assert!(validate_name("a..b").is_err());
        assert!(validate_name("-a.b").is_err());
        assert!(validate_name("").is_err());
        assert_eq!(file_stem_for("fd00::1"), "fd00__1");
    }
}
