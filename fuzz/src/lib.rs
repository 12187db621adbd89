//! The fuzz targets as plain functions: each takes arbitrary bytes and must never panic. They
//! are driven two ways: by libFuzzer (`fuzz_targets/*.rs`, `cargo fuzz run NAME`), and by the
//! repository's own bounded harness (`tests/fuzz_harness.rs`, run by `scripts/fuzz`), which
//! mutates the seeds of [`seeds`] for a given time and fails on the first panic. The harness
//! includes this file by path, so it may use only what both packages depend on: `sipedge`,
//! `bytes` and `arc-swap`.
//!
//! | target | what it feeds |
//! |---|---|
//! | `parse_message` | one datagram to the SIP parser, every view and edit of a message |
//! | `stream_framer` | a byte stream cut in chunks to the TCP/TLS framer |
//! | `sdp_rewrite` | an SDP body: parse, codec filter, offer/answer, address policy, rewrite |
//! | `crypto_attr` | an `a=crypto` value: parse, the key checks, print and parse again |
//! | `srtp_unprotect` | SRTP/SRTCP packets (forged and mutated) to the relay's unprotect |
//! | `core_sequence` | a sequence of SIP messages from peers and strangers into the core |

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sipedge::config::{Config, Side, Transport};
use sipedge::flow::{Flow, Inbound};
use sipedge::media::fake::FakeMedia;
use sipedge::media::{SrtpSuite, SrtpTransform};
use sipedge::proxy::anchor::{AddressPolicy, Anchor};
use sipedge::proxy::Core;
use sipedge::routing::{Directory, RoutingTable};
use sipedge::sdp::{
    base64_decode, base64_encode, filter_offer, rewrite, Carrier, CodecPolicy, CryptoLine,
    CryptoSuite, Endpoint, MediaRewrite, Negotiation, OriginRewrite, Profile, Rewrite, Sdp,
    Side as SdpSide,
};
use sipedge::sip::{build_response, Frame, HeaderName, Message, StreamFramer};

/// A fuzz target: arbitrary bytes in, nothing out, no panic.
pub type Target = fn(&[u8]);

/// Every target by name, for the harness and `scripts/fuzz`.
pub const TARGETS: &[(&str, Target)] = &[
    ("parse_message", parse_message),
    ("stream_framer", stream_framer),
    ("sdp_rewrite", sdp_rewrite),
    ("crypto_attr", crypto_attr),
    ("srtp_unprotect", srtp_unprotect),
    ("core_sequence", core_sequence),
];

// ------------------------------------------------------------------ SIP parsing

/// Datagram parse of arbitrary bytes; on success every view and edit is exercised and the
/// edited output re-parsed.
pub fn parse_message(data: &[u8]) {
    let m = match Message::parse(Bytes::copy_from_slice(data)) {
        Ok(m) => m,
        Err(e) => {
            let _ = (e.response(), e.kind(), e.is_request());
            return;
        }
    };
    assert!(data
        .windows(m.as_bytes().len())
        .any(|w| w == m.as_bytes().as_ref()));
    let _ = (m.method(), m.status(), m.reason(), m.call_id(), m.cseq());
    let _ = (m.max_forwards(), m.content_length(), m.body().len());
    if let Some(u) = m.request_uri() {
        let _ = (
            u.scheme(),
            u.user(),
            u.host(),
            u.port(),
            u.param("transport"),
        );
    }
    for v in m.vias() {
        let _ = (
            v.transport(),
            v.host(),
            v.port(),
            v.branch(),
            v.rport(),
            v.received(),
        );
    }
    for na in [m.from_hdr(), m.to_hdr(), m.contact()]
        .into_iter()
        .flatten()
    {
        let _ = (na.display_name(), na.uri().host(), na.tag());
    }
    let _ = (
        m.routes().count(),
        m.record_routes().count(),
        m.headers().count(),
    );
    let _ = m.header_values(HeaderName::Supported).count();
    let out = m
        .edit()
        .push_via(b"SIP/2.0/TLS edge.example.net;branch=z9hG4bKfuzz")
        .set_max_forwards(69)
        .add_record_route(b"<sip:edge.example.net;lr>")
        .pop_route()
        .set_via_received(b"192.0.2.1", Some(5060))
        .set_body(None, b"")
        .finish();
    let _ = Message::parse(out);
    if m.is_request() {
        let _ = Message::parse(build_response(&m, 400, "Bad Request", Some(b"x"), &[]));
    }
}

/// Stream framing of arbitrary bytes cut into chunks (the first byte chooses the size); every
/// framed message is a contiguous piece of the input.
pub fn stream_framer(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(first % 64) + 1;
    let mut f = StreamFramer::new(8192);
    for piece in rest.chunks(chunk) {
        f.push(piece);
        loop {
            match f.next_frame() {
                Ok(Some(Frame::Message(m))) => {
                    let b = m.as_bytes();
                    assert!(rest.windows(b.len()).any(|w| w == b.as_ref()));
                }
                Ok(Some(Frame::Keepalive)) => {}
                Ok(None) => break,
                Err(e) => {
                    let _ = e.response();
                    return;
                }
            }
        }
    }
}

// ------------------------------------------------------------------ SDP

const KEY: [u8; 30] = [0x5a; 30];

/// An SDP body through what the anchor does with one: parse, codec filter, RFC 3264 offer and
/// answer, the address policy, endpoints, and a rewrite of every m-line, whose output must
/// parse again.
pub fn sdp_rewrite(data: &[u8]) {
    let Ok(sdp) = Sdp::parse(data) else {
        return;
    };
    let policy = CodecPolicy::new(["PCMU", "PCMA", "G722", "opus", "telephone-event"]);
    let keep = filter_offer(&sdp, &policy).ok();
    let addresses = AddressPolicy::new(&media_settings());
    let _ = addresses.check_sdp(&sdp);
    let n = sdp.media().len();
    for i in 0..n {
        if let Some(ep) = Endpoint::from_sdp(&sdp, i) {
            let _ = (ep.proto.is_secure(), ep.direction.sends(), ep.crypto.len());
        }
        let _ = (
            sdp.media_direction(i),
            sdp.media_on_hold(i),
            sdp.media_rtcp(i),
        );
    }
    let mut neg = Negotiation::new();
    let _ = neg.on_message(SdpSide::Caller, Carrier::Invite, Some(sdp.clone()));
    let _ = neg.on_message(SdpSide::Callee, Carrier::Success, Some(sdp.clone()));
    let _ = neg.streams();
    let crypto = CryptoLine::new(1, CryptoSuite::AesCm128HmacSha1_80, KEY).ok();
    let len = data.len() as u16;
    let media = (0..n)
        .map(|i| MediaRewrite {
            port: 40000u16.wrapping_add(2 * i as u16),
            rtcp_port: len.is_multiple_of(3).then_some(40001),
            profile: if len.is_multiple_of(2) {
                Profile::Srtp
            } else {
                Profile::Rtp
            },
            crypto: crypto.clone(),
            keep_formats: keep.as_ref().and_then(|k| k.get(i).cloned().flatten()),
        })
        .collect();
    let rw = Rewrite {
        connection: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        media,
        strip_ice: !len.is_multiple_of(5),
        origin: Some(OriginRewrite {
            session_version: Some(u64::from(len)),
            address: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
        }),
    };
    if let Ok(out) = rewrite(&sdp, &rw) {
        let again = Sdp::parse(&out);
        assert!(again.is_ok(), "our rewrite does not parse: {again:?}");
    }
}

fn media_settings() -> sipedge::config::MediaSettings {
    sipedge::config::MediaSettings {
        ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        port_min: 40000,
        port_max: 40100,
        media_timeout: Duration::from_secs(60),
        relay_workers: Some(1),
        gateway_codecs: vec!["PCMU".into()],
        cloud_codecs: vec!["PCMU".into()],
        allow_loopback: false,
        allow_link_local: false,
        latch_quiet: Duration::from_secs(2),
    }
}

/// An `a=crypto` value: parse, the checks the anchor makes, then print and parse again (the
/// printed form must parse to the same line).
pub fn crypto_attr(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let _ = base64_decode(&s);
    let Ok(line) = CryptoLine::parse(&s) else {
        return;
    };
    let _ = (
        line.is_usable(),
        line.requires_mki(),
        line.master_key_salt().len(),
    );
    let _ = line.suite.key_salt_len();
    let _ = format!("{line:?}");
    let printed = line.to_string();
    let again = CryptoLine::parse(&printed);
    assert_eq!(
        again.as_ref().ok(),
        Some(&line),
        "{printed:?} does not read back"
    );
    let _ = base64_encode(line.master_key_salt());
}

// ------------------------------------------------------------------ SRTP

/// SRTP and SRTCP packets into the relay's unprotect. The first byte picks the suite; then
/// records of `[kind, len, bytes…]`: kind bit 0 picks RTP or RTCP, bit 1 forges the packet
/// with the sender's key (so authentication passes) from the given bytes as header and
/// payload, and bits 2..8 flip one byte of it afterwards (or none).
pub fn srtp_unprotect(data: &[u8]) {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let suite = if first & 1 == 0 {
        SrtpSuite::Aes128CmSha1_80
    } else {
        SrtpSuite::Aes128CmSha1_32
    };
    let (Ok(mut tx), Ok(mut rx)) = (
        SrtpTransform::new(suite, &KEY),
        SrtpTransform::new(suite, &KEY),
    ) else {
        return;
    };
    let mut buf = [0u8; 1600];
    while let [kind, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (pkt, next) = tail.split_at(n);
        rest = next;
        let rtcp = kind & 1 == 1;
        let Some(dst) = buf.get_mut(..pkt.len()) else {
            continue;
        };
        dst.copy_from_slice(pkt);
        let mut len = pkt.len();
        if kind & 2 == 2 {
            let forged = if rtcp {
                tx.protect_rtcp(&mut buf, len)
            } else {
                tx.protect_rtp(&mut buf, len)
            };
            match forged {
                Ok(l) => len = l,
                Err(_) => continue,
            }
        }
        let flip = usize::from(kind >> 2);
        if flip > 0 && flip <= len {
            if let Some(b) = buf.get_mut(flip - 1) {
                *b ^= 0x5a;
            }
        }
        let plain = if rtcp {
            rx.unprotect_rtcp(&mut buf, len)
        } else {
            rx.unprotect_rtp(&mut buf, len)
        };
        if let Ok(p) = plain {
            assert!(p <= len, "unprotect grew the packet");
            if kind & 2 == 2 && flip == 0 {
                assert_eq!(buf.get(..p), pkt.get(..p), "round trip");
            }
        }
    }
}

// ------------------------------------------------------------------ the core

const REMOTES: [(Side, &str); 6] = [
    (Side::Gateway, "127.0.0.2:5060"),
    (Side::Gateway, "127.0.0.5:5060"),
    (Side::Cloud, "127.0.0.3:5060"),
    (Side::Gateway, "127.0.0.9:5060"),
    (Side::Cloud, "127.0.0.9:5060"),
    (Side::Cloud, "127.0.0.4:5068"),
];

fn lab_core(now: Instant) -> Option<Core> {
    let text = include_str!("../../config/sipedge.toml");
    let cfg = Config::from_toml(Path::new("config/sipedge.toml"), text).ok()?;
    let table = RoutingTable::build(&cfg, &|n| cfg.static_host(n)).ok()?;
    let listener = |side| -> SocketAddr {
        match side {
            Side::Gateway => SocketAddr::from(([127, 0, 0, 1], 5068)),
            Side::Cloud => SocketAddr::from(([127, 0, 0, 1], 5062)),
        }
    };
    let local = HashMap::from([
        ((Side::Gateway, Transport::Udp), listener(Side::Gateway)),
        ((Side::Cloud, Transport::Udp), listener(Side::Cloud)),
    ]);
    let dir = Arc::new(arc_swap::ArcSwap::from_pointee(Directory::from_config(
        &cfg,
    )));
    let settings = cfg.media.clone()?;
    let anchor = Anchor::from_config(&cfg, settings, Box::new(FakeMedia::new(16)));
    let mut core = Core::new(now, Arc::new(cfg), table, local, dir);
    core.set_anchor(anchor);
    Some(core)
}

/// A sequence of messages into the core, with the lab configuration and media anchored in
/// memory. Records are `[ctrl, len_hi, len_lo, bytes…]`: `ctrl & 7` picks the sender (gw1,
/// gw2, the cloud peer, a stranger on either side, the remote mediation server) and
/// `ctrl >> 3` advances the clock by that many 100 ms (timers fire). In a message, `$VIA` is
/// replaced by the Vias of the last request the core sent to that side (so responses can
/// match our transactions), `$TO` by its To header, and a `$ROUTE` line by the route set of the
/// last response with Record-Routes the core sent to that side (in-dialog requests), and an
/// `$RR` line by the Record-Routes of the last request it sent there (a UAS's responses). Whatever comes in, the core must not
/// panic, and its tables must stay bounded.
pub fn core_sequence(data: &[u8]) {
    let t0 = Instant::now();
    let Some(mut core) = lab_core(t0) else {
        return;
    };
    let mut now = t0;
    let mut last: HashMap<Side, (String, String)> = HashMap::new();
    let mut routes: HashMap<Side, String> = HashMap::new();
    let mut record_routes: HashMap<Side, String> = HashMap::new();
    let mut rest = data;
    while let [ctrl, hi, lo, tail @ ..] = rest {
        let n = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (raw, next) = tail.split_at(n);
        rest = next;
        let (side, remote) = REMOTES[usize::from(ctrl & 7) % REMOTES.len()];
        now += Duration::from_millis(100 * u64::from(ctrl >> 3));
        let mut text = String::from_utf8_lossy(raw).into_owned();
        if let Some((via, to)) = last.get(&side) {
            text = text.replace("$VIA", via).replace("$TO", to);
        }
        text = text
            .replace("$ROUTE\r\n", routes.get(&side).map_or("", String::as_str))
            .replace(
                "$RR\r\n",
                record_routes.get(&side).map_or("", String::as_str),
            );
        let flow = Flow {
            side,
            transport: Transport::Udp,
            local: match side {
                Side::Gateway => SocketAddr::from(([127, 0, 0, 1], 5068)),
                Side::Cloud => SocketAddr::from(([127, 0, 0, 1], 5062)),
            },
            remote: remote
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 9], 5060))),
            conn: None,
            identity: None,
        };
        match Message::parse(Bytes::from(text.into_bytes())) {
            Ok(m) => core.handle_inbound(now, Inbound::Message(flow, m)),
            Err(e) => core.handle_inbound(
                now,
                Inbound::Malformed {
                    flow,
                    bytes: Bytes::copy_from_slice(raw),
                    response: e.response(),
                    reason: e.to_string(),
                },
            ),
        }
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now);
        }
        while let Some(t) = core.poll_transmit() {
            if let Ok(m) = Message::parse(t.data.clone()) {
                let rr: Vec<String> = m
                    .record_routes()
                    .map(|r| String::from_utf8_lossy(r.raw()).into_owned())
                    .collect();
                if !m.is_request() && !rr.is_empty() {
                    let set = rr.iter().rev().map(|r| format!("Route: {r}\r\n"));
                    routes.insert(t.side, set.collect());
                }
                if m.is_request() {
                    let set = rr.iter().map(|r| format!("Record-Route: {r}\r\n"));
                    record_routes.insert(t.side, set.collect());
                }
                if m.is_request() {
                    // Every Via, as a UAS echoes them.
                    let vias: Vec<String> = m
                        .header_values(HeaderName::Via)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .collect();
                    let via = (!vias.is_empty()).then(|| vias.join("\r\nVia: "));
                    let to = m
                        .header(HeaderName::To)
                        .map(|v| String::from_utf8_lossy(v).into_owned());
                    if let (Some(via), Some(to)) = (via, to) {
                        last.insert(t.side, (via, to));
                    }
                }
            }
        }
        while core.poll_resolve().is_some() {}
        while core.poll_call_record().is_some() {}
    }
    // Everything times out in the end: no transaction outlives its timers.
    let end = now + Duration::from_secs(300);
    let mut guard = 0;
    while let Some(t) = core.poll_timeout() {
        if t > end || guard > 10_000 {
            break;
        }
        core.handle_timeout(t.max(now));
        while core.poll_transmit().is_some() {}
        guard += 1;
    }
    let _ = core.published();
}

// ------------------------------------------------------------------ seeds

/// Seed inputs per target for the harness (libFuzzer starts from its own corpus directory).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "parse_message" | "stream_framer" => vec![
            invite_text("seed-1", &sdp_text("127.0.0.2", 20000, "")).into_bytes(),
            b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nContent-Length: 0\r\n\r\n\r\n\r\n".to_vec(),
        ],
        "sdp_rewrite" => vec![
            sdp_text("192.0.2.10", 20000, "").into_bytes(),
            sdp_text(
                "192.0.2.10",
                20000,
                "a=rtcp:20001 IN IP4 192.0.2.11\r\na=sendonly\r\na=ice-ufrag:Ab12\r\n\
                 a=candidate:1 1 UDP 2130706431 192.0.2.10 20000 typ host\r\n\
                 m=video 0 RTP/AVP 96\r\nm=image 9000 udptl t38\r\n",
            )
            .into_bytes(),
            sdp_text("0.0.0.0", 20000, &format!("{}\r\n", crypto_text())).replace("RTP/AVP", "RTP/SAVP").into_bytes(),
            sdp_text("224.2.1.1/127", 20000, "").into_bytes(),
        ],
        "crypto_attr" => vec![
            crypto_text().trim_start_matches("a=crypto:").as_bytes().to_vec(),
            format!("2 AES_CM_128_HMAC_SHA1_32 inline:{}|2^20|1:4;inline:{}|2^20|2:4 KDR=1", base64_encode(&KEY), base64_encode(&KEY)).into_bytes(),
            b"9 AES_256_CM_HMAC_SHA1_80 inline:AAAA|1048576 UNENCRYPTED_SRTP".to_vec(),
        ],
        "srtp_unprotect" => {
            let rtp = |seq: u16| -> Vec<u8> {
                let mut p = vec![0x80, 0, (seq >> 8) as u8, seq as u8, 0, 0, 0, 1, 0, 0, 0x12, 0x34];
                p.extend_from_slice(&[0xd5; 40]);
                p
            };
            let mut s = vec![0u8];
            for (kind, pkt) in [
                (2u8, rtp(1)),
                (2, rtp(2)),
                (2, rtp(2)),
                (2 | (14 << 2), rtp(3)),
                (0, rtp(4)),
                (3, vec![0x80, 200, 0, 1, 0, 0, 0x12, 0x34]),
                (3, vec![0x80, 201, 0, 1, 0, 0, 0x12, 0x34, 1, 2, 3, 4]),
                (2, rtp(0xffff)),
                (2, rtp(0)),
            ] {
                s.push(kind);
                s.push(pkt.len() as u8);
                s.extend_from_slice(&pkt);
            }
            vec![s]
        }
        "core_sequence" => vec![core_seed()],
        _ => Vec::new(),
    }
}

fn crypto_text() -> String {
    format!(
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}",
        base64_encode(&KEY)
    )
}

fn sdp_text(host: &str, port: u16, extra: &str) -> String {
    format!(
        "v=0\r\no=ua 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 8 18 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:18 G729/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n{extra}"
    )
}

fn with_sdp(head: String, body: &str) -> String {
    if body.is_empty() {
        return format!("{head}Content-Length: 0\r\n\r\n");
    }
    format!(
        "{head}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn invite_text(call: &str, body: &str) -> String {
    with_sdp(
        format!(
            "INVITE sip:+14255550100@mediation.lab.example SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-{call};rport\r\nMax-Forwards: 70\r\n\
             From: <sip:gw@lab.example>;tag=gwtag\r\nTo: <sip:+14255550100@lab.example>\r\n\
             Call-ID: {call}\r\nCSeq: 1 INVITE\r\nContact: <sip:gw@127.0.0.2:5060>\r\n"
        ),
        body,
    )
}

/// A whole call from gw1 to the cloud peer: INVITE, 180 and 200 with SDP (matched to our
/// transaction by `$VIA`), ACK, a re-INVITE, BYE; then a stranger's INVITE and a CANCEL.
fn core_seed() -> Vec<u8> {
    let call = "fuzz-call";
    let resp = |status: &str, cseq: &str, body: &str| {
        with_sdp(
            format!(
                "SIP/2.0 {status}\r\nVia: $VIA\r\nFrom: <sip:gw@lab.example>;tag=gwtag\r\n\
                 To: <sip:+14255550100@lab.example>;tag=peertag\r\nCall-ID: {call}\r\n\
                 CSeq: {cseq}\r\nContact: <sip:peer@127.0.0.3:5060>\r\n$RR\r\n"
            ),
            body,
        )
    };
    let peer_sdp = sdp_text("127.0.0.3", 30000, &format!("{}\r\n", crypto_text()));
    let in_dialog = |method: &str, cseq: u32, body: &str| {
        with_sdp(
            format!(
                "{method} sip:peer@127.0.0.3:5060 SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-{call}-{cseq}{method};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:gw@lab.example>;tag=gwtag\r\n\
                 To: <sip:+14255550100@lab.example>;tag=peertag\r\nCall-ID: {call}\r\n\
                 CSeq: {cseq} {method}\r\nContact: <sip:gw@127.0.0.2:5060>\r\n$ROUTE\r\n"
            ),
            body,
        )
    };
    let stranger = invite_text("stranger", &sdp_text("127.0.0.1", 22, ""));
    let cancel = "CANCEL sip:+14255550100@mediation.lab.example SIP/2.0\r\n\
                  Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-fuzz-call;rport\r\n\
                  Max-Forwards: 70\r\nFrom: <sip:gw@lab.example>;tag=gwtag\r\n\
                  To: <sip:+14255550100@lab.example>\r\nCall-ID: fuzz-call\r\n\
                  CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
        .to_owned();
    let steps: Vec<(u8, String)> = vec![
        (0, invite_text(call, &sdp_text("127.0.0.2", 20000, ""))),
        (2 | (1 << 3), resp("180 Ringing", "1 INVITE", &peer_sdp)),
        (2, resp("200 OK", "1 INVITE", &peer_sdp)),
        (0, in_dialog("ACK", 1, "")),
        (
            2 << 3,
            in_dialog("INVITE", 2, &sdp_text("127.0.0.2", 20002, "a=sendonly\r\n")),
        ),
        (2, resp("200 OK", "2 INVITE", &peer_sdp)),
        (0, in_dialog("BYE", 3, "")),
        (2, resp("200 OK", "3 BYE", "")),
        (3, stranger),
        (0, cancel),
    ];
    let mut out = Vec::new();
    for (ctrl, msg) in steps {
        out.push(ctrl);
        out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        out.extend_from_slice(msg.as_bytes());
    }
    out
}
