//! TLS for the transports: our certificates (issued from the built-in CA at start when the
//! configuration names none), the four rustls configurations (server and client, per side),
//! their atomic reload, handshake limits, and the verified peer identity carried by each flow.
//!
//! * Gateway side server: [`pki::tls::server_config_gateway_side`] — a client certificate is
//!   required, chained to our trust anchors, not revoked, and naming a gateway of our site or
//!   another site's mediation server (an appliance handing over calls; the site CA goes in
//!   `tls.trust`); the verifier decides inside the handshake, so a refused peer gets a TLS
//!   alert.
//! * Cloud side server: [`pki::tls::server_config_cloud_side`] — mutual TLS, the peer's
//!   certificate must carry one of `tls.cloud_peer_names`.
//! * Clients (outbound to gateways and to the cloud peer): our certificate of that side as the
//!   client certificate, SNI = the configured FQDN of the target, whose certificate is verified
//!   against that name (RFC 5922 §7.2, RFC 6125).
//!
//! [`TlsContext`] keeps all four in one `ArcSwap`: a reload (SIGHUP, or a changed file seen by
//! the 2 s poll) builds a complete new set and swaps it; a broken file keeps the old set and
//! logs why. Established connections keep the configuration they were made with.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, ServerConfig};
use tokio::sync::watch;

use super::handshake::HandshakeSlots;
use tracing::{error, info, warn};

use crate::config::{CertSource, Config, HostName, Side};
use crate::pki::tls::{
    client_config_with, cloud_client_verifier, crypto_provider, gateway_client_verifier,
    load_certs, load_crls, server_config, GatewayClientVerifier, GatewayIdentity, PeerNameVerifier,
    ScopedServerVerifier, TlsMaterial, TrustAnchors, TrustScopes,
};
use crate::pki::{
    appliance_certs, check_edge_cert, ApplianceCertRequest, CaStore, Finding, KeyType, PkiError,
    Severity,
};

/// The files behind the TLS configuration, with the built-in CA's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSources {
    pub gateway_side: CertSource,
    pub cloud_side: CertSource,
    /// Trust anchors of every scope: the built-in CA's root (when it exists) and `tls.trust`.
    pub trust: Vec<PathBuf>,
    /// A gateway's own CA files (its vendor's), by its configured name: they vouch for that
    /// gateway only.
    pub gateway_trust: Vec<(String, Vec<PathBuf>)>,
    /// CRLs: `tls.crl`, else the built-in CA's CRL (when it exists).
    pub crl: Vec<PathBuf>,
}

impl TlsSources {
    /// Every file whose change triggers a reload.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut v = self.gateway_side.files();
        v.extend(self.cloud_side.files());
        v.extend(self.trust.iter().cloned());
        for (_, files) in &self.gateway_trust {
            v.extend(files.iter().cloned());
        }
        v.extend(self.crl.iter().cloned());
        v.sort();
        v.dedup();
        v
    }
}

/// Where the appliance's own certificates are issued to.
pub fn own_cert_dir(cfg: &Config) -> PathBuf {
    cfg.appliance.state_dir.join("certs")
}

fn own_source(dir: &std::path::Path, fqdn: &str) -> CertSource {
    let stem = fqdn.replace(':', "_");
    CertSource::Pem {
        cert: dir.join(format!("{stem}.chain.pem")),
        key: dir.join(format!("{stem}.key")),
        chain: None,
    }
}

/// The sources as the configuration names them, with the built-in CA's defaults for what it
/// leaves out. Creates nothing (for `sipedge check`).
pub fn planned_sources(cfg: &Config) -> TlsSources {
    let store = CaStore::open(&cfg.appliance.state_dir);
    let dir = own_cert_dir(cfg);
    let gateway_side = cfg
        .tls
        .gateway_side
        .clone()
        .unwrap_or_else(|| own_source(&dir, cfg.appliance.mediation_fqdn.as_str()));
    let cloud_side = cfg
        .tls
        .cloud_side
        .clone()
        .unwrap_or_else(|| own_source(&dir, cfg.appliance.access_edge_fqdn.as_str()));
    let mut trust = Vec::new();
    if store.root_cert_path().exists() {
        trust.push(store.root_cert_path());
    }
    trust.extend(cfg.tls.trust.iter().cloned());
    // CA files configured per gateway (its vendor's CA) vouch for that gateway alone.
    let gateway_trust = cfg
        .gateways
        .iter()
        .filter(|g| !g.trust.is_empty())
        .map(|g| (g.name.to_string(), g.trust.clone()))
        .collect();
    let crl = match &cfg.tls.crl {
        Some(c) => vec![c.clone()],
        None if store.crl_path().exists() => vec![store.crl_path()],
        None => Vec::new(),
    };
    TlsSources {
        gateway_side,
        cloud_side,
        trust,
        gateway_trust,
        crl,
    }
}

/// At start: when the configuration names no certificate for a side, make sure the built-in CA
/// exists (initialise it when absent) and issue ours from it (kept while still suitable).
pub fn ensure_own_certs(cfg: &Config) -> Result<TlsSources, PkiError> {
    if cfg.tls.gateway_side.is_none() || cfg.tls.cloud_side.is_none() {
        let state = &cfg.appliance.state_dir;
        let store = CaStore::open(state);
        let store = if store.is_initialised() {
            store
        } else {
            info!(state_dir = %state.display(), "no CA in the state directory: creating one");
            CaStore::init(state, KeyType::default(), 3650, false)?
        };
        let req = ApplianceCertRequest {
            mediation_fqdn: cfg.appliance.mediation_fqdn.to_string(),
            access_edge_fqdn: cfg.appliance.access_edge_fqdn.to_string(),
            sip_domains: cfg
                .tenant
                .sip_domains
                .iter()
                .map(|d| d.to_string())
                .collect(),
            out_dir: own_cert_dir(cfg),
            days: 365,
        };
        let issued = appliance_certs(&store, &req)?;
        if issued.issued_gateway_side {
            info!(serial = %issued.gateway_side.serial, name = %issued.gateway_side.name, "issued our gateway-side certificate");
        }
        if issued.issued_cloud_side {
            info!(serial = %issued.cloud_side.serial, name = %issued.cloud_side.name, "issued our cloud-side certificate");
        }
    }
    Ok(planned_sources(cfg))
}

fn load_material(src: &CertSource) -> Result<TlsMaterial, PkiError> {
    match src {
        CertSource::Pem { cert, key, chain } => {
            TlsMaterial::from_pem_files(cert, key, chain.as_deref())
        }
        CertSource::Pkcs12 {
            file,
            password_file,
        } => TlsMaterial::from_pkcs12_file(file, password_file),
    }
}

/// What a rebuild needs besides the files.
#[derive(Debug, Clone)]
struct Policy {
    gateways: Vec<GatewayIdentity>,
    site: String,
    cloud_peer_names: Vec<String>,
    allow_cn: bool,
}

impl Policy {
    fn of(cfg: &Config) -> Policy {
        Policy {
            gateways: cfg
                .gateways
                .iter()
                .map(|g| GatewayIdentity {
                    name: g.name.to_string(),
                    site: g.site.clone(),
                })
                // Other sites' mediation servers hand calls over on the gateway side with
                // mutual TLS, their mediation FQDN as identity: admitted like our gateways
                // (the core tells them apart by name).
                .chain(
                    cfg.sites
                        .iter()
                        .filter(|s| s.name != cfg.appliance.site)
                        .flat_map(|s| s.mediation_servers.iter())
                        .map(|m| GatewayIdentity {
                            name: m.fqdn.to_string(),
                            site: cfg.appliance.site.clone(),
                        }),
                )
                .collect(),
            site: cfg.appliance.site.clone(),
            cloud_peer_names: cfg.tls.cloud_peer_names.clone(),
            allow_cn: cfg.tls.allow_cn_identity,
        }
    }
}

/// One complete set of TLS configurations, with the verifiers inside them (kept to re-verify
/// live connections after a reload: a revoked certificate's connection is closed).
#[derive(Debug)]
pub struct TlsConfigs {
    pub gateway_server: Arc<ServerConfig>,
    pub cloud_server: Arc<ServerConfig>,
    pub gateway_client: Arc<ClientConfig>,
    pub cloud_client: Arc<ClientConfig>,
    gateway_verifier: Arc<GatewayClientVerifier>,
    cloud_verifier: Arc<PeerNameVerifier>,
    gateway_server_verifier: Arc<ScopedServerVerifier>,
    cloud_server_verifier: Arc<ScopedServerVerifier>,
}

fn anchors(files: &[PathBuf]) -> Result<TrustAnchors, PkiError> {
    let mut certs: Vec<CertificateDer<'static>> = Vec::new();
    for t in files {
        certs.extend(load_certs(t)?);
    }
    TrustAnchors::from_certs(certs).map_err(|e| PkiError::Tls(format!("trust anchors: {e}")))
}

fn build(src: &TlsSources, policy: &Policy) -> Result<TlsConfigs, PkiError> {
    let gw = load_material(&src.gateway_side)?;
    let cloud = load_material(&src.cloud_side)?;
    let common = anchors(&src.trust)?;
    let mut gateways = Vec::new();
    for (name, files) in &src.gateway_trust {
        gateways.push((name.clone(), anchors(files)?));
    }
    let gw_scopes = TrustScopes {
        common: common.clone(),
        gateways,
    };
    let cloud_scopes = TrustScopes {
        common: common.clone(),
        gateways: Vec::new(),
    };
    let mut crls = Vec::new();
    for c in &src.crl {
        crls.extend(load_crls(c)?);
    }
    let gw_provider = crypto_provider(gw.key_is_ecdsa());
    let cloud_provider = crypto_provider(cloud.key_is_ecdsa());
    let gateway_verifier = gateway_client_verifier(
        &gw_scopes,
        &crls,
        policy.gateways.clone(),
        &policy.site,
        policy.allow_cn,
        &gw_provider,
    )?;
    let cloud_verifier = cloud_client_verifier(
        &common,
        &crls,
        policy.cloud_peer_names.clone(),
        policy.allow_cn,
        &cloud_provider,
    )?;
    let gateway_server_verifier = ScopedServerVerifier::new(&gw_scopes, &crls, &gw_provider)?;
    let cloud_server_verifier = ScopedServerVerifier::new(&cloud_scopes, &crls, &cloud_provider)?;
    Ok(TlsConfigs {
        gateway_server: server_config(gw.clone(), gw_provider.clone(), gateway_verifier.clone())?,
        cloud_server: server_config(
            cloud.clone(),
            cloud_provider.clone(),
            cloud_verifier.clone(),
        )?,
        gateway_client: client_config_with(gw, gw_provider, gateway_server_verifier.clone())?,
        cloud_client: client_config_with(cloud, cloud_provider, cloud_server_verifier.clone())?,
        gateway_verifier,
        cloud_verifier,
        gateway_server_verifier,
        cloud_server_verifier,
    })
}

fn mtimes(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// The live TLS configuration of the appliance, and its handshake limits.
pub struct TlsContext {
    current: ArcSwap<TlsConfigs>,
    sources: TlsSources,
    policy: Policy,
    files: Vec<PathBuf>,
    stamps: Mutex<Vec<Option<SystemTime>>>,
    /// Handshake slots: per side and per source inbound, their own budget outbound.
    pub slots: Arc<HandshakeSlots>,
    pub handshake_timeout: Duration,
    /// Bumped on every successful reload: the transports re-verify live connections.
    generation: watch::Sender<u64>,
    /// Re-sign the built-in CA's CRL (when it is the one in use) and re-read every CRL.
    crl_refresh: Duration,
    own_crl: Option<CaStore>,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsContext")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsContext {
    /// Issues our certificates when needed and builds the first configuration set.
    pub fn start(cfg: &Config) -> Result<Arc<TlsContext>, PkiError> {
        let sources = ensure_own_certs(cfg)?;
        Self::from_sources(cfg, sources)
    }

    pub fn from_sources(cfg: &Config, sources: TlsSources) -> Result<Arc<TlsContext>, PkiError> {
        let policy = Policy::of(cfg);
        let files = sources.files();
        let stamps = mtimes(&files);
        let first = build(&sources, &policy)?;
        Ok(Arc::new(TlsContext {
            current: ArcSwap::from_pointee(first),
            sources,
            policy,
            stamps: Mutex::new(stamps),
            files,
            slots: HandshakeSlots::new(
                cfg.tls.max_handshakes,
                cfg.tls.handshakes_per_source,
                cfg.tls.outbound_handshakes,
            ),
            handshake_timeout: cfg.tls.handshake_timeout,
            generation: watch::channel(0).0,
            crl_refresh: cfg.tls.crl_refresh,
            own_crl: {
                let store = CaStore::open(&cfg.appliance.state_dir);
                (cfg.tls.crl.is_none() && store.is_initialised()).then_some(store)
            },
        }))
    }

    pub fn server(&self, side: Side) -> Arc<ServerConfig> {
        let c = self.current.load();
        match side {
            Side::Gateway => c.gateway_server.clone(),
            Side::Cloud => c.cloud_server.clone(),
        }
    }

    pub fn client(&self, side: Side) -> Arc<ClientConfig> {
        let c = self.current.load();
        match side {
            Side::Gateway => c.gateway_client.clone(),
            Side::Cloud => c.cloud_client.clone(),
        }
    }

    pub fn sources(&self) -> &TlsSources {
        &self.sources
    }

    /// Rebuilds every configuration from the files as they are now and swaps them in at once;
    /// on error the previous set stays in service.
    pub fn reload(&self) -> Result<(), PkiError> {
        if let Ok(mut s) = self.stamps.lock() {
            *s = mtimes(&self.files);
        }
        match build(&self.sources, &self.policy) {
            Ok(set) => {
                self.current.store(Arc::new(set));
                self.generation.send_modify(|g| *g += 1);
                info!("TLS configuration reloaded");
                Ok(())
            }
            Err(e) => {
                error!(error = %e, "TLS reload failed; keeping the previous configuration");
                Err(e)
            }
        }
    }

    /// Changes each time a reload succeeds.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Re-verifies the certificate chain a peer presented on an established connection
    /// against the configuration now in force (CRLs, trust, names): `Err(reason)` when it
    /// would be refused today. `server_name`: the name we connected to, for connections we
    /// opened; `None` for accepted ones.
    pub fn recheck(
        &self,
        side: Side,
        chain: &[CertificateDer<'static>],
        server_name: Option<&str>,
    ) -> Result<(), String> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err("no certificate".into());
        };
        let now = rustls::pki_types::UnixTime::now();
        let c = self.current.load();
        let r = match (server_name, side) {
            (None, Side::Gateway) => c
                .gateway_verifier
                .verify_chain(leaf, intermediates, now)
                .map(|_| ()),
            (None, Side::Cloud) => c.cloud_verifier.verify_chain(leaf, intermediates, now),
            (Some(name), side) => {
                use rustls::client::danger::ServerCertVerifier;
                let sn = crate::pki::tls::server_name(name).map_err(|e| e.to_string())?;
                let v = match side {
                    Side::Gateway => &c.gateway_server_verifier,
                    Side::Cloud => &c.cloud_server_verifier,
                };
                v.verify_server_cert(leaf, intermediates, &sn, &[], now)
                    .map(|_| ())
            }
        };
        r.map_err(|e| crate::pki::tls::describe_refusal(&e))
    }

    /// Has any watched file changed (mtime, appearance, removal) since the last (re)load?
    pub fn files_changed(&self) -> bool {
        let now = mtimes(&self.files);
        self.stamps.lock().map(|s| *s != now).unwrap_or(false)
    }

    /// Reloads on SIGHUP and when a watched file changes (polled every `every`).
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let ctx = self.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hup = signal(SignalKind::hangup()).ok();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut crl_tick = tokio::time::interval_at(
                tokio::time::Instant::now() + ctx.crl_refresh,
                ctx.crl_refresh,
            );
            crl_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let hup_recv = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = hup_recv => {
                        info!("SIGHUP: reloading the TLS configuration");
                        let _ = ctx.reload();
                    }
                    _ = crl_tick.tick() => {
                        ctx.refresh_crls().await;
                    }
                    _ = tick.tick() => {
                        if ctx.files_changed() {
                            // Give a writer replacing several files a moment to finish.
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            info!("a certificate, key, trust or CRL file changed: reloading");
                            let _ = ctx.reload();
                        }
                    }
                }
            }
        });
    }
}

impl TlsContext {
    /// The scheduled CRL refresh: the built-in CA's CRL is re-signed (before its nextUpdate;
    /// the file change reloads), and every configured CRL is re-read (a CRL replaced in place
    /// with the same mtime, a CRL fetched by another tool).
    async fn refresh_crls(self: &Arc<Self>) {
        if let Some(store) = self.own_crl.clone() {
            let r = tokio::task::spawn_blocking(move || store.refresh_crl()).await;
            match r {
                Ok(Ok(())) => info!("CRL re-signed by the built-in CA"),
                Ok(Err(e)) => warn!(error = %e, "CRL refresh failed"),
                Err(e) => warn!(error = %e, "CRL refresh failed"),
            }
        }
        info!("scheduled CRL refresh: reloading");
        let _ = self.reload();
    }
}

/// One result of [`check_certificates`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertCheck {
    /// What was checked: `gateway side (path)`, `cloud side (path)`, `trust`, …
    pub what: String,
    pub finding: Finding,
}

impl std::fmt::Display for CertCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.finding)
    }
}

/// `sipedge check`: our certificates against the rules (subject and SANs, chain present, key
/// matching, validity: error when expired or not yet valid, warning under 30 days), and every
/// TLS file loadable. Certificates the built-in CA will issue at start are not an error.
pub fn check_certificates(cfg: &Config, now: SystemTime) -> Vec<CertCheck> {
    let mut out = Vec::new();
    if !cfg.uses_tls() {
        return out;
    }
    let src = planned_sources(cfg);
    let domains: Vec<String> = cfg
        .tenant
        .sip_domains
        .iter()
        .map(|d| d.to_string())
        .collect();
    let sides = [
        (
            "gateway side",
            &src.gateway_side,
            cfg.tls.gateway_side.is_some(),
            cfg.appliance.mediation_fqdn.as_str(),
            &[][..],
        ),
        (
            "cloud side",
            &src.cloud_side,
            cfg.tls.cloud_side.is_some(),
            cfg.appliance.access_edge_fqdn.as_str(),
            &domains[..],
        ),
    ];
    let mut all_present = true;
    for (side, source, configured, fqdn, doms) in sides {
        let first = source.files().into_iter().next().unwrap_or_default();
        let what = format!("{side} ({})", first.display());
        if !configured && !source.files().iter().all(|f| f.exists()) {
            // Issued from the built-in CA by `sipedge run`.
            all_present = false;
            continue;
        }
        match load_material(source) {
            Ok(m) => {
                let Some(leaf) = m.cert_chain.first() else {
                    continue;
                };
                let chain = m.cert_chain.get(1..).unwrap_or_default();
                for finding in check_edge_cert(leaf, &m.key, chain, fqdn, doms, now) {
                    out.push(CertCheck {
                        what: what.clone(),
                        finding,
                    });
                }
            }
            Err(e) => {
                all_present = false;
                out.push(CertCheck {
                    what,
                    finding: Finding {
                        severity: Severity::Error,
                        text: e.to_string(),
                    },
                });
            }
        }
    }
    if all_present {
        // The whole set must build (trust anchors, CRLs, keys usable by rustls).
        if let Err(e) = build(&src, &Policy::of(cfg)) {
            out.push(CertCheck {
                what: "TLS configuration".into(),
                finding: Finding {
                    severity: Severity::Error,
                    text: e.to_string(),
                },
            });
        }
    } else {
        for t in &cfg.tls.trust {
            if let Err(e) = load_certs(t) {
                out.push(CertCheck {
                    what: "tls.trust".into(),
                    finding: Finding {
                        severity: Severity::Error,
                        text: e.to_string(),
                    },
                });
            }
        }
        if let Some(c) = &cfg.tls.crl {
            if let Err(e) = load_crls(c) {
                out.push(CertCheck {
                    what: "tls.crl".into(),
                    finding: Finding {
                        severity: Severity::Error,
                        text: e.to_string(),
                    },
                });
            }
        }
    }
    out
}

/// The name to present as SNI and verify the server certificate against, for a configured
/// host name.
pub fn sni_name(name: &HostName) -> String {
    name.to_string()
}

/// Logs why an inbound handshake failed, with the verifier's reason when there is one.
pub(crate) fn handshake_failure_reason(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(r) => crate::pki::tls::describe_refusal(r),
        None => e.to_string(),
    }
}

pub(crate) fn log_refusal(side: Side, remote: std::net::SocketAddr, reason: &str) {
    crate::stats::TRANSPORT.tls_refused(
        side,
        crate::stats::HandshakeDirection::Inbound,
        remote,
        reason,
        SystemTime::now(),
    );
    warn!(side = side.as_str(), %remote, %reason, "TLS handshake refused");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab_cfg(state: &std::path::Path) -> Config {
        let text = include_str!("../../config/sipedge.toml").replace(
            "state_dir = \"../state\"",
            &format!("state_dir = \"{}\"", state.display()),
        );
        Config::from_toml(std::path::Path::new("/x/sipedge.toml"), &text).unwrap()
    }

    #[test]
    fn other_sites_mediation_servers_are_admitted_gateway_side_identities() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = lab_cfg(&dir.path().join("state"));
        let p = Policy::of(&cfg);
        let admitted = |n: &str| p.gateways.iter().any(|g| g.name == n && g.site == p.site);
        assert!(admitted("mediation.remote.example"));
        assert!(admitted("gw1.lab.example"));
        assert!(!admitted("mediation.lab.example"), "not our own");
        assert!(
            !admitted("gw1.remote.example"),
            "another site's gateway stays refused"
        );
    }

    #[test]
    fn per_gateway_ca_files_are_scoped_to_their_gateway() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = lab_cfg(&dir.path().join("state"));
        cfg.gateways[1].trust = vec![dir.path().join("vendor-ca.pem")];
        cfg.gateways[0].trust = vec![dir.path().join("vendor-ca.pem")];
        let src = planned_sources(&cfg);
        // Not among the anchors of every scope (the cloud side never trusts them) …
        assert!(!src.trust.iter().any(|t| t.ends_with("vendor-ca.pem")));
        // … but each gateway's own, and watched once.
        assert_eq!(
            src.gateway_trust,
            vec![
                (
                    "gw1.lab.example".to_string(),
                    vec![dir.path().join("vendor-ca.pem")]
                ),
                (
                    "gw2.lab.example".to_string(),
                    vec![dir.path().join("vendor-ca.pem")]
                ),
            ]
        );
        let n = src
            .files()
            .iter()
            .filter(|t| t.ends_with("vendor-ca.pem"))
            .count();
        assert_eq!(n, 1);
    }

    #[test]
    fn own_certs_are_issued_once_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = lab_cfg(&dir.path().join("state"));
        // Before the first start nothing exists: check has nothing to complain about.
        assert!(check_certificates(&cfg, SystemTime::now()).is_empty());
        let src = ensure_own_certs(&cfg).unwrap();
        assert!(src.files().iter().all(|f| f.exists()), "{src:?}");
        assert_eq!(src.trust.len(), 1);
        assert_eq!(src.crl.len(), 1);
        let ctx = TlsContext::from_sources(&cfg, src.clone()).unwrap();
        let before = std::fs::read(src.gateway_side.files()[0].clone()).unwrap();
        // Idempotent: a second start keeps the same certificate.
        let again = ensure_own_certs(&cfg).unwrap();
        assert_eq!(again, src);
        assert_eq!(
            std::fs::read(src.gateway_side.files()[0].clone()).unwrap(),
            before
        );
        assert!(check_certificates(&cfg, SystemTime::now()).is_empty());
        // A year and a bit later the certificates are expired: errors.
        let later = SystemTime::now() + Duration::from_secs(400 * 86_400);
        let f = check_certificates(&cfg, later);
        assert!(
            f.iter().any(|c| c.finding.severity == Severity::Error
                && c.finding.text.contains("expired")
                && c.what.starts_with("cloud side")),
            "{f:?}"
        );
        // Under 30 days left: a warning.
        let soon = SystemTime::now() + Duration::from_secs(350 * 86_400);
        let f = check_certificates(&cfg, soon);
        assert!(
            f.iter().all(|c| c.finding.severity == Severity::Warning),
            "{f:?}"
        );
        assert_eq!(f.len(), 2, "{f:?}");
        // A broken file: the reload keeps the old set.
        let key = src.gateway_side.files()[1].clone();
        let good = std::fs::read(&key).unwrap();
        std::fs::write(&key, b"garbage").unwrap();
        let old = ctx.server(Side::Gateway);
        assert!(ctx.reload().is_err());
        assert!(Arc::ptr_eq(&old, &ctx.server(Side::Gateway)));
        std::fs::write(&key, good).unwrap();
        ctx.reload().unwrap();
        assert!(!Arc::ptr_eq(&old, &ctx.server(Side::Gateway)));
        assert!(!ctx.files_changed());
    }

    #[test]
    fn a_configured_certificate_with_wrong_names_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = lab_cfg(&dir.path().join("state"));
        let src = ensure_own_certs(&cfg).unwrap();
        // The mediation certificate configured for the cloud side: wrong subject and SANs.
        cfg.tls.cloud_side = Some(src.gateway_side.clone());
        let f = check_certificates(&cfg, SystemTime::now());
        assert!(
            f.iter().any(|c| c.what.starts_with("cloud side")
                && c.finding.severity == Severity::Error
                && c.finding.text.contains("sip.lab.example")),
            "{f:?}"
        );
    }
}
