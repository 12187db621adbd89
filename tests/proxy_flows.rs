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
