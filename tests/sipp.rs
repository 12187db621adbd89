//! Interop with sipp: real calls through the appliance on the lab topology.
//!
//! Gateway → cloud: sipp as gw1 (127.0.0.2:5060) calls `+14255550100@mediation.lab.example`
//! on 127.0.0.1:5068; sipp as the cloud peer (127.0.0.3:5060) answers. Cloud → gateway: sipp
//! as the cloud peer calls via 127.0.0.1:5062; gw1 and gw2 (127.0.0.2 / 127.0.0.5) answer.
//! Each load run is 1,000 calls at 100 calls/s and must end with 0 failed calls.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{sipp_available, sipp_dir, Lab, Sipp};

#[derive(Clone, Copy)]
struct Run<'a> {
    transport: &'a str,
    uac: &'a str,
    uas: &'a str,
    calls: u32,
    rate: u32,
}

fn scenario(name: &str) -> String {
    sipp_dir().join(name).to_string_lossy().into_owned()
}

/// Gateway (gw1) calls through 5068 to the cloud peer.
fn gateway_to_cloud(lab: &Lab, r: Run<'_>) {
    let _ = lab;
    let uas_xml = scenario(r.uas);
    let mut uas = Sipp::spawn(
        "cloud peer",
        &[
            "-sf",
            &uas_xml,
            "-i",
            "127.0.0.3",
            "-p",
            "5060",
            "-t",
            r.transport,
            "-nostdin",
            "-trace_err",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let uac_xml = scenario(r.uac);
    let (calls, rate) = (r.calls.to_string(), r.rate.to_string());
    let mut uac = Sipp::spawn(
        "gw1",
        &[
            "-sf",
            &uac_xml,
            "-i",
            "127.0.0.2",
            "-p",
            "5060",
            "-t",
            r.transport,
            "-s",
            "+14255550100",
            "-set",
            "domain",
            "mediation.lab.example",
            "-r",
            &rate,
            "-m",
            &calls,
            "-l",
            "300",
            "-recv_timeout",
            "15000",
            "-timeout",
            "90",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
            "127.0.0.1:5068",
        ],
    );
    let code = uac.wait(Duration::from_secs(120));
    assert_eq!(
        code,
        0,
        "gateway→cloud {} over {}: sipp reported failed calls\nuac: {}\nuas: {}\nlog tail:\n{}",
        r.uac,
        r.transport,
        uac.errors(),
        uas.errors(),
        tail(&lab.log_text())
    );
    let _ = uas.child.kill();
}

/// The cloud peer calls through 5062 to the gateways of site lab (gw1 and gw2 both answer).
fn cloud_to_gateway(lab: &Lab, r: Run<'_>) {
    let uas_xml = scenario(r.uas);
    let mut gw1 = Sipp::spawn(
        "gw1",
        &[
            "-sf",
            &uas_xml,
            "-i",
            "127.0.0.2",
            "-p",
            "5060",
            "-t",
            r.transport,
            "-nostdin",
            "-trace_err",
        ],
    );
    let mut gw2 = Sipp::spawn(
        "gw2",
        &[
            "-sf",
            &uas_xml,
            "-i",
            "127.0.0.5",
            "-p",
            "5060",
            "-t",
            r.transport,
            "-nostdin",
            "-trace_err",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let uac_xml = scenario(r.uac);
    let (calls, rate) = (r.calls.to_string(), r.rate.to_string());
    let mut uac = Sipp::spawn(
        "cloud peer",
        &[
            "-sf",
            &uac_xml,
            "-i",
            "127.0.0.3",
            "-p",
            "5060",
            "-t",
            r.transport,
            "-s",
            "+33144556677",
            "-set",
            "domain",
            "ap.lab.example",
            "-r",
            &rate,
            "-m",
            &calls,
            "-l",
            "300",
            "-recv_timeout",
            "15000",
            "-timeout",
            "90",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
            "127.0.0.1:5062",
        ],
    );
    let code = uac.wait(Duration::from_secs(120));
    assert_eq!(code, 0, "cloud→gateway {} over {}: sipp reported failed calls\nuac: {}\ngw1: {}\ngw2: {}\nlog tail:\n{}",
        r.uac, r.transport, uac.errors(), gw1.errors(), gw2.errors(), tail(&lab.log_text()));
    let _ = gw1.child.kill();
    let _ = gw2.child.kill();
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The lab with the cloud peer and the gateways reached over TCP (transport is per trunk).
fn tcp_everywhere(cfg: String) -> String {
    cfg.replace("transport = \"udp\"", "transport = \"tcp\"")
}

fn load(transport: &str) -> Run<'_> {
    Run {
        transport,
        uac: "uac.xml",
        uas: "uas.xml",
        calls: 1000,
        rate: 100,
    }
}

#[test]
fn udp_gateway_to_cloud_1000_calls() {
    if !sipp_available() {
        return;
    }
    let lab = Lab::start();
    gateway_to_cloud(&lab, load("u1"));
}

#[test]
fn tcp_gateway_to_cloud_1000_calls() {
    if !sipp_available() {
        return;
    }
    let lab = Lab::start_with(tcp_everywhere);
    gateway_to_cloud(&lab, load("t1"));
}

#[test]
fn udp_cloud_to_gateway_1000_calls() {
    if !sipp_available() {
        return;
    }
    let lab = Lab::start();
    cloud_to_gateway(&lab, load("u1"));
}

#[test]
fn tcp_cloud_to_gateway_1000_calls() {
    if !sipp_available() {
        return;
    }
    let lab = Lab::start_with(tcp_everywhere);
    cloud_to_gateway(&lab, load("t1"));
}

/// The lab for a sipp transport: UDP as shipped, or every trunk over TCP for `t1`.
fn lab_for(transport: &str) -> Lab {
    if transport == "t1" {
        Lab::start_with(tcp_everywhere)
    } else {
        Lab::start()
    }
}

/// A short scenario pair, gateway→cloud and cloud→gateway, over UDP and over TCP.
fn both_ways_both_transports(uac: &str, uas: &str) {
    for transport in ["u1", "t1"] {
        let lab = lab_for(transport);
        let run = Run {
            transport,
            uac,
            uas,
            calls: 20,
            rate: 10,
        };
        gateway_to_cloud(&lab, run);
        cloud_to_gateway(&lab, run);
    }
}

#[test]
fn cancel_before_answer_propagates() {
    if !sipp_available() {
        return;
    }
    both_ways_both_transports("uac_cancel.xml", "uas_cancel.xml");
}

#[test]
fn busy_486_propagates() {
    if !sipp_available() {
        return;
    }
    both_ways_both_transports("uac_busy.xml", "uas_busy.xml");
}
