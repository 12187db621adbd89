//! The file-backed CA: `<state_dir>/ca/` holds
//!
//! | file | mode | content |
//! |---|---|---|
//! | `ca.key` | 0600 | root private key (PKCS#8 PEM) |
//! | `ca.pem` | 0644 | root certificate |
//! | `index.tsv` | 0600 | one line per issued certificate (see [`IndexEntry`]) |
//! | `crl.pem` | 0644 | current CRL (RFC 5280 §5) |
//! | `crlnumber` | 0600 | last CRL number (RFC 5280 §5.2.3, monotonically increasing) |
//! | `issued/<serial>.pem` | 0644 | copy of every certificate issued |
//! | `.lock` | 0600 | advisory lock serialising changes (holds the last holder's pid) |
//!
//! Every file is written atomically (temporary file + rename).
//!
//! By job: [`index`] (what was issued, persisted in `index.tsv`), [`serial`]
//! (serial numbers), [`issue`] (issue, sign a CSR, renew), [`crl`] (revoke,
//! CRL generation and refresh) and [`own`] (the appliance's own
//! certificates), [`backup`] (`ca backup` / `ca restore`: the site's root on
//! several appliances). This file holds the root itself: creating, loading and
//! exporting it, and the lock that serialises every mutation.

mod backup;
mod crl;
mod index;
mod issue;
mod own;
mod serial;

use std::path::{Path, PathBuf};

use data_encoding::HEXUPPER;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use super::fsutil::{self, DirLock, PUBLIC, SECRET};
use super::{pkcs7, KeyType, PkiError};
use serial::random_serial;

pub use backup::{Restored, MIN_PASSPHRASE};
pub use crl::{RevokeReason, RevokeTarget};
pub use index::{CertStatus, IndexEntry, Origin};
pub use issue::{IssueRequest, IssuedCert};
pub use own::{appliance_certs, ApplianceCertRequest, ApplianceCerts};

/// Default validity of leaf certificates, days.
pub const DEFAULT_LEAF_DAYS: u32 = 365;
/// Default validity of the root, days.
pub const DEFAULT_CA_DAYS: u32 = 3650;
/// Backdating of notBefore to tolerate gateway clock skew.
const BACKDATE: Duration = Duration::hours(1);

/// A CA living in `<state_dir>/ca/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaStore {
    state_dir: PathBuf,
}

/// The exported root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedRoot {
    pub pem: PathBuf,
    pub der: PathBuf,
    pub p7b: PathBuf,
}

/// The loaded root.
struct LoadedCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_type: KeyType,
}

fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}

fn generate_key(kt: KeyType) -> Result<KeyPair, PkiError> {
    match kt {
        KeyType::Rsa3072 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072)
        }
        KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
    }
    .map_err(|e| PkiError::rcgen(format!("generating a {kt} key"), e))
}

fn key_type_of(key: &KeyPair) -> KeyType {
    if key.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256 {
        KeyType::EcdsaP256
    } else {
        KeyType::Rsa3072
    }
}

fn check_days(days: u32, arg: &str) -> Result<(), PkiError> {
    if days == 0 || days > 36_500 {
        return Err(PkiError::invalid(
            arg,
            format!("{days} is out of range 1..36500"),
        ));
    }
    Ok(())
}

impl CaStore {
    /// A handle on `<state_dir>/ca` (no I/O).
    pub fn open(state_dir: impl Into<PathBuf>) -> CaStore {
        CaStore {
            state_dir: state_dir.into(),
        }
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
    pub fn ca_dir(&self) -> PathBuf {
        self.state_dir.join("ca")
    }
    pub fn root_key_path(&self) -> PathBuf {
        self.ca_dir().join("ca.key")
    }
    pub fn root_cert_path(&self) -> PathBuf {
        self.ca_dir().join("ca.pem")
    }
    pub fn crl_path(&self) -> PathBuf {
        self.ca_dir().join("crl.pem")
    }
    pub fn index_path(&self) -> PathBuf {
        self.ca_dir().join("index.tsv")
    }
    fn crl_number_path(&self) -> PathBuf {
        self.ca_dir().join("crlnumber")
    }

    pub fn is_initialised(&self) -> bool {
        self.root_key_path().exists() || self.root_cert_path().exists()
    }

    /// Create the root CA. Refuses when one exists unless `force`, which
    /// moves the old `ca/` to `ca.backup-<UTC timestamp>/` first.
    pub fn init(
        state_dir: impl Into<PathBuf>,
        key_type: KeyType,
        validity_days: u32,
        force: bool,
    ) -> Result<CaStore, PkiError> {
        let store = CaStore::open(state_dir);
        check_days(validity_days, "--days")?;
        let ca_dir = store.ca_dir();
        if store.is_initialised() {
            if !force {
                return Err(PkiError::CaExists(ca_dir));
            }
            store.move_aside()?;
        }
        fsutil::create_dir(&store.state_dir, 0o700)?;
        fsutil::create_dir(&ca_dir, 0o700)?;

        let key = generate_key(key_type)?;
        let t = now();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "sipedge");
        // A distinct name per CA: webpki (and OpenSSL) find the issuer by
        // subject name, so two CAs with one name would turn "issuer unknown"
        // into a confusing signature failure.
        let tag: [u8; 4] = rand::random();
        dn.push(
            DnType::CommonName,
            format!("sipedge root CA {} {}", t.year(), HEXUPPER.encode(&tag)),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        params.not_before = t - BACKDATE;
        params.not_after = t + Duration::days(i64::from(validity_days));
        let cert = params
            .self_signed(&key)
            .map_err(|e| PkiError::rcgen("self-signing the root", e))?;

        fsutil::write_atomic(
            &store.root_key_path(),
            key.serialize_pem().as_bytes(),
            SECRET,
        )?;
        fsutil::write_atomic(&store.root_cert_path(), cert.pem().as_bytes(), PUBLIC)?;
        store.save_index(&[])?;
        let ca = store.load()?;
        store.write_crl(&ca, &[])?;
        tracing::info!(dir = %ca_dir.display(), %key_type, "root CA created");
        Ok(store)
    }

    /// Serialise mutations of the index and CRL.
    fn lock(&self) -> Result<DirLock, PkiError> {
        if !self.is_initialised() {
            return Err(PkiError::NoCa(self.ca_dir()));
        }
        DirLock::acquire(&self.ca_dir())
    }

    fn load(&self) -> Result<LoadedCa, PkiError> {
        if !self.is_initialised() {
            return Err(PkiError::NoCa(self.ca_dir()));
        }
        let key_path = self.root_key_path();
        let cert_path = self.root_cert_path();
        let key_pem = fsutil::read_string(&key_path)?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| PkiError::rcgen(key_path.display().to_string(), e))?;
        let key_type = key_type_of(&key);
        let cert_pem = fsutil::read_string(&cert_path)?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| PkiError::invalid(cert_path.display().to_string(), e))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| PkiError::rcgen(cert_path.display().to_string(), e))?;
        Ok(LoadedCa {
            issuer,
            cert_pem,
            cert_der,
            key_type,
        })
    }

    /// The root certificate (DER).
    pub fn root_cert_der(&self) -> Result<CertificateDer<'static>, PkiError> {
        let path = self.root_cert_path();
        let pem = fsutil::read(&path)?;
        CertificateDer::from_pem_slice(&pem)
            .map_err(|e| PkiError::invalid(path.display().to_string(), e))
    }

    /// Write the root as `sipedge-root.pem`, `.der` (`.cer` content) and a
    /// PKCS#7 certs-only `.p7b`.
    pub fn export(&self, out_dir: &Path) -> Result<ExportedRoot, PkiError> {
        let ca = self.load()?;
        let out = ExportedRoot {
            pem: out_dir.join("sipedge-root.pem"),
            der: out_dir.join("sipedge-root.der"),
            p7b: out_dir.join("sipedge-root.p7b"),
        };
        fsutil::write_atomic(&out.pem, ca.cert_pem.as_bytes(), PUBLIC)?;
        fsutil::write_atomic(&out.der, ca.cert_der.as_ref(), PUBLIC)?;
        fsutil::write_atomic(
            &out.p7b,
            &pkcs7::certs_only(&[ca.cert_der.as_ref()]),
            PUBLIC,
        )?;
        Ok(out)
    }
}
