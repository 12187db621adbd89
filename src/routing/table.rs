//! The routing table: the configuration with every name resolved, built once when the proxy
//! starts (the IO layer resolves the names and passes a [`Resolve`] closure).
//!
//! It holds the cloud peer, the gateways (with their site, priority, weight, session cap) and
//! the PSTN sites with their mediation servers, and answers the questions asked of the
//! configuration: which names need resolving, who sent a request (by the flow's verified TLS
//! identity, else by its source address), which names verify TLS servers, which site a
//! mediation server belongs to.

use std::net::{IpAddr, SocketAddr};

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
}

/// The routing table: configuration with every name resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingTable {
    pub own_site: String,
    /// Our own names: mediation FQDN, access edge FQDN (lower-case).
    pub own_names: Vec<String>,
    pub cloud_peer: NextHop,
    pub gateways: Vec<GatewayEntry>,
    pub sites: Vec<SiteEntry>,
}

/// Who sent a request, as established by the transport (source address today; the verified
/// certificate with TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    Gateway { name: String, site: String },
    CloudPeer,
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
            sites.push(SiteEntry {
                name: s.name.clone(),
                access_edge_fqdn: s.access_edge_fqdn.to_string(),
                mediation_servers: servers,
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
            sites,
        })
    }

    /// Every name the table needs resolved: the cloud peer, gateways, mediation servers.
    pub fn names_to_resolve(cfg: &Config) -> Vec<String> {
        let mut names = vec![cfg.cloud_peer.fqdn.to_string()];
        names.extend(cfg.gateways.iter().map(|g| g.name.to_string()));
        for s in &cfg.sites {
            names.extend(s.mediation_servers.iter().map(|m| m.fqdn.to_string()));
        }
        names
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

    /// The addresses of the configured peers of each side: the cloud peer; the gateways and
    /// the other sites' mediation servers (reached on the gateway side). Plain TCP is
    /// accepted from these only.
    pub fn peer_addresses(&self) -> Vec<(Side, IpAddr)> {
        let mut v = vec![(Side::Cloud, self.cloud_peer.addr.ip())];
        v.extend(
            self.gateways
                .iter()
                .map(|g| (Side::Gateway, g.hop.addr.ip())),
        );
        for s in &self.sites {
            v.extend(s.mediation_servers.iter().map(|m| (m.side, m.addr.ip())));
        }
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
}
