//! Configuration reload on a running appliance: on SIGHUP, when the file's modification time
//! changes (checked every [`FILE_POLL`], no inotify), or on `POST /config/reload`, the file is
//! read and validated again. A file refused keeps the running configuration, and the reason is
//! logged and reported (`GET /config/reload`, `sipedge_config_reloads_total{result="failed"}`).
//! A valid one is resolved into a routing table and handed to the core as one piece
//! (`Core::reload`): gateways, sites, hosts, limits, timers and media settings change together,
//! for new calls; calls in flight keep what they started with. Settings that need a restart
//! (listeners, state directory, TLS, …: see `config::reload`) keep their running values and are
//! named in the report and the log.
//!
//! The reloader also keeps the table's DNS answers fresh ([`crate::transport::dns`]): when the
//! earliest TTL runs out it resolves the running configuration's names again and, when an
//! answer changed, hands the core a table rebuilt from them in the same way.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::admin::state::{OpsState, ReloadReport};
use crate::config::Config;
use crate::proxy::driver;
use crate::routing::RoutingTable;
use crate::transport::dns::{self, Dns, Resolution};
use crate::transport::Transports;

/// How often the file's modification time is looked at.
pub const FILE_POLL: Duration = Duration::from_secs(2);

/// A request for a reload now, answered with its outcome (the admin API's).
pub type Request = oneshot::Sender<ReloadReport>;

/// What the reloader updates.
pub struct Reloader {
    /// The configuration in force (the file's, with the restart-only settings it started with).
    pub running: Arc<Config>,
    /// Where the core takes reloaded configurations.
    pub core: mpsc::Sender<driver::Reload>,
    /// The table the admin API explains routes with.
    pub table: Arc<ArcSwap<RoutingTable>>,
    pub transports: Arc<Transports>,
    pub ops: Arc<OpsState>,
    pub dns: Arc<Dns>,
    /// The answers the table in force was built from.
    pub resolution: Resolution,
    /// When they are asked for again (`None`: every name is static).
    pub dns_refresh: Option<Duration>,
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Reloader {
    /// Runs until the process ends: SIGHUP, the file's modification time, API requests.
    pub fn spawn(mut self, mut requests: mpsc::Receiver<Request>) {
        let path = self.running.file.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hup = match signal(SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(error = %e, "SIGHUP cannot be caught: reload by file change or API only");
                    None
                }
            };
            let mut seen = modified(&path);
            let mut tick = tokio::time::interval(FILE_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let refresh_at = self.dns_refresh.map(|d| tokio::time::Instant::now() + d);
                let refresh = async {
                    match refresh_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                let hangup = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                };
                let (trigger, answer) = tokio::select! {
                    () = refresh => {
                        self.refresh_dns().await;
                        continue;
                    }
                    Some(()) = hangup => ("sighup", None),
                    Some(r) = requests.recv() => ("api", Some(r)),
                    _ = tick.tick() => {
                        let now = modified(&path);
                        if now == seen {
                            continue;
                        }
                        ("file", None)
                    }
                };
                seen = modified(&path);
                let report = self.reload(trigger).await;
                self.ops.record_reload(report.clone());
                if let Some(a) = answer {
                    let _ = a.send(report);
                }
            }
        });
    }

    /// Reads, validates and applies the file once.
    async fn reload(&mut self, trigger: &'static str) -> ReloadReport {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let path = self.running.file.clone();
        let failed = |error: String| ReloadReport {
            result: "failed",
            trigger,
            at,
            error: Some(error),
            needs_restart: Vec::new(),
        };
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path)).await;
        let new = match loaded {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                warn!(trigger, error = %e, "configuration reload refused: the running configuration stays");
                return failed(e.to_string());
            }
            Err(e) => return failed(format!("internal: {e}")),
        };
        let needs_restart = self.running.restart_only_changes(&new);
        if !needs_restart.is_empty() {
            warn!(
                trigger,
                keys = %needs_restart.join(", "),
                "configuration reload: these settings need a restart; their running values stay"
            );
        }
        let applied = self.running.applicable(&new);
        if applied == *self.running {
            info!(trigger, "configuration reload: nothing to change");
            return ReloadReport {
                result: "unchanged",
                trigger,
                at,
                error: None,
                needs_restart,
            };
        }
        let resolved =
            crate::server::resolve_table(&applied, &self.dns, Some(&self.resolution)).await;
        let (table, resolution, refresh) = match resolved {
            Ok(t) => t,
            Err(e) => {
                warn!(trigger, error = %e, "configuration reload refused: the running configuration stays");
                return failed(e.to_string());
            }
        };
        let applied = Arc::new(applied);
        let reload = driver::Reload {
            cfg: applied.clone(),
            table: table.clone(),
        };
        if self.core.send(reload).await.is_err() {
            return failed("the proxy core is not running".into());
        }
        self.transports.set_server_names(table.tls_names());
        self.transports.set_peer_addresses(table.peer_addresses());
        self.table.store(Arc::new(table));
        self.running = applied;
        self.resolution = resolution;
        self.dns_refresh = refresh;
        info!(trigger, "configuration reloaded");
        ReloadReport {
            result: "applied",
            trigger,
            at,
            error: None,
            needs_restart,
        }
    }

    /// Resolves the running configuration's names again; a changed answer rebuilds the table.
    async fn refresh_dns(&mut self) {
        let (resolution, refresh) = self
            .dns
            .resolve(&self.running, Some(&self.resolution))
            .await;
        self.dns_refresh = refresh;
        if resolution == self.resolution {
            return;
        }
        let table = match resolution.table(&self.running) {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "DNS answers changed but give no usable table: the running one stays");
                return;
            }
        };
        dns::log_changes(&self.resolution, &resolution);
        let reload = driver::Reload {
            cfg: self.running.clone(),
            table: table.clone(),
        };
        if self.core.send(reload).await.is_err() {
            return;
        }
        self.transports.set_server_names(table.tls_names());
        self.transports.set_peer_addresses(table.peer_addresses());
        self.table.store(Arc::new(table));
        self.resolution = resolution;
        info!("DNS answers changed: routing table rebuilt for new calls");
    }
}
