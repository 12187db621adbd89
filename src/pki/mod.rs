//! Root CA for gateway certificates, TLS material and identity-bound mutual TLS.
//!
//! * [`CaStore`] — a small file-backed CA in `<state_dir>/ca/` (root key and
//!   certificate, an index that survives restarts, a CRL) issuing gateway and
//!   appliance certificates, signing CSRs, exporting the root (PEM, DER,
//!   PKCS#7) and revoking/renewing.
//! * [`show_cert`] / [`check_edge_cert`] — inspection and the cloud-edge
//!   certificate rules.
//! * [`tls`] — rustls configurations for both sides, the gateway client
//!   certificate verifier bound to configured gateway identities, and
//!   hot-reloadable server configuration.
//! * [`cli`] — `sipedge ca …` and `sipedge cert show …` (clap derive).
//!
//! The library is independent of the configuration module: callers pass a
//! [`CaStore`] (the state directory) and a [`NamePolicy`].
//!
//! One crypto provider is used throughout: aws-lc-rs (rustls, rcgen and the
//! PKCS#12 code in [`pkcs12`]).

pub mod cli;
pub mod der;
mod fsutil;
mod inspect;
pub mod pkcs12;
pub mod pkcs7;
mod store;
pub mod tls;

use std::path::PathBuf;

pub use cli::{run_ca, run_cert, CaCommand, CertCommand, PkiContext};
pub use inspect::{check_edge_cert, show_cert, show_cert_bytes, CertInfo, Finding, Severity};
pub use store::{
    appliance_certs, ApplianceCertRequest, ApplianceCerts, CaStore, CertStatus, ExportedRoot,
    IndexEntry, IssueRequest, IssuedCert, Origin, Restored, RevokeReason, RevokeTarget,
    MIN_PASSPHRASE,
};

/// Names the CA may issue for without `--force`: the configured gateway names
/// and the appliance's own FQDNs. Matching is ASCII case-insensitive and
/// ignores one trailing dot (RFC 4343, RFC 1034 §3.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamePolicy {
    pub allowed: Vec<String>,
}

impl NamePolicy {
    pub fn new(allowed: impl IntoIterator<Item = impl Into<String>>) -> Self {
        NamePolicy {
            allowed: allowed.into_iter().map(Into::into).collect(),
        }
    }

    /// Is `name` one of the allowed names?
    pub fn permits(&self, name: &str) -> bool {
        let name = normalize_name(name);
        self.allowed.iter().any(|a| normalize_name(a) == name)
    }
}

/// Lower-case, without a trailing dot.
pub(crate) fn normalize_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Key algorithm of a CA or leaf key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    /// RSA 3072 bits, signatures RSA PKCS#1 v1.5 SHA-256 (what every SIP
    /// gateway firmware accepts).
    #[default]
    #[value(name = "rsa3072")]
    Rsa3072,
    /// ECDSA on P-256 with SHA-256.
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
}

impl std::fmt::Display for KeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyType::Rsa3072 => "RSA-3072",
            KeyType::EcdsaP256 => "ECDSA-P256",
        })
    }
}

/// Every failure of the PKI layer; messages name the file or argument.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a CA already exists in {0}; refusing to overwrite it (use --force: the old CA is kept as a timestamped backup)")]
    CaExists(PathBuf),
    #[error("no CA in {0}; run `sipedge ca init` first")]
    NoCa(PathBuf),
    #[error("{0} already exists; use --force to overwrite it")]
    FileExists(PathBuf),
    #[error("name {name:?} is not a configured gateway or one of this appliance's FQDNs (use --force to issue anyway)")]
    NameNotAllowed { name: String },
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("{context}: {source}")]
    Rcgen {
        context: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("{what}: {source}")]
    Pkcs12 {
        what: String,
        #[source]
        source: pkcs12::Pkcs12Error,
    },
    #[error("no certificate matches {0}")]
    NotFound(String),
    #[error("{path} line {line}: {reason}")]
    Index {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("TLS configuration: {0}")]
    Tls(String),
}

impl PkiError {
    pub(crate) fn invalid(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        PkiError::Invalid {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn rcgen(context: impl Into<String>, source: rcgen::Error) -> Self {
        PkiError::Rcgen {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_is_case_and_dot_insensitive() {
        let p = NamePolicy::new(["GW1.lab.example.", "10.0.0.5"]);
        assert!(p.permits("gw1.LAB.example"));
        assert!(p.permits("gw1.lab.example."));
        assert!(p.permits("10.0.0.5"));
        assert!(!p.permits("gw2.lab.example"));
        assert!(!p.permits("lab.example"));
    }
}
