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
            calls: self.calls.lock().map(|c| c.clone()).unwrap_or_default(),
            call_record_errors: self.call_record_errors.load().load(Ordering::Relaxed),
            log_lines_dropped: super::logging::dropped_lines(),
            transport: TRANSPORT.snapshot(),
            certificates: self.certificates.load().as_ref().clone(),
            directory_changes: self.directory_changes.load(Ordering::Relaxed),
            directory_users: self.directory_users.load(Ordering::Relaxed),
        }
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
