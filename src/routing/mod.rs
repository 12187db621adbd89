//! Routing policy, pure: `(request, identity of the sender, routing table) -> Decision + trace`.
//!
//! Nothing here does IO or reads the clock: the table is built once from the validated
//! configuration (names already resolved by the IO layer) and handed in; the caller passes a
//! `spread` counter so that spreading across gateways of equal priority is deterministic in
//! tests.
//!
//! The rules implemented here are the foundation's: a request from a gateway of this
//! appliance's site goes to the cloud peer; a request from the cloud peer goes to a gateway of
//! this site, spread across them, the others following as failover candidates. Every decision
//! carries a trace saying why.

use std::net::{IpAddr, SocketAddr};

use crate::config::{Config, Side, Transport};
use crate::sip::{Message, Scheme};

/// Where a request (or a whole call) can be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    /// The name we use for it: an FQDN (for the Request-URI host, TLS SNI and logs) or an IP.
    pub name: String,
    pub addr: SocketAddr,
    pub transport: Transport,
    /// The side of the appliance this hop lives on.
    pub side: Side,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayEntry {
    pub name: String,
    pub site: String,
    pub priority: u8,
    pub weight: u16,
    pub hop: NextHop,
}

/// The routing table: configuration with every name resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingTable {
    pub own_site: String,
    /// Our own names: mediation FQDN, access edge FQDN (lower-case).
    pub own_names: Vec<String>,
    pub cloud_peer: NextHop,
    pub gateways: Vec<GatewayEntry>,
}

/// Who sent a request, as established by the transport (source address today; the verified
/// certificate with TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    Gateway { name: String, site: String },
    CloudPeer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Try `targets` in order: the first, then the next on failure.
    Forward {
        targets: Vec<NextHop>,
        /// `Some(host)`: rewrite the Request-URI host to the target's name.
        rewrite_host: bool,
    },
    Reject {
        status: u16,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub decision: Decision,
    pub trace: Vec<String>,
}

/// A name resolver for building the table: static entries, then the system (done by the
/// caller, which passes a closure).
pub type Resolve<'a> = dyn Fn(&str) -> Option<IpAddr> + 'a;

impl RoutingTable {
    /// Builds the table from the configuration; `resolve` maps a name to an address (static
    /// `[hosts]` entries first, then the system resolver — the IO layer decides).
    pub fn build(cfg: &Config, resolve: &Resolve<'_>) -> Result<RoutingTable, String> {
        let peer_ip = resolve(cfg.cloud_peer.fqdn.as_str())
            .ok_or_else(|| format!("cloud peer {} does not resolve", cfg.cloud_peer.fqdn))?;
        let cloud_peer = NextHop {
            name: cfg.cloud_peer.fqdn.to_string(),
            addr: SocketAddr::new(peer_ip, cfg.cloud_peer.port),
            transport: cfg.cloud_peer.transport,
            side: Side::Cloud,
        };
        let mut gateways = Vec::new();
        for g in &cfg.gateways {
            let name = g.name.to_string();
            let ip = resolve(&name).ok_or_else(|| format!("gateway {name} does not resolve"))?;
            gateways.push(GatewayEntry {
                name: name.clone(),
                site: g.site.clone(),
                priority: g.priority,
                weight: g.weight,
                hop: NextHop {
                    name,
                    addr: SocketAddr::new(ip, g.port),
                    transport: g.transport,
                    side: Side::Gateway,
                },
            });
        }
        Ok(RoutingTable {
            own_site: cfg.appliance.site.clone(),
            own_names: vec![
                cfg.appliance.mediation_fqdn.to_string(),
                cfg.appliance.access_edge_fqdn.to_string(),
            ],
            cloud_peer,
            gateways,
        })
    }

    /// Identifies the sender of a request by the side it arrived on and its source address.
    pub fn identify(&self, side: Side, src: IpAddr) -> Option<Sender> {
        match side {
            Side::Cloud => (self.cloud_peer.addr.ip() == src).then_some(Sender::CloudPeer),
            Side::Gateway => self
                .gateways
                .iter()
                .find(|g| g.hop.addr.ip() == src)
                .map(|g| Sender::Gateway {
                    name: g.name.clone(),
                    site: g.site.clone(),
                }),
        }
    }

    /// Identifies the sender of a request from its flow. With a verified TLS certificate
    /// identity (`Some`), the identity alone decides, never the source address: on the gateway
    /// side the gateway whose configured name equals it (names compare case-insensitively,
    /// IP-named gateways by address value); on the cloud side the transport's verifier admitted
    /// only the cloud peer's configured names (or we connected to the cloud peer by its FQDN),
    /// so a verified identity is the cloud peer. Without one (UDP, TCP) the address rule of
    /// [`RoutingTable::identify`] applies.
    pub fn identify_flow(&self, side: Side, src: IpAddr, identity: Option<&str>) -> Option<Sender> {
        let Some(id) = identity else {
            return self.identify(side, src);
        };
        let same = |name: &str| match (name.parse::<IpAddr>(), id.parse::<IpAddr>()) {
            (Ok(a), Ok(b)) => a == b,
            (Err(_), Err(_)) => name
                .trim_end_matches('.')
                .eq_ignore_ascii_case(id.trim_end_matches('.')),
            _ => false,
        };
        match side {
            Side::Cloud => Some(Sender::CloudPeer),
            Side::Gateway => {
                self.gateways
                    .iter()
                    .find(|g| same(&g.name))
                    .map(|g| Sender::Gateway {
                        name: g.name.clone(),
                        site: g.site.clone(),
                    })
            }
        }
    }

    /// The names to verify TLS servers against, by the address each hop resolved to.
    pub fn tls_names(&self) -> Vec<(Side, IpAddr, String)> {
        let mut v = vec![(
            Side::Cloud,
            self.cloud_peer.addr.ip(),
            self.cloud_peer.name.clone(),
        )];
        v.extend(
            self.gateways
                .iter()
                .map(|g| (Side::Gateway, g.hop.addr.ip(), g.name.clone())),
        );
        v
    }

    /// Gateways of this appliance's site in trial order: priority groups first (lower value
    /// first), equal priority rotated by `spread` so load spreads evenly.
    pub fn site_gateways(&self, spread: u64) -> Vec<&GatewayEntry> {
        let mut gws: Vec<&GatewayEntry> = self
            .gateways
            .iter()
            .filter(|g| g.site == self.own_site)
            .collect();
        gws.sort_by_key(|g| g.priority);
        let mut out = Vec::with_capacity(gws.len());
        let mut i = 0;
        while i < gws.len() {
            let p = gws[i].priority;
            let group: Vec<&GatewayEntry> = gws[i..]
                .iter()
                .take_while(|g| g.priority == p)
                .copied()
                .collect();
            let n = group.len();
            // Weighted rotation: expand the start index over the sum of weights.
            let total: u64 = group.iter().map(|g| u64::from(g.weight)).sum();
            let mut pick = spread % total.max(1);
            let mut start = 0;
            for (k, g) in group.iter().enumerate() {
                if pick < u64::from(g.weight) {
                    start = k;
                    break;
                }
                pick -= u64::from(g.weight);
            }
            out.extend((0..n).map(|k| group[(start + k) % n]));
            i += n;
        }
        out
    }
}

/// Decides where a dialog-creating or out-of-dialog request goes.
pub fn route(req: &Message, sender: &Sender, table: &RoutingTable, spread: u64) -> Routed {
    let mut trace = Vec::new();
    let reject = |status: u16, reason: String, mut trace: Vec<String>| {
        trace.push(format!("reject {status}: {reason}"));
        Routed {
            decision: Decision::Reject { status, reason },
            trace,
        }
    };
    let Some(uri) = req.request_uri() else {
        return reject(400, "no Request-URI".into(), trace);
    };
    if !matches!(uri.scheme(), Scheme::Sip | Scheme::Sips | Scheme::Tel) {
        return reject(416, "Unsupported URI Scheme".into(), trace);
    }
    match sender {
        Sender::Gateway { name, site } => {
            trace.push(format!("sender: gateway {name} of site {site}"));
            if *site != table.own_site {
                return reject(
                    403,
                    format!(
                        "gateway {name} belongs to site {site}; this appliance serves site {}",
                        table.own_site
                    ),
                    trace,
                );
            }
            trace.push(format!("target: cloud peer {}", table.cloud_peer.name));
            Routed {
                decision: Decision::Forward {
                    targets: vec![table.cloud_peer.clone()],
                    rewrite_host: true,
                },
                trace,
            }
        }
        Sender::CloudPeer => {
            trace.push("sender: cloud peer".into());
            let gws = table.site_gateways(spread);
            if gws.is_empty() {
                return reject(
                    503,
                    format!("no gateway configured for site {}", table.own_site),
                    trace,
                );
            }
            trace.push(format!(
                "site {}: gateways in order {}",
                table.own_site,
                gws.iter()
                    .map(|g| g.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            Routed {
                decision: Decision::Forward {
                    targets: gws.into_iter().map(|g| g.hop.clone()).collect(),
                    rewrite_host: true,
                },
                trace,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn table() -> RoutingTable {
        let cfg = Config::from_toml(
            Path::new("config/sipedge.toml"),
            include_str!("../../config/sipedge.toml"),
        )
        .unwrap();
        RoutingTable::build(&cfg, &|n| cfg.static_host(n)).unwrap()
    }

    fn invite(ruri: &str) -> Message {
        let text = format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK1\r\n\
             Max-Forwards: 70\r\nFrom: <sip:a@x.example>;tag=1\r\nTo: <{ruri}>\r\n\
             Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        Message::parse(bytes::Bytes::from(text)).unwrap()
    }

    #[test]
    fn identify_by_side_and_source() {
        let t = table();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            t.identify(Side::Gateway, ip("127.0.0.2")),
            Some(Sender::Gateway {
                name: "gw1.lab.example".into(),
                site: "lab".into()
            })
        );
        assert_eq!(
            t.identify(Side::Cloud, ip("127.0.0.3")),
            Some(Sender::CloudPeer)
        );
        // The cloud peer's address means nothing on the gateway side, and vice versa.
        assert_eq!(t.identify(Side::Gateway, ip("127.0.0.3")), None);
        assert_eq!(t.identify(Side::Cloud, ip("127.0.0.2")), None);
        assert_eq!(t.identify(Side::Gateway, ip("127.0.0.9")), None);
    }

    #[test]
    fn tls_identity_decides_never_the_source_address() {
        let t = table();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let gw = |n: &str, s: &str| {
            Some(Sender::Gateway {
                name: n.into(),
                site: s.into(),
            })
        };
        // gw2's certificate over a connection from gw1's address (or stunnel's) is gw2.
        assert_eq!(
            t.identify_flow(Side::Gateway, ip("127.0.0.2"), Some("gw2.lab.example")),
            gw("gw2.lab.example", "lab")
        );
        assert_eq!(
            t.identify_flow(Side::Gateway, ip("127.0.0.1"), Some("GW1.lab.example.")),
            gw("gw1.lab.example", "lab")
        );
        // Another site's gateway is identified as such (routing refuses it with 403).
        assert_eq!(
            t.identify_flow(Side::Gateway, ip("127.0.0.1"), Some("gw1.remote.example")),
            gw("gw1.remote.example", "remote")
        );
        // An unconfigured identity is nobody, even from a configured gateway's address.
        assert_eq!(
            t.identify_flow(Side::Gateway, ip("127.0.0.2"), Some("gw9.lab.example")),
            None
        );
        // Without an identity the address rule applies.
        assert_eq!(
            t.identify_flow(Side::Gateway, ip("127.0.0.2"), None),
            gw("gw1.lab.example", "lab")
        );
        assert_eq!(t.identify_flow(Side::Cloud, ip("127.0.0.9"), None), None);
        assert_eq!(
            t.identify_flow(Side::Cloud, ip("127.0.0.9"), Some("sip.cloud.lab.example")),
            Some(Sender::CloudPeer)
        );
        let names = t.tls_names();
        assert!(names.contains(&(
            Side::Cloud,
            ip("127.0.0.3"),
            "sip.cloud.lab.example".to_string()
        )));
        assert!(names.contains(&(
            Side::Gateway,
            ip("127.0.0.5"),
            "gw2.lab.example".to_string()
        )));
    }

    #[test]
    fn gateway_call_goes_to_the_cloud_peer() {
        let t = table();
        let r = route(
            &invite("sip:+14255550100@mediation.lab.example"),
            &Sender::Gateway {
                name: "gw1.lab.example".into(),
                site: "lab".into(),
            },
            &t,
            0,
        );
        match r.decision {
            Decision::Forward { targets, .. } => {
                assert_eq!(targets.len(), 1);
                assert_eq!(targets[0].name, "sip.cloud.lab.example");
                assert_eq!(targets[0].addr, "127.0.0.3:5060".parse().unwrap());
                assert_eq!(targets[0].side, Side::Cloud);
            }
            d => panic!("{d:?}"),
        }
        assert!(r.trace.iter().any(|l| l.contains("gw1.lab.example")));
    }

    #[test]
    fn gateway_of_another_site_is_refused() {
        let r = route(
            &invite("sip:+14255550100@mediation.lab.example"),
            &Sender::Gateway {
                name: "gw1.remote.example".into(),
                site: "remote".into(),
            },
            &table(),
            0,
        );
        assert!(
            matches!(r.decision, Decision::Reject { status: 403, ref reason } if reason.contains("site remote"))
        );
    }

    #[test]
    fn cloud_call_spreads_over_site_gateways_with_failover_order() {
        let t = table();
        let order = |spread| match route(
            &invite("sip:+33144556677@ap.lab.example"),
            &Sender::CloudPeer,
            &t,
            spread,
        )
        .decision
        {
            Decision::Forward { targets, .. } => {
                targets.into_iter().map(|h| h.name).collect::<Vec<_>>()
            }
            d => panic!("{d:?}"),
        };
        assert_eq!(order(0), vec!["gw1.lab.example", "gw2.lab.example"]);
        assert_eq!(order(1), vec!["gw2.lab.example", "gw1.lab.example"]);
        // gw1.remote.example is never a candidate for site lab.
        assert!(!order(2).iter().any(|n| n.contains("remote")));
    }

    #[test]
    fn unknown_scheme_is_416() {
        let r = route(
            &invite("mailto:x@example.com"),
            &Sender::CloudPeer,
            &table(),
            0,
        );
        assert!(matches!(r.decision, Decision::Reject { status: 416, .. }));
    }
}
