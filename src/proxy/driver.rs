//! The proxy core's driver: the one tokio loop that feeds [`Core`] with inbound messages,
//! resolver answers and timeouts, puts its output on the wire, publishes its counters, switches
//! maintenance mode, hands it reloaded configurations, and runs the drain. Everything it drives
//! is wired by [`crate::server`].
//!
//! The drain ([`Stop::Drain`], the first SIGTERM/SIGINT): new calls are refused; the loop ends
//! when the last call has ended and nothing is in flight, or at `limits.drain_timeout_s`, when
//! the core hangs up every call left and the loop waits at most [`BYE_GRACE`] for the answers
//! to its BYEs. [`Stop::Now`] (a second signal) ends the loop at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use super::Core;
use crate::cdr::CallRecord;
use crate::config::Config;
use crate::flow::Inbound;
use crate::routing::RoutingTable;
use crate::stats::{ProxyStats, Published};
use crate::transport::dns::Dns;
use crate::transport::ingress::{IngressRx, IngressTx};
use crate::transport::Transports;

/// How often the counters are published for metrics and `route explain`.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(500);
/// Inbound events taken in one go before the output is sent (batches under load).
const BATCH: usize = 256;
/// How long the system resolver may take for one name.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// After the drain timeout: how long the BYEs of ours may wait for their answers.
pub const BYE_GRACE: Duration = Duration::from_secs(4);

/// What the signals asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stop {
    #[default]
    Running,
    /// Refuse new calls; stop when the last call has ended or the drain times out.
    Drain,
    /// Stop at once (a second signal).
    Now,
}

/// A reloaded configuration and the routing table resolved from it.
pub struct Reload {
    pub cfg: Arc<Config>,
    pub table: RoutingTable,
}

/// What the driver talks to.
pub struct Io {
    /// Messages from the transports (and resolver answers).
    pub inbound: IngressRx,
    /// Where resolver answers go (the same channel as `inbound`).
    pub resolved: IngressTx,
    pub transports: Arc<Transports>,
    /// The snapshot the admin API reads.
    pub published: Arc<ArcSwap<Published>>,
    /// Longest graceful drain.
    pub drain_timeout: Duration,
    /// Where records of ended calls go (the call-record writer); `None`: nowhere.
    pub records: Option<mpsc::Sender<CallRecord>>,
    /// Maintenance mode as the admin API sets it (true: in maintenance).
    pub maintenance: watch::Receiver<bool>,
    /// Reloaded configurations.
    pub reloads: mpsc::Receiver<Reload>,
    /// Resolves next hops named in messages.
    pub dns: Arc<Dns>,
}

/// Runs `core` until the drain ends or `stop` says [`Stop::Now`]; returns its final counters.
pub async fn run(mut core: Core, mut io: Io, mut stop: watch::Receiver<Stop>) -> ProxyStats {
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let mut bye_deadline: Option<tokio::time::Instant> = None;
    let mut publish = tokio::time::interval(PUBLISH_INTERVAL);
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    core.set_maintenance(*io.maintenance.borrow_and_update());
    loop {
        let wake = core.poll_timeout().map(tokio::time::Instant::from_std);
        let until = |at: Option<tokio::time::Instant>| async move {
            match at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = io.inbound.recv() => {
                let Some(ev) = ev else { break };
                let now = Instant::now();
                core.handle_inbound(now, ev);
                for _ in 0..BATCH {
                    match io.inbound.try_recv() {
                        Some(ev) => core.handle_inbound(now, ev),
                        None => break,
                    }
                }
            }
            _ = until(wake) => core.handle_timeout(Instant::now()),
            _ = publish.tick() => {
                let mut p = core.published();
                // Messages dropped at the door because their peer's ingress lane was full.
                p.proxy.shed.insert("ingress_full", io.inbound.dropped());
                io.published.store(Arc::new(p));
            }
            Ok(()) = io.maintenance.changed() => {
                core.set_maintenance(*io.maintenance.borrow_and_update());
                // The admin API answers once the core's snapshot shows it.
                io.published.store(Arc::new(core.published()));
            }
            Some(r) = io.reloads.recv() => {
                info!(gateways = r.table.gateways.len(), sites = r.table.sites.len(), "configuration reloaded: in force for new calls");
                io.drain_timeout = r.cfg.limits.drain_timeout;
                io.resolved.set_peers(r.table.peer_addresses());
                core.reload(Instant::now(), r.cfg, r.table);
            }
            Ok(()) = stop.changed() => {
                match *stop.borrow_and_update() {
                    Stop::Now => {
                        warn!(calls = core.active_calls(), "stopping at once (second signal)");
                        break;
                    }
                    Stop::Drain if !core.draining() => {
                        let (s, c) = core.transaction_count();
                        info!(calls = core.active_calls(), server_txns = s, client_txns = c,
                            timeout_s = io.drain_timeout.as_secs(),
                            "draining: new calls refused; stopping when the last call has ended");
                        core.start_drain();
                        drain_deadline = Some(tokio::time::Instant::now() + io.drain_timeout);
                    }
                    _ => {}
                }
            }
            _ = until(drain_deadline) => {
                drain_deadline = None;
                let n = core.hang_up_all(Instant::now());
                warn!(calls = n, "drain timeout: BYE to both legs of every call left");
                bye_deadline = Some(tokio::time::Instant::now() + BYE_GRACE);
            }
            _ = until(bye_deadline) => {
                let (s, c) = core.transaction_count();
                warn!(server_txns = s, client_txns = c, "stopping with transactions in flight");
                break;
            }
        }
        while let Some(host) = core.poll_resolve() {
            // The system resolver blocks: ask it off the loop, answer through the channel.
            let tx = io.resolved.clone();
            let dns = io.dns.clone();
            tokio::spawn(async move {
                let ip = tokio::time::timeout(RESOLVE_TIMEOUT, dns.first(&host))
                    .await
                    .ok()
                    .flatten();
                if ip.is_none() {
                    warn!(%host, "next hop does not resolve");
                }
                let _ = tx.send(Inbound::Resolved { host, ip }).await;
            });
        }
        while let Some(r) = core.poll_call_record() {
            if let Some(tx) = &io.records {
                if tx.try_send(r).is_err() {
                    warn!("call record dropped: the writer is behind");
                }
            }
        }
        while let Some(t) = core.poll_transmit() {
            if let Err(e) = io.transports.send(t.side, t.transport, t.remote, t.data) {
                error!(remote = %t.remote, error = %e, "send failed");
                core.on_send_failed(Instant::now(), t.side, t.transport, t.remote);
            }
        }
        if core.draining() && core.is_drained() {
            info!("drained: the last call has ended");
            break;
        }
    }
    if let Some(m) = core.published().media {
        info!(stats = ?m.stats, active = m.active_calls, "media anchor stopping");
    }
    core.stats.clone()
}
