//! Call records: one per call, built by the proxy core when a call ends (answered or not) and
//! handed to the driver through `Core::poll_call_record`. Pure data: the core knows only
//! monotonic instants; whoever writes a record turns them into wall-clock times.

use std::time::Instant;

/// Which way a call crossed the appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a gateway (or another site's appliance) toward the cloud peer.
    Inbound,
    /// From the cloud peer toward a gateway (or another site's appliance).
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Who ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndedBy {
    /// The caller: BYE from the caller, or CANCEL before an answer.
    Caller,
    /// The callee: BYE from the callee.
    Callee,
    /// The call failed before an answer: a final error response (ours or downstream).
    Failure,
    /// Media supervision: no RTP for `media_timeout`; we sent BYE to both legs.
    MediaTimeout,
    /// The appliance: drain timeout, or a dialog kept past its longest lifetime.
    Appliance,
}

impl EndedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            EndedBy::Caller => "caller",
            EndedBy::Callee => "callee",
            EndedBy::Failure => "failure",
            EndedBy::MediaTimeout => "media_timeout",
            EndedBy::Appliance => "appliance",
        }
    }
}

/// One media leg of an anchored call, as the relay counted it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegRecord {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Estimated inbound RTP loss (RFC 3550 A.3).
    pub lost: u64,
    /// Inbound RTP packets that arrived late or twice.
    pub late: u64,
    /// Packets dropped on arrival (foreign source, SRTP authentication, replay, …).
    pub dropped: u64,
    pub srtp: bool,
}

/// A finished call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub call_id: String,
    pub direction: Direction,
    /// The caller's and the callee's URIs as signalled (From, and the Request-URI received).
    pub caller: String,
    pub callee: String,
    /// The tenant user of the call (SIP address), when routing named one.
    pub user: Option<String>,
    /// Our site.
    pub site: String,
    /// The gateway-side peer (a gateway, or another site's mediation server).
    pub gateway: Option<String>,
    /// The cloud peer (FQDN).
    pub cloud_peer: String,
    /// The initial INVITE arrived.
    pub start: Instant,
    /// The first ringing (180/183) went upstream.
    pub ringing: Option<Instant>,
    /// The 2xx went upstream.
    pub answer: Option<Instant>,
    pub end: Instant,
    /// Final status of the INVITE (200 for answered calls).
    pub status: u16,
    /// Why it ended, for people (never sent to a peer).
    pub reason: String,
    pub ended_by: EndedBy,
    /// Gateway leg, cloud leg; `None` without media anchoring.
    pub legs: Option<[LegRecord; 2]>,
}

impl CallRecord {
    /// Answer to end; zero for unanswered calls.
    pub fn duration(&self) -> std::time::Duration {
        self.answer.map_or(std::time::Duration::ZERO, |a| {
            self.end.saturating_duration_since(a)
        })
    }

    /// INVITE to the first ringing or answer.
    pub fn setup(&self) -> Option<std::time::Duration> {
        let first = match (self.ringing, self.answer) {
            (Some(r), Some(a)) => Some(r.min(a)),
            (r, a) => r.or(a),
        }?;
        Some(first.saturating_duration_since(self.start))
    }
}
