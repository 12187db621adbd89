//! Revocation: `ca revoke`, the CRL (RFC 5280 §5) re-signed on every change
//! and by `refresh_crl`, its monotonically increasing number, and the CRL
//! handed to the TLS verifier.

use std::fs;

use rcgen::{
    CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateRevocationListDer;
use time::Duration;

use super::index::{CertStatus, IndexEntry};
use super::serial::{hex_decode, normalize_serial};
use super::{now, CaStore, LoadedCa};
use crate::pki::fsutil::{self, io_err, PUBLIC, SECRET};
use crate::pki::{normalize_name, PkiError};

/// A CRL is re-signed on every change; this is its nextUpdate horizon.
const CRL_VALIDITY_DAYS: i64 = 90;

/// RFC 5280 §5.3.1 CRL reason codes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RevokeReason {
    #[default]
    #[value(name = "unspecified")]
    Unspecified,
    #[value(name = "key-compromise")]
    KeyCompromise,
    #[value(name = "ca-compromise")]
    CaCompromise,
    #[value(name = "affiliation-changed")]
    AffiliationChanged,
    #[value(name = "superseded")]
    Superseded,
    #[value(name = "cessation-of-operation")]
    CessationOfOperation,
    #[value(name = "certificate-hold")]
    CertificateHold,
    #[value(name = "privilege-withdrawn")]
    PrivilegeWithdrawn,
}

impl RevokeReason {
    const ALL: [RevokeReason; 8] = [
        RevokeReason::Unspecified,
        RevokeReason::KeyCompromise,
        RevokeReason::CaCompromise,
        RevokeReason::AffiliationChanged,
        RevokeReason::Superseded,
        RevokeReason::CessationOfOperation,
        RevokeReason::CertificateHold,
        RevokeReason::PrivilegeWithdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Unspecified => "unspecified",
            RevokeReason::KeyCompromise => "key-compromise",
            RevokeReason::CaCompromise => "ca-compromise",
            RevokeReason::AffiliationChanged => "affiliation-changed",
            RevokeReason::Superseded => "superseded",
            RevokeReason::CessationOfOperation => "cessation-of-operation",
            RevokeReason::CertificateHold => "certificate-hold",
            RevokeReason::PrivilegeWithdrawn => "privilege-withdrawn",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    fn to_rcgen(self) -> RevocationReason {
        match self {
            RevokeReason::Unspecified => RevocationReason::Unspecified,
            RevokeReason::KeyCompromise => RevocationReason::KeyCompromise,
            RevokeReason::CaCompromise => RevocationReason::CaCompromise,
            RevokeReason::AffiliationChanged => RevocationReason::AffiliationChanged,
            RevokeReason::Superseded => RevocationReason::Superseded,
            RevokeReason::CessationOfOperation => RevocationReason::CessationOfOperation,
            RevokeReason::CertificateHold => RevocationReason::CertificateHold,
            RevokeReason::PrivilegeWithdrawn => RevocationReason::PrivilegeWithdrawn,
        }
    }
}

/// Select certificates for `revoke`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget {
    Serial(String),
    Name(String),
}

impl CaStore {
    /// The current CRL (DER), for the TLS verifier.
    pub fn crl_der(&self) -> Result<CertificateRevocationListDer<'static>, PkiError> {
        let path = self.crl_path();
        let pem = fsutil::read(&path)?;
        CertificateRevocationListDer::from_pem_slice(&pem)
            .map_err(|e| PkiError::invalid(path.display().to_string(), e))
    }

    /// Revoke by serial or by name (every unrevoked certificate of that
    /// name) and write a fresh CRL. Returns the entries revoked.
    pub fn revoke(
        &self,
        target: &RevokeTarget,
        reason: RevokeReason,
    ) -> Result<Vec<IndexEntry>, PkiError> {
        let _lock = self.lock()?;
        let ca = self.load()?;
        let mut index = self.list()?;
        let t = now();
        let mut revoked = Vec::new();
        let mut matched = false;
        for e in index.iter_mut() {
            let hit = match target {
                RevokeTarget::Serial(s) => normalize_serial(&e.serial) == normalize_serial(s),
                RevokeTarget::Name(n) => normalize_name(&e.name) == normalize_name(n),
            };
            if !hit {
                continue;
            }
            matched = true;
            if e.status == CertStatus::Revoked {
                continue;
            }
            e.status = CertStatus::Revoked;
            e.revocation = Some((reason, t));
            revoked.push(e.clone());
        }
        let what = match target {
            RevokeTarget::Serial(s) => format!("serial {s}"),
            RevokeTarget::Name(n) => format!("name {n}"),
        };
        if !matched {
            return Err(PkiError::NotFound(what));
        }
        if revoked.is_empty() {
            return Err(PkiError::invalid(what, "already revoked"));
        }
        self.save_index(&index)?;
        self.write_crl(&ca, &index)?;
        for e in &revoked {
            tracing::warn!(serial = %e.serial, name = %e.name, reason = reason.as_str(), "certificate revoked");
        }
        Ok(revoked)
    }

    /// Re-sign the CRL (e.g. periodically, before its nextUpdate).
    pub fn refresh_crl(&self) -> Result<(), PkiError> {
        let _lock = self.lock()?;
        let ca = self.load()?;
        let index = self.list()?;
        self.write_crl(&ca, &index)
    }

    pub(super) fn write_crl(&self, ca: &LoadedCa, index: &[IndexEntry]) -> Result<(), PkiError> {
        let number_path = self.crl_number_path();
        let previous: u64 = match fs::read_to_string(&number_path) {
            Ok(s) => s.trim().parse().map_err(|_| {
                PkiError::invalid(number_path.display().to_string(), "not a number")
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_err(&number_path)(e)),
        };
        let number = previous.saturating_add(1);
        let mut revoked_certs = Vec::new();
        for e in index.iter().filter(|e| e.status == CertStatus::Revoked) {
            let Some((reason, at)) = e.revocation else {
                continue;
            };
            let serial = hex_decode(&e.serial).ok_or_else(|| {
                PkiError::invalid(
                    self.index_path().display().to_string(),
                    format!("bad serial {}", e.serial),
                )
            })?;
            revoked_certs.push(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: at,
                reason_code: Some(reason.to_rcgen()),
                invalidity_date: None,
            });
        }
        let t = now();
        let params = CertificateRevocationListParams {
            this_update: t,
            next_update: t + Duration::days(CRL_VALIDITY_DAYS),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&ca.issuer)
            .map_err(|e| PkiError::rcgen("signing the CRL", e))?;
        let pem = crl
            .pem()
            .map_err(|e| PkiError::rcgen("encoding the CRL", e))?;
        fsutil::write_atomic(&self.crl_path(), pem.as_bytes(), PUBLIC)?;
        fsutil::write_atomic(&number_path, format!("{number}\n").as_bytes(), SECRET)
    }
}
