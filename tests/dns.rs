//! Names resolved by DNS with their TTLs honoured: a small authoritative server on loopback
//! (built with hickory's own message types) answers A and SRV queries; its answers change while
//! the resolver, then a running appliance, watch.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{header, Agent, Lab};
use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, SRV};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use sipedge::config::{Config, DnsSettings};
use sipedge::transport::dns::Dns;

type Zone = HashMap<(String, RecordType), Vec<(RData, u32)>>;

/// An authoritative server for whatever names `zone` holds; NXDOMAIN for names it lacks,
/// an empty answer for a type it lacks.
struct FakeDns {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FakeDns {
    fn start(ip: &str) -> FakeDns {
        let sock = UdpSocket::bind((ip, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let zone: Arc<Mutex<Zone>> = Arc::default();
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (zone, queries, stop) = (zone.clone(), queries.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    let Ok(q) = Message::from_vec(&buf[..n]) else {
                        continue;
                    };
                    queries.fetch_add(1, Ordering::SeqCst);
                    let mut r = Message::new();
                    r.set_id(q.id())
                        .set_message_type(MessageType::Response)
                        .set_op_code(q.op_code())
                        .set_authoritative(true)
                        .set_recursion_desired(q.recursion_desired())
                        .set_recursion_available(true);
                    let zone = zone.lock().unwrap();
                    for query in q.queries() {
                        r.add_query(query.clone());
                        let name = query.name().to_utf8().to_ascii_lowercase();
                        let known = zone.keys().any(|(n, _)| *n == name);
                        if !known {
                            r.set_response_code(ResponseCode::NXDomain);
                        }
                        for (rdata, ttl) in zone
                            .get(&(name.clone(), query.query_type()))
                            .into_iter()
                            .flatten()
                        {
                            r.add_answer(Record::from_rdata(
                                query.name().clone(),
                                *ttl,
                                rdata.clone(),
                            ));
                        }
                    }
                    drop(zone);
                    if let Ok(bytes) = r.to_vec() {
                        let _ = sock.send_to(&bytes, from);
                    }
                }
            });
        }
        FakeDns {
            addr,
            zone,
            queries,
            stop,
        }
    }

    fn set_a(&self, name: &str, ips: &[&str], ttl: u32) {
        let rdata = ips
            .iter()
            .map(|ip| (RData::A(A::from_str(ip).unwrap()), ttl))
            .collect();
        self.zone
            .lock()
            .unwrap()
            .insert((format!("{name}."), RecordType::A), rdata);
    }

    fn set_srv(&self, name: &str, targets: &[(u16, u16, u16, &str)], ttl: u32) {
        let rdata = targets
            .iter()
            .map(|(prio, weight, port, target)| {
                let t = Name::from_str(&format!("{target}.")).unwrap();
                (RData::SRV(SRV::new(*prio, *weight, *port, t)), ttl)
            })
            .collect();
        self.zone
            .lock()
            .unwrap()
            .insert((format!("{name}."), RecordType::SRV), rdata);
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn settings(dns: &FakeDns, min_ttl_s: u64) -> DnsSettings {
    DnsSettings {
        servers: vec![dns.addr],
        min_ttl: Duration::from_secs(min_ttl_s),
        max_ttl: Duration::from_secs(3600),
    }
}

/// The lab configuration with the cloud peer left to DNS (its `[hosts]` line removed).
fn lab_without_cloud_host(extra: &str) -> String {
    let text = common::lab_config_text();
    let text = text.replace("\"sip.cloud.lab.example\" = \"127.0.0.3\"\n", "");
    assert!(!text.contains("\"sip.cloud.lab.example\" ="));
    format!("{text}\n{extra}")
}

fn lab_config(extra: &str) -> Config {
    Config::from_toml(
        std::path::Path::new("config/sipedge.toml"),
        &lab_without_cloud_host(extra),
    )
    .unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn every_address_of_a_name_and_its_ttl_bounded() {
    let dns = FakeDns::start("127.0.0.1");
    dns.set_a("peer.dns.test", &["127.0.0.31", "127.0.0.32"], 30);
    dns.set_a("zero.dns.test", &["127.0.0.33"], 0);
    rt().block_on(async {
        let r = Dns::new(&settings(&dns, 2));
        let (ips, ttl) = r.ips("peer.dns.test").await.unwrap();
        let want: Vec<IpAddr> = vec!["127.0.0.31".parse().unwrap(), "127.0.0.32".parse().unwrap()];
        assert_eq!(ips, want);
        assert!(
            ttl <= Duration::from_secs(30) && ttl >= Duration::from_secs(28),
            "{ttl:?}"
        );
        // A zero TTL is held for min_ttl: no query loop.
        let (_, ttl) = r.ips("zero.dns.test").await.unwrap();
        assert_eq!(ttl, Duration::from_secs(2));
        assert!(r.ips("nowhere.dns.test").await.is_err());
    });
}

#[test]
fn srv_targets_in_priority_order_then_a_records_without_srv_and_last_answers_kept() {
    let dns = FakeDns::start("127.0.0.1");
    dns.set_srv(
        "_sip._udp.sip.cloud.lab.example",
        &[
            (20, 0, 5070, "backup.dns.test"),
            (10, 10, 5080, "light.dns.test"),
            (10, 60, 5090, "heavy.dns.test"),
        ],
        1,
    );
    dns.set_a("backup.dns.test", &["127.0.0.41"], 1);
    dns.set_a("light.dns.test", &["127.0.0.42"], 1);
    dns.set_a("heavy.dns.test", &["127.0.0.43", "127.0.0.44"], 1);
    dns.set_a("sip.cloud.lab.example", &["127.0.0.3"], 1);
    let cfg = lab_config("");
    let mut srv_cfg = cfg.clone();
    srv_cfg.cloud_peer.srv = true;
    rt().block_on(async {
        let r = Dns::new(&settings(&dns, 1));
        // SRV: priority 10 before 20; within 10 the heavier first; each target's addresses at
        // its own port.
        let (res, refresh) = r.resolve(&srv_cfg, None).await;
        assert_eq!(refresh, Some(Duration::from_secs(1)));
        let peers: Vec<String> = res
            .table(&srv_cfg)
            .unwrap()
            .cloud_peers
            .iter()
            .map(|p| format!("{}={}", p.name, p.addr))
            .collect();
        assert_eq!(
            peers,
            [
                "sip.cloud.lab.example=127.0.0.43:5090",
                "sip.cloud.lab.example=127.0.0.44:5090",
                "sip.cloud.lab.example=127.0.0.42:5080",
                "sip.cloud.lab.example=127.0.0.41:5070",
            ]
        );
        // Without srv configured, the A record at the configured port.
        let (plain, _) = r.resolve(&cfg, None).await;
        let t = plain.table(&cfg).unwrap();
        assert_eq!(t.cloud_peer.addr.to_string(), "127.0.0.3:5060");
        // The DNS server goes silent: the last answers stay in use and are asked for again
        // at min_ttl.
        dns.stop.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (again, refresh) = r.resolve(&srv_cfg, Some(&res)).await;
        assert_eq!(again, res);
        assert_eq!(refresh, Some(Duration::from_secs(1)));
    });
}

/// A request from gw1 to alice: reaches whichever address the cloud peer's name has now.
fn invite(gw: &Agent, n: u64) -> Vec<u8> {
    let a = gw.addr();
    let ruri = "sip:+14255550100@mediation.lab.example";
    format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bK-dns-{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:+14255550199@{a}>;tag=f{n}\r\nTo: <{ruri}>\r\n\
         Call-ID: dns-{n}@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn a_running_appliance_follows_the_cloud_peers_dns_answer_when_its_ttl_runs_out() {
    let dns = FakeDns::start("127.0.0.1");
    dns.set_a("sip.cloud.lab.example", &["127.0.0.3"], 1);
    let extra = format!("[dns]\nservers = [\"{}\"]\nmin_ttl_s = 1\n", dns.addr);
    let lab = Lab::start_with(|_| lab_without_cloud_host(&extra));
    let first = Agent::bind("127.0.0.3:5060");
    let second = Agent::bind("127.0.0.13:5060");
    let gw = Agent::bind("127.0.0.2:0");
    gw.send_to(&invite(&gw, 1), "127.0.0.1:5068");
    let inv = first.expect("INVITE sip:alice@lab.example", Duration::from_secs(3));
    assert_eq!(header(&inv, "Call-ID"), Some("dns-1@test"));

    // The name moves; within its TTL (1 s) and the refresh, new calls follow it.
    let before = dns.queries();
    dns.set_a("sip.cloud.lab.example", &["127.0.0.13"], 1);
    let t = Instant::now();
    let mut n = 2;
    loop {
        gw.send_to(&invite(&gw, n), "127.0.0.1:5068");
        if let Some((m, _)) = second.recv_timeout(Duration::from_millis(300)) {
            let m = String::from_utf8_lossy(&m).into_owned();
            if m.starts_with("INVITE ") {
                break;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "new calls still go to the old address; log:\n{}",
            lab.log_text()
        );
        n += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(dns.queries() > before, "the name was asked for again");
    let log = lab.log_text();
    assert!(log.contains("DNS answer changed"), "{log}");
    // Requests from the new address are the cloud peer's: an OPTIONS from it is answered.
    second.send_to(
        &common::options("sip:ap.lab.example", &second),
        "127.0.0.1:5062",
    );
    second.expect("SIP/2.0 200", Duration::from_secs(3));
}
