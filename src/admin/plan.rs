//! `sipedge plan dns` and `sipedge plan firewall`: what the configuration needs from the
//! network, as text for people and `--json` for tools. Pure: built from the configuration
//! alone (addresses from the listeners and `[hosts]`; what only the operator knows is shown as
//! a `<placeholder>`).
//!
//! **DNS**, per site, as Cloud Connector Edition documents it: an external A record for the
//! site's access edge FQDN (the cloud peer reaches it), an internal A record for each mediation
//! server FQDN (gateways reach it), and per SIP domain the `_sip._tls` and
//! `_sipfederationtls._tcp` SRV records toward the access edge on its TLS port (the default
//! site — the one the tenant's peer destination names — with priority 0, the others 10).
//! Then the names this appliance itself resolves (gateways, cloud peer, other sites'
//! mediation servers): an entry under `[hosts]` or an internal A record.
//!
//! **Firewall**, per side and interface: signalling UDP/TCP/TLS in from the peers of that
//! side and out to them, the media range (UDP, both ways, any remote: media endpoints are
//! signalled per call) with the calls it carries, and the admin API.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::config::{Config, Side, Transport};

/// One DNS record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsRecord {
    /// `external` (public DNS) or `internal`.
    pub zone: &'static str,
    pub site: String,
    pub name: String,
    /// `A` or `SRV`.
    #[serde(rename = "type")]
    pub rtype: &'static str,
    /// A: the address (or a `<placeholder>`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub purpose: String,
}

impl DnsRecord {
    /// The record's data as a zone file writes it.
    pub fn value(&self) -> String {
        match self.rtype {
            "SRV" => format!(
                "{} {} {} {}.",
                self.priority.unwrap_or(0),
                self.weight.unwrap_or(0),
                self.port.unwrap_or(0),
                self.target.as_deref().unwrap_or("")
            ),
            _ => self.address.clone().unwrap_or_default(),
        }
    }
}

/// What `plan dns` prints.
#[derive(Debug, Clone, Serialize)]
pub struct DnsPlan {
    pub sip_domains: Vec<String>,
    pub default_site: Option<String>,
    pub records: Vec<DnsRecord>,
    pub notes: Vec<String>,
}

fn a(zone: &'static str, site: &str, name: &str, address: String, purpose: String) -> DnsRecord {
    DnsRecord {
        zone,
        site: site.to_owned(),
        name: name.to_owned(),
        rtype: "A",
        address: Some(address),
        priority: None,
        weight: None,
        port: None,
        target: None,
        purpose,
    }
}

fn srv(
    site: &str,
    name: String,
    priority: u16,
    port: u16,
    target: &str,
    purpose: &str,
) -> DnsRecord {
    DnsRecord {
        zone: "external",
        site: site.to_owned(),
        name,
        rtype: "SRV",
        address: None,
        priority: Some(priority),
        weight: Some(0),
        port: Some(port),
        target: Some(target.to_owned()),
        purpose: purpose.to_owned(),
    }
}

/// The address a listener is reached on, or a placeholder when it listens on every address.
fn listener_address(addr: Option<SocketAddr>, what: &str) -> String {
    match addr.map(|a| a.ip()) {
        Some(ip) if !ip.is_unspecified() => ip.to_string(),
        _ => format!("<address of the {what} interface>"),
    }
}

/// The first listener of a side, TLS first.
fn side_address(cfg: &Config, side: Side) -> Option<SocketAddr> {
    let l = cfg.listen(side);
    l.tls.or(l.tcp).or(l.udp)
}

/// `sipedge plan dns`.
pub fn dns(cfg: &Config) -> DnsPlan {
    let mut records = Vec::new();
    let mut notes = Vec::new();
    let own = &cfg.appliance.site;
    let cloud_tls = cfg.cloud_listen.tls;
    let edge_port = cloud_tls.map_or(5061, |a| a.port());
    if cloud_tls.is_none() {
        notes.push(
            "no TLS listener on the cloud side (listen.cloud.tls): the SRV records assume port 5061"
                .into(),
        );
    }
    let default_site = cfg.tenant.peer_destination.as_ref().and_then(|pd| {
        let host = pd.as_str().split(':').next().unwrap_or_default();
        cfg.sites
            .iter()
            .find(|s| s.access_edge_fqdn.as_str().eq_ignore_ascii_case(host))
            .map(|s| s.name.clone())
    });
    let static_or = |name: &str, placeholder: String| {
        cfg.static_host(name)
            .map_or(placeholder, |ip: IpAddr| ip.to_string())
    };
    for site in &cfg.sites {
        let ours = site.name == *own;
        let edge = site.access_edge_fqdn.to_string();
        let edge_addr = if ours {
            listener_address(side_address(cfg, Side::Cloud), "cloud-side (public)")
        } else {
            static_or(&edge, format!("<public address of {edge}>"))
        };
        records.push(a(
            "external",
            &site.name,
            &edge,
            edge_addr,
            format!(
                "access edge of site {}: the cloud peer connects here (TLS {edge_port})",
                site.name
            ),
        ));
        let mut meds: Vec<String> = site
            .mediation_servers
            .iter()
            .map(|m| m.fqdn.to_string())
            .collect();
        if ours
            && !meds
                .iter()
                .any(|m| m.eq_ignore_ascii_case(cfg.appliance.mediation_fqdn.as_str()))
        {
            meds.push(cfg.appliance.mediation_fqdn.to_string());
        }
        for m in meds {
            let this = ours && m.eq_ignore_ascii_case(cfg.appliance.mediation_fqdn.as_str());
            let addr = if this {
                listener_address(side_address(cfg, Side::Gateway), "gateway-side")
            } else {
                static_or(&m, format!("<address of {m}>"))
            };
            records.push(a(
                "internal",
                &site.name,
                &m,
                addr,
                format!(
                    "mediation server of site {}: its gateways connect here",
                    site.name
                ),
            ));
        }
        let priority = if default_site.as_deref() == Some(site.name.as_str()) {
            0
        } else {
            10
        };
        for d in &cfg.tenant.sip_domains {
            records.push(srv(
                &site.name,
                format!("_sip._tls.{d}"),
                priority,
                edge_port,
                &edge,
                "SIP over TLS toward the access edge",
            ));
            records.push(srv(
                &site.name,
                format!("_sipfederationtls._tcp.{d}"),
                priority,
                edge_port,
                &edge,
                "federation (the cloud peer) toward the access edge",
            ));
        }
        if !ours {
            notes.push(format!(
                "site {}: its access edge port is assumed to be {edge_port}, as this appliance's",
                site.name
            ));
        }
    }
    // Names this appliance resolves.
    let mut resolve = |site: &str, name: String, what: &str| {
        let (address, how) = match cfg.static_host(&name) {
            Some(ip) => (ip.to_string(), "from [hosts]"),
            None => (
                format!("<address of {name}>"),
                "not in [hosts]: internal DNS",
            ),
        };
        records.push(a(
            "internal",
            site,
            &name,
            address,
            format!("{what}, resolved by this appliance ({how})"),
        ));
    };
    for g in cfg.gateways.iter().filter(|g| g.site == *own) {
        resolve(own, g.name.to_string(), "gateway");
    }
    resolve(own, cfg.cloud_peer.fqdn.to_string(), "cloud peer");
    if default_site.is_none() {
        notes.push(
            "the tenant's peer destination names no site: no SRV record has priority 0".into(),
        );
    }
    DnsPlan {
        sip_domains: cfg
            .tenant
            .sip_domains
            .iter()
            .map(|d| d.to_string())
            .collect(),
        default_site,
        records,
        notes,
    }
}

/// One firewall rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// `gateway`, `cloud`, `media` or `admin`.
    pub side: &'static str,
    /// Our address (the interface) of the rule.
    pub interface: String,
    /// `inbound` (to us) or `outbound` (from us).
    pub direction: &'static str,
    /// `udp` or `tcp`.
    pub protocol: &'static str,
    /// `udp`, `tcp` or `tls` (TLS runs over TCP).
    pub transport: &'static str,
    /// Our port(s): `5068`, `49152-57500`, or `any` (outbound connections leave from an
    /// ephemeral port).
    pub local_ports: String,
    /// Who is on the other end: `name address:port` entries, or `any`.
    pub remote: Vec<String>,
    pub purpose: String,
}

/// The media range and what it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MediaPlan {
    pub interface: String,
    pub port_min: u16,
    pub port_max: u16,
    /// RTP/RTCP port pairs in the range.
    pub port_pairs: usize,
    /// Concurrent calls: two pairs (gateway leg, cloud leg) per call.
    pub calls: usize,
}

/// What `plan firewall` prints.
#[derive(Debug, Clone, Serialize)]
pub struct FirewallPlan {
    pub rules: Vec<Rule>,
    pub media: Option<MediaPlan>,
    pub notes: Vec<String>,
}

/// Port pairs of a range as the relay's pool counts them (even RTP port, odd RTCP port).
pub fn port_pairs(min: u16, max: u16) -> usize {
    let base = u32::from(min) + u32::from(min % 2);
    let last = u32::from(max);
    if last <= base {
        return 0;
    }
    (last - base).div_ceil(2) as usize
}

fn protocol(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "udp",
        Transport::Tcp | Transport::Tls => "tcp",
    }
}

/// `sipedge plan firewall`.
pub fn firewall(cfg: &Config) -> FirewallPlan {
    let mut rules = Vec::new();
    let mut notes = Vec::new();
    let own = &cfg.appliance.site;
    let addr_of = |name: &str, port: u16| match cfg.static_host(name) {
        Some(ip) => format!("{name} {}", SocketAddr::new(ip, port)),
        None => format!("{name} <address>:{port}"),
    };
    let gateways: Vec<_> = cfg.gateways.iter().filter(|g| g.site == *own).collect();
    let other_meds: Vec<_> = cfg
        .sites
        .iter()
        .filter(|s| s.name != *own)
        .flat_map(|s| s.mediation_servers.iter())
        .collect();
    for (side, name) in [(Side::Gateway, "gateway"), (Side::Cloud, "cloud")] {
        let l = cfg.listen(side);
        // Inbound: our listeners, from the peers of that side.
        let peers: Vec<String> = match side {
            Side::Gateway => gateways
                .iter()
                .map(|g| addr_of(&g.name.to_string(), g.port))
                .collect(),
            Side::Cloud => vec![addr_of(cfg.cloud_peer.fqdn.as_str(), cfg.cloud_peer.port)],
        };
        for t in [Transport::Udp, Transport::Tcp, Transport::Tls] {
            if let Some(a) = l.addr(t) {
                rules.push(Rule {
                    side: name,
                    interface: listener_address(Some(a), &format!("{name}-side")),
                    direction: "inbound",
                    protocol: protocol(t),
                    transport: t.uri_param(),
                    local_ports: a.port().to_string(),
                    remote: peers
                        .iter()
                        .map(|p| p.split(' ').next().unwrap_or_default().to_owned())
                        .collect(),
                    purpose: format!("SIP {} from the {name} side's peers", t.via_token()),
                });
            }
        }
        // Outbound: to each peer over its transport.
        let mut targets: Vec<(String, u16, Transport)> = match side {
            Side::Gateway => gateways
                .iter()
                .map(|g| (g.name.to_string(), g.port, g.transport))
                .collect(),
            Side::Cloud => vec![(
                cfg.cloud_peer.fqdn.to_string(),
                cfg.cloud_peer.port,
                cfg.cloud_peer.transport,
            )],
        };
        if side == Side::Gateway {
            targets.extend(
                other_meds
                    .iter()
                    .map(|m| (m.fqdn.to_string(), m.port, m.transport)),
            );
        }
        for t in [Transport::Udp, Transport::Tcp, Transport::Tls] {
            let remote: Vec<String> = targets
                .iter()
                .filter(|(_, _, tt)| *tt == t)
                .map(|(n, p, _)| addr_of(n, *p))
                .collect();
            if remote.is_empty() {
                continue;
            }
            let (iface, local_ports) = match t {
                // Datagrams leave from the listening socket.
                Transport::Udp => (l.udp, l.udp.map_or("any".into(), |a| a.port().to_string())),
                _ => (l.tls.or(l.tcp).or(l.udp), "any".to_owned()),
            };
            if t == Transport::Udp && l.udp.is_none() {
                notes.push(format!(
                    "{name} side: UDP peers are configured but there is no UDP listener"
                ));
            }
            rules.push(Rule {
                side: name,
                interface: listener_address(iface, &format!("{name}-side")),
                direction: "outbound",
                protocol: protocol(t),
                transport: t.uri_param(),
                local_ports,
                remote,
                purpose: format!(
                    "SIP {} to the {name} side's peers (calls, OPTIONS)",
                    t.via_token()
                ),
            });
        }
    }
    let media = cfg.media.as_ref().map(|m| {
        let pairs = port_pairs(m.port_min, m.port_max);
        MediaPlan {
            interface: m.ip.to_string(),
            port_min: m.port_min,
            port_max: m.port_max,
            port_pairs: pairs,
            calls: pairs / 2,
        }
    });
    if let Some(mp) = &media {
        for direction in ["inbound", "outbound"] {
            rules.push(Rule {
                side: "media",
                interface: mp.interface.clone(),
                direction,
                protocol: "udp",
                transport: "udp",
                local_ports: format!("{}-{}", mp.port_min, mp.port_max),
                remote: vec!["any".into()],
                purpose: format!(
                    "RTP/RTCP (SRTP toward the cloud peer) of both legs: {} concurrent calls",
                    mp.calls
                ),
            });
        }
    } else {
        notes.push(
            "no [media]: media flows between the peers directly, not through this appliance".into(),
        );
    }
    if let Some(a) = cfg.admin.listen {
        rules.push(Rule {
            side: "admin",
            interface: a.ip().to_string(),
            direction: "inbound",
            protocol: "tcp",
            transport: "tcp",
            local_ports: a.port().to_string(),
            remote: vec![if a.ip().is_loopback() {
                "this host only (loopback)".into()
            } else {
                "the management network".into()
            }],
            purpose: "admin HTTP API, /metrics, /healthz, /readyz, /status".into(),
        });
    }
    FirewallPlan {
        rules,
        media,
        notes,
    }
}

/// `plan dns` as text.
pub fn dns_text(p: &DnsPlan) -> String {
    let mut out = format!(
        "DNS records for SIP domain(s) {} (default site: {})\n",
        p.sip_domains.join(", "),
        p.default_site.as_deref().unwrap_or("none")
    );
    let w = p
        .records
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut site = None;
    for r in &p.records {
        if site != Some(&r.site) {
            out.push_str(&format!("\nsite {}\n", r.site));
            out.push_str(&format!(
                "  {:<8} {:<w$} {:<4} {:<30} {}\n",
                "zone", "name", "type", "value", "purpose"
            ));
            site = Some(&r.site);
        }
        out.push_str(&format!(
            "  {:<8} {:<w$} {:<4} {:<30} {}\n",
            r.zone,
            r.name,
            r.rtype,
            r.value(),
            r.purpose
        ));
    }
    for n in &p.notes {
        out.push_str(&format!("\nnote: {n}"));
    }
    if !p.notes.is_empty() {
        out.push('\n');
    }
    out
}

/// `plan firewall` as text.
pub fn firewall_text(p: &FirewallPlan) -> String {
    let mut out = String::new();
    for side in ["gateway", "cloud", "media", "admin"] {
        let rules: Vec<&Rule> = p.rules.iter().filter(|r| r.side == side).collect();
        if rules.is_empty() {
            continue;
        }
        out.push_str(&format!("{side} side\n"));
        for r in rules {
            let arrow = if r.direction == "inbound" { "<-" } else { "->" };
            out.push_str(&format!(
                "  {:<8} {:<3} {:<4} {}:{} {arrow} {}\n      {}\n",
                r.direction,
                r.protocol,
                if r.transport == "tls" { "tls" } else { "" },
                r.interface,
                r.local_ports,
                r.remote.join(", "),
                r.purpose
            ));
        }
        out.push('\n');
    }
    if let Some(m) = &p.media {
        out.push_str(&format!(
            "media range {}-{} on {}: {} RTP/RTCP port pairs, {} concurrent calls (4 ports per call)\n",
            m.port_min, m.port_max, m.interface, m.port_pairs, m.calls
        ));
    }
    for n in &p.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> Config {
        Config::from_toml(
            std::path::Path::new("/x/sipedge.toml"),
            include_str!("../../config/sipedge.toml"),
        )
        .unwrap()
    }

    #[test]
    fn dns_plan_covers_the_lab() {
        let p = dns(&lab());
        assert_eq!(p.default_site.as_deref(), Some("lab"));
        let find = |name: &str, t: &str, site: &str| {
            p.records
                .iter()
                .find(|r| r.name == name && r.rtype == t && r.site == site)
                .unwrap_or_else(|| panic!("{name} {t} {site} missing: {p:#?}"))
        };
        let edge = find("ap.lab.example", "A", "lab");
        assert_eq!(
            (edge.zone, edge.value().as_str()),
            ("external", "127.0.0.1")
        );
        assert_eq!(find("mediation.lab.example", "A", "lab").zone, "internal");
        let s = find("_sip._tls.lab.example", "SRV", "lab");
        assert_eq!(s.value(), "0 0 5061 ap.lab.example.");
        let f = find("_sipfederationtls._tcp.lab.example", "SRV", "remote");
        assert_eq!(f.value(), "10 0 5061 ap.remote.example.");
        assert_eq!(
            find("ap.remote.example", "A", "remote").value(),
            "127.0.0.4"
        );
        assert_eq!(find("gw2.lab.example", "A", "lab").value(), "127.0.0.5");
        let text = dns_text(&p);
        for needle in ["_sip._tls.lab.example", "ap.lab.example", "5061"] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["records"][0]["type"], "A");
    }

    #[test]
    fn firewall_plan_covers_the_lab() {
        let p = firewall(&lab());
        let has = |side: &str, dir: &str, t: &str, port: &str| {
            p.rules.iter().any(|r| {
                r.side == side && r.direction == dir && r.transport == t && r.local_ports == port
            })
        };
        assert!(has("gateway", "inbound", "udp", "5068"));
        assert!(has("gateway", "inbound", "tcp", "5068"));
        assert!(has("gateway", "inbound", "tls", "5067"));
        assert!(has("cloud", "inbound", "tls", "5061"));
        assert!(has("cloud", "inbound", "udp", "5062"));
        assert!(has("media", "inbound", "udp", "49152-57500"));
        assert!(has("admin", "inbound", "tcp", "8080"));
        let out = p
            .rules
            .iter()
            .find(|r| r.side == "gateway" && r.direction == "outbound")
            .unwrap();
        assert!(out
            .remote
            .iter()
            .any(|r| r == "gw2.lab.example 127.0.0.5:5060"));
        assert!(out
            .remote
            .iter()
            .any(|r| r.starts_with("mediation.remote.example")));
        assert!(!out
            .remote
            .iter()
            .any(|r| r.starts_with("gw1.remote.example")));
        let m = p.media.as_ref().unwrap();
        assert_eq!((m.port_pairs, m.calls), (4174, 2087));
        let text = firewall_text(&p);
        for needle in [
            "5067",
            "5068",
            "5061",
            "49152-57500",
            "2087 concurrent calls",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
    }

    #[test]
    fn port_pairs_match_the_pool() {
        assert_eq!(port_pairs(49152, 57500), 4174);
        assert_eq!(port_pairs(10001, 10004), 1);
        assert_eq!(port_pairs(10000, 10003), 2);
        assert_eq!(port_pairs(10000, 10000), 0);
        let pool = crate::media::PortPool::new(49153..=57500).unwrap();
        assert_eq!(pool.capacity(), port_pairs(49153, 57500));
    }
}
