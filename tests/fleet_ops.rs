//! Out of service without dropping a call, and configuration reload (issue 10), on the real
//! binary over loopback: `maintenance enter` with a call up and RTP flowing (a new call and
//! OPTIONS get 503 with Retry-After, the call keeps its media and ends with its BYE), `exit`
//! takes calls again, the state survives a restart; SIGTERM drains until the last call has
//! ended, or hangs up both legs at `limits.drain_timeout_s`; SIGHUP brings in a new gateway
//! without a restart, and a broken file keeps the running configuration with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

mod common;
#[path = "common/ops_support.rs"]
mod ops_support;

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{header, Agent, Lab};
use ops_support::*;

/// A new call's INVITE from `from` (a gateway's address) to alice's number.
fn invite(from: &str, call_id: &str) -> Vec<u8> {
    format!(
        "INVITE sip:+14255550100@mediation.lab.example;user=phone SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bK-{call_id};rport\r\nMax-Forwards: 70\r\n\
         From: <sip:+14255550199@gw1.lab.example>;tag=new\r\nTo: <sip:+14255550100@lab.example>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:gw@{from}>\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// An OPTIONS keep-alive from the cloud peer to our cloud side.
fn peer_options(n: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:ap.lab.example:5062 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bK-o{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:sip.cloud.lab.example>;tag=o{n}\r\nTo: <sip:ap.lab.example>\r\n\
         Call-ID: opt-{n}@cloud\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(st.success());
}

/// The exit status within `t`, or `None` while it runs.
fn exit_within(child: &mut Child, t: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + t;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `metrics` sample's value.
fn metric(name_and_labels: &str) -> Option<u64> {
    let (_, m) = http_get("/metrics", None);
    m.lines()
        .find_map(|l| l.strip_prefix(&format!("{name_and_labels} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until the appliance's log says `needle` (the core logs when it changes state, before
/// it takes the next message).
fn wait_log(lab: &Lab, needle: &str) {
    assert!(
        eventually(T, || lab.log_text().contains(needle)),
        "no {needle:?} in the log:\n{}",
        lab.log_text()
    );
}

/// A 503 with Retry-After at `agent` for `call_id` (answering OPTIONS on the way).
fn expect_503(agent: &Agent, call_id: &str) -> String {
    let r = expect_where(agent, "503", |m| {
        m.starts_with("SIP/2.0 503") && header(m, "Call-ID") == Some(call_id)
    });
    assert!(header(&r, "Retry-After").is_some(), "{r}");
    r
}

#[test]
fn maintenance_keeps_the_call_refuses_new_ones_and_survives_a_restart() {
    let mut lab = Lab::start();
    let cfg = config_path(&lab);
    let mut call = LabCall::new("fleet-m1@test");
    call.establish(true);
    call.media(20);

    let out = cli(&cfg, &["maintenance", "enter"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("maintenance: on"), "{}", text(&out));
    // The calls in progress, as the core publishes them (every 500 ms).
    assert!(eventually(T, || {
        text(&cli(&cfg, &["maintenance", "status"])).contains("1 calls in progress")
    }));
    // It answered once the core refuses new calls: no wait needed.
    let (s, b) = http_get("/readyz", None);
    assert_eq!(s, 503, "{b}");
    assert!(b.contains("maintenance"), "{b}");
    assert_eq!(metric("sipedge_maintenance"), Some(1));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(lab.dir.path().join("state/maintenance"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // A new call from gw1: one 503 with Retry-After; the cloud peer sees nothing.
    call.gw
        .send_to(&invite("127.0.0.2:5060", "fleet-m2@test"), GW_SIDE);
    expect_503(&call.gw, "fleet-m2@test");
    // The cloud's OPTIONS: 503, so it moves to the next appliance.
    call.peer.send_to(&peer_options("m"), CLOUD_SIDE);
    let r = expect_where(&call.peer, "503 to OPTIONS", |m| {
        m.starts_with("SIP/2.0 503") && m.contains("CSeq: 1 OPTIONS")
    });
    assert!(header(&r, "Retry-After").is_some(), "{r}");
    // The call keeps its media and ends with its BYE.
    call.media(20);
    call.bye();
    assert!(eventually(T, || {
        metric("sipedge_overload_shed_total{reason=\"maintenance\"}").unwrap_or(0) >= 2
    }));
    drop(call);

    // Out of maintenance: calls are taken again.
    let out = cli(&cfg, &["maintenance", "exit"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("maintenance: off"), "{}", text(&out));
    assert_eq!(http_get("/readyz", None).0, 200);
    let mut call = LabCall::new("fleet-m3@test");
    call.establish(true);
    call.media(5);
    call.bye();
    drop(call);

    // In again, then a restart: still in maintenance.
    let out = cli(&cfg, &["maintenance", "enter", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["maintenance"], true);
    let since = v["since"].as_u64().unwrap();
    let st = lab.terminate();
    assert!(st.success(), "{st}");
    let log = std::fs::File::create(lab.dir.path().join("sipedge-2.log")).unwrap();
    lab.child = Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(60), || {
            std::net::TcpStream::connect(ADMIN).is_ok() && http_get("/healthz", None).0 == 200
        }),
        "no admin API after the restart"
    );
    let out = cli(&cfg, &["maintenance", "status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["maintenance"], true, "{v}");
    assert_eq!(v["since"].as_u64(), Some(since));
    assert_eq!(http_get("/readyz", None).0, 503);
    let gw = Agent::bind("127.0.0.2:5060");
    assert!(eventually(Duration::from_secs(10), || {
        gw.send_to(&invite("127.0.0.2:5060", "fleet-m4@test"), GW_SIDE);
        gw.recv_timeout(Duration::from_millis(300))
            .is_some_and(|(m, _)| String::from_utf8_lossy(&m).starts_with("SIP/2.0 503"))
    }));
    let out = cli(&cfg, &["maintenance", "exit"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!lab.dir.path().join("state/maintenance").exists());
}

#[test]
fn sigterm_refuses_new_calls_and_exits_after_the_last_bye() {
    let mut lab = Lab::start();
    let mut call = LabCall::new("fleet-t1@test");
    call.establish(true);
    call.media(10);
    signal(&lab.child, "TERM");
    wait_log(&lab, "draining: new calls refused");
    call.gw
        .send_to(&invite("127.0.0.2:5060", "fleet-t2@test"), GW_SIDE);
    expect_503(&call.gw, "fleet-t2@test");
    assert_eq!(http_get("/readyz", None).0, 503);
    // The call goes on: media both ways, the process waits.
    call.media(20);
    assert!(
        exit_within(&mut lab.child, Duration::from_secs(1)).is_none(),
        "exited with a call up"
    );
    assert!(eventually(T, || {
        metric("sipedge_overload_shed_total{reason=\"draining\"}") == Some(1)
    }));
    call.bye();
    let st = exit_within(&mut lab.child, Duration::from_secs(10)).expect("no exit after the BYE");
    assert!(st.success(), "{st}");
    assert!(
        lab.log_text().contains("drained: the last call has ended"),
        "{}",
        lab.log_text()
    );
}

#[test]
fn sigterm_drain_timeout_hangs_up_both_legs_then_exits() {
    let mut lab = Lab::start_with(|t| t.replace("drain_timeout_s = 32", "drain_timeout_s = 2"));
    let mut call = LabCall::new("fleet-d1@test");
    call.establish(true);
    call.media(10);
    let t0 = Instant::now();
    signal(&lab.child, "TERM");
    let to_gw = expect_where(&call.gw, "BYE at gw1", |m| m.starts_with("BYE "));
    let to_peer = expect_where(&call.peer, "BYE at the cloud peer", |m| {
        m.starts_with("BYE ")
    });
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "BYE before the drain timeout"
    );
    for (bye, contact) in [
        (&to_gw, "sip:gw@127.0.0.2:5060"),
        (&to_peer, "sip:peer@127.0.0.3:5060"),
    ] {
        assert_eq!(header(bye, "Call-ID"), Some("fleet-d1@test"), "{bye}");
        assert!(
            header(bye, "Reason").is_some_and(|r| r.contains("cause=503")),
            "{bye}"
        );
        assert!(bye.starts_with(&format!("BYE {contact} ")), "{bye}");
    }
    // Toward gw1 as the callee, with a CSeq above the peer's; toward the peer above gw1's 1.
    assert_eq!(header(&to_peer, "CSeq"), Some("2 BYE"), "{to_peer}");
    assert!(
        header(&to_gw, "From").unwrap().contains("tag=peertag"),
        "{to_gw}"
    );
    call.gw.send_to(
        &response(&to_gw, "200 OK", "x", "sip:gw@127.0.0.2:5060", None),
        GW_SIDE,
    );
    call.peer.send_to(
        &response(&to_peer, "200 OK", "x", "sip:peer@127.0.0.3:5060", None),
        CLOUD_SIDE,
    );
    let st = exit_within(&mut lab.child, Duration::from_secs(10)).expect("no exit after the BYEs");
    assert!(st.success(), "{st}");
    let log = lab.log_text();
    assert!(log.contains("drain timeout: BYE to both legs"), "{log}");
}

#[test]
fn a_second_sigterm_stops_at_once() {
    let mut lab = Lab::start();
    let mut call = LabCall::new("fleet-s1@test");
    call.establish(true);
    signal(&lab.child, "TERM");
    wait_log(&lab, "draining: new calls refused");
    call.gw
        .send_to(&invite("127.0.0.2:5060", "fleet-s2@test"), GW_SIDE);
    expect_503(&call.gw, "fleet-s2@test");
    signal(&lab.child, "TERM");
    let st = exit_within(&mut lab.child, Duration::from_secs(5)).expect("no exit");
    assert!(st.success(), "{st}");
}

#[test]
fn maintenance_and_reload_fail_with_a_reason_without_a_running_appliance() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = lab_config_in(tmp.path());
    for args in [
        &["maintenance", "status"][..],
        &["maintenance", "enter"],
        &["reload"],
    ] {
        let out = cli(&cfg, args);
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("admin token") && text(&out).contains("has the appliance run"),
            "{args:?}: {}",
            text(&out)
        );
    }
    assert!(!tmp.path().join("state/maintenance").exists());
}

const GW3: &str = "127.0.0.8:5060";

fn add_gw3(text: &str) -> String {
    text.replace(
        "[[gateways]]\nname = \"gw1.remote.example\"",
        "[[gateways]]\nname = \"gw3.lab.example\"\nport = 5060\ntransport = \"udp\"\nsite = \"lab\"\n\n\
         [[gateways]]\nname = \"gw1.remote.example\"",
    )
    .replace(
        "\"gw2.lab.example\" = \"127.0.0.5\"",
        "\"gw2.lab.example\" = \"127.0.0.5\"\n\"gw3.lab.example\" = \"127.0.0.8\"",
    )
}

/// Writes `text` to the configuration without changing its modification time (so only the
/// signal, not the file watch, reloads it).
fn write_keeping_mtime(path: &std::path::Path, text: &str) {
    let before = std::fs::metadata(path).unwrap().modified().unwrap();
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(before)
        .unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The last reload's report, once it matches `pred`.
fn reload_report(token: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let mut v = serde_json::Value::Null;
    assert!(
        eventually(Duration::from_secs(10), || {
            v = serde_json::from_str(&http_get("/config/reload", Some(token)).1)
                .unwrap_or_default();
            pred(&v)
        }),
        "reload report: {v}"
    );
    v
}

#[test]
fn sighup_adds_a_gateway_without_restart_and_a_broken_file_keeps_the_running_one() {
    let lab = Lab::start();
    let cfg = config_path(&lab);
    let token = token(&lab);
    let gw3 = Agent::bind(GW3);
    let peer = Agent::bind("127.0.0.3:5060");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&http_get("/config/reload", Some(&token)).1)
            .unwrap()["result"],
        "none"
    );
    assert_eq!(http_get("/config/reload", None).0, 401);
    // gw3 is no peer yet: a stateless 403.
    gw3.send_to(&invite(GW3, "fleet-h1@test"), GW_SIDE);
    expect_where(&gw3, "403 to an unknown gateway", |m| {
        m.starts_with("SIP/2.0 403")
    });

    // gw3 added, the listener moved (that needs a restart): SIGHUP.
    let original = std::fs::read_to_string(&cfg).unwrap();
    let added = add_gw3(&original);
    write_keeping_mtime(
        &cfg,
        &added.replace("tcp = \"127.0.0.1:5068\"", "tcp = \"127.0.0.1:5070\""),
    );
    signal(&lab.child, "HUP");
    let v = reload_report(&token, |v| v["result"] == "applied");
    assert_eq!(v["trigger"], "sighup", "{v}");
    assert_eq!(
        v["needs_restart"],
        serde_json::json!(["listen.gateway"]),
        "{v}"
    );
    assert!(lab
        .log_text()
        .contains("these settings need a restart; their running values stay"));
    // gw3's call is routed to alice through the cloud peer.
    assert!(eventually(T, || {
        gw3.send_to(&invite(GW3, "fleet-h2@test"), GW_SIDE);
        gw3.recv_timeout(Duration::from_millis(500))
            .is_some_and(|(m, _)| String::from_utf8_lossy(&m).starts_with("SIP/2.0 100"))
    }));
    let fwd = expect_where(&peer, "gw3's INVITE at the cloud peer", |m| {
        m.starts_with("INVITE sip:alice@lab.example") && m.contains("fleet-h2@test")
    });
    peer.send_to(
        &response(&fwd, "486 Busy Here", "p", "sip:peer@127.0.0.3:5060", None),
        CLOUD_SIDE,
    );
    expect_where(&gw3, "486 at gw3", |m| m.starts_with("SIP/2.0 486"));
    // The listener did not move: the running value stays.
    let (s, _) = http_get("/healthz", None);
    assert_eq!(s, 200);
    assert!(std::net::TcpStream::connect("127.0.0.1:5068").is_ok());

    // A broken file (seen by the file watch): refused with the reason, the running one stays.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(
        &cfg,
        added.replace("max_handshakes = 256", "max_handshakes = \"many\""),
    )
    .unwrap();
    let v = reload_report(&token, |v| v["result"] == "failed");
    assert_eq!(v["trigger"], "file", "{v}");
    let why = v["error"].as_str().unwrap();
    assert!(why.contains("tls.max_handshakes"), "{why}");
    assert!(lab.log_text().contains("configuration reload refused"));
    assert_eq!(
        metric("sipedge_config_reloads_total{result=\"failed\"}"),
        Some(1)
    );
    assert_eq!(
        metric("sipedge_config_reloads_total{result=\"ok\"}"),
        Some(1)
    );
    let out = cli(&cfg, &["reload"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("tls.max_handshakes"), "{}", text(&out));
    // gw3 still a gateway: the old configuration is in force.
    gw3.send_to(&invite(GW3, "fleet-h3@test"), GW_SIDE);
    expect_where(&gw3, "100 to gw3", |m| {
        m.starts_with("SIP/2.0 100") && m.contains("fleet-h3@test")
    });
    let fwd = expect_where(&peer, "INVITE at the peer", |m| m.contains("fleet-h3@test"));
    peer.send_to(
        &response(&fwd, "486 Busy Here", "p", "sip:peer@127.0.0.3:5060", None),
        CLOUD_SIDE,
    );

    // The file fixed, without gw3, through the CLI: gw3 is refused again.
    std::fs::write(&cfg, &original).unwrap();
    let out = cli(&cfg, &["reload"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("reload: applied") || text(&out).contains("reload: unchanged"),
        "{}",
        text(&out)
    );
    // (Unknown senders get one 403 per 10 s.)
    assert!(eventually(Duration::from_secs(15), || {
        gw3.send_to(&invite(GW3, "fleet-h4@test"), GW_SIDE);
        gw3.recv_timeout(Duration::from_millis(500))
            .is_some_and(|(m, _)| String::from_utf8_lossy(&m).starts_with("SIP/2.0 403"))
    }));
}
