//! The Cloud Connector routing model on the lab: inbound reverse number lookup, outbound
//! caller/site/policy, multi-site, conference escalation, failover, spread, OPTIONS health, and
//! directory changes on a running server (CLI and HTTP API) that survive `kill -9`.
//!
//! Rust UDP agents play gw1 (127.0.0.2:5060), gw2 (127.0.0.5:5060), the cloud peer
//! (127.0.0.3:5060) and the remote site's mediation server (127.0.0.4:5068).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{header, Agent, Lab};

const GW_SIDE: &str = "127.0.0.1:5068";
const CLOUD_SIDE: &str = "127.0.0.1:5062";
const T: Duration = Duration::from_secs(3);

fn invite_text(agent: &Agent, ruri: &str, from: &str, n: u64) -> String {
    let a = agent.addr();
    format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bK-r-{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <{from}>;tag=f{n}\r\nTo: <{ruri}>\r\n\
         Call-ID: route-{n}@test\r\nCSeq: 1 INVITE\r\nContact: <sip:x@{a}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The cloud peer calls `number` on behalf of `caller` (P-Asserted-Identity).
fn peer_call(peer: &Agent, caller: &str, number: &str, n: u64) {
    let ruri = format!("sip:{number}@ap.lab.example;user=phone");
    let text = invite_text(peer, &ruri, "sip:anonymous@anonymous.invalid", n).replace(
        "Contact:",
        &format!("P-Asserted-Identity: <sip:{caller}>\r\nContact:"),
    );
    peer.send_to(text.as_bytes(), CLOUD_SIDE);
}

/// The first final response (≥ 200) to call `n` on `agent` within `t`.
fn final_response(agent: &Agent, n: u64, t: Duration) -> String {
    let call = format!("route-{n}@");
    let deadline = Instant::now() + t;
    while Instant::now() < deadline {
        if let Some((m, _)) = agent.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            let s = String::from_utf8_lossy(&m).into_owned();
            if s.starts_with("SIP/2.0 ") && !s.starts_with("SIP/2.0 1") && s.contains(&call) {
                return s;
            }
        }
    }
    panic!("no final response to call {n} within {t:?}");
}

/// Waits for an INVITE on a gateway-like agent (answering OPTIONS 200 when `answer_options`),
/// returns it and where it came from.
fn wait_invite(agent: &Agent, t: Duration, answer_options: bool) -> Option<(String, SocketAddr)> {
    let deadline = Instant::now() + t;
    while Instant::now() < deadline {
        let (m, from) = agent.recv_timeout(deadline.saturating_duration_since(Instant::now()))?;
        let s = String::from_utf8_lossy(&m).into_owned();
        if s.starts_with("INVITE ") {
            return Some((s, from));
        }
        if s.starts_with("OPTIONS ") && answer_options {
            agent
                .sock
                .send_to(reply(&s, 200, "OK").as_bytes(), from)
                .ok();
        }
    }
    None
}

/// A response to `req` (Vias, From, To with a tag, Call-ID, CSeq copied).
fn reply(req: &str, code: u16, reason: &str) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for l in req.lines() {
        let name = l
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "from" | "call-id" | "cseq" => out.push_str(&format!("{l}\r\n")),
            "to" => {
                if l.contains("tag=") {
                    out.push_str(&format!("{l}\r\n"));
                } else {
                    out.push_str(&format!("{l};tag=gw{code}\r\n"));
                }
            }
            _ => {}
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

fn request_uri(msg: &str) -> &str {
    msg.split_whitespace().nth(1).unwrap_or("")
}

fn config_path(lab: &Lab) -> PathBuf {
    lab.dir.path().join("sipedge.toml")
}

/// Runs `sipedge --config <lab config> args…`; returns (success, stdout + stderr).
fn cli(lab: &Lab, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .arg("--config")
        .arg(config_path(lab))
        .args(args)
        .output()
        .expect("run sipedge CLI");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// gw2 ranks after gw1 (priority 1): gw1 is always tried first.
fn gw1_first(cfg: String) -> String {
    cfg.replace(
        "name = \"gw2.lab.example\"\nport = 5060",
        "name = \"gw2.lab.example\"\npriority = 1\nport = 5060",
    )
}

#[test]
fn inbound_alice_reaches_the_peer_as_her_sip_address_dave_480_unknown_404() {
    let lab = Lab::start();
    let peer = Agent::bind("127.0.0.3:5060");
    let gw = Agent::bind("127.0.0.2:0");
    gw.send_to(
        invite_text(
            &gw,
            "sip:+14255550100@mediation.lab.example;user=phone",
            "sip:+12065550100@gw1.lab.example",
            1,
        )
        .as_bytes(),
        GW_SIDE,
    );
    let (inv, _) = wait_invite(&peer, T, true).expect("alice's call reaches the cloud peer");
    assert_eq!(request_uri(&inv), "sip:alice@lab.example", "{inv}");
    assert!(
        header(&inv, "To").unwrap().contains("+14255550100"),
        "the To header is unchanged: {inv}"
    );
    gw.send_to(
        invite_text(
            &gw,
            "tel:+14255550103",
            "sip:+12065550100@gw1.lab.example",
            2,
        )
        .as_bytes(),
        GW_SIDE,
    );
    let r = final_response(&gw, 2, T);
    // The reason phrase toward the peer is the standard one; the cause (naming the user) is
    // in the log (and `route explain`), never on the wire.
    assert!(
        r.starts_with("SIP/2.0 480 Temporarily Unavailable\r\n"),
        "{r}"
    );
    assert!(
        !r.contains("dave@lab.example"),
        "no user named to a peer: {r}"
    );
    assert!(
        wait_for_log(&lab, "enterprise voice is not enabled for dave@lab.example"),
        "the log names the cause"
    );
    gw.send_to(
        invite_text(
            &gw,
            "sip:+14255550177@mediation.lab.example",
            "sip:x@gw1.lab.example",
            3,
        )
        .as_bytes(),
        GW_SIDE,
    );
    assert!(final_response(&gw, 3, T).starts_with("SIP/2.0 404"));
    gw.send_to(
        invite_text(
            &gw,
            "sip:4711@mediation.lab.example",
            "sip:x@gw1.lab.example",
            4,
        )
        .as_bytes(),
        GW_SIDE,
    );
    assert!(final_response(&gw, 4, T).starts_with("SIP/2.0 484"));
}

#[test]
fn outbound_policy_default_site_multi_site_and_live_tenant_change() {
    let lab = Lab::start();
    let peer = Agent::bind("127.0.0.3:5060");
    let gw1 = Agent::bind("127.0.0.2:5060");
    let gw2 = Agent::bind("127.0.0.5:5060");
    let remote = Agent::bind("127.0.0.4:5068");
    let either = |t: Duration| -> Option<String> {
        let deadline = Instant::now() + t;
        while Instant::now() < deadline {
            for g in [&gw1, &gw2] {
                if let Some((inv, from)) = wait_invite(g, Duration::from_millis(50), true) {
                    g.sock
                        .send_to(reply(&inv, 486, "Busy Here").as_bytes(), from)
                        .ok();
                    return Some(inv);
                }
            }
        }
        None
    };
    // alice → France: a gateway of site lab.
    peer_call(&peer, "alice@lab.example", "+33144556677", 10);
    let inv = either(T).expect("alice's call reaches gw1 or gw2");
    assert!(
        request_uri(&inv).starts_with("sip:+33144556677@gw"),
        "{inv}"
    );
    // bob → France: 403 naming the policy; bob → a national number goes through.
    peer_call(&peer, "bob@lab.example", "+33144556677", 11);
    let r = final_response(&peer, 11, T);
    assert!(r.starts_with("SIP/2.0 403"), "{r}");
    assert!(
        header(&r, "Warning").is_some_and(|w| w.contains("InternationalCallsDisallowed")),
        "{r}"
    );
    peer_call(&peer, "bob@lab.example", "+14255550199", 12);
    assert!(either(T).is_some(), "bob's national call goes through");
    // carol has no site: the default site (peer destination ap.lab.example → lab).
    peer_call(&peer, "carol@lab.example", "+14255550199", 13);
    assert!(either(T).is_some(), "carol uses the default site lab");
    // erin's site is remote: its mediation server.
    peer_call(&peer, "erin@lab.example", "+33144556677", 14);
    let (inv, from) =
        wait_invite(&remote, T, true).expect("erin's call reaches mediation.remote.example");
    assert!(
        request_uri(&inv).contains("@mediation.remote.example"),
        "{inv}"
    );
    remote
        .sock
        .send_to(reply(&inv, 486, "Busy Here").as_bytes(), from)
        .ok();
    // The tenant's peer destination moves to the remote site's edge: carol follows, no restart.
    let (ok, out) = cli(
        &lab,
        &["tenant", "set", "--peer-destination", "ap.remote.example"],
    );
    assert!(ok, "{out}");
    std::thread::sleep(Duration::from_millis(1200));
    peer_call(&peer, "carol@lab.example", "+14255550199", 15);
    let deadline = Instant::now() + T;
    let mut carol_remote = false;
    while !carol_remote && Instant::now() < deadline {
        // (retransmissions of erin's INVITE may come first)
        if let Some((inv, _)) = wait_invite(&remote, Duration::from_millis(100), true) {
            carol_remote = inv.contains("route-15@");
        }
    }
    assert!(carol_remote, "carol's call now goes to site remote");
    // Unknown caller and voice-disabled caller: 403.
    let drain = |a: &Agent| while a.recv_timeout(Duration::from_millis(100)).is_some() {};
    drain(&peer);
    peer_call(&peer, "zed@lab.example", "+14255550199", 16);
    assert!(final_response(&peer, 16, T).starts_with("SIP/2.0 403"));
    peer_call(&peer, "dave@lab.example", "+14255550199", 17);
    assert!(final_response(&peer, 17, T).starts_with("SIP/2.0 403"));
}

#[test]
fn conference_escalation_needs_the_mediation_server_registration() {
    let lab = Lab::start();
    let peer = Agent::bind("127.0.0.3:5060");
    let gw1 = Agent::bind("127.0.0.2:5060");
    let _gw2 = Agent::bind("127.0.0.5:5060");
    let esc = |n: u64| {
        invite_text(
            &peer,
            "sip:+14255550199@mediation.lab.example;user=phone",
            "sip:conference@lab.example",
            n,
        )
    };
    peer.send_to(esc(20).as_bytes(), CLOUD_SIDE);
    let r = final_response(&peer, 20, T);
    assert!(r.starts_with("SIP/2.0 404 Not Found\r\n"), "{r}");
    assert!(
        wait_for_log(&lab, "mediation.lab.example is not registered"),
        "the log names the missing registration"
    );
    let (ok, out) = cli(
        &lab,
        &[
            "mediation-server",
            "set",
            "lab-ms1",
            "--fqdn",
            "mediation.lab.example",
            "--access-proxy-external-fqdn",
            "ap.lab.example",
        ],
    );
    assert!(ok, "{out}");
    std::thread::sleep(Duration::from_millis(1200));
    peer.send_to(esc(21).as_bytes(), CLOUD_SIDE);
    let deadline = Instant::now() + T;
    let mut got = false;
    while Instant::now() < deadline && !got {
        got |= wait_invite(&gw1, Duration::from_millis(50), true).is_some()
            || wait_invite(&_gw2, Duration::from_millis(50), true).is_some();
    }
    assert!(got, "the escalation reaches a gateway of site lab");
}

#[test]
fn failover_not_listening_503_silent_and_603() {
    // gw1 over TCP (nobody listens there: connection refused); gw2 over UDP; gw1 first.
    let _lab = Lab::start_with(|c| {
        gw1_first(c)
            .replace(
                "name = \"gw1.lab.example\"\nport = 5060\ntransport = \"udp\"",
                "name = \"gw1.lab.example\"\nport = 5060\ntransport = \"tcp\"",
            )
            .replace("failover_timer_s = 10", "failover_timer_s = 2")
    });
    let peer = Agent::bind("127.0.0.3:5060");
    let gw2 = Agent::bind("127.0.0.5:5060");
    peer_call(&peer, "alice@lab.example", "+14255550199", 30);
    let (inv, from) =
        wait_invite(&gw2, T, true).expect("gw1 refuses the connection: gw2 gets the call");
    gw2.sock
        .send_to(reply(&inv, 200, "OK").as_bytes(), from)
        .unwrap();
    assert!(final_response(&peer, 30, T).starts_with("SIP/2.0 200"));
}

#[test]
fn failover_on_503_and_on_silence_never_on_603() {
    let _lab =
        Lab::start_with(|c| gw1_first(c).replace("failover_timer_s = 10", "failover_timer_s = 2"));
    let peer = Agent::bind("127.0.0.3:5060");
    let gw1 = Agent::bind("127.0.0.2:5060");
    let gw2 = Agent::bind("127.0.0.5:5060");
    // 503 → gw2.
    peer_call(&peer, "alice@lab.example", "+14255550199", 40);
    let (inv, from) = wait_invite(&gw1, T, true).expect("gw1 first");
    gw1.sock
        .send_to(reply(&inv, 503, "Service Unavailable").as_bytes(), from)
        .unwrap();
    let (inv, from) = wait_invite(&gw2, T, true).expect("503 fails over to gw2");
    gw2.sock
        .send_to(reply(&inv, 200, "OK").as_bytes(), from)
        .unwrap();
    assert!(final_response(&peer, 40, T).starts_with("SIP/2.0 200"));
    // Silence → gw2 after the failover timer (2 s).
    peer_call(&peer, "alice@lab.example", "+14255550199", 41);
    let t0 = Instant::now();
    assert!(wait_invite(&gw1, T, true).is_some());
    let (inv, from) = wait_invite(&gw2, Duration::from_secs(5), true).expect("silence fails over");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1800) && waited < Duration::from_secs(4),
        "failover after {waited:?}"
    );
    gw2.sock
        .send_to(reply(&inv, 200, "OK").as_bytes(), from)
        .unwrap();
    let r = final_response(&peer, 41, T);
    assert!(r.starts_with("SIP/2.0 200"), "{r}");
    // 603 → the caller gets 603; gw2 never sees the call.
    while gw2.recv_timeout(Duration::from_millis(100)).is_some() {}
    while gw1.recv_timeout(Duration::from_millis(100)).is_some() {}
    peer_call(&peer, "alice@lab.example", "+14255550199", 42);
    let (inv, from) = wait_invite(&gw1, T, true).expect("gw1 first");
    gw1.sock
        .send_to(reply(&inv, 603, "Decline").as_bytes(), from)
        .unwrap();
    let r = final_response(&peer, 42, T);
    assert!(r.starts_with("SIP/2.0 603"), "{r}");
    assert!(
        wait_invite(&gw2, Duration::from_secs(3), true).is_none(),
        "603 is never retried"
    );
}

#[test]
fn calls_spread_across_gw1_and_gw2_over_1000_calls() {
    let _lab = Lab::start();
    let peer = Agent::bind("127.0.0.3:5060");
    let gws = [Agent::bind("127.0.0.2:5060"), Agent::bind("127.0.0.5:5060")];
    let mut counts = [0u32; 2];
    let total = 1000u64;
    // Each gateway answers 486 (not a failover code): one gateway per call.
    for n in 0..total {
        peer_call(&peer, "alice@lab.example", "+14255550199", 1000 + n);
        let deadline = Instant::now() + T;
        let mut done = false;
        while !done && Instant::now() < deadline {
            for (i, g) in gws.iter().enumerate() {
                if let Some((inv, from)) = wait_invite(g, Duration::from_millis(2), true) {
                    counts[i] += 1;
                    g.sock
                        .send_to(reply(&inv, 486, "Busy Here").as_bytes(), from)
                        .ok();
                    done = true;
                }
            }
        }
        assert!(done, "call {n} reached no gateway");
    }
    eprintln!(
        "spread over {total} calls: gw1 {} / gw2 {}",
        counts[0], counts[1]
    );
    assert_eq!(u64::from(counts[0] + counts[1]), total);
    assert!(
        (450..=550).contains(&counts[0]),
        "equal weights split evenly: {counts:?}"
    );
}

/// An HTTP/1.1 request to the admin listener; returns (status, body).
fn http(method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect("127.0.0.1:8080").expect("admin listener");
    s.set_read_timeout(Some(T)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_owned();
    (status, body)
}

fn metric(name_and_labels: &str) -> Option<String> {
    let (_, text) = http("GET", "/metrics", None, "");
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.split_whitespace().last())
        .map(str::to_owned)
}

#[test]
fn options_health_demotes_a_silent_gateway_and_promotes_it_back() {
    let lab = Lab::start_with(|c| c.replace("options_interval_s = 60", "options_interval_s = 1"));
    let gw1 = Agent::bind("127.0.0.2:5060");
    let gw2 = Agent::bind("127.0.0.5:5060");
    let peer = Agent::bind("127.0.0.3:5060");
    let healthy = "sipedge_target_healthy{target=\"gw1.lab.example\"}";
    // gw2 and the peer answer every OPTIONS; gw1 stays silent.
    let serve = |who: &[&Agent], answer_gw1: bool, t: Duration| -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + t;
        while Instant::now() < deadline {
            for a in who.iter().copied().chain(std::iter::once(&gw1)) {
                if let Some((m, from)) = a.recv_timeout(Duration::from_millis(20)) {
                    let s = String::from_utf8_lossy(&m).into_owned();
                    if s.starts_with("OPTIONS ") {
                        let is_gw1 = std::ptr::eq(a, &gw1);
                        if !is_gw1 || answer_gw1 {
                            a.sock.send_to(reply(&s, 200, "OK").as_bytes(), from).ok();
                        }
                        seen.push(s);
                    }
                }
            }
        }
        seen
    };
    let seen = serve(&[&gw2, &peer], false, Duration::from_millis(5500));
    let opt = seen.first().expect("OPTIONS were sent");
    assert!(
        header(opt, "Contact")
            .is_some_and(|c| c.contains("mediation.lab.example") || c.contains("ap.lab.example")),
        "Contact carries our FQDN: {opt}"
    );
    assert_eq!(
        metric(healthy).as_deref(),
        Some("0"),
        "gw1 demoted; log:\n{}",
        lab.log_text()
    );
    assert_eq!(
        metric("sipedge_target_healthy{target=\"gw2.lab.example\"}").as_deref(),
        Some("1")
    );
    // Demoted means last, not never: route explain through the API shows gw2 first.
    let token = std::fs::read_to_string(lab.dir.path().join("state/admin.token")).unwrap();
    let (st, body) = http(
        "GET",
        "/route/explain?from=alice@lab.example&to=%2B14255550199",
        Some(token.trim()),
        "",
    );
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["targets"][0]["name"], "gw2.lab.example", "{body}");
    assert_eq!(v["targets"][1]["name"], "gw1.lab.example", "{body}");
    // gw1 answers again: promoted.
    serve(&[&gw2, &peer], true, Duration::from_millis(2500));
    assert_eq!(metric(healthy).as_deref(), Some("1"));
    let log = lab.log_text();
    let gw1_lines = |what: &str| {
        log.lines()
            .filter(|l| l.contains(what) && l.contains("gw1.lab.example"))
            .count()
    };
    assert_eq!(
        gw1_lines("demoted (tried last)"),
        1,
        "one log line per change:\n{log}"
    );
    assert_eq!(gw1_lines("promoted"), 1, "{log}");
}

#[test]
fn admin_api_token_and_precise_errors() {
    let lab = Lab::start();
    let token = std::fs::read_to_string(lab.dir.path().join("state/admin.token")).unwrap();
    let token = token.trim();
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(lab.dir.path().join("state/admin.token"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode, 0o600);
    assert_eq!(http("GET", "/users/bob", None, "").0, 401);
    assert_eq!(http("GET", "/users/bob", Some("wrong"), "").0, 401);
    let (st, body) = http("GET", "/users/bob", Some(token), "");
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("InternationalCallsDisallowed"), "{body}");
    let (st, body) = http("PATCH", "/users/bob", Some(token), "{\"line_uri\":\"12\"}");
    assert_eq!(st, 400);
    assert!(body.contains("line_uri"), "{body}");
    let (st, body) = http(
        "PATCH",
        "/users/bob",
        Some(token),
        "{\"enterprise_voise\":true}",
    );
    assert_eq!(st, 400);
    assert!(body.contains("enterprise_voise"), "{body}");
    assert_eq!(http("GET", "/users/nobody", Some(token), "").0, 404);
    let (st, body) = http(
        "POST",
        "/users",
        Some(token),
        "{\"sip_address\":\"frank@lab.example\",\"enterprise_voice\":true,\"hosted_voicemail\":true,\"line_uri\":\"tel:+14255550120\"}",
    );
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("HybridVoice"), "{body}");
    assert_eq!(
        http(
            "POST",
            "/users",
            Some(token),
            "{\"sip_address\":\"frank@lab.example\"}"
        )
        .0,
        409
    );
    let (st, body) = http(
        "PUT",
        "/users/frank/pstn-site",
        Some(token),
        "{\"site\":\"remote\"}",
    );
    assert_eq!(st, 200, "{body}");
    let (_, out) = cli(&lab, &["user", "show", "frank", "--json"]);
    assert!(out.contains("\"HybridPstnSite\": \"remote\""), "{out}");
}

/// Restarts the appliance on the same directory after `kill -9`.
fn kill9_and_restart(lab: &mut Lab) {
    lab.child.kill().unwrap(); // SIGKILL
    lab.child.wait().unwrap();
    lab.child = Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .arg("--config")
        .arg(config_path(lab))
        .arg("run")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(lab.dir.path().join("sipedge2.log")).unwrap())
        .spawn()
        .unwrap();
    let probe = Agent::bind("127.0.0.2:0");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        probe.send_to(
            &common::options("sip:mediation.lab.example", &probe),
            GW_SIDE,
        );
        if probe.recv_timeout(Duration::from_millis(200)).is_some() {
            return;
        }
    }
    panic!("sipedge did not come back");
}

#[test]
fn grant_policy_on_a_running_server_then_kill_9_keeps_it() {
    let mut lab = Lab::start();
    let peer = Agent::bind("127.0.0.3:5060");
    let gw1 = Agent::bind("127.0.0.2:5060");
    let gw2 = Agent::bind("127.0.0.5:5060");
    let reaches_gateway = |n: u64| -> bool {
        peer_call(&peer, "bob@lab.example", "+33144556677", n);
        let deadline = Instant::now() + T;
        while Instant::now() < deadline {
            for g in [&gw1, &gw2] {
                if let Some((inv, from)) = wait_invite(g, Duration::from_millis(20), true) {
                    g.sock
                        .send_to(reply(&inv, 486, "Busy Here").as_bytes(), from)
                        .ok();
                    return true;
                }
            }
            if let Some((m, _)) = peer.recv_timeout(Duration::from_millis(20)) {
                let s = String::from_utf8_lossy(&m);
                if s.starts_with("SIP/2.0 403") && s.contains(&format!("route-{n}@")) {
                    return false;
                }
            }
        }
        panic!("call {n}: neither a gateway INVITE nor a 403");
    };
    assert!(!reaches_gateway(50), "bob may not call France yet");
    let (ok, out) = cli(
        &lab,
        &[
            "user",
            "grant-policy",
            "bob",
            "--policy",
            "InternationalCallsAllowed",
        ],
    );
    assert!(ok, "{out}");
    let granted = Instant::now();
    // Within one second, without restart.
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        reaches_gateway(51),
        "the grant applies within {:?}",
        granted.elapsed()
    );
    assert!(lab.is_running());
    kill9_and_restart(&mut lab);
    assert!(
        reaches_gateway(52),
        "the grant survives kill -9 and restart"
    );
}

/// Waits (up to 2 s) for `needle` in the appliance's log.
fn wait_for_log(lab: &Lab, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if lab.log_text().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
