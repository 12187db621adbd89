//! The composition root: wires the directory, the admin API, the transports, the resolver, the
//! media anchor and the proxy core, then hands them to the proxy's driver. Nothing else in the
//! crate opens the store, binds the admin listener or decides which media backend the core
//! gets; everything it wires knows nothing of the others.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::config::{Config, Side, Transport};
use crate::directory::{spawn_watcher, Store, StoreError};
use crate::flow::Inbound;
use crate::media::{MediaError, RelayBackend};
use crate::proxy::anchor::Anchor;
use crate::proxy::{driver, Core};
use crate::routing::RoutingTable;
use crate::stats::{ProxyStats, Published};
use crate::transport::Transports;

/// Why the appliance could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Bind(#[from] std::io::Error),
    #[error("routing table: {0}")]
    Resolve(String),
    #[error("{0}")]
    Directory(#[from] StoreError),
    #[error("media anchor: {0}")]
    Media(#[from] MediaError),
}

/// Resolves every name the routing table needs: `[hosts]` entries and IP literals first, then
/// the system resolver.
pub async fn resolve_table(cfg: &Config) -> Result<RoutingTable, StartError> {
    let names = RoutingTable::names_to_resolve(cfg);
    let mut resolved: HashMap<String, IpAddr> = HashMap::new();
    for n in names {
        if let Some(ip) = cfg.static_host(&n) {
            resolved.insert(n, ip);
            continue;
        }
        let found = tokio::net::lookup_host(format!("{n}:0"))
            .await
            .map(|mut a| a.next());
        match found {
            Ok(Some(a)) => {
                resolved.insert(n, a.ip());
            }
            Ok(None) => warn!(name = %n, "name has no address"),
            Err(e) => warn!(name = %n, error = %e, "name does not resolve"),
        }
    }
    RoutingTable::build(cfg, &|n| resolved.get(n).copied()).map_err(StartError::Resolve)
}

/// The media anchor of `[media]` over the real relay; `None` when the table is absent.
pub fn media_anchor(cfg: &Config) -> Result<Option<Anchor>, MediaError> {
    let Some(m) = &cfg.media else {
        return Ok(None);
    };
    let backend = RelayBackend::start(m.port_min..=m.port_max, m.relay_workers)?;
    Ok(Some(Anchor::from_config(cfg, m.clone(), Box::new(backend))))
}

/// Runs the appliance until `shutdown` turns true and the drain ends.
pub async fn run(
    cfg: Arc<Config>,
    shutdown: watch::Receiver<bool>,
) -> Result<ProxyStats, StartError> {
    let table = resolve_table(&cfg).await?;
    crate::routing::warm_up();
    // The directory: imported, then watched for changes made by the CLI or the API.
    let store = Store::open(&cfg)?;
    let dir = Arc::new(ArcSwap::from_pointee(store.snapshot()?));
    spawn_watcher(store.path().to_owned(), dir.clone())?;
    let published = Arc::new(ArcSwap::from_pointee(Published::default()));
    if let Some(addr) = cfg.admin.listen {
        let token = crate::admin::http::load_or_create_token(&cfg.appliance.state_dir)?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let state = crate::admin::http::AdminState {
            store: Arc::new(std::sync::Mutex::new(store)),
            token: Arc::new(token),
            table: Arc::new(table.clone()),
            dir: dir.clone(),
            live: published.clone(),
        };
        info!(%addr, "admin API listening");
        tokio::spawn(crate::admin::http::serve(listener, state));
    } else {
        drop(store);
    }
    let (tx, rx) = mpsc::channel::<Inbound>(8192);
    let resolved_tx = tx.clone();
    let transports = Transports::bind(&cfg, tx).await?;
    transports.set_server_names(table.tls_names());
    let mut local = HashMap::new();
    for side in [Side::Gateway, Side::Cloud] {
        for t in [Transport::Udp, Transport::Tcp, Transport::Tls] {
            if let Some(a) = transports.local_addr(side, t) {
                local.insert((side, t), a);
            }
        }
    }
    let mut core = Core::new(Instant::now(), cfg.clone(), table, local, dir);
    // Our Record-Route tokens outlive the process: dialogs survive a restart.
    let dialog_secret = crate::state::secret(&cfg.appliance.state_dir, "dialog.key")?;
    core.set_dialog_secret(dialog_secret.as_bytes());
    if let Some(anchor) = media_anchor(&cfg)? {
        core.set_anchor(anchor);
    }
    info!(
        site = %cfg.appliance.site,
        mediation = %cfg.appliance.mediation_fqdn,
        edge = %cfg.appliance.access_edge_fqdn,
        "sipedge running"
    );
    let io = driver::Io {
        inbound: rx,
        resolved: resolved_tx,
        transports,
        published,
        drain_timeout: cfg.limits.drain_timeout,
        records: None,
    };
    Ok(driver::run(core, io, shutdown).await)
}
