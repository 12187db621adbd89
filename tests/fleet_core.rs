//! Two sites' proxy cores wired together without sockets (sans-IO, one virtual network): the
//! lab appliance (`config/sipedge.toml`) and the remote one (`config/remote.toml`). A call
//! handed over from one appliance to the other crosses both with its 200, ACK and BYE in both
//! directions; a gateway of lab is refused by the remote appliance. The same flows with two
//! real processes are in `tests/fleet_sites.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use sipedge::config::{Config, Side, Transport};
use sipedge::flow::{Flow, Inbound};
use sipedge::proxy::Core;
use sipedge::routing::{Directory, RoutingTable};
use sipedge::sip::Message;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// One appliance: its core and its UDP listeners.
struct Node {
    core: Core,
    gw: SocketAddr,
    cloud: SocketAddr,
}

fn node(file: &str, ip: &str, now: Instant) -> Node {
    node_with(file, ip, now, |t| t)
}

/// An appliance on `config/<file>` with `edit` applied to its text.
fn node_with(file: &str, ip: &str, now: Instant, edit: impl FnOnce(String) -> String) -> Node {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(file);
    let cfg = Config::from_toml(&path, &edit(std::fs::read_to_string(&path).unwrap())).unwrap();
    let table = RoutingTable::build(&cfg, &|n| cfg.static_host(n)).unwrap();
    let gw = addr(&format!("{ip}:5068"));
    let cloud = addr(&format!("{ip}:5062"));
    let local = HashMap::from([
        ((Side::Gateway, Transport::Udp), gw),
        ((Side::Cloud, Transport::Udp), cloud),
    ]);
    let dir = Arc::new(arc_swap::ArcSwap::from_pointee(Directory::from_config(
        &cfg,
    )));
    Node {
        core: Core::new(now, Arc::new(cfg), table, local, dir),
        gw,
        cloud,
    }
}

/// The lab appliance, the remote one, and what reached each agent's address.
struct Net {
    now: Instant,
    nodes: [Node; 2],
    inbox: HashMap<SocketAddr, Vec<(SocketAddr, String)>>,
}

impl Net {
    fn new() -> Net {
        let now = Instant::now();
        Net {
            now,
            nodes: [
                node("sipedge.toml", "127.0.0.1", now),
                node("remote.toml", "127.0.0.4", now),
            ],
            inbox: HashMap::new(),
        }
    }

    /// `from` sends `text` to `to` (an appliance listener); everything that follows is
    /// delivered until nothing moves.
    fn send(&mut self, from: &str, to: SocketAddr, text: &str) {
        self.deliver(vec![(addr(from), to, text.to_owned())]);
    }

    /// The clock moves to `at`: each core's timers run and what they send is delivered.
    fn advance(&mut self, at: Instant) {
        self.now = at;
        let mut queue = Vec::new();
        for n in &mut self.nodes {
            n.core.handle_timeout(at);
            while let Some(t) = n.core.poll_transmit() {
                let from = match t.side {
                    Side::Gateway => n.gw,
                    Side::Cloud => n.cloud,
                };
                queue.push((
                    from,
                    t.remote,
                    String::from_utf8_lossy(&t.data).into_owned(),
                ));
            }
        }
        self.deliver(queue);
    }

    fn deliver(&mut self, mut queue: Vec<(SocketAddr, SocketAddr, String)>) {
        while let Some((src, dst, data)) = queue.pop() {
            let Some(i) = self
                .nodes
                .iter()
                .position(|n| n.gw == dst || n.cloud == dst)
            else {
                self.inbox.entry(dst).or_default().push((src, data));
                continue;
            };
            let n = &mut self.nodes[i];
            let side = if n.gw == dst {
                Side::Gateway
            } else {
                Side::Cloud
            };
            let flow = Flow {
                side,
                transport: Transport::Udp,
                local: dst,
                remote: src,
                conn: None,
                identity: None,
            };
            let msg = Message::parse(Bytes::from(data)).unwrap();
            n.core.handle_inbound(self.now, Inbound::Message(flow, msg));
            while let Some(t) = n.core.poll_transmit() {
                let from = match t.side {
                    Side::Gateway => n.gw,
                    Side::Cloud => n.cloud,
                };
                queue.push((
                    from,
                    t.remote,
                    String::from_utf8_lossy(&t.data).into_owned(),
                ));
            }
        }
    }

    /// The messages that reached `agent` whose first line starts with `start` (taken).
    fn take(&mut self, agent: &str, start: &str) -> Vec<(SocketAddr, String)> {
        let inbox = self.inbox.entry(addr(agent)).or_default();
        let (hit, rest): (Vec<_>, Vec<_>) =
            inbox.drain(..).partition(|(_, m)| m.starts_with(start));
        *inbox = rest;
        hit
    }

    fn one(&mut self, agent: &str, start: &str) -> (SocketAddr, String) {
        let mut got = self.take(agent, start);
        assert_eq!(got.len(), 1, "{agent} expected one {start:?}: {got:?}");
        got.remove(0)
    }
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .unwrap_or_else(|| panic!("no {name} in {msg}"))
}

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

fn reply(req: &str, code: u16, contact: &str) -> String {
    let mut out = format!("SIP/2.0 {code} Whatever\r\n");
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
            "to" => out.push_str(&format!("{l};tag=uas\r\n")),
            _ => {}
        }
    }
    out.push_str(&format!(
        "Contact: <sip:uas@{contact}>\r\nContent-Length: 0\r\n\r\n"
    ));
    out
}

fn invite(from_agent: &str, ruri: &str, caller: &str, call: &str) -> String {
    format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {from_agent};branch=z9hG4bK-{call}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{caller}>;tag=caller\r\nTo: <{ruri}>\r\n\
         Call-ID: {call}\r\nCSeq: 1 INVITE\r\nContact: <sip:uac@{from_agent}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

fn in_dialog(
    method: &str,
    agent: &str,
    ruri: &str,
    route: &[String],
    from_to: (&str, &str),
    call: &str,
) -> String {
    let routes: String = route.iter().map(|r| format!("Route: {r}\r\n")).collect();
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {agent};branch=z9hG4bK-{method}-{call}\r\n\
         Max-Forwards: 70\r\n{routes}From: {}\r\nTo: {}\r\nCall-ID: {call}\r\n\
         CSeq: 2 {method}\r\nContent-Length: 0\r\n\r\n",
        from_to.0, from_to.1
    )
}

const CLOUD: &str = "127.0.0.3:5060";
const GW1_REMOTE: &str = "127.0.0.6:5060";

#[test]
fn erin_handed_over_by_the_lab_crosses_both_appliances_with_ack_and_bye() {
    let mut net = Net::new();
    let lab_cloud = net.nodes[0].cloud;
    let remote_gw = net.nodes[1].gw;
    net.send(
        CLOUD,
        lab_cloud,
        &invite(
            CLOUD,
            "sip:+14255550199@ap.lab.example;user=phone",
            "erin@lab.example",
            "erin-1",
        ),
    );
    let (from, inv) = net.one(GW1_REMOTE, "INVITE ");
    assert_eq!(from, remote_gw, "the remote appliance sends it out");
    assert!(
        inv.starts_with("INVITE sip:+14255550199@gw1.remote.example"),
        "{inv}"
    );
    net.send(GW1_REMOTE, remote_gw, &reply(&inv, 200, GW1_REMOTE));
    let (from, ok) = net.one(CLOUD, "SIP/2.0 200");
    assert_eq!(from, lab_cloud);
    let mut route = record_routes(&ok);
    route.reverse();
    let (caller, callee) = (header(&ok, "From").to_owned(), header(&ok, "To").to_owned());
    net.send(
        CLOUD,
        lab_cloud,
        &in_dialog(
            "ACK",
            CLOUD,
            &format!("sip:uas@{GW1_REMOTE}"),
            &route,
            (&caller, &callee),
            "erin-1",
        ),
    );
    let (from, ack) = net.one(GW1_REMOTE, "ACK ");
    assert_eq!(from, remote_gw, "{ack}");
    // gw1.remote hangs up.
    net.send(
        GW1_REMOTE,
        remote_gw,
        &in_dialog(
            "BYE",
            GW1_REMOTE,
            &format!("sip:uac@{CLOUD}"),
            &record_routes(&inv),
            (&callee, &caller),
            "erin-1",
        ),
    );
    let (from, bye) = net.one(CLOUD, "BYE ");
    assert_eq!(from, lab_cloud, "{bye}");
    net.send(CLOUD, lab_cloud, &reply(&bye, 200, CLOUD));
    let (_, bye_ok) = net.one(GW1_REMOTE, "SIP/2.0 200");
    assert!(bye_ok.contains("CSeq: 2 BYE"), "{bye_ok}");
}

#[test]
fn alice_handed_over_by_the_remote_reaches_lab_and_the_cloud_can_hang_up() {
    let mut net = Net::new();
    let lab_gw = net.nodes[0].gw;
    let remote_cloud = net.nodes[1].cloud;
    net.send(
        CLOUD,
        remote_cloud,
        &invite(
            CLOUD,
            "sip:+33144556677@ap.remote.example;user=phone",
            "alice@lab.example",
            "alice-1",
        ),
    );
    let mut got = net.take("127.0.0.2:5060", "INVITE ");
    got.extend(net.take("127.0.0.5:5060", "INVITE "));
    assert_eq!(got.len(), 1, "one gateway of lab: {got:?}");
    let (from, inv) = got.remove(0);
    assert_eq!(from, lab_gw, "the lab appliance sends it out");
    let gw = if inv.starts_with("INVITE sip:+33144556677@gw1.lab.example") {
        "127.0.0.2:5060"
    } else {
        assert!(
            inv.starts_with("INVITE sip:+33144556677@gw2.lab.example"),
            "{inv}"
        );
        "127.0.0.5:5060"
    };
    net.send(gw, lab_gw, &reply(&inv, 200, gw));
    let (from, ok) = net.one(CLOUD, "SIP/2.0 200");
    assert_eq!(from, remote_cloud);
    let mut route = record_routes(&ok);
    route.reverse();
    let (caller, callee) = (header(&ok, "From").to_owned(), header(&ok, "To").to_owned());
    // The cloud hangs up: remote → lab → the gateway.
    net.send(
        CLOUD,
        remote_cloud,
        &in_dialog(
            "BYE",
            CLOUD,
            &format!("sip:uas@{gw}"),
            &route,
            (&caller, &callee),
            "alice-1",
        ),
    );
    let (from, bye) = net.one(gw, "BYE ");
    assert_eq!(from, lab_gw, "{bye}");
}

#[test]
fn a_lab_gateway_is_refused_by_the_remote_appliance_and_bob_by_his_policy() {
    let mut net = Net::new();
    let remote_gw = net.nodes[1].gw;
    let remote_cloud = net.nodes[1].cloud;
    net.send(
        "127.0.0.2:5060",
        remote_gw,
        &invite(
            "127.0.0.2:5060",
            "sip:+14255550100@mediation.remote.example;user=phone",
            "+12065550100@gw1.lab.example",
            "gw1-x",
        ),
    );
    let (_, r) = net.one("127.0.0.2:5060", "SIP/2.0 403");
    assert!(r.contains("Call-ID: gw1-x"), "{r}");
    // bob through the remote appliance: handed to lab, refused there by his policy; the
    // refusal comes back to the cloud (the remote appliance does not fail over on a 403).
    net.send(
        CLOUD,
        remote_cloud,
        &invite(
            CLOUD,
            "sip:+33144556677@ap.remote.example;user=phone",
            "bob@lab.example",
            "bob-1",
        ),
    );
    let (_, r) = net.one(CLOUD, "SIP/2.0 403");
    assert!(r.contains("Call-ID: bob-1"), "{r}");
    assert!(net.take("127.0.0.2:5060", "INVITE ").is_empty());
}

/// Three cloud peers, the first silent: the call goes to the second when the failover timer
/// expires, and never to the third.
#[test]
fn a_silent_first_cloud_peer_hands_the_call_to_the_second_after_the_failover_timer() {
    let mut net = Net::new();
    let t0 = net.now;
    net.nodes[0] = node_with("sipedge.toml", "127.0.0.1", t0, |t| {
        t.replace(
            "fqdn = \"sip.cloud.lab.example\"",
            "fqdns = [\"sip.cloud.lab.example\", \"sip2.cloud.lab.example\", \"sip3.cloud.lab.example\"]",
        )
        .replace(
            "[hosts]\n",
            "[hosts]\n\"sip2.cloud.lab.example\" = \"127.0.0.8\"\n\"sip3.cloud.lab.example\" = \"127.0.0.9\"\n",
        )
        .replace("failover_timer_s = 10", "failover_timer_s = 2")
    });
    let lab_gw = net.nodes[0].gw;
    net.send(
        "127.0.0.2:5060",
        lab_gw,
        &invite(
            "127.0.0.2:5060",
            "sip:+14255550100@mediation.lab.example;user=phone",
            "+12065550100@gw1.lab.example",
            "fo-1",
        ),
    );
    let (_, first) = net.one(CLOUD, "INVITE ");
    assert!(first.starts_with("INVITE sip:alice@lab.example"), "{first}");
    net.advance(t0 + std::time::Duration::from_millis(1900));
    assert!(
        net.take("127.0.0.8:5060", "INVITE ").is_empty(),
        "not before the timer"
    );
    net.advance(t0 + std::time::Duration::from_millis(2100));
    let (from, second) = net.one("127.0.0.8:5060", "INVITE ");
    assert_eq!(from, net.nodes[0].cloud);
    assert!(
        second.starts_with("INVITE sip:alice@lab.example"),
        "{second}"
    );
    // The silent one never rang: no CANCEL for it (RFC 3261 §9.1); the second answers and
    // the third is never tried.
    assert!(net.take(CLOUD, "CANCEL ").is_empty());
    net.send(
        "127.0.0.8:5060",
        net.nodes[0].cloud,
        &reply(&second, 200, "127.0.0.8:5060"),
    );
    let (_, ok) = net.one("127.0.0.2:5060", "SIP/2.0 200");
    assert!(ok.contains("Call-ID: fo-1"), "{ok}");
    assert!(net.take("127.0.0.9:5060", "INVITE ").is_empty());
}

/// 911 from bob (international calls disallowed) and from carol (no site) reaches a gateway
/// of lab with the number unchanged.
#[test]
fn emergency_calls_of_bob_and_carol_reach_a_lab_gateway() {
    let mut net = Net::new();
    let lab_cloud = net.nodes[0].cloud;
    for (caller, call) in [
        ("bob@lab.example", "sos-bob"),
        ("carol@lab.example", "sos-carol"),
    ] {
        net.send(
            CLOUD,
            lab_cloud,
            &invite(CLOUD, "sip:911@ap.lab.example;user=phone", caller, call),
        );
        let mut got = net.take("127.0.0.2:5060", "INVITE ");
        got.extend(net.take("127.0.0.5:5060", "INVITE "));
        assert_eq!(got.len(), 1, "{caller}: {got:?}");
        assert!(got[0].1.starts_with("INVITE sip:911@gw"), "{}", got[0].1);
        assert!(
            net.take(CLOUD, "SIP/2.0 4").is_empty(),
            "{caller}: no refusal"
        );
    }
}
