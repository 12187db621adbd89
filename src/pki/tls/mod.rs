//! TLS material and identity-bound verification.
//!
//! * Gateway side: mutual TLS is mandatory. [`GatewayClientVerifier`] runs
//!   rustls' WebPKI client verifier (chain to our trust anchors, validity,
//!   CRLs) and then binds the certificate to a gateway configured *for this
//!   appliance's site* (see [`cert_identity`] for which name is used).
//! * Cloud side: server config with an optional client-name allow list, and a
//!   client config presenting our certificate, verifying the peer's
//!   certificate against the FQDN the caller connects to (pass
//!   [`server_name`] to `TlsConnector::connect`).
//! * [`ReloadableTls`]: hot-swappable server config; a broken file keeps the
//!   old config.
//!
//! Protocol policy (all configs): TLS 1.2 minimum, TLS 1.3 preferred
//! (rustls negotiates 1.3 whenever the peer offers it). TLS 1.2 suites are
//! limited to ECDHE-RSA-AES256-GCM-SHA384 and ECDHE-RSA-AES128-GCM-SHA256,
//! plus ECDHE-ECDSA-AES256/128-GCM when our key is ECDSA. The CBC suites some
//! SIP trunk specifications list (ECDHE-RSA-AES256-SHA384 /
//! ECDHE-RSA-AES128-SHA256) do not exist in rustls, which implements no CBC
//! suite at all; peers must offer a GCM suite or TLS 1.3.
//!
//! The identity binding itself lives in [`verify`] (re-exported here).

mod scoped;
mod verify;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::aws_lc_rs::cipher_suite as cs;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::inspect::parse_cert;
use super::{fsutil, normalize_name, PkiError};
pub use scoped::{
    cloud_client_verifier, gateway_client_verifier, ScopedServerVerifier, TrustScopes,
};
pub use verify::{
    cert_identity, cert_names, describe_refusal, identity_of, peer_identity, GatewayClientVerifier,
    GatewayIdentity, PeerNameVerifier, Refusal,
};

/// Our certificate chain (leaf first) and private key.
#[derive(Debug)]
pub struct TlsMaterial {
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        TlsMaterial {
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Every CRL (PEM) in a file.
pub fn load_crls(
    path: &std::path::Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, PkiError> {
    let data = fsutil::read(path)?;
    CertificateRevocationListDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::invalid(path.display().to_string(), format!("bad CRL PEM: {e}")))
}

/// Every certificate (PEM) in a file; at least one.
pub fn load_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    pem_certs(path)
}

fn pem_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let data = fsutil::read(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| PkiError::invalid(path.display().to_string(), format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(PkiError::invalid(
            path.display().to_string(),
            "no CERTIFICATE in the file",
        ));
    }
    Ok(certs)
}

impl TlsMaterial {
    /// Load a PEM certificate file (leaf first; may already hold the chain),
    /// a PEM private key (PKCS#8, PKCS#1 or SEC1) and optionally a PEM chain
    /// file whose certificates are appended when not already present.
    pub fn from_pem_files(
        cert: &std::path::Path,
        key: &std::path::Path,
        chain: Option<&std::path::Path>,
    ) -> Result<Self, PkiError> {
        let mut cert_chain = pem_certs(cert)?;
        if let Some(chain) = chain {
            for c in pem_certs(chain)? {
                if !cert_chain.contains(&c) {
                    cert_chain.push(c);
                }
            }
        }
        let key_data = fsutil::read(key)?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_data).map_err(|e| {
            PkiError::invalid(
                key.display().to_string(),
                format!("no usable private key: {e}"),
            )
        })?;
        let material = TlsMaterial {
            cert_chain,
            key: key_der,
        };
        material.check_key_matches().map_err(|reason| {
            PkiError::invalid(format!("{} / {}", cert.display(), key.display()), reason)
        })?;
        Ok(material)
    }

    /// Load a PKCS#12 bundle (key + chain) whose password is the first line of
    /// `password_file`.
    pub fn from_pkcs12_file(
        file: &std::path::Path,
        password_file: &std::path::Path,
    ) -> Result<Self, PkiError> {
        let password = fsutil::read_string(password_file)?;
        let password = password.lines().next().unwrap_or("").trim_end_matches('\r');
        let data = fsutil::read(file)?;
        let contents =
            super::pkcs12::decode(&data, password).map_err(|source| PkiError::Pkcs12 {
                what: file.display().to_string(),
                source,
            })?;
        let key = contents.key_pkcs8.ok_or_else(|| {
            PkiError::invalid(
                file.display().to_string(),
                "the bundle holds no private key",
            )
        })?;
        if contents.certs.is_empty() {
            return Err(PkiError::invalid(
                file.display().to_string(),
                "the bundle holds no certificate",
            ));
        }
        let material = TlsMaterial {
            cert_chain: contents
                .certs
                .into_iter()
                .map(CertificateDer::from)
                .collect(),
            key: PrivateKeyDer::Pkcs8(key.into()),
        };
        material
            .check_key_matches()
            .map_err(|reason| PkiError::invalid(file.display().to_string(), reason))?;
        Ok(material)
    }

    fn signing_key(&self) -> Result<Arc<dyn rustls::sign::SigningKey>, PkiError> {
        rustls::crypto::aws_lc_rs::sign::any_supported_type(&self.key)
            .map_err(|e| PkiError::Tls(format!("unusable private key: {e}")))
    }

    /// Is the key ECDSA (enables the ECDHE-ECDSA TLS 1.2 suites)?
    pub fn key_is_ecdsa(&self) -> bool {
        self.signing_key()
            .map(|k| k.algorithm() == rustls::SignatureAlgorithm::ECDSA)
            .unwrap_or(false)
    }

    fn check_key_matches(&self) -> Result<(), String> {
        let leaf = self.cert_chain.first().ok_or("no certificate")?;
        let signer = self.signing_key().map_err(|e| e.to_string())?;
        let cert = parse_cert(leaf, "certificate").map_err(|e| e.to_string())?;
        match signer.public_key() {
            Some(spki) if spki.as_ref() != cert.public_key().raw => {
                Err("the private key does not match the certificate".into())
            }
            _ => Ok(()),
        }
    }
}

/// Trust anchors for verifying peers.
#[derive(Debug, Clone)]
pub struct TrustAnchors {
    roots: Arc<RootCertStore>,
}

impl TrustAnchors {
    pub fn from_certs(
        certs: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<Self, PkiError> {
        let mut roots = RootCertStore::empty();
        for c in certs {
            roots
                .add(c)
                .map_err(|e| PkiError::Tls(format!("unusable trust anchor: {e}")))?;
        }
        if roots.is_empty() {
            return Err(PkiError::Tls("no trust anchors".into()));
        }
        Ok(TrustAnchors {
            roots: Arc::new(roots),
        })
    }

    pub fn from_pem_file(path: &std::path::Path) -> Result<Self, PkiError> {
        Self::from_certs(pem_certs(path)?)
            .map_err(|e| PkiError::invalid(path.display().to_string(), e))
    }
}
/// aws-lc-rs with our suite policy (see the module documentation).
pub fn crypto_provider(ecdsa_key: bool) -> Arc<CryptoProvider> {
    let mut suites = vec![
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    if ecdsa_key {
        suites.push(cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384);
        suites.push(cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256);
    }
    suites.push(cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384);
    suites.push(cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256);
    Arc::new(CryptoProvider {
        cipher_suites: suites,
        ..rustls::crypto::aws_lc_rs::default_provider()
    })
}

/// TLS 1.3 first, TLS 1.2 as the minimum.
pub static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn tls_err(e: impl fmt::Display) -> PkiError {
    PkiError::Tls(e.to_string())
}

fn webpki_verifier(
    trust: &TrustAnchors,
    crls: Vec<CertificateRevocationListDer<'static>>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, PkiError> {
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(trust.roots.clone(), provider.clone());
    if !crls.is_empty() {
        // Revocation is enforced for issuers whose CRL is configured; other
        // issuers (a vendor CA without a CRL) are not refused for lacking one.
        builder = builder.with_crls(crls).allow_unknown_revocation_status();
    }
    builder.build().map_err(tls_err)
}

/// A server configuration with `verifier` deciding on client certificates.
pub fn server_config(
    material: TlsMaterial,
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ClientCertVerifier>,
) -> Result<Arc<ServerConfig>, PkiError> {
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(material.cert_chain, material.key)
        .map_err(tls_err)?;
    // No session resumption: every connection runs the full client
    // certificate verification (CRL, identity binding), so a revocation or a
    // reconfigured gateway takes effect on the next connect. SIP flows are
    // long-lived (RFC 5923 connection reuse), so resumption would save
    // little.
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok(Arc::new(cfg))
}

/// The gateway-facing server: client certificate REQUIRED, chained to
/// `trust`, not revoked by `crls`, and naming a gateway configured for
/// `our_site`.
pub fn server_config_gateway_side(
    material: TlsMaterial,
    trust: TrustAnchors,
    crls: Vec<CertificateRevocationListDer<'static>>,
    gateways: Vec<GatewayIdentity>,
    our_site: &str,
) -> Result<Arc<ServerConfig>, PkiError> {
    let provider = crypto_provider(material.key_is_ecdsa());
    let scopes = TrustScopes {
        common: trust,
        gateways: Vec::new(),
    };
    let verifier = gateway_client_verifier(&scopes, &crls, gateways, our_site, true, &provider)?;
    server_config(material, provider, verifier)
}

/// The cloud-facing server: client certificate required, chained to `trust`
/// (the cloud's public CAs); when `peer_names` is not empty the peer's
/// certificate must name one of them.
pub fn server_config_cloud_side(
    material: TlsMaterial,
    trust: TrustAnchors,
    peer_names: Vec<String>,
) -> Result<Arc<ServerConfig>, PkiError> {
    let provider = crypto_provider(material.key_is_ecdsa());
    let verifier = cloud_client_verifier(&trust, &[], peer_names, true, &provider)?;
    server_config(material, provider, verifier)
}

/// Outbound connections: our certificate as client certificate; the server
/// certificate is verified against `trust` and the name given to
/// `TlsConnector::connect` (use [`server_name`] with the configured FQDN).
pub fn client_config(
    material: TlsMaterial,
    trust: TrustAnchors,
) -> Result<Arc<ClientConfig>, PkiError> {
    let provider = crypto_provider(material.key_is_ecdsa());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(tls_err)?
        .with_root_certificates(trust.roots.clone())
        .with_client_auth_cert(material.cert_chain, material.key)
        .map_err(tls_err)?;
    Ok(Arc::new(cfg))
}

/// Outbound connections with `verifier` deciding on the server certificate (scoped trust,
/// CRLs: see [`ScopedServerVerifier`]).
pub fn client_config_with(
    material: TlsMaterial,
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
) -> Result<Arc<ClientConfig>, PkiError> {
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(material.cert_chain, material.key)
        .map_err(tls_err)?;
    Ok(Arc::new(cfg))
}

/// A configured FQDN (or IP literal) as the name to verify the server
/// certificate against.
pub fn server_name(fqdn: &str) -> Result<ServerName<'static>, PkiError> {
    ServerName::try_from(normalize_name(fqdn)).map_err(|e| PkiError::InvalidName {
        name: fqdn.to_string(),
        reason: e.to_string(),
    })
}

/// Files behind a gateway-side server config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySideFiles {
    /// Our certificate (PEM; may hold the chain).
    pub cert: PathBuf,
    pub key: PathBuf,
    pub chain: Option<PathBuf>,
    /// Trust anchors for gateway certificates (our root, vendor CAs).
    pub trust: PathBuf,
    /// CRLs (PEM, any number in one file).
    pub crl: Option<PathBuf>,
}

impl GatewaySideFiles {
    /// Build the server config from the files as they are now.
    pub fn build(
        &self,
        gateways: Vec<GatewayIdentity>,
        our_site: &str,
    ) -> Result<Arc<ServerConfig>, PkiError> {
        let material = TlsMaterial::from_pem_files(&self.cert, &self.key, self.chain.as_deref())?;
        let trust = TrustAnchors::from_pem_file(&self.trust)?;
        let crls = match &self.crl {
            Some(p) => {
                let data = fsutil::read(p)?;
                CertificateRevocationListDer::pem_slice_iter(&data)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| {
                        PkiError::invalid(p.display().to_string(), format!("bad CRL PEM: {e}"))
                    })?
            }
            None => Vec::new(),
        };
        server_config_gateway_side(material, trust, crls, gateways, our_site)
    }
}

type Builder = dyn Fn() -> Result<Arc<ServerConfig>, PkiError> + Send + Sync;

/// A server config that can be rebuilt at runtime. Each accepted connection
/// takes [`ReloadableTls::current`] once; established connections keep the
/// config (and certificate) they started with.
pub struct ReloadableTls {
    current: ArcSwap<ServerConfig>,
    build: Box<Builder>,
}

impl fmt::Debug for ReloadableTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableTls").finish_non_exhaustive()
    }
}

impl ReloadableTls {
    /// Build once now (errors are returned) and keep `build` for reloads.
    pub fn new(
        build: impl Fn() -> Result<Arc<ServerConfig>, PkiError> + Send + Sync + 'static,
    ) -> Result<Self, PkiError> {
        let first = build()?;
        Ok(ReloadableTls {
            current: ArcSwap::new(first),
            build: Box::new(build),
        })
    }

    /// The gateway side, rebuilt from `files` on every reload.
    pub fn gateway_side(
        files: GatewaySideFiles,
        gateways: Vec<GatewayIdentity>,
        our_site: String,
    ) -> Result<Self, PkiError> {
        Self::new(move || files.build(gateways.clone(), &our_site))
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current())
    }

    /// Rebuild; on error the previous config stays in service.
    pub fn reload(&self) -> Result<(), PkiError> {
        match (self.build)() {
            Ok(cfg) => {
                self.current.store(cfg);
                tracing::info!("TLS configuration reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS reload failed; keeping the previous configuration");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_policy() {
        let rsa = crypto_provider(false);
        let names: Vec<String> = rsa
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert!(names
            .iter()
            .all(|n| !n.contains("CBC") && !n.contains("ECDSA")));
        assert!(names.contains(&"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".to_string()));
        assert!(names.contains(&"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_string()));
        assert!(!names
            .iter()
            .any(|n| n.contains("CHACHA20") && n.contains("ECDHE")));
        let ec = crypto_provider(true);
        assert_eq!(ec.cipher_suites.len(), rsa.cipher_suites.len() + 2);
        // TLS 1.3 suites come first.
        assert!(names.first().is_some_and(|n| n.starts_with("TLS13")));
    }
}
