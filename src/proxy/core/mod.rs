//! The proxy core: RFC 3261 §16 stateful proxying as a sans-IO state machine.
//!
//! The core owns every transaction and response context. It never touches a socket or the
//! clock: the driver ([`super::driver`]) feeds it [`Inbound`] events and timeouts with `now`,
//! and drains [`Transmit`]s. That makes the whole proxy testable on a virtual clock. Media goes
//! through the anchor's [`crate::media::MediaBackend`], so no socket is opened here either.
//!
//! A request passes through named phases, each visible as a `tracing` span:
//! **admit** (parse checks, sender identity, overload, maintenance and drain, Max-Forwards,
//! loops, Proxy-Require) →
//! **route** (Route-set or routing policy) → **forward** (Via, Record-Route, client
//! transaction per target) → **relay_response** (§16.7 response context) → **fail** (failover
//! to the next target, or the best final response upstream) → **log**.
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | the state (transactions, response contexts, timers) and the driver API |
//! | `admit.rs` | a request arrives: transaction, 100 Trying, sender, hop/extension/loop checks, ACK, CANCEL |
//! | `route.rs` | Route-set routing (§16.4) and the routing policy |
//! | `resolve.rs` | requests parked until a next hop's name resolves |
//! | `forward.rs` | the copy of a request for one target (§16.6) and its client transaction |
//! | `response.rs` | responses upstream, failover and the best final response (§16.7) |
//! | `local.rs` | responses we generate, where responses go (§18.2.2), the log line |
//! | `own.rs` | our own requests: CANCEL, ACK for a non-2xx, media-timeout BYE |
//! | `txns.rs` | transaction output, events and timer slots |
//! | `media.rs` | the media anchor's hooks |
//! | `probes.rs` | OPTIONS health probes and per-gateway session counts |
//! | `service.rs` | out of service (maintenance, drain and its BYEs) and configuration reload |

mod admit;
mod calls;
mod dialog_token;
mod forward;
mod lifecycle;
mod local;
mod media;
mod overload;
mod own;
mod probes;
mod resolve;
mod response;
mod route;
mod service;
mod txns;
mod unknown;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::calls::Calls;
use self::dialog_token::DialogKey;
use self::overload::{Limits as OverloadLimits, Overload};
use self::unknown::UnknownSenders;
use super::anchor::Anchor;
use super::CallKey;
use crate::cdr::CallRecord;
use crate::config::{Config, Side, Transport};
use crate::flow::{Flow, Inbound, Transmit};
use crate::routing::{Directory, Live, NextHop, RoutingTable};
use crate::sip::Message;
use crate::stats::{ProxyStats, Published};

use super::health::Health;
use crate::txn::{BranchKey, ClientKey, ClientTxn, ServerKey, ServerTxn, TimerConfig};

/// The methods we allow (OPTIONS answers carry them).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY, INFO, UPDATE, PRACK";
/// Timer C (§16.6 step 11): greater than 3 minutes.
const TIMER_C: Duration = Duration::from_secs(181);

/// A refusal from the admit phase: status, reason phrase, extra header fields.
struct Refusal {
    status: u16,
    reason: String,
    extra: Vec<(&'static str, Vec<u8>)>,
}

impl Refusal {
    fn new(status: u16, reason: String) -> Refusal {
        Refusal {
            status,
            reason,
            extra: Vec::new(),
        }
    }
    fn with(mut self, name: &'static str, value: &[u8]) -> Refusal {
        self.extra.push((name, value.to_vec()));
        self
    }
}

/// Where a request goes next: a hop from the routing table, or an address from a URI.
#[derive(Debug, Clone)]
struct Target {
    hop: NextHop,
    /// Rewrite the Request-URI host to `hop.name` (routing-policy targets).
    rewrite_host: bool,
    /// Replace the whole Request-URI (inbound calls: the user's SIP address).
    request_uri: Option<String>,
    /// Strict-router compatibility (§16.4): the Request-URI becomes this (the last Route
    /// value), and that value leaves the Route set.
    strict_route: Option<String>,
}

/// §16.7: the state kept for one proxied server transaction.
struct ResponseContext {
    /// The request as received, for re-forwarding to the next target.
    request: Message,
    /// Targets not tried yet, in order.
    remaining: VecDeque<Target>,
    /// The client transaction of the branch in progress.
    current: Option<ClientKey>,
    /// The best final response received so far (§16.7 step 6).
    best: Option<Message>,
    /// A final response has been sent upstream.
    final_sent: bool,
    /// A CANCEL arrived for it.
    cancelled: bool,
    branch_index: u32,
}

struct ServerEntry {
    txn: ServerTxn,
    slot: Option<(u64, Instant)>,
    flow: Flow,
    /// The peer that sent it (a gateway's name, another site's mediation server, the cloud
    /// peer's FQDN): retransmissions and a CANCEL are taken from that peer only.
    peer: Arc<str>,
    /// The call it belongs to, when it is an INVITE, a BYE or another request of a call.
    call: Option<CallKey>,
    /// The top Via carried `rport` (RFC 3581): answer to the source port.
    rport: bool,
    via_port: Option<u16>,
    ctx: Option<ResponseContext>,
}

struct ClientEntry {
    txn: ClientTxn,
    slot: Option<(u64, Instant)>,
    hop: NextHop,
    /// The request as sent (to build ACK and CANCEL from, §9.1, §17.1.1.3).
    sent: Message,
    /// The server transaction it serves (none for a CANCEL we generate).
    parent: Option<ServerKey>,
    is_invite: bool,
    got_provisional: bool,
    /// Send a CANCEL as soon as a provisional response arrives (§9.1).
    cancel_pending: bool,
    /// Failover timer, then Timer C once the far end rings.
    branch_deadline: Option<Instant>,
    /// The branch was abandoned (failed over or cancelled); its late answers are not used for
    /// failover decisions.
    abandoned: bool,
    /// An INVITE branch to this gateway, counted in its load until its final response.
    counted: Option<String>,
}

/// The proxy state machine.
pub struct Core {
    cfg: Arc<Config>,
    table: RoutingTable,
    timers: TimerConfig,
    /// Our listener addresses, for Via and Record-Route ports.
    local: HashMap<(Side, Transport), SocketAddr>,
    servers: HashMap<ServerKey, ServerEntry>,
    clients: HashMap<ClientKey, ClientEntry>,
    /// Lazy deadline heap: (deadline, slot id); stale entries are harmless.
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    slots: HashMap<u64, TimerSlot>,
    next_slot: u64,
    out: VecDeque<Transmit>,
    /// Names resolved by the driver (system resolver), with their expiry.
    dns: HashMap<String, (Option<IpAddr>, Instant)>,
    /// Requests waiting for a name to resolve.
    parked: HashMap<String, Vec<Parked>>,
    resolve_out: VecDeque<String>,
    spread: u64,
    /// Maintenance mode: new out-of-dialog requests get a 503 (see `service.rs`).
    maintenance: bool,
    /// The drain after SIGTERM: the same, until the last call has ended.
    draining: bool,
    pub stats: ProxyStats,
    /// The directory snapshot, swapped by the store watcher while calls run.
    dir: Arc<arc_swap::ArcSwap<Directory>>,
    /// OPTIONS health of gateways and the cloud peer.
    health: Health,
    /// Our OPTIONS probes in flight: client transaction → target name.
    probes: HashMap<ClientKey, String>,
    probe_seed: u64,
    probe_count: u64,
    /// The calls we routed, with the counts kept with them.
    calls: Calls,
    /// Branch identifiers are keyed with a secret of this process (§16.6 step 8).
    branch_key: BranchKey,
    /// Our Record-Route tokens are keyed with a secret of this appliance.
    dialog_key: DialogKey,
    /// Rates and caps before any state is kept.
    overload: Overload,
    /// When each unknown source was last answered.
    unknown: UnknownSenders,
    /// Media anchoring (`[media]`); `None`: SDP passes untouched.
    anchor: Option<Anchor>,
    /// Records of calls that ended, for the driver.
    records: VecDeque<CallRecord>,
}

/// A request waiting for its next hop's name to resolve.
enum Parked {
    Request {
        key: ServerKey,
        flow: Flow,
        req: Message,
    },
    Ack {
        flow: Flow,
        req: Message,
    },
}

/// Why a Route set or URI gives no next hop yet.
enum RouteError {
    /// Refuse the request with this status and reason.
    Refuse(u16, String),
    /// The host needs the system resolver first.
    Unresolved(String),
}

#[derive(Debug, Clone)]
enum TimerSlot {
    Server(ServerKey),
    Client(ClientKey),
    Probe,
    /// Calls past their longest life are dropped from the counts.
    CallAge,
}

/// How often calls past their longest life are looked for.
const CALL_AGE_SWEEP: Duration = Duration::from_secs(600);

impl Core {
    /// `dir` is the directory handle the store watcher swaps; `now` starts the OPTIONS
    /// health clock (the first probes go out at once).
    pub fn new(
        now: Instant,
        cfg: Arc<Config>,
        table: RoutingTable,
        local: HashMap<(Side, Transport), SocketAddr>,
        dir: Arc<arc_swap::ArcSwap<Directory>>,
    ) -> Core {
        let timers = TimerConfig {
            t1: cfg.sip.t1,
            t2: cfg.sip.t2,
            t4: cfg.sip.t4,
        };
        let health = Health::new(now, &table, cfg.routing.options_interval);
        let overload = Overload::new(overload_limits(&cfg, &table));
        let unknown = UnknownSenders::new(
            cfg.overload.unknown_senders,
            cfg.overload.unknown_sender_interval,
        );
        let mut core = Core {
            dir,
            health,
            probes: HashMap::new(),
            probe_seed: rand::random::<u64>(),
            probe_count: 0,
            calls: Calls::default(),
            branch_key: BranchKey::random(),
            dialog_key: DialogKey::random(),
            overload,
            unknown,
            cfg,
            table,
            timers,
            local,
            servers: HashMap::new(),
            clients: HashMap::new(),
            heap: BinaryHeap::new(),
            slots: HashMap::new(),
            next_slot: 0,
            out: VecDeque::new(),
            dns: HashMap::new(),
            parked: HashMap::new(),
            resolve_out: VecDeque::new(),
            spread: 0,
            maintenance: false,
            draining: false,
            stats: ProxyStats::default(),
            anchor: None,
            records: VecDeque::new(),
        };
        let at = core.health.next_probe();
        core.reschedule(None, Some(at), TimerSlot::Probe);
        core.reschedule(None, Some(now + CALL_AGE_SWEEP), TimerSlot::CallAge);
        core
    }

    /// The secret of our Record-Route tokens (kept in the state directory, so that dialogs
    /// survive a restart); a random one until this is called.
    pub fn set_dialog_secret(&mut self, secret: &[u8]) {
        self.dialog_key = DialogKey::new(secret);
    }

    /// Health of every probed target by name (true: healthy), for metrics and `route explain`.
    pub fn health_states(&self) -> HashMap<String, bool> {
        self.health.states()
    }

    /// Live state for routing: demoted targets, and sessions per gateway — calls established
    /// through it plus INVITE branches to it still waiting for a final response.
    pub fn live(&self) -> Live {
        Live {
            demoted: self.health.demoted().clone(),
            sessions: self.calls.load().clone(),
        }
    }

    /// Calls in progress or established.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// What the driver publishes for metrics and `route explain`.
    pub fn published(&self) -> Published {
        Published {
            proxy: ProxyStats {
                active_calls: Some(self.calls.len() as u64),
                ..self.stats.clone()
            },
            media: self.anchor.as_ref().map(Anchor::snapshot),
            health: self.health_states(),
            live: self.live(),
            maintenance: self.maintenance,
        }
    }

    /// Anchors the media of every call from now on (see [`super::anchor`]).
    pub fn set_anchor(&mut self, anchor: Anchor) {
        self.anchor = Some(anchor);
    }

    pub fn anchor(&self) -> Option<&Anchor> {
        self.anchor.as_ref()
    }

    /// The record of a call that ended, for the call-record writer.
    pub fn poll_call_record(&mut self) -> Option<CallRecord> {
        self.records.pop_front()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// A host name the driver must resolve (system resolver) and hand back through
    /// [`Core::handle_resolved`].
    pub fn poll_resolve(&mut self) -> Option<String> {
        self.resolve_out.pop_front()
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let media = self.anchor.as_ref().and_then(|a| a.next_deadline());
        while let Some(Reverse((at, slot))) = self.heap.peek().cloned() {
            if self.slots.contains_key(&slot) {
                return Some(media.map_or(at, |m| m.min(at)));
            }
            self.heap.pop();
        }
        media
    }

    // ---------------------------------------------------------------- events in

    pub fn handle_inbound(&mut self, now: Instant, ev: Inbound) {
        match ev {
            Inbound::Message(flow, msg) => {
                if msg.is_request() {
                    self.stats.requests_in += 1;
                    self.on_request(now, flow, msg);
                } else {
                    self.stats.responses_in += 1;
                    self.on_response(now, flow, msg);
                }
            }
            Inbound::Malformed {
                flow,
                bytes,
                response,
                reason,
            } => self.on_malformed(now, flow, &bytes, response, &reason),
            Inbound::Resolved { host, ip } => self.handle_resolved(now, host, ip),
            Inbound::SendFailed {
                side,
                transport,
                remote,
            } => self.on_send_failed(now, side, transport, remote),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.dns.retain(|_, (_, expires)| *expires > now);
        while let Some(Reverse((at, slot))) = self.heap.peek().cloned() {
            if at > now {
                break;
            }
            self.heap.pop();
            let Some(which) = self.slots.remove(&slot) else {
                continue;
            };
            match which {
                TimerSlot::Server(key) => {
                    if let Some(e) = self.servers.get_mut(&key) {
                        e.txn.handle_timeout(now);
                    }
                    self.drain_server(now, &key);
                }
                TimerSlot::Probe => self.send_probes(now),
                TimerSlot::CallAge => {
                    self.expire_calls(now);
                    self.reschedule(None, Some(now + CALL_AGE_SWEEP), TimerSlot::CallAge);
                }
                TimerSlot::Client(key) => {
                    self.client_branch_timer(now, &key);
                    if let Some(e) = self.clients.get_mut(&key) {
                        e.txn.handle_timeout(now);
                    }
                    self.drain_client(now, &key);
                }
            }
        }
        self.media_sweep(now);
    }

    /// A transport failure toward `remote`: every client transaction sending there fails.
    pub fn on_send_failed(
        &mut self,
        now: Instant,
        side: Side,
        transport: Transport,
        remote: SocketAddr,
    ) {
        let keys: Vec<ClientKey> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                c.hop.side == side && c.hop.transport == transport && c.hop.addr == remote
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(c) = self.clients.get_mut(&k) {
                c.txn.handle_transport_error(now);
            }
            self.drain_client(now, &k);
        }
    }

    // ---------------------------------------------------------------- route

    // ---------------------------------------------------------------- relay response
}

/// The overload limits of `cfg` (per-peer overrides by the names the table uses).
fn overload_limits(cfg: &Config, table: &RoutingTable) -> OverloadLimits {
    let o = &cfg.overload;
    let pair = |r: u32| (f64::from(r), 2.0 * f64::from(r));
    let mut peer_overrides: HashMap<String, (f64, f64)> = HashMap::new();
    peer_overrides.insert(
        table.cloud_peer.name.to_ascii_lowercase(),
        pair(o.cloud_peer_requests_per_second),
    );
    for (name, r) in &o.peers {
        peer_overrides.insert(name.clone(), pair(*r));
    }
    OverloadLimits {
        peer_rate: f64::from(o.peer_requests_per_second),
        peer_burst: 2.0 * f64::from(o.peer_requests_per_second),
        peer_overrides,
        calls_per_second: f64::from(o.calls_per_second),
        max_calls: o.max_calls,
        max_transactions: o.max_transactions,
        refusals_per_second: f64::from(o.refusals_per_second),
        retry_after: o.retry_after,
    }
}
