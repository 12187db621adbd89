//! SDP over the RFC 4317 corpus and gateway/cloud-style bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;

use sipedge::sdp::{
    filter_offer, rewrite, Carrier, CodecPolicy, ConnAddr, CryptoLine, CryptoSuite, Direction,
    MediaRewrite, Negotiation, OriginRewrite, Profile, Proto, Rewrite, Sdp, SdpError, SdpRole,
    Side,
};

use common::corpus_dir;

/// The rfc4317 rows of manifest.tsv: (path, section, name, size).
fn manifest() -> Vec<(String, String, String, usize)> {
    let text = std::fs::read_to_string(corpus_dir().join("manifest.tsv")).expect("manifest.tsv");
    text.lines()
        .filter(|l| l.starts_with("rfc4317/"))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].to_owned(),
                f[2].to_owned(),
                f[3].to_owned(),
                f[9].parse().expect("size column"),
            )
        })
        .collect()
}

fn corpus_files() -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir().join("rfc4317");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("rfc4317 corpus")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "sdp"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&p).unwrap();
            (name, bytes)
        })
        .collect();
    files.sort();
    files
}

fn anchor() -> IpAddr {
    "203.0.113.1".parse().unwrap()
}

fn plain(port: u16) -> MediaRewrite {
    MediaRewrite {
        port,
        rtcp_port: port.checked_add(1),
        profile: Profile::Rtp,
        crypto: None,
        keep_formats: None,
    }
}

fn lines(b: &[u8]) -> Vec<&[u8]> {
    b.split(|&c| c == b'\n').collect()
}

#[test]
fn manifest_lists_every_file_with_its_size() {
    let rows = manifest();
    let files = corpus_files();
    assert_eq!(files.len(), 54, "RFC 4317 corpus has 54 bodies");
    assert_eq!(rows.len(), files.len());
    let by_name: BTreeMap<_, _> = files.iter().map(|(n, b)| (n.as_str(), b)).collect();
    for (path, _, _, size) in &rows {
        let name = path.strip_prefix("rfc4317/").unwrap();
        let body = by_name
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(body.len(), *size, "{name}");
    }
}

#[test]
fn every_body_parses_and_round_trips() {
    for (name, body) in corpus_files() {
        let sdp = Sdp::parse(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(sdp.to_vec(), body, "{name}");
        assert_eq!(sdp.as_bytes(), body.as_slice(), "{name}");
        // The RFC 4317 bodies print s= empty; o= and c= are always there.
        assert!(sdp.origin().is_some(), "{name}");
        assert!(sdp.connection().is_some(), "{name}");
        for (i, m) in sdp.media().iter().enumerate() {
            assert_eq!(m.proto(), &Proto::RtpAvp, "{name}");
            assert!(sdp.media_connection(i).is_some(), "{name}");
            for pt in m.payload_types() {
                assert!(m.encoding(pt).is_some(), "{name}: pt {pt}");
            }
        }
    }
}

#[test]
fn known_corpus_facts() {
    let files: BTreeMap<String, Vec<u8>> = corpus_files().into_iter().collect();
    let get = |n: &str| Sdp::parse(&files[n]).unwrap();
    // §5.2: the offer holds with c=0.0.0.0.
    let s = get("5.2-offer.sdp");
    assert!(s.connection().unwrap().is_hold());
    assert!(s.media_on_hold(0));
    // §3.1: the answer is sendonly.
    assert_eq!(
        get("3.1-answer.sdp").media_direction(0),
        Direction::SendOnly
    );
    // §2.8: a media-level c= overrides the session one.
    let s = get("2.8-answer.sdp");
    assert_eq!(
        s.media_connection(1).unwrap().address,
        ConnAddr::Name("otherhost.biloxi.example.com".into())
    );
    assert_eq!(
        s.media_connection(0).unwrap().address,
        ConnAddr::Name("host.biloxi.example.com".into())
    );
    // §2.2: the answer rejects video.
    assert!(get("2.2-answer.sdp").media()[1].is_rejected());
    // §5.1: no media at all.
    assert!(get("5.1-offer.sdp").media().is_empty());
}

#[test]
fn rewrite_changes_only_connection_media_and_rtcp_lines() {
    for (name, body) in corpus_files() {
        let sdp = Sdp::parse(&body).unwrap();
        let media = (0..sdp.media().len())
            .map(|i| plain(40000 + 2 * i as u16))
            .collect();
        let rw = Rewrite {
            connection: anchor(),
            media,
            strip_ice: false,
            origin: None,
        };
        let out = rewrite(&sdp, &rw).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (a, b) = (lines(&body), lines(&out));
        assert_eq!(a.len(), b.len(), "{name}: line count");
        for (x, y) in a.iter().zip(&b) {
            if x != y {
                assert!(
                    x.starts_with(b"c=") || x.starts_with(b"m=") || x.starts_with(b"a=rtcp:"),
                    "{name}: changed {:?}",
                    String::from_utf8_lossy(x)
                );
                assert!(y.ends_with(b"\r"), "{name}: CRLF kept");
            }
        }
        let re = Sdp::parse(&out).unwrap();
        assert_eq!(re.media().len(), sdp.media().len());
        for (i, (old, new)) in sdp.media().iter().zip(re.media()).enumerate() {
            if old.is_rejected() {
                assert!(new.is_rejected(), "{name}: rejected stays rejected");
            } else {
                assert_eq!(new.port(), 40000 + 2 * i as u16, "{name}");
            }
            assert_eq!(new.formats(), old.formats(), "{name}");
            let c = re.media_connection(i).unwrap();
            let was_hold = sdp.media_connection(i).unwrap().is_hold();
            assert_eq!(c.is_hold(), was_hold, "{name}");
            if !was_hold {
                assert_eq!(c.address, ConnAddr::Ip(anchor()), "{name}");
            }
        }
    }
}

/// `(section, kind)` → body, kind in offer/answer/second-offer/second-answer.
fn pairs() -> BTreeMap<String, BTreeMap<String, Sdp>> {
    let mut out: BTreeMap<String, BTreeMap<String, Sdp>> = BTreeMap::new();
    for (name, body) in corpus_files() {
        let stem = name.strip_suffix(".sdp").unwrap();
        let (section, kind) = stem.split_once('-').unwrap();
        out.entry(section.to_owned())
            .or_default()
            .insert(kind.to_owned(), Sdp::parse(&body).unwrap());
    }
    out
}

fn author(sdp: &Sdp) -> Side {
    match sdp.origin().unwrap().username.as_str() {
        "alice" => Side::Caller,
        "bob" => Side::Callee,
        other => panic!("unknown author {other}"),
    }
}

#[test]
fn offer_answer_pairs_negotiate() {
    let pairs = pairs();
    assert_eq!(pairs.len(), 16);
    let mut second = 0;
    for (section, bodies) in &pairs {
        let mut n = Negotiation::new();
        let offer = &bodies["offer"];
        let answer = &bodies["answer"];
        assert_eq!(author(offer), Side::Caller, "{section}");
        assert_eq!(
            n.on_message(Side::Caller, Carrier::Invite, Some(offer.clone())),
            Ok(Some(SdpRole::Offer)),
            "{section}"
        );
        assert_eq!(
            n.on_message(Side::Callee, Carrier::Success, Some(answer.clone())),
            Ok(Some(SdpRole::Answer)),
            "{section}"
        );
        assert_eq!(n.on_message(Side::Caller, Carrier::Ack, None), Ok(None));
        assert_eq!(offer.media().len(), answer.media().len(), "{section}");
        assert_eq!(n.streams().len(), offer.media().len(), "{section}");
        if let (Some(o2), Some(a2)) = (bodies.get("second-offer"), bodies.get("second-answer")) {
            second += 1;
            let from = author(o2);
            assert_eq!(
                n.on_message(from, Carrier::Invite, Some(o2.clone())),
                Ok(Some(SdpRole::Offer)),
                "{section} second offer"
            );
            assert_eq!(
                n.on_message(from.other(), Carrier::Success, Some(a2.clone())),
                Ok(Some(SdpRole::Answer)),
                "{section} second answer"
            );
            assert_eq!(n.current().unwrap().offerer, from);
            assert_eq!(o2.media().len(), a2.media().len(), "{section}");
            assert_eq!(n.streams().len(), o2.media().len(), "{section}");
        }
    }
    assert_eq!(second, 11);
}

#[test]
fn corpus_hold_and_rejection_through_negotiation() {
    let p = pairs();
    // §5.2: hold by c=0.0.0.0 in the initial offer.
    let mut n = Negotiation::new();
    n.on_message(
        Side::Caller,
        Carrier::Invite,
        Some(p["5.2"]["offer"].clone()),
    )
    .unwrap();
    n.on_message(
        Side::Callee,
        Carrier::Success,
        Some(p["5.2"]["answer"].clone()),
    )
    .unwrap();
    let s = &n.streams()[0];
    assert!(s.on_hold && s.caller.on_hold && !s.callee.on_hold);
    // §2.2: video rejected in the answer.
    let mut n = Negotiation::new();
    n.on_message(
        Side::Caller,
        Carrier::Invite,
        Some(p["2.2"]["offer"].clone()),
    )
    .unwrap();
    n.on_message(
        Side::Callee,
        Carrier::Success,
        Some(p["2.2"]["answer"].clone()),
    )
    .unwrap();
    assert!(!n.streams()[0].rejected);
    assert!(n.streams()[1].rejected);
    // An answer from another example with a different m-line count → 488.
    let mut n = Negotiation::new();
    n.on_message(
        Side::Caller,
        Carrier::Invite,
        Some(p["2.1"]["offer"].clone()),
    )
    .unwrap();
    let e = n
        .on_message(
            Side::Callee,
            Carrier::Success,
            Some(p["4.2"]["answer"].clone()),
        )
        .unwrap_err();
    assert_eq!(
        e,
        SdpError::AnswerMediaCount {
            offered: 2,
            answered: 1
        }
    );
    assert_eq!(e.status_code(), 488);
}

// ---------------------------------------------------------------------------
// Gateway / cloud-style bodies.

const GW_G711: &str = "v=0\r\n\
o=CiscoSystemsSIP-GW-UserAgent 4011 2093 IN IP4 10.20.0.5\r\n\
s=SIP Call\r\n\
c=IN IP4 10.20.0.5\r\n\
t=0 0\r\n\
m=audio 17204 RTP/AVP 8 0 101\r\n\
c=IN IP4 10.20.0.5\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n";

const GW_G729: &str = "v=0\n\
o=- 1780 1780 IN IP4 10.20.0.6\n\
s=-\n\
c=IN IP4 10.20.0.6\n\
t=0 0\n\
m=audio 20000 RTP/AVP 18 101\n\
a=rtpmap:18 G729/8000\n\
a=fmtp:18 annexb=no\n\
a=rtpmap:101 telephone-event/8000\n\
a=fmtp:101 0-15\n\
a=rtcp-mux\n\
a=rtcp:20000\n\
a=sendrecv\n";

const KEY_A: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
const KEY_B: &str = "PS1uQCVeeCFCanVmcHV0cDg2eEhYN2RUT0ZuNGQq";

fn teams_offer() -> String {
    format!(
        "v=0\r\n\
o=- 0 0 IN IP4 198.51.100.20\r\n\
s=session\r\n\
c=IN IP4 198.51.100.20\r\n\
b=CT:10000000\r\n\
t=0 0\r\n\
m=audio 51020 RTP/SAVP 104 9 103 111 18 0 8 97 101 13 118\r\n\
c=IN IP4 198.51.100.20\r\n\
a=rtcp:51021\r\n\
a=ice-ufrag:Tq3o\r\n\
a=ice-pwd:Vl6hnr8oMEjb1Dn4bD8lGDhc\r\n\
a=candidate:1 1 UDP 2130706431 198.51.100.20 51020 typ srflx raddr 10.0.0.4 rport 51020\r\n\
a=candidate:1 2 UDP 2130705918 198.51.100.20 51021 typ srflx raddr 10.0.0.4 rport 51021\r\n\
a=candidate:2 1 tcp-pass 174455295 198.51.100.21 52010 typ relay raddr 198.51.100.20 rport 51020\r\n\
a=x-candidate-ipv6:3 1 UDP 2130706431 2001:db8::20 51022 typ host\r\n\
a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}|2^31|1:1\r\n\
a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B}|2^31\r\n\
a=maxptime:200\r\n\
a=rtpmap:104 SILK/16000\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:103 SILK/8000\r\n\
a=rtpmap:111 SIREN/16000\r\n\
a=fmtp:111 bitrate=16000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:97 RED/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=rtpmap:13 CN/8000\r\n\
a=rtpmap:118 CN/16000\r\n\
a=ptime:20\r\n"
    )
}

#[test]
fn gateway_g711_with_telephone_event() {
    let sdp = Sdp::parse(GW_G711.as_bytes()).unwrap();
    let m = &sdp.media()[0];
    assert_eq!(m.payload_types(), vec![8, 0, 101]);
    assert_eq!(m.encoding(101), Some(("telephone-event", 8000)));
    assert_eq!(m.fmtp(101), Some("0-16"));
    let kept = filter_offer(&sdp, &CodecPolicy::new(["PCMU"])).unwrap();
    assert_eq!(kept, vec![Some(vec![0, 101])]);
    let mut mr = plain(40000);
    mr.keep_formats = kept[0].clone();
    let rw = Rewrite {
        connection: anchor(),
        media: vec![mr],
        strip_ice: false,
        origin: Some(OriginRewrite {
            session_version: Some(2094),
            address: Some(anchor()),
        }),
    };
    let out = String::from_utf8(rewrite(&sdp, &rw).unwrap()).unwrap();
    assert_eq!(
        out,
        "v=0\r\n\
o=CiscoSystemsSIP-GW-UserAgent 4011 2094 IN IP4 203.0.113.1\r\n\
s=SIP Call\r\n\
c=IN IP4 203.0.113.1\r\n\
t=0 0\r\n\
m=audio 40000 RTP/AVP 0 101\r\n\
c=IN IP4 203.0.113.1\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n"
    );
}

#[test]
fn gateway_g729_annexb_with_rtcp_mux_and_lf() {
    let sdp = Sdp::parse(GW_G729.as_bytes()).unwrap();
    assert!(sdp.uses_lf());
    let m = &sdp.media()[0];
    assert_eq!(m.fmtp(18), Some("annexb=no"));
    assert!(m.rtcp_mux());
    // RFC 5761 §5.1.1: a=rtcp may carry the RTP port when muxing.
    assert_eq!(m.rtcp().unwrap().port, 20000);
    let kept = filter_offer(&sdp, &CodecPolicy::new(["G729", "PCMA"])).unwrap();
    assert_eq!(kept, vec![Some(vec![18, 101])]);
    let mut mr = plain(40010);
    mr.rtcp_port = Some(40010);
    let rw = Rewrite {
        connection: anchor(),
        media: vec![mr],
        strip_ice: true,
        origin: None,
    };
    let out = rewrite(&sdp, &rw).unwrap();
    let expected = GW_G729
        .replace("c=IN IP4 10.20.0.6", "c=IN IP4 203.0.113.1")
        .replace("m=audio 20000", "m=audio 40010")
        .replace("a=rtcp:20000", "a=rtcp:40010");
    assert_eq!(String::from_utf8(out).unwrap(), expected);
    assert_eq!(
        filter_offer(&sdp, &CodecPolicy::new(["PCMU"])),
        Err(SdpError::NoCommonCodec)
    );
}

#[test]
fn teams_offer_toward_gateway_and_answer_back() {
    let offer_text = teams_offer();
    let offer = Sdp::parse(offer_text.as_bytes()).unwrap();
    let m = &offer.media()[0];
    assert_eq!(m.proto(), &Proto::RtpSavp);
    assert_eq!(m.ice().candidates.len(), 3);
    assert_eq!(m.ice().parsed_candidates()[2].typ, "relay");
    assert_eq!(m.crypto().len(), 2);
    assert!(!m.requires_mki(), "tag 3 has no MKI");
    let theirs = m.usable_crypto().unwrap();
    assert_eq!(theirs.tag, 3);
    assert_eq!(theirs.suite, CryptoSuite::AesCm128HmacSha1_80);

    // Policy toward the PSTN gateway: G.711 + G.729.
    let kept = filter_offer(&offer, &CodecPolicy::new(["PCMU", "PCMA", "G729"])).unwrap();
    assert_eq!(kept, vec![Some(vec![18, 0, 8, 101])]);

    // One negotiation per leg: Teams ↔ anchor, anchor ↔ gateway.
    let mut teams_leg = Negotiation::new();
    let mut gw_leg = Negotiation::new();
    teams_leg
        .on_message(Side::Caller, Carrier::Invite, Some(offer.clone()))
        .unwrap();

    // Toward the gateway: plain RTP, no ICE, no crypto.
    let mut mr = plain(40100);
    mr.keep_formats = kept[0].clone();
    let to_gw = rewrite(
        &offer,
        &Rewrite {
            connection: anchor(),
            media: vec![mr],
            strip_ice: true,
            origin: None,
        },
    )
    .unwrap();
    let to_gw = String::from_utf8(to_gw).unwrap();
    assert!(to_gw.contains("m=audio 40100 RTP/AVP 18 0 8 101\r\n"));
    assert!(to_gw.contains("a=rtcp:40101\r\n"));
    for gone in [
        "a=ice-",
        "a=candidate",
        "a=x-candidate",
        "a=crypto",
        "SILK",
        "SIREN",
        "RED/",
        "CN/",
    ] {
        assert!(!to_gw.contains(gone), "{gone} left in {to_gw}");
    }
    for kept_line in [
        "b=CT:10000000\r\n",
        "a=fmtp:18 annexb=no\r\n",
        "a=maxptime:200\r\n",
        "a=ptime:20\r\n",
        "s=session\r\n",
    ] {
        assert!(to_gw.contains(kept_line), "{kept_line} missing");
    }
    let gw_view = Sdp::parse(to_gw.as_bytes()).unwrap();
    assert!(!gw_view.media()[0].ice().is_present());
    gw_leg
        .on_message(Side::Caller, Carrier::Invite, Some(gw_view))
        .unwrap();

    // The gateway answers G.729.
    let gw_answer = Sdp::parse(
        b"v=0\r\no=gw 1 1 IN IP4 10.20.0.5\r\ns=-\r\nc=IN IP4 10.20.0.5\r\nt=0 0\r\nm=audio 17300 RTP/AVP 18 101\r\na=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n",
    )
    .unwrap();
    assert_eq!(
        gw_leg.on_message(Side::Callee, Carrier::Success, Some(gw_answer.clone())),
        Ok(Some(SdpRole::Answer))
    );
    let s = &gw_leg.streams()[0];
    assert!(!s.srtp && !s.caller.sdes && !s.callee.sdes);
    assert_eq!(
        s.callee.address,
        Some(ConnAddr::Ip("10.20.0.5".parse().unwrap()))
    );
    assert_eq!(s.callee.rtp_port, 17300);
    assert_eq!(s.callee.rtcp_port, Some(17301));
    assert_eq!(s.callee.payload_types, vec![18, 101]);

    // Back toward Teams: SRTP with our key, answering their tag.
    let ours = CryptoLine::new(3, CryptoSuite::AesCm128HmacSha1_80, [0x42; 30]).unwrap();
    let to_teams = rewrite(
        &gw_answer,
        &Rewrite {
            connection: anchor(),
            media: vec![MediaRewrite {
                port: 40200,
                rtcp_port: Some(40201),
                profile: Profile::Srtp,
                crypto: Some(ours.clone()),
                keep_formats: None,
            }],
            strip_ice: false,
            origin: None,
        },
    )
    .unwrap();
    let to_teams = String::from_utf8(to_teams).unwrap();
    assert!(to_teams.contains("m=audio 40200 RTP/SAVP 18 101\r\n"));
    assert!(to_teams.ends_with(&format!("a=fmtp:101 0-15\r\n{}\r\n", ours.to_attribute())));
    let back = Sdp::parse(to_teams.as_bytes()).unwrap();
    assert_eq!(back.media()[0].usable_crypto(), Some(&ours));
    assert_eq!(
        teams_leg.on_message(Side::Callee, Carrier::Success, Some(back)),
        Ok(Some(SdpRole::Answer))
    );
    let s = &teams_leg.streams()[0];
    assert!(s.srtp && s.caller.sdes && s.callee.sdes);
    assert!(!s.rtcp_mux);
    assert_eq!(
        s.caller.address,
        Some(ConnAddr::Ip("198.51.100.20".parse().unwrap()))
    );
    assert_eq!(s.caller.rtcp_port, Some(51021));
    // What the media layer keys SRTP with: their key toward us, ours to them.
    let theirs = s.caller.usable_crypto().unwrap();
    assert_eq!(theirs.tag, 3);
    assert_eq!(theirs.master_key_salt().len(), 30);
    assert_eq!(
        s.callee.usable_crypto().unwrap().master_key_salt(),
        &[0x42; 30]
    );
}

#[test]
fn teams_offer_with_only_mki_crypto_is_488() {
    let text = teams_offer().replace(
        &format!("inline:{KEY_B}|2^31"),
        &format!("inline:{KEY_B}|2^31|2:1"),
    );
    let offer = Sdp::parse(text.as_bytes()).unwrap();
    assert!(offer.media()[0].requires_mki());
    let mut n = Negotiation::new();
    let e = n
        .on_message(Side::Caller, Carrier::Invite, Some(offer))
        .unwrap_err();
    assert_eq!(e, SdpError::MkiRequired { index: 0 });
    assert_eq!(e.status_code(), 488);
}

#[test]
fn mixed_line_ends_are_kept_per_line() {
    let body = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\ns=-\r\nc=IN IP4 10.0.0.1\nt=0 0\r\nm=audio 4000 RTP/AVP 0\n";
    let sdp = Sdp::parse(body).unwrap();
    assert_eq!(sdp.to_vec(), body);
    let out = rewrite(
        &sdp,
        &Rewrite {
            connection: anchor(),
            media: vec![plain(40000)],
            strip_ice: false,
            origin: None,
        },
    )
    .unwrap();
    assert_eq!(
        out,
        b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\ns=-\r\nc=IN IP4 203.0.113.1\nt=0 0\r\nm=audio 40000 RTP/AVP 0\n"
    );
}

/// Timing figure for the report:
/// `cargo test --release --test sdp_corpus -- --ignored --nocapture timing`.
#[test]
#[ignore]
fn timing() {
    let offer = teams_offer();
    let policy = CodecPolicy::new(["PCMU", "PCMA", "G729"]);
    let ours = CryptoLine::new(1, CryptoSuite::AesCm128HmacSha1_80, [7; 30]).unwrap();
    let iterations = 100_000u32;
    let start = std::time::Instant::now();
    let mut total = 0usize;
    for _ in 0..iterations {
        let sdp = Sdp::parse(offer.as_bytes()).unwrap();
        total += sdp.media().len();
    }
    let parse = start.elapsed() / iterations;
    let sdp = Sdp::parse(offer.as_bytes()).unwrap();
    let start = std::time::Instant::now();
    for _ in 0..iterations {
        let kept = filter_offer(&sdp, &policy).unwrap();
        let rw = Rewrite {
            connection: anchor(),
            media: vec![MediaRewrite {
                port: 40000,
                rtcp_port: Some(40001),
                profile: Profile::Srtp,
                crypto: Some(ours.clone()),
                keep_formats: kept.into_iter().next().flatten(),
            }],
            strip_ice: true,
            origin: None,
        };
        total += rewrite(&sdp, &rw).unwrap().len();
    }
    let rw = start.elapsed() / iterations;
    println!(
        "teams offer ({} bytes): parse {parse:?}/op, filter+rewrite {rw:?}/op (checksum {total})",
        offer.len()
    );
}
