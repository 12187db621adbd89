//! The proxy core's driver: the one tokio loop that feeds [`Core`] with inbound messages,
//! resolver answers and timeouts, puts its output on the wire, publishes its counters, and
//! runs the graceful drain. Everything it drives is wired by [`crate::server`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use super::Core;
use crate::cdr::CallRecord;
use crate::flow::Inbound;
use crate::stats::{ProxyStats, Published};
use crate::transport::ingress::{IngressRx, IngressTx};
use crate::transport::Transports;

/// How often the counters are published for metrics and `route explain`.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(500);
/// Inbound events taken in one go before the output is sent (batches under load).
const BATCH: usize = 256;
/// How long the system resolver may take for one name.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

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
}

/// Runs `core` until `shutdown` turns true and the drain ends; returns its final counters.
pub async fn run(mut core: Core, mut io: Io, mut shutdown: watch::Receiver<bool>) -> ProxyStats {
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let mut publish = tokio::time::interval(PUBLISH_INTERVAL);
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
            _ = sleep => core.handle_timeout(Instant::now()),
            _ = publish.tick() => {
                let mut p = core.published();
                // Messages dropped at the door because their peer's ingress lane was full.
                p.proxy.shed.insert("ingress_full", io.inbound.dropped());
                io.published.store(Arc::new(p));
            }
            _ = shutdown.changed(), if drain_deadline.is_none() => {
                if *shutdown.borrow() {
                    let (s, c) = core.transaction_count();
                    info!(server_txns = s, client_txns = c, "draining: new calls refused");
                    core.start_drain();
                    drain_deadline = Some(tokio::time::Instant::now() + io.drain_timeout);
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
            let tx = io.resolved.clone();
            tokio::spawn(async move {
                let lookup = tokio::net::lookup_host(format!("{host}:0"));
                let ip = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                    Ok(Ok(mut addrs)) => addrs.next().map(|a| a.ip()),
                    _ => None,
                };
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
        if drain_deadline.is_some() && core.is_idle() {
            info!("drained: all transactions finished");
            break;
        }
    }
    if let Some(m) = core.published().media {
        info!(stats = ?m.stats, active = m.active_calls, "media anchor stopping");
    }
    core.stats.clone()
}
