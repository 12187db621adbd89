//! Where protocol meets IO: the stateful proxy.
//!
//! [`core::Core`] is the RFC 3261 §16 proxy as a sans-IO state machine (phases admit → route →
//! forward → relay_response → fail → log). [`run`] is its driver: it binds the transports,
//! resolves the configured names once, and runs one loop that feeds the core with inbound
//! messages and timeouts and puts its output on the wire. SIGTERM/SIGINT start a graceful
//! drain: new INVITEs get 503 with Retry-After, transactions in flight finish, then the loop
//! ends (bounded by `limits.drain_timeout_s`).

pub mod anchor;
pub mod core;
pub mod health;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::config::{Config, Side, Transport};
use crate::flow::Inbound;
use crate::routing::RoutingTable;
use crate::transport::Transports;

pub use self::core::{Core, Stats, ALLOW};
pub use crate::flow::Transmit;

/// Why the appliance could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Bind(#[from] std::io::Error),
    #[error("routing table: {0}")]
    Resolve(String),
    #[error("{0}")]
    Directory(#[from] crate::directory::StoreError),
    #[error("media anchor: {0}")]
    Media(#[from] crate::media::MediaError),
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

/// Runs the appliance until `shutdown` turns true and the drain ends.
pub async fn run(
    cfg: Arc<Config>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<Stats, StartError> {
    let table = resolve_table(&cfg).await?;
    crate::routing::warm_up();
    // The directory: imported, then watched for changes made by the CLI or the API.
    let store = crate::directory::Store::open(&cfg)?;
    let dir = Arc::new(arc_swap::ArcSwap::from_pointee(store.snapshot()?));
    crate::directory::spawn_watcher(store.path().to_owned(), dir.clone())?;
    let live = Arc::new(arc_swap::ArcSwap::from_pointee(
        crate::admin::http::LiveSnapshot::default(),
    ));
    if let Some(addr) = cfg.admin.listen {
        let token = crate::admin::http::load_or_create_token(&cfg.appliance.state_dir)?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let state = crate::admin::http::AdminState {
            store: Arc::new(std::sync::Mutex::new(store)),
            token: Arc::new(token),
            table: Arc::new(table.clone()),
            dir: dir.clone(),
            live: live.clone(),
        };
        info!(%addr, "admin API listening");
        tokio::spawn(crate::admin::http::serve(listener, state));
    } else {
        drop(store);
    }
    let (tx, mut rx) = mpsc::channel::<Inbound>(8192);
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
    let mut core = Core::new(Instant::now(), cfg.clone(), table, local, dir.clone());
    if let Some(anchor) = anchor::Anchor::from_config(&cfg)? {
        core.set_anchor(anchor);
    }
    info!(
        site = %cfg.appliance.site,
        mediation = %cfg.appliance.mediation_fqdn,
        edge = %cfg.appliance.access_edge_fqdn,
        "sipedge running"
    );
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    // Metrics and live state for the admin API, refreshed twice a second.
    let mut publish = tokio::time::interval(std::time::Duration::from_millis(500));
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let wake = core.poll_timeout().map(tokio::time::Instant::from_std);
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let drain_sleep = async {
            match drain_deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                let now = Instant::now();
                core.handle_inbound(now, ev);
                // Take what is already queued before sending: batches under load.
                let mut n = 0;
                while n < 256 {
                    match rx.try_recv() {
                        Ok(ev) => core.handle_inbound(now, ev),
                        Err(_) => break,
                    }
                    n += 1;
                }
            }
            _ = sleep => core.handle_timeout(Instant::now()),
            _ = publish.tick() => {
                live.store(Arc::new(crate::admin::http::LiveSnapshot {
                    stats: core.stats.clone(),
                    health: core.health_states(),
                    live: core.live(),
                }));
            }
            _ = shutdown.changed(), if drain_deadline.is_none() => {
                if *shutdown.borrow() {
                    let (s, c) = core.transaction_count();
                    info!(server_txns = s, client_txns = c, "draining: new calls refused");
                    core.start_drain();
                    drain_deadline = Some(tokio::time::Instant::now() + cfg.limits.drain_timeout);
                }
            }
            _ = drain_sleep => {
                let (s, c) = core.transaction_count();
                warn!(server_txns = s, client_txns = c, "drain timeout: stopping with transactions in flight");
                break;
            }
        }
        while let Some(host) = core.poll_resolve() {
            // The system resolver blocks: ask it off the loop, answer through the channel.
            let tx = resolved_tx.clone();
            tokio::spawn(async move {
                let lookup = tokio::net::lookup_host(format!("{host}:0"));
                let ip = match tokio::time::timeout(std::time::Duration::from_secs(5), lookup).await
                {
                    Ok(Ok(mut addrs)) => addrs.next().map(|a| a.ip()),
                    _ => None,
                };
                if ip.is_none() {
                    warn!(%host, "next hop does not resolve");
                }
                let _ = tx.send(Inbound::Resolved { host, ip }).await;
            });
        }
        while let Some(t) = core.poll_transmit() {
            if let Err(e) = transports.send(t.side, t.transport, t.remote, t.data) {
                error!(remote = %t.remote, error = %e, "send failed");
                core.on_send_failed(Instant::now(), t.side, t.transport, t.remote);
            }
        }
        if drain_deadline.is_some() && core.is_idle() {
            info!("drained: all transactions finished");
            break;
        }
    }
    if let Some(a) = core.anchor() {
        info!(stats = ?a.stats, active = a.active_calls(), "media anchor stopping");
    }
    Ok(core.stats.clone())
}
