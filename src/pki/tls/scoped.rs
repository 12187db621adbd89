//! Trust scoped per peer: which anchors may vouch for whom.
//!
//! * The cloud side (server and outbound client) trusts [`TrustScopes::common`] only: our root
//!   and `tls.trust`. A gateway's vendor CA never vouches for the cloud peer.
//! * The gateway side trusts the common anchors for any gateway of our site, and each
//!   gateway's own `trust` files for that gateway alone ([`GatewayClientVerifier`] inbound,
//!   [`ScopedServerVerifier`] when we connect to a gateway by its name).
//! * CRLs apply on both sides and in both directions; an issuer without a configured CRL is
//!   not refused for lacking one.
//! * Identity comes from the subjectAltName; the CN counts only for a certificate without any
//!   SAN, and not at all when `allow_cn` is false.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::verify::{issuer_error, same_name, PeerNameVerifier};
use super::{tls_err, webpki_verifier, GatewayClientVerifier, GatewayIdentity, TrustAnchors};
use crate::pki::PkiError;

/// The anchors of each scope.
#[derive(Debug, Clone)]
pub struct TrustScopes {
    /// Our root and `tls.trust`: vouch for the cloud peer and for any gateway of our site.
    pub common: TrustAnchors,
    /// A gateway's own CA files, by its configured name: vouch for that gateway only.
    pub gateways: Vec<(String, TrustAnchors)>,
}

/// The gateway-side client verifier with scoped trust.
pub fn gateway_client_verifier(
    scopes: &TrustScopes,
    crls: &[CertificateRevocationListDer<'static>],
    gateways: Vec<GatewayIdentity>,
    our_site: &str,
    allow_cn: bool,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<GatewayClientVerifier>, PkiError> {
    let inner = webpki_verifier(&scopes.common, crls.to_vec(), provider)?;
    let mut hints: Vec<DistinguishedName> = inner.root_hint_subjects().to_vec();
    let mut scoped = Vec::new();
    for (name, anchors) in &scopes.gateways {
        let v = webpki_verifier(anchors, crls.to_vec(), provider)?;
        for h in v.root_hint_subjects() {
            if !hints.iter().any(|x| x.as_ref() == h.as_ref()) {
                hints.push(h.clone());
            }
        }
        scoped.push((name.clone(), v));
    }
    Ok(Arc::new(GatewayClientVerifier {
        inner,
        scoped,
        hints,
        gateways,
        our_site: our_site.to_string(),
        allow_cn,
    }))
}

/// The cloud-side client verifier: the common anchors, the CRLs, the peer's names.
pub fn cloud_client_verifier(
    common: &TrustAnchors,
    crls: &[CertificateRevocationListDer<'static>],
    peer_names: Vec<String>,
    allow_cn: bool,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<PeerNameVerifier>, PkiError> {
    let inner = webpki_verifier(common, crls.to_vec(), provider)?;
    Ok(Arc::new(PeerNameVerifier {
        inner,
        allowed: peer_names,
        allow_cn,
    }))
}

fn webpki_server(
    anchors: &TrustAnchors,
    crls: &[CertificateRevocationListDer<'static>],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, PkiError> {
    let mut b =
        WebPkiServerVerifier::builder_with_provider(anchors.roots.clone(), provider.clone());
    if !crls.is_empty() {
        b = b.with_crls(crls.to_vec()).allow_unknown_revocation_status();
    }
    b.build().map_err(tls_err)
}

/// Verifies the server we connect to: the common anchors for any name, a name's own anchors
/// (a gateway's vendor CA) for that name only. The name checked is the one we connect to
/// (SNI, RFC 5922 §7.2), by the subjectAltName (webpki uses no CN).
#[derive(Debug)]
pub struct ScopedServerVerifier {
    common: Arc<WebPkiServerVerifier>,
    scoped: Vec<(String, Arc<WebPkiServerVerifier>)>,
}

impl ScopedServerVerifier {
    /// `scopes.gateways` empty: the common anchors only (the cloud side).
    pub fn new(
        scopes: &TrustScopes,
        crls: &[CertificateRevocationListDer<'static>],
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<Self>, PkiError> {
        let common = webpki_server(&scopes.common, crls, provider)?;
        let mut scoped = Vec::new();
        for (name, anchors) in &scopes.gateways {
            scoped.push((name.clone(), webpki_server(anchors, crls, provider)?));
        }
        Ok(Arc::new(ScopedServerVerifier { common, scoped }))
    }
}

fn server_name_str(n: &ServerName<'_>) -> String {
    match n {
        ServerName::DnsName(d) => d.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => String::new(),
    }
}

impl ServerCertVerifier for ScopedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let first = self.common.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        match first {
            Err(e) if issuer_error(&e) => {
                let name = server_name_str(server_name);
                let mut last = e;
                for (_, v) in self.scoped.iter().filter(|(n, _)| same_name(n, &name)) {
                    match v.verify_server_cert(
                        end_entity,
                        intermediates,
                        server_name,
                        ocsp_response,
                        now,
                    ) {
                        Ok(ok) => return Ok(ok),
                        Err(e2) if issuer_error(&e2) => last = e2,
                        Err(e2) => return Err(e2),
                    }
                }
                Err(last)
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.common.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.common.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.common.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::tls::{crypto_provider, describe_refusal};
    use crate::pki::{CaStore, IssueRequest, KeyType, NamePolicy};
    use rustls::pki_types::pem::PemObject;

    struct Ca {
        store: CaStore,
        out: std::path::PathBuf,
    }

    impl Ca {
        fn new(dir: &std::path::Path, name: &str) -> Ca {
            let store =
                CaStore::init(dir.join(name).join("state"), KeyType::EcdsaP256, 30, false).unwrap();
            Ca {
                store,
                out: dir.join(name).join("out"),
            }
        }
        fn anchors(&self) -> TrustAnchors {
            TrustAnchors::from_pem_file(&self.store.root_cert_path()).unwrap()
        }
        fn leaf(&self, name: &str) -> CertificateDer<'static> {
            let mut req = IssueRequest::new(name, &self.out);
            req.force = true;
            self.store.issue(&NamePolicy::default(), &req).unwrap();
            CertificateDer::pem_file_iter(self.out.join(format!("{name}.crt")))
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
        }
    }

    fn gw(name: &str) -> GatewayIdentity {
        GatewayIdentity {
            name: name.into(),
            site: "lab".into(),
        }
    }

    #[test]
    fn a_gateways_ca_vouches_for_that_gateway_only() {
        let dir = tempfile::tempdir().unwrap();
        let ours = Ca::new(dir.path(), "ours");
        let vendor = Ca::new(dir.path(), "vendor");
        let scopes = TrustScopes {
            common: ours.anchors(),
            gateways: vec![("gw1.lab.example".into(), vendor.anchors())],
        };
        let p = crypto_provider(true);
        let v = gateway_client_verifier(
            &scopes,
            &[],
            vec![gw("gw1.lab.example"), gw("gw2.lab.example")],
            "lab",
            true,
            &p,
        )
        .unwrap();
        let now = UnixTime::now();
        assert_eq!(
            v.verify_chain(&vendor.leaf("gw1.lab.example"), &[], now)
                .unwrap(),
            "gw1.lab.example"
        );
        assert_eq!(
            v.verify_chain(&ours.leaf("gw2.lab.example"), &[], now)
                .unwrap(),
            "gw2.lab.example"
        );
        let e = v
            .verify_chain(&vendor.leaf("gw2.lab.example"), &[], now)
            .unwrap_err();
        assert_eq!(
            describe_refusal(&e),
            "certificate for gw2.lab.example is issued by a CA trusted only for another gateway"
        );
        // The hints name both CAs.
        assert_eq!(v.hints.len(), 2);

        // The cloud side: the vendor CA cannot vouch for the cloud peer, inbound or outbound.
        let cloud = cloud_client_verifier(
            &scopes.common,
            &[],
            vec!["sip.cloud.lab.example".into()],
            true,
            &p,
        )
        .unwrap();
        let forged = vendor.leaf("sip.cloud.lab.example");
        assert!(cloud.verify_chain(&forged, &[], now).is_err());
        assert!(cloud
            .verify_chain(&ours.leaf("sip.cloud.lab.example"), &[], now)
            .is_ok());
        let out_cloud = ScopedServerVerifier::new(
            &TrustScopes {
                common: scopes.common.clone(),
                gateways: Vec::new(),
            },
            &[],
            &p,
        )
        .unwrap();
        let sn = ServerName::try_from("sip.cloud.lab.example").unwrap();
        assert!(out_cloud
            .verify_server_cert(&forged, &[], &sn, &[], now)
            .is_err());
        // Outbound to a gateway: its own CA for its own name only.
        let out_gw = ScopedServerVerifier::new(&scopes, &[], &p).unwrap();
        let gw1 = ServerName::try_from("gw1.lab.example").unwrap();
        let gw2 = ServerName::try_from("gw2.lab.example").unwrap();
        assert!(out_gw
            .verify_server_cert(&vendor.leaf("gw1.lab.example"), &[], &gw1, &[], now)
            .is_ok());
        assert!(out_gw
            .verify_server_cert(&vendor.leaf("gw2.lab.example"), &[], &gw2, &[], now)
            .is_err());
    }
}
