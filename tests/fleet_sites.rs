//! A fleet of two sites on loopback, two real sipedge processes: the lab appliance
//! (`config/sipedge.toml`, 127.0.0.1) and the remote site's (`config/remote.toml`, 127.0.0.4).
//! Users of one site call out through the other site's appliance, which hands the call over;
//! a gateway of one site is still refused by the other; several cloud peers fail over; emergency
//! numbers reach a gateway of the caller's site whatever the policy.
//!
//! Rust UDP agents play the cloud peer (127.0.0.3:5060, a second one on 127.0.0.8:5060), gw1 and
//! gw2 of lab (127.0.0.2, 127.0.0.5) and gw1.remote (127.0.0.6).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{header, options, Agent, Lab};

const LAB_GW: &str = "127.0.0.1:5068";
const LAB_CLOUD: &str = "127.0.0.1:5062";
const REMOTE_GW: &str = "127.0.0.4:5068";
const REMOTE_CLOUD: &str = "127.0.0.4:5062";
const T: Duration = Duration::from_secs(5);

/// The remote site's appliance (`config/remote.toml` with its state in a scratch directory);
/// started while the [`Lab`] holds the lab lock, stopped when dropped.
struct Remote {
    child: Child,
    dir: tempfile::TempDir,
}

impl Remote {
    fn start() -> Remote {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config/remote.toml"),
        )
        .unwrap()
        .replace("state_dir = \"../state-remote\"", "state_dir = \"state\"");
        let cfg = dir.path().join("remote.toml");
        std::fs::write(&cfg, text).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sipedge"))
            .arg("--config")
            .arg(&cfg)
            .arg("--log-level")
            .arg("info")
            .arg("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("remote.log")).unwrap())
            .spawn()
            .expect("spawn the remote sipedge");
        let mut r = Remote { child, dir };
        r.wait_ready();
        r
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("remote.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let agent = Agent::bind("127.0.0.6:0");
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("remote sipedge exited ({st}); log:\n{}", self.log());
            }
            agent.send_to(&options("sip:mediation.remote.example", &agent), REMOTE_GW);
            if agent.recv_timeout(Duration::from_millis(200)).is_some() {
                return;
            }
        }
        panic!("remote sipedge not ready; log:\n{}", self.log());
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("remote sipedge log:\n{}", self.log());
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An INVITE from the cloud peer `agent` on behalf of `caller` (P-Asserted-Identity).
fn cloud_invite(agent: &Agent, ruri: &str, caller: &str, call: &str) -> String {
    let a = agent.addr();
    format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bK-{call};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:anonymous@anonymous.invalid>;tag=c-{call}\r\n\
         To: <{ruri}>\r\nCall-ID: {call}@fleet\r\nCSeq: 1 INVITE\r\n\
         P-Asserted-Identity: <sip:{caller}>\r\nContact: <sip:peer@{a}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Every value of the Record-Route header fields, in order.
fn record_routes(msg: &str) -> Vec<String> {
    msg.lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case("record-route")
                .then(|| v.trim().to_owned())
        })
        .flat_map(|v| {
            v.split(">,")
                .map(|p| {
                    let p = p.trim();
                    if p.ends_with('>') {
                        p.to_owned()
                    } else {
                        format!("{p}>")
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A response to `req`: Vias, From, To (with a tag), Call-ID, CSeq and Record-Routes copied,
/// our Contact.
fn reply(req: &str, code: u16, reason: &str, contact: SocketAddr) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for l in req.lines() {
        let name = l
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "from" | "call-id" | "cseq" | "record-route" => {
                out.push_str(&format!("{l}\r\n"))
            }
            "to" if l.contains("tag=") => out.push_str(&format!("{l}\r\n")),
            "to" => out.push_str(&format!("{l};tag=gw-{code}\r\n")),
            _ => {}
        }
    }
    out.push_str(&format!(
        "Contact: <sip:gw@{contact}>\r\nContent-Length: 0\r\n\r\n"
    ));
    out
}

/// Waits for a message whose first line starts with `start` (answering OPTIONS on the way).
fn wait_for(agent: &Agent, start: &str, t: Duration) -> Option<(String, SocketAddr)> {
    let deadline = Instant::now() + t;
    while Instant::now() < deadline {
        let (m, from) = agent.recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
        let s = String::from_utf8_lossy(&m).into_owned();
        if s.starts_with(start) {
            return Some((s, from));
        }
        if s.starts_with("OPTIONS ") {
            let _ = agent
                .sock
                .send_to(reply(&s, 200, "OK", agent.addr()).as_bytes(), from);
        }
    }
    None
}

/// The first final response (≥ 200) on `agent` within `t`.
fn final_response(agent: &Agent, t: Duration) -> String {
    let deadline = Instant::now() + t;
    while Instant::now() < deadline {
        if let Some((s, _)) = wait_for(
            agent,
            "SIP/2.0 ",
            deadline.saturating_duration_since(Instant::now()),
        ) {
            if !s.starts_with("SIP/2.0 1") {
                return s;
            }
        }
    }
    panic!("no final response within {t:?}");
}

/// One side's view of a dialog: its route set, its From and To (with the tags), the Call-ID.
struct Dialog<'a> {
    route: &'a [String],
    from: &'a str,
    to: &'a str,
    call_id: &'a str,
}

/// An in-dialog request of `d` to `ruri`.
fn in_dialog(method: &str, agent: &Agent, ruri: &str, d: &Dialog<'_>, cseq: u32) -> String {
    let a = agent.addr();
    let Dialog {
        route,
        from,
        to,
        call_id,
    } = d;
    let routes: String = route.iter().map(|r| format!("Route: {r}\r\n")).collect();
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bK-{method}-{cseq}-{}\r\n\
         Max-Forwards: 70\r\n{routes}From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        common::rand_u64()
    )
}

fn request_uri(msg: &str) -> &str {
    msg.split_whitespace().nth(1).unwrap_or("")
}

/// erin (site remote) calls through the lab appliance: it hands the call to the remote one,
/// which sends it out through gw1.remote; the 200, the ACK and gw1.remote's BYE cross both.
#[test]
fn erin_through_the_lab_reaches_gw1_remote_via_the_remote_appliance() {
    let lab = Lab::start();
    let _remote = Remote::start();
    let cloud = Agent::bind("127.0.0.3:5060");
    let gw_remote = Agent::bind("127.0.0.6:5060");
    let ruri = "sip:+14255550199@ap.lab.example;user=phone";
    cloud.send_to(
        cloud_invite(&cloud, ruri, "erin@lab.example", "erin-1").as_bytes(),
        LAB_CLOUD,
    );
    let (inv, from) = wait_for(&gw_remote, "INVITE ", T).expect("erin's call reaches gw1.remote");
    assert_eq!(
        from,
        REMOTE_GW.parse().unwrap(),
        "sent by the remote appliance"
    );
    assert!(
        request_uri(&inv).starts_with("sip:+14255550199@gw1.remote.example"),
        "{inv}"
    );
    let rr = record_routes(&inv);
    assert!(
        rr.iter().any(|r| r.contains("mediation.remote.example"))
            && rr.iter().any(|r| r.contains("mediation.lab.example")),
        "both appliances stay on the path: {rr:?}"
    );
    gw_remote.send_to(
        reply(&inv, 200, "OK", gw_remote.addr()).as_bytes(),
        REMOTE_GW,
    );
    let ok = final_response(&cloud, T);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    // The ACK from the cloud follows the route set through both appliances.
    let mut route = record_routes(&ok);
    route.reverse();
    let to = header(&ok, "To").unwrap().to_owned();
    let from_hdr = header(&ok, "From").unwrap().to_owned();
    let call_id = header(&ok, "Call-ID").unwrap().to_owned();
    let contact = header(&ok, "Contact").unwrap();
    let target = contact.trim_start_matches('<').trim_end_matches('>');
    let caller_side = Dialog {
        route: &route,
        from: &from_hdr,
        to: &to,
        call_id: &call_id,
    };
    cloud.send_to(
        in_dialog("ACK", &cloud, target, &caller_side, 1).as_bytes(),
        LAB_CLOUD,
    );
    let (ack, _) = wait_for(&gw_remote, "ACK ", T).expect("the ACK reaches gw1.remote");
    assert!(request_uri(&ack).contains("127.0.0.6"), "{ack}");
    // gw1.remote hangs up: the BYE crosses back to the cloud.
    let gw_route = record_routes(&inv);
    let caller_contact = header(&inv, "Contact").unwrap();
    let caller_target = caller_contact.trim_start_matches('<').trim_end_matches('>');
    let callee_side = Dialog {
        route: &gw_route,
        from: &to,
        to: &from_hdr,
        call_id: &call_id,
    };
    gw_remote.send_to(
        in_dialog("BYE", &gw_remote, caller_target, &callee_side, 2).as_bytes(),
        REMOTE_GW,
    );
    let (bye, from) = wait_for(&cloud, "BYE ", T).expect("gw1.remote's BYE reaches the cloud");
    assert_eq!(from, LAB_CLOUD.parse().unwrap(), "{bye}");
    cloud.send_to(reply(&bye, 200, "OK", cloud.addr()).as_bytes(), LAB_CLOUD);
    let bye_ok = final_response(&gw_remote, T);
    assert!(bye_ok.starts_with("SIP/2.0 200"), "{bye_ok}");
    assert!(
        lab.log_text().contains("mediation.remote.example"),
        "the lab names the remote appliance"
    );
}

/// alice (site lab) calls through the remote appliance: handed to the lab appliance, out
/// through gw1 or gw2; a gateway of lab calling the remote appliance is still refused.
#[test]
fn alice_through_the_remote_reaches_a_lab_gateway_and_a_lab_gateway_is_refused_by_remote() {
    let _lab = Lab::start();
    let remote = Remote::start();
    let cloud = Agent::bind("127.0.0.3:5060");
    let gw1 = Agent::bind("127.0.0.2:5060");
    let gw2 = Agent::bind("127.0.0.5:5060");
    let ruri = "sip:+33144556677@ap.remote.example;user=phone";
    cloud.send_to(
        cloud_invite(&cloud, ruri, "alice@lab.example", "alice-1").as_bytes(),
        REMOTE_CLOUD,
    );
    // gw1 and gw2 share priority: either may be first.
    let deadline = Instant::now() + T;
    let mut got = None;
    while got.is_none() && Instant::now() < deadline {
        for gw in [&gw1, &gw2] {
            if let Some((inv, from)) = wait_for(gw, "INVITE ", Duration::from_millis(100)) {
                got = Some((inv, from, gw));
                break;
            }
        }
    }
    let (inv, from, gw) = got.expect("alice's call reaches gw1 or gw2 of lab");
    assert_eq!(from, LAB_GW.parse().unwrap(), "sent by the lab appliance");
    assert!(
        request_uri(&inv).starts_with("sip:+33144556677@gw"),
        "{inv}"
    );
    gw.send_to(reply(&inv, 486, "Busy Here", gw.addr()).as_bytes(), LAB_GW);
    let r = final_response(&cloud, T);
    assert!(
        r.starts_with("SIP/2.0 486"),
        "the gateway's answer comes back: {r}"
    );

    // bob's policy holds through the handover too: international refused.
    cloud.send_to(
        cloud_invite(&cloud, ruri, "bob@lab.example", "bob-1").as_bytes(),
        REMOTE_CLOUD,
    );
    let r = final_response(&cloud, T);
    assert!(r.starts_with("SIP/2.0 403"), "{r}");

    // gw1 of lab sends a call to the remote appliance: another site's gateway is refused.
    let a = gw1.addr();
    gw1.send_to(
        format!(
            "INVITE sip:+14255550100@mediation.remote.example;user=phone SIP/2.0\r\n\
             Via: SIP/2.0/UDP {a};branch=z9hG4bK-gw1-x;rport\r\nMax-Forwards: 70\r\n\
             From: <sip:+12065550100@gw1.lab.example>;tag=g1\r\n\
             To: <sip:+14255550100@mediation.remote.example>\r\nCall-ID: gw1-x@fleet\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:gw@{a}>\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
        REMOTE_GW,
    );
    let r = final_response(&gw1, T);
    assert!(r.starts_with("SIP/2.0 403"), "{r}");
    assert!(
        remote
            .log()
            .contains("gateway gw1.lab.example belongs to site lab"),
        "the remote log says why"
    );
}

/// The first cloud peer is silent: gw1's call for alice goes to the second within the
/// failover timer.
#[test]
fn a_silent_first_cloud_peer_fails_over_to_the_second_within_the_failover_timer() {
    let _lab = Lab::start_with(|t| {
        t.replace(
            "fqdn = \"sip.cloud.lab.example\"",
            "fqdns = [\"sip.cloud.lab.example\", \"sip2.cloud.lab.example\"]",
        )
        .replace(
            "[hosts]\n",
            "[hosts]\n\"sip2.cloud.lab.example\" = \"127.0.0.8\"\n",
        )
        .replace("failover_timer_s = 10", "failover_timer_s = 2")
    });
    let silent = Agent::bind("127.0.0.3:5060");
    let second = Agent::bind("127.0.0.8:5060");
    let gw1 = Agent::bind("127.0.0.2:0");
    let a = gw1.addr();
    let sent = Instant::now();
    gw1.send_to(
        format!(
            "INVITE sip:+14255550100@mediation.lab.example;user=phone SIP/2.0\r\n\
             Via: SIP/2.0/UDP {a};branch=z9hG4bK-fo-1;rport\r\nMax-Forwards: 70\r\n\
             From: <sip:+12065550100@gw1.lab.example>;tag=fo\r\n\
             To: <sip:+14255550100@mediation.lab.example>\r\nCall-ID: fo-1@fleet\r\n\
             CSeq: 1 INVITE\r\nContact: <sip:gw@{a}>\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
        LAB_GW,
    );
    let (first, _) = wait_for(&silent, "INVITE ", T).expect("the first cloud peer is tried first");
    assert!(request_uri(&first).starts_with("sip:alice@lab.example"));
    let (inv, from) =
        wait_for(&second, "INVITE ", Duration::from_secs(6)).expect("the second cloud peer");
    let took = sent.elapsed();
    assert_eq!(from, LAB_CLOUD.parse().unwrap());
    assert_eq!(request_uri(&inv), "sip:alice@lab.example", "{inv}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_millis(3500),
        "failover after the 2 s failover timer, took {took:?}"
    );
    second.send_to(reply(&inv, 200, "OK", second.addr()).as_bytes(), LAB_CLOUD);
    let ok = final_response(&gw1, T);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
}

/// 911 from bob (international calls disallowed) and from carol (no site: the default site)
/// reaches a gateway of lab; 112 too. Never 484.
#[test]
fn emergency_numbers_from_bob_and_carol_reach_a_lab_gateway() {
    let _lab = Lab::start();
    let cloud = Agent::bind("127.0.0.3:5060");
    let gw1 = Agent::bind("127.0.0.2:5060");
    let gw2 = Agent::bind("127.0.0.5:5060");
    for (n, (caller, number)) in [
        ("bob@lab.example", "911"),
        ("carol@lab.example", "911"),
        ("bob@lab.example", "112"),
    ]
    .into_iter()
    .enumerate()
    {
        let ruri = format!("sip:{number}@ap.lab.example;user=phone");
        cloud.send_to(
            cloud_invite(&cloud, &ruri, caller, &format!("sos-{n}")).as_bytes(),
            LAB_CLOUD,
        );
        let deadline = Instant::now() + T;
        let mut got = None;
        while got.is_none() && Instant::now() < deadline {
            for gw in [&gw1, &gw2] {
                if let Some((inv, _)) = wait_for(gw, "INVITE ", Duration::from_millis(100)) {
                    got = Some((inv, gw));
                    break;
                }
            }
        }
        let (inv, gw) = got.unwrap_or_else(|| panic!("{number} from {caller} reaches no gateway"));
        assert!(
            request_uri(&inv).starts_with(&format!("sip:{number}@gw")),
            "{inv}"
        );
        gw.send_to(reply(&inv, 200, "OK", gw.addr()).as_bytes(), LAB_GW);
        let ok = final_response(&cloud, T);
        assert!(ok.starts_with("SIP/2.0 200"), "{caller} {number}: {ok}");
    }
}
