//! Operations (issue 12) end to end: `plan dns`/`plan firewall` on the lab, `doctor` against
//! OPTIONS responders playing the lab's peers (and failing by name when gw2 is silent), call
//! records written by the writer and read by `cdr show`/`cdr tail`, the admin API's health,
//! readiness, metrics, status data and TLS refusals on a running appliance, systemd
//! notifications (READY, WATCHDOG, STOPPING), the unit file through `systemd-analyze verify`,
//! and one call with RTP leaving its record, metrics and a log without escape codes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

mod common;
#[path = "common/ops_support.rs"]
mod ops_support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{Lab, MachineLock};
use ops_support::*;
use sipedge::cdr::writer::{cdr_dir, DailyFiles, Writer};
use sipedge::cdr::{CallRecord, Direction, EndedBy, LegRecord, WallClock};

#[test]
fn plan_dns_and_firewall_cover_the_lab() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = lab_config_in(tmp.path());
    let dns = cli(&cfg, &["plan", "dns"]);
    assert!(dns.status.success(), "{}", text(&dns));
    let t = text(&dns);
    for needle in [
        "_sip._tls.lab.example",
        "_sipfederationtls._tcp.lab.example",
        "ap.lab.example",
        "mediation.lab.example",
        "0 0 5061 ap.lab.example.",
        "ap.remote.example",
    ] {
        assert!(t.contains(needle), "plan dns lacks {needle}:\n{t}");
    }
    let fw = cli(&cfg, &["plan", "firewall"]);
    assert!(fw.status.success(), "{}", text(&fw));
    let t = text(&fw);
    for needle in [
        "5061",
        "5067",
        "5068",
        "5062",
        "49152-57500",
        "2087 concurrent calls",
        "8080",
    ] {
        assert!(t.contains(needle), "plan firewall lacks {needle}:\n{t}");
    }
    let j = cli(&cfg, &["plan", "dns", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert!(v["records"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "_sip._tls.lab.example" && r["port"] == 5061));
    let j = cli(&cfg, &["plan", "firewall", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert_eq!(v["media"]["port_min"], 49152);
    assert_eq!(v["media"]["port_max"], 57500);
    assert!(v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["side"] == "gateway" && r["transport"] == "tls" && r["local_ports"] == "5067"));
    // A bad command line is refused with a reason, not a panic.
    let bad = cli(&cfg, &["plan", "nothing"]);
    assert!(!bad.status.success());
}

#[test]
fn doctor_passes_with_every_peer_answering_and_names_gw2_when_silent() {
    let _lock = MachineLock::acquire();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = lab_config_in(tmp.path());
    let mut peers = lab_peers();
    let ok = cli(&cfg, &["doctor", "--timeout", "2"]);
    let t = text(&ok);
    assert!(
        ok.status.success(),
        "doctor failed with every peer up:\n{t}"
    );
    for needle in [
        "ok    options gateway gw1.lab.example",
        "ok    options gateway gw2.lab.example",
        "ok    options cloud peer sip.cloud.lab.example",
        "ok    options mediation server mediation.remote.example",
        "ok    resolve ap.lab.example",
        "ok    clock",
        "ok    port gateway udp 127.0.0.1:5068",
        "ok    ports media 127.0.0.1:49152-57500",
        "doctor: all",
    ] {
        assert!(t.contains(needle), "{needle} missing:\n{t}");
    }
    // gw2 goes silent.
    peers.remove(1);
    let bad = cli(&cfg, &["doctor", "--timeout", "2"]);
    let t = text(&bad);
    assert!(!bad.status.success(), "doctor passed with gw2 silent:\n{t}");
    assert!(
        t.contains("FAIL  options gateway gw2.lab.example: 127.0.0.5:5060 udp: no answer"),
        "{t}"
    );
    let last = String::from_utf8_lossy(&bad.stderr);
    assert!(
        last.contains("1 of") && last.contains("failed: options gateway gw2.lab.example"),
        "{last}"
    );
    assert!(t.contains("ok    options gateway gw1.lab.example"), "{t}");
    // JSON: one object per check.
    let j = cli(&cfg, &["doctor", "--timeout", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "options gateway gw2.lab.example" && c["verdict"] == "fail"));
}

fn record(n: u32, start: Instant, answered: bool) -> CallRecord {
    let leg = LegRecord {
        rx_packets: 500,
        rx_bytes: 86_000,
        tx_packets: 499,
        tx_bytes: 85_828,
        lost: 1,
        late: 0,
        dropped: 0,
        srtp: false,
    };
    CallRecord {
        call_id: format!("rec-{n}@test"),
        direction: Direction::Inbound,
        caller: "sip:+14255550199@gw1.lab.example".into(),
        callee: "sip:+14255550100@mediation.lab.example;user=phone".into(),
        user: Some("alice@lab.example".into()),
        site: "lab".into(),
        gateway: Some("gw1.lab.example".into()),
        cloud_peer: "sip.cloud.lab.example".into(),
        start,
        ringing: Some(start + Duration::from_millis(300)),
        answer: answered.then(|| start + Duration::from_secs(1)),
        end: start + Duration::from_secs(11),
        status: if answered { 200 } else { 486 },
        reason: "test".into(),
        ended_by: if answered {
            EndedBy::Callee
        } else {
            EndedBy::Failure
        },
        legs: answered.then_some([leg, LegRecord { srtp: true, ..leg }]),
    }
}

#[test]
fn cdr_show_and_tail_read_what_the_writer_appends() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = lab_config_in(tmp.path());
    let state = tmp.path().join("state");
    let i0 = Instant::now();
    let mut w = Writer::new(
        WallClock::new(i0, SystemTime::now()),
        vec![Box::new(DailyFiles::new(cdr_dir(&state)))],
    );
    for n in 0..3 {
        w.write(&record(n, i0, n != 1));
    }
    w.flush();

    let out = cli(&cfg, &["cdr", "show", "--last", "2", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let a = v.as_array().unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0]["call_id"], "rec-1@test");
    assert_eq!(a[0]["outcome"], "busy");
    assert_eq!(a[1]["call_id"], "rec-2@test");
    assert_eq!(a[1]["duration_s"], 10.0);
    assert_eq!(a[1]["legs"]["gateway"]["rx_packets"], 500);
    assert_eq!(a[1]["legs"]["cloud"]["srtp"], true);
    assert!(a[1]["start"].as_str().unwrap().ends_with('Z'));

    let out = cli(&cfg, &["cdr", "show", "--last", "5"]);
    let t = text(&out);
    assert_eq!(t.lines().count(), 3, "{t}");
    assert!(t.contains("answered") && t.contains("rec-0@test") && t.contains("busy"));

    let bad = cli(&cfg, &["cdr", "show", "--last", "0"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("--last"), "{}", text(&bad));

    // tail follows what is appended.
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .arg("--config")
        .arg(&cfg)
        .args(["cdr", "tail", "--last", "1", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("rec-2@test"), "{first}");
    std::thread::sleep(Duration::from_millis(400));
    w.write(&record(7, i0, true));
    w.flush();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(lines.next().map(|l| l.unwrap_or_default()));
    });
    let next = rx.recv_timeout(Duration::from_secs(5));
    let _ = child.kill();
    let _ = child.wait();
    let next = next.expect("cdr tail printed the new record").unwrap();
    assert!(next.contains("rec-7@test"), "{next}");
}

#[test]
fn health_readiness_metrics_status_data_refusals_and_inbound_explain() {
    let lab = Lab::start();
    let token = token(&lab);
    let (s, b) = http_get("/healthz", None);
    assert_eq!(s, 200, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["status"], "alive");
    assert_eq!(v["pid"], lab.child.id());
    let (s, b) = http_get("/readyz", None);
    assert_eq!((s, b.as_str()), (200, "{\"status\":\"ready\"}"));

    // A TLS handshake refused: garbage on the gateway side's TLS port.
    {
        let mut c = TcpStream::connect("127.0.0.1:5067").unwrap();
        c.write_all(b"OPTIONS sip:x SIP/2.0\r\n\r\n").unwrap();
        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
        let mut sink = [0u8; 64];
        let _ = std::io::Read::read(&mut c, &mut sink);
    }
    assert_eq!(http_get("/tls/refusals", None).0, 401);
    assert!(eventually(T, || {
        let (_, b) = http_get("/tls/refusals", Some(&token));
        let v: serde_json::Value = serde_json::from_str(&b).unwrap_or_default();
        v.as_array().is_some_and(|a| {
            a.iter().any(|r| {
                r["side"] == "gateway"
                    && r["remote"].as_str().unwrap_or("").starts_with("127.0.0.1:")
            })
        })
    }));

    // A directory change made by the CLI is counted.
    let out = cli(
        &config_path(&lab),
        &["user", "set", "bob", "--hosted-voicemail", "true"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(eventually(T, || {
        http_get("/metrics", None)
            .1
            .lines()
            .any(|l| l.starts_with("sipedge_directory_changes_total ") && !l.ends_with(" 0"))
    }));

    let (s, m) = http_get("/metrics", None);
    assert_eq!(s, 200);
    for family in [
        "sipedge_build_info",
        "sipedge_ready",
        "sipedge_active_calls",
        "sipedge_calls_ended_total",
        "sipedge_call_setup_seconds",
        "sipedge_media_packets_total",
        "sipedge_media_bytes_total",
        "sipedge_media_dropped_packets_total",
        "sipedge_media_ports_free",
        "sipedge_tls_handshakes_total",
        "sipedge_open_connections",
        "sipedge_certificate_expiry_timestamp_seconds",
        "sipedge_directory_changes_total",
        "sipedge_requests_total",
        "sipedge_target_healthy",
    ] {
        assert!(
            m.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{m}"
        );
    }
    assert!(m.contains(&format!(
        "sipedge_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    assert!(m.contains("sipedge_ready 1\n"));
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for cert in ["gateway_side", "cloud_side", "ca", "crl"] {
        let line = m
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "sipedge_certificate_expiry_timestamp_seconds{{certificate=\"{cert}\"}}"
                ))
            })
            .unwrap_or_else(|| panic!("no expiry for {cert}:\n{m}"));
        let t: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(t > now, "{line}");
    }
    assert!(m.lines().any(|l| l.starts_with(
        "sipedge_tls_handshakes_total{side=\"gateway\",direction=\"inbound\",result=\"refused\""
    ) && !l.ends_with(" 0")));

    // Status data: only with the token; the page itself carries no data.
    assert_eq!(http_get("/status.json", None).0, 401);
    assert_eq!(http_get("/status.json", Some("wrong")).0, 401);
    let (s, b) = http_get("/status.json", Some(&token));
    assert_eq!(s, 200, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["appliance"]["site"], "lab");
    assert_eq!(v["appliance"]["ready"], true);
    let names: Vec<&str> = v["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"gw1.lab.example") && names.contains(&"gw2.lab.example"));
    assert!(!v["tls_refusals"].as_array().unwrap().is_empty());
    let (s, page) = http_get("/status", None);
    assert_eq!(s, 200);
    assert!(page.contains("<script src=\"/status.js\""));
    assert!(!page.contains("gw1") && !page.contains("lab.example"));

    // route explain inbound, through the API and the CLI.
    let (s, b) = http_get(
        "/route/explain?from=gw1.lab.example&to=%2B14255550100",
        Some(&token),
    );
    assert_eq!(s, 200, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["direction"], "inbound");
    assert_eq!(v["request_uri"], "sip:alice@lab.example");
    let out = cli(
        &config_path(&lab),
        &[
            "route",
            "explain",
            "--from",
            "gw2.lab.example",
            "--to",
            "+14255550101",
        ],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("direction: inbound") && t.contains("bob@lab.example"),
        "{t}"
    );

    // The appliance's own ports are its own for doctor.
    let out = cli(&config_path(&lab), &["doctor", "--timeout", "1"]);
    let t = text(&out);
    assert!(
        t.contains("ok    port gateway udp 127.0.0.1:5068: held by the running appliance"),
        "{t}"
    );
    assert!(
        t.contains("ok    port admin 127.0.0.1:8080: held by the running appliance"),
        "{t}"
    );

    // Logs go to a file: no colour.
    assert!(
        !lab.log_text().contains('\u{1b}'),
        "escape codes in the log"
    );
}

#[test]
fn systemd_notifications_ready_watchdog_and_stopping() {
    let _lock = MachineLock::acquire();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = lab_config_in(tmp.path());
    let sock_path = tmp.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let log = std::fs::File::create(tmp.path().join("sipedge.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "2000000")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    let mut wait_for = |want: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                    seen.push(m.clone());
                    if m.contains(want) {
                        return m;
                    }
                }
                Err(e) => panic!("no {want} (seen {seen:?}): {e}"),
            }
        }
        panic!("no {want} (seen {seen:?})");
    };
    let ready = wait_for("READY=1");
    assert!(ready.contains("STATUS=serving site lab"), "{ready}");
    assert_eq!(http_get("/readyz", None).0, 200);
    let t0 = Instant::now();
    wait_for("WATCHDOG=1");
    wait_for("WATCHDOG=1");
    assert!(t0.elapsed() < Duration::from_secs(5));
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    wait_for("STOPPING=1");
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            assert!(st.success(), "exit {st}");
            break;
        }
        assert!(Instant::now() < deadline, "sipedge did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd/sipedge.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for needle in [
        "Type=notify",
        "WatchdogSec=",
        "User=sipedge",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "StateDirectory=sipedge",
        "Restart=on-failure",
    ] {
        assert!(text.contains(needle), "{needle} missing from the unit");
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        common::skip_without("systemd-analyze", "apt-get install systemd");
        return;
    }
    // Verified as installed, with the binary where the unit expects it (this build's).
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("sipedge.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/sipedge", env!("CARGO_BIN_EXE_sipedge")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let said = ops_support::text(&out);
    assert!(
        out.status.success(),
        "systemd-analyze verify refused the unit:\n{said}"
    );
    assert!(
        !said.contains("sipedge.service"),
        "systemd-analyze verify warned about the unit:\n{said}"
    );
}

#[test]
fn one_call_with_rtp_leaves_a_record_metrics_and_a_clean_log() {
    let lab = Lab::start();
    let mut call = LabCall::new("ops-call-1@test");
    call.establish(true);
    call.media(50);
    std::thread::sleep(Duration::from_millis(300));
    call.bye();

    let cfg = config_path(&lab);
    let mut shown = serde_json::Value::Null;
    assert!(
        eventually(T, || {
            let out = cli(&cfg, &["cdr", "show", "--last", "1", "--json"]);
            shown = serde_json::from_slice(&out.stdout).unwrap_or_default();
            shown[0]["call_id"] == "ops-call-1@test"
        }),
        "no call record: {shown}"
    );
    let r = &shown[0];
    assert_eq!(r["direction"], "inbound");
    assert_eq!(r["outcome"], "answered");
    assert_eq!(r["status"], 200);
    assert!(r["duration_s"].as_f64().unwrap() > 0.2, "{r}");
    assert!(r["setup_s"].as_f64().is_some(), "{r}");
    for leg in ["gateway", "cloud"] {
        assert!(r["legs"][leg]["rx_packets"].as_u64().unwrap() >= 50, "{r}");
        assert!(r["legs"][leg]["tx_packets"].as_u64().unwrap() >= 50, "{r}");
    }

    let (_, m) = http_get("/metrics", None);
    assert!(m.contains(
        "sipedge_calls_ended_total{direction=\"inbound\",site=\"lab\",gateway=\"gw1.lab.example\",outcome=\"answered\"} 1\n"
    ), "{m}");
    assert!(
        m.contains("sipedge_call_setup_seconds_count{direction=\"inbound\"} 1\n"),
        "{m}"
    );
    // The core publishes its counters every 500 ms: the media totals follow shortly.
    let gateway_rx = |m: &str| -> u64 {
        m.lines()
            .filter(|l| {
                l.starts_with("sipedge_media_packets_total{leg=\"gateway\",direction=\"rx\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let mut m = m;
    assert!(
        eventually(T, || {
            m = http_get("/metrics", None).1;
            gateway_rx(&m) >= 50
        }),
        "{m}"
    );
    let (_, h) = http_get("/healthz", None);
    assert!(h.contains("alive"));
    assert_eq!(http_get("/readyz", None).0, 200);

    let log = lab.log_text();
    assert!(!log.contains('\u{1b}'), "escape codes in the log");
    assert!(
        log.lines().any(|l| l.contains("call ended")
            && l.contains("answered")
            && l.contains("ops-call-1@test")),
        "no call line with its outcome:\n{log}"
    );
}

#[test]
fn doctor_speaks_tls_with_our_certificate() {
    // The cloud peer is the appliance's own TLS listener: our cloud-side certificate must be
    // accepted as the client's (its name is the peer name) and the server's verified by name.
    let lab = Lab::start_with(|t| {
        t.replace(
            "fqdn = \"sip.cloud.lab.example\"\nport = 5060\ntransport = \"udp\"",
            "fqdn = \"ap.lab.example\"\nport = 5061\ntransport = \"tls\"",
        )
    });
    let out = cli(&config_path(&lab), &["doctor", "--timeout", "3"]);
    let t = text(&out);
    assert!(
        t.contains("ok    options cloud peer ap.lab.example: 127.0.0.1:5061 tls: answered 200"),
        "{t}"
    );
    assert!(t.contains("ok    certificate cloud side:"), "{t}");
    assert!(t.contains("ok    certificate ca:"), "{t}");
}
