//! The appliance on the lab configuration, driven by small SIP agents on loopback: OPTIONS,
//! admission rules (403, 483, 420, 416), malformed input, TCP framing, and the graceful drain.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{header, options, Agent, Lab};

const GW_SIDE: &str = "127.0.0.1:5068";
const CLOUD_SIDE: &str = "127.0.0.1:5062";
const T: Duration = Duration::from_secs(3);

fn request(method: &str, ruri: &str, agent: &Agent, extra: &str, n: u64) -> Vec<u8> {
    let a = agent.addr();
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bK-t-{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:test@{a}>;tag=f{n}\r\nTo: <{ruri}>\r\n\
         Call-ID: lab-{n}@test\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn options_to_us_answered_with_allow_and_fqdn_contact() {
    let _lab = Lab::start();
    let gw = Agent::bind("127.0.0.2:0");
    gw.send_to(&options("sip:mediation.lab.example", &gw), GW_SIDE);
    let r = gw.expect("SIP/2.0 200", T);
    let allow = header(&r, "Allow").expect("Allow");
    for m in [
        "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REFER", "NOTIFY", "INFO", "UPDATE", "PRACK",
    ] {
        assert!(allow.contains(m), "Allow lacks {m}: {allow}");
    }
    let contact = header(&r, "Contact").expect("Contact");
    assert!(contact.contains("mediation.lab.example"), "{contact}");
    // The cloud side knows us by our access edge FQDN.
    let peer = Agent::bind("127.0.0.3:0");
    peer.send_to(&options("sip:ap.lab.example", &peer), CLOUD_SIDE);
    let r = peer.expect("SIP/2.0 200", T);
    assert!(
        header(&r, "Contact").unwrap().contains("ap.lab.example"),
        "{r}"
    );
}

#[test]
fn unknown_sender_is_refused_with_403() {
    let _lab = Lab::start();
    let stranger = Agent::bind("127.0.0.9:0");
    stranger.send_to(
        &request(
            "INVITE",
            "sip:+14255550100@mediation.lab.example",
            &stranger,
            "",
            1,
        ),
        GW_SIDE,
    );
    let r = stranger.expect("SIP/2.0 403", T);
    assert!(
        header(&r, "To").unwrap().contains("tag="),
        "a final response carries a To tag: {r}"
    );
    // The cloud peer's address is no gateway; a gateway's address is no cloud peer.
    let peer = Agent::bind("127.0.0.3:0");
    peer.send_to(
        &request(
            "INVITE",
            "sip:+14255550100@mediation.lab.example",
            &peer,
            "",
            2,
        ),
        GW_SIDE,
    );
    peer.expect("SIP/2.0 403", T);
    let gw = Agent::bind("127.0.0.2:0");
    gw.send_to(
        &request("INVITE", "sip:+33144556677@ap.lab.example", &gw, "", 3),
        CLOUD_SIDE,
    );
    gw.expect("SIP/2.0 403", T);
}

#[test]
fn gateway_of_another_site_is_refused() {
    let _lab = Lab::start();
    let remote_gw = Agent::bind("127.0.0.6:0");
    remote_gw.send_to(
        &request(
            "INVITE",
            "sip:+14255550100@mediation.lab.example",
            &remote_gw,
            "",
            4,
        ),
        GW_SIDE,
    );
    remote_gw.expect("SIP/2.0 403", T);
}

#[test]
fn admission_rules_483_420_416() {
    let _lab = Lab::start();
    let gw = Agent::bind("127.0.0.2:0");
    let zero_mf = String::from_utf8(request(
        "INVITE",
        "sip:+14255550100@mediation.lab.example",
        &gw,
        "",
        5,
    ))
    .unwrap()
    .replace("Max-Forwards: 70", "Max-Forwards: 0");
    gw.send_to(zero_mf.as_bytes(), GW_SIDE);
    gw.expect("SIP/2.0 483", T);
    gw.send_to(
        &request(
            "INVITE",
            "sip:+14255550100@mediation.lab.example",
            &gw,
            "Proxy-Require: foo\r\n",
            6,
        ),
        GW_SIDE,
    );
    let r = gw.expect("SIP/2.0 420", T);
    assert!(
        header(&r, "Unsupported").is_some_and(|u| u.contains("foo")),
        "{r}"
    );
    gw.send_to(
        &request("INVITE", "mailto:x@mediation.lab.example", &gw, "", 7),
        GW_SIDE,
    );
    gw.expect("SIP/2.0 416", T);
}

#[test]
fn invite_gets_100_trying_and_reaches_the_cloud_peer_with_record_route() {
    let _lab = Lab::start();
    let peer = Agent::bind("127.0.0.3:5060");
    let gw = Agent::bind("127.0.0.2:0");
    gw.send_to(
        &request(
            "INVITE",
            "sip:+14255550100@mediation.lab.example",
            &gw,
            "",
            8,
        ),
        GW_SIDE,
    );
    gw.expect("SIP/2.0 100", T);
    let inv = peer.expect("INVITE", T);
    // Request-URI is alice's SIP address (reverse number lookup); Max-Forwards decremented;
    // our Via on top with our FQDN.
    assert!(
        inv.starts_with("INVITE sip:alice@lab.example SIP/2.0"),
        "{inv}"
    );
    assert_eq!(header(&inv, "Max-Forwards"), Some("69"));
    let top_via = header(&inv, "Via").unwrap();
    assert!(
        top_via.starts_with("SIP/2.0/UDP ap.lab.example:5062;branch=z9hG4bK"),
        "{top_via}"
    );
    // Double Record-Route (RFC 5658), FQDNs only, the cloud-side interface on top.
    let rrs: Vec<&str> = inv
        .lines()
        .filter(|l| l.starts_with("Record-Route:"))
        .collect();
    assert_eq!(rrs.len(), 2, "{inv}");
    assert!(
        rrs[0].contains("sip:ap.lab.example:5062") && rrs[0].contains(";lr"),
        "{}",
        rrs[0]
    );
    assert!(
        rrs[1].contains("sip:mediation.lab.example:5068"),
        "{}",
        rrs[1]
    );
    assert!(
        !inv.contains("Record-Route: <sip:127."),
        "no IP in Record-Route"
    );
}

/// Malformed input never panics and never stops the server answering the next request.
#[test]
fn malformed_input_never_stops_the_server() {
    let mut lab = Lab::start();
    let gw = Agent::bind("127.0.0.2:0");
    let good = String::from_utf8(request(
        "INVITE",
        "sip:+1@mediation.lab.example",
        &gw,
        "",
        9,
    ))
    .unwrap();
    let many_vias: String = (0..1000)
        .map(|i| {
            format!(
                "Via: SIP/2.0/UDP 10.0.0.{}:5060;branch=z9hG4bK{i}\r\n",
                i % 250
            )
        })
        .collect();
    let mut garbage: Vec<Vec<u8>> = vec![
        good.as_bytes()[..good.len() / 2].to_vec(), // truncated
        good.replace("Content-Length: 0", "Content-Length: 500")
            .into_bytes(), // CL beyond the datagram
        good.replace("Content-Length: 0", "Content-Length: -1")
            .into_bytes(),
        good.replace("Content-Length: 0", "Content-Length: abc")
            .into_bytes(),
        good.replace("Call-ID: lab-9@test", "Call-ID: lab\0-9@test")
            .into_bytes(), // NUL byte
        good.replacen("Via:", &format!("{many_vias}Via:"), 1)
            .into_bytes(),
        vec![0xff, 0xfe, 0xfd, b'\r', b'\n', b'\r', b'\n'], // invalid UTF-8
        good.replace("From: <sip:test", "From: \u{fffd}\u{ff}<sip:test")
            .into_bytes(),
        b"INVITE sip:x SIP/2.0\r\n\r\n".to_vec(),
        vec![b'A'; 60_000], // oversized junk
        good.replace("SIP/2.0\r\n", "SIP/7.0\r\n").into_bytes(),
    ];
    let mut bad_utf8 = good.clone().into_bytes();
    bad_utf8.splice(10..10, [0xc3, 0x28]);
    garbage.push(bad_utf8);
    for g in &garbage {
        gw.send_to(g, GW_SIDE);
    }
    // A version we don't speak gets 505 (RFC 3261 §8.2.1? no — §21.5.6 via RFC 4475 badvers).
    let mut saw_505 = false;
    while let Some((m, _)) = gw.recv_timeout(Duration::from_millis(500)) {
        saw_505 |= m.starts_with(b"SIP/2.0 505");
    }
    assert!(saw_505, "SIP/7.0 should be answered 505");
    gw.send_to(&options("sip:mediation.lab.example", &gw), GW_SIDE);
    gw.expect("SIP/2.0 200", T);
    assert!(lab.is_running());
}

#[test]
fn tcp_framing_messages_keepalives_and_garbage() {
    let _lab = Lab::start();
    // The gateway side identifies gw1 by its address; connect from 127.0.0.2.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(
        &"127.0.0.2:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    sock.connect(&GW_SIDE.parse::<std::net::SocketAddr>().unwrap().into())
        .unwrap();
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(T)).unwrap();
    let local = s.local_addr().unwrap();
    let opt = format!(
        "OPTIONS sip:mediation.lab.example SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK-tcp-1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:t@{local}>;tag=1\r\nTo: <sip:mediation.lab.example>\r\n\
         Call-ID: tcp-1@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    // A keepalive, then one message split in two writes.
    s.write_all(b"\r\n\r\n").unwrap();
    s.write_all(&opt.as_bytes()[..40]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    s.write_all(&opt.as_bytes()[40..]).unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("SIP/2.0 200") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed early");
        got.extend_from_slice(&buf[..n]);
    }
    // A message without Content-Length on a stream is a framing error: 400, then close.
    let bad = opt
        .replace("Content-Length: 0\r\n", "")
        .replace("tcp-1@", "tcp-2@");
    s.write_all(bad.as_bytes()).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.contains("SIP/2.0 400"),
        "expected 400 before close, got {text:?}"
    );
}

#[test]
fn sigterm_drains_new_invites_get_503_then_exit() {
    let mut lab = Lab::start_with(|t| t.replace("drain_timeout_s = 32", "drain_timeout_s = 3"));
    // A call that never gets answered keeps a transaction in flight.
    let _peer = Agent::bind("127.0.0.3:5060");
    let gw = Agent::bind("127.0.0.2:0");
    gw.send_to(
        &request(
            "INVITE",
            "sip:+14255550100@mediation.lab.example",
            &gw,
            "",
            20,
        ),
        GW_SIDE,
    );
    gw.expect("SIP/2.0 100", T);
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(lab.child.id().to_string())
        .status();
    std::thread::sleep(Duration::from_millis(300));
    gw.send_to(
        &request(
            "INVITE",
            "sip:+14255550100@mediation.lab.example",
            &gw,
            "",
            21,
        ),
        GW_SIDE,
    );
    let r = gw.expect("SIP/2.0 503", T);
    assert!(header(&r, "Retry-After").is_some(), "{r}");
    let st = lab.terminate();
    assert!(st.success(), "exit status {st:?}");
}
