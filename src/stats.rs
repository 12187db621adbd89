//! What the running appliance counts and publishes: the proxy core's and the media anchor's
//! counters, target health and load. The proxy writes these types, the composition root
//! (`server`) publishes a [`Published`] snapshot twice a second, and the admin API and
//! metrics read it. Pure data: neither `proxy` nor `admin` is imported here, so neither imports
//! the other.

use std::collections::{BTreeMap, HashMap};

use crate::media::{Drops, LegCounters};
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
    /// Requests shed by overload control, by reason (`peer_rate`, `call_rate`, `calls`,
    /// `transactions`).
    pub shed: BTreeMap<&'static str, u64>,
    /// Responses from another address or identity than their request's hop (dropped; also
    /// counted as stray).
    pub foreign_responses: u64,
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
}

impl LegTotals {
    /// Adds one leg's counters.
    pub fn add(&mut self, other: &LegTotals) {
        self.rx_packets = self.rx_packets.saturating_add(other.rx_packets);
        self.rx_bytes = self.rx_bytes.saturating_add(other.rx_bytes);
        self.rtcp_packets = self.rtcp_packets.saturating_add(other.rtcp_packets);
        self.tx_packets = self.tx_packets.saturating_add(other.tx_packets);
        self.tx_bytes = self.tx_bytes.saturating_add(other.tx_bytes);
        let (d, o) = (&mut self.drops, &other.drops);
        d.foreign_source = d.foreign_source.saturating_add(o.foreign_source);
        d.srtp_auth = d.srtp_auth.saturating_add(o.srtp_auth);
        d.replay = d.replay.saturating_add(o.replay);
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
        }
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
}
