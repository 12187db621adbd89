//! The media attacks of issue 9, one test each, on the running lab appliance where the attack is
//! on the wire: an SDP aiming the relay at loopback or at us (488, no port taken), a spoofed
//! first packet from the gateway's host on another port (strict latching keeps the signalled
//! address), NAT latching that moves only after the latched source went quiet, media from
//! elsewhere (dropped, counted, logged once, and no "no RTP" hang-up while it flows), and SRTP
//! protect refusing an index twice (unit level: the relay's transform).
//!
//! gw1 is a Rust UDP agent on 127.0.0.2:5060 and the cloud peer one on 127.0.0.3:5060; the peer
//! answers without `a=crypto`, so both legs are plain RTP and every packet can be checked.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

mod common;
#[path = "common/ops_support.rs"]
mod ops_support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{header, Agent, Lab};
use ops_support::{eventually, http_get, response, token, with_body, CLOUD_SIDE, GW_SIDE, T};
use sipedge::media::{SrtpError, SrtpSuite, SrtpTransform};

const GW_CONTACT: &str = "sip:gw@127.0.0.2:5060";
const PEER_CONTACT: &str = "sip:peer@127.0.0.3:5060";

fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq).wrapping_mul(160)).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xd5; 160]);
    p
}

fn sock(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind(format!("{ip}:0")).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s
}

/// The next datagram on `s` within its read timeout.
fn recv(s: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = [0u8; 2048];
    s.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
}

fn sdp(host: &str, port: u16) -> String {
    format!(
        "v=0\r\no=ua 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\n"
    )
}

fn body(m: &str) -> &str {
    m.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn media_port(sdp: &str) -> u16 {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("m=audio port")
}

/// Waits for a message on `agent` whose text satisfies `pred`.
fn expect_where(agent: &Agent, what: &str, t: Duration, pred: impl Fn(&str) -> bool) -> String {
    try_expect(agent, t, pred).unwrap_or_else(|| panic!("no {what} within {t:?}"))
}

fn try_expect(agent: &Agent, t: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
    let deadline = Instant::now() + t;
    while Instant::now() < deadline {
        if let Some((m, _)) = agent.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            let s = String::from_utf8_lossy(&m).into_owned();
            if pred(&s) {
                return Some(s);
            }
        }
    }
    None
}

fn invite(call_id: &str, offer: &str) -> Vec<u8> {
    let head = format!(
        "INVITE sip:+14255550100@mediation.lab.example SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-{call_id};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:gw@lab.example>;tag=gwtag\r\n\
         To: <sip:+14255550100@lab.example>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
         Contact: <{GW_CONTACT}>\r\n"
    );
    with_body(head, Some(offer))
}

/// One established plain call: gw1's and the peer's agents and RTP sockets, our relay ports.
struct Call {
    gw: Agent,
    _peer: Agent,
    gw_rtp: UdpSocket,
    peer_rtp: UdpSocket,
    relay_a: SocketAddr,
    relay_b: SocketAddr,
}

impl Call {
    fn establish(call_id: &str) -> Call {
        let gw = Agent::bind("127.0.0.2:5060");
        let peer = Agent::bind("127.0.0.3:5060");
        let gw_rtp = sock("127.0.0.2");
        let peer_rtp = sock("127.0.0.3");
        let offer = sdp("127.0.0.2", gw_rtp.local_addr().unwrap().port());
        gw.send_to(&invite(call_id, &offer), GW_SIDE);
        let got = expect_where(&peer, "INVITE at the peer", T, |m| {
            m.starts_with("INVITE") && header(m, "Call-ID") == Some(call_id)
        });
        let relay_b = SocketAddr::from(([127, 0, 0, 1], media_port(body(&got))));
        let answer = sdp("127.0.0.3", peer_rtp.local_addr().unwrap().port());
        peer.send_to(
            &response(&got, "200 OK", "peertag", PEER_CONTACT, Some(&answer)),
            CLOUD_SIDE,
        );
        let ok = expect_where(&gw, "200 at the gateway", T, |m| {
            m.starts_with("SIP/2.0 200") && header(m, "CSeq") == Some("1 INVITE")
        });
        let relay_a = SocketAddr::from(([127, 0, 0, 1], media_port(body(&ok))));
        let to = header(&ok, "To").unwrap().to_owned();
        let mut ack = format!(
            "ACK {PEER_CONTACT} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-{call_id}-ack;rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:gw@lab.example>;tag=gwtag\r\nTo: {to}\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 ACK\r\n"
        );
        for rr in ok
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("record-route:"))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            ack.push_str(&format!(
                "Route: {}\r\n",
                rr.split_once(':').unwrap().1.trim()
            ));
        }
        gw.send_to(&with_body(ack, None), GW_SIDE);
        expect_where(&peer, "ACK at the peer", T, |m| m.starts_with("ACK"));
        Call {
            gw,
            _peer: peer,
            gw_rtp,
            peer_rtp,
            relay_a,
            relay_b,
        }
    }
}

fn metric(lab: &Lab, series: &str) -> Option<u64> {
    let (status, text) = http_get("/metrics", Some(&token(lab)));
    assert_eq!(status, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn sdp_aimed_at_loopback_or_at_us_is_refused_488_without_a_port() {
    let lab = Lab::start_with(|t| t.replace("allow_loopback = true", "allow_loopback = false"));
    let gw = Agent::bind("127.0.0.2:5060");
    let peer = Agent::bind("127.0.0.3:5060");
    let ports = metric(&lab, "sipedge_media_ports_free").expect("ports gauge");
    // The relay aimed at a local service (127.0.0.1:22), at loopback elsewhere, at multicast.
    for (i, host) in ["127.0.0.1", "127.0.0.2", "224.0.0.1"].iter().enumerate() {
        let call_id = format!("attack-media-addr-{i}");
        gw.send_to(&invite(&call_id, &sdp(host, 22)), GW_SIDE);
        let r = expect_where(&gw, "final response", T, |m| {
            m.starts_with("SIP/2.0 4") && header(m, "Call-ID") == Some(call_id.as_str())
        });
        assert!(r.starts_with("SIP/2.0 488 "), "{host}: {r}");
    }
    assert!(
        try_expect(&peer, Duration::from_millis(300), |m| m
            .starts_with("INVITE"))
        .is_none(),
        "nothing reached the cloud peer"
    );
    // Counters are published every 500 ms.
    assert!(
        eventually(T, || metric(&lab, "sipedge_sdp_address_refused_total")
            == Some(3)),
        "{:?}",
        metric(&lab, "sipedge_sdp_address_refused_total")
    );
    assert_eq!(
        metric(&lab, "sipedge_media_ports_free"),
        Some(ports),
        "no port taken"
    );
    assert_eq!(
        metric(&lab, "sipedge_media_sessions_created_total"),
        Some(0)
    );
}

#[test]
fn spoofed_first_packet_from_the_gateway_host_does_not_take_the_latch() {
    let _lab = Lab::start();
    let call = Call::establish("attack-media-spoof");
    // The attacker shares the gateway's IP, another port, and is first.
    let spoof = sock("127.0.0.2");
    spoof.send_to(&rtp(0x6666, 1), call.relay_a).unwrap();
    spoof.send_to(&rtp(0x6666, 2), call.relay_a).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    call.gw_rtp.send_to(&rtp(0x1111, 10), call.relay_a).unwrap();
    assert_eq!(
        recv(&call.peer_rtp),
        Some(rtp(0x1111, 10)),
        "only the gateway's packet is relayed"
    );
    assert_eq!(
        recv(&call.peer_rtp),
        None,
        "the spoofed packets were dropped"
    );
    // The peer's media goes to the signalled address, not to the spoofer.
    call.peer_rtp
        .send_to(&rtp(0x2222, 20), call.relay_b)
        .unwrap();
    assert_eq!(recv(&call.gw_rtp), Some(rtp(0x2222, 20)));
    assert_eq!(recv(&spoof), None, "the spoofer gets nothing");
}

#[test]
fn nat_latching_takes_the_first_source_and_moves_only_after_it_is_quiet() {
    let _lab = Lab::start_with(|t| {
        t.replace(
            "name = \"gw1.lab.example\"\nport = 5060\ntransport = \"udp\"\nsite = \"lab\"\n",
            "name = \"gw1.lab.example\"\nport = 5060\ntransport = \"udp\"\nsite = \"lab\"\nlatching = \"nat\"\n",
        )
        .replace("allow_loopback = true", "allow_loopback = true\nlatch_quiet_ms = 600")
    });
    let call = Call::establish("attack-media-nat");
    // Behind NAT: the gateway's media comes from another address than its SDP says.
    let nat1 = sock("127.0.0.12");
    let nat2 = sock("127.0.0.13");
    nat1.send_to(&rtp(0x1111, 1), call.relay_a).unwrap();
    assert_eq!(recv(&call.peer_rtp), Some(rtp(0x1111, 1)));
    call.peer_rtp
        .send_to(&rtp(0x2222, 1), call.relay_b)
        .unwrap();
    assert_eq!(
        recv(&nat1),
        Some(rtp(0x2222, 1)),
        "symmetric: back to the latched source"
    );
    assert_eq!(recv(&call.gw_rtp), None);
    // A second source while the first one talks: dropped.
    nat1.send_to(&rtp(0x1111, 2), call.relay_a).unwrap();
    assert_eq!(recv(&call.peer_rtp), Some(rtp(0x1111, 2)));
    nat2.send_to(&rtp(0x3333, 1), call.relay_a).unwrap();
    assert_eq!(
        recv(&call.peer_rtp),
        None,
        "no takeover while the latched source is live"
    );
    call.peer_rtp
        .send_to(&rtp(0x2222, 2), call.relay_b)
        .unwrap();
    assert_eq!(recv(&nat1), Some(rtp(0x2222, 2)));
    // The first source goes quiet for longer than latch_quiet_ms: the new one takes over.
    std::thread::sleep(Duration::from_millis(900));
    nat2.send_to(&rtp(0x3333, 2), call.relay_a).unwrap();
    assert_eq!(recv(&call.peer_rtp), Some(rtp(0x3333, 2)));
    call.peer_rtp
        .send_to(&rtp(0x2222, 3), call.relay_b)
        .unwrap();
    assert_eq!(recv(&nat2), Some(rtp(0x2222, 3)));
    assert_eq!(recv(&nat1), None);
}

#[test]
fn media_from_elsewhere_is_counted_logged_once_and_never_no_rtp() {
    let lab = Lab::start_with(|t| t.replace("media_timeout_s = 60", "media_timeout_s = 2"));
    let call = Call::establish("attack-media-elsewhere");
    // A gateway whose RTP all comes from another address than its SDP (strict latching):
    // dropped, but the call is not hung up as "no RTP" while it flows.
    let elsewhere = sock("127.0.0.9");
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_millis(3500) {
        elsewhere
            .send_to(&rtp(0x4444, sent as u16), call.relay_a)
            .unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            try_expect(&call.gw, Duration::ZERO, |m| m.starts_with("BYE")).is_none(),
            "hung up after {:?} although media was arriving",
            started.elapsed()
        );
    }
    assert_eq!(recv(&call.peer_rtp), None, "nothing relayed from elsewhere");
    let elsewhere = || metric(&lab, "sipedge_media_from_elsewhere_total{leg=\"gateway\"}");
    assert!(
        eventually(T, || elsewhere().is_some_and(|n| n >= sent - 2)),
        "{:?} of {sent} counted",
        elsewhere()
    );
    std::thread::sleep(Duration::from_millis(600));
    let counted = elsewhere().unwrap();
    assert_eq!(
        metric(
            &lab,
            "sipedge_media_dropped_packets_total{leg=\"gateway\",reason=\"foreign_source\"}"
        ),
        Some(counted)
    );
    let log = lab.log_text();
    assert_eq!(
        log.matches("media from elsewhere than the leg's source")
            .count(),
        1,
        "logged once for the leg:\n{log}"
    );
    assert!(!log.contains("no RTP"), "{log}");
    // Once nothing arrives at all, supervision hangs up as before.
    expect_where(
        &call.gw,
        "BYE on media timeout",
        Duration::from_secs(5),
        |m| m.starts_with("BYE"),
    );
    assert!(lab.log_text().contains("no RTP in either direction"));
    assert!(eventually(T, || {
        metric(&lab, "sipedge_media_active_calls") == Some(0)
    }));
}

#[test]
fn srtp_protect_refuses_to_protect_an_index_twice() {
    let mut tx = SrtpTransform::new(SrtpSuite::Aes128CmSha1_80, &[7u8; 30]).unwrap();
    let pkt = rtp(0x1111, 500);
    let mut buf = [0u8; 512];
    buf[..pkt.len()].copy_from_slice(&pkt);
    let n = tx.protect_rtp(&mut buf, pkt.len()).unwrap();
    assert_eq!(n, pkt.len() + 10);
    // The same packet again (a duplicate or a replay toward the SRTP leg): encrypting it would
    // reuse its keystream, so it is refused and the relay counts srtp_index_reuse.
    buf[..pkt.len()].copy_from_slice(&pkt);
    assert_eq!(
        tx.protect_rtp(&mut buf, pkt.len()),
        Err(SrtpError::IndexReuse)
    );
    assert_eq!(&buf[..pkt.len()], &pkt[..], "nothing encrypted");
    buf[..pkt.len()].copy_from_slice(&rtp(0x1111, 501));
    assert!(
        tx.protect_rtp(&mut buf, pkt.len()).is_ok(),
        "the index moves forward"
    );
}

/// Counters, sans IO: a call to a gateway holds one of its sessions (`max_sessions`) until it
/// ends, by media timeout too, and another gateway's BYE with the live Call-ID (and a copied
/// route set) neither ends it nor releases its session.
#[test]
fn gateway_session_count_released_on_media_timeout_never_by_another_peer() {
    use common::sans_io::{lab_core, udp_flow};
    use sipedge::config::{Config, Side};
    use sipedge::flow::{Inbound, Transmit};
    use sipedge::media::fake::FakeMedia;
    use sipedge::proxy::anchor::Anchor;
    use sipedge::proxy::Core;
    use sipedge::sip::Message;

    fn feed(core: &mut Core, now: Instant, side: Side, remote: &str, text: &[u8]) -> Vec<Transmit> {
        let msg = Message::parse(bytes::Bytes::copy_from_slice(text)).expect("parses");
        core.handle_inbound(now, Inbound::Message(udp_flow(side, remote), msg));
        std::iter::from_fn(|| core.poll_transmit()).collect()
    }
    fn text(t: &Transmit) -> String {
        String::from_utf8_lossy(&t.data).into_owned()
    }
    fn route_set(rrs: impl Iterator<Item = String>) -> String {
        rrs.map(|r| format!("Route: {r}\r\n")).collect()
    }
    fn record_routes(m: &str) -> Vec<String> {
        m.lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("record-route:"))
            .map(|l| l.split_once(':').unwrap().1.trim().to_owned())
            .collect()
    }

    let edit = |t: String| t.replace("media_timeout_s = 60", "media_timeout_s = 2");
    let t0 = Instant::now();
    let mut core = lab_core(t0, edit);
    let cfg_text = edit(include_str!("../config/sipedge.toml").to_owned());
    let cfg = Config::from_toml(std::path::Path::new("config/sipedge.toml"), &cfg_text).unwrap();
    let settings = cfg.media.clone().unwrap();
    core.set_anchor(Anchor::from_config(
        &cfg,
        settings,
        Box::new(FakeMedia::new(8)),
    ));

    let call_id = "attack-media-sessions";
    let offer = sdp("127.0.0.3", 30000);
    let inv = with_body(
        format!(
            "INVITE sip:+14255550100@ap.lab.example SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bK-cl1\r\nMax-Forwards: 70\r\n\
             From: <sip:alice@lab.example>;tag=cl\r\nTo: <sip:+14255550100@ap.lab.example>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <{PEER_CONTACT}>\r\n"
        ),
        Some(&offer),
    );
    let out = feed(&mut core, t0, Side::Cloud, "127.0.0.3:5060", &inv);
    let fwd = out
        .iter()
        .find(|t| t.side == Side::Gateway && t.data.starts_with(b"INVITE"))
        .expect("INVITE to a gateway");
    let (gw_addr, gw_inv) = (fwd.remote.to_string(), text(fwd));
    let (gw_name, other_addr) = if gw_addr == "127.0.0.2:5060" {
        ("gw1.lab.example", "127.0.0.5:5060")
    } else {
        ("gw2.lab.example", "127.0.0.2:5060")
    };
    assert_eq!(
        core.live().sessions.get(gw_name),
        Some(&1),
        "the pending branch"
    );
    let answer = sdp(gw_addr.split(':').next().unwrap(), 20000);
    let ok = response(&gw_inv, "200 OK", "gwtag", GW_CONTACT, Some(&answer));
    let out = feed(&mut core, t0, Side::Gateway, &gw_addr, &ok);
    let ok_up = out
        .iter()
        .find(|t| t.side == Side::Cloud && t.data.starts_with(b"SIP/2.0 200"))
        .map(text)
        .expect("200 to the cloud");
    let to = header(&ok_up, "To").unwrap().to_owned();
    let ack = with_body(
        format!(
            "ACK {GW_CONTACT} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bK-cl2\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@lab.example>;tag=cl\r\nTo: {to}\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 ACK\r\n{}",
            route_set(record_routes(&ok_up).into_iter().rev())
        ),
        None,
    );
    feed(&mut core, t0, Side::Cloud, "127.0.0.3:5060", &ack);
    assert_eq!(
        core.live().sessions.get(gw_name),
        Some(&1),
        "the established call"
    );

    // The other gateway sends a BYE for the live Call-ID with the route set copied from the
    // INVITE (as a gateway would address its own dialog).
    let bye = with_body(
        format!(
            "BYE {PEER_CONTACT} SIP/2.0\r\nVia: SIP/2.0/UDP {other_addr};branch=z9hG4bK-x1\r\n\
             Max-Forwards: 70\r\nFrom: {to}\r\nTo: <sip:alice@lab.example>;tag=cl\r\n\
             Call-ID: {call_id}\r\nCSeq: 9 BYE\r\n{}",
            route_set(record_routes(&gw_inv).into_iter())
        ),
        None,
    );
    let out = feed(&mut core, t0, Side::Gateway, other_addr, &bye);
    assert!(
        !out.iter()
            .any(|t| t.side == Side::Cloud && t.data.starts_with(b"BYE")),
        "another peer's BYE is not forwarded: {:?}",
        out.iter().map(text).collect::<Vec<_>>()
    );
    assert_eq!(
        core.live().sessions.get(gw_name),
        Some(&1),
        "not released by another peer"
    );
    assert_eq!(core.active_calls(), 1);

    // No media for media_timeout: our BYEs to both legs, and the session is released.
    let mut byes = Vec::new();
    for step in 1..=40u64 {
        let now = t0 + Duration::from_millis(100 * step);
        core.handle_timeout(now);
        byes.extend(
            std::iter::from_fn(|| core.poll_transmit())
                .filter(|t| t.data.starts_with(b"BYE"))
                .map(|t| t.side),
        );
    }
    assert!(
        byes.contains(&Side::Gateway) && byes.contains(&Side::Cloud),
        "{byes:?}"
    );
    assert_eq!(core.live().sessions.get(gw_name).copied().unwrap_or(0), 0);
    assert_eq!(core.active_calls(), 0);
}
