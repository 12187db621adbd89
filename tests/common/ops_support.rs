//! Helpers for the operations tests (`tests/ops.rs`, `tests/status_page.rs`): the admin API
//! over plain HTTP, OPTIONS responders playing the lab's peers, the CLI on a lab
//! configuration, and one anchored call with RTP both ways. Used as
//! `#[path = "common/ops_support.rs"] mod ops_support;` next to `mod common;`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{header, Agent, Lab};

pub const ADMIN: &str = "127.0.0.1:8080";
pub const GW_SIDE: &str = "127.0.0.1:5068";
pub const CLOUD_SIDE: &str = "127.0.0.1:5062";
pub const T: Duration = Duration::from_secs(5);

/// `GET path` on the admin API; `(status, body)`.
pub fn http_get(path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(ADMIN).expect("connect to the admin API");
    s.set_read_timeout(Some(T)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {ADMIN}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // Small bodies come unchunked from axum; de-chunk when needed.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n.min(rest.len())]);
        s = rest.get(n + 2..).unwrap_or("");
    }
    out
}

/// The lab appliance's admin token.
pub fn token(lab: &Lab) -> String {
    std::fs::read_to_string(lab.dir.path().join("state/admin.token"))
        .unwrap()
        .trim()
        .to_owned()
}

pub fn config_path(lab: &Lab) -> PathBuf {
    lab.dir.path().join("sipedge.toml")
}

/// A copy of the lab configuration in `dir` (state under `dir/state`), for CLI tests without
/// a running appliance.
pub fn lab_config_in(dir: &Path) -> PathBuf {
    let text = crate::common::lab_config_text()
        .replace("state_dir = \"../state\"", "state_dir = \"state\"");
    let p = dir.join("sipedge.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs `sipedge --config cfg args…`.
pub fn cli(cfg: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .expect("run sipedge")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Polls `f` until it holds or `t` passes.
pub fn eventually(t: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + t;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A response to `req`: its Vias, Record-Routes, From, Call-ID and CSeq, a To tag added.
pub fn response(req: &str, status: &str, tag: &str, contact: &str, body: Option<&str>) -> Vec<u8> {
    let mut head = format!("SIP/2.0 {status}\r\n");
    for l in req.lines() {
        if l.is_empty() {
            break;
        }
        let name = l
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "v" | "record-route" | "from" | "f" | "call-id" | "i" | "cseq" => {
                head.push_str(l);
                head.push_str("\r\n");
            }
            "to" | "t" => {
                head.push_str(l);
                if !l.contains("tag=") {
                    head.push_str(&format!(";tag={tag}"));
                }
                head.push_str("\r\n");
            }
            _ => {}
        }
    }
    head.push_str(&format!("Contact: <{contact}>\r\n"));
    with_body(head, body)
}

pub fn with_body(head: String, body: Option<&str>) -> Vec<u8> {
    match body {
        Some(b) => format!(
            "{head}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ),
        None => format!("{head}Content-Length: 0\r\n\r\n"),
    }
    .into_bytes()
}

/// Answers every OPTIONS on `addr` with 200 until dropped (a lab peer that is up).
pub struct Responder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub addr: SocketAddr,
}

impl Responder {
    pub fn start(addr: &str) -> Responder {
        let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let local = sock.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                if m.starts_with("OPTIONS ") {
                    let r = response(&m, "200 OK", "resp", &format!("sip:{local}"), None);
                    let _ = sock.send_to(&r, from);
                }
            }
        });
        Responder {
            stop,
            thread: Some(thread),
            addr: local,
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every peer of the lab answering OPTIONS: gw1, gw2, the cloud peer, the remote site's
/// mediation server.
pub fn lab_peers() -> Vec<Responder> {
    [
        "127.0.0.2:5060",
        "127.0.0.5:5060",
        "127.0.0.3:5060",
        "127.0.0.4:5068",
    ]
    .iter()
    .map(|a| Responder::start(a))
    .collect()
}

fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq).wrapping_mul(160)).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xd5; 160]);
    p
}

fn sdp(host: &str, port: u16) -> String {
    format!(
        "v=0\r\no=ua 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\n"
    )
}

fn media_of(sdp: &str) -> SocketAddr {
    let c = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .expect("c= line")
        .trim()
        .to_owned();
    let port: u16 = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .expect("m=audio port");
    SocketAddr::new(c.parse().unwrap(), port)
}

fn body(m: &str) -> &str {
    m.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// Waits for a message on `agent` matching `pred`, answering OPTIONS on the way.
pub fn expect_where(agent: &Agent, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        if let Some((m, from)) =
            agent.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            let s = String::from_utf8_lossy(&m).into_owned();
            if pred(&s) {
                return s;
            }
            if s.starts_with("OPTIONS ") {
                let r = response(&s, "200 OK", "opt", "sip:agent@127.0.0.1", None);
                let _ = agent.sock.send_to(&r, from);
            }
        }
    }
    panic!("no {what} within {T:?}");
}

const GW_CONTACT: &str = "sip:gw@127.0.0.2:5060";
const PEER_CONTACT: &str = "sip:peer@127.0.0.3:5060";

/// One inbound call gw1 → alice through the lab, anchored, plain RTP on both legs.
pub struct LabCall {
    pub id: String,
    pub gw: Agent,
    pub peer: Agent,
    gw_rtp: UdpSocket,
    peer_rtp: UdpSocket,
    relay_gw: Option<SocketAddr>,
    relay_cloud: Option<SocketAddr>,
    to: String,
    routes: Vec<String>,
    cseq: u32,
}

impl LabCall {
    pub fn new(id: &str) -> LabCall {
        let rtp_sock = |ip: &str| {
            let s = UdpSocket::bind(format!("{ip}:0")).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s
        };
        LabCall {
            id: id.to_owned(),
            gw: Agent::bind("127.0.0.2:5060"),
            peer: Agent::bind("127.0.0.3:5060"),
            gw_rtp: rtp_sock("127.0.0.2"),
            peer_rtp: rtp_sock("127.0.0.3"),
            relay_gw: None,
            relay_cloud: None,
            to: String::new(),
            routes: Vec::new(),
            cseq: 1,
        }
    }

    fn gw_request(
        &self,
        method: &str,
        ruri: &str,
        to: &str,
        cseq: u32,
        body: Option<&str>,
    ) -> Vec<u8> {
        let mut head = format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-{}-{cseq}-{method};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:+14255550199@gw1.lab.example>;tag=gwtag\r\nTo: {to}\r\n\
             Call-ID: {}\r\nCSeq: {cseq} {method}\r\nContact: <{GW_CONTACT}>\r\n",
            self.id, self.id
        );
        for r in &self.routes {
            head.push_str(&format!("Route: {r}\r\n"));
        }
        with_body(head, body)
    }

    /// INVITE from gw1; the peer rings, then answers when `answer`; gw1 ACKs the 200.
    pub fn establish(&mut self, answer: bool) {
        let offer = sdp("127.0.0.2", self.gw_rtp.local_addr().unwrap().port());
        let inv = self.gw_request(
            "INVITE",
            "sip:+14255550100@mediation.lab.example;user=phone",
            "<sip:+14255550100@lab.example>",
            1,
            Some(&offer),
        );
        self.gw.send_to(&inv, GW_SIDE);
        let id = self.id.clone();
        let got = expect_where(&self.peer, "INVITE at the cloud peer", |m| {
            m.starts_with("INVITE") && header(m, "Call-ID") == Some(id.as_str())
        });
        self.relay_cloud = Some(media_of(body(&got)));
        self.peer.send_to(
            &response(&got, "180 Ringing", "peertag", PEER_CONTACT, None),
            CLOUD_SIDE,
        );
        expect_where(&self.gw, "180 at gw1", |m| m.starts_with("SIP/2.0 180"));
        if !answer {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
        let answer_sdp = sdp("127.0.0.3", self.peer_rtp.local_addr().unwrap().port());
        self.peer.send_to(
            &response(&got, "200 OK", "peertag", PEER_CONTACT, Some(&answer_sdp)),
            CLOUD_SIDE,
        );
        let ok = expect_where(&self.gw, "200 at gw1", |m| {
            m.starts_with("SIP/2.0 200") && header(m, "CSeq") == Some("1 INVITE")
        });
        self.relay_gw = Some(media_of(body(&ok)));
        self.to = header(&ok, "To").unwrap().to_owned();
        self.routes = ok
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("record-route:"))
            .map(|l| l.split_once(':').unwrap().1.trim().to_owned())
            .rev()
            .collect();
        let ack = self.gw_request("ACK", PEER_CONTACT, &self.to, 1, None);
        self.gw.send_to(&ack, GW_SIDE);
        expect_where(&self.peer, "ACK at the cloud peer", |m| {
            m.starts_with("ACK")
        });
    }

    /// `n` RTP packets each way through the relay, each one received.
    pub fn media(&self, n: u16) {
        let (Some(a), Some(b)) = (self.relay_gw, self.relay_cloud) else {
            panic!("call not established");
        };
        let mut buf = [0u8; 2048];
        for s in 0..n {
            self.gw_rtp.send_to(&rtp(0x1111, s), a).unwrap();
            self.peer_rtp
                .recv_from(&mut buf)
                .expect("gw → peer RTP relayed");
            self.peer_rtp.send_to(&rtp(0x2222, s), b).unwrap();
            self.gw_rtp
                .recv_from(&mut buf)
                .expect("peer → gw RTP relayed");
        }
    }

    /// gw1 hangs up; the peer answers the BYE.
    pub fn bye(&mut self) {
        self.cseq += 1;
        let n = self.cseq;
        let bye = self.gw_request("BYE", PEER_CONTACT, &self.to, n, None);
        self.gw.send_to(&bye, GW_SIDE);
        let got = expect_where(&self.peer, "BYE at the cloud peer", |m| {
            m.starts_with("BYE")
        });
        self.peer.send_to(
            &response(&got, "200 OK", "peertag", PEER_CONTACT, None),
            CLOUD_SIDE,
        );
        expect_where(&self.gw, "200 to the BYE", |m| {
            m.starts_with("SIP/2.0 200") && header(m, "CSeq") == Some(format!("{n} BYE").as_str())
        });
    }
}
