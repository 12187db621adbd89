//! Call flows through the proxy core on a virtual clock (no sockets): CANCEL, busy, failover,
//! in-dialog requests along the Record-Route set, timeouts.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod common;

use bytes::Bytes;
use common::sans_io::{lab_core, udp_flow};
use sipedge::config::Side;
use sipedge::flow::Inbound;
use sipedge::flow::Transmit;
use sipedge::proxy::Core;
use sipedge::sip::Message;

struct Sim {
    core: Core,
    now: Instant,
}

const GW1: &str = "127.0.0.2:5060";
const GW2: &str = "127.0.0.5:5060";
const PEER: &str = "127.0.0.3:5060";

impl Sim {
    fn new() -> Sim {
        Sim::with(|t| t)
    }
    fn with(edit: impl FnOnce(String) -> String) -> Sim {
        let now = Instant::now();
        Sim {
            core: lab_core(now, edit),
            now,
        }
    }
    /// Delivers a message from `from` on `side`; returns the transmits.
    fn send(&mut self, side: Side, from: &str, msg: &str) -> Vec<(SocketAddr, Message)> {
        let flow = udp_flow(side, from);
        let m = Message::parse(Bytes::from(msg.to_owned())).expect("test message parses");
        self.core
            .handle_inbound(self.now, Inbound::Message(flow, m));
        self.drain()
    }
    fn advance(&mut self, d: Duration) -> Vec<(SocketAddr, Message)> {
        self.now += d;
        self.core.handle_timeout(self.now);
        self.drain()
    }
    fn drain(&mut self) -> Vec<(SocketAddr, Message)> {
        let mut out = Vec::new();
        while let Some(Transmit { remote, data, .. }) = self.core.poll_transmit() {
            out.push((
                remote,
                Message::parse(data).expect("we send what we can parse"),
            ));
        }
        out
    }
}

fn to(out: &[(SocketAddr, Message)], addr: &str) -> Vec<Message> {
    out.iter()
        .filter(|(a, _)| a.to_string() == addr)
        .map(|(_, m)| m.clone())
        .collect()
}

fn status(ms: &[Message]) -> Vec<u16> {
    ms.iter().filter_map(|m| m.status()).collect()
}

fn invite(n: u32, ruri: &str, from_addr: &str) -> String {
    format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {from_addr};branch=z9hG4bK-c{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@{from_addr}>;tag=a{n}\r\nTo: <{ruri}>\r\n\
         P-Asserted-Identity: <sip:alice@lab.example>\r\n\
         Call-ID: call-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{from_addr}>\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The response a UAS builds for a forwarded request (Vias, From, To + tag, Call-ID, CSeq,
/// and the Record-Route set for dialog-forming responses).
fn answer(req: &Message, code: u16, reason: &str, contact: &str) -> String {
    let mut s = format!("SIP/2.0 {code} {reason}\r\n");
    for v in req.header_values(sipedge::sip::HeaderName::Via) {
        s.push_str(&format!("Via: {}\r\n", String::from_utf8_lossy(v)));
    }
    for r in req.header_values(sipedge::sip::HeaderName::RecordRoute) {
        s.push_str(&format!("Record-Route: {}\r\n", String::from_utf8_lossy(r)));
    }
    let h = |n| String::from_utf8_lossy(req.header(n).unwrap()).into_owned();
    use sipedge::sip::HeaderName as H;
    s.push_str(&format!(
        "From: {}\r\nTo: {};tag=uas\r\nCall-ID: {}\r\nCSeq: {}\r\n",
        h(H::From),
        h(H::To),
        h(H::CallId),
        h(H::CSeq)
    ));
    s.push_str(&format!(
        "Contact: <{contact}>\r\nContent-Length: 0\r\n\r\n"
    ));
    s
}

#[test]
fn cancel_before_answer_gives_200_and_487_upstream() {
    let mut s = Sim::new();
    let out = s.send(
        Side::Gateway,
        GW1,
        &invite(1, "sip:+14255550100@mediation.lab.example", GW1),
    );
    assert_eq!(status(&to(&out, GW1)), vec![100]);
    let fwd = to(&out, PEER).pop().expect("forwarded");
    let out = s.send(
        Side::Cloud,
        PEER,
        &answer(&fwd, 180, "Ringing", "sip:callee@127.0.0.3"),
    );
    assert_eq!(status(&to(&out, GW1)), vec![180]);
    let cancel = invite(1, "sip:+14255550100@mediation.lab.example", GW1)
        .replace("INVITE sip", "CANCEL sip")
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    let out = s.send(Side::Gateway, GW1, &cancel);
    assert_eq!(status(&to(&out, GW1)), vec![200], "200 to the CANCEL");
    let fwd_cancel = to(&out, PEER)
        .pop()
        .expect("CANCEL forwarded after the 180");
    assert_eq!(fwd_cancel.method(), Some(&sipedge::sip::Method::Cancel));
    assert_eq!(
        fwd_cancel.top_via().unwrap().branch(),
        fwd.top_via().unwrap().branch(),
        "§9.1 same branch"
    );
    let out = s.send(
        Side::Cloud,
        PEER,
        &answer(&fwd_cancel, 200, "OK", "sip:callee@127.0.0.3"),
    );
    assert!(
        to(&out, GW1).is_empty(),
        "the CANCEL's 200 is ours, not relayed"
    );
    let out = s.send(
        Side::Cloud,
        PEER,
        &answer(&fwd, 487, "Request Terminated", "sip:callee@127.0.0.3"),
    );
    assert_eq!(status(&to(&out, GW1)), vec![487], "487 relayed upstream");
    let acks = to(&out, PEER);
    assert_eq!(acks.len(), 1);
    assert_eq!(
        acks[0].method(),
        Some(&sipedge::sip::Method::Ack),
        "hop-by-hop ACK for the 487"
    );
}

#[test]
fn busy_is_relayed_and_acked_hop_by_hop() {
    let mut s = Sim::new();
    let out = s.send(
        Side::Gateway,
        GW1,
        &invite(2, "sip:+14255550100@mediation.lab.example", GW1),
    );
    let fwd = to(&out, PEER).pop().unwrap();
    let out = s.send(
        Side::Cloud,
        PEER,
        &answer(&fwd, 486, "Busy Here", "sip:callee@127.0.0.3"),
    );
    assert_eq!(status(&to(&out, GW1)), vec![486]);
    assert_eq!(to(&out, PEER)[0].method(), Some(&sipedge::sip::Method::Ack));
    // The caller's ACK for the 486 is absorbed by our server transaction.
    let ack = invite(2, "sip:+14255550100@mediation.lab.example", GW1)
        .replace("INVITE sip", "ACK sip")
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
        .replace(
            "To: <sip:+14255550100@mediation.lab.example>",
            "To: <sip:+14255550100@mediation.lab.example>;tag=uas",
        );
    let out = s.send(Side::Gateway, GW1, &ack);
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn failover_on_503_then_answer_from_the_next_gateway() {
    let mut s = Sim::new();
    let out = s.send(
        Side::Cloud,
        PEER,
        &invite(3, "sip:+33144556677@ap.lab.example", PEER),
    );
    let first = out.iter().find(|(_, m)| m.is_request()).cloned().unwrap();
    let other = if first.0.to_string() == GW1 { GW2 } else { GW1 };
    let out = s.send(
        Side::Gateway,
        &first.0.to_string(),
        &answer(&first.1, 503, "Service Unavailable", "sip:gw@x"),
    );
    assert!(
        status(&to(&out, PEER)).is_empty(),
        "503 is not relayed while a gateway remains"
    );
    let second = to(&out, other)
        .into_iter()
        .find(|m| m.is_request())
        .expect("failed over");
    let out = s.send(
        Side::Gateway,
        other,
        &answer(&second, 200, "OK", "sip:gw@127.0.0.5"),
    );
    assert_eq!(status(&to(&out, PEER)), vec![200]);
}

#[test]
fn all_gateways_failing_gives_one_clean_final_response() {
    let mut s = Sim::new();
    let out = s.send(
        Side::Cloud,
        PEER,
        &invite(4, "sip:+33144556677@ap.lab.example", PEER),
    );
    let (a1, m1) = out.iter().find(|(_, m)| m.is_request()).cloned().unwrap();
    let out = s.send(
        Side::Gateway,
        &a1.to_string(),
        &answer(&m1, 503, "Service Unavailable", "sip:gw@x"),
    );
    let (a2, m2) = out
        .iter()
        .find(|(_, m)| m.method() == Some(&sipedge::sip::Method::Invite))
        .cloned()
        .unwrap();
    let out = s.send(
        Side::Gateway,
        &a2.to_string(),
        &answer(&m2, 504, "Server Time-out", "sip:gw@x"),
    );
    let finals = status(&to(&out, PEER));
    assert_eq!(finals.len(), 1, "{finals:?}");
    assert!(finals[0] >= 500, "{finals:?}");
}

#[test]
fn decline_603_is_never_retried() {
    let mut s = Sim::new();
    let out = s.send(
        Side::Cloud,
        PEER,
        &invite(5, "sip:+33144556677@ap.lab.example", PEER),
    );
    let (a1, m1) = out.iter().find(|(_, m)| m.is_request()).cloned().unwrap();
    let out = s.send(
        Side::Gateway,
        &a1.to_string(),
        &answer(&m1, 603, "Decline", "sip:gw@x"),
    );
    assert_eq!(status(&to(&out, PEER)), vec![603]);
    assert!(out
        .iter()
        .all(|(_, m)| !m.is_request() || m.method() == Some(&sipedge::sip::Method::Ack)));
}

#[test]
fn silent_gateway_fails_over_after_the_failover_timer() {
    let mut s = Sim::with(|t| t.replace("failover_timer_s = 10", "failover_timer_s = 2"));
    let out = s.send(
        Side::Cloud,
        PEER,
        &invite(6, "sip:+33144556677@ap.lab.example", PEER),
    );
    let (a1, _) = out.iter().find(|(_, m)| m.is_request()).cloned().unwrap();
    let other = if a1.to_string() == GW1 { GW2 } else { GW1 };
    let mut saw_other = false;
    for _ in 0..8 {
        let out = s.advance(Duration::from_millis(500));
        saw_other |= !to(&out, other).is_empty();
    }
    assert!(
        saw_other,
        "no failover to {other} after the 2 s failover timer"
    );
}

#[test]
fn in_dialog_bye_follows_the_record_route_set() {
    let mut s = Sim::new();
    let out = s.send(
        Side::Gateway,
        GW1,
        &invite(7, "sip:+14255550100@mediation.lab.example", GW1),
    );
    let fwd = to(&out, PEER).pop().unwrap();
    let out = s.send(
        Side::Cloud,
        PEER,
        &answer(&fwd, 200, "OK", "sip:callee@127.0.0.3:5060"),
    );
    let ok = to(&out, GW1)
        .into_iter()
        .find(|m| m.status() == Some(200))
        .unwrap();
    let rr: Vec<String> = ok
        .record_routes()
        .map(|r| String::from_utf8_lossy(r.raw()).into_owned())
        .collect();
    assert_eq!(rr.len(), 2, "{rr:?}");
    // The caller's route set is the Record-Route in order (it is the UAC, §12.1.2: reversed
    // for the UAS; the UAC takes them as they come in the response, bottom-most last… the
    // response lists them as the request did, and the UAC reverses them).
    let bye = format!(
        "BYE sip:callee@127.0.0.3:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {GW1};branch=z9hG4bK-bye7;rport\r\n\
         Route: {}\r\nRoute: {}\r\nMax-Forwards: 70\r\nFrom: <sip:caller@{GW1}>;tag=a7\r\n\
         To: <sip:+14255550100@mediation.lab.example>;tag=uas\r\nCall-ID: call-7\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        rr[1], rr[0]
    );
    let out = s.send(Side::Gateway, GW1, &bye);
    let fwd_bye = to(&out, PEER).pop().expect("BYE to the callee's contact");
    assert_eq!(fwd_bye.routes().count(), 0, "our two Route entries popped");
    assert_eq!(fwd_bye.max_forwards(), Some(69));
}

#[test]
fn unanswered_invite_times_out_with_408() {
    let mut s = Sim::with(|t| t.replace("failover_timer_s = 10", "failover_timer_s = 180"));
    s.send(
        Side::Gateway,
        GW1,
        &invite(8, "sip:+14255550100@mediation.lab.example", GW1),
    );
    let mut finals = Vec::new();
    for _ in 0..80 {
        let out = s.advance(Duration::from_secs(1));
        finals.extend(status(&to(&out, GW1)).into_iter().filter(|c| *c >= 200));
    }
    // One final response, 408, retransmitted on Timer G until an ACK (none here) or Timer H.
    assert!(
        !finals.is_empty() && finals.iter().all(|c| *c == 408),
        "{finals:?}"
    );
}

#[test]
fn strict_router_request_uri_is_replaced_by_the_last_route() {
    // §16.4: the previous hop strict-routed, putting our Record-Route value in the
    // Request-URI and the remote target last in Route.
    let mut s = Sim::new();
    let out = s.send(
        Side::Gateway,
        GW1,
        &invite(9, "sip:+14255550100@mediation.lab.example", GW1),
    );
    let fwd = to(&out, PEER).pop().unwrap();
    let out = s.send(
        Side::Cloud,
        PEER,
        &answer(&fwd, 200, "OK", "sip:callee@127.0.0.3:5060"),
    );
    let ok = to(&out, GW1)
        .into_iter()
        .find(|m| m.status() == Some(200))
        .unwrap();
    // Our gateway-side Record-Route value (the bottom one), as a strict router would use it.
    let ours = ok
        .record_routes()
        .last()
        .map(|r| String::from_utf8_lossy(r.uri().raw()).into_owned())
        .unwrap();
    let strict = |ruri: &str, branch: &str| {
        format!(
            "BYE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {GW1};branch=z9hG4bK-{branch};rport\r\n\
             Route: <sip:callee@127.0.0.3:5060>\r\nMax-Forwards: 70\r\nFrom: <sip:caller@{GW1}>;tag=a9\r\n\
             To: <sip:+14255550100@mediation.lab.example>;tag=uas\r\nCall-ID: call-9\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        )
    };
    // Without our token in the Request-URI it is no dialog of ours: refused, nothing resolved.
    let out = s.send(
        Side::Gateway,
        GW1,
        &strict("sip:mediation.lab.example:5068;transport=udp", "strict0"),
    );
    assert_eq!(status(&to(&out, GW1)), vec![403]);
    assert!(to(&out, PEER).is_empty());
    let out = s.send(Side::Gateway, GW1, &strict(&ours, "strict1"));
    let fwd = to(&out, PEER).pop().expect("forwarded to the last Route");
    assert_eq!(
        fwd.request_uri().unwrap().raw(),
        b"sip:callee@127.0.0.3:5060"
    );
    assert_eq!(fwd.routes().count(), 0);
}

#[test]
fn mid_dialog_request_not_through_us_is_refused() {
    let mut s = Sim::new();
    let bye = format!(
        "BYE sip:x@127.0.0.3:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {GW1};branch=z9hG4bK-nr;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@{GW1}>;tag=a10\r\n\
         To: <sip:b@x>;tag=uas\r\nCall-ID: call-10\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let out = s.send(Side::Gateway, GW1, &bye);
    assert_eq!(status(&to(&out, GW1)), vec![403]);
    assert!(to(&out, PEER).is_empty());
}

#[test]
fn next_hop_fqdn_outside_hosts_is_resolved_through_the_driver() {
    let mut s = Sim::new();
    let out = s.send(
        Side::Gateway,
        GW1,
        &invite(11, "sip:+14255550100@mediation.lab.example", GW1),
    );
    let fwd = to(&out, PEER).pop().unwrap();
    let out = s.send(
        Side::Cloud,
        PEER,
        &answer(&fwd, 200, "OK", "sip:callee@callee.cloud.example:5070"),
    );
    let ok = to(&out, GW1)
        .into_iter()
        .find(|m| m.status() == Some(200))
        .unwrap();
    let rr: Vec<String> = ok
        .record_routes()
        .map(|r| String::from_utf8_lossy(r.raw()).into_owned())
        .collect();
    let bye = format!(
        "BYE sip:callee@callee.cloud.example:5070 SIP/2.0\r\nVia: SIP/2.0/UDP {GW1};branch=z9hG4bK-bye11;rport\r\n\
         Route: {}\r\nRoute: {}\r\nMax-Forwards: 70\r\nFrom: <sip:caller@{GW1}>;tag=a11\r\n\
         To: <sip:+14255550100@mediation.lab.example>;tag=uas\r\nCall-ID: call-11\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        rr[1], rr[0]
    );
    let out = s.send(Side::Gateway, GW1, &bye);
    assert!(out
        .iter()
        .all(|(_, m)| !m.is_request() || m.method() != Some(&sipedge::sip::Method::Bye)));
    assert_eq!(
        s.core.poll_resolve().as_deref(),
        Some("callee.cloud.example")
    );
    let now = s.now;
    s.core.handle_resolved(
        now,
        "callee.cloud.example".into(),
        Some("127.0.0.3".parse().unwrap()),
    );
    let out = s.drain();
    let fwd = out.iter().find(|(a, m)| {
        a.to_string() == "127.0.0.3:5070" && m.method() == Some(&sipedge::sip::Method::Bye)
    });
    assert!(fwd.is_some(), "{out:?}");
    // A name that does not resolve fails the request with 503.
    let bye2 = bye
        .replace("callee.cloud.example", "nowhere.cloud.example")
        .replace("bye11", "bye12")
        .replace("CSeq: 2", "CSeq: 3");
    s.send(Side::Gateway, GW1, &bye2);
    assert_eq!(
        s.core.poll_resolve().as_deref(),
        Some("nowhere.cloud.example")
    );
    s.core
        .handle_resolved(now, "nowhere.cloud.example".into(), None);
    let out = s.drain();
    assert_eq!(status(&to(&out, GW1)), vec![503]);
}

#[test]
fn a_request_that_comes_back_to_us_is_a_loop_482() {
    let mut s = Sim::new();
    let out = s.send(
        Side::Gateway,
        GW1,
        &invite(12, "sip:+14255550100@mediation.lab.example", GW1),
    );
    let fwd = to(&out, PEER).pop().unwrap();
    // The next hop sends it straight back to our gateway side.
    let looped = String::from_utf8(fwd.as_bytes().to_vec()).unwrap();
    let out = s.send(Side::Gateway, GW1, &looped);
    assert_eq!(
        status(&to(&out, GW1))
            .iter()
            .filter(|c| **c >= 200)
            .copied()
            .collect::<Vec<_>>(),
        vec![482]
    );
}

#[test]
fn received_and_rport_are_recorded_in_the_callers_via() {
    let mut s = Sim::new();
    // The caller's Via names another address and asks for rport (RFC 3581).
    let inv = invite(13, "sip:+14255550100@mediation.lab.example", GW1).replace(
        &format!("Via: SIP/2.0/UDP {GW1};branch=z9hG4bK-c13;rport"),
        "Via: SIP/2.0/UDP gw1.lab.example:5999;branch=z9hG4bK-c13;rport",
    );
    let out = s.send(Side::Gateway, GW1, &inv);
    let fwd = to(&out, PEER).pop().unwrap();
    let second = fwd.vias().nth(1).unwrap();
    assert_eq!(second.received(), Some(&b"127.0.0.2"[..]));
    assert_eq!(second.rport(), Some(Some(5060)));
    // The response goes back to the source address and port, not to 5999.
    let out = s.send(
        Side::Cloud,
        PEER,
        &answer(&fwd, 180, "Ringing", "sip:c@127.0.0.3"),
    );
    assert_eq!(status(&to(&out, GW1)), vec![180]);
}

/// An answered call gw1 → alice (call-N): the 200 at gw1 and the Route set gw1 uses.
fn answered_call(s: &mut Sim, n: u32) -> (Message, Vec<String>) {
    let out = s.send(
        Side::Gateway,
        GW1,
        &invite(n, "sip:+14255550100@mediation.lab.example", GW1),
    );
    let fwd = to(&out, PEER).pop().unwrap();
    let out = s.send(
        Side::Cloud,
        PEER,
        &answer(&fwd, 200, "OK", "sip:callee@127.0.0.3:5060"),
    );
    let ok = to(&out, GW1)
        .into_iter()
        .find(|m| m.status() == Some(200))
        .unwrap();
    let mut routes: Vec<String> = ok
        .record_routes()
        .map(|r| String::from_utf8_lossy(r.raw()).into_owned())
        .collect();
    routes.reverse();
    (ok, routes)
}

fn in_dialog(method: &str, n: u32, cseq: u32, routes: &[String]) -> String {
    let mut route = String::new();
    for r in routes {
        route.push_str(&format!("Route: {r}\r\n"));
    }
    format!(
        "{method} sip:callee@127.0.0.3:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {GW1};branch=z9hG4bK-{method}{n}-{cseq};rport\r\n\
         {route}Max-Forwards: 70\r\nFrom: <sip:caller@{GW1}>;tag=a{n}\r\n\
         To: <sip:+14255550100@mediation.lab.example>;tag=uas\r\nCall-ID: call-{n}\r\nCSeq: {cseq} {method}\r\n\
         Contact: <sip:caller@{GW1}>\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn maintenance_refuses_new_calls_and_options_statelessly_and_keeps_calls_in_progress() {
    let mut s = Sim::new();
    let (_, routes) = answered_call(&mut s, 20);
    s.core.set_maintenance(true);
    // A new call: one stateless 503 with Retry-After, no 100 Trying, nothing forwarded.
    let out = s.send(
        Side::Gateway,
        GW1,
        &invite(21, "sip:+14255550100@mediation.lab.example", GW1),
    );
    let at_gw = to(&out, GW1);
    assert_eq!(status(&at_gw), vec![503], "{out:?}");
    assert!(at_gw[0]
        .header(sipedge::sip::HeaderName::RetryAfter)
        .is_some());
    assert!(to(&out, PEER).is_empty());
    // Stateless: never retransmitted.
    let later = s.advance(Duration::from_secs(5));
    assert!(!status(&to(&later, GW1)).contains(&503), "{later:?}");
    // OPTIONS (the peers' keep-alive) too, from either side.
    let opt = |from: &str, ruri: &str| {
        format!(
            "OPTIONS {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-o{from};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:p@{from}>;tag=o\r\nTo: <{ruri}>\r\nCall-ID: opt-{from}\r\n\
             CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let out = s.send(Side::Cloud, PEER, &opt(PEER, "sip:ap.lab.example:5062"));
    assert_eq!(status(&to(&out, PEER)), vec![503]);
    let out = s.send(
        Side::Gateway,
        GW1,
        &opt(GW1, "sip:mediation.lab.example:5068"),
    );
    assert_eq!(status(&to(&out, GW1)), vec![503]);
    // The call in progress: its in-dialog requests pass, and it ends normally.
    let out = s.send(Side::Gateway, GW1, &in_dialog("INFO", 20, 2, &routes));
    assert!(to(&out, PEER)
        .iter()
        .any(|m| m.method() == Some(&sipedge::sip::Method::Info)));
    let out = s.send(Side::Gateway, GW1, &in_dialog("BYE", 20, 3, &routes));
    assert!(to(&out, PEER)
        .iter()
        .any(|m| m.method() == Some(&sipedge::sip::Method::Bye)));
    assert_eq!(s.core.active_calls(), 0);
    assert_eq!(s.core.published().proxy.shed.get("maintenance"), Some(&3));
    // Back in service: calls are taken again.
    s.core.set_maintenance(false);
    let out = s.send(
        Side::Gateway,
        GW1,
        &invite(22, "sip:+14255550100@mediation.lab.example", GW1),
    );
    assert_eq!(status(&to(&out, GW1)), vec![100]);
    assert!(to(&out, PEER).iter().any(|m| m.is_request()));
}

#[test]
fn drain_timeout_hangs_up_both_legs_with_dialog_cseq_and_cancels_ringing_calls() {
    let mut s = Sim::new();
    let (ok, routes) = answered_call(&mut s, 30);
    // gw1 sent CSeq 1 (INVITE) then 4 (INFO); the peer sent 9 (INFO toward gw1).
    let out = s.send(Side::Gateway, GW1, &in_dialog("INFO", 30, 4, &routes));
    let info = to(&out, PEER).pop().unwrap();
    s.send(
        Side::Cloud,
        PEER,
        &answer(&info, 200, "OK", "sip:callee@127.0.0.3:5060"),
    );
    let rr_peer: Vec<String> = info
        .record_routes()
        .map(|r| String::from_utf8_lossy(r.raw()).into_owned())
        .collect();
    assert!(rr_peer.is_empty());
    let fwd_routes: Vec<String> = ok
        .record_routes()
        .map(|r| String::from_utf8_lossy(r.raw()).into_owned())
        .collect();
    let peer_info = format!(
        "INFO sip:caller@{GW1} SIP/2.0\r\nVia: SIP/2.0/UDP {PEER};branch=z9hG4bK-pinfo;rport\r\n\
         Route: {}\r\nRoute: {}\r\nMax-Forwards: 70\r\n\
         From: <sip:+14255550100@mediation.lab.example>;tag=uas\r\nTo: <sip:caller@{GW1}>;tag=a30\r\n\
         Call-ID: call-30\r\nCSeq: 9 INFO\r\nContent-Length: 0\r\n\r\n",
        fwd_routes[0], fwd_routes[1]
    );
    let out = s.send(Side::Cloud, PEER, &peer_info);
    let at_gw = to(&out, GW1)
        .into_iter()
        .find(|m| m.method() == Some(&sipedge::sip::Method::Info))
        .expect("the peer's INFO reaches gw1");
    s.send(
        Side::Gateway,
        GW1,
        &answer(&at_gw, 200, "OK", &format!("sip:caller@{GW1}")),
    );
    // A second call, still ringing.
    let out = s.send(
        Side::Gateway,
        GW1,
        &invite(31, "sip:+14255550100@mediation.lab.example", GW1),
    );
    let ringing = to(&out, PEER).pop().unwrap();
    s.send(
        Side::Cloud,
        PEER,
        &answer(&ringing, 180, "Ringing", "sip:callee@127.0.0.3:5060"),
    );

    s.core.start_drain();
    assert!(!s.core.is_drained(), "two calls up");
    let out = s.send(
        Side::Gateway,
        GW1,
        &invite(32, "sip:+14255550100@mediation.lab.example", GW1),
    );
    assert_eq!(
        status(&to(&out, GW1)),
        vec![503],
        "new calls refused while draining"
    );
    assert_eq!(s.core.published().proxy.shed.get("draining"), Some(&1));

    assert_eq!(s.core.hang_up_all(s.now), 2);
    let out = s.drain();
    let byes_gw: Vec<Message> = to(&out, GW1)
        .into_iter()
        .filter(|m| m.method() == Some(&sipedge::sip::Method::Bye))
        .collect();
    let byes_peer: Vec<Message> = to(&out, PEER)
        .into_iter()
        .filter(|m| m.method() == Some(&sipedge::sip::Method::Bye))
        .collect();
    assert_eq!((byes_gw.len(), byes_peer.len()), (1, 1), "{out:?}");
    let text = |m: &Message| String::from_utf8_lossy(m.as_bytes()).into_owned();
    let (to_gw, to_peer) = (text(&byes_gw[0]), text(&byes_peer[0]));
    // Toward gw1 as the callee: its Contact, the callee's identity as From, a CSeq above 9.
    assert!(
        to_gw.starts_with(&format!("BYE sip:caller@{GW1} SIP/2.0")),
        "{to_gw}"
    );
    assert!(
        to_gw.contains("CSeq: 10 BYE") && to_gw.contains("Call-ID: call-30"),
        "{to_gw}"
    );
    assert!(
        to_gw.contains("From: <sip:+14255550100@mediation.lab.example>;tag=uas"),
        "{to_gw}"
    );
    assert!(
        to_gw.contains("To: <sip:caller@127.0.0.2:5060>;tag=a30"),
        "{to_gw}"
    );
    // Toward the peer as the caller: a CSeq above gw1's 4.
    assert!(
        to_peer.starts_with("BYE sip:callee@127.0.0.3:5060 SIP/2.0"),
        "{to_peer}"
    );
    assert!(to_peer.contains("CSeq: 5 BYE"), "{to_peer}");
    for t in [&to_gw, &to_peer] {
        assert!(
            t.contains("Reason: SIP;cause=503;text=\"appliance shutting down\""),
            "{t}"
        );
    }
    // The ringing call: a CANCEL to the peer.
    assert!(
        to(&out, PEER)
            .iter()
            .any(|m| m.method() == Some(&sipedge::sip::Method::Cancel)),
        "{out:?}"
    );
    assert_eq!(s.core.active_calls(), 0);
    assert!(
        !s.core.is_drained(),
        "our BYEs and the CANCEL wait for their answers"
    );
    for m in byes_peer.iter().chain(
        to(&out, PEER)
            .iter()
            .filter(|m| m.method() == Some(&sipedge::sip::Method::Cancel)),
    ) {
        s.send(
            Side::Cloud,
            PEER,
            &answer(m, 200, "OK", "sip:callee@127.0.0.3:5060"),
        );
    }
    s.send(
        Side::Gateway,
        GW1,
        &answer(&byes_gw[0], 200, "OK", &format!("sip:caller@{GW1}")),
    );
    let out = s.send(
        Side::Cloud,
        PEER,
        &answer(
            &ringing,
            487,
            "Request Terminated",
            "sip:callee@127.0.0.3:5060",
        ),
    );
    assert_eq!(status(&to(&out, GW1)), vec![487]);
    assert!(s.core.is_drained());
}
