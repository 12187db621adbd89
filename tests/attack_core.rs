//! Attacks on the proxy core, each on the wire against the running appliance (lab
//! configuration, loopback): one test per attack of issue 9 that the core answers. Every one
//! of them succeeded on the main branch before the border was closed.
//!
//! A "foreign host" listens on 127.0.0.99:5060: nothing may ever reach it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{header, options, Agent, Lab};

const GW_SIDE: &str = "127.0.0.1:5068";
const CLOUD_SIDE: &str = "127.0.0.1:5062";
const FOREIGN: &str = "127.0.0.99:5060";
const T: Duration = Duration::from_secs(3);

/// A request from `agent` (UDP, with rport) with the given Request-URI and extra header lines.
fn request(method: &str, ruri: &str, agent: &Agent, extra: &str, id: &str, to_tag: &str) -> String {
    let a = agent.addr();
    let to_tag = if to_tag.is_empty() {
        String::new()
    } else {
        format!(";tag={to_tag}")
    };
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bK-{id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:+14255550199@{a}>;tag=f-{id}\r\n\
         To: <sip:+14255550100@lab.example>{to_tag}\r\nCall-ID: {id}@attack\r\nCSeq: 1 {method}\r\n\
         Contact: <sip:a@{a}>\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

/// Nothing arrives at `agent` for `d`.
fn silent(agent: &Agent, d: Duration) -> bool {
    agent.recv_timeout(d).is_none()
}

/// Every message that reaches `agent` within `d`.
fn collect(agent: &Agent, d: Duration) -> Vec<String> {
    let deadline = Instant::now() + d;
    let mut out = Vec::new();
    while let Some((m, _)) = agent.recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        out.push(String::from_utf8_lossy(&m).into_owned());
        if Instant::now() >= deadline {
            break;
        }
    }
    out
}

fn status_of(msg: &str) -> u16 {
    msg.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// GET /metrics from the admin API.
fn metrics() -> String {
    let mut s = TcpStream::connect("127.0.0.1:8080").unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// An answered call from gw1 to alice through the appliance; returns the 200 as gw1 got it
/// and the INVITE as the cloud peer got it.
fn gateway_call(gw: &Agent, peer: &Agent, id: &str) -> (String, String) {
    gw.send_to(
        request(
            "INVITE",
            "sip:+14255550100@mediation.lab.example",
            gw,
            "",
            id,
            "",
        )
        .as_bytes(),
        GW_SIDE,
    );
    let inv = expect_call(peer, "INVITE", id);
    let vias: String = inv
        .lines()
        .filter(|l| l.starts_with("Via:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let rrs: String = inv
        .lines()
        .filter(|l| l.starts_with("Record-Route:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let ok = format!(
        "SIP/2.0 200 OK\r\n{vias}{rrs}From: {}\r\nTo: {};tag=callee-{id}\r\nCall-ID: {}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:alice@{}>\r\nContent-Length: 0\r\n\r\n",
        header(&inv, "From").unwrap(),
        header(&inv, "To").unwrap(),
        header(&inv, "Call-ID").unwrap(),
        peer.addr()
    );
    peer.send_to(ok.as_bytes(), CLOUD_SIDE);
    let ok = gw.expect("SIP/2.0 200", T);
    (ok, inv)
}

/// The next message at `agent` whose first line has `needle` and whose Call-ID is `id`'s.
fn expect_call(agent: &Agent, needle: &str, id: &str) -> String {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        let m = agent.expect(needle, deadline.saturating_duration_since(Instant::now()));
        if header(&m, "Call-ID") == Some(&format!("{id}@attack")) {
            return m;
        }
    }
    panic!("no {needle} of call {id}");
}

/// The route set of the caller (gw1) from the 200's Record-Routes, reversed (§12.1.2).
fn caller_routes(ok: &str) -> String {
    ok.lines()
        .filter_map(|l| l.strip_prefix("Record-Route: "))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(|r| format!("Route: {r}\r\n"))
        .collect()
}

#[test]
fn open_relay_by_preloaded_route_request_uri_and_maddr_is_closed() {
    let _lab = Lab::start();
    let foreign = Agent::bind(FOREIGN);
    let gw = Agent::bind("127.0.0.2:0");
    let peer = Agent::bind("127.0.0.3:0");
    let variants = [
        // Our Route, a Request-URI at a foreign host: routed by policy (no such user), never
        // to the host.
        (
            "sip:+19005550100@127.0.0.99:5060",
            "Route: <sip:mediation.lab.example;lr>\r\n",
            "r1",
        ),
        (
            "sip:+19005550100@127.0.0.99:5060",
            "Route: <sip:127.0.0.1:5068;lr>\r\n",
            "r2",
        ),
        // A second, foreign Route entry after ours: a preloaded route, refused.
        (
            "sip:+14255550100@mediation.lab.example",
            "Route: <sip:mediation.lab.example;lr>\r\nRoute: <sip:127.0.0.99;lr>\r\n",
            "r3",
        ),
        // maddr points elsewhere: not honoured.
        (
            "sip:+14255550100@mediation.lab.example;maddr=127.0.0.99",
            "",
            "r4",
        ),
    ];
    for (ruri, extra, id) in variants {
        gw.send_to(
            request("INVITE", ruri, &gw, extra, id, "").as_bytes(),
            GW_SIDE,
        );
        let answers = collect(&gw, Duration::from_millis(700));
        assert!(
            answers.iter().any(|m| status_of(m) >= 300) || !collect(&peer, T).is_empty(),
            "{id}: neither refused nor routed by policy: {answers:?}"
        );
    }
    // MESSAGE and OPTIONS naming a foreign Request-URI with our Route: across to the cloud
    // peer by policy, if at all — never to the foreign host.
    for (method, id) in [("MESSAGE", "r5"), ("OPTIONS", "r6")] {
        gw.send_to(
            request(
                method,
                "sip:victim@127.0.0.99:5060",
                &gw,
                "Route: <sip:mediation.lab.example;lr>\r\n",
                id,
                "",
            )
            .as_bytes(),
            GW_SIDE,
        );
    }
    // The cloud side: bob (InternationalCallsDisallowed) calls +44 with a Route naming us and
    // a Request-URI at the foreign host: the policy refuses it.
    let bob = format!(
        "INVITE sip:+442079460000@127.0.0.99:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bK-r7;rport\r\n\
         Route: <sip:ap.lab.example:5062;lr>\r\nMax-Forwards: 70\r\nFrom: <sip:bob@lab.example>;tag=b7\r\n\
         To: <sip:+442079460000@lab.example>\r\nCall-ID: r7@attack\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:bob@{a}>\r\nContent-Length: 0\r\n\r\n",
        a = peer.addr()
    );
    peer.send_to(bob.as_bytes(), CLOUD_SIDE);
    let r = peer.expect("SIP/2.0 403", T);
    assert_eq!(
        r.lines().next(),
        Some("SIP/2.0 403 Forbidden"),
        "no detail: {r}"
    );
    assert!(
        silent(&foreign, Duration::from_secs(2)),
        "a request reached the foreign host"
    );
}

#[test]
fn in_dialog_request_with_an_invented_to_tag_is_refused() {
    let _lab = Lab::start();
    let foreign = Agent::bind(FOREIGN);
    let gw = Agent::bind("127.0.0.2:0");
    for (extra, id) in [
        ("Route: <sip:mediation.lab.example;lr>\r\n", "d1"),
        (
            "Route: <sip:mediation.lab.example:5068;transport=udp;lr;sx=AAAAAAAAAAAAAAAA>\r\n",
            "d2",
        ),
        ("", "d3"),
    ] {
        gw.send_to(
            request("BYE", "sip:x@127.0.0.99:5060", &gw, extra, id, "invented").as_bytes(),
            GW_SIDE,
        );
        let r = gw.expect("SIP/2.0", T);
        assert_eq!(status_of(&r), 403, "{id}: {r}");
    }
    assert!(silent(&foreign, Duration::from_secs(1)));
}

#[test]
fn unknown_sources_get_no_state_and_at_most_one_answer() {
    let _lab = Lab::start();
    let stranger = Agent::bind("127.0.0.9:0");
    let invite = request(
        "INVITE",
        "sip:+14255550100@mediation.lab.example",
        &stranger,
        "",
        "u1",
        "",
    );
    stranger.send_to(invite.as_bytes(), GW_SIDE);
    // Within 4 s (an INVITE transaction would retransmit its 403 at 0.5, 1.5 and 3.5 s, and
    // send 100 Trying first): exactly one answer, a 403.
    let got = collect(&stranger, Duration::from_secs(4));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(status_of(&got[0]), 403);
    // More from the same source within the interval: silence.
    for i in 0..20 {
        stranger.send_to(
            request(
                "INVITE",
                "sip:+14255550100@mediation.lab.example",
                &stranger,
                "",
                &format!("u2-{i}"),
                "",
            )
            .as_bytes(),
            GW_SIDE,
        );
    }
    assert!(silent(&stranger, Duration::from_secs(1)));
    let m = metrics();
    assert!(metric(&m, "sipedge_unknown_senders_total ") >= 21, "{m}");
}

#[test]
fn cancel_from_another_peer_does_not_cancel() {
    let _lab = Lab::start();
    let gw1 = Agent::bind("127.0.0.2:0");
    let gw2 = Agent::bind("127.0.0.5:0");
    let peer = Agent::bind("127.0.0.3:5060");
    gw1.send_to(
        request(
            "INVITE",
            "sip:+14255550100@mediation.lab.example",
            &gw1,
            "",
            "c1",
            "",
        )
        .as_bytes(),
        GW_SIDE,
    );
    peer.expect("INVITE", T);
    // gw2 sends the CANCEL that would match gw1's INVITE transaction (same branch, Via, tags).
    let inv = request(
        "INVITE",
        "sip:+14255550100@mediation.lab.example",
        &gw1,
        "",
        "c1",
        "",
    );
    let cancel = inv
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    gw2.send_to(cancel.as_bytes(), GW_SIDE);
    let r = gw2.expect("SIP/2.0", T);
    assert_eq!(status_of(&r), 481, "{r}");
    // The cloud peer sees no CANCEL; gw1 gets no 487.
    let seen = collect(&peer, Duration::from_secs(1));
    assert!(!seen.iter().any(|m| m.starts_with("CANCEL")), "{seen:?}");
    assert!(!collect(&gw1, Duration::from_millis(500))
        .iter()
        .any(|m| status_of(m) == 487));
}

#[test]
fn bye_from_another_peer_does_not_end_a_call() {
    let _lab = Lab::start();
    let gw1 = Agent::bind("127.0.0.2:0");
    let gw2 = Agent::bind("127.0.0.5:0");
    let peer = Agent::bind("127.0.0.3:5060");
    let (ok, _) = gateway_call(&gw1, &peer, "b1");
    let routes = caller_routes(&ok);
    // gw2 copies gw1's route set (with its valid token) and the call's identifiers.
    let bye = request(
        "BYE",
        "sip:alice@127.0.0.3:5060",
        &gw2,
        &routes,
        "b1",
        "callee-b1",
    )
    .replace(
        &format!("From: <sip:+14255550199@{}>", gw2.addr()),
        &format!("From: <sip:+14255550199@{}>", gw1.addr()),
    );
    gw2.send_to(bye.as_bytes(), GW_SIDE);
    let r = gw2.expect("SIP/2.0", T);
    assert_eq!(status_of(&r), 403, "{r}");
    assert!(!collect(&peer, Duration::from_secs(1))
        .iter()
        .any(|m| m.starts_with("BYE")));
    // gw1's own BYE goes through.
    let bye = request(
        "BYE",
        "sip:alice@127.0.0.3:5060",
        &gw1,
        &routes,
        "b1-bye",
        "callee-b1",
    )
    .replace("Call-ID: b1-bye@attack", "Call-ID: b1@attack")
    .replace("tag=f-b1-bye", "tag=f-b1");
    gw1.send_to(bye.as_bytes(), GW_SIDE);
    peer.expect("BYE", T);
}

#[test]
fn a_keepalive_options_with_our_route_is_answered_here() {
    let _lab = Lab::start();
    let gw = Agent::bind("127.0.0.2:0");
    let peer = Agent::bind("127.0.0.3:5060");
    let o = String::from_utf8(options("sip:mediation.lab.example", &gw))
        .unwrap()
        .replacen(
            "Max-Forwards:",
            "Route: <sip:mediation.lab.example:5068;lr>\r\nMax-Forwards:",
            1,
        );
    gw.send_to(o.as_bytes(), GW_SIDE);
    gw.expect("SIP/2.0 200", T);
    // Only our own probes reach the cloud peer, never the gateway's keep-alive.
    assert!(!collect(&peer, Duration::from_millis(800))
        .iter()
        .any(|m| m.contains("probe@")));
}

#[test]
fn refusals_name_no_user_and_no_detail() {
    let _lab = Lab::start();
    let gw = Agent::bind("127.0.0.2:0");
    // dave (+14255550103) has enterprise voice off; +14255550999 is nobody.
    for (ruri, id) in [
        ("sip:+14255550103@mediation.lab.example", "p1"),
        ("sip:+14255550999@mediation.lab.example", "p2"),
    ] {
        gw.send_to(request("INVITE", ruri, &gw, "", id, "").as_bytes(), GW_SIDE);
        let r = gw.expect("SIP/2.0 4", T);
        let first = r.lines().next().unwrap();
        assert!(
            matches!(
                first,
                "SIP/2.0 404 Not Found" | "SIP/2.0 480 Temporarily Unavailable"
            ),
            "{first}"
        );
        assert!(!r.contains("dave"), "{r}");
    }
}

#[test]
fn a_response_from_elsewhere_than_the_hop_is_dropped() {
    let _lab = Lab::start();
    let gw = Agent::bind("127.0.0.2:0");
    let peer = Agent::bind("127.0.0.3:5060");
    let forger = Agent::bind("127.0.0.9:0");
    gw.send_to(
        request(
            "INVITE",
            "sip:+14255550100@mediation.lab.example",
            &gw,
            "",
            "f1",
            "",
        )
        .as_bytes(),
        GW_SIDE,
    );
    let inv = peer.expect("INVITE", T);
    let vias: String = inv
        .lines()
        .filter(|l| l.starts_with("Via:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let forged = format!(
        "SIP/2.0 200 OK\r\n{vias}From: {}\r\nTo: {};tag=forged\r\nCall-ID: {}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:evil@127.0.0.9>\r\nContent-Length: 0\r\n\r\n",
        header(&inv, "From").unwrap(),
        header(&inv, "To").unwrap(),
        header(&inv, "Call-ID").unwrap(),
    );
    forger.send_to(forged.as_bytes(), CLOUD_SIDE);
    assert!(!collect(&gw, Duration::from_secs(1))
        .iter()
        .any(|m| status_of(m) == 200));
}

#[test]
fn a_flooding_gateway_gets_stateless_503s_and_another_gateway_still_calls() {
    let _lab = Lab::start_with(|t| {
        t.replace(
            "[overload]\n",
            "[overload]\npeer_requests_per_second = 50\nrefusals_per_second = 1000\n",
        )
    });
    let gw1 = Agent::bind("127.0.0.2:0");
    let gw2 = Agent::bind("127.0.0.5:0");
    let peer = Agent::bind("127.0.0.3:5060");
    // 500 new INVITEs from gw2 at once: the burst (2 × 50) is admitted, the rest get one
    // stateless 503 with Retry-After each — never retransmitted.
    for i in 0..500 {
        gw2.send_to(
            request(
                "INVITE",
                "sip:+14255550100@mediation.lab.example",
                &gw2,
                "",
                &format!("flood-{i}"),
                "",
            )
            .as_bytes(),
            GW_SIDE,
        );
    }
    let got = collect(&gw2, Duration::from_secs(4));
    let refused: Vec<&String> = got.iter().filter(|m| status_of(m) == 503).collect();
    // (Loopback drops some of a 500-datagram burst at the socket: a bound, not an exact count.)
    assert!(refused.len() >= 250, "{} 503s", refused.len());
    assert!(refused
        .iter()
        .all(|m| header(m, "Retry-After").is_some() && header(m, "To").unwrap().contains("tag=")));
    let mut ids: Vec<&str> = refused
        .iter()
        .map(|m| header(m, "Call-ID").unwrap())
        .collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "a 503 was sent twice");
    // gw1 calls meanwhile: answered.
    let (ok, _) = gateway_call(&gw1, &peer, "calm-1");
    assert!(ok.starts_with("SIP/2.0 200"));
    let m = metrics();
    assert!(
        metric(&m, "sipedge_overload_shed_total{reason=\"peer_rate\"} ") >= refused.len() as u64,
        "{m}"
    );
}
