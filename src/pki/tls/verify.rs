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
/// (RFC 6125 §6.4.4: CN only when there is no SAN). One deterministic name
/// keeps [`peer_identity`] equal to what the verifier checked; a device whose
/// first SAN is not its configured name is refused with that name in the
/// reason.
pub fn cert_identity(cert: &CertificateDer<'_>) -> Option<String> {
    let parsed = parse_cert(cert, "certificate").ok()?;
    let (dns, ips) = san_names(&parsed);
    if let Some(d) = dns.first() {
        return Some(normalize_name(d));
    }
    if let Some(ip) = ips.first() {
        return Some(ip.to_string());
    }
    subject_cn(&parsed).map(|cn| normalize_name(&cn))
}

fn same_name(configured: &str, presented: &str) -> bool {
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
#[derive(Debug)]
pub struct GatewayClientVerifier {
    pub(super) inner: Arc<dyn ClientCertVerifier>,
    pub(super) gateways: Vec<GatewayIdentity>,
    pub(super) our_site: String,
}

impl GatewayClientVerifier {
    /// The gateway (configured name) a certificate identifies, or why not.
    pub fn check_identity(&self, cert: &CertificateDer<'_>) -> Result<String, Refusal> {
        if parse_cert(cert, "certificate").is_err() {
            return Err(Refusal::Unparseable);
        }
        let id = cert_identity(cert).ok_or(Refusal::NoName)?;
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
}

impl ClientCertVerifier for GatewayClientVerifier {
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
        let presented = cert_identity(end_entity).unwrap_or_else(|| "?".into());
        if let Err(e) = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            tracing::warn!(peer = %presented, reason = %describe_refusal(&e), "gateway certificate refused");
            return Err(e);
        }
        match self.check_identity(end_entity) {
            Ok(name) => {
                tracing::debug!(gateway = %name, "gateway certificate accepted");
                Ok(ClientCertVerified::assertion())
            }
            Err(r) => {
                tracing::warn!(peer = %presented, reason = %r, "gateway certificate refused");
                Err(refuse(r))
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

/// Cloud-side client verification: WebPKI, then (when the list is not
/// empty) the certificate identity must be one of `allowed`.
#[derive(Debug)]
pub(super) struct PeerNameVerifier {
    pub(super) inner: Arc<dyn ClientCertVerifier>,
    pub(super) allowed: Vec<String>,
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
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(
                |e| tracing::warn!(reason = %describe_refusal(e), "cloud peer certificate refused"),
            )?;
        if self.allowed.is_empty() {
            return Ok(verified);
        }
        let parsed =
            parse_cert(end_entity, "certificate").map_err(|_| refuse(Refusal::Unparseable))?;
        let (dns, _) = san_names(&parsed);
        let names: Vec<String> = if dns.is_empty() {
            subject_cn(&parsed).into_iter().collect()
        } else {
            dns
        };
        if names
            .iter()
            .any(|n| self.allowed.iter().any(|a| same_name(a, n)))
        {
            return Ok(verified);
        }
        let r = Refusal::PeerNotAllowed {
            name: names.first().cloned().unwrap_or_default(),
        };
        tracing::warn!(reason = %r, "cloud peer certificate refused");
        Err(refuse(r))
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
