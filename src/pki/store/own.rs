//! The appliance's own certificates (gateway side and cloud side), issued
//! at start when the configuration names none and kept while they still fit;
//! `sipedge check` applies the cloud-edge rules to the result.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use time::Duration;

use super::index::Origin;
use super::issue::{file_stem_for, validate_name, IssuedCert, LeafSpec};
use super::{check_days, now, CaStore, BACKDATE};
use crate::pki::fsutil;
use crate::pki::{normalize_name, PkiError};

/// Inputs for [`appliance_certs`].
#[derive(Debug, Clone)]
pub struct ApplianceCertRequest {
    /// Gateway-facing (mediation) FQDN.
    pub mediation_fqdn: String,
    /// Cloud-facing access edge FQDN (subject CN of the cloud-side cert).
    pub access_edge_fqdn: String,
    /// SIP domains; each yields a `sip.<domain>` SAN on the cloud side.
    pub sip_domains: Vec<String>,
    pub out_dir: PathBuf,
    pub days: u32,
}

/// Both appliance certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplianceCerts {
    pub gateway_side: IssuedCert,
    pub cloud_side: IssuedCert,
    /// Whether each was newly issued (false: an existing, still suitable
    /// certificate was kept).
    pub issued_gateway_side: bool,
    pub issued_cloud_side: bool,
}

/// Issue the appliance's own certificates when the configuration names none:
/// the gateway side for the mediation FQDN, the cloud side with subject CN =
/// access edge FQDN and SANs = access edge FQDN + `sip.<domain>` per SIP
/// domain. Idempotent: existing files that still fit (same names, more than
/// 30 days left, key present) are kept.
pub fn appliance_certs(
    store: &CaStore,
    req: &ApplianceCertRequest,
) -> Result<ApplianceCerts, PkiError> {
    check_days(req.days, "appliance certificate days")?;
    let mediation = validate_name(&req.mediation_fqdn)?;
    let edge = validate_name(&req.access_edge_fqdn)?;
    let mut cloud_dns = vec![edge.clone()];
    for d in &req.sip_domains {
        let n = validate_name(&format!("sip.{}", normalize_name(d)))?;
        if !cloud_dns.contains(&n) {
            cloud_dns.push(n);
        }
    }
    let _lock = store.lock()?;
    let ca = store.load()?;
    let mut index = store.list()?;
    let mut one = |cn: &str, dns: Vec<String>| -> Result<(IssuedCert, bool), PkiError> {
        let stem = file_stem_for(cn);
        if let Some(existing) = reusable(&req.out_dir, &stem, cn, &dns, ca.cert_der.as_ref())? {
            return Ok((existing, false));
        }
        let t = now();
        let spec = LeafSpec {
            file_stem: stem,
            cn: cn.to_string(),
            dns,
            ips: Vec::new(),
            not_before: t - BACKDATE,
            not_after: t + Duration::days(i64::from(req.days)),
            out_dir: req.out_dir.clone(),
            p12_password: None,
            force: true,
            origin: Origin::Appliance,
        };
        Ok((store.issue_leaf(&ca, spec, None, &mut index)?, true))
    };
    let (gateway_side, issued_gateway_side) = one(&mediation, vec![mediation.clone()])?;
    let (cloud_side, issued_cloud_side) = one(&edge, cloud_dns)?;
    store.save_index(&index)?;
    Ok(ApplianceCerts {
        gateway_side,
        cloud_side,
        issued_gateway_side,
        issued_cloud_side,
    })
}

/// An existing certificate in `out_dir` that still fits.
fn reusable(
    out_dir: &Path,
    stem: &str,
    cn: &str,
    dns: &[String],
    root_der: &[u8],
) -> Result<Option<IssuedCert>, PkiError> {
    let cert_path = out_dir.join(format!("{stem}.crt"));
    let key_path = out_dir.join(format!("{stem}.key"));
    let chain_path = out_dir.join(format!("{stem}.chain.pem"));
    if !(cert_path.exists() && key_path.exists() && chain_path.exists()) {
        return Ok(None);
    }
    let Ok(info) = crate::pki::show_cert(&cert_path, None) else {
        return Ok(None);
    };
    // Issued by the current root (not by a CA replaced with `init --force`).
    let chain = fsutil::read(&chain_path)?;
    let chained_to_root = CertificateDer::pem_slice_iter(&chain)
        .filter_map(Result::ok)
        .any(|c| c.as_ref() == root_der);
    if !chained_to_root {
        return Ok(None);
    }
    let mut want: Vec<String> = dns.to_vec();
    want.sort();
    let mut have: Vec<String> = info
        .sans
        .iter()
        .filter_map(|s| s.strip_prefix("DNS:").map(str::to_string))
        .collect();
    have.sort();
    let fresh = info.not_after - now() > Duration::days(30);
    if info.subject_cn.as_deref() != Some(cn) || want != have || !fresh {
        return Ok(None);
    }
    let p12 = out_dir.join(format!("{stem}.p12"));
    let pass = out_dir.join(format!("{stem}.p12.pass"));
    Ok(Some(IssuedCert {
        serial: info.serial,
        name: cn.to_string(),
        not_after: info.not_after,
        key_path: Some(key_path),
        cert_path,
        chain_path,
        p12_password_path: pass.exists().then_some(pass),
        p12_path: p12.exists().then_some(p12),
    }))
}
