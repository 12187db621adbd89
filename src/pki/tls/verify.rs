//! Who may connect: binding a verified peer certificate to an identity.
//! [`GatewayClientVerifier`] (gateway side: a gateway configured for this
//! site) and the cloud side's peer-name allow list, each after rustls' WebPKI
//! verification; [`cert_identity`] (which name counts) and
//! [`describe_refusal`] (why a handshake was refused, in words).

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, ServerConnection,
    SignatureScheme,
};

use crate::pki::inspect::{parse_cert, san_names, subject_cn};
use crate::pki::normalize_name;

/// A configured gateway: its certificate name (FQDN or IP literal) and site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayIdentity {
    pub name: String,
    pub site: String,
}

/// Why an identity check refused a peer certificate (carried inside
/// `rustls::Error::InvalidCertificate(CertificateError::Other(..))`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{name} belongs to site {site}; this appliance serves site {our_site}")]
    WrongSite {
        name: String,
        site: String,
        our_site: String,
    },
    #[error("no configured gateway named {name}")]
    NotConfigured { name: String },
    #[error("certificate {name} is not an allowed peer name")]
    PeerNotAllowed { name: String },
    #[error("certificate carries no DNS name, IP address or CN")]
    NoName,
    #[error("certificate carries no subjectAltName and CN identities are refused (tls.allow_cn_identity = false)")]
    CnRefused,
    #[error("certificate for {name} is issued by a CA trusted only for another gateway")]
    NotTrustedFor { name: String },
    #[error("certificate could not be parsed")]
    Unparseable,
}

/// A precise, human reason for a handshake refusal (for logs and tests).
pub fn describe_refusal(err: &rustls::Error) -> String {
    use rustls::Error as E;
    match err {
        E::InvalidCertificate(c) => match c {
            CertificateError::Revoked => "certificate revoked".into(),
            CertificateError::UnknownIssuer => "issuer unknown".into(),
            CertificateError::Expired => "expired".into(),
            CertificateError::ExpiredContext { time, not_after } => format!(
                "expired (not after {}, now {})",
                not_after.as_secs(),
                time.as_secs()
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not yet valid".into()
            }
            CertificateError::BadSignature => {
                "issuer unknown (signature does not verify against the trusted CA of that name)"
                    .into()
            }
            CertificateError::Other(OtherError(inner)) => inner.to_string(),
            other => format!("invalid certificate: {other:?}"),
        },
        E::NoCertificatesPresented => "no client certificate presented".into(),
        E::PeerIncompatible(p) => {
            use rustls::PeerIncompatible as P;
            match p {
                // A TLS 1.0/1.1 ClientHello has no signature_algorithms
                // extension (RFC 5246 §7.4.1.4.1 introduced it).
                P::SignatureAlgorithmsExtensionRequired | P::Tls12NotOffered => {
                    "incompatible peer: protocol older than TLS 1.2 (TLS 1.2 is the minimum)".into()
                }
                P::NoCipherSuitesInCommon => {
                    "incompatible peer: no cipher suite in common (TLS 1.2 needs an ECDHE AES-GCM suite; CBC suites are not offered)".into()
                }
                other => format!("incompatible peer: {other:?}"),
            }
        }
        other => other.to_string(),
    }
}

fn refuse(r: Refusal) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(r))))
}

/// The identity a certificate asserts, as used for gateway binding and
/// routing: the first DNS SAN, else the first IP SAN, else the subject CN
/// (RFC 6125 §6.4.4: CN only when there is no SAN at all). One deterministic
/// name keeps [`peer_identity`] equal to what the verifier checked; a device
/// whose first SAN is not its configured name is refused with that name in
/// the reason.
pub fn cert_identity(cert: &CertificateDer<'_>) -> Option<String> {
    identity_of(cert, true).ok()
}

/// [`cert_identity`], with the CN fallback refused when `allow_cn` is false.
pub fn identity_of(cert: &CertificateDer<'_>, allow_cn: bool) -> Result<String, Refusal> {
    let parsed = parse_cert(cert, "certificate").map_err(|_| Refusal::Unparseable)?;
    let (dns, ips) = san_names(&parsed);
    if let Some(d) = dns.first() {
        return Ok(normalize_name(d));
    }
    if let Some(ip) = ips.first() {
        return Ok(ip.to_string());
    }
    if !allow_cn {
        return Err(Refusal::CnRefused);
    }
    subject_cn(&parsed)
        .map(|cn| normalize_name(&cn))
        .ok_or(Refusal::NoName)
}

/// Every name a certificate asserts: its DNS and IP SANs, or its CN when it has no SAN at
/// all (and `allow_cn`).
pub fn cert_names(cert: &CertificateDer<'_>, allow_cn: bool) -> Result<Vec<String>, Refusal> {
    let parsed = parse_cert(cert, "certificate").map_err(|_| Refusal::Unparseable)?;
    let (dns, ips) = san_names(&parsed);
    let mut names: Vec<String> = dns.iter().map(|d| normalize_name(d)).collect();
    names.extend(ips.iter().map(|i| i.to_string()));
    if !names.is_empty() {
        return Ok(names);
    }
    if !allow_cn {
        return Err(Refusal::CnRefused);
    }
    subject_cn(&parsed)
        .map(|cn| vec![normalize_name(&cn)])
        .ok_or(Refusal::NoName)
}

/// A chain refused for want of a trusted issuer (unknown issuer, or an anchor of that name
/// whose signature does not verify): another set of anchors may still vouch for it.
pub(super) fn issuer_error(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature
        )
    )
}

pub(super) fn same_name(configured: &str, presented: &str) -> bool {
    match (
        IpAddr::from_str(configured.trim()),
        IpAddr::from_str(presented.trim()),
    ) {
        (Ok(a), Ok(b)) => a == b,
        (Err(_), Err(_)) => normalize_name(configured) == normalize_name(presented),
        _ => false,
    }
}

/// The verified gateway name of an established gateway-side connection (the
/// identity of the peer's leaf certificate, see [`cert_identity`]).
pub fn peer_identity(conn: &ServerConnection) -> Option<String> {
    conn.peer_certificates()
        .and_then(|c| c.first())
        .and_then(cert_identity)
}

/// WebPKI verification, then identity binding to a gateway of our site.
///
/// Trust is scoped: `inner` holds the anchors that may vouch for any gateway (our root and
/// `tls.trust`); a gateway's own `trust` files (its vendor's CA) are in `scoped` under that
/// gateway's name and vouch for that gateway only, so a certificate from gw1's vendor CA that
/// names gw2 is refused.
#[derive(Debug)]
pub struct GatewayClientVerifier {
    pub(super) inner: Arc<dyn ClientCertVerifier>,
    pub(super) scoped: Vec<(String, Arc<dyn ClientCertVerifier>)>,
    pub(super) hints: Vec<DistinguishedName>,
    pub(super) gateways: Vec<GatewayIdentity>,
    pub(super) our_site: String,
    pub(super) allow_cn: bool,
}

impl GatewayClientVerifier {
    /// The gateway (configured name) a certificate identifies, or why not.
    pub fn check_identity(&self, cert: &CertificateDer<'_>) -> Result<String, Refusal> {
        let id = identity_of(cert, self.allow_cn)?;
        let mut other_site = None;
        for g in self.gateways.iter().filter(|g| same_name(&g.name, &id)) {
            if g.site == self.our_site {
                return Ok(id);
            }
            other_site.get_or_insert_with(|| g.site.clone());
        }
        match other_site {
            Some(site) => Err(Refusal::WrongSite {
                name: id,
                site,
                our_site: self.our_site.clone(),
            }),
            None => Err(Refusal::NotConfigured { name: id }),
        }
    }

    /// The whole check, as in the handshake: a chain to the common anchors, or to the anchors
    /// of the very gateway the certificate names; then the name binding.
    pub fn verify_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<String, rustls::Error> {
        match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Ok(_) => self.check_identity(end_entity).map_err(refuse),
            Err(e) if issuer_error(&e) && !self.scoped.is_empty() => {
                let name = self.check_identity(end_entity).map_err(|_| e.clone())?;
                let own = self
                    .scoped
                    .iter()
                    .filter(|(n, _)| same_name(n, &name))
                    .map(|(_, v)| v.verify_client_cert(end_entity, intermediates, now));
                let mut last = e;
                for r in own {
                    match r {
                        Ok(_) => return Ok(name),
                        Err(e2) if issuer_error(&e2) => last = e2,
                        Err(e2) => return Err(e2),
                    }
                }
                // Another gateway's CA vouches for it: say so, it is an attack or a mix-up.
                let foreign = self.scoped.iter().any(|(n, v)| {
                    !same_name(n, &name)
                        && v.verify_client_cert(end_entity, intermediates, now).is_ok()
                });
                if foreign {
                    return Err(refuse(Refusal::NotTrustedFor { name }));
                }
                Err(last)
            }
            Err(e) => Err(e),
        }
    }
}

impl ClientCertVerifier for GatewayClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let presented = cert_identity(end_entity).unwrap_or_else(|| "?".into());
        match self.verify_chain(end_entity, intermediates, now) {
            Ok(name) => {
                tracing::debug!(gateway = %name, "gateway certificate accepted");
                Ok(ClientCertVerified::assertion())
            }
            Err(e) => {
                tracing::warn!(peer = %presented, reason = %describe_refusal(&e), "gateway certificate refused");
                Err(e)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Cloud-side client verification: WebPKI against the cloud side's anchors only (our root
/// and `tls.trust`, never a gateway's CA), then (when the list is not empty) one of the
/// certificate's names (SANs; the CN only without any SAN, and only when allowed) must be one
/// of `allowed`.
#[derive(Debug)]
pub struct PeerNameVerifier {
    pub(super) inner: Arc<dyn ClientCertVerifier>,
    pub(super) allowed: Vec<String>,
    pub(super) allow_cn: bool,
}

impl PeerNameVerifier {
    /// The whole check, as in the handshake.
    pub fn verify_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = cert_names(end_entity, self.allow_cn).map_err(refuse)?;
        if self.allowed.is_empty()
            || names
                .iter()
                .any(|n| self.allowed.iter().any(|a| same_name(a, n)))
        {
            return Ok(());
        }
        Err(refuse(Refusal::PeerNotAllowed {
            name: names.first().cloned().unwrap_or_default(),
        }))
    }
}

impl ClientCertVerifier for PeerNameVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        true
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.verify_chain(end_entity, intermediates, now) {
            Ok(()) => Ok(ClientCertVerified::assertion()),
            Err(e) => {
                tracing::warn!(reason = %describe_refusal(&e), "cloud peer certificate refused");
                Err(e)
            }
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_compare_as_ip_or_dns() {
        assert!(same_name("GW1.lab.example.", "gw1.lab.example"));
        assert!(same_name("10.0.0.1", "10.0.0.1"));
        assert!(same_name("fd00::1", "fd00:0::1"));
        assert!(!same_name("10.0.0.1", "gw1.lab.example"));
        assert!(!same_name("gw1.lab.example", "gw2.lab.example"));
    }

    #[test]
    fn refusal_texts() {
        let r = refuse(Refusal::WrongSite {
            name: "gw1.remote.example".into(),
            site: "remote".into(),
            our_site: "lab".into(),
        });
        assert_eq!(
            describe_refusal(&r),
            "gw1.remote.example belongs to site remote; this appliance serves site lab"
        );
        assert_eq!(
            describe_refusal(&rustls::Error::InvalidCertificate(
                CertificateError::Revoked
            )),
            "certificate revoked"
        );
        assert_eq!(
            describe_refusal(&rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            )),
            "issuer unknown"
        );
    }
}
