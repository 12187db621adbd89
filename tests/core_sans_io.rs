//! The proxy core is sans-IO: with media anchored through an in-memory backend, a whole call
//! — INVITE with SDP, 200 with SDP, ACK, BYE — crosses `Core::handle_inbound` without opening a
//! socket or starting a thread, and the media backend is asked for exactly what the call needs.
//! (One test in this binary, so nothing else changes the process's descriptors or threads.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use common::sans_io::{lab_core, udp_flow};
use sipedge::config::{Config, Side};
use sipedge::flow::{Inbound, Transmit};
use sipedge::media::fake::{FakeMedia, FakeOp};
use sipedge::media::MediaUpdate;
use sipedge::proxy::anchor::Anchor;
use sipedge::proxy::Core;
use sipedge::sip::Message;

/// Open sockets of this process.
fn sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn sdp(host: &str, port: u16) -> String {
    format!(
        "v=0\r\no=ua 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    )
}

fn feed(core: &mut Core, now: Instant, side: Side, remote: &str, text: String) -> Vec<Transmit> {
    let msg = Message::parse(Bytes::from(text)).expect("test message parses");
    core.handle_inbound(now, Inbound::Message(udp_flow(side, remote), msg));
    std::iter::from_fn(|| core.poll_transmit()).collect()
}

fn find<'a>(out: &'a [Transmit], first_line: &str) -> &'a Transmit {
    out.iter()
        .find(|t| t.data.starts_with(first_line.as_bytes()))
        .unwrap_or_else(|| panic!("no {first_line:?} in {out:?}"))
}

fn text(t: &Transmit) -> String {
    String::from_utf8_lossy(&t.data).into_owned()
}

/// The value of the first header `name` in `msg`.
fn header(msg: &str, name: &str) -> String {
    common::header(msg, name).unwrap_or_default().to_owned()
}

#[test]
fn a_call_with_fake_media_opens_no_socket_and_starts_no_thread() {
    let now = Instant::now();
    let mut core = lab_core(now, |t| t);
    let cfg_text = include_str!("../config/sipedge.toml");
    let cfg = Config::from_toml(Path::new("config/sipedge.toml"), cfg_text).unwrap();
    let media = FakeMedia::new(8);
    let settings = cfg.media.clone().expect("the lab config has [media]");
    core.set_anchor(Anchor::from_config(&cfg, settings, Box::new(media.clone())));
    let (sockets_before, threads_before) = (sockets(), threads());

    // gw1 calls alice's number; the INVITE reaches the cloud peer with our media address.
    let body = sdp("127.0.0.2", 20000);
    let invite = format!(
        "INVITE sip:+14255550100@mediation.lab.example SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-sansio-1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:+14255550199@gw1.lab.example>;tag=g1\r\n\
         To: <sip:+14255550100@lab.example>\r\nCall-ID: sansio-1\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:gw@127.0.0.2:5060>\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let out = feed(&mut core, now, Side::Gateway, "127.0.0.2:5060", invite);
    find(&out, "SIP/2.0 100");
    let fwd = find(&out, "INVITE ");
    assert_eq!(fwd.remote, "127.0.0.3:5060".parse().unwrap());
    let fwd = text(fwd);
    assert!(fwd.contains("c=IN IP4 127.0.0.1\r\n"), "{fwd}");
    assert!(
        !fwd.contains("127.0.0.2 "),
        "the gateway's address is hidden: {fwd}"
    );
    let Some(FakeOp::Allocate(id)) = media.log().first().cloned() else {
        panic!("no allocation: {:?}", media.log());
    };
    let session = media.get(id).expect("session");
    let cloud_port = session.local[1].rtp.port();
    assert!(fwd.contains(&format!("m=audio {cloud_port} ")), "{fwd}");

    // The cloud peer answers; the 200 reaches gw1 with our gateway-leg port.
    let via = header(&fwd, "Via");
    let body = sdp("127.0.0.3", 30000);
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {via}\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-sansio-1;rport\r\n\
         {}From: <sip:+14255550199@gw1.lab.example>;tag=g1\r\n\
         To: <sip:alice@lab.example>;tag=c1\r\nCall-ID: sansio-1\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:alice@127.0.0.3:5060>\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{body}",
        fwd.lines()
            .filter(|l| l.starts_with("Record-Route:"))
            .map(|l| format!("{l}\r\n"))
            .collect::<String>(),
        body.len()
    );
    let out = feed(&mut core, now, Side::Cloud, "127.0.0.3:5060", ok);
    let ok_up = text(find(&out, "SIP/2.0 200"));
    let gw_port = session.local[0].rtp.port();
    assert!(ok_up.contains(&format!("m=audio {gw_port} ")), "{ok_up}");
    let session = media.get(id).expect("session");
    assert_eq!(session.remote[0], Some("127.0.0.2:20000".parse().unwrap()));
    assert_eq!(session.remote[1], Some("127.0.0.3:30000".parse().unwrap()));
    assert!(media
        .log()
        .contains(&FakeOp::Update(id, MediaUpdate::Commit)));

    // BYE from the gateway along its route set (the Record-Routes of the 200, reversed): the
    // session is released, once.
    let routes: String = ok_up
        .lines()
        .filter_map(|l| l.strip_prefix("Record-Route: "))
        .rev()
        .map(|r| format!("Route: {r}\r\n"))
        .collect();
    let bye = format!(
        "BYE sip:alice@127.0.0.3:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-sansio-2;rport\r\n\
         {routes}Max-Forwards: 70\r\n\
         From: <sip:+14255550199@gw1.lab.example>;tag=g1\r\nTo: <sip:alice@lab.example>;tag=c1\r\n\
         Call-ID: sansio-1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    let out = feed(&mut core, now, Side::Gateway, "127.0.0.2:5060", bye);
    assert_eq!(find(&out, "BYE ").remote, "127.0.0.3:5060".parse().unwrap());
    assert_eq!(media.live(), 0);
    let releases = media
        .log()
        .iter()
        .filter(|op| matches!(op, FakeOp::Release(_)))
        .count();
    assert_eq!(releases, 1);

    assert_eq!(sockets(), sockets_before, "handle_inbound opened a socket");
    assert_eq!(threads(), threads_before, "handle_inbound started a thread");
}
