//! Interop with sipp through the media relay: a sipp gateway (gw1, 127.0.0.2) plays G.711 RTP
//! from a pcap (`<exec play_pcap_audio>`, SIPp 3.6.1 built with PCAP) toward the address in the
//! answer — the appliance's relay — and a sipp cloud peer (127.0.0.3) with `-rtp_echo` sends it
//! back. 50 calls at once; the relay's per-call counters (the "media session released" log
//! lines) count the packets in both directions.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{sipp_available, sipp_dir, Lab, Sipp};

/// RTP packets per call in the pcap (20 ms each).
const PACKETS: u16 = 100;
const CALLS: usize = 50;

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A classic pcap (Ethernet) of `n` G.711 A-law RTP packets, 20 ms apart.
fn g711a_pcap(n: u16) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
    for i in 0..n {
        let mut rtp = vec![0x80, 8];
        rtp.extend_from_slice(&i.to_be_bytes());
        rtp.extend_from_slice(&(u32::from(i) * 160).to_be_bytes());
        rtp.extend_from_slice(&0x5150_0001u32.to_be_bytes());
        rtp.extend((0..160u16).map(|k| (k as u8) ^ 0xd5));
        let udp_len = 8 + rtp.len() as u16;
        let mut udp = Vec::new();
        udp.extend_from_slice(&6000u16.to_be_bytes());
        udp.extend_from_slice(&6002u16.to_be_bytes());
        udp.extend_from_slice(&udp_len.to_be_bytes());
        udp.extend_from_slice(&0u16.to_be_bytes());
        udp.extend_from_slice(&rtp);
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&(20 + udp_len).to_be_bytes());
        ip.extend_from_slice(&i.to_be_bytes());
        ip.extend_from_slice(&[0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        let c = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut frame = vec![0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 6, 0x08, 0x00];
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&udp);
        let usec = u32::from(i) * 20_000;
        out.extend_from_slice(&(usec / 1_000_000).to_le_bytes());
        out.extend_from_slice(&(usec % 1_000_000).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    out
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

fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.trim_matches('"').parse().ok())
}

#[test]
fn sipp_gateway_streams_rtp_through_the_relay_to_an_echoing_cloud_peer_50_calls() {
    if !sipp_available() {
        return;
    }
    let lab = Lab::start();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("g711a.pcap"), g711a_pcap(PACKETS)).unwrap();
    let uas_xml = sipp_dir().join("uas_rtp.xml");
    let uac_xml = sipp_dir().join("uac_rtp.xml");
    let mut peer = Sipp::spawn(
        "cloud peer",
        &[
            "-sf",
            uas_xml.to_str().unwrap(),
            "-i",
            "127.0.0.3",
            "-p",
            "5060",
            "-t",
            "u1",
            "-mi",
            "127.0.0.3",
            "-mp",
            "16000",
            "-rtp_echo",
            "-nostdin",
            "-trace_err",
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let calls = CALLS.to_string();
    let mut uac = Command::new("sipp")
        .args([
            "-sf",
            uac_xml.to_str().unwrap(),
            "-i",
            "127.0.0.2",
            "-p",
            "5060",
            "-t",
            "u1",
            "-mi",
            "127.0.0.2",
            "-mp",
            "16000",
            "-s",
            "+14255550100",
            "-set",
            "domain",
            "mediation.lab.example",
            "-r",
            "50",
            "-l",
            &calls,
            "-m",
            &calls,
            "-recv_timeout",
            "15000",
            "-timeout",
            "60",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
            "127.0.0.1:5068",
        ])
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sipp");
    let deadline = Instant::now() + Duration::from_secs(90);
    let code = loop {
        if let Ok(Some(st)) = uac.try_wait() {
            break st.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = uac.kill();
            panic!("sipp gateway did not finish; log:\n{}", lab.log_text());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let errors: String = std::fs::read_dir(work.path())
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().to_string_lossy().contains("error"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        code,
        0,
        "sipp gateway failed calls:\n{errors}\npeer: {}",
        peer.errors()
    );
    let _ = peer.child.kill();

    // Give the last releases a moment to be logged.
    std::thread::sleep(Duration::from_millis(300));
    let log = strip_ansi(&lab.log_text());
    let released: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("media session released"))
        .collect();
    assert_eq!(released.len(), CALLS, "one session per call");
    // 50 at once: every session was allocated before the first one was released.
    let first_release = log.find("media session released").unwrap();
    let last_alloc = log.rfind("media session allocated").unwrap();
    assert!(last_alloc < first_release, "the 50 calls overlapped");
    let (mut to_cloud, mut to_gw) = (0u64, 0u64);
    for l in &released {
        let a = field(l, "a_fwd").unwrap_or(0);
        let b = field(l, "b_fwd").unwrap_or(0);
        // Loopback under load may drop a few; the pcap is 100 packets.
        assert!(
            a >= u64::from(PACKETS) * 9 / 10,
            "gateway→cloud packets: {l}"
        );
        assert!(
            b >= u64::from(PACKETS) * 8 / 10,
            "echo cloud→gateway packets: {l}"
        );
        assert_eq!(field(l, "a_foreign"), Some(0), "{l}");
        to_cloud += a;
        to_gw += b;
        assert_eq!(field(l, "b_foreign"), Some(0), "{l}");
    }
    eprintln!(
        "relayed {to_cloud} packets gateway→cloud and {to_gw} echoed cloud→gateway over {CALLS} calls"
    );
    let last = released.last().unwrap();
    assert_eq!(field(last, "pool_available"), field(last, "pool_capacity"));
}
