//! When our TLS material runs out: our certificate of each side, the built-in CA's root and
//! the CRL's next update, read from the files the configuration (or the built-in CA) names.
//! `server` re-reads them every minute for `sipedge_certificate_expiry_timestamp_seconds` and
//! the status page; nothing is created here.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::config::{CertSource, Config};
use crate::pki::CaStore;

/// One expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// `gateway_side`, `cloud_side`, `ca` or `crl` (the CRL's next update).
    pub what: &'static str,
    pub file: PathBuf,
    /// The certificate's subject (empty for the CRL).
    pub subject: String,
    /// Seconds since the Unix epoch; `None` with `error` when the file could not be read.
    pub not_after: Option<i64>,
    pub error: Option<String>,
}

impl Expiry {
    /// Whole days from `now` to the expiry (negative once past).
    pub fn days_left(&self, now: SystemTime) -> Option<i64> {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.not_after.map(|t| (t - now).div_euclid(86_400))
    }
}

fn password(file: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(file)
        .map(|t| t.lines().next().unwrap_or_default().to_owned())
        .map_err(|e| format!("{}: {e}", file.display()))
}

fn cert_expiry(what: &'static str, src: &CertSource) -> Expiry {
    let (file, pw) = match src {
        CertSource::Pem { cert, .. } => (cert.clone(), Ok(None)),
        CertSource::Pkcs12 {
            file,
            password_file,
        } => (file.clone(), password(password_file).map(Some)),
    };
    let info =
        pw.and_then(|pw| crate::pki::show_cert(&file, pw.as_deref()).map_err(|e| e.to_string()));
    match info {
        Ok(i) => Expiry {
            what,
            file,
            subject: i.subject,
            not_after: Some(i.not_after.unix_timestamp()),
            error: None,
        },
        Err(e) => Expiry {
            what,
            file,
            subject: String::new(),
            not_after: None,
            error: Some(e),
        },
    }
}

/// The earliest next update of the CRLs in `files`.
fn crl_next_update(files: &[PathBuf]) -> Option<Expiry> {
    let mut best: Option<Expiry> = None;
    for f in files {
        let crls = match crate::pki::tls::load_crls(f) {
            Ok(c) => c,
            Err(e) => {
                return Some(Expiry {
                    what: "crl",
                    file: f.clone(),
                    subject: String::new(),
                    not_after: None,
                    error: Some(e.to_string()),
                })
            }
        };
        for der in &crls {
            let next = x509_parser::parse_x509_crl(der.as_ref())
                .ok()
                .and_then(|(_, c)| c.next_update().map(|t| t.timestamp()));
            if let Some(t) = next {
                if best
                    .as_ref()
                    .and_then(|b| b.not_after)
                    .is_none_or(|b| t < b)
                {
                    best = Some(Expiry {
                        what: "crl",
                        file: f.clone(),
                        subject: String::new(),
                        not_after: Some(t),
                        error: None,
                    });
                }
            }
        }
    }
    best
}

/// Every expiry of the TLS material in use; empty when TLS is not.
pub fn inventory(cfg: &Config) -> Vec<Expiry> {
    if !cfg.uses_tls() {
        return Vec::new();
    }
    let src = crate::transport::tls::planned_sources(cfg);
    let mut v = vec![
        cert_expiry("gateway_side", &src.gateway_side),
        cert_expiry("cloud_side", &src.cloud_side),
    ];
    let store = CaStore::open(&cfg.appliance.state_dir);
    let root = store.root_cert_path();
    if root.exists() {
        v.push(cert_expiry(
            "ca",
            &CertSource::Pem {
                cert: root,
                key: PathBuf::new(),
                chain: None,
            },
        ));
    }
    v.extend(crl_next_update(&src.crl));
    v
}

/// How often `server` re-reads the inventory.
pub const REFRESH: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_material_has_future_expiries_and_missing_files_say_why() {
        let tmp = tempfile::tempdir().unwrap();
        let text = include_str!("../../config/sipedge.toml")
            .replace("state_dir = \"../state\"", "state_dir = \"state\"");
        let path = tmp.path().join("sipedge.toml");
        std::fs::write(&path, &text).unwrap();
        let cfg = Config::load(&path).unwrap();
        // Before `run` issued anything: our certificates are missing, no CA, no CRL.
        let v = inventory(&cfg);
        assert_eq!(v.len(), 2);
        assert!(v.iter().all(|e| e.not_after.is_none() && e.error.is_some()));
        crate::transport::tls::ensure_own_certs(&cfg).unwrap();
        let v = inventory(&cfg);
        let now = SystemTime::now();
        let whats: Vec<&str> = v.iter().map(|e| e.what).collect();
        assert_eq!(whats, ["gateway_side", "cloud_side", "ca", "crl"], "{v:?}");
        for e in &v {
            assert!(e.days_left(now).unwrap() >= 1, "{e:?}");
        }
        assert!(v[1].subject.contains("ap.lab.example"));
    }
}
