//! The Prometheus exposition: every series sipedge exports is named here, once, with its type
//! and help text, and rendered from the [`Published`] snapshot of the core and the anchor plus
//! what the appliance around them keeps ([`OpsMetrics`]: call records, TLS and connections,
//! certificates, the directory, readiness). Label values are escaped (`\\`, `"`, newline) as
//! the text format requires; every label set is bounded by the configuration (targets,
//! gateways, sites) or by a fixed list (legs, kinds, drop causes, outcomes, refusal reasons,
//! statuses we generate).

use std::fmt::Write;

use super::calls::CallStats;
use super::certs::Expiry;
use crate::media::Drops;
use crate::stats::{LegTotals, Published, TransportSnapshot};

/// A metric family: name, type, help.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

const fn counter(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: "counter",
        help,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: "gauge",
        help,
    }
}

const fn histogram(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: "histogram",
        help,
    }
}

// ---------------------------------------------------------------- the appliance
const BUILD_INFO: Family = gauge(
    "sipedge_build_info",
    "Always 1; the version of the running binary in the version label.",
);
const START_TIME: Family = gauge(
    "sipedge_start_time_seconds",
    "When the appliance started, seconds since the Unix epoch.",
);
const READY: Family = gauge(
    "sipedge_ready",
    "1 when /readyz answers 200 (listeners bound, directory loaded, not draining or in maintenance).",
);
const DRAINING: Family = gauge(
    "sipedge_draining",
    "1 while draining after SIGTERM/SIGINT (new calls refused).",
);
const MAINTENANCE: Family = gauge(
    "sipedge_maintenance",
    "1 in maintenance mode (sipedge maintenance enter: new calls and OPTIONS refused with 503).",
);
const CONFIG_RELOADS: Family = counter(
    "sipedge_config_reloads_total",
    "Configuration reloads (SIGHUP, file change, POST /config/reload) by result (ok, failed).",
);
const ACTIVE_CALLS_ALL: Family = gauge(
    "sipedge_active_calls",
    "Calls in progress (the core's dialogs; media sessions while the core keeps no dialog table).",
);
const CALLS_ENDED: Family = counter(
    "sipedge_calls_ended_total",
    "Calls ended (one per call record), by direction, site, gateway and outcome.",
);
const CALL_SETUP: Family = histogram(
    "sipedge_call_setup_seconds",
    "INVITE to the first ringing or answer, by direction (from the call records).",
);
const CALL_RECORD_ERRORS: Family = counter(
    "sipedge_call_record_errors_total",
    "Call records a sink failed to take (file, statistics).",
);
const LOG_DROPPED: Family = counter(
    "sipedge_log_lines_dropped_total",
    "Log lines dropped because the log writer was behind (logging never blocks).",
);
const TLS_HANDSHAKES: Family = counter(
    "sipedge_tls_handshakes_total",
    "TLS handshakes by side, direction, result (accepted, refused) and refusal reason.",
);
const OPEN_CONNECTIONS: Family = gauge(
    "sipedge_open_connections",
    "Open stream connections by side and transport (tcp, tls).",
);
const TRANSPORT_GUARD: Family = counter(
    "sipedge_transport_guard_total",
    "Transport guards by event: message_timeout (a stream message or write not complete within its deadline: connection closed), write_shed (a ping or OPTIONS shed from a full write queue), tcp_not_peer (plain TCP from an address that is no peer: closed), certificate_revoked (a live TLS connection closed after a reload refused its certificate), icmp_unreachable (a UDP destination failed by ICMP).",
);
const CERT_EXPIRY: Family = gauge(
    "sipedge_certificate_expiry_timestamp_seconds",
    "When our TLS material expires, seconds since the Unix epoch: certificate gateway_side, cloud_side, ca (the built-in root), crl (the CRL's next update).",
);
const DIRECTORY_CHANGES: Family = counter(
    "sipedge_directory_changes_total",
    "Directory snapshots swapped in since start (changes by the CLI or the API).",
);
const DIRECTORY_USERS: Family = gauge(
    "sipedge_directory_users",
    "Users in the directory snapshot in use.",
);

// ---------------------------------------------------------------- the proxy core
const REQUESTS: Family = counter("sipedge_requests_total", "SIP requests received.");
const RESPONSES: Family = counter("sipedge_responses_total", "SIP responses received.");
const MALFORMED: Family = counter(
    "sipedge_malformed_messages_total",
    "Messages the parser refused (answered when an answer could be built, else dropped).",
);
const REJECTED: Family = counter(
    "sipedge_rejected_requests_total",
    "Requests refused in the admit or route phase.",
);
const FORWARDED: Family = counter("sipedge_forwarded_total", "Requests forwarded.");
const STRAY: Family = counter(
    "sipedge_stray_responses_total",
    "Responses matching no client transaction, dropped (RFC 6026).",
);
const FAILOVERS: Family = counter("sipedge_failovers_total", "Failovers to the next target.");
const CALLS: Family = counter("sipedge_calls_total", "New INVITEs routed by the policy.");
const REJECTS: Family = counter(
    "sipedge_rejects_total",
    "Final responses generated by sipedge, by status.",
);
const PROBES: Family = counter(
    "sipedge_options_probes_total",
    "OPTIONS health probes sent.",
);
const UNKNOWN_SENDERS: Family = counter(
    "sipedge_unknown_senders_total",
    "Requests from addresses that are no peer (no state kept; at most a rate-limited 403).",
);
const SHED: Family = counter(
    "sipedge_overload_shed_total",
    "Requests refused with a stateless 503 before any state, by reason (overload, maintenance, draining).",
);
const FOREIGN_RESPONSES: Family = counter(
    "sipedge_foreign_responses_total",
    "Responses from another address or identity than their request's hop, dropped.",
);
const TARGET_HEALTHY: Family = gauge(
    "sipedge_target_healthy",
    "1 when the target answers OPTIONS, 0 when demoted.",
);
const GATEWAY_SESSIONS: Family = gauge(
    "sipedge_gateway_sessions",
    "Calls per gateway: established plus INVITEs waiting for a final response.",
);

// ---------------------------------------------------------------- the media anchor
const MEDIA_SESSIONS_CREATED: Family = counter(
    "sipedge_media_sessions_created_total",
    "Media sessions allocated (one per anchored call).",
);
const MEDIA_SESSIONS_RELEASED: Family = counter(
    "sipedge_media_sessions_released_total",
    "Media sessions released.",
);
const MEDIA_TIMEOUTS: Family = counter(
    "sipedge_media_timeouts_total",
    "Calls ended by media supervision (no RTP for media_timeout).",
);
const PORTS_EXHAUSTED: Family = counter(
    "sipedge_media_ports_exhausted_total",
    "New calls refused with 503: no media ports left.",
);
const SDP_REFUSED: Family = counter(
    "sipedge_sdp_refused_total",
    "Requests refused for their SDP (488, 400, 491, 415).",
);
const SDP_ERRORS: Family = counter(
    "sipedge_sdp_errors_total",
    "SDP in responses that could not be anchored (relayed unchanged).",
);
const SDP_ADDRESS_REFUSED: Family = counter(
    "sipedge_sdp_address_refused_total",
    "SDP media addresses refused (loopback, multicast, broadcast, unspecified, link-local or our own): the request answered 488, or a response's address never used.",
);
const ACTIVE_CALLS: Family = gauge(
    "sipedge_media_active_calls",
    "Calls holding a media session.",
);
const PORTS_FREE: Family = gauge(
    "sipedge_media_ports_free",
    "Free RTP/RTCP port pairs of the media range.",
);
const PORTS_TOTAL: Family = gauge(
    "sipedge_media_ports",
    "RTP/RTCP port pairs of the media range.",
);
const MEDIA_PACKETS: Family = counter(
    "sipedge_media_packets_total",
    "Media packets by leg (gateway, cloud), direction (rx: arrived on our socket, tx: sent) and kind: rtcp (RTCP and SRTCP accepted on arrival; rx only), else srtp or rtp by the leg's SRTP state (tx includes RTCP).",
);
const MEDIA_BYTES: Family = counter(
    "sipedge_media_bytes_total",
    "Media bytes by leg, direction and kind (srtp or rtp by the leg's SRTP state, RTCP included).",
);
const MEDIA_RTCP: Family = counter(
    "sipedge_media_rtcp_packets_total",
    "RTCP packets accepted, by leg.",
);
const MEDIA_DROPPED: Family = counter(
    "sipedge_media_dropped_packets_total",
    "Media packets dropped on arrival, by leg and reason.",
);

const MEDIA_FROM_ELSEWHERE: Family = counter(
    "sipedge_media_from_elsewhere_total",
    "Media packets dropped because they came from elsewhere than the leg's signalled (latching strict) or latched (latching nat) source, by leg.",
);

/// Every family, in exposition order (tests check that each is rendered).
#[cfg(test)]
const ALL: &[&Family] = &[
    &BUILD_INFO,
    &START_TIME,
    &READY,
    &DRAINING,
    &ACTIVE_CALLS_ALL,
    &CALLS_ENDED,
    &CALL_SETUP,
    &CALL_RECORD_ERRORS,
    &LOG_DROPPED,
    &TLS_HANDSHAKES,
    &OPEN_CONNECTIONS,
    &TRANSPORT_GUARD,
    &CERT_EXPIRY,
    &DIRECTORY_CHANGES,
    &DIRECTORY_USERS,
    &REQUESTS,
    &RESPONSES,
    &MALFORMED,
    &REJECTED,
    &FORWARDED,
    &STRAY,
    &FAILOVERS,
    &CALLS,
    &REJECTS,
    &PROBES,
    &UNKNOWN_SENDERS,
    &SHED,
    &FOREIGN_RESPONSES,
    &TARGET_HEALTHY,
    &GATEWAY_SESSIONS,
    &MEDIA_SESSIONS_CREATED,
    &MEDIA_SESSIONS_RELEASED,
    &MEDIA_TIMEOUTS,
    &PORTS_EXHAUSTED,
    &SDP_REFUSED,
    &SDP_ERRORS,
    &SDP_ADDRESS_REFUSED,
    &ACTIVE_CALLS,
    &PORTS_FREE,
    &PORTS_TOTAL,
    &MEDIA_PACKETS,
    &MEDIA_BYTES,
    &MEDIA_RTCP,
    &MEDIA_DROPPED,
    &MEDIA_FROM_ELSEWHERE,
];

/// Escapes a label value (text format 0.0.4): backslash, double quote and newline.
fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    let mut s = String::with_capacity(v.len() + 4);
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s.into()
}

/// The text being built.
struct Exposition(String);

impl Exposition {
    fn header(&mut self, f: &Family) {
        let _ = write!(
            self.0,
            "# HELP {} {}\n# TYPE {} {}\n",
            f.name, f.help, f.name, f.kind
        );
    }

    fn sample(&mut self, f: &Family, labels: &[(&str, &str)], v: impl std::fmt::Display) {
        self.sample_suffixed(f, "", labels, v);
    }

    /// A sample of `f` named with a suffix (`_bucket`, `_sum`, `_count` of a histogram).
    fn sample_suffixed(
        &mut self,
        f: &Family,
        suffix: &str,
        labels: &[(&str, &str)],
        v: impl std::fmt::Display,
    ) {
        self.0.push_str(f.name);
        self.0.push_str(suffix);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(val));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {v}");
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, f: &Family, v: impl std::fmt::Display) {
        self.header(f);
        self.sample(f, &[], v);
    }
}

const LEGS: [&str; 2] = ["gateway", "cloud"];

fn drop_reasons(d: &Drops) -> [(&'static str, u64); 7] {
    [
        ("foreign_source", d.foreign_source),
        ("srtp_auth", d.srtp_auth),
        ("replay", d.replay),
        ("srtp_index_reuse", d.srtp_index_reuse),
        ("malformed", d.malformed),
        ("no_route", d.no_route),
        ("send_error", d.send_error),
    ]
}

/// What the appliance keeps around the core for the exposition (plain data; `admin::http`
/// gathers it for each scrape).
#[derive(Debug, Clone, Default)]
pub struct OpsMetrics {
    pub version: &'static str,
    /// Seconds since the Unix epoch.
    pub start_time: u64,
    pub ready: bool,
    pub draining: bool,
    pub maintenance: bool,
    /// Reloads applied (or found unchanged), and refused.
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub calls: CallStats,
    pub call_record_errors: u64,
    pub log_lines_dropped: u64,
    pub transport: TransportSnapshot,
    pub certificates: Vec<Expiry>,
    pub directory_changes: u64,
    pub directory_users: usize,
}

/// Calls in progress: the core's dialogs when it keeps them, else the media sessions.
pub fn active_calls(snap: &Published) -> u64 {
    snap.proxy
        .active_calls
        .or_else(|| snap.media.as_ref().map(|m| m.active_calls as u64))
        .unwrap_or(0)
}

fn render_ops(e: &mut Exposition, snap: &Published, ops: &OpsMetrics) {
    e.header(&BUILD_INFO);
    e.sample(&BUILD_INFO, &[("version", ops.version)], 1);
    e.single(&START_TIME, ops.start_time);
    e.single(&READY, u8::from(ops.ready));
    e.single(&DRAINING, u8::from(ops.draining));
    e.single(&MAINTENANCE, u8::from(ops.maintenance));
    e.header(&CONFIG_RELOADS);
    e.sample(&CONFIG_RELOADS, &[("result", "ok")], ops.reloads_ok);
    e.sample(&CONFIG_RELOADS, &[("result", "failed")], ops.reloads_failed);
    e.single(&ACTIVE_CALLS_ALL, active_calls(snap));
    e.header(&CALLS_ENDED);
    for ((direction, site, gateway, outcome), n) in &ops.calls.calls {
        e.sample(
            &CALLS_ENDED,
            &[
                ("direction", direction),
                ("site", site),
                ("gateway", gateway),
                ("outcome", outcome),
            ],
            n,
        );
    }
    e.header(&CALL_SETUP);
    for direction in ["inbound", "outbound"] {
        let h = ops.calls.setup.get(direction).cloned().unwrap_or_default();
        for (le, n) in h.cumulative() {
            e.sample_suffixed(
                &CALL_SETUP,
                "_bucket",
                &[("direction", direction), ("le", &le)],
                n,
            );
        }
        e.sample_suffixed(&CALL_SETUP, "_sum", &[("direction", direction)], h.sum);
        e.sample_suffixed(&CALL_SETUP, "_count", &[("direction", direction)], h.count);
    }
    e.single(&CALL_RECORD_ERRORS, ops.call_record_errors);
    e.single(&LOG_DROPPED, ops.log_lines_dropped);
    e.header(&TLS_HANDSHAKES);
    for h in &ops.transport.handshakes {
        e.sample(
            &TLS_HANDSHAKES,
            &[
                ("side", h.side.as_str()),
                ("direction", h.direction.as_str()),
                ("result", h.result),
                ("reason", h.reason),
            ],
            h.count,
        );
    }
    e.header(&OPEN_CONNECTIONS);
    for (side, t, n) in &ops.transport.open {
        e.sample(
            &OPEN_CONNECTIONS,
            &[("side", side.as_str()), ("transport", t.uri_param())],
            n,
        );
    }
    e.header(&TRANSPORT_GUARD);
    for (event, n) in &ops.transport.guards {
        e.sample(&TRANSPORT_GUARD, &[("event", event)], n);
    }
    e.header(&CERT_EXPIRY);
    for c in &ops.certificates {
        if let Some(t) = c.not_after {
            e.sample(&CERT_EXPIRY, &[("certificate", c.what)], t);
        }
    }
    e.single(&DIRECTORY_CHANGES, ops.directory_changes);
    e.single(&DIRECTORY_USERS, ops.directory_users);
}

/// Prometheus text exposition of `snap` and `ops`.
pub fn render(snap: &Published, ops: &OpsMetrics) -> String {
    let mut e = Exposition(String::with_capacity(8192));
    render_ops(&mut e, snap, ops);
    let s = &snap.proxy;
    e.single(&REQUESTS, s.requests_in);
    e.single(&RESPONSES, s.responses_in);
    e.single(&MALFORMED, s.malformed);
    e.single(&REJECTED, s.rejected);
    e.single(&FORWARDED, s.forwarded);
    e.single(&STRAY, s.stray_responses);
    e.single(&FAILOVERS, s.failovers);
    e.single(&CALLS, s.calls);
    e.single(&PROBES, s.probes_sent);
    e.single(&UNKNOWN_SENDERS, s.unknown_senders);
    e.single(&FOREIGN_RESPONSES, s.foreign_responses);
    e.header(&SHED);
    for reason in [
        "peer_rate",
        "call_rate",
        "calls",
        "transactions",
        "ingress_full",
        "maintenance",
        "draining",
    ] {
        let n = s.shed.get(reason).copied().unwrap_or(0);
        e.sample(&SHED, &[("reason", reason)], n);
    }
    e.header(&REJECTS);
    for (status, n) in &s.rejects_by_status {
        e.sample(&REJECTS, &[("status", &status.to_string())], n);
    }
    e.header(&TARGET_HEALTHY);
    let mut names: Vec<_> = snap.health.iter().collect();
    names.sort();
    for (name, ok) in names {
        e.sample(&TARGET_HEALTHY, &[("target", name)], u8::from(*ok));
    }
    e.header(&GATEWAY_SESSIONS);
    let mut sessions: Vec<_> = snap.live.sessions.iter().collect();
    sessions.sort();
    for (name, n) in sessions {
        e.sample(&GATEWAY_SESSIONS, &[("gateway", name)], n);
    }
    if let Some(m) = &snap.media {
        e.single(&MEDIA_SESSIONS_CREATED, m.stats.sessions_created);
        e.single(&MEDIA_SESSIONS_RELEASED, m.stats.sessions_released);
        e.single(&MEDIA_TIMEOUTS, m.stats.media_timeouts);
        e.single(&PORTS_EXHAUSTED, m.stats.ports_exhausted);
        e.single(&SDP_REFUSED, m.stats.sdp_refused);
        e.single(&SDP_ERRORS, m.stats.sdp_errors);
        e.single(&SDP_ADDRESS_REFUSED, m.stats.sdp_address_refused);
        e.single(&ACTIVE_CALLS, m.active_calls);
        e.single(&PORTS_FREE, m.ports_available);
        e.single(&PORTS_TOTAL, m.ports_capacity);
        let legs: Vec<(&str, &LegTotals)> = LEGS.iter().copied().zip(m.legs.iter()).collect();
        e.header(&MEDIA_PACKETS);
        for (leg, t) in &legs {
            let rtcp = t.rtcp_packets.min(t.rx_packets);
            let rx = t.rx_packets - rtcp;
            let srtp_rx = t.srtp_rx_packets.min(rx);
            let srtp_tx = t.srtp_tx_packets.min(t.tx_packets);
            for (direction, kind, n) in [
                ("rx", "rtp", rx - srtp_rx),
                ("rx", "srtp", srtp_rx),
                ("rx", "rtcp", rtcp),
                ("tx", "rtp", t.tx_packets - srtp_tx),
                ("tx", "srtp", srtp_tx),
            ] {
                e.sample(
                    &MEDIA_PACKETS,
                    &[("leg", leg), ("direction", direction), ("kind", kind)],
                    n,
                );
            }
        }
        e.header(&MEDIA_BYTES);
        for (leg, t) in &legs {
            let srtp_rx = t.srtp_rx_bytes.min(t.rx_bytes);
            let srtp_tx = t.srtp_tx_bytes.min(t.tx_bytes);
            for (direction, kind, n) in [
                ("rx", "rtp", t.rx_bytes - srtp_rx),
                ("rx", "srtp", srtp_rx),
                ("tx", "rtp", t.tx_bytes - srtp_tx),
                ("tx", "srtp", srtp_tx),
            ] {
                e.sample(
                    &MEDIA_BYTES,
                    &[("leg", leg), ("direction", direction), ("kind", kind)],
                    n,
                );
            }
        }
        e.header(&MEDIA_RTCP);
        for (leg, t) in &legs {
            e.sample(&MEDIA_RTCP, &[("leg", leg)], t.rtcp_packets);
        }
        e.header(&MEDIA_DROPPED);
        for (leg, t) in &legs {
            for (reason, n) in drop_reasons(&t.drops) {
                e.sample(&MEDIA_DROPPED, &[("leg", leg), ("reason", reason)], n);
            }
        }
        e.header(&MEDIA_FROM_ELSEWHERE);
        for (leg, t) in &legs {
            e.sample(
                &MEDIA_FROM_ELSEWHERE,
                &[("leg", leg)],
                t.drops.foreign_source,
            );
        }
    }
    e.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::MediaSnapshot;

    #[test]
    fn every_family_is_rendered_with_its_counters() {
        let mut snap = Published::default();
        snap.proxy.calls = 7;
        snap.proxy.stray_responses = 4;
        snap.proxy.rejects_by_status.insert(403, 2);
        snap.health.insert("gw1.lab.example".into(), false);
        snap.live.sessions.insert("gw2.lab.example".into(), 3);
        let mut m = MediaSnapshot {
            active_calls: 1,
            ports_available: 10,
            ports_capacity: 12,
            ..MediaSnapshot::default()
        };
        m.legs[1].tx_packets = 50;
        m.legs[0].drops.foreign_source = 9;
        snap.media = Some(m);
        let mut ops = OpsMetrics {
            version: "9.9.9",
            ready: true,
            transport: crate::stats::TransportStats::new().snapshot(),
            ..OpsMetrics::default()
        };
        ops.certificates.push(Expiry {
            what: "cloud_side",
            file: "x.pem".into(),
            subject: "CN=ap.lab.example".into(),
            not_after: Some(1_900_000_000),
            error: None,
        });
        let i0 = std::time::Instant::now();
        let r = crate::cdr::test_support::answered(i0, "c@x", 3);
        let clock = crate::cdr::WallClock::new(i0, std::time::SystemTime::now());
        ops.calls
            .observe(&r, &crate::cdr::CdrEntry::from_record(&r, &clock));
        let t = render(&snap, &ops);
        for f in ALL {
            assert!(
                t.contains(&format!("# TYPE {} {}\n", f.name, f.kind)),
                "{} missing",
                f.name
            );
        }
        assert!(t.contains("sipedge_calls_total 7\n"));
        assert!(t.contains("sipedge_stray_responses_total 4\n"));
        assert!(t.contains("sipedge_rejects_total{status=\"403\"} 2\n"));
        assert!(t.contains("sipedge_target_healthy{target=\"gw1.lab.example\"} 0\n"));
        assert!(t.contains("sipedge_gateway_sessions{gateway=\"gw2.lab.example\"} 3\n"));
        assert!(t.contains(
            "sipedge_media_packets_total{leg=\"cloud\",direction=\"tx\",kind=\"rtp\"} 50\n"
        ));
        assert!(t.contains("sipedge_build_info{version=\"9.9.9\"} 1\n"));
        assert!(t.contains("sipedge_ready 1\n"));
        assert!(t.contains("sipedge_active_calls 1\n"));
        assert!(t.contains(
            "sipedge_calls_ended_total{direction=\"inbound\",site=\"other\",gateway=\"other\",outcome=\"answered\"} 1\n"
        ));
        assert!(
            t.contains("sipedge_call_setup_seconds_bucket{direction=\"inbound\",le=\"0.5\"} 1\n")
        );
        assert!(t.contains("sipedge_call_setup_seconds_count{direction=\"outbound\"} 0\n"));
        assert!(t.contains(
            "sipedge_tls_handshakes_total{side=\"gateway\",direction=\"inbound\",result=\"refused\",reason=\"revoked\"} 0\n"
        ));
        assert!(t.contains("sipedge_open_connections{side=\"cloud\",transport=\"tls\"} 0\n"));
        assert!(t.contains(
            "sipedge_certificate_expiry_timestamp_seconds{certificate=\"cloud_side\"} 1900000000\n"
        ));
        assert!(t.contains(
            "sipedge_media_dropped_packets_total{leg=\"gateway\",reason=\"foreign_source\"} 9\n"
        ));
        assert!(t.contains("sipedge_media_ports_free 10\n"));
    }

    #[test]
    fn names_are_unique_and_label_values_escaped() {
        let mut names: Vec<&str> = ALL.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        let mut snap = Published::default();
        snap.health.insert("a\"b\\c\nd".into(), true);
        let t = render(&snap, &OpsMetrics::default());
        assert!(
            t.contains("sipedge_target_healthy{target=\"a\\\"b\\\\c\\nd\"} 1\n"),
            "{t}"
        );
    }

    #[test]
    fn maintenance_reloads_and_out_of_service_refusals() {
        let mut snap = Published::default();
        snap.proxy.shed.insert("maintenance", 3);
        snap.proxy.shed.insert("draining", 1);
        let ops = OpsMetrics {
            maintenance: true,
            reloads_ok: 2,
            reloads_failed: 1,
            ..OpsMetrics::default()
        };
        let t = render(&snap, &ops);
        for line in [
            "sipedge_maintenance 1\n",
            "sipedge_config_reloads_total{result=\"ok\"} 2\n",
            "sipedge_config_reloads_total{result=\"failed\"} 1\n",
            "sipedge_overload_shed_total{reason=\"maintenance\"} 3\n",
            "sipedge_overload_shed_total{reason=\"draining\"} 1\n",
            "sipedge_overload_shed_total{reason=\"peer_rate\"} 0\n",
        ] {
            assert!(t.contains(line), "{line} missing:\n{t}");
        }
        let t = render(&Published::default(), &OpsMetrics::default());
        assert!(t.contains("sipedge_maintenance 0\n"));
    }

    #[test]
    fn without_media_no_media_family() {
        let t = render(&Published::default(), &OpsMetrics::default());
        assert!(!t.contains("sipedge_media_"));
    }
}
