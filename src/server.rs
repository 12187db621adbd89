//! The composition root: wires the directory, the admin API, the transports, the resolver, the
//! media anchor and the proxy core, then hands them to the proxy's driver. Nothing else in the
//! crate opens the store, binds the admin listener or decides which media backend the core
//! gets; everything it wires knows nothing of the others.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::admin::calls::StatsSink;
use crate::admin::maintenance::Maintenance;
use crate::admin::sd_notify::{self, Notifier};
use crate::admin::state::OpsState;
use crate::cdr::CallRecord;
use crate::config::{Config, Side, Transport};
use crate::directory::{spawn_watcher, Store, StoreError};
use crate::media::{MediaError, RelayBackend};
use crate::proxy::anchor::Anchor;
use crate::proxy::driver::{self, Stop};
use crate::proxy::Core;
use crate::routing::RoutingTable;
use crate::stats::{ProxyStats, Published, Readiness};
use crate::transport::dns::{Dns, Resolution};
use crate::transport::ingress::{ingress, IngressLimits};
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
    #[error("directory: the opening task failed: {0}")]
    DirectoryTask(String),
    #[error("media anchor: {0}")]
    Media(#[from] MediaError),
}

/// Resolves every name the routing table needs (`[hosts]` entries and IP literals first, then
/// DNS: [`crate::transport::dns`]) and builds the table; `previous` keeps the last addresses of
/// a name that does not resolve now. Also returns the answers and when to ask again.
pub async fn resolve_table(
    cfg: &Config,
    dns: &Dns,
    previous: Option<&Resolution>,
) -> Result<(RoutingTable, Resolution, Option<Duration>), StartError> {
    let (resolution, refresh) = dns.resolve(cfg, previous).await;
    let table = resolution.table(cfg).map_err(StartError::Resolve)?;
    Ok((table, resolution, refresh))
}

/// The media anchor of `[media]` over the real relay; `None` when the table is absent.
pub fn media_anchor(cfg: &Config) -> Result<Option<Anchor>, MediaError> {
    let Some(m) = &cfg.media else {
        return Ok(None);
    };
    let backend = RelayBackend::start(m.port_min..=m.port_max, m.relay_workers)?;
    Ok(Some(Anchor::from_config(cfg, m.clone(), Box::new(backend))))
}

/// How many finished calls may wait for the call-record writer.
const RECORD_QUEUE: usize = 4096;

/// Sends one notification to systemd when running under it (`Type=notify`).
fn notify(n: Option<&Notifier>, state: &str) {
    if let Some(n) = n {
        if let Err(e) = n.notify(state) {
            warn!(error = %e, "systemd notification failed");
        }
    }
}

/// Feeds systemd's watchdog at half its timeout while the core's loop publishes (it does every
/// 500 ms): a wedged loop stops the pings and systemd restarts the service.
fn spawn_watchdog(n: Arc<Notifier>, timeout: Duration, published: Arc<ArcSwap<Published>>) {
    let every = timeout / 2;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = published.load_full();
        loop {
            tick.tick().await;
            let now = published.load_full();
            // Shorter intervals than the publish period cannot tell: ping.
            let alive = every < Duration::from_secs(1) || !Arc::ptr_eq(&now, &last);
            last = now;
            if alive {
                notify(Some(&n), "WATCHDOG=1");
            } else {
                warn!("the core's loop did not publish since the last watchdog ping; not pinging");
            }
        }
    });
}

/// Opens the directory store and reads its snapshot (blocking). A shared directory whose
/// database is unreachable at start falls back to the last snapshot this appliance kept
/// (`directory.cache.json`): it routes from it, refuses changes, and the watcher takes over
/// when the database returns.
fn open_directory(cfg: &Config) -> Result<(Store, crate::routing::Directory), StoreError> {
    let err = match Store::open(cfg).and_then(|mut s| s.snapshot().map(|d| (s, d))) {
        Ok(ok) => return Ok(ok),
        Err(e) => e,
    };
    if !matches!(err, StoreError::Unavailable { .. }) {
        return Err(err);
    }
    match (
        crate::directory::cache::load(&cfg.appliance.state_dir),
        Store::open_offline(cfg)?,
    ) {
        (Some(d), Some(store)) => {
            warn!(
                error = %err,
                users = d.users.len(),
                "directory database unreachable at start: routing from the last snapshot kept in the state directory"
            );
            Ok((store, d))
        }
        _ => Err(err),
    }
}

/// Runs the appliance until `stop` asks for the drain and it ends, or says stop now.
pub async fn run(cfg: Arc<Config>, stop: watch::Receiver<Stop>) -> Result<ProxyStats, StartError> {
    let notifier = Notifier::from_env().map(Arc::new);
    notify(notifier.as_deref(), "STATUS=starting");
    let readiness = Arc::new(Readiness::default());
    let ops = Arc::new(OpsState::new(cfg.clone(), readiness.clone()));
    // Maintenance survives restarts: the state directory says whether we are in it.
    let (maintenance, maintenance_rx) =
        Maintenance::open(&cfg.appliance.state_dir, readiness.clone())?;
    let maintenance = Arc::new(maintenance);
    let (reload_tx, reload_rx) = mpsc::channel::<crate::reload::Request>(4);
    let (core_reload_tx, core_reload_rx) = mpsc::channel::<driver::Reload>(4);
    let dns = Arc::new(Dns::new(&cfg.dns));
    let (table, resolution, dns_refresh) = resolve_table(&cfg, &dns, None).await?;
    let shared_table = Arc::new(ArcSwap::from_pointee(table.clone()));
    crate::routing::warm_up();
    // The directory (the SQLite file, or the PostgreSQL database of `[directory]`): imported,
    // then watched for changes made by the CLI, the API or another appliance. Opening blocks.
    let (store, first) = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || open_directory(&cfg))
            .await
            .map_err(|e| StartError::DirectoryTask(e.to_string()))??
    };
    info!(directory = %store.location(), users = first.users.len(), "directory loaded");
    let dir = Arc::new(ArcSwap::from_pointee(first));
    spawn_watcher(&cfg, dir.clone())?;
    readiness.set_directory_loaded(true);
    let published = Arc::new(ArcSwap::from_pointee(Published::default()));
    if let Some(addr) = cfg.admin.listen {
        let token = crate::admin::http::load_or_create_token(&cfg.appliance.state_dir)?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let state = crate::admin::http::AdminState {
            store: Arc::new(std::sync::Mutex::new(store)),
            token: Arc::new(token),
            table: shared_table.clone(),
            dir: dir.clone(),
            live: published.clone(),
            ops: ops.clone(),
            maintenance: maintenance.clone(),
            reload: reload_tx,
        };
        info!(%addr, "admin API listening");
        tokio::spawn(crate::admin::http::serve(listener, state));
    } else {
        // Not on an async thread: a PostgreSQL store may own blocking resources.
        tokio::task::spawn_blocking(move || drop(store));
    }
    // Call records: the writer thread appends them to <state_dir>/cdr/, logs one line per call
    // and feeds the call statistics. (A PostgreSQL sink joins the list here.)
    let (records_tx, records_rx) = mpsc::channel::<CallRecord>(RECORD_QUEUE);
    let writer = crate::cdr::writer::standard(
        &cfg.appliance.state_dir,
        vec![Box::new(StatsSink(ops.calls.clone()))],
    );
    let record_errors = writer.errors();
    let writer = writer.spawn(records_rx)?;
    ops.set_call_record_errors(record_errors);
    // One lane per peer between the transports and the core: a flood costs only its own lane.
    let (tx, rx) = ingress(IngressLimits::default());
    tx.set_peers(table.peer_addresses());
    let resolved_tx = tx.clone();
    let transports = Transports::bind(&cfg, tx).await?;
    readiness.set_listeners_bound(true);
    transports.set_server_names(table.tls_names());
    transports.set_peer_addresses(table.peer_addresses());
    crate::reload::Reloader {
        running: cfg.clone(),
        core: core_reload_tx,
        table: shared_table,
        transports: transports.clone(),
        ops: ops.clone(),
        dns: dns.clone(),
        resolution,
        dns_refresh,
    }
    .spawn(reload_rx);
    ops.refresh_certificates();
    ops.spawn_refresh(dir.clone());
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
    // Readiness and systemd follow the drain.
    {
        let mut stop = stop.clone();
        let readiness = readiness.clone();
        let n = notifier.clone();
        tokio::spawn(async move {
            while stop.changed().await.is_ok() {
                if *stop.borrow() != Stop::Running {
                    readiness.set_draining(true);
                    notify(
                        n.as_deref(),
                        "STOPPING=1\nSTATUS=draining: new calls refused until the last call ends",
                    );
                    break;
                }
            }
        });
    }
    if let (Some(n), Some(t)) = (&notifier, sd_notify::watchdog_timeout()) {
        spawn_watchdog(n.clone(), t, published.clone());
    }
    let io = driver::Io {
        inbound: rx,
        resolved: resolved_tx,
        transports,
        published,
        drain_timeout: cfg.limits.drain_timeout,
        records: Some(records_tx),
        maintenance: maintenance_rx,
        reloads: core_reload_rx,
        dns,
    };
    notify(
        notifier.as_deref(),
        &format!(
            "READY=1\nSTATUS={}",
            sd_notify::status_line(&format!(
                "serving site {} ({})",
                cfg.appliance.site, cfg.appliance.mediation_fqdn
            ))
        ),
    );
    let stats = driver::run(core, io, stop).await;
    // The driver dropped the records' sender: the writer writes what is queued and stops.
    if tokio::task::spawn_blocking(move || writer.join())
        .await
        .is_err()
    {
        warn!("the call-record writer did not stop cleanly");
    }
    Ok(stats)
}
