//! The peers: `[cloud_peer]`, `[[sites]]` with their mediation servers, `[[gateways]]`, and the
//! static `[hosts]` entries that must not give two gateways one address (the source address
//! names the gateway).

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::Validator;
use crate::config::{
    raw, Appliance, CloudPeer, ConfigError, DialPlanDecl, Fqdn, Gateway, HostName, MediationServer,
    Site, SrtpMode,
};

impl Validator<'_> {
    pub(super) fn cloud_peer(&self, raw: &raw::RawCloudPeer) -> Result<CloudPeer, ConfigError> {
        let mut fqdns = Vec::new();
        match (&raw.fqdn, &raw.fqdns) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    "cloud_peer.fqdns",
                    "give either fqdn (one peer) or fqdns (several, in priority order)",
                ))
            }
            (None, None) => {
                return Err(self.err("cloud_peer.fqdn", "a cloud peer FQDN is required"))
            }
            (Some(f), None) => fqdns.push(self.fqdn("cloud_peer.fqdn", f)?),
            (None, Some(list)) => {
                for (i, f) in list.iter().enumerate() {
                    let f = self.fqdn(&format!("cloud_peer.fqdns[{i}]"), f)?;
                    if fqdns.contains(&f) {
                        return Err(self.err(
                            &format!("cloud_peer.fqdns[{i}]"),
                            &format!("{f} is listed twice"),
                        ));
                    }
                    fqdns.push(f);
                }
            }
        }
        let Some(first) = fqdns.first().cloned() else {
            return Err(self.err("cloud_peer.fqdns", "at least one FQDN"));
        };
        if fqdns.len() > 16 {
            return Err(self.err("cloud_peer.fqdns", "at most 16 cloud peers"));
        }
        Ok(CloudPeer {
            fqdn: first,
            fqdns,
            port: self.port("cloud_peer.port", raw.port, 5061)?,
            transport: self.transport("cloud_peer.transport", raw.transport.as_deref())?,
            srtp: self.srtp("cloud_peer.srtp", raw.srtp.as_deref(), SrtpMode::Required)?,
            latching: self.latching("cloud_peer.latching", raw.latching.as_deref())?,
            srv: raw.srv.unwrap_or(false),
        })
    }

    /// The sites and the set of their names; the appliance's own site must be among them, and
    /// a site's dial plan among `plans`.
    pub(super) fn sites(
        &self,
        raw: &[raw::RawSite],
        appliance: &Appliance,
        plans: &[DialPlanDecl],
    ) -> Result<(Vec<Site>, HashSet<String>), ConfigError> {
        let mut sites = Vec::new();
        let mut site_names = HashSet::new();
        for (i, s) in raw.iter().enumerate() {
            let key = format!("sites[{i}]");
            if s.name.is_empty()
                || !s
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(self.err(
                    &format!("{key}.name"),
                    "site names are letters, digits, '-' and '_'",
                ));
            }
            if !site_names.insert(s.name.clone()) {
                return Err(self.err(
                    &format!("{key}.name"),
                    &format!("site {:?} is defined twice", s.name),
                ));
            }
            let mut servers = Vec::new();
            for (j, m) in s.mediation_servers.iter().enumerate() {
                let k = format!("{key}.mediation_servers[{j}]");
                servers.push(MediationServer {
                    fqdn: self.fqdn(&format!("{k}.fqdn"), &m.fqdn)?,
                    port: self.port(&format!("{k}.port"), m.port, 5068)?,
                    transport: self.transport(&format!("{k}.transport"), m.transport.as_deref())?,
                });
            }
            if let Some(p) = &s.dial_plan {
                if !plans.iter().any(|d| &d.name == p) {
                    return Err(self.err(
                        &format!("{key}.dial_plan"),
                        &format!("dial plan {p:?} is not defined under [[dial_plans]]"),
                    ));
                }
            }
            sites.push(Site {
                name: s.name.clone(),
                access_edge_fqdn: self
                    .fqdn(&format!("{key}.access_edge_fqdn"), &s.access_edge_fqdn)?,
                mediation_servers: servers,
                emergency_numbers: self.emergency_numbers(
                    &format!("{key}.emergency_numbers"),
                    s.emergency_numbers.as_deref(),
                )?,
                dial_plan: s.dial_plan.clone(),
            });
        }
        if !site_names.contains(&appliance.site) {
            return Err(self.err(
                "appliance.site",
                &format!("site {:?} is not defined under [[sites]]", appliance.site),
            ));
        }
        Ok((sites, site_names))
    }

    /// The gateways, each of a defined site; relative trust files resolve against `base`.
    pub(super) fn gateways(
        &self,
        base: &Path,
        raw: &[raw::RawGateway],
        site_names: &HashSet<String>,
    ) -> Result<Vec<Gateway>, ConfigError> {
        let mut gateways = Vec::new();
        let mut gw_names = HashSet::new();
        for (i, g) in raw.iter().enumerate() {
            let key = format!("gateways[{i}]");
            let name =
                HostName::parse(&g.name).map_err(|r| self.err(&format!("{key}.name"), &r))?;
            if !gw_names.insert(name.clone()) {
                return Err(self.err(
                    &format!("{key}.name"),
                    &format!("gateway {name} is defined twice"),
                ));
            }
            if !site_names.contains(&g.site) {
                return Err(self.err(
                    &format!("{key}.site"),
                    &format!("site {:?} is not defined", g.site),
                ));
            }
            let weight = g.weight.unwrap_or(1);
            if weight == 0 {
                return Err(self.err(&format!("{key}.weight"), "weight must be at least 1"));
            }
            gateways.push(Gateway {
                name,
                port: self.port(&format!("{key}.port"), g.port, 5060)?,
                transport: self.transport(&format!("{key}.transport"), g.transport.as_deref())?,
                site: g.site.clone(),
                priority: g.priority.unwrap_or(0),
                weight,
                max_sessions: g.max_sessions,
                send_options: g.send_options.unwrap_or(true),
                srtp: self.srtp(&format!("{key}.srtp"), g.srtp.as_deref(), SrtpMode::Off)?,
                latching: self.latching(&format!("{key}.latching"), g.latching.as_deref())?,
                trust: g
                    .trust
                    .iter()
                    .map(|t| {
                        let p = PathBuf::from(t);
                        if p.is_absolute() {
                            p
                        } else {
                            base.join(p)
                        }
                    })
                    .collect(),
            });
        }
        Ok(gateways)
    }

    pub(super) fn hosts(
        &self,
        raw: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<Fqdn, IpAddr>, ConfigError> {
        let mut hosts = BTreeMap::new();
        for (name, ip) in raw {
            let key = format!("hosts.{name:?}");
            let fqdn = self.fqdn(&key, name)?;
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| self.err(&key, &format!("{ip:?} is not an IP address")))?;
            hosts.insert(fqdn, ip);
        }
        Ok(hosts)
    }

    pub(super) fn gateway_addresses(
        &self,
        gateways: &[Gateway],
        hosts: &BTreeMap<Fqdn, IpAddr>,
    ) -> Result<(), ConfigError> {
        // No two gateways may resolve (statically) to the same IP: the source address names the
        // gateway on the gateway side.
        let mut gw_ips: BTreeMap<IpAddr, String> = BTreeMap::new();
        for (i, g) in gateways.iter().enumerate() {
            let ip = match &g.name {
                HostName::Ip(ip) => Some(*ip),
                HostName::Fqdn(f) => hosts.get(f).copied(),
            };
            if let Some(ip) = ip {
                if let Some(prev) = gw_ips.insert(ip, g.name.to_string()) {
                    return Err(self.err(
                        &format!("gateways[{i}].name"),
                        &format!("{} has the same address {ip} as gateway {prev}", g.name),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::config::test_support::{err_of, LAB};
    use crate::config::Config;

    #[test]
    fn gateway_of_undefined_site_is_refused() {
        let text = LAB.replace("site = \"remote\"\n", "site = \"nowhere\"\n");
        let e = err_of(&text);
        assert_eq!(e.key, "gateways[2].site");
        assert!(e.reason.contains("nowhere"));
    }

    #[test]
    fn duplicate_gateway_and_duplicate_address_are_refused() {
        let text = LAB.replace("name = \"gw2.lab.example\"", "name = \"gw1.lab.example\"");
        assert_eq!(err_of(&text).key, "gateways[1].name");
        let text = LAB.replace(
            "\"gw2.lab.example\" = \"127.0.0.5\"",
            "\"gw2.lab.example\" = \"127.0.0.2\"",
        );
        let e = err_of(&text);
        assert!(e.reason.contains("same address 127.0.0.2"), "{e}");
    }

    #[test]
    fn gateway_trust_files_resolve_against_the_config_directory() {
        let text = LAB.replace(
            "name = \"gw2.lab.example\"\n",
            "name = \"gw2.lab.example\"\ntrust = [\"vendor-ca.pem\", \"/etc/ssl/other.pem\"]\n",
        );
        let c = Config::from_toml(Path::new("config/sipedge.toml"), &text).unwrap();
        let gw2 = c
            .gateways
            .iter()
            .find(|g| g.name.to_string() == "gw2.lab.example")
            .unwrap();
        assert_eq!(
            gw2.trust,
            vec![
                PathBuf::from("config/vendor-ca.pem"),
                PathBuf::from("/etc/ssl/other.pem")
            ]
        );
        assert!(c.gateways[0].trust.is_empty());
    }
}
