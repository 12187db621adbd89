//! What the running appliance counts and publishes: the proxy core's and the media anchor's
//! counters, target health and load. The proxy writes these types, the composition root
//! (`server`) publishes a [`Published`] snapshot twice a second, and the admin API and
//! metrics read it. Pure data: neither `proxy` nor `admin` is imported here, so neither imports
//! the other.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::config::{Side, Transport};
use crate::media::{Drops, LegCounters, LegSnapshot};
use crate::routing::Live;

/// Counters of the proxy core.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProxyStats {
    pub requests_in: u64,
    pub responses_in: u64,
    /// Messages the parser refused (answered 4xx/5xx when an answer could be built).
    pub malformed: u64,
    /// Requests refused in the admit or route phase.
    pub rejected: u64,
    pub forwarded: u64,
    /// Responses matching no client transaction (RFC 6026 §7.3), dropped.
    pub stray_responses: u64,
    pub failovers: u64,
    /// New INVITEs routed by the policy (calls attempted).
    pub calls: u64,
    /// Final responses we generated ourselves to requests, by status.
    pub rejects_by_status: BTreeMap<u16, u64>,
    /// OPTIONS probes sent.
    pub probes_sent: u64,
    /// Requests (and malformed messages) from addresses that are no peer: no state, at most
    /// a rate-limited stateless 403.
    pub unknown_senders: u64,
    /// Requests shed by overload control, by reason (`ingress_full`: a datagram whose peer's
    /// ingress lane was full; `peer_rate`, `call_rate`, `calls`,
    /// `transactions`).
    pub shed: BTreeMap<&'static str, u64>,
    /// Responses from another address or identity than their request's hop (dropped; also
    /// counted as stray).
    pub foreign_responses: u64,
    /// Calls in progress (in setup or established) from the core's dialog table; `None`
    /// while the core keeps none (`sipedge_active_calls` then counts media sessions).
    pub active_calls: Option<u64>,
}

/// Counters of the media anchor.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AnchorStats {
    pub sessions_created: u64,
    pub sessions_released: u64,
    pub media_timeouts: u64,
    /// New calls refused with 503: no media ports left.
    pub ports_exhausted: u64,
    /// Requests refused for their SDP (488/400/491/415).
    pub sdp_refused: u64,
    /// SDP in a response that could not be anchored (relayed unchanged, logged).
    pub sdp_errors: u64,
    /// SDP media addresses refused by the address policy (loopback, multicast, our own …):
    /// requests answered 488, or a response's address never used as a destination.
    pub sdp_address_refused: u64,
}

/// Packets and bytes of one media leg, summed over calls.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LegTotals {
    /// Packets received on the leg (accepted or not).
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// RTCP packets among the accepted ones.
    pub rtcp_packets: u64,
    /// Packets sent out of the leg.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets dropped on receipt, by cause.
    pub drops: Drops,
    /// The part of the packets and bytes above that crossed while the leg was SRTP (filled
    /// from a [`LegSnapshot`], which knows the leg's SRTP state; zero from bare counters).
    pub srtp_rx_packets: u64,
    pub srtp_rx_bytes: u64,
    pub srtp_tx_packets: u64,
    pub srtp_tx_bytes: u64,
}

impl LegTotals {
    /// Adds one leg's counters.
    pub fn add(&mut self, other: &LegTotals) {
        self.rx_packets = self.rx_packets.saturating_add(other.rx_packets);
        self.rx_bytes = self.rx_bytes.saturating_add(other.rx_bytes);
        self.rtcp_packets = self.rtcp_packets.saturating_add(other.rtcp_packets);
        self.tx_packets = self.tx_packets.saturating_add(other.tx_packets);
        self.tx_bytes = self.tx_bytes.saturating_add(other.tx_bytes);
        self.srtp_rx_packets = self.srtp_rx_packets.saturating_add(other.srtp_rx_packets);
        self.srtp_rx_bytes = self.srtp_rx_bytes.saturating_add(other.srtp_rx_bytes);
        self.srtp_tx_packets = self.srtp_tx_packets.saturating_add(other.srtp_tx_packets);
        self.srtp_tx_bytes = self.srtp_tx_bytes.saturating_add(other.srtp_tx_bytes);
        let (d, o) = (&mut self.drops, &other.drops);
        d.foreign_source = d.foreign_source.saturating_add(o.foreign_source);
        d.srtp_auth = d.srtp_auth.saturating_add(o.srtp_auth);
        d.replay = d.replay.saturating_add(o.replay);
        d.srtp_index_reuse = d.srtp_index_reuse.saturating_add(o.srtp_index_reuse);
        d.malformed = d.malformed.saturating_add(o.malformed);
        d.no_route = d.no_route.saturating_add(o.no_route);
        d.send_error = d.send_error.saturating_add(o.send_error);
    }
}

impl From<&LegCounters> for LegTotals {
    fn from(c: &LegCounters) -> LegTotals {
        LegTotals {
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            rtcp_packets: c.rtcp_packets,
            tx_packets: c.tx_packets,
            tx_bytes: c.tx_bytes,
            drops: c.drops,
            ..LegTotals::default()
        }
    }
}

/// A leg's counters with its SRTP state: an SRTP leg's packets and bytes also count as SRTP
/// (`sipedge_media_packets_total{kind="srtp"}`). The anchor sums these when it uses
/// `LegTotals::from(&snapshot.a)` instead of `LegTotals::from(&snapshot.a.counters)`.
impl From<&LegSnapshot> for LegTotals {
    fn from(s: &LegSnapshot) -> LegTotals {
        let mut t = LegTotals::from(&s.counters);
        if s.srtp {
            t.srtp_rx_packets = t.rx_packets;
            t.srtp_rx_bytes = t.rx_bytes;
            t.srtp_tx_packets = t.tx_packets;
            t.srtp_tx_bytes = t.tx_bytes;
        }
        t
    }
}

/// The media anchor's state for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MediaSnapshot {
    pub stats: AnchorStats,
    /// Calls holding a media session now.
    pub active_calls: usize,
    /// Free and total port pairs of the media range.
    pub ports_available: usize,
    pub ports_capacity: usize,
    /// Per leg (0: gateway, 1: cloud), every call so far including the live ones.
    pub legs: [LegTotals; 2],
}

/// What the proxy publishes for metrics and `route explain`.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub proxy: ProxyStats,
    /// `None` without `[media]`.
    pub media: Option<MediaSnapshot>,
    /// Probed targets: name → healthy.
    pub health: HashMap<String, bool>,
    pub live: Live,
    /// The core is in maintenance mode (refusing new calls); published at once when it
    /// changes, so the API can answer once it is in force.
    pub maintenance: bool,
}

// ---------------------------------------------------------------- readiness

/// What `GET /readyz` answers from. `server` sets it: listeners bound and directory loaded at
/// start, draining from the first SIGTERM/SIGINT. Maintenance mode (another issue) sets
/// `maintenance` through [`Readiness::set_maintenance`]; a draining or maintained appliance
/// answers 503 so a load balancer or orchestrator sends no new calls. Shared as an
/// `Arc<Readiness>`; every flag is an atomic, read without a lock.
#[derive(Debug, Default)]
pub struct Readiness {
    listeners_bound: AtomicBool,
    directory_loaded: AtomicBool,
    draining: AtomicBool,
    maintenance: AtomicBool,
}

impl Readiness {
    pub fn set_listeners_bound(&self, v: bool) {
        self.listeners_bound.store(v, Ordering::Relaxed);
    }
    pub fn set_directory_loaded(&self, v: bool) {
        self.directory_loaded.store(v, Ordering::Relaxed);
    }
    pub fn set_draining(&self, v: bool) {
        self.draining.store(v, Ordering::Relaxed);
    }
    pub fn set_maintenance(&self, v: bool) {
        self.maintenance.store(v, Ordering::Relaxed);
    }
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
    pub fn maintenance(&self) -> bool {
        self.maintenance.load(Ordering::Relaxed)
    }

    /// Why the appliance is not ready (stable words, empty when ready): `listeners not bound`,
    /// `directory not loaded`, `draining`, `maintenance`.
    pub fn not_ready(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if !self.listeners_bound.load(Ordering::Relaxed) {
            v.push("listeners not bound");
        }
        if !self.directory_loaded.load(Ordering::Relaxed) {
            v.push("directory not loaded");
        }
        if self.draining() {
            v.push("draining");
        }
        if self.maintenance() {
            v.push("maintenance");
        }
        v
    }
}

// ---------------------------------------------------------------- TLS and connections

/// Why a TLS handshake was refused, as a bounded label: every reason the transport logs maps
/// to one of these ([`tls_refusal_category`]).
pub const TLS_REFUSAL_CATEGORIES: [&str; 15] = [
    "no_client_certificate",
    "unknown_issuer",
    "revoked",
    "expired",
    "not_yet_valid",
    "wrong_site",
    "not_configured",
    "name_not_allowed",
    "no_identity",
    "protocol_version",
    "no_common_cipher",
    "timeout",
    "too_many_handshakes",
    "connection_limit",
    "other",
];

/// The bounded category of a refusal reason as `transport::tls` words it
/// (`pki::tls::describe_refusal` and the accept loop's own reasons).
pub fn tls_refusal_category(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    let has = |s: &str| r.contains(s);
    if has("no client certificate") || has("no certificates presented") {
        "no_client_certificate"
    } else if has("revoked") {
        "revoked"
    } else if has("issuer unknown")
        || has("unknown issuer")
        || has("unknownissuer")
        || has("trusted only for")
    {
        "unknown_issuer"
    } else if has("not yet valid") || has("notvalidyet") {
        "not_yet_valid"
    } else if has("expired") {
        "expired"
    } else if has("belongs to site") {
        "wrong_site"
    } else if has("no configured gateway") {
        "not_configured"
    } else if has("not an allowed peer name") || has("not valid for name") {
        "name_not_allowed"
    } else if has("identity") || has("carries no dns name") || has("could not be parsed") {
        "no_identity"
    } else if has("older than tls 1.2") || has("protocol version") {
        "protocol_version"
    } else if has("cipher suite") {
        "no_common_cipher"
    } else if has("timed out") || has("timeout") {
        "timeout"
    } else if has("too many handshakes") {
        "too_many_handshakes"
    } else if has("connection limit") {
        "connection_limit"
    } else {
        "other"
    }
}

/// Who started a TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeDirection {
    /// A peer connected to our listener.
    Inbound,
    /// We connected to a peer.
    Outbound,
}

impl HandshakeDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeDirection::Inbound => "inbound",
            HandshakeDirection::Outbound => "outbound",
        }
    }
}

/// One refused TLS handshake, kept for the status page and `GET /tls/refusals`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsRefusal {
    pub at: SystemTime,
    pub side: Side,
    pub direction: HandshakeDirection,
    pub remote: SocketAddr,
    /// The reason as logged.
    pub reason: String,
    /// Its bounded category (one of [`TLS_REFUSAL_CATEGORIES`]).
    pub category: &'static str,
}

/// How many refusals [`TransportStats`] keeps (the newest).
pub const TLS_REFUSALS_KEPT: usize = 64;

const SIDES: [Side; 2] = [Side::Gateway, Side::Cloud];
const DIRECTIONS: [HandshakeDirection; 2] =
    [HandshakeDirection::Inbound, HandshakeDirection::Outbound];
const CATEGORIES: usize = TLS_REFUSAL_CATEGORIES.len();

fn side_index(s: Side) -> usize {
    match s {
        Side::Gateway => 0,
        Side::Cloud => 1,
    }
}

fn direction_index(d: HandshakeDirection) -> usize {
    match d {
        HandshakeDirection::Inbound => 0,
        HandshakeDirection::Outbound => 1,
    }
}

/// Index of a stream transport in the open-connection table; `None` for UDP.
fn stream_index(t: Transport) -> Option<usize> {
    match t {
        Transport::Udp => None,
        Transport::Tcp => Some(0),
        Transport::Tls => Some(1),
    }
}

/// TLS handshakes, refusals and open stream connections, counted by the transports with one
/// call at each place (see [`TRANSPORT`]). Atomics and a short mutex-guarded ring: cheap on the
/// accept and connection tasks, never on the core's loop.
#[derive(Debug)]
pub struct TransportStats {
    accepted: [[AtomicU64; 2]; 2],
    refused: [[[AtomicU64; CATEGORIES]; 2]; 2],
    open: [[AtomicI64; 2]; 2],
    refusals: Mutex<VecDeque<TlsRefusal>>,
    guards: [AtomicU64; TRANSPORT_GUARDS.len()],
}

/// What the transports' guards did, by event (the `event` label of
/// `sipedge_transport_guard_total`): a stream message (or a write) not complete within its
/// deadline, a ping or OPTIONS shed from a full write queue, a plain TCP connection from an
/// address that is no peer closed, a TLS connection closed because its certificate is no
/// longer accepted (revoked), an ICMP unreachable that failed a UDP destination.
pub const TRANSPORT_GUARDS: [&str; 5] = [
    "message_timeout",
    "write_shed",
    "tcp_not_peer",
    "certificate_revoked",
    "icmp_unreachable",
];

/// The process's transport counters: `transport` increments them, `admin` reads them.
pub static TRANSPORT: TransportStats = TransportStats::new();

impl Default for TransportStats {
    fn default() -> Self {
        Self::new()
    }
}

impl TransportStats {
    pub const fn new() -> TransportStats {
        TransportStats {
            accepted: [const { [const { AtomicU64::new(0) }; 2] }; 2],
            refused: [const { [const { [const { AtomicU64::new(0) }; CATEGORIES] }; 2] }; 2],
            open: [const { [const { AtomicI64::new(0) }; 2] }; 2],
            refusals: Mutex::new(VecDeque::new()),
            guards: [const { AtomicU64::new(0) }; TRANSPORT_GUARDS.len()],
        }
    }

    fn guard(&self, i: usize) {
        if let Some(n) = self.guards.get(i) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A stream message (or a write) missed its deadline: the connection was closed.
    pub fn message_timeout(&self) {
        self.guard(0);
    }

    /// A ping or OPTIONS was shed from a connection's write queue.
    pub fn write_shed(&self) {
        self.guard(1);
    }

    /// A plain TCP connection from an address that is no peer of that side was closed.
    pub fn tcp_refused(&self) {
        self.guard(2);
    }

    /// A live TLS connection was closed after a reload refused its certificate.
    pub fn revoked_closed(&self) {
        self.guard(3);
    }

    /// An ICMP unreachable failed a UDP destination.
    pub fn icmp_unreachable(&self) {
        self.guard(4);
    }

    /// A TLS handshake succeeded (and the peer's identity was accepted).
    pub fn tls_accepted(&self, side: Side, direction: HandshakeDirection) {
        self.accepted[side_index(side)][direction_index(direction)].fetch_add(1, Ordering::Relaxed);
    }

    /// A TLS handshake failed or was refused for `reason` (as logged); kept in the ring.
    pub fn tls_refused(
        &self,
        side: Side,
        direction: HandshakeDirection,
        remote: SocketAddr,
        reason: &str,
        at: SystemTime,
    ) {
        let category = tls_refusal_category(reason);
        let c = TLS_REFUSAL_CATEGORIES
            .iter()
            .position(|x| *x == category)
            .unwrap_or(CATEGORIES - 1);
        if let Some(n) = self.refused[side_index(side)][direction_index(direction)].get(c) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        let mut ring = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() >= TLS_REFUSALS_KEPT {
            ring.pop_front();
        }
        ring.push_back(TlsRefusal {
            at,
            side,
            direction,
            remote,
            reason: reason.chars().take(300).collect(),
            category,
        });
    }

    /// The result of a handshake we started toward `remote` (`Err`: the reason) at `at`.
    pub fn tls_outbound<T>(
        &self,
        side: Side,
        remote: SocketAddr,
        r: &Result<T, String>,
        at: SystemTime,
    ) {
        match r {
            Ok(_) => self.tls_accepted(side, HandshakeDirection::Outbound),
            Err(reason) => self.tls_refused(side, HandshakeDirection::Outbound, remote, reason, at),
        }
    }

    /// A TCP or TLS connection is open (accepted, or opened by us); UDP is ignored.
    pub fn connection_opened(&self, side: Side, transport: Transport) {
        if let Some(t) = stream_index(transport) {
            self.open[side_index(side)][t].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A connection counted by [`Self::connection_opened`] closed.
    pub fn connection_closed(&self, side: Side, transport: Transport) {
        if let Some(t) = stream_index(transport) {
            self.open[side_index(side)][t].fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The newest `n` refusals, newest first.
    pub fn recent_refusals(&self, n: usize) -> Vec<TlsRefusal> {
        let ring = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().rev().take(n).cloned().collect()
    }

    /// A copy for the metrics.
    pub fn snapshot(&self) -> TransportSnapshot {
        let mut handshakes = Vec::new();
        let mut open = Vec::new();
        for side in SIDES {
            for dir in DIRECTIONS {
                let (s, d) = (side_index(side), direction_index(dir));
                handshakes.push(HandshakeCount {
                    side,
                    direction: dir,
                    result: "accepted",
                    reason: "none",
                    count: self.accepted[s][d].load(Ordering::Relaxed),
                });
                for (c, name) in TLS_REFUSAL_CATEGORIES.iter().enumerate() {
                    let count = self.refused[s][d]
                        .get(c)
                        .map_or(0, |n| n.load(Ordering::Relaxed));
                    handshakes.push(HandshakeCount {
                        side,
                        direction: dir,
                        result: "refused",
                        reason: name,
                        count,
                    });
                }
            }
            for t in [Transport::Tcp, Transport::Tls] {
                let n = stream_index(t).map_or(0, |i| {
                    self.open[side_index(side)][i].load(Ordering::Relaxed)
                });
                open.push((side, t, n.max(0) as u64));
            }
        }
        let guards = TRANSPORT_GUARDS
            .iter()
            .zip(&self.guards)
            .map(|(name, n)| (*name, n.load(Ordering::Relaxed)))
            .collect();
        TransportSnapshot {
            handshakes,
            open,
            guards,
        }
    }
}

/// One handshake counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeCount {
    pub side: Side,
    pub direction: HandshakeDirection,
    /// `accepted` or `refused`.
    pub result: &'static str,
    /// `none` when accepted, else one of [`TLS_REFUSAL_CATEGORIES`].
    pub reason: &'static str,
    pub count: u64,
}

/// [`TransportStats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportSnapshot {
    pub handshakes: Vec<HandshakeCount>,
    /// Open stream connections by side and transport (TCP, TLS).
    pub open: Vec<(Side, Transport, u64)>,
    /// The guards' counters, by event (see [`TRANSPORT_GUARDS`]).
    pub guards: Vec<(&'static str, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_reasons_map_to_bounded_categories() {
        for (reason, cat) in [
            ("no client certificate presented", "no_client_certificate"),
            ("certificate revoked", "revoked"),
            ("issuer unknown", "unknown_issuer"),
            ("expired (not after 1, now 2)", "expired"),
            ("not yet valid", "not_yet_valid"),
            (
                "gw1.remote.example belongs to site remote; this appliance serves site lab",
                "wrong_site",
            ),
            ("no configured gateway named x.example", "not_configured"),
            (
                "certificate x is not an allowed peer name",
                "name_not_allowed",
            ),
            ("no usable certificate identity", "no_identity"),
            (
                "incompatible peer: protocol older than TLS 1.2 (TLS 1.2 is the minimum)",
                "protocol_version",
            ),
            (
                "incompatible peer: no cipher suite in common",
                "no_common_cipher",
            ),
            ("handshake timed out", "timeout"),
            ("something new", "other"),
        ] {
            assert_eq!(tls_refusal_category(reason), cat, "{reason}");
            assert!(TLS_REFUSAL_CATEGORIES.contains(&cat));
        }
    }

    #[test]
    fn transport_stats_count_and_keep_the_newest_refusals() {
        let t = TransportStats::new();
        let remote: SocketAddr = "192.0.2.1:5061".parse().unwrap();
        t.tls_accepted(Side::Gateway, HandshakeDirection::Inbound);
        for i in 0..(TLS_REFUSALS_KEPT + 5) {
            t.tls_refused(
                Side::Gateway,
                HandshakeDirection::Inbound,
                remote,
                &format!("certificate revoked {i}"),
                SystemTime::UNIX_EPOCH,
            );
        }
        t.connection_opened(Side::Cloud, Transport::Tls);
        t.connection_opened(Side::Cloud, Transport::Udp);
        let recent = t.recent_refusals(3);
        assert_eq!(recent.len(), 3);
        assert_eq!(
            recent[0].reason,
            format!("certificate revoked {}", TLS_REFUSALS_KEPT + 4)
        );
        assert_eq!(t.recent_refusals(1000).len(), TLS_REFUSALS_KEPT);
        let s = t.snapshot();
        let count = |result: &str, reason: &str| {
            s.handshakes
                .iter()
                .find(|h| {
                    h.side == Side::Gateway
                        && h.direction == HandshakeDirection::Inbound
                        && h.result == result
                        && h.reason == reason
                })
                .map(|h| h.count)
        };
        assert_eq!(count("accepted", "none"), Some(1));
        assert_eq!(
            count("refused", "revoked"),
            Some(TLS_REFUSALS_KEPT as u64 + 5)
        );
        assert!(s.open.contains(&(Side::Cloud, Transport::Tls, 1)));
        assert!(s.open.contains(&(Side::Cloud, Transport::Tcp, 0)));
    }

    #[test]
    fn readiness_names_what_is_missing() {
        let r = Readiness::default();
        assert_eq!(
            r.not_ready(),
            ["listeners not bound", "directory not loaded"]
        );
        r.set_listeners_bound(true);
        r.set_directory_loaded(true);
        assert!(r.not_ready().is_empty());
        r.set_draining(true);
        r.set_maintenance(true);
        assert_eq!(r.not_ready(), ["draining", "maintenance"]);
    }
}
