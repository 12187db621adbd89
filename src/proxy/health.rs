//! Target health from OPTIONS (Teams Direct Routing style), sans-IO like the core.
//!
//! Every `options_interval` the core sends an OPTIONS to each gateway whose `send_options` is
//! set, to every cloud peer and to the other sites' mediation servers. Any response (whatever its status: the far end is alive) within
//! the health window (3 intervals) keeps a target healthy; a target with no response in the
//! window is *demoted*: routing tries it last, never skips it. A response promotes it again at
//! once. Each change is logged once.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::routing::{NextHop, RoutingTable};

/// How many intervals without an answer demote a target.
pub const WINDOW_INTERVALS: u32 = 3;

/// One probed target.
#[derive(Debug, Clone)]
struct Probed {
    hop: NextHop,
    /// The last time any response came back (start time before the first).
    last_answer: Instant,
}

/// The health monitor: which targets are probed, when they last answered, which are demoted.
#[derive(Debug)]
pub struct Health {
    interval: Duration,
    window: Duration,
    targets: Vec<Probed>,
    demoted: HashSet<String>,
    next_probe: Instant,
    /// Health changes so far (for metrics).
    pub changes: u64,
}

impl Health {
    /// Probes every gateway with `send_options`, the cloud peers and the other sites' mediation
    /// servers; the first round goes out one
    /// interval after `now` (start-up is not the moment to probe: the targets count as healthy
    /// until a window passes without an answer).
    pub fn new(now: Instant, table: &RoutingTable, interval: Duration) -> Health {
        let mut targets: Vec<Probed> = table
            .gateways
            .iter()
            .filter(|g| g.send_options)
            .map(|g| Probed {
                hop: g.hop.clone(),
                last_answer: now,
            })
            .collect();
        targets.extend(table.cloud_peers.iter().map(|p| Probed {
            hop: p.clone(),
            last_answer: now,
        }));
        // Other sites' appliances, which calls of their users are handed to.
        targets.extend(table.other_appliances().map(|(_, m)| Probed {
            hop: m.clone(),
            last_answer: now,
        }));
        Health {
            interval,
            window: interval * WINDOW_INTERVALS,
            targets,
            demoted: HashSet::new(),
            next_probe: now + interval,
            changes: 0,
        }
    }

    /// A reloaded table: the targets become those of `table` (a target kept keeps its last
    /// answer and its health; a new one counts as healthy from `now`; a removed one is
    /// forgotten). The next round stays when it was due; `interval` applies from then on.
    pub fn retarget(&mut self, now: Instant, table: &RoutingTable, interval: Duration) {
        let fresh = Health::new(now, table, interval);
        let old = std::mem::take(&mut self.targets);
        self.targets = fresh
            .targets
            .into_iter()
            .map(|mut t| {
                if let Some(o) = old.iter().find(|o| o.hop.name == t.hop.name) {
                    t.last_answer = o.last_answer;
                }
                t
            })
            .collect();
        let names: HashSet<&str> = self.targets.iter().map(|t| t.hop.name.as_str()).collect();
        self.demoted.retain(|n| names.contains(n.as_str()));
        self.interval = interval;
        self.window = fresh.window;
    }

    pub fn next_probe(&self) -> Instant {
        self.next_probe
    }

    pub fn demoted(&self) -> &HashSet<String> {
        &self.demoted
    }

    /// Health of every probed target by name (true: healthy).
    pub fn states(&self) -> HashMap<String, bool> {
        self.targets
            .iter()
            .map(|t| (t.hop.name.clone(), !self.demoted.contains(&t.hop.name)))
            .collect()
    }

    /// Time to probe: re-evaluates health and returns the targets to send an OPTIONS to (empty
    /// when it is not time yet).
    pub fn poll_probe(&mut self, now: Instant) -> Vec<NextHop> {
        if now < self.next_probe {
            return Vec::new();
        }
        self.next_probe = now + self.interval;
        for t in &self.targets {
            let silent = now.saturating_duration_since(t.last_answer) > self.window;
            let name = &t.hop.name;
            if silent && self.demoted.insert(name.clone()) {
                self.changes += 1;
                warn!(target = %name, window_s = self.window.as_secs(), "health: no OPTIONS answer within the window; demoted (tried last)");
            }
        }
        self.targets.iter().map(|t| t.hop.clone()).collect()
    }

    /// A response to one of our OPTIONS came from `name`.
    pub fn on_answer(&mut self, now: Instant, name: &str) {
        // Health is a name's: an answer from any of its addresses keeps every one of them.
        for t in self.targets.iter_mut().filter(|t| t.hop.name == name) {
            t.last_answer = now;
        }
        if self.demoted.remove(name) {
            self.changes += 1;
            info!(target = %name, "health: answering OPTIONS again; promoted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn table() -> RoutingTable {
        let cfg = Config::from_toml(
            Path::new("config/sipedge.toml"),
            include_str!("../../config/sipedge.toml"),
        )
        .unwrap();
        RoutingTable::build(&cfg, &|n| cfg.static_host(n)).unwrap()
    }

    #[test]
    fn silent_target_is_demoted_after_the_window_and_promoted_on_answer() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut h = Health::new(t0, &table(), s);
        assert!(h.poll_probe(t0).is_empty(), "not before the interval");
        assert!(
            h.poll_probe(t0 + s / 2).is_empty(),
            "not before the interval"
        );
        for k in 1..=3 {
            let now = t0 + s * k;
            h.on_answer(now, "gw2.lab.example");
            h.on_answer(now, "sip.cloud.lab.example");
            h.on_answer(now, "gw1.remote.example");
            h.on_answer(now, "mediation.remote.example");
            let round = h.poll_probe(now);
            // Three gateways (send_options defaults to true), the cloud peer and the remote
            // site's mediation server.
            assert_eq!(round.len(), 5);
            assert!(h.demoted().is_empty(), "within the window at {k} s");
        }
        let now = t0 + s * 4 + Duration::from_millis(1);
        h.on_answer(now, "gw2.lab.example");
        h.on_answer(now, "sip.cloud.lab.example");
        h.on_answer(now, "gw1.remote.example");
        h.on_answer(now, "mediation.remote.example");
        h.poll_probe(now);
        assert!(h.demoted().contains("gw1.lab.example"));
        assert_eq!(h.demoted().len(), 1);
        assert_eq!(h.changes, 1);
        // Still silent: no second change logged.
        h.poll_probe(now + s);
        assert_eq!(h.changes, 1);
        h.on_answer(now + s, "gw1.lab.example");
        assert!(h.demoted().is_empty());
        assert_eq!(h.changes, 2);
        assert_eq!(h.states().get("gw1.lab.example"), Some(&true));
    }

    #[test]
    fn retarget_keeps_known_targets_health_and_adds_new_ones() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut h = Health::new(t0, &table(), s);
        for k in 1..=4 {
            h.poll_probe(t0 + s * k);
        }
        h.on_answer(t0 + s * 4, "gw2.lab.example");
        h.on_answer(t0 + s * 4, "sip.cloud.lab.example");
        h.on_answer(t0 + s * 4, "gw1.remote.example");
        h.on_answer(t0 + s * 4, "mediation.remote.example");
        h.poll_probe(t0 + s * 5);
        assert_eq!(h.demoted().len(), 1);
        assert!(h.demoted().contains("gw1.lab.example"));
        let text = include_str!("../../config/sipedge.toml").replace(
            "[[gateways]]\nname = \"gw1.remote.example\"",
            "[[gateways]]\nname = \"gw3.lab.example\"\nport = 5060\ntransport = \"udp\"\nsite = \"lab\"\n\n[[gateways]]\nname = \"gw1.remote.example\"",
        ).replace("\"gw2.lab.example\" = \"127.0.0.5\"", "\"gw2.lab.example\" = \"127.0.0.5\"\n\"gw3.lab.example\" = \"127.0.0.8\"");
        let cfg = Config::from_toml(Path::new("config/sipedge.toml"), &text).unwrap();
        let bigger = RoutingTable::build(&cfg, &|n| cfg.static_host(n)).unwrap();
        h.retarget(t0 + s * 5, &bigger, s * 2);
        let states = h.states();
        assert_eq!(states.len(), 6, "{states:?}");
        assert_eq!(states.get("gw3.lab.example"), Some(&true));
        assert_eq!(states.get("gw1.lab.example"), Some(&false), "health kept");
        // A smaller table forgets the removed target, demoted or not.
        let text = include_str!("../../config/sipedge.toml").replace(
            "[[gateways]]\nname = \"gw1.lab.example\"\nport = 5060\ntransport = \"udp\"\nsite = \"lab\"\n",
            "",
        )
        .replace("peers = { \"gw1.lab.example\" = 5000 }\n", "");
        let cfg = Config::from_toml(Path::new("config/sipedge.toml"), &text).unwrap();
        let smaller = RoutingTable::build(&cfg, &|n| cfg.static_host(n)).unwrap();
        h.retarget(t0 + s * 6, &smaller, s);
        assert!(h.demoted().is_empty());
        assert!(!h.states().contains_key("gw1.lab.example"));
    }

    /// The core sends the probes on its own timer, consumes the answers (nothing is relayed)
    /// and demotes the silent gateway.
    #[test]
    fn core_probes_consumes_answers_and_demotes_the_silent() {
        use crate::flow::{Flow, Inbound};
        use crate::proxy::Core;
        use crate::routing::Directory;
        use crate::sip::Message;
        use std::sync::Arc;

        let text = include_str!("../../config/sipedge.toml")
            .replace("options_interval_s = 60", "options_interval_s = 1");
        let cfg = Config::from_toml(Path::new("config/sipedge.toml"), &text).unwrap();
        let table = RoutingTable::build(&cfg, &|n| cfg.static_host(n)).unwrap();
        let dir = Arc::new(arc_swap::ArcSwap::from_pointee(Directory::from_config(
            &cfg,
        )));
        let t0 = Instant::now();
        let mut core = Core::new(t0, Arc::new(cfg), table, HashMap::new(), dir);
        assert_eq!(core.poll_timeout(), Some(t0 + Duration::from_secs(1)));
        let answer = |core: &mut Core, now: Instant, who: &[&str]| {
            let mut sent = Vec::new();
            while let Some(t) = core.poll_transmit() {
                sent.push(t);
            }
            for t in &sent {
                let req = String::from_utf8_lossy(&t.data).into_owned();
                assert!(req.starts_with("OPTIONS sip:"), "{req}");
                let name = req.split([':', ' ']).nth(2).unwrap_or("").to_owned();
                if !who.contains(&name.as_str()) {
                    continue;
                }
                let mut resp = String::from("SIP/2.0 200 OK\r\n");
                for l in req.lines() {
                    let h = l.split(':').next().unwrap_or("");
                    if ["Via", "From", "Call-ID", "CSeq"].contains(&h) {
                        resp.push_str(&format!("{l}\r\n"));
                    } else if h == "To" {
                        resp.push_str(&format!("{l};tag=x\r\n"));
                    }
                }
                resp.push_str("Content-Length: 0\r\n\r\n");
                let msg = Message::parse(bytes::Bytes::from(resp)).unwrap();
                let flow = Flow {
                    side: t.side,
                    transport: t.transport,
                    local: "127.0.0.1:5068".parse().unwrap(),
                    remote: t.remote,
                    conn: None,
                    identity: None,
                };
                core.handle_inbound(now, Inbound::Message(flow, msg));
                assert!(
                    core.poll_transmit().is_none(),
                    "an OPTIONS answer is never relayed"
                );
            }
            sent
        };
        let now = t0 + Duration::from_secs(1);
        core.handle_timeout(now);
        let first = answer(
            &mut core,
            now,
            &["gw2.lab.example", "sip.cloud.lab.example"],
        );
        assert_eq!(
            first.len(),
            5,
            "three gateways, the cloud peer, the remote mediation server"
        );
        assert!(first.iter().any(|t| t
            .data
            .starts_with(b"OPTIONS sip:mediation.remote.example:5068")));
        let to_gw1 = first
            .iter()
            .map(|t| String::from_utf8_lossy(&t.data).into_owned())
            .find(|r| r.starts_with("OPTIONS sip:gw1.lab.example"))
            .unwrap();
        assert!(
            to_gw1.contains("Contact: <sip:mediation.lab.example:"),
            "{to_gw1}"
        );
        for k in 2..=5u64 {
            let now = t0 + Duration::from_millis(1000 * k + 1);
            core.handle_timeout(now);
            answer(
                &mut core,
                now,
                &["gw2.lab.example", "sip.cloud.lab.example"],
            );
        }
        let states = core.health_states();
        assert_eq!(states.get("gw1.lab.example"), Some(&false));
        assert_eq!(states.get("gw2.lab.example"), Some(&true));
        assert_eq!(states.get("sip.cloud.lab.example"), Some(&true));
        assert_eq!(states.get("mediation.remote.example"), Some(&false));
        assert!(core.live().demoted.contains("gw1.lab.example"));
    }

    /// Session caps count INVITE branches still in progress: with gw1 capped at one session,
    /// a second call while the first rings goes to gw2 first.
    #[test]
    fn core_counts_pending_invites_against_session_caps() {
        use crate::config::{Side, Transport};
        use crate::flow::{Flow, Inbound};
        use crate::proxy::Core;
        use crate::routing::Directory;
        use crate::sip::Message;
        use std::sync::Arc;

        let text = include_str!("../../config/sipedge.toml")
            .replace(
                "name = \"gw1.lab.example\"\nport = 5060",
                "name = \"gw1.lab.example\"\nmax_sessions = 1\nport = 5060",
            )
            .replace(
                "name = \"gw2.lab.example\"\nport = 5060",
                "name = \"gw2.lab.example\"\npriority = 1\nport = 5060",
            );
        let cfg = Config::from_toml(Path::new("config/sipedge.toml"), &text).unwrap();
        let table = RoutingTable::build(&cfg, &|n| cfg.static_host(n)).unwrap();
        let dir = Arc::new(arc_swap::ArcSwap::from_pointee(Directory::from_config(
            &cfg,
        )));
        let t0 = Instant::now();
        let mut core = Core::new(t0, Arc::new(cfg), table, HashMap::new(), dir);
        let flow = Flow {
            side: Side::Cloud,
            transport: Transport::Udp,
            local: "127.0.0.1:5062".parse().unwrap(),
            remote: "127.0.0.3:5060".parse().unwrap(),
            conn: None,
            identity: None,
        };
        let first_hop = |core: &mut Core, n: u32| {
            let invite = format!(
                "INVITE sip:+14255550199@ap.lab.example;user=phone SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bKcap{n}\r\nMax-Forwards: 70\r\n\
                 From: <sip:alice@lab.example>;tag={n}\r\nTo: <sip:+14255550199@ap.lab.example>\r\n\
                 Call-ID: cap{n}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            );
            let msg = Message::parse(bytes::Bytes::from(invite)).unwrap();
            core.handle_inbound(t0, Inbound::Message(flow, msg));
            let mut to = None;
            while let Some(t) = core.poll_transmit() {
                if t.data.starts_with(b"INVITE ") {
                    to = Some(t.remote);
                }
            }
            to
        };
        assert_eq!(
            first_hop(&mut core, 1),
            Some("127.0.0.2:5060".parse().unwrap())
        );
        assert_eq!(core.live().sessions.get("gw1.lab.example"), Some(&1));
        assert_eq!(
            first_hop(&mut core, 2),
            Some("127.0.0.5:5060".parse().unwrap()),
            "gw1 is at its cap while the first call is pending"
        );
    }
}
