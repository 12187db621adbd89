//! Call records: one per call, built by the proxy core when a call ends (answered or not) and
//! handed to the driver through `Core::poll_call_record`. The core knows only monotonic
//! instants; [`WallClock`] turns them into wall-clock times for the written form, [`CdrEntry`].
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | [`CallRecord`] (pure), its outcome, [`WallClock`], [`CdrEntry`] (one JSON line) |
//! | `writer.rs` | IO: the writer thread fed by the driver's channel, its sinks (the daily JSON-lines files under `<state_dir>/cdr/`, one log line per call; a PostgreSQL sink plugs in as another [`writer::RecordSink`]) |
//! | `show.rs` | IO: `sipedge cdr show --last N [--json]` and `sipedge cdr tail` |

pub mod show;
pub mod writer;

use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

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

    /// The call's outcome, one of [`OUTCOMES`]: `answered`; unanswered, `cancelled` (the
    /// caller gave up), `busy` (486, 600), `no_answer` (408, 480, 487), `rejected` (other 4xx,
    /// 603), `failed` (5xx, other 6xx, media timeout, the appliance).
    pub fn outcome(&self) -> &'static str {
        if self.answer.is_some() {
            return "answered";
        }
        match (self.ended_by, self.status) {
            (EndedBy::Caller, _) => "cancelled",
            (EndedBy::MediaTimeout | EndedBy::Appliance, _) => "failed",
            (_, 486 | 600) => "busy",
            (_, 408 | 480 | 487) => "no_answer",
            (_, 603) => "rejected",
            (_, 400..=499) => "rejected",
            _ => "failed",
        }
    }
}

/// Every value [`CallRecord::outcome`] returns (a bounded metrics label).
pub const OUTCOMES: [&str; 6] = [
    "answered",
    "cancelled",
    "busy",
    "no_answer",
    "rejected",
    "failed",
];

/// Turns the core's monotonic instants into wall-clock times: one reference pair taken when
/// the writer starts, so every record of a run is consistent (a later step of the system
/// clock does not bend durations).
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    instant: Instant,
    system: SystemTime,
}

impl WallClock {
    /// The pair `(instant, system)` read at the same moment.
    pub fn new(instant: Instant, system: SystemTime) -> WallClock {
        WallClock { instant, system }
    }

    /// The wall-clock time of `i`.
    pub fn at(&self, i: Instant) -> SystemTime {
        if i >= self.instant {
            self.system
                .checked_add(i.duration_since(self.instant))
                .unwrap_or(self.system)
        } else {
            self.system
                .checked_sub(self.instant.duration_since(i))
                .unwrap_or(self.system)
        }
    }
}

/// RFC 3339 in UTC with milliseconds, e.g. `2025-03-01T09:30:00.250Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    let ms = dt.millisecond();
    let dt = dt
        .replace_millisecond(ms)
        .unwrap_or(dt)
        .to_offset(time::UtcOffset::UTC);
    dt.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| {
            let secs = t
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            format!("@{secs}")
        })
}

/// The UTC date of `t` as `YYYY-MM-DD` (the daily file's name).
pub fn utc_date(t: SystemTime) -> String {
    let d = time::OffsetDateTime::from(t)
        .to_offset(time::UtcOffset::UTC)
        .date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// One media leg of a written record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdrLeg {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Estimated inbound RTP loss (RFC 3550 A.3), packets.
    pub lost: u64,
    /// Inbound RTP packets that arrived late or twice.
    pub late: u64,
    pub dropped: u64,
    pub srtp: bool,
}

impl From<&LegRecord> for CdrLeg {
    fn from(l: &LegRecord) -> CdrLeg {
        CdrLeg {
            rx_packets: l.rx_packets,
            rx_bytes: l.rx_bytes,
            tx_packets: l.tx_packets,
            tx_bytes: l.tx_bytes,
            lost: l.lost,
            late: l.late,
            dropped: l.dropped,
            srtp: l.srtp,
        }
    }
}

/// The media legs of a written record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdrLegs {
    pub gateway: CdrLeg,
    pub cloud: CdrLeg,
}

/// A call record as written: one JSON line in `<state_dir>/cdr/cdr-YYYY-MM-DD.jsonl`. The field
/// names are stable (consumers parse them); times are RFC 3339 UTC with milliseconds,
/// durations seconds with millisecond precision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CdrEntry {
    pub call_id: String,
    /// `inbound` (gateway → cloud) or `outbound` (cloud → gateway).
    pub direction: String,
    pub caller: String,
    pub callee: String,
    #[serde(default)]
    pub user: Option<String>,
    pub site: String,
    #[serde(default)]
    pub gateway: Option<String>,
    pub cloud_peer: String,
    pub start: String,
    #[serde(default)]
    pub ringing: Option<String>,
    #[serde(default)]
    pub answer: Option<String>,
    pub end: String,
    /// Answer to end; 0 for unanswered calls.
    pub duration_s: f64,
    /// INVITE to the first ringing or answer.
    #[serde(default)]
    pub setup_s: Option<f64>,
    pub status: u16,
    pub reason: String,
    /// `caller`, `callee`, `failure`, `media_timeout`, `appliance`.
    pub ended_by: String,
    /// One of [`OUTCOMES`].
    pub outcome: String,
    /// `null` without media anchoring.
    #[serde(default)]
    pub legs: Option<CdrLegs>,
}

fn seconds(d: Duration) -> f64 {
    (d.as_millis() as f64) / 1000.0
}

impl CdrEntry {
    /// The written form of `r`, its instants placed on the wall clock by `clock`.
    pub fn from_record(r: &CallRecord, clock: &WallClock) -> CdrEntry {
        let at = |i: Instant| rfc3339(clock.at(i));
        CdrEntry {
            call_id: r.call_id.clone(),
            direction: r.direction.as_str().to_owned(),
            caller: r.caller.clone(),
            callee: r.callee.clone(),
            user: r.user.clone(),
            site: r.site.clone(),
            gateway: r.gateway.clone(),
            cloud_peer: r.cloud_peer.clone(),
            start: at(r.start),
            ringing: r.ringing.map(at),
            answer: r.answer.map(at),
            end: at(r.end),
            duration_s: seconds(r.duration()),
            setup_s: r.setup().map(seconds),
            status: r.status,
            reason: r.reason.clone(),
            ended_by: r.ended_by.as_str().to_owned(),
            outcome: r.outcome().to_owned(),
            legs: r.legs.as_ref().map(|[g, c]| CdrLegs {
                gateway: CdrLeg::from(g),
                cloud: CdrLeg::from(c),
            }),
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// An answered inbound call of `secs` seconds with media, ending at `start + 2 s + secs`.
    pub fn answered(start: Instant, call_id: &str, secs: u64) -> CallRecord {
        let leg = LegRecord {
            rx_packets: 50 * secs,
            rx_bytes: 8600 * secs,
            tx_packets: 50 * secs,
            tx_bytes: 8600 * secs,
            lost: 1,
            late: 0,
            dropped: 0,
            srtp: false,
        };
        CallRecord {
            call_id: call_id.into(),
            direction: Direction::Inbound,
            caller: "sip:+14255550199@gw1.lab.example".into(),
            callee: "sip:+14255550100@mediation.lab.example;user=phone".into(),
            user: Some("alice@lab.example".into()),
            site: "lab".into(),
            gateway: Some("gw1.lab.example".into()),
            cloud_peer: "sip.cloud.lab.example".into(),
            start,
            ringing: Some(start + Duration::from_millis(400)),
            answer: Some(start + Duration::from_secs(2)),
            end: start + Duration::from_secs(2 + secs),
            status: 200,
            reason: "BYE from the caller".into(),
            ended_by: EndedBy::Caller,
            legs: Some([leg, LegRecord { srtp: true, ..leg }]),
        }
    }

    /// An outbound call refused by the gateway with `status`.
    pub fn failed(start: Instant, call_id: &str, status: u16) -> CallRecord {
        CallRecord {
            call_id: call_id.into(),
            direction: Direction::Outbound,
            caller: "sip:alice@lab.example".into(),
            callee: "sip:+33144556677@ap.lab.example;user=phone".into(),
            user: Some("alice@lab.example".into()),
            site: "lab".into(),
            gateway: Some("gw2.lab.example".into()),
            cloud_peer: "sip.cloud.lab.example".into(),
            start,
            ringing: None,
            answer: None,
            end: start + Duration::from_millis(300),
            status,
            reason: format!("{status} from gw2.lab.example"),
            ended_by: EndedBy::Failure,
            legs: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn instants_become_rfc3339_utc_with_the_reference_pair() {
        let i0 = Instant::now();
        // 2025-03-01T09:30:00Z
        let s0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_740_821_400);
        let clock = WallClock::new(i0 + Duration::from_secs(10), s0);
        let r = answered(i0, "c1@x", 12);
        let e = CdrEntry::from_record(&r, &clock);
        assert_eq!(e.start, "2025-03-01T09:29:50Z");
        assert_eq!(e.ringing.as_deref(), Some("2025-03-01T09:29:50.4Z"));
        assert_eq!(e.answer.as_deref(), Some("2025-03-01T09:29:52Z"));
        assert_eq!(e.end, "2025-03-01T09:30:04Z");
        assert_eq!(e.duration_s, 12.0);
        assert_eq!(e.setup_s, Some(0.4));
        assert_eq!(e.outcome, "answered");
        assert_eq!(e.ended_by, "caller");
        let legs = e.legs.unwrap();
        assert_eq!(legs.gateway.rx_packets, 600);
        assert!(!legs.gateway.srtp && legs.cloud.srtp);
        assert_eq!(utc_date(clock.at(r.end)), "2025-03-01");
        // One JSON line, parsed back to the same entry.
        let line = serde_json::to_string(&e).unwrap();
        assert!(!line.contains('\n'));
        let back: CdrEntry = serde_json::from_str(&line).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn outcomes_are_bounded() {
        let i0 = Instant::now();
        let mut cases = vec![(answered(i0, "a", 1), "answered")];
        for (status, o) in [
            (486, "busy"),
            (600, "busy"),
            (480, "no_answer"),
            (404, "rejected"),
            (603, "rejected"),
            (503, "failed"),
        ] {
            cases.push((failed(i0, "f", status), o));
        }
        let mut c = failed(i0, "c", 487);
        c.ended_by = EndedBy::Caller;
        cases.push((c, "cancelled"));
        for (r, want) in cases {
            assert_eq!(r.outcome(), want, "{}", r.status);
            assert!(OUTCOMES.contains(&r.outcome()));
        }
    }
}
