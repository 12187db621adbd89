//! `sipedge doctor`: the configuration against the world, one line per check.
//!
//! - **names**: every name the routing table needs (cloud peer, gateways, mediation servers)
//!   and our own FQDNs resolve (`[hosts]` first, then the system resolver);
//! - **options**: each gateway of our site, each other site's mediation server and the cloud
//!   peer answers an OPTIONS over its configured transport (UDP retransmitted from T1 on; TCP;
//!   TLS with our certificate of that side, the peer's verified against its name) — any
//!   response counts, as for the OPTIONS health;
//! - **certificates**: ours satisfy the edge rules (`sipedge check`'s) and are not within 30
//!   days of expiry, nor is the built-in CA; the CRL's next update has not passed;
//! - **clock**: not before 2025, not before any of our certificates' start, no state file
//!   modified in the future, NTP synchronisation when systemd says so;
//! - **ports**: every listener's port is free (and bindable) or held by the running appliance
//!   (the process whose pid its admin API's `/healthz` gives, else a process named `sipedge`);
//!   no other process holds a port of the media range.
//!
//! The checks that wait on the network run in parallel; the exit status is non-zero when any
//! check failed, and the last line names them.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::config::{Config, Side, Transport};
use crate::pki::Severity;

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        }
    }
}

/// One check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked, e.g. `options gateway gw2.lab.example`.
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
}

impl Check {
    fn new(name: impl Into<String>, verdict: Verdict, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            verdict,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<4}  {}: {}",
            self.verdict.as_str(),
            self.name,
            self.detail
        )
    }
}

/// How long to wait for each OPTIONS answer (and TCP/TLS connect).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(4);
/// 2025-01-01T00:00:00Z: a clock before this is wrong.
const CLOCK_FLOOR: u64 = 1_735_689_600;
/// Tolerance for "in the future".
const SKEW: Duration = Duration::from_secs(300);
const EXPIRY_DAYS: i64 = 30;

/// Runs every check.
pub fn run(cfg: &Config, timeout: Duration) -> Vec<Check> {
    let mut out = Vec::new();
    let now = SystemTime::now();
    out.push(clock(cfg, now));
    out.extend(certificates(cfg, now));
    let (names, resolved) = names(cfg);
    out.extend(names);
    out.extend(options_all(cfg, &resolved, timeout));
    out.extend(ports(cfg));
    out.extend(directory(cfg));
    out
}

/// The shared directory's database, when `[directory]` names one.
fn directory(cfg: &Config) -> Option<Check> {
    let d = cfg.directory.as_ref()?;
    let name = format!("directory {}", d.display_url());
    Some(match crate::directory::postgres::probe(d) {
        Ok(detail) => Check::new(name, Verdict::Ok, detail),
        Err(e) => Check::new(name, Verdict::Fail, e.to_string()),
    })
}

/// The names of the failed checks, for the last line and the exit status.
pub fn failures(checks: &[Check]) -> Vec<&str> {
    checks
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .map(|c| c.name.as_str())
        .collect()
}

// ---------------------------------------------------------------- clock

fn clock(cfg: &Config, now: SystemTime) -> Check {
    let name = "clock";
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let shown = crate::cdr::rfc3339(now);
    if secs < CLOCK_FLOOR {
        return Check::new(
            name,
            Verdict::Fail,
            format!("the clock says {shown}, before 2025: set the time (NTP)"),
        );
    }
    // Our certificates must have started already.
    if cfg.uses_tls() {
        let src = crate::transport::tls::planned_sources(cfg);
        let mut files: Vec<std::path::PathBuf> = Vec::new();
        for s in [&src.gateway_side, &src.cloud_side] {
            if let crate::config::CertSource::Pem { cert, .. } = s {
                files.push(cert.clone());
            }
        }
        files.extend(src.trust.iter().cloned());
        for (_, t) in &src.gateway_trust {
            files.extend(t.iter().cloned());
        }
        for f in files.iter().filter(|f| f.exists()) {
            if let Ok(info) = crate::pki::show_cert(f, None) {
                let nb = info.not_before.unix_timestamp();
                if nb > secs as i64 + SKEW.as_secs() as i64 {
                    return Check::new(
                        name,
                        Verdict::Fail,
                        format!(
                            "the clock says {shown}, before {} starts ({}): the clock is behind",
                            f.display(),
                            info.not_before
                        ),
                    );
                }
            }
        }
    }
    // State files written "in the future": the clock went back.
    if let Ok(rd) = std::fs::read_dir(&cfg.appliance.state_dir) {
        for e in rd.flatten() {
            let m = e.metadata().and_then(|m| m.modified());
            if let Ok(m) = m {
                if m > now + SKEW {
                    return Check::new(
                        name,
                        Verdict::Fail,
                        format!(
                            "the clock says {shown}, but {} was modified at {}: the clock went back",
                            e.path().display(),
                            crate::cdr::rfc3339(m)
                        ),
                    );
                }
            }
        }
    }
    let ntp = if Path::new("/run/systemd/timesync/synchronized").exists() {
        "synchronised (systemd-timesyncd)"
    } else {
        "NTP state unknown to systemd (chrony or ntpd may still keep it)"
    };
    Check::new(name, Verdict::Ok, format!("{shown}; {ntp}"))
}

// ---------------------------------------------------------------- certificates

fn certificates(cfg: &Config, now: SystemTime) -> Vec<Check> {
    let mut out = Vec::new();
    if !cfg.uses_tls() {
        out.push(Check::new("certificates", Verdict::Ok, "no TLS in use"));
        return out;
    }
    let findings = crate::transport::tls::check_certificates(cfg, now);
    let src = crate::transport::tls::planned_sources(cfg);
    for (what, source, configured) in [
        (
            "gateway side",
            &src.gateway_side,
            cfg.tls.gateway_side.is_some(),
        ),
        ("cloud side", &src.cloud_side, cfg.tls.cloud_side.is_some()),
    ] {
        let name = format!("certificate {what}");
        let mine: Vec<_> = findings
            .iter()
            .filter(|f| f.what.starts_with(what))
            .collect();
        if !configured && !source.files().iter().all(|f| f.exists()) {
            out.push(Check::new(
                name,
                Verdict::Ok,
                "not issued yet: `sipedge run` issues it from the built-in CA",
            ));
            continue;
        }
        let errors: Vec<String> = mine
            .iter()
            .filter(|f| {
                f.finding.severity == Severity::Error || f.finding.text.starts_with("expires in")
            })
            .map(|f| f.finding.text.clone())
            .collect();
        let warnings: Vec<String> = mine
            .iter()
            .filter(|f| {
                f.finding.severity == Severity::Warning && !f.finding.text.starts_with("expires in")
            })
            .map(|f| f.finding.text.clone())
            .collect();
        let first = source.files().into_iter().next().unwrap_or_default();
        if !errors.is_empty() {
            out.push(Check::new(name, Verdict::Fail, errors.join("; ")));
        } else if !warnings.is_empty() {
            out.push(Check::new(name, Verdict::Warn, warnings.join("; ")));
        } else {
            out.push(Check::new(
                name,
                Verdict::Ok,
                format!("{} satisfies the edge rules", first.display()),
            ));
        }
    }
    for f in findings
        .iter()
        .filter(|f| !f.what.starts_with("gateway side") && !f.what.starts_with("cloud side"))
    {
        let v = match f.finding.severity {
            Severity::Error => Verdict::Fail,
            Severity::Warning => Verdict::Warn,
        };
        out.push(Check::new(
            format!("tls {}", f.what),
            v,
            f.finding.text.clone(),
        ));
    }
    for e in super::certs::inventory(cfg) {
        let left = e.days_left(now);
        match (e.what, left) {
            ("ca", Some(d)) if d < 0 => out.push(Check::new(
                "certificate ca",
                Verdict::Fail,
                format!("the built-in root expired ({})", e.file.display()),
            )),
            ("ca", Some(d)) if d < EXPIRY_DAYS => out.push(Check::new(
                "certificate ca",
                Verdict::Fail,
                format!("the built-in root expires in {d} days ({})", e.file.display()),
            )),
            ("ca", Some(d)) => out.push(Check::new(
                "certificate ca",
                Verdict::Ok,
                format!("{d} days left"),
            )),
            ("crl", Some(d)) if d < 0 => out.push(Check::new(
                "crl",
                Verdict::Warn,
                format!(
                    "its next update has passed ({}): `sipedge ca revoke` or a new CRL refreshes it",
                    e.file.display()
                ),
            )),
            ("crl", Some(d)) => out.push(Check::new(
                "crl",
                Verdict::Ok,
                format!("next update in {d} days"),
            )),
            ("crl", None) => out.push(Check::new(
                "crl",
                Verdict::Fail,
                e.error.unwrap_or_else(|| "unreadable".into()),
            )),
            _ => {}
        }
    }
    out
}

// ---------------------------------------------------------------- names

/// A name's address and where it came from, or why it does not resolve.
type Resolved = Result<(IpAddr, &'static str), String>;

fn names(cfg: &Config) -> (Vec<Check>, HashMap<String, IpAddr>) {
    let mut list = crate::routing::RoutingTable::names_to_resolve(cfg);
    list.push(cfg.appliance.mediation_fqdn.to_string());
    list.push(cfg.appliance.access_edge_fqdn.to_string());
    let mut seen = std::collections::HashSet::new();
    list.retain(|n| seen.insert(n.to_ascii_lowercase()));
    let results: Vec<(String, Resolved)> = std::thread::scope(|s| {
        let handles: Vec<_> = list
            .iter()
            .map(|n| {
                s.spawn(move || {
                    if let Some(ip) = cfg.static_host(n) {
                        return (n.clone(), Ok((ip, "[hosts]")));
                    }
                    let r = (n.as_str(), 0)
                        .to_socket_addrs()
                        .map_err(|e| e.to_string())
                        .and_then(|mut a| {
                            a.next()
                                .map(|a| (a.ip(), "system resolver"))
                                .ok_or_else(|| "no address".to_owned())
                        });
                    (n.clone(), r)
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut checks = Vec::new();
    let mut resolved = HashMap::new();
    for (n, r) in results {
        match r {
            Ok((ip, how)) => {
                checks.push(Check::new(
                    format!("resolve {n}"),
                    Verdict::Ok,
                    format!("{ip} ({how})"),
                ));
                resolved.insert(n.to_ascii_lowercase(), ip);
            }
            Err(e) => checks.push(Check::new(
                format!("resolve {n}"),
                Verdict::Fail,
                format!("does not resolve: {e}"),
            )),
        }
    }
    (checks, resolved)
}

// ---------------------------------------------------------------- OPTIONS

/// One peer to ping.
#[derive(Debug, Clone)]
struct Target {
    kind: &'static str,
    name: String,
    port: u16,
    transport: Transport,
    side: Side,
}

fn targets(cfg: &Config) -> Vec<Target> {
    let own = &cfg.appliance.site;
    let mut v: Vec<Target> = cfg
        .gateways
        .iter()
        .filter(|g| g.site == *own)
        .map(|g| Target {
            kind: "gateway",
            name: g.name.to_string(),
            port: g.port,
            transport: g.transport,
            side: Side::Gateway,
        })
        .collect();
    for s in cfg.sites.iter().filter(|s| s.name != *own) {
        for m in &s.mediation_servers {
            v.push(Target {
                kind: "mediation server",
                name: m.fqdn.to_string(),
                port: m.port,
                transport: m.transport,
                side: Side::Gateway,
            });
        }
    }
    v.push(Target {
        kind: "cloud peer",
        name: cfg.cloud_peer.fqdn.to_string(),
        port: cfg.cloud_peer.port,
        transport: cfg.cloud_peer.transport,
        side: Side::Cloud,
    });
    v
}

fn options_all(cfg: &Config, resolved: &HashMap<String, IpAddr>, timeout: Duration) -> Vec<Check> {
    let ts = targets(cfg);
    let tls = if ts.iter().any(|t| t.transport == Transport::Tls) {
        Some(
            crate::transport::tls::TlsContext::from_sources(
                cfg,
                crate::transport::tls::planned_sources(cfg),
            )
            .map_err(|e| e.to_string()),
        )
    } else {
        None
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = ts
            .iter()
            .map(|t| {
                let tls = &tls;
                s.spawn(move || {
                    let name = format!("options {} {}", t.kind, t.name);
                    let Some(ip) = resolved.get(&t.name.to_ascii_lowercase()).copied() else {
                        return Check::new(name, Verdict::Fail, "does not resolve");
                    };
                    let remote = SocketAddr::new(ip, t.port);
                    let how = format!("{remote} {}", t.transport.uri_param());
                    let started = Instant::now();
                    let r = match t.transport {
                        Transport::Udp => options_udp(cfg, t, remote, timeout),
                        Transport::Tcp => options_stream(cfg, t, remote, timeout, None),
                        Transport::Tls => match tls {
                            Some(Ok(ctx)) => {
                                options_stream(cfg, t, remote, timeout, Some(ctx.client(t.side)))
                            }
                            Some(Err(e)) => Err(format!("no TLS configuration: {e}")),
                            None => Err("no TLS configuration".into()),
                        },
                    };
                    match r {
                        Ok(status) => Check::new(
                            name,
                            Verdict::Ok,
                            format!(
                                "{how}: answered {status} in {} ms",
                                started.elapsed().as_millis()
                            ),
                        ),
                        Err(e) => Check::new(name, Verdict::Fail, format!("{how}: {e}")),
                    }
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    })
}

fn token() -> String {
    let b: [u8; 8] = rand::random();
    data_encoding::HEXLOWER.encode(&b)
}

/// An OPTIONS from `local` to the target; returns the request and its Call-ID.
fn options_request(cfg: &Config, t: &Target, local: SocketAddr) -> (Vec<u8>, String) {
    let n = token();
    let us = cfg.fqdn_for(t.side);
    let call_id = format!("doctor-{n}@{us}");
    let req = format!(
        "OPTIONS sip:{name}:{port};transport={tp} SIP/2.0\r\n\
         Via: SIP/2.0/{via} {local};branch=z9hG4bK-doctor-{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:doctor@{us}>;tag={n}\r\nTo: <sip:{name}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nAccept: application/sdp\r\n\
         User-Agent: sipedge-doctor/{v}\r\nContent-Length: 0\r\n\r\n",
        name = t.name,
        port = t.port,
        tp = t.transport.uri_param(),
        via = t.transport.via_token(),
        v = env!("CARGO_PKG_VERSION"),
    );
    (req.into_bytes(), call_id)
}

/// The status line of a response to `call_id` in `data`, when it is one.
fn answer_to(data: &[u8], call_id: &str) -> Option<String> {
    let m = crate::sip::Message::parse(bytes::Bytes::copy_from_slice(data)).ok()?;
    let status = m.status()?;
    (m.call_id()? == call_id.as_bytes()).then(|| {
        let reason = m.reason().map(String::from_utf8_lossy).unwrap_or_default();
        format!("{status} {reason}")
    })
}

/// Our address on a side to send from: the side's listener address (never its port).
fn local_ip(cfg: &Config, side: Side, remote: SocketAddr) -> IpAddr {
    let l = cfg.listen(side);
    let ip = l.udp.or(l.tcp).or(l.tls).map(|a| a.ip());
    match ip {
        Some(ip) if !ip.is_unspecified() && ip.is_ipv4() == remote.is_ipv4() => ip,
        _ if remote.is_ipv4() => IpAddr::from([0, 0, 0, 0]),
        _ => IpAddr::from([0u16; 8]),
    }
}

fn options_udp(
    cfg: &Config,
    t: &Target,
    remote: SocketAddr,
    timeout: Duration,
) -> Result<String, String> {
    let sock = UdpSocket::bind(SocketAddr::new(local_ip(cfg, t.side, remote), 0))
        .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    let local = sock.local_addr().map_err(|e| e.to_string())?;
    let (req, call_id) = options_request(cfg, t, local);
    let deadline = Instant::now() + timeout;
    let mut next_send = Instant::now();
    let mut interval = cfg.sip.t1;
    let mut buf = vec![0u8; 65536];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(format!("no answer within {} s", timeout.as_secs_f32()));
        }
        if now >= next_send {
            sock.send_to(&req, remote)
                .map_err(|e| format!("send failed: {e}"))?;
            next_send = now + interval;
            interval = (interval * 2).min(cfg.sip.t2);
        }
        let wait = next_send.min(deadline).saturating_duration_since(now);
        sock.set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .map_err(|e| e.to_string())?;
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                if let Some(s) = buf.get(..n).and_then(|d| answer_to(d, &call_id)) {
                    return Ok(s);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // ICMP port unreachable comes back as ECONNREFUSED on Linux.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err("port unreachable (nothing listens there)".into())
            }
            Err(e) => return Err(format!("receive failed: {e}")),
        }
    }
}

/// Reads one SIP message from a stream (headers, then Content-Length bytes of body).
fn read_message(s: &mut impl Read, deadline: Instant) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(buf.get(..end).unwrap_or_default()).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    let n = n.trim();
                    (n.eq_ignore_ascii_case("content-length") || n == "l")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                buf.truncate(end + 4 + len);
                return Ok(buf);
            }
        }
        if Instant::now() >= deadline {
            return Err("no answer in time".into());
        }
        if buf.len() > 65536 {
            return Err("answer too large".into());
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err("connection closed without an answer".into()),
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("no answer in time".into())
            }
            Err(e) => return Err(tls_or_io(&e)),
        }
    }
}

fn tls_or_io(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(r) => format!("TLS: {}", crate::pki::tls::describe_refusal(r)),
        None => e.to_string(),
    }
}

fn options_stream(
    cfg: &Config,
    t: &Target,
    remote: SocketAddr,
    timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let tcp = TcpStream::connect_timeout(&remote, timeout).map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            format!("no connection within {} s", timeout.as_secs_f32())
        }
        _ => format!("connect failed: {e}"),
    })?;
    tcp.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let local = tcp.local_addr().map_err(|e| e.to_string())?;
    let (req, call_id) = options_request(cfg, t, local);
    let answer = match tls {
        None => {
            let mut s = tcp;
            s.write_all(&req).map_err(|e| format!("send failed: {e}"))?;
            read_message(&mut s, deadline)?
        }
        Some(config) => {
            let name = crate::pki::tls::server_name(&t.name).map_err(|e| e.to_string())?;
            let conn =
                rustls::ClientConnection::new(config, name).map_err(|e| format!("TLS: {e}"))?;
            let mut s = rustls::StreamOwned::new(conn, tcp);
            s.write_all(&req).map_err(|e| tls_or_io(&e))?;
            read_message(&mut s, deadline)?
        }
    };
    answer_to(&answer, &call_id)
        .ok_or_else(|| "the answer is not a SIP response to our OPTIONS".into())
}

// ---------------------------------------------------------------- ports

/// A socket of the host as `/proc/net` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostSocket {
    udp: bool,
    local: SocketAddr,
    listening: bool,
    inode: u64,
}

/// Parses `/proc/net/{tcp,tcp6,udp,udp6}` text.
fn parse_proc_net(text: &str, udp: bool, v6: bool) -> Vec<HostSocket> {
    let mut v = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
        else {
            continue;
        };
        let Some((ip_hex, port_hex)) = local.split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port_hex, 16) else {
            continue;
        };
        let ip = if v6 {
            let mut b = [0u8; 16];
            let mut ok = ip_hex.len() == 32;
            for (w, word) in b.chunks_mut(4).enumerate() {
                let part = ip_hex.get(w * 8..w * 8 + 8).unwrap_or_default();
                match u32::from_str_radix(part, 16) {
                    Ok(x) => word.copy_from_slice(&x.to_le_bytes()),
                    Err(_) => ok = false,
                }
            }
            if !ok {
                continue;
            }
            IpAddr::from(b)
        } else {
            let Ok(x) = u32::from_str_radix(ip_hex, 16) else {
                continue;
            };
            IpAddr::from(x.to_le_bytes())
        };
        v.push(HostSocket {
            udp,
            local: SocketAddr::new(ip, port),
            listening: udp || *state == "0A",
            inode: inode.parse().unwrap_or(0),
        });
    }
    v
}

fn host_sockets() -> Vec<HostSocket> {
    let mut v = Vec::new();
    for (f, udp, v6) in [
        ("/proc/net/tcp", false, false),
        ("/proc/net/tcp6", false, true),
        ("/proc/net/udp", true, false),
        ("/proc/net/udp6", true, true),
    ] {
        if let Ok(t) = std::fs::read_to_string(f) {
            v.extend(parse_proc_net(&t, udp, v6));
        }
    }
    v
}

/// Socket inode → (pid, process name), for the processes we may look at.
fn socket_owners() -> HashMap<u64, (u32, String)> {
    let mut m = HashMap::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return m;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm"))
            .map(|c| c.trim().to_owned())
            .unwrap_or_default();
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                let l = link.to_string_lossy();
                if let Some(inode) = l
                    .strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .and_then(|i| i.parse::<u64>().ok())
                {
                    m.insert(inode, (pid, comm.clone()));
                }
            }
        }
    }
    m
}

/// Does a socket bound to `a` take the port of `b` (same port, same address or a wildcard)?
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// The running appliance's pid, from its admin API's `/healthz`.
fn appliance_pid(cfg: &Config) -> Option<u32> {
    let addr = cfg.admin.listen?;
    let t = Duration::from_secs(1);
    let mut s = TcpStream::connect_timeout(&addr, t).ok()?;
    s.set_read_timeout(Some(t)).ok()?;
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let text = String::from_utf8_lossy(&resp);
    let (_, body) = text.split_once("\r\n\r\n")?;
    let v: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
    v["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
}

fn ports(cfg: &Config) -> Vec<Check> {
    let sockets = host_sockets();
    let owners = socket_owners();
    let ours = appliance_pid(cfg);
    let is_ours = |pid: u32, comm: &str| match ours {
        Some(p) => p == pid,
        None => comm == "sipedge",
    };
    let mut listeners: Vec<(String, bool, SocketAddr)> = Vec::new();
    for side in [Side::Gateway, Side::Cloud] {
        let l = cfg.listen(side);
        for t in [Transport::Udp, Transport::Tcp, Transport::Tls] {
            if let Some(a) = l.addr(t) {
                listeners.push((
                    format!("port {} {} {a}", side.as_str(), t.uri_param()),
                    t == Transport::Udp,
                    a,
                ));
            }
        }
    }
    if let Some(a) = cfg.admin.listen {
        listeners.push((format!("port admin {a}"), false, a));
    }
    let mut out = Vec::new();
    for (name, udp, addr) in listeners {
        let holders: Vec<&HostSocket> = sockets
            .iter()
            .filter(|s| s.udp == udp && s.listening && overlaps(s.local, addr))
            .collect();
        if holders.is_empty() {
            let bound = if udp {
                UdpSocket::bind(addr).map(drop)
            } else {
                std::net::TcpListener::bind(addr).map(drop)
            };
            out.push(match bound {
                Ok(()) => Check::new(name, Verdict::Ok, "free"),
                Err(e) => Check::new(name, Verdict::Fail, format!("cannot bind: {e}")),
            });
            continue;
        }
        let found: Vec<(u32, String)> = holders
            .iter()
            .filter_map(|s| owners.get(&s.inode).cloned())
            .collect();
        if let Some((pid, _)) = found.iter().find(|(p, c)| is_ours(*p, c)) {
            if found.iter().all(|(p, c)| is_ours(*p, c)) {
                out.push(Check::new(
                    name,
                    Verdict::Ok,
                    format!("held by the running appliance (sipedge, pid {pid})"),
                ));
                continue;
            }
        }
        let who = match found.iter().find(|(p, c)| !is_ours(*p, c)) {
            Some((pid, comm)) => format!("{comm} (pid {pid})"),
            None => "another process (its owner is not visible to this user)".into(),
        };
        out.push(Check::new(name, Verdict::Fail, format!("in use by {who}")));
    }
    if let Some(m) = &cfg.media {
        let name = format!("ports media {}:{}-{}", m.ip, m.port_min, m.port_max);
        let in_range: Vec<&HostSocket> = sockets
            .iter()
            .filter(|s| {
                s.udp
                    && (m.port_min..=m.port_max).contains(&s.local.port())
                    && (s.local.ip() == m.ip
                        || s.local.ip().is_unspecified()
                        || m.ip.is_unspecified())
            })
            .collect();
        let mut ours_n = 0;
        let mut foreign = Vec::new();
        for s in &in_range {
            match owners.get(&s.inode) {
                Some((p, c)) if is_ours(*p, c) => ours_n += 1,
                Some((p, c)) => foreign.push(format!("{} by {c} (pid {p})", s.local.port())),
                None => foreign.push(format!(
                    "{} by a process not visible to this user",
                    s.local.port()
                )),
            }
        }
        if foreign.is_empty() {
            out.push(Check::new(
                name,
                Verdict::Ok,
                if ours_n == 0 {
                    "free".to_owned()
                } else {
                    format!("{ours_n} ports held by the running appliance's calls, none by others")
                },
            ));
        } else {
            let n = foreign.len();
            foreign.truncate(3);
            out.push(Check::new(
                name,
                Verdict::Fail,
                format!(
                    "{n} ports in use by other processes: {}",
                    foreign.join(", ")
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_lines_parse() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:13C4 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:13C4 0200007F:A000 01 00000000:00000000 00:00000000 00000000     0        0 777 1\n";
        let v = parse_proc_net(tcp, false, false);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].local, "127.0.0.1:5060".parse().unwrap());
        assert!(v[0].listening && !v[1].listening);
        assert_eq!(v[0].inode, 12345);
        let udp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n  1: 00000000000000000000000001000000:13C4 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 999 2 0 0\n";
        let v = parse_proc_net(udp6, true, true);
        assert_eq!(v[0].local, "[::1]:5060".parse().unwrap());
        assert!(v[0].udp && v[0].listening);
        assert!(parse_proc_net("header\ngarbage line\n", true, false).is_empty());
        assert!(overlaps(
            "0.0.0.0:5068".parse().unwrap(),
            "127.0.0.1:5068".parse().unwrap()
        ));
        assert!(!overlaps(
            "127.0.0.2:5068".parse().unwrap(),
            "127.0.0.1:5068".parse().unwrap()
        ));
    }

    #[test]
    fn answers_are_matched_by_call_id() {
        let r = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: doctor-1@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(answer_to(r, "doctor-1@x").as_deref(), Some("200 OK"));
        assert_eq!(answer_to(r, "doctor-2@x"), None);
        assert_eq!(answer_to(b"garbage", "doctor-1@x"), None);
        let mut stream: &[u8] = r;
        let m = read_message(&mut stream, Instant::now() + Duration::from_secs(1)).unwrap();
        assert_eq!(m.len(), r.len());
    }
}
