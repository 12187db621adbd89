//! The proxy core: RFC 3261 §16 stateful proxying as a sans-IO state machine.
//!
//! The core owns every transaction and response context. It never touches a socket or the
//! clock: the driver ([`super::run`]) feeds it [`Inbound`] events and timeouts with `now`, and
//! drains [`Transmit`]s. That makes the whole proxy testable on a virtual clock.
//!
//! A request passes through named phases, each visible as a `tracing` span:
//! **admit** (parse checks, sender identity, Max-Forwards, loops, Proxy-Require, drain) →
//! **route** (Route-set or routing policy) → **forward** (Via, Record-Route, client
//! transaction per target) → **relay_response** (§16.7 response context) → **fail** (failover
//! to the next target, or the best final response upstream) → **log**.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, info, info_span, warn};

use super::anchor::{self, Anchor, ByeSpec, DialogInfo};
use crate::config::{Config, Side, Transport};
use crate::flow::{Flow, Inbound, Transmit};
use crate::routing::{self, Decision, Directory, Live, NextHop, RoutingTable, Sender};
use crate::sip::{
    build_error_response, build_response, HeaderName, Message, Method, NameAddr, Scheme, Uri,
};
use crate::stats::{ProxyStats, Published};

use super::health::Health;
use crate::txn::{
    ClientEvent, ClientKey, ClientTxn, RequestFacts, ServerEvent, ServerKey, ServerTxn, State,
    TimerConfig,
};

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
    /// Established calls through a gateway: Call-ID → gateway name (for session caps).
    calls: HashMap<Vec<u8>, String>,
    /// Established calls per gateway name.
    sessions: HashMap<String, u32>,
    /// Media anchoring (`[media]`); `None`: SDP passes untouched.
    anchor: Option<Anchor>,
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

/// How long a resolved name is trusted, and a failure remembered.
const DNS_TTL: Duration = Duration::from_secs(60);
const DNS_NEGATIVE_TTL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
enum TimerSlot {
    Server(ServerKey),
    Client(ClientKey),
    Probe,
}

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
        let mut core = Core {
            dir,
            health,
            probes: HashMap::new(),
            probe_seed: rand::random::<u64>(),
            probe_count: 0,
            calls: HashMap::new(),
            sessions: HashMap::new(),
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
            draining: false,
            stats: ProxyStats::default(),
            anchor: None,
        };
        let at = core.health.next_probe();
        core.reschedule(None, Some(at), TimerSlot::Probe);
        core
    }

    /// Health of every probed target by name (true: healthy), for metrics and `route explain`.
    pub fn health_states(&self) -> HashMap<String, bool> {
        self.health.states()
    }

    /// Live state for routing: demoted targets, and sessions per gateway — calls established
    /// through it plus INVITE branches to it still waiting for a final response.
    pub fn live(&self) -> Live {
        let mut sessions = self.sessions.clone();
        for c in self.clients.values() {
            let pending = c.is_invite
                && !c.abandoned
                && c.hop.side == Side::Gateway
                && matches!(c.txn.state(), State::Calling | State::Proceeding);
            if pending {
                *sessions.entry(c.hop.name.clone()).or_insert(0) += 1;
            }
        }
        Live {
            demoted: self.health.demoted().clone(),
            sessions,
        }
    }

    /// What the driver publishes for metrics and `route explain`.
    pub fn published(&self) -> Published {
        Published {
            proxy: self.stats.clone(),
            media: self.anchor.as_ref().map(Anchor::snapshot),
            health: self.health_states(),
            live: self.live(),
        }
    }

    /// Anchors the media of every call from now on (see [`super::anchor`]).
    pub fn set_anchor(&mut self, anchor: Anchor) {
        self.anchor = Some(anchor);
    }

    pub fn anchor(&self) -> Option<&Anchor> {
        self.anchor.as_ref()
    }

    /// Replaces the routing table (configuration reload); transactions in flight keep theirs.
    pub fn set_table(&mut self, table: RoutingTable) {
        self.table = table;
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// A host name the driver must resolve (system resolver) and hand back through
    /// [`Core::handle_resolved`].
    pub fn poll_resolve(&mut self) -> Option<String> {
        self.resolve_out.pop_front()
    }

    /// The driver resolved `host` (`None`: it does not resolve): requests parked on it go on.
    pub fn handle_resolved(&mut self, now: Instant, host: String, ip: Option<IpAddr>) {
        let ttl = if ip.is_some() {
            DNS_TTL
        } else {
            DNS_NEGATIVE_TTL
        };
        self.dns.insert(host.clone(), (ip, now + ttl));
        for p in self.parked.remove(&host).unwrap_or_default() {
            match p {
                Parked::Request { key, flow, req } => self.route_and_forward(now, key, flow, req),
                Parked::Ack { flow, req } => {
                    if let Some(facts) = request_facts(&req) {
                        let key = ServerKey::for_request(&facts);
                        self.on_ack(now, flow, req.clone(), key);
                    }
                }
            }
        }
    }

    /// Parks a request until `host` resolves, asking the driver once per name.
    fn park(&mut self, host: String, p: Parked) {
        let waiting = self.parked.entry(host.clone()).or_default();
        if waiting.is_empty() {
            self.resolve_out.push_back(host);
        }
        waiting.push(p);
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

    /// Starts the graceful drain: new INVITEs get 503 with Retry-After.
    pub fn start_drain(&mut self) {
        self.draining = true;
    }

    /// Nothing left in flight: every server transaction has sent its final response and every
    /// client transaction has received one. (Transactions lingering in Completed/Accepted only
    /// absorb retransmissions; the drain need not wait for them.)
    pub fn is_idle(&self) -> bool {
        let live = |s: State| matches!(s, State::Calling | State::Trying | State::Proceeding);
        !self.servers.values().any(|e| live(e.txn.state()))
            && !self.clients.values().any(|c| live(c.txn.state()))
    }

    pub fn transaction_count(&self) -> (usize, usize) {
        (self.servers.len(), self.clients.len())
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
            } => self.on_malformed(flow, &bytes, response, &reason),
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

    // ---------------------------------------------------------------- admit

    fn on_malformed(
        &mut self,
        flow: Flow,
        bytes: &[u8],
        response: Option<(u16, &'static str)>,
        why: &str,
    ) {
        self.stats.malformed += 1;
        let Some((status, reason)) = response else {
            debug!(remote = %flow.remote, error = %why, "malformed message dropped");
            return;
        };
        match error_response(bytes, status, reason) {
            Some((resp, rport, via_port)) => {
                info!(remote = %flow.remote, status, error = %why, "malformed request refused");
                self.send_to_flow(&flow, rport, via_port, resp);
            }
            None => {
                debug!(remote = %flow.remote, error = %why, "malformed request dropped: no answer can be built")
            }
        }
    }

    fn on_request(&mut self, now: Instant, flow: Flow, req: Message) {
        let Some(method) = req.method().cloned() else {
            return;
        };
        let call_id = String::from_utf8_lossy(req.call_id().unwrap_or_default()).into_owned();
        let span = info_span!("admit", method = method.as_str(), call_id = %call_id, side = flow.side.as_str(), remote = %flow.remote);
        let _g = span.enter();

        let Some(facts) = request_facts(&req) else {
            // The parser guarantees these headers on requests; be defensive all the same.
            return;
        };
        let key = ServerKey::for_request(&facts);

        match method {
            Method::Ack => return self.on_ack(now, flow, req, key),
            Method::Cancel if !self.servers.contains_key(&key) => {
                let invite = ServerKey::invite_for_cancel(&facts);
                return self.on_cancel(now, flow, req, key, invite);
            }
            _ => {}
        }

        // Retransmission of a request we already have a transaction for (§17.2.3).
        if let Some(e) = self.servers.get_mut(&key) {
            e.txn.handle_retransmission(now);
            self.drain_server(now, &key);
            return;
        }

        if method == Method::Bye {
            self.end_session(req.call_id().unwrap_or_default());
        }
        let is_invite = method == Method::Invite;
        let mut entry = ServerEntry {
            txn: ServerTxn::new(now, is_invite, flow.transport.is_reliable(), &self.timers),
            slot: None,
            flow,
            rport: via_rport(&req),
            via_port: via_port(&req),
            ctx: None,
        };
        // §16.2 / §17.2.1: a proxy answers INVITE with 100 Trying at once.
        if is_invite {
            let trying = build_response(&req, 100, "Trying", None, &[]);
            entry.txn.send_response(now, 100, trying);
        }
        self.servers.insert(key.clone(), entry);
        self.drain_server(now, &key);

        if let Err(r) = self.admit(&flow, &req, &method) {
            self.stats.rejected += 1;
            info!(status = r.status, reason = %r.reason, "request refused");
            let extra: Vec<(&str, &[u8])> =
                r.extra.iter().map(|(n, v)| (*n, v.as_slice())).collect();
            self.respond(now, &key, &req, r.status, &r.reason, &extra);
            return;
        }

        // OPTIONS addressed to us (no user part, our host, no Route): answer ourselves.
        if method == Method::Options
            && req.routes().next().is_none()
            && self.is_us_uri(req.request_uri())
        {
            let contact = format!(
                "<sip:{}:{};transport={}>",
                self.cfg.fqdn_for(flow.side),
                flow.local.port(),
                flow.transport.uri_param()
            );
            self.respond(
                now,
                &key,
                &req,
                200,
                "OK",
                &[
                    ("Allow", ALLOW.as_bytes()),
                    ("Accept", b"application/sdp"),
                    ("Contact", contact.as_bytes()),
                    ("Supported", b""),
                ],
            );
            return;
        }

        self.route_and_forward(now, key, flow, req);
    }

    /// The admit phase: returns the rejection, if any.
    fn admit(&self, flow: &Flow, req: &Message, method: &Method) -> Result<(), Refusal> {
        let sender =
            self.table
                .identify_flow(flow.side, flow.remote.ip(), flow.identity.as_deref());
        if sender.is_none() {
            return Err(Refusal::new(
                403,
                format!(
                    "{} is neither a configured {} nor {}",
                    flow.remote.ip(),
                    if flow.side == Side::Gateway {
                        "gateway"
                    } else {
                        "cloud peer"
                    },
                    if flow.side == Side::Gateway {
                        "allowed on the gateway side"
                    } else {
                        "allowed on the cloud side"
                    }
                ),
            ));
        }
        if self.draining
            && *method == Method::Invite
            && req.to_hdr().and_then(|t| t.tag()).is_none()
        {
            return Err(Refusal::new(503, "Service Unavailable".into()).with("Retry-After", b"60"));
        }
        // §16.3 step 3.
        if req.max_forwards() == Some(0)
            && !(*method == Method::Options && self.is_us_uri(req.request_uri()))
        {
            return Err(Refusal::new(483, "Too Many Hops".into()));
        }
        // §16.3 step 5: we support no extension a proxy could be required to.
        let required: Vec<&[u8]> = req
            .header_values(HeaderName::ProxyRequire)
            .filter(|v| !v.is_empty())
            .collect();
        if !required.is_empty() {
            return Err(Refusal::new(420, "Bad Extension".into())
                .with("Unsupported", &required.join(&b", "[..])));
        }
        // §16.3 step 1: Request-URI scheme.
        match req.request_uri().map(|u| u.scheme()) {
            Some(Scheme::Sip | Scheme::Sips | Scheme::Tel) => {}
            _ => return Err(Refusal::new(416, "Unsupported URI Scheme".into())),
        }
        // §16.3 step 4: loop detection. The branch comparison of §16.6 step 8 cannot see a
        // loop through this appliance (the hash covers the topmost Via, which is ours when the
        // request comes back), and spirals have no place here: we never route to ourselves. So
        // any Via of ours (our FQDN with one of our ports) in a request reaching us is a loop.
        for v in req.vias() {
            let ours_host = [Side::Gateway, Side::Cloud].iter().any(|s| {
                v.host()
                    .eq_ignore_ascii_case(self.cfg.fqdn_for(*s).as_str())
            });
            let ours_port = v
                .port()
                .is_some_and(|p| self.local.values().any(|a| a.port() == p));
            if ours_host && ours_port {
                return Err(Refusal::new(482, "Loop Detected".into()));
            }
        }
        Ok(())
    }

    fn on_ack(&mut self, now: Instant, flow: Flow, req: Message, key: ServerKey) {
        if let Some(e) = self.servers.get_mut(&key) {
            if e.txn.state() == State::Completed || e.txn.state() == State::Confirmed {
                // ACK for a non-2xx final: absorbed by the transaction (§17.2.1).
                e.txn.handle_ack(now);
                self.drain_server(now, &key);
                return;
            }
        }
        // ACK for a 2xx: a transaction of its own, forwarded statelessly by its Route set
        // (§16.6, RFC 6026 §6).
        if self
            .table
            .identify_flow(flow.side, flow.remote.ip(), flow.identity.as_deref())
            .is_none()
        {
            return;
        }
        if req.max_forwards() == Some(0) {
            return;
        }
        let target = match self.route_by_route_set(&flow, &req) {
            Some(Ok(t)) => t,
            Some(Err(RouteError::Unresolved(host))) => {
                return self.park(host, Parked::Ack { flow, req });
            }
            _ => {
                debug!("ACK with no route: dropped");
                return;
            }
        };
        let seed = req
            .top_via()
            .and_then(|v| v.branch())
            .unwrap_or_default()
            .to_vec();
        let branch = crate::txn::branch_for(&seed, u32::MAX);
        // An ACK may carry the answer to an offer in the 2xx (late offer, §13.2.1).
        let req = match self.anchor_request(now, &req, &flow, &target) {
            Ok(Some(r)) => r,
            _ => req,
        };
        if let Some(data) = self.build_forward(&req, &flow, &target, &branch, false) {
            self.stats.forwarded += 1;
            self.out.push_back(Transmit {
                side: target.hop.side,
                transport: target.hop.transport,
                remote: target.hop.addr,
                data,
            });
        }
    }

    fn on_cancel(
        &mut self,
        now: Instant,
        flow: Flow,
        req: Message,
        key: ServerKey,
        invite: ServerKey,
    ) {
        // The CANCEL is a transaction of its own; answer it 200 (§16.10) or 481.
        let mut entry = ServerEntry {
            txn: ServerTxn::new(now, false, flow.transport.is_reliable(), &self.timers),
            slot: None,
            flow,
            rport: via_rport(&req),
            via_port: via_port(&req),
            ctx: None,
        };
        let found = self.servers.get(&invite).is_some_and(|e| e.ctx.is_some());
        let resp = if found {
            build_response(&req, 200, "OK", None, &[])
        } else {
            build_response(&req, 481, "Call/Transaction Does Not Exist", None, &[])
        };
        entry
            .txn
            .send_response(now, if found { 200 } else { 481 }, resp);
        self.servers.insert(key.clone(), entry);
        self.drain_server(now, &key);
        if !found {
            return;
        }
        info!("CANCEL: cancelling pending branches");
        let mut to_cancel = Vec::new();
        let mut answer_487 = false;
        if let Some(e) = self.servers.get_mut(&invite) {
            if let Some(ctx) = e.ctx.as_mut() {
                ctx.cancelled = true;
                ctx.remaining.clear();
                match &ctx.current {
                    Some(k) => to_cancel.push(k.clone()),
                    None => answer_487 = !ctx.final_sent,
                }
            }
        }
        for k in to_cancel {
            self.cancel_branch(now, &k);
        }
        if answer_487 {
            if let Some(orig) = self
                .servers
                .get(&invite)
                .and_then(|e| e.ctx.as_ref())
                .map(|c| c.request.clone())
            {
                self.respond(now, &invite, &orig, 487, "Request Terminated", &[]);
            }
        }
    }

    // ---------------------------------------------------------------- route

    fn route_and_forward(&mut self, now: Instant, key: ServerKey, flow: Flow, req: Message) {
        let span = info_span!("route");
        let _g = span.enter();
        let targets: Vec<Target> = match self.route_by_route_set(&flow, &req) {
            Some(Ok(t)) => vec![t],
            Some(Err(RouteError::Refuse(status, reason))) => {
                self.stats.rejected += 1;
                info!(status, %reason, "route set refused");
                return self.respond(now, &key, &req, status, &reason, &[]);
            }
            Some(Err(RouteError::Unresolved(host))) => {
                debug!(%host, "resolving next hop");
                return self.park(host, Parked::Request { key, flow, req });
            }
            None => {
                let Some(sender) =
                    self.table
                        .identify_flow(flow.side, flow.remote.ip(), flow.identity.as_deref())
                else {
                    return self.respond(now, &key, &req, 403, "Forbidden", &[]);
                };
                self.spread = self.spread.wrapping_add(1);
                if req.method() == Some(&Method::Invite) {
                    self.stats.calls += 1;
                }
                let dir = self.dir.load();
                let live = self.live();
                let routed = routing::route(&req, &sender, &self.table, &dir, &live, self.spread);
                for line in &routed.trace {
                    debug!(trace = %line);
                }
                match routed.decision {
                    Decision::Reject {
                        status,
                        reason,
                        headers,
                    } => {
                        self.stats.rejected += 1;
                        info!(status, %reason, trace = ?routed.trace, "routing refused");
                        let extra: Vec<(&str, &[u8])> =
                            headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
                        return self.respond(now, &key, &req, status, &reason, &extra);
                    }
                    Decision::Forward {
                        targets,
                        rewrite_host,
                        request_uri,
                    } => {
                        if let Sender::Gateway { name, .. } = &sender {
                            debug!(gateway = %name, "inbound call from gateway");
                        }
                        targets
                            .into_iter()
                            .map(|hop| Target {
                                hop,
                                rewrite_host,
                                request_uri: request_uri.clone(),
                                strict_route: None,
                            })
                            .collect()
                    }
                }
            }
        };
        let ctx = ResponseContext {
            request: req,
            remaining: targets.into(),
            current: None,
            best: None,
            final_sent: false,
            cancelled: false,
            branch_index: 0,
        };
        if let Some(e) = self.servers.get_mut(&key) {
            e.ctx = Some(ctx);
        }
        self.forward_next(now, &key);
    }

    /// Routes by the Route header set (§16.4, §16.6 steps 6-7). `None`: no Route set to
    /// follow (an initial request for the routing policy).
    fn route_by_route_set(&self, flow: &Flow, req: &Message) -> Option<Result<Target, RouteError>> {
        let mut routes: Vec<NameAddr<'_>> = req.routes().collect();
        // Our own entries (one or two: the double Record-Route of RFC 5658) are popped.
        let ours = routes
            .iter()
            .take_while(|r| self.is_us_uri(Some(r.uri())))
            .count();
        routes.drain(..ours);
        let in_dialog = req.to_hdr().and_then(|t| t.tag()).is_some();
        // §16.4: a strict router before us put our Record-Route value into the Request-URI;
        // the real target is the last Route value.
        if ours == 0 && in_dialog {
            let ruri = req.request_uri()?;
            if self.is_us_uri(Some(ruri)) && ruri.user().is_none() {
                let Some(last) = routes.last() else {
                    return Some(Err(RouteError::Refuse(
                        404,
                        "Not Found: Request-URI is this proxy".into(),
                    )));
                };
                let uri = last.uri();
                let new_ruri = String::from_utf8_lossy(uri.raw()).into_owned();
                return Some(self.uri_target(flow.side.other(), &uri).map(|hop| Target {
                    hop,
                    rewrite_host: false,
                    request_uri: None,
                    strict_route: Some(new_ruri),
                }));
            }
        }
        if ours == 0 {
            if in_dialog {
                // A mid-dialog request that was not record-routed through us: following its
                // Route or Request-URI to any host would make us an open relay.
                return Some(Err(RouteError::Refuse(
                    403,
                    "Forbidden: dialog not routed through this proxy".into(),
                )));
            }
            // An initial request: the routing policy decides (a preloaded foreign Route is
            // left in place for the next hop).
            return None;
        }
        let uri = if let Some(next) = routes.first() {
            next.uri()
        } else {
            let ruri = req.request_uri()?;
            if self.is_us_uri(Some(ruri)) {
                if !in_dialog {
                    // Our Route, then us again: an initial request for the policy.
                    return None;
                }
                return Some(Err(RouteError::Refuse(
                    404,
                    "Not Found: Request-URI is this proxy".into(),
                )));
            }
            ruri
        };
        Some(self.uri_target(flow.side.other(), &uri).map(|hop| Target {
            hop,
            rewrite_host: false,
            request_uri: None,
            strict_route: None,
        }))
    }

    /// Resolves a URI (from a Route or the Request-URI) into a next hop on `side`.
    fn uri_target(&self, side: Side, uri: &Uri<'_>) -> Result<NextHop, RouteError> {
        let maddr = uri.param("maddr").flatten();
        let host = String::from_utf8_lossy(maddr.unwrap_or(uri.host())).into_owned();
        let transport = match uri.param("transport").flatten() {
            Some(t) if t.eq_ignore_ascii_case(b"tcp") => Transport::Tcp,
            Some(t) if t.eq_ignore_ascii_case(b"tls") => Transport::Tls,
            Some(t) if t.eq_ignore_ascii_case(b"udp") => Transport::Udp,
            Some(_) => {
                return Err(RouteError::Refuse(
                    503,
                    "unsupported transport in route".into(),
                ))
            }
            None if uri.scheme() == Scheme::Sips => Transport::Tls,
            None => Transport::Udp,
        };
        let port = uri.port().unwrap_or(if transport == Transport::Tls {
            5061
        } else {
            5060
        });
        // Static entries first (IP literals, `[hosts]`), then what the system resolver said.
        let ip = match self.cfg.static_host(&host) {
            Some(ip) => ip,
            None => match self.dns.get(&host) {
                Some((Some(ip), _)) => *ip,
                Some((None, _)) => {
                    return Err(RouteError::Refuse(
                        503,
                        format!("next hop {host} does not resolve"),
                    ))
                }
                None => return Err(RouteError::Unresolved(host)),
            },
        };
        // Broadcast and unspecified addresses are never a next hop (RFC 4475 bcast).
        if ip.is_unspecified() || ip == IpAddr::V4(std::net::Ipv4Addr::BROADCAST) {
            return Err(RouteError::Refuse(
                400,
                format!("next hop {ip} is not a unicast address"),
            ));
        }
        Ok(NextHop {
            name: host,
            addr: SocketAddr::new(ip, port),
            transport,
            side,
        })
    }

    /// Is this URI one of ours (mediation or access edge FQDN, or a listener address)?
    fn is_us_uri(&self, uri: Option<Uri<'_>>) -> bool {
        let Some(uri) = uri else { return false };
        let host = uri.host();
        let host = std::str::from_utf8(host).unwrap_or("");
        if self
            .table
            .own_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(host))
        {
            return true;
        }
        let port = uri.port().unwrap_or(5060);
        let ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>();
        match ip {
            Ok(ip) => self
                .local
                .values()
                .any(|a| a.ip() == ip && a.port() == port),
            Err(_) => false,
        }
    }

    // ---------------------------------------------------------------- forward

    fn forward_next(&mut self, now: Instant, key: &ServerKey) {
        let span = info_span!("forward");
        let _g = span.enter();
        let Some(e) = self.servers.get_mut(key) else {
            return;
        };
        let flow = e.flow;
        let Some(ctx) = e.ctx.as_mut() else { return };
        let Some(target) = ctx.remaining.pop_front() else {
            // Nothing left to try: send the best response we have (§16.7 step 6).
            return self.send_best(now, key);
        };
        let idx = ctx.branch_index;
        ctx.branch_index += 1;
        let mut req = ctx.request.clone();
        if idx == 0 {
            // Media anchoring: the SDP is rewritten once; failover targets get the same copy.
            match self.anchor_request(now, &req, &flow, &target) {
                Ok(None) => {}
                Ok(Some(r)) => {
                    if let Some(ctx) = self.servers.get_mut(key).and_then(|e| e.ctx.as_mut()) {
                        ctx.request = r.clone();
                    }
                    req = r;
                }
                Err(r) => {
                    self.stats.rejected += 1;
                    return self.respond(now, key, &req, r.status, &r.reason, &[]);
                }
            }
        }
        let branch = key.branch_for_target(idx);
        let is_invite = req.method() == Some(&Method::Invite);
        let Some(data) = self.build_forward(&req, &flow, &target, &branch, is_invite) else {
            return self.respond(now, key, &req, 500, "Server Internal Error", &[]);
        };
        let Ok(sent) = Message::parse(data.clone()) else {
            return self.respond(now, key, &req, 500, "Server Internal Error", &[]);
        };
        let ckey = ClientKey::new(
            branch.as_bytes(),
            req.method().map_or("", |m| m.as_str()).as_bytes(),
        );
        info!(target = %target.hop.name, addr = %target.hop.addr, transport = target.hop.transport.via_token(), "forwarding");
        self.stats.forwarded += 1;
        let txn = ClientTxn::new(
            now,
            is_invite,
            data,
            target.hop.transport.is_reliable(),
            &self.timers,
        );
        let deadline = is_invite.then(|| now + self.cfg.routing.failover_timer);
        self.clients.insert(
            ckey.clone(),
            ClientEntry {
                txn,
                slot: None,
                hop: target.hop,
                sent,
                parent: Some(key.clone()),
                is_invite,
                got_provisional: false,
                cancel_pending: false,
                branch_deadline: deadline,
                abandoned: false,
            },
        );
        if let Some(ctx) = self.servers.get_mut(key).and_then(|e| e.ctx.as_mut()) {
            ctx.current = Some(ckey.clone());
        }
        self.drain_client(now, &ckey);
    }

    /// Builds the forwarded copy of `req` for `target` (§16.6): Request-URI, Route pop,
    /// Max-Forwards, Record-Route, Via.
    fn build_forward(
        &self,
        req: &Message,
        flow: &Flow,
        target: &Target,
        branch: &str,
        record_route: bool,
    ) -> Option<Bytes> {
        let mut ed = req.edit();
        // Our own Route entries go (§16.4).
        let ours = req
            .routes()
            .take_while(|r| self.is_us_uri(Some(r.uri())))
            .count();
        ed.pop_routes(ours);
        if let Some(new_ruri) = &target.strict_route {
            // §16.4: Request-URI := last Route value, which leaves the Route set. The kept
            // values are written back in order (after the other header fields).
            let kept: Vec<&[u8]> = req.routes().map(|r| r.raw()).collect();
            let kept = kept.get(..kept.len().saturating_sub(1)).unwrap_or_default();
            ed.set_request_uri(new_ruri.as_bytes());
            ed.remove_headers(HeaderName::Route);
            for r in kept {
                ed.add_header("Route", r);
            }
        }
        if let Some(new) = &target.request_uri {
            ed.set_request_uri(new.as_bytes());
        } else if target.rewrite_host {
            let uri = req.request_uri()?;
            if let Some(new) = rewrite_uri_host(&uri, &target.hop.name) {
                ed.set_request_uri(new.as_bytes());
            }
        }
        // §16.6 step 3.
        ed.set_max_forwards(req.max_forwards().map_or(70, |m| m.saturating_sub(1)));
        let out_side = target.hop.side;
        let out_t = target.hop.transport;
        let out_port = self
            .local
            .get(&(out_side, out_t))
            .map_or(5060, |a| a.port());
        let dialog_forming = record_route
            || matches!(req.method(), Some(Method::Subscribe | Method::Refer))
                && req.to_hdr().and_then(|t| t.tag()).is_none();
        if dialog_forming {
            // RFC 5658 double Record-Route: the inbound interface first, then the outbound one on
            // top, so each side's route set starts with the interface it reaches us on.
            let rr_in = format!(
                "<sip:{}:{};transport={};lr>",
                self.cfg.fqdn_for(flow.side),
                flow.local.port(),
                flow.transport.uri_param()
            );
            let rr_out = format!(
                "<sip:{}:{};transport={};lr>",
                self.cfg.fqdn_for(out_side),
                out_port,
                out_t.uri_param()
            );
            // Both land above the existing Record-Routes, in call order.
            ed.add_record_route(rr_out.as_bytes());
            ed.add_record_route(rr_in.as_bytes());
        }
        // §18.2.1 / RFC 3581 §4: record where the request really came from in its top Via.
        if let Some(v) = req.top_via() {
            let ip = flow.remote.ip().to_string();
            let rport = v.rport().is_some();
            if rport || v.host().trim_start_matches('[').trim_end_matches(']') != ip {
                ed.set_via_received(ip.as_bytes(), rport.then_some(flow.remote.port()));
            }
        }
        let via = format!(
            "SIP/2.0/{} {}:{};branch={};rport",
            out_t.via_token(),
            self.cfg.fqdn_for(out_side),
            out_port,
            branch
        );
        ed.push_via(via.as_bytes());
        Some(ed.finish())
    }

    // ---------------------------------------------------------------- relay response

    fn on_response(&mut self, now: Instant, flow: Flow, resp: Message) {
        let (Some(status), Some(via)) = (resp.status(), resp.top_via()) else {
            return;
        };
        let Some(branch) = via.branch() else {
            self.stats.stray_responses += 1;
            return;
        };
        let Some(cseq) = resp.cseq() else { return };
        let key = ClientKey::new(branch, cseq.method.as_str().as_bytes());
        let span = info_span!("relay_response", status, side = flow.side.as_str());
        let _g = span.enter();
        let Some(c) = self.clients.get_mut(&key) else {
            // RFC 6026 §7.3 / §16.7 step 3: a response matching no client transaction is stray.
            self.stats.stray_responses += 1;
            debug!(status, "stray response dropped");
            return;
        };
        if let Some(name) = self.probes.get(&key) {
            // An answer to our OPTIONS: the target is alive; consumed here, never relayed.
            self.health.on_answer(now, name);
        }
        let ack = (c.is_invite && status >= 300)
            .then(|| build_ack(&c.sent, &resp))
            .flatten();
        c.txn.handle_response(now, status, ack);
        if (101..200).contains(&status) {
            c.got_provisional = true;
            // The far end is alive: the failover timer gives way to Timer C (§16.6 step 11).
            if c.is_invite {
                c.branch_deadline = Some(now + TIMER_C);
            }
        } else if status >= 200 {
            c.branch_deadline = None;
        }
        let cancel_now = c.cancel_pending && (101..200).contains(&status);
        if cancel_now {
            c.cancel_pending = false;
        }
        self.drain_client_with(now, &key, Some(&resp));
        if cancel_now {
            self.cancel_branch(now, &key);
        }
    }
}

impl Core {
    // ---------------------------------------------------------------- transaction plumbing

    fn drain_client(&mut self, now: Instant, key: &ClientKey) {
        self.drain_client_with(now, key, None);
    }

    /// Moves a client transaction's output to the wire and its events to the response context.
    /// `resp` is the response just handled, if any (the events refer to it).
    fn drain_client_with(&mut self, now: Instant, key: &ClientKey, resp: Option<&Message>) {
        let mut events = Vec::new();
        {
            let Some(c) = self.clients.get_mut(key) else {
                return;
            };
            while let Some(data) = c.txn.poll_transmit() {
                self.out.push_back(Transmit {
                    side: c.hop.side,
                    transport: c.hop.transport,
                    remote: c.hop.addr,
                    data,
                });
            }
            while let Some(ev) = c.txn.poll_event() {
                events.push(ev);
            }
        }
        for ev in events {
            self.client_event(now, key, ev, resp);
        }
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if c.txn.is_terminated() {
            if let Some((slot, _)) = c.slot.take() {
                self.slots.remove(&slot);
            }
            self.clients.remove(key);
            self.probes.remove(key);
            return;
        }
        let at = match (c.txn.poll_timeout(), c.branch_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let slot = c.slot;
        let new = self.reschedule(slot, at, TimerSlot::Client(key.clone()));
        if let Some(c) = self.clients.get_mut(key) {
            c.slot = new;
        }
    }

    fn drain_server(&mut self, now: Instant, key: &ServerKey) {
        let _ = now;
        let Some(e) = self.servers.get_mut(key) else {
            return;
        };
        while let Some(data) = e.txn.poll_transmit() {
            let remote = response_addr(&e.flow, e.rport, e.via_port);
            self.out.push_back(Transmit {
                side: e.flow.side,
                transport: e.flow.transport,
                remote,
                data,
            });
        }
        while let Some(ev) = e.txn.poll_event() {
            match ev {
                ServerEvent::Timeout => {
                    debug!("server transaction timed out waiting for ACK (Timer H)")
                }
                ServerEvent::TransportError => debug!("server transaction transport error"),
                ServerEvent::Terminated => {}
            }
        }
        if e.txn.is_terminated() {
            if let Some((slot, _)) = e.slot.take() {
                self.slots.remove(&slot);
            }
            self.servers.remove(key);
            return;
        }
        let at = e.txn.poll_timeout();
        let slot = e.slot;
        let new = self.reschedule(slot, at, TimerSlot::Server(key.clone()));
        if let Some(e) = self.servers.get_mut(key) {
            e.slot = new;
        }
    }

    /// Keeps one live heap slot per transaction, at its next deadline.
    fn reschedule(
        &mut self,
        old: Option<(u64, Instant)>,
        at: Option<Instant>,
        which: TimerSlot,
    ) -> Option<(u64, Instant)> {
        match (old, at) {
            (Some((slot, t)), Some(a)) if t == a => Some((slot, t)),
            (old, at) => {
                if let Some((slot, _)) = old {
                    self.slots.remove(&slot);
                }
                let a = at?;
                let slot = self.next_slot;
                self.next_slot += 1;
                self.slots.insert(slot, which);
                self.heap.push(Reverse((a, slot)));
                Some((slot, a))
            }
        }
    }

    /// The failover timer or Timer C of an INVITE branch fired.
    fn client_branch_timer(&mut self, now: Instant, key: &ClientKey) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        let Some(d) = c.branch_deadline else { return };
        if d > now {
            return;
        }
        c.branch_deadline = None;
        let rang = c.got_provisional;
        let parent = c.parent.clone();
        if c.abandoned {
            return;
        }
        c.abandoned = true;
        warn!(target = %c.hop.name, "no answer in time: abandoning branch");
        // §9.1: a CANCEL only after a provisional response; else the INVITE times out by itself.
        if rang {
            self.cancel_branch(now, key);
        } else if let Some(c) = self.clients.get_mut(key) {
            c.cancel_pending = true;
        }
        if let Some(p) = parent {
            self.branch_failed(now, &p, key, None, 408);
        }
    }

    fn client_event(
        &mut self,
        now: Instant,
        key: &ClientKey,
        ev: ClientEvent,
        resp: Option<&Message>,
    ) {
        let Some(c) = self.clients.get(key) else {
            return;
        };
        let Some(parent) = c.parent.clone() else {
            return;
        };
        let abandoned = c.abandoned;
        match ev {
            ClientEvent::Provisional(code) => {
                // §16.7 step 5: 100 is not forwarded; other provisionals are.
                if code > 100 && !abandoned {
                    if let Some(r) = resp {
                        self.relay_upstream(now, &parent, r, code);
                    }
                }
            }
            ClientEvent::Final(code) if (200..300).contains(&code) => {
                // 2xx are forwarded at once, every one of them (§16.7 step 5, RFC 6026).
                if let Some(r) = resp {
                    self.count_session(key, r);
                    if let Some(ctx) = self.servers.get_mut(&parent).and_then(|e| e.ctx.as_mut()) {
                        ctx.final_sent = true;
                        ctx.remaining.clear();
                    }
                    self.relay_upstream(now, &parent, r, code);
                }
            }
            ClientEvent::Final(code) => {
                if !abandoned {
                    self.branch_failed(now, &parent, key, resp.cloned(), code);
                }
            }
            ClientEvent::Timeout | ClientEvent::TransportError => {
                if !abandoned {
                    info!(
                        "branch failed: {}",
                        if matches!(ev, ClientEvent::Timeout) {
                            "timeout"
                        } else {
                            "transport error"
                        }
                    );
                    self.branch_failed(
                        now,
                        &parent,
                        key,
                        None,
                        if matches!(ev, ClientEvent::Timeout) {
                            408
                        } else {
                            503
                        },
                    );
                }
            }
        }
    }

    /// The fail phase: a branch ended without a 2xx. Fail over to the next target when the code
    /// allows it, else settle the best response (§16.7 step 6).
    fn branch_failed(
        &mut self,
        now: Instant,
        parent: &ServerKey,
        key: &ClientKey,
        resp: Option<Message>,
        code: u16,
    ) {
        let span = info_span!("fail", code);
        let _g = span.enter();
        let failover_codes = self.cfg.routing.failover_codes.clone();
        let Some(e) = self.servers.get_mut(parent) else {
            return;
        };
        let Some(ctx) = e.ctx.as_mut() else { return };
        if ctx.current.as_ref() == Some(key) {
            ctx.current = None;
        }
        if ctx.final_sent {
            return;
        }
        if let Some(r) = resp {
            let better = ctx
                .best
                .as_ref()
                .and_then(|b| b.status())
                .is_none_or(|b| rank(code) < rank(b));
            if better {
                ctx.best = Some(r);
            }
        }
        let retry = !ctx.cancelled
            && code != 603
            && failover_codes.contains(&code)
            && !ctx.remaining.is_empty();
        if retry {
            self.stats.failovers += 1;
            info!(code, "failing over to the next target");
            self.forward_next(now, parent);
        } else {
            if let Some(ctx) = self.servers.get_mut(parent).and_then(|e| e.ctx.as_mut()) {
                ctx.remaining.clear();
            }
            self.send_best_or(now, parent, code);
        }
    }

    fn send_best(&mut self, now: Instant, key: &ServerKey) {
        self.send_best_or(now, key, 408);
    }

    /// Sends the best final response upstream, or a locally generated `fallback`.
    fn send_best_or(&mut self, now: Instant, key: &ServerKey, fallback: u16) {
        let Some(e) = self.servers.get_mut(key) else {
            return;
        };
        let Some(ctx) = e.ctx.as_mut() else { return };
        if ctx.final_sent {
            return;
        }
        let best = ctx.best.take();
        let req = ctx.request.clone();
        let cancelled = ctx.cancelled;
        match best {
            Some(r) => {
                let code = r.status().unwrap_or(500);
                if code == 503 {
                    // §16.7 step 6 / §21.5.4: a 503 from downstream is not passed upstream as such.
                    self.respond(
                        now,
                        key,
                        &req,
                        500,
                        "Server Internal Error",
                        &[("Reason", b"SIP;cause=503;text=\"next hop unavailable\"")],
                    );
                } else {
                    self.relay_upstream(now, key, &r, code);
                }
            }
            None if cancelled => self.respond(now, key, &req, 487, "Request Terminated", &[]),
            None => {
                let (code, reason) = if fallback == 503 {
                    (503, "Service Unavailable")
                } else {
                    (408, "Request Timeout")
                };
                let retry_after: &[(&str, &[u8])] = if code == 503 {
                    &[("Retry-After", b"30")]
                } else {
                    &[]
                };
                self.respond(now, key, &req, code, reason, retry_after);
            }
        }
    }

    /// Forwards a downstream response upstream (§16.7 step 9: our Via removed).
    fn relay_upstream(&mut self, now: Instant, key: &ServerKey, resp: &Message, code: u16) {
        let anchored = self.anchor_response(now, key, resp, code);
        let resp = anchored.as_ref().unwrap_or(resp);
        let mut ed = resp.edit();
        ed.pop_via();
        let data = ed.finish();
        let Some(e) = self.servers.get_mut(key) else {
            return;
        };
        if code >= 200 {
            if let Some(ctx) = e.ctx.as_mut() {
                if !ctx.final_sent {
                    ctx.final_sent = true;
                    log_outcome(ctx, code, "relayed");
                }
            }
        }
        e.txn.send_response(now, code, data);
        self.drain_server(now, key);
    }

    /// Sends a locally generated response through the server transaction.
    fn respond(
        &mut self,
        now: Instant,
        key: &ServerKey,
        req: &Message,
        status: u16,
        reason: &str,
        extra: &[(&str, &[u8])],
    ) {
        let tag =
            (status > 100 && req.to_hdr().and_then(|t| t.tag()).is_none()).then(|| local_tag(key));
        let data = build_response(
            req,
            status,
            reason,
            tag.as_deref().map(str::as_bytes),
            extra,
        );
        if status >= 300 {
            *self.stats.rejects_by_status.entry(status).or_insert(0) += 1;
        }
        let Some(e) = self.servers.get_mut(key) else {
            return;
        };
        if status >= 200 {
            if let Some(ctx) = e.ctx.as_mut() {
                if !ctx.final_sent {
                    ctx.final_sent = true;
                    log_outcome(ctx, status, "local");
                }
            }
        }
        let responder = e.flow.side.other();
        e.txn.send_response(now, status, data);
        self.drain_server(now, key);
        if status >= 300 {
            if let Some(a) = self.anchor.as_mut() {
                a.on_local_final(req, status, responder);
            }
        }
    }

    /// Sends a CANCEL for an INVITE branch (§9.1): same Request-URI, Call-ID, From, To, CSeq
    /// number and the single Via of the request it cancels, with its Route set.
    fn cancel_branch(&mut self, now: Instant, key: &ClientKey) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if !c.got_provisional {
            c.cancel_pending = true;
            return;
        }
        if c.txn.state() != State::Proceeding {
            return;
        }
        let Some(data) = build_cancel(&c.sent) else {
            return;
        };
        let hop = c.hop.clone();
        let ckey = ClientKey {
            branch: key.branch.clone(),
            method: crate::txn::TxnMethod::Cancel,
        };
        if self.clients.contains_key(&ckey) {
            return;
        }
        self.start_own_request(now, ckey, hop, data);
    }

    /// Starts a non-INVITE client transaction of our own (a CANCEL, an OPTIONS probe, a
    /// media-timeout BYE): no server transaction waits for its outcome. Returns false when the
    /// message we built does not parse back (our bug; logged by the caller).
    fn start_own_request(
        &mut self,
        now: Instant,
        ckey: ClientKey,
        hop: NextHop,
        data: Bytes,
    ) -> bool {
        let Ok(sent) = Message::parse(data.clone()) else {
            return false;
        };
        let txn = ClientTxn::new(now, false, data, hop.transport.is_reliable(), &self.timers);
        self.clients.insert(
            ckey.clone(),
            ClientEntry {
                txn,
                slot: None,
                hop,
                sent,
                parent: None,
                is_invite: false,
                got_provisional: false,
                cancel_pending: false,
                branch_deadline: None,
                // Without a parent, nothing is relayed or failed over from it.
                abandoned: false,
            },
        );
        self.drain_client(now, &ckey);
        true
    }

    fn send_to_flow(&mut self, flow: &Flow, rport: bool, via_port: Option<u16>, data: Bytes) {
        self.out.push_back(Transmit {
            side: flow.side,
            transport: flow.transport,
            remote: response_addr(flow, rport, via_port),
            data,
        });
    }
}

impl Core {
    // ---------------------------------------------------------------- media anchoring hooks

    /// Lets the anchor rewrite (or refuse) a request crossing from `flow` to `target`.
    fn anchor_request(
        &mut self,
        now: Instant,
        req: &Message,
        flow: &Flow,
        target: &Target,
    ) -> Result<Option<Message>, anchor::Refuse> {
        if target.hop.side == flow.side {
            return Ok(None);
        }
        let Some(a) = self.anchor.as_mut() else {
            return Ok(None);
        };
        let hop = anchor::Hop {
            from: flow.side,
            from_ip: flow.remote.ip(),
            to_name: &target.hop.name,
            to_ip: target.hop.addr.ip(),
        };
        a.on_request(now, req, hop)
    }

    /// Lets the anchor rewrite a response about to go upstream on `key`'s server transaction.
    fn anchor_response(
        &mut self,
        now: Instant,
        key: &ServerKey,
        resp: &Message,
        code: u16,
    ) -> Option<Message> {
        self.anchor.as_ref()?;
        let e = self.servers.get(key)?;
        let from = e.flow.side.other();
        let request = e.ctx.as_ref()?.request.clone();
        let dialog = ((200..300).contains(&code)
            && request.method() == Some(&Method::Invite)
            && request.to_hdr().and_then(|t| t.tag()).is_none())
        .then(|| self.dialog_info(&request, resp))
        .flatten();
        self.anchor
            .as_mut()?
            .on_response(now, &request, resp, from, dialog)
    }

    /// What a BYE of ours needs, from the initial INVITE and its 2xx (§12.1: remote targets
    /// from the Contacts, route sets from the Record-Routes beyond our own entries).
    fn dialog_info(&self, req: &Message, resp: &Message) -> Option<DialogInfo> {
        let raw = |n: &NameAddr<'_>| String::from_utf8_lossy(n.raw()).into_owned();
        let rrs: Vec<NameAddr<'_>> = resp.record_routes().collect();
        let ours: Vec<usize> = rrs
            .iter()
            .enumerate()
            .filter(|(_, r)| self.is_us_uri(Some(r.uri())))
            .map(|(i, _)| i)
            .collect();
        let (down, up) = match (ours.first(), ours.last()) {
            (Some(&f), Some(&l)) => (
                rrs.get(..f).unwrap_or_default(),
                rrs.get(l.saturating_add(1)..).unwrap_or_default(),
            ),
            _ => (rrs.as_slice(), &[][..]),
        };
        Some(DialogInfo {
            caller_contact: String::from_utf8_lossy(req.contact()?.uri().raw()).into_owned(),
            callee_contact: String::from_utf8_lossy(resp.contact()?.uri().raw()).into_owned(),
            routes_to_callee: down.iter().map(raw).collect(),
            routes_to_caller: up.iter().map(raw).collect(),
            caller_from: String::from_utf8_lossy(req.header(HeaderName::From)?).into_owned(),
            callee_to: String::from_utf8_lossy(resp.header(HeaderName::To)?).into_owned(),
        })
    }

    /// Media supervision: calls without media for `media_timeout` get a BYE on both legs.
    fn media_sweep(&mut self, now: Instant) {
        let Some(a) = self.anchor.as_mut() else {
            return;
        };
        if a.next_deadline().is_none_or(|t| t > now) {
            return;
        }
        for t in a.sweep(now) {
            for bye in &t.byes {
                self.send_bye(now, bye);
            }
        }
    }

    /// Sends a BYE of our own in its own client transaction (RFC 3261 §15.1.1 as a UAC for
    /// both sides: the dialog's identifiers, a CSeq above the sender's, RFC 3326 Reason).
    fn send_bye(&mut self, now: Instant, b: &ByeSpec) {
        let next = b
            .routes
            .first()
            .cloned()
            .unwrap_or_else(|| format!("<{}>", b.request_uri));
        let Ok(na) = NameAddr::parse(next.as_bytes()) else {
            warn!(call_id = %b.call_id, uri = %next, "BYE: next hop does not parse");
            return;
        };
        let hop = match self.uri_target(b.side, &na.uri()) {
            Ok(h) => h,
            Err(RouteError::Refuse(_, why) | RouteError::Unresolved(why)) => {
                // A Contact by name outside [hosts]: the BYE is not worth parking for the
                // resolver; the session is released already.
                warn!(call_id = %b.call_id, %why, "BYE: no next hop");
                return;
            }
        };
        let port = self
            .local
            .get(&(b.side, hop.transport))
            .map_or(5060, |a| a.port());
        let seed = format!("{}|{}", b.call_id, b.side.as_str());
        let branch = crate::txn::branch_for(seed.as_bytes(), u32::MAX - 3);
        let mut s = format!(
            "BYE {} SIP/2.0\r\nVia: SIP/2.0/{} {}:{};branch={};rport\r\n",
            b.request_uri,
            hop.transport.via_token(),
            self.cfg.fqdn_for(b.side),
            port,
            branch
        );
        for r in &b.routes {
            s.push_str(&format!("Route: {r}\r\n"));
        }
        s.push_str(&format!(
            "Max-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} BYE\r\n\
             Reason: {}\r\nContent-Length: 0\r\n\r\n",
            b.from,
            b.to,
            b.call_id,
            b.cseq,
            anchor::MEDIA_TIMEOUT_REASON
        ));
        let data = Bytes::from(s);
        let ckey = ClientKey::new(branch.as_bytes(), b"BYE");
        if self.clients.contains_key(&ckey) {
            return;
        }
        info!(call_id = %b.call_id, side = b.side.as_str(), addr = %hop.addr, "media timeout: BYE");
        if !self.start_own_request(now, ckey, hop, data) {
            warn!(call_id = %b.call_id, "BYE: built message does not parse");
        }
    }
}

/// The log phase: one line per proxied transaction when its final response goes upstream.
fn log_outcome(ctx: &ResponseContext, status: u16, origin: &str) {
    let span = info_span!("log");
    let _g = span.enter();
    let req = &ctx.request;
    info!(
        method = req.method().map_or("", |m| m.as_str()),
        call_id = %String::from_utf8_lossy(req.call_id().unwrap_or_default()),
        status,
        origin,
        branches = ctx.branch_index,
        cancelled = ctx.cancelled,
        "transaction completed"
    );
}

/// Preference of final responses (§16.7 step 6): 6xx first, then 2xx … ; within failover,
/// 4xx is preferred to 5xx so a definitive answer wins over a failure of ours.
impl Core {
    // ---------------------------------------------------------------- health and load

    /// Sends one round of OPTIONS probes (and re-evaluates health), then re-arms the timer.
    fn send_probes(&mut self, now: Instant) {
        let hops = self.health.poll_probe(now);
        for hop in hops {
            self.send_probe(now, hop);
        }
        let at = self.health.next_probe();
        self.reschedule(None, Some(at), TimerSlot::Probe);
    }

    /// One OPTIONS to `hop`, with a Contact carrying our FQDN toward its side. Its client
    /// transaction has no parent: the response is consumed by [`Core::on_response`] (health)
    /// and never relayed.
    fn send_probe(&mut self, now: Instant, hop: NextHop) {
        self.probe_count += 1;
        let n = self.probe_count;
        let fqdn = self.cfg.fqdn_for(hop.side).to_string();
        let port = self
            .local
            .get(&(hop.side, hop.transport))
            .map_or(5060, |a| a.port());
        let t = hop.transport;
        let branch = format!("z9hG4bK-sipedge-opt-{:x}-{n}", self.probe_seed);
        let text = format!(
            "OPTIONS sip:{name}:{hport};transport={tp} SIP/2.0\r\n\
             Via: SIP/2.0/{via} {fqdn}:{port};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{fqdn}>;tag=opt{seed:x}{n}\r\n\
             To: <sip:{name}>\r\n\
             Call-ID: opt-{seed:x}-{n}@{fqdn}\r\n\
             CSeq: 1 OPTIONS\r\n\
             Contact: <sip:{fqdn}:{port};transport={tp}>\r\n\
             Allow: {ALLOW}\r\n\
             Content-Length: 0\r\n\r\n",
            name = hop.name,
            hport = hop.addr.port(),
            tp = t.uri_param(),
            via = t.via_token(),
            seed = self.probe_seed,
        );
        let data = Bytes::from(text);
        let ckey = ClientKey::new(branch.as_bytes(), b"OPTIONS");
        let name = hop.name.clone();
        if self.start_own_request(now, ckey.clone(), hop, data) {
            self.stats.probes_sent += 1;
            self.probes.insert(ckey, name);
        }
    }

    /// A 2xx to an INVITE sent to a gateway: one more established call on it.
    fn count_session(&mut self, key: &ClientKey, resp: &Message) {
        let Some(c) = self.clients.get(key) else {
            return;
        };
        if !c.is_invite || c.hop.side != Side::Gateway {
            return;
        }
        let Some(call_id) = resp.call_id() else {
            return;
        };
        let name = c.hop.name.clone();
        if self.calls.contains_key(call_id) {
            return;
        }
        self.calls.insert(call_id.to_vec(), name.clone());
        *self.sessions.entry(name).or_insert(0) += 1;
    }

    /// A BYE ends the call with this Call-ID.
    fn end_session(&mut self, call_id: &[u8]) {
        if let Some(name) = self.calls.remove(call_id) {
            if let Some(n) = self.sessions.get_mut(&name) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

fn rank(code: u16) -> u16 {
    match code {
        600..=699 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// Where a response to a request received on `flow` goes (§18.2.2, RFC 3581 §4): streams
/// answer on the connection; datagrams to the source IP, and the source port when the Via
/// asked for rport, else the Via's sent-by port.
fn response_addr(flow: &Flow, rport: bool, via_port: Option<u16>) -> SocketAddr {
    if flow.transport.is_reliable() || rport {
        flow.remote
    } else {
        SocketAddr::new(flow.remote.ip(), via_port.unwrap_or(5060))
    }
}

fn via_rport(req: &Message) -> bool {
    req.top_via().is_some_and(|v| v.rport().is_some())
}

fn via_port(req: &Message) -> Option<u16> {
    req.top_via().and_then(|v| v.port())
}

fn request_facts(req: &Message) -> Option<RequestFacts<'_>> {
    let via = req.top_via()?;
    let uri = req.request_uri()?;
    let cseq = req.cseq()?;
    Some(RequestFacts {
        method: req.method()?.as_str().as_bytes(),
        branch: via.branch(),
        sent_by: sent_by(via.raw()),
        request_uri: uri.raw(),
        from_tag: req.from_hdr().and_then(|f| f.tag()),
        to_tag: req.to_hdr().and_then(|t| t.tag()),
        call_id: req.call_id()?,
        cseq: cseq.seq,
        top_via: via.raw(),
    })
}

/// The sent-by (`host[:port]`) of a raw Via value: after the protocol, before the first `;`.
fn sent_by(via: &[u8]) -> &[u8] {
    let after_proto = via
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .map_or(via, |i| via.get(i..).unwrap_or_default());
    let trimmed = after_proto.trim_ascii_start();
    let end = trimmed
        .iter()
        .position(|b| *b == b';')
        .unwrap_or(trimmed.len());
    trimmed.get(..end).unwrap_or_default().trim_ascii_end()
}

/// A To tag for responses we generate, stable for the transaction (retransmissions of the
/// request get the same tag).
fn local_tag(key: &ServerKey) -> String {
    let b = key.branch_for_target(u32::MAX - 1);
    b.get(7..19).unwrap_or("sipedge").to_owned()
}

/// Rewrites the host part of a SIP URI, keeping scheme, user and parameters; `tel:` URIs
/// become `sip:<number>@host;user=phone`.
fn rewrite_uri_host(uri: &Uri<'_>, host: &str) -> Option<String> {
    let user = uri.user().map(|u| String::from_utf8_lossy(u).into_owned());
    match uri.scheme() {
        Scheme::Tel => Some(format!(
            "sip:{}@{};user=phone",
            String::from_utf8_lossy(uri.host()),
            host
        )),
        Scheme::Sip | Scheme::Sips => {
            let scheme = if uri.scheme() == Scheme::Sips {
                "sips"
            } else {
                "sip"
            };
            let params = String::from_utf8_lossy(uri.params_raw());
            // maddr would send it elsewhere; the next hop is decided already.
            let params: String = params
                .split(';')
                .filter(|p| !p.is_empty() && !p.to_ascii_lowercase().starts_with("maddr="))
                .map(|p| format!(";{p}"))
                .collect();
            Some(match user {
                Some(u) => format!("{scheme}:{u}@{host}{params}"),
                None => format!("{scheme}:{host}{params}"),
            })
        }
        _ => None,
    }
}

/// The ACK for a non-2xx final response to an INVITE we sent (§17.1.1.3): To from the
/// response (with its tag).
fn build_ack(sent: &Message, resp: &Message) -> Option<Bytes> {
    hop_by_hop_request(sent, "ACK", resp.header(HeaderName::To)?)
}

/// A CANCEL for a request we sent (§9.1): To as in the request.
fn build_cancel(sent: &Message) -> Option<Bytes> {
    hop_by_hop_request(sent, "CANCEL", sent.header(HeaderName::To)?)
}

/// ACK and CANCEL share their shape (§9.1, §17.1.1.3): the Request-URI, the single (top) Via,
/// the Route set, From, Call-ID and CSeq number of the request they follow, with `method`.
fn hop_by_hop_request(sent: &Message, method: &str, to: &[u8]) -> Option<Bytes> {
    let uri = sent.request_uri()?;
    let top = sent.top_via()?;
    let cseq = sent.cseq()?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut s = String::with_capacity(512);
    s.push_str(&format!("{method} {} SIP/2.0\r\n", text(uri.raw())));
    s.push_str(&format!("Via: {}\r\n", text(top.raw())));
    for r in sent.routes() {
        s.push_str(&format!("Route: {}\r\n", text(r.raw())));
    }
    s.push_str("Max-Forwards: 70\r\n");
    s.push_str(&format!(
        "From: {}\r\n",
        text(sent.header(HeaderName::From)?)
    ));
    s.push_str(&format!("To: {}\r\n", text(to)));
    s.push_str(&format!("Call-ID: {}\r\n", text(sent.call_id()?)));
    s.push_str(&format!("CSeq: {} {method}\r\n", cseq.seq));
    s.push_str("Content-Length: 0\r\n\r\n");
    Some(Bytes::from(s))
}

/// A response to a request the parser refused (`sip::build_error_response` copies its own
/// Via, From, To, Call-ID and CSeq lines), with whether its top Via asked for rport and its
/// port, for §18.2.2 addressing. `None` when there is no Via to answer along.
fn error_response(raw: &[u8], status: u16, reason: &str) -> Option<(Bytes, bool, Option<u16>)> {
    let resp = build_error_response(raw, status, reason, Some(b"sipedge-err"))?;
    let parsed = Message::parse(resp.clone()).ok();
    let (rport, port) = parsed
        .as_ref()
        .and_then(|m| m.top_via())
        .map_or((false, None), |v| (v.rport().is_some(), v.port()));
    Some((resp, rport, port))
}
