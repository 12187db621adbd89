//! What the admin API knows about the appliance beyond the directory and the core's snapshot:
//! readiness, call statistics from the call records, the certificates' expiry, directory
//! changes, when it started. `server` builds one [`OpsState`] and keeps it current with
//! [`OpsState::spawn_refresh`]; the handlers only read it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use super::calls::CallStats;
use super::certs::{self, Expiry};
use super::metrics::OpsMetrics;
use crate::config::Config;
use crate::routing::Directory;
use crate::stats::{Readiness, TRANSPORT};

/// The outcome of the last configuration reload (`GET /config/reload`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    /// `applied`, `unchanged` (the file says what runs already) or `failed`.
    pub result: &'static str,
    /// What asked for it: `sighup`, `file` (its modification time changed) or `api`.
    pub trigger: &'static str,
    /// When (Unix seconds).
    pub at: u64,
    /// Why the file was refused (the running configuration stays), when it was.
    pub error: Option<String>,
    /// Keys changed in the file that need a restart (their running values stay).
    pub needs_restart: Vec<&'static str>,
}

/// The appliance's state for `/healthz`, `/readyz`, `/metrics` and `/status`.
#[derive(Debug)]
pub struct OpsState {
    pub cfg: Arc<Config>,
    pub readiness: Arc<Readiness>,
    pub calls: Arc<Mutex<CallStats>>,
    /// Failed call-record writes (the writer's counter, once it runs).
    call_record_errors: ArcSwap<AtomicU64>,
    pub certificates: ArcSwap<Vec<Expiry>>,
    pub directory_changes: AtomicU64,
    pub directory_users: AtomicUsize,
    pub started: SystemTime,
    /// The last configuration reload, and how many were applied (or unchanged) and failed.
    pub last_reload: Mutex<Option<ReloadReport>>,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
}

impl OpsState {
    pub fn new(cfg: Arc<Config>, readiness: Arc<Readiness>) -> OpsState {
        let calls = CallStats::for_config(&cfg);
        OpsState {
            cfg,
            readiness,
            calls: Arc::new(Mutex::new(calls)),
            call_record_errors: ArcSwap::from_pointee(AtomicU64::new(0)),
            certificates: ArcSwap::from_pointee(Vec::new()),
            directory_changes: AtomicU64::new(0),
            directory_users: AtomicUsize::new(0),
            started: SystemTime::now(),
            last_reload: Mutex::new(None),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        }
    }

    /// What `/metrics` renders besides the core's snapshot.
    pub fn metrics(&self) -> OpsMetrics {
        OpsMetrics {
            version: env!("CARGO_PKG_VERSION"),
            start_time: self
                .started
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            ready: self.readiness.not_ready().is_empty(),
            draining: self.readiness.draining(),
            maintenance: self.readiness.maintenance(),
            reloads_ok: self.reloads_ok.load(Ordering::Relaxed),
            reloads_failed: self.reloads_failed.load(Ordering::Relaxed),
            calls: self.calls.lock().map(|c| c.clone()).unwrap_or_default(),
            call_record_errors: self.call_record_errors.load().load(Ordering::Relaxed),
            log_lines_dropped: super::logging::dropped_lines(),
            transport: TRANSPORT.snapshot(),
            certificates: self.certificates.load().as_ref().clone(),
            directory_changes: self.directory_changes.load(Ordering::Relaxed),
            directory_users: self.directory_users.load(Ordering::Relaxed),
        }
    }

    /// Records a reload's outcome (for `GET /config/reload` and the metrics).
    pub fn record_reload(&self, report: ReloadReport) {
        let n = if report.result == "failed" {
            &self.reloads_failed
        } else {
            &self.reloads_ok
        };
        n.fetch_add(1, Ordering::Relaxed);
        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
    }

    /// The last reload's outcome, if any.
    pub fn last_reload(&self) -> Option<ReloadReport> {
        self.last_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts the failed writes of this call-record writer.
    pub fn set_call_record_errors(&self, errors: Arc<AtomicU64>) {
        self.call_record_errors.store(errors);
    }

    /// Re-reads the certificates now (blocking file reads).
    pub fn refresh_certificates(&self) {
        self.certificates
            .store(Arc::new(certs::inventory(&self.cfg)));
    }

    /// Keeps the state current: counts directory swaps (polled every 500 ms, as the store's
    /// watcher swaps at most that often) and re-reads the certificates every minute.
    pub fn spawn_refresh(self: &Arc<Self>, dir: Arc<ArcSwap<Directory>>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut last = dir.load_full();
            me.directory_users
                .store(last.users.len(), Ordering::Relaxed);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let now = dir.load_full();
                if !Arc::ptr_eq(&now, &last) {
                    me.directory_changes.fetch_add(1, Ordering::Relaxed);
                    me.directory_users.store(now.users.len(), Ordering::Relaxed);
                    last = now;
                }
            }
        });
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(certs::REFRESH);
            loop {
                tick.tick().await;
                let m = me.clone();
                let _ = tokio::task::spawn_blocking(move || m.refresh_certificates()).await;
            }
        });
    }
}
