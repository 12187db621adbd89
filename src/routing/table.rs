//! The routing table: the configuration with every name resolved, built once when the proxy
//! starts (the IO layer resolves the names and passes a [`Resolve`] closure).
//!
//! It holds the cloud peer, the gateways (with their site, priority, weight, session cap) and
//! the PSTN sites with their mediation servers, and answers the questions asked of the
//! configuration: which names need resolving, who sent a request (by the flow's verified TLS
//! identity, else by its source address), which names verify TLS servers, which site a
//! mediation server belongs to.

use std::net::{IpAddr, SocketAddr};

use super::dialplan::DialPlan;
use crate::config::{Config, Side, Transport};

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
    /// Most concurrent sessions; `None`: no cap.
    pub max_sessions: Option<u32>,
    /// Probe it with OPTIONS.
    pub send_options: bool,
    pub hop: NextHop,
}

/// A PSTN site with its mediation servers resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteEntry {
    pub name: String,
    /// Lower-case.
    pub access_edge_fqdn: String,
    pub mediation_servers: Vec<NextHop>,
    /// Dialled strings always routed to this site's gateways.
    pub emergency_numbers: Vec<String>,
    /// The site's dial plan, applied when the tenant's UseOnPremDialPlan is on.
    pub dial_plan: Option<DialPlan>,
}

/// The routing table: configuration with every name resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingTable {
    pub own_site: String,
    /// Our own names: mediation FQDN, access edge FQDN (lower-case).
    pub own_names: Vec<String>,
    /// The primary cloud peer: the name the cloud side is known by (its calls, its overload
    /// rate); the first of `cloud_peers`.
    pub cloud_peer: NextHop,
    /// Every cloud peer in priority order (`cloud_peer` first).
    pub cloud_peers: Vec<NextHop>,
    pub gateways: Vec<GatewayEntry>,
    pub sites: Vec<SiteEntry>,
}

/// Who sent a request, as established by the transport (source address today; the verified
/// certificate with TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    Gateway {
        name: String,
        site: String,
    },
    /// Another site's mediation server (appliance) handing over a call of a user: `fqdn` is
    /// its configured mediation FQDN.
    Appliance {
        fqdn: String,
        site: String,
    },
    CloudPeer,
}

impl Sender {
    /// The gateway-side peer's name (a gateway's name, an appliance's FQDN); `None` for the
    /// cloud peer.
    pub fn gateway_side_name(&self) -> Option<&str> {
        match self {
            Sender::Gateway { name, .. } => Some(name),
            Sender::Appliance { fqdn, .. } => Some(fqdn),
            Sender::CloudPeer => None,
        }
    }
}

/// A name resolver for building the table: static entries, then the system (done by the
/// caller, which passes a closure).
pub type Resolve<'a> = dyn Fn(&str) -> Option<IpAddr> + 'a;

/// A resolver giving every address of a name, in the resolver's order.
pub type ResolveAll<'a> = dyn Fn(&str) -> Vec<IpAddr> + 'a;

/// SRV targets of a cloud peer FQDN: addresses with their ports, in the order tried.
pub type ResolveSrv<'a> = dyn Fn(&str) -> Vec<SocketAddr> + 'a;

/// Most addresses kept for one cloud peer name.
pub const MAX_ADDRESSES_PER_NAME: usize = 8;
impl RoutingTable {
    /// Builds the table from the configuration; `resolve` maps a name to an address (static
    /// `[hosts]` entries first, then the system resolver — the IO layer decides).
    pub fn build(cfg: &Config, resolve: &Resolve<'_>) -> Result<RoutingTable, String> {
        RoutingTable::build_all(cfg, &|n| resolve(n).into_iter().collect())
    }

    /// [`RoutingTable::build`] with every address of each name: a cloud peer whose name has
    /// several addresses is one target per address (in the resolver's order, at most
    /// [`MAX_ADDRESSES_PER_NAME`]), all under its name; gateways and mediation servers take
    /// the first (their address names them).
    pub fn build_all(cfg: &Config, resolve_all: &ResolveAll<'_>) -> Result<RoutingTable, String> {
        RoutingTable::build_resolved(cfg, resolve_all, &|_| Vec::new())
    }

    /// [`RoutingTable::build_all`] where a cloud peer FQDN may have been located by SRV:
    /// `srv` gives its targets' addresses with their ports, in order (empty: none, its A/AAAA
    /// addresses at `cloud_peer.port` are used). The peer keeps its configured FQDN as name.
    pub fn build_resolved(
        cfg: &Config,
        resolve_all: &ResolveAll<'_>,
        srv: &ResolveSrv<'_>,
    ) -> Result<RoutingTable, String> {
        let resolve = |n: &str| resolve_all(n).into_iter().next();
        let mut cloud_peers = Vec::new();
        for f in &cfg.cloud_peer.fqdns {
            let mut addrs: Vec<SocketAddr> = Vec::new();
            let located = srv(f.as_str());
            let candidates: Vec<SocketAddr> = if located.is_empty() {
                resolve_all(f.as_str())
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, cfg.cloud_peer.port))
                    .collect()
            } else {
                located
            };
            for a in candidates {
                if !addrs.contains(&a) && addrs.len() < MAX_ADDRESSES_PER_NAME {
                    addrs.push(a);
                }
            }
            if addrs.is_empty() {
                return Err(format!("cloud peer {f} does not resolve"));
            }
            cloud_peers.extend(addrs.into_iter().map(|addr| NextHop {
                name: f.to_string(),
                addr,
                transport: cfg.cloud_peer.transport,
                side: Side::Cloud,
            }));
        }
        let cloud_peer = cloud_peers
            .first()
            .cloned()
            .ok_or_else(|| "no cloud peer".to_owned())?;
        let mut gateways = Vec::new();
        for g in &cfg.gateways {
            let name = g.name.to_string();
            let ip = resolve(&name).ok_or_else(|| format!("gateway {name} does not resolve"))?;
            gateways.push(GatewayEntry {
                name: name.clone(),
                site: g.site.clone(),
                priority: g.priority,
                weight: g.weight,
                max_sessions: g.max_sessions,
                send_options: g.send_options,
                hop: NextHop {
                    name,
                    addr: SocketAddr::new(ip, g.port),
                    transport: g.transport,
                    side: Side::Gateway,
                },
            });
        }
        let mut sites = Vec::new();
        for s in &cfg.sites {
            let mut servers = Vec::new();
            for m in &s.mediation_servers {
                let name = m.fqdn.to_string();
                let ip = resolve(&name)
                    .ok_or_else(|| format!("mediation server {name} does not resolve"))?;
                servers.push(NextHop {
                    name,
                    addr: SocketAddr::new(ip, m.port),
                    transport: m.transport,
                    // Another site's mediation server is reached like a trunk, on the PSTN side.
                    side: Side::Gateway,
                });
            }
            let dial_plan = match &s.dial_plan {
                None => None,
                Some(name) => {
                    let decl =
                        cfg.dial_plans
                            .iter()
                            .find(|d| &d.name == name)
                            .ok_or_else(|| {
                                format!("site {}: dial plan {name} is not defined", s.name)
                            })?;
                    Some(DialPlan::compile(decl)?)
                }
            };
            sites.push(SiteEntry {
                name: s.name.clone(),
                access_edge_fqdn: s.access_edge_fqdn.to_string(),
                mediation_servers: servers,
                emergency_numbers: s.emergency_numbers.clone(),
                dial_plan,
            });
        }
        Ok(RoutingTable {
            own_site: cfg.appliance.site.clone(),
            own_names: vec![
                cfg.appliance.mediation_fqdn.to_string(),
                cfg.appliance.access_edge_fqdn.to_string(),
            ],
            cloud_peer,
            cloud_peers,
            gateways,
            sites,
        })
    }

    /// Every name the table needs resolved: the cloud peer, gateways, mediation servers.
    pub fn names_to_resolve(cfg: &Config) -> Vec<String> {
        let mut names: Vec<String> = cfg.cloud_peer.fqdns.iter().map(|f| f.to_string()).collect();
        names.extend(cfg.gateways.iter().map(|g| g.name.to_string()));
        for s in &cfg.sites {
            names.extend(s.mediation_servers.iter().map(|m| m.fqdn.to_string()));
        }
        names
    }

    /// The mediation servers of the other sites, each with its site: the appliances that may
    /// hand us calls and that we hand calls to.
    pub fn other_appliances(&self) -> impl Iterator<Item = (&SiteEntry, &NextHop)> + '_ {
        self.sites
            .iter()
            .filter(|s| s.name != self.own_site)
            .flat_map(|s| s.mediation_servers.iter().map(move |m| (s, m)))
    }

    /// Identifies the sender of a request by the side it arrived on and its source address: on
    /// the gateway side a gateway, else another site's mediation server; on the cloud side any
    /// of the cloud peers.
    pub fn identify(&self, side: Side, src: IpAddr) -> Option<Sender> {
        match side {
            Side::Cloud => self
                .cloud_peers
                .iter()
                .any(|p| p.addr.ip() == src)
                .then_some(Sender::CloudPeer),
            Side::Gateway => self
                .gateways
                .iter()
                .find(|g| g.hop.addr.ip() == src)
                .map(|g| Sender::Gateway {
                    name: g.name.clone(),
                    site: g.site.clone(),
                })
                .or_else(|| {
                    self.other_appliances()
                        .find(|(_, m)| m.addr.ip() == src)
                        .map(|(s, m)| Sender::Appliance {
                            fqdn: m.name.clone(),
                            site: s.name.clone(),
                        })
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
            Side::Gateway => self
                .gateways
                .iter()
                .find(|g| same(&g.name))
                .map(|g| Sender::Gateway {
                    name: g.name.clone(),
                    site: g.site.clone(),
                })
                .or_else(|| {
                    // Another site's appliance: its mediation FQDN is its identity.
                    self.other_appliances()
                        .find(|(_, m)| same(&m.name))
                        .map(|(s, m)| Sender::Appliance {
                            fqdn: m.name.clone(),
                            site: s.name.clone(),
                        })
                }),
        }
    }

    /// The names to verify TLS servers against, by the address each hop resolved to: the cloud
    /// peers, the gateways, the other sites' mediation servers.
    pub fn tls_names(&self) -> Vec<(Side, IpAddr, String)> {
        let mut v: Vec<(Side, IpAddr, String)> = self
            .cloud_peers
            .iter()
            .map(|p| (Side::Cloud, p.addr.ip(), p.name.clone()))
            .collect();
        v.extend(
            self.gateways
                .iter()
                .map(|g| (Side::Gateway, g.hop.addr.ip(), g.name.clone())),
        );
        v.extend(
            self.other_appliances()
                .map(|(_, m)| (Side::Gateway, m.addr.ip(), m.name.clone())),
        );
        v
    }

    /// The addresses of the configured peers of each side: the cloud peer; the gateways and
    /// the other sites' mediation servers (reached on the gateway side). Plain TCP is
    /// accepted from these only, and each has its own ingress lane.
    pub fn peer_addresses(&self) -> Vec<(Side, IpAddr)> {
        let mut v: Vec<(Side, IpAddr)> = self
            .cloud_peers
            .iter()
            .map(|c| (Side::Cloud, c.addr.ip()))
            .collect();
        v.extend(
            self.gateways
                .iter()
                .map(|g| (Side::Gateway, g.hop.addr.ip())),
        );
        // Our own site's mediation servers are us (and our fellow appliances, which never send
        // to us): not peers.
        v.extend(self.other_appliances().map(|(_, m)| (m.side, m.addr.ip())));
        v
    }

    pub fn site(&self, name: &str) -> Option<&SiteEntry> {
        self.sites.iter().find(|s| s.name == name)
    }

    /// The site whose mediation servers include `fqdn`.
    pub fn site_of_mediation_fqdn(&self, fqdn: &str) -> Option<&SiteEntry> {
        self.sites.iter().find(|s| {
            s.mediation_servers
                .iter()
                .any(|m| m.name.eq_ignore_ascii_case(fqdn))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::test_support::{gw1, table};

    #[test]
    fn identify_by_side_and_source() {
        let t = table();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(t.identify(Side::Gateway, ip("127.0.0.2")), Some(gw1()));
        assert_eq!(
            t.identify(Side::Cloud, ip("127.0.0.3")),
            Some(Sender::CloudPeer)
        );
        assert_eq!(t.identify(Side::Gateway, ip("127.0.0.3")), None);
        assert_eq!(t.identify(Side::Cloud, ip("127.0.0.2")), None);
        assert_eq!(t.identify(Side::Gateway, ip("127.0.0.9")), None);
    }

    #[test]
    fn other_sites_mediation_servers_are_appliances_our_own_is_nobody() {
        let t = table();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let remote = Some(Sender::Appliance {
            fqdn: "mediation.remote.example".into(),
            site: "remote".into(),
        });
        assert_eq!(t.identify(Side::Gateway, ip("127.0.0.4")), remote);
        assert_eq!(t.identify(Side::Cloud, ip("127.0.0.4")), None);
        // Our own site's mediation server (this appliance) is no sender.
        assert_eq!(t.identify(Side::Gateway, ip("127.0.0.1")), None);
        // mTLS: the mediation FQDN is the identity, whatever the address.
        assert_eq!(
            t.identify_flow(
                Side::Gateway,
                ip("127.0.0.9"),
                Some("Mediation.Remote.Example")
            ),
            remote
        );
        assert_eq!(
            t.identify_flow(
                Side::Gateway,
                ip("127.0.0.4"),
                Some("mediation.lab.example")
            ),
            None
        );
        assert!(t.tls_names().contains(&(
            Side::Gateway,
            ip("127.0.0.4"),
            "mediation.remote.example".to_string()
        )));
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
    fn every_address_of_a_cloud_peer_name_is_a_target_of_its_own() {
        let cfg = Config::from_toml(
            std::path::Path::new("config/sipedge.toml"),
            include_str!("../../config/sipedge.toml"),
        )
        .unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let t = RoutingTable::build_all(&cfg, &|n| {
            if n == "sip.cloud.lab.example" {
                vec![ip("127.0.0.3"), ip("127.0.0.13"), ip("127.0.0.3")]
            } else {
                cfg.static_host(n).into_iter().collect()
            }
        })
        .unwrap();
        let addrs: Vec<String> = t.cloud_peers.iter().map(|p| p.addr.to_string()).collect();
        assert_eq!(
            addrs,
            ["127.0.0.3:5060", "127.0.0.13:5060"],
            "deduplicated, in order"
        );
        assert!(t
            .cloud_peers
            .iter()
            .all(|p| p.name == "sip.cloud.lab.example"));
        assert_eq!(t.cloud_peer.addr.ip(), ip("127.0.0.3"));
        assert_eq!(
            t.identify(Side::Cloud, ip("127.0.0.13")),
            Some(Sender::CloudPeer)
        );
        let none = RoutingTable::build_all(&cfg, &|n| {
            if n == "sip.cloud.lab.example" {
                Vec::new()
            } else {
                cfg.static_host(n).into_iter().collect()
            }
        });
        assert!(none.unwrap_err().contains("does not resolve"));
    }
}
