//! Media anchoring end to end: the appliance on the lab configuration (`[media]` on 127.0.0.1,
//! the cloud peer `srtp = "optional"`), a Rust UDP SIP agent as gw1 (127.0.0.2:5060, plain RTP)
//! and one as the cloud peer (127.0.0.3:5060, answering with `a=crypto`, so the cloud leg is
//! SRTP). The agents send real RTP through the relay; the peer keys its own rtc-srtp contexts
//! from the SDP it saw.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

mod common;
#[path = "common/srtp_oracle.rs"]
mod srtp_oracle;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{header, Agent, Lab};
use rtc_srtp::context::Context;
use sipedge::media::SrtpSuite;
use sipedge::sdp::{base64_encode, CryptoLine};
use srtp_oracle::new_context;

const GW_SIDE: &str = "127.0.0.1:5068";
const CLOUD_SIDE: &str = "127.0.0.1:5062";
const T: Duration = Duration::from_secs(5);
const SUITE: SrtpSuite = SrtpSuite::Aes128CmSha1_80;

fn rtp(ssrc: u32, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq).wrapping_mul(160)).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn payload(i: u16) -> Vec<u8> {
    (0..160u16).map(|k| (k ^ i) as u8).collect()
}

fn rtp_sock(ip: [u8; 4]) -> UdpSocket {
    let s = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), 0)).expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    s
}

fn recv(s: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 2048];
    let (n, _) = s.recv_from(&mut buf).expect("packet relayed in time");
    buf[..n].to_vec()
}

/// Waits for a message matching `pred` (requests and responses alike), skipping others.
fn expect_where(agent: &Agent, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        if let Some((m, _)) = agent.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            let s = String::from_utf8_lossy(&m).into_owned();
            if pred(&s) {
                return s;
            }
        }
    }
    panic!("no {what} within {T:?}");
}

fn first_line(m: &str) -> &str {
    m.lines().next().unwrap_or("")
}

fn cseq_is(m: &str, cseq: &str) -> bool {
    header(m, "CSeq") == Some(cseq)
}

fn body(m: &str) -> &str {
    m.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// The RTP port and connection address of the first m-line.
fn media_of(sdp: &str) -> (String, u16) {
    let c = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .expect("c= line")
        .trim()
        .to_owned();
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("m=audio port");
    (c, port)
}

fn crypto_key(sdp: &str) -> Option<[u8; 30]> {
    let v = sdp.lines().find_map(|l| l.strip_prefix("a=crypto:"))?;
    let line = CryptoLine::parse(v.trim()).expect("crypto line parses");
    line.master_key_salt().try_into().ok()
}

fn sdp(host: &str, port: u16, version: u32, extra: &str) -> String {
    format!(
        "v=0\r\no=ua 1 {version} IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n{extra}"
    )
}

fn with_body(head: String, body: Option<&str>) -> Vec<u8> {
    match body {
        Some(b) => format!(
            "{head}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ),
        None => format!("{head}Content-Length: 0\r\n\r\n"),
    }
    .into_bytes()
}

/// A response to `req` (all its Vias, Record-Routes; a To tag added).
fn response(req: &str, status: &str, tag: &str, contact: &str, body: Option<&str>) -> Vec<u8> {
    let mut head = format!("SIP/2.0 {status}\r\n");
    for l in req.lines() {
        let name = l
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "v" | "record-route" | "from" | "f" | "call-id" | "i" | "cseq" => {
                head.push_str(l);
                head.push_str("\r\n");
            }
            "to" | "t" => {
                head.push_str(l);
                if !l.contains("tag=") {
                    head.push_str(&format!(";tag={tag}"));
                }
                head.push_str("\r\n");
            }
            _ => {}
        }
        if l.is_empty() {
            break;
        }
    }
    head.push_str(&format!("Contact: <{contact}>\r\n"));
    with_body(head, body)
}

/// The two UAs of one call, its dialog state and media sockets.
struct Call {
    id: String,
    gw: Agent,
    peer: Agent,
    gw_rtp: UdpSocket,
    peer_rtp: UdpSocket,
    /// Relay addresses: gateway leg (A), cloud leg (B).
    relay_a: SocketAddr,
    relay_b: SocketAddr,
    /// gw's To header of the dialog (with the peer's tag) and its route set.
    to: String,
    routes: Vec<String>,
    gw_cseq: u32,
    peer_key: [u8; 30],
    relay_key: Option<[u8; 30]>,
}

const GW_CONTACT: &str = "sip:gw@127.0.0.2:5060";
const PEER_CONTACT: &str = "sip:peer@127.0.0.3:5060";

impl Call {
    fn new(id: &str) -> Call {
        Call {
            id: id.to_owned(),
            gw: Agent::bind("127.0.0.2:5060"),
            peer: Agent::bind("127.0.0.3:5060"),
            gw_rtp: rtp_sock([127, 0, 0, 2]),
            peer_rtp: rtp_sock([127, 0, 0, 3]),
            relay_a: "0.0.0.0:0".parse().unwrap(),
            relay_b: "0.0.0.0:0".parse().unwrap(),
            to: String::new(),
            routes: Vec::new(),
            gw_cseq: 1,
            peer_key: [7u8; 30],
            relay_key: None,
        }
    }

    fn gw_request(
        &self,
        method: &str,
        ruri: &str,
        to: &str,
        cseq: u32,
        body: Option<&str>,
    ) -> Vec<u8> {
        let mut head = format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-{}-{cseq}-{method};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:gw@lab.example>;tag=gwtag\r\nTo: {to}\r\n\
             Call-ID: {}\r\nCSeq: {cseq} {method}\r\nContact: <{GW_CONTACT}>\r\n",
            self.id, self.id
        );
        for r in &self.routes {
            head.push_str(&format!("Route: {r}\r\n"));
        }
        with_body(head, body)
    }

    fn peer_sdp(&self, version: u32, extra: &str) -> String {
        let port = self.peer_rtp.local_addr().unwrap().port();
        sdp(
            "127.0.0.3",
            port,
            version,
            &format!(
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n{extra}",
                base64_encode(&self.peer_key)
            ),
        )
    }

    /// INVITE from gw1 → 200 from the peer → ACK. Checks the SDP each side sees.
    fn establish(&mut self) {
        let gw_port = self.gw_rtp.local_addr().unwrap().port();
        let offer = sdp("127.0.0.2", gw_port, 1, "");
        let inv = self.gw_request(
            "INVITE",
            "sip:+14255550100@mediation.lab.example",
            "<sip:+14255550100@lab.example>",
            1,
            Some(&offer),
        );
        self.gw.send_to(&inv, GW_SIDE);
        let got = expect_where(&self.peer, "INVITE at the peer", |m| {
            first_line(m).starts_with("INVITE") && header(m, "Call-ID") == Some(&self.id)
        });
        let (c, port) = media_of(body(&got));
        assert_eq!(
            c, "127.0.0.1",
            "the peer is offered our media address:\n{got}"
        );
        assert!(!body(&got).contains("127.0.0.2"), "{got}");
        assert!(
            body(&got).contains(" RTP/AVP "),
            "optional SRTP offers RTP/AVP (RFC 8643)"
        );
        self.relay_key = Some(crypto_key(body(&got)).expect("our a=crypto toward the cloud"));
        self.relay_b = SocketAddr::new([127, 0, 0, 1].into(), port);
        let answer = self.peer_sdp(1, "");
        self.peer.send_to(
            &response(&got, "200 OK", "peertag", PEER_CONTACT, Some(&answer)),
            CLOUD_SIDE,
        );
        let ok = expect_where(&self.gw, "200 at the gateway", |m| {
            first_line(m).starts_with("SIP/2.0 200") && cseq_is(m, "1 INVITE")
        });
        let (c, port) = media_of(body(&ok));
        assert_eq!(c, "127.0.0.1", "{ok}");
        assert!(
            !body(&ok).contains("a=crypto"),
            "no crypto toward the gateway: {ok}"
        );
        self.relay_a = SocketAddr::new([127, 0, 0, 1].into(), port);
        self.to = header(&ok, "To").unwrap().to_owned();
        // The UAC's route set: the Record-Routes in reverse order (§12.1.2).
        self.routes = ok
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("record-route:"))
            .map(|l| l.split_once(':').unwrap().1.trim().to_owned())
            .rev()
            .collect();
        self.ack(1);
    }

    fn ack(&self, cseq: u32) {
        let ack = self.gw_request("ACK", PEER_CONTACT, &self.to, cseq, None);
        self.gw.send_to(&ack, GW_SIDE);
        expect_where(&self.peer, "ACK at the peer", |m| {
            first_line(m).starts_with("ACK") && cseq_is(m, &format!("{cseq} ACK"))
        });
    }

    /// A re-INVITE from gw1 with `dir` (sendonly/sendrecv); the peer answers with `answer_dir`.
    fn reinvite(&mut self, version: u32, dir: &str, answer_dir: &str) {
        self.gw_cseq += 1;
        let n = self.gw_cseq;
        let gw_port = self.gw_rtp.local_addr().unwrap().port();
        let offer = sdp("127.0.0.2", gw_port, version, &format!("a={dir}\r\n"));
        let r = self.gw_request("INVITE", PEER_CONTACT, &self.to, n, Some(&offer));
        self.gw.send_to(&r, GW_SIDE);
        let got = expect_where(&self.peer, "re-INVITE at the peer", |m| {
            first_line(m).starts_with("INVITE") && cseq_is(m, &format!("{n} INVITE"))
        });
        assert!(body(&got).contains(&format!("a={dir}")), "{got}");
        let (_, port) = media_of(body(&got));
        assert_eq!(port, self.relay_b.port(), "the cloud leg keeps its port");
        self.relay_key = Some(crypto_key(body(&got)).expect("crypto in the re-offer"));
        let answer = self.peer_sdp(version, &format!("a={answer_dir}\r\n"));
        self.peer.send_to(
            &response(&got, "200 OK", "peertag", PEER_CONTACT, Some(&answer)),
            CLOUD_SIDE,
        );
        let ok = expect_where(&self.gw, "200 to the re-INVITE", |m| {
            first_line(m).starts_with("SIP/2.0 200") && cseq_is(m, &format!("{n} INVITE"))
        });
        assert!(body(&ok).contains(&format!("a={answer_dir}")), "{ok}");
        self.ack(n);
    }

    fn bye(&mut self) {
        self.gw_cseq += 1;
        let n = self.gw_cseq;
        let bye = self.gw_request("BYE", PEER_CONTACT, &self.to, n, None);
        self.gw.send_to(&bye, GW_SIDE);
        let got = expect_where(&self.peer, "BYE at the peer", |m| {
            first_line(m).starts_with("BYE") && cseq_is(m, &format!("{n} BYE"))
        });
        self.peer.send_to(
            &response(&got, "200 OK", "peertag", PEER_CONTACT, None),
            CLOUD_SIDE,
        );
        expect_where(&self.gw, "200 to the BYE", |m| {
            first_line(m).starts_with("SIP/2.0 200") && cseq_is(m, &format!("{n} BYE"))
        });
    }
}

/// Sends `n` packets each way (gateway plain RTP → peer SRTP and back) and checks every one:
/// count, payload bytes, order.
fn media_both_ways(call: &Call, rx: &mut Context, tx: &mut Context, first_seq: u16, n: u16) {
    for burst in 0..n / 25 {
        let seqs = first_seq + burst * 25..first_seq + (burst + 1) * 25;
        for s in seqs.clone() {
            call.gw_rtp
                .send_to(&rtp(0x1111, s, &payload(s)), call.relay_a)
                .unwrap();
        }
        for s in seqs.clone() {
            let pkt = recv(&call.peer_rtp);
            let plain = rx.decrypt_rtp(&pkt).expect("the peer decrypts SRTP");
            assert_eq!(
                &plain[..],
                &rtp(0x1111, s, &payload(s))[..],
                "gw→peer packet {s}"
            );
        }
        for s in seqs.clone() {
            let enc = tx.encrypt_rtp(&rtp(0x2222, s, &payload(s))).unwrap();
            call.peer_rtp.send_to(&enc, call.relay_b).unwrap();
        }
        for s in seqs {
            assert_eq!(
                recv(&call.gw_rtp),
                rtp(0x2222, s, &payload(s)),
                "peer→gw packet {s}"
            );
        }
    }
}

/// The last "media session released" log line's value of `key`.
fn released_value(lab: &Lab, key: &str) -> Option<u64> {
    let log = lab.log_text();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("media session released"))?;
    let plain = strip_ansi(line);
    plain
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.trim_matches('"').parse().ok())
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut esc = false;
    for c in s.chars() {
        match (esc, c) {
            (false, '\u{1b}') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + T;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

#[test]
fn anchored_call_srtp_on_the_cloud_leg_hold_resume_and_rtp_bleed() {
    let lab = Lab::start();
    let mut call = Call::new("media-1@test");
    call.establish();
    let relay_key = call.relay_key.unwrap();
    let mut rx = new_context(SUITE, &relay_key, true).unwrap();
    let mut tx = new_context(SUITE, &call.peer_key, false).unwrap();
    media_both_ways(&call, &mut rx, &mut tx, 1000, 100);

    // RTP bleed: a packet from a foreign source toward the gateway leg is dropped.
    let stranger = rtp_sock([127, 0, 0, 9]);
    stranger
        .send_to(&rtp(0x6666, 1, b"bleed"), call.relay_a)
        .unwrap();

    // Hold (sendonly from the gateway, recvonly back), then resume: media flows again.
    call.reinvite(2, "sendonly", "recvonly");
    call.reinvite(3, "sendrecv", "sendrecv");
    assert_eq!(
        call.relay_key,
        Some(relay_key),
        "same key: no re-key without a change"
    );
    media_both_ways(&call, &mut rx, &mut tx, 2000, 50);
    // The stranger's packet never reached the peer.
    call.peer_rtp
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        call.peer_rtp.recv_from(&mut buf).is_err(),
        "nothing else relayed"
    );

    call.bye();
    assert!(
        eventually(|| released_value(&lab, "a_foreign") == Some(1)),
        "the foreign packet is counted on leg A:\n{}",
        lab.log_text()
    );
    assert_eq!(released_value(&lab, "a_fwd"), Some(150));
    assert_eq!(released_value(&lab, "b_fwd"), Some(150));
    assert_eq!(
        released_value(&lab, "pool_available"),
        released_value(&lab, "pool_capacity")
    );
}

#[test]
fn media_timeout_sends_exactly_one_bye_to_each_leg() {
    let lab = Lab::start_with(|t| t.replace("media_timeout_s = 60", "media_timeout_s = 2"));
    let mut call = Call::new("media-2@test");
    call.establish();
    let started = Instant::now();
    let bye_gw = expect_where(&call.gw, "BYE to the gateway", |m| {
        first_line(m).starts_with("BYE")
    });
    let bye_peer = expect_where(&call.peer, "BYE to the peer", |m| {
        first_line(m).starts_with("BYE")
    });
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "not before the timeout"
    );
    for b in [&bye_gw, &bye_peer] {
        let reason = header(b, "Reason").expect("Reason header");
        assert!(reason.contains("media timeout"), "{b}");
        assert_eq!(header(b, "Call-ID"), Some("media-2@test"));
    }
    // Each BYE belongs to the dialog as its receiver knows it.
    assert!(first_line(&bye_gw).contains(GW_CONTACT), "{bye_gw}");
    assert!(
        header(&bye_gw, "To").unwrap().contains("tag=gwtag"),
        "{bye_gw}"
    );
    assert!(
        header(&bye_gw, "From").unwrap().contains("tag=peertag"),
        "{bye_gw}"
    );
    assert!(first_line(&bye_peer).contains(PEER_CONTACT), "{bye_peer}");
    assert!(
        header(&bye_peer, "To").unwrap().contains("tag=peertag"),
        "{bye_peer}"
    );
    assert_eq!(header(&bye_peer, "CSeq"), Some("2 BYE"));
    call.gw
        .send_to(&response(&bye_gw, "200 OK", "x", GW_CONTACT, None), GW_SIDE);
    call.peer.send_to(
        &response(&bye_peer, "200 OK", "x", PEER_CONTACT, None),
        CLOUD_SIDE,
    );
    // Exactly once: nothing more within two more timeouts.
    for a in [&call.gw, &call.peer] {
        let end = Instant::now() + Duration::from_secs(4);
        while Instant::now() < end {
            if let Some((m, _)) = a.recv_timeout(Duration::from_millis(200)) {
                let m = String::from_utf8_lossy(&m);
                assert!(!first_line(&m).starts_with("BYE"), "a second BYE: {m}");
            }
        }
    }
    let log = strip_ansi(&lab.log_text());
    assert_eq!(log.matches("media timeout: no RTP").count(), 1, "{log}");
    assert!(log.contains("media_timeouts=1"), "{log}");
}

#[test]
fn no_port_leak_after_1000_calls() {
    let lab = Lab::start();
    let mut capacity = None;
    for i in 0..1000 {
        let mut call = Call::new(&format!("leak-{i}@test"));
        call.establish();
        call.bye();
        if i == 0 {
            capacity = released_value(&lab, "pool_capacity");
        }
    }
    assert!(capacity.is_some());
    assert!(
        eventually(|| released_value(&lab, "pool_available") == capacity),
        "pool back to full after 1000 calls"
    );
    let log = strip_ansi(&lab.log_text());
    assert_eq!(log.matches("media session allocated").count(), 1000);
    assert_eq!(log.matches("media session released").count(), 1000);
}
