//! Validation: [`Config::load`] and [`Config::from_toml`] read the TOML text into the serde
//! mirror ([`super::raw`], unknown keys refused with their path and line), then the
//! [`Validator`] turns each table into the validated model, naming the file and the key path
//! of the first value it refuses.
//!
//! This file holds the entry points, the order in which the tables are checked and the
//! Validator's shared helpers; each group of tables has its own file:
//!
//! - `tenant.rs`: `[appliance]`, `[tenant]`, `[[users]]`;
//! - `listen.rs`: `[listen.gateway]`, `[listen.cloud]`, `[admin]`;
//! - `peers.rs`: `[cloud_peer]`, `[[sites]]`, `[[gateways]]`, `[hosts]`;
//! - `dialplan.rs`: `[[dial_plans]]` and the sites' `emergency_numbers`;
//! - `settings.rs`: `[sip]`, `[limits]`, `[routing]`;
//! - `media.rs`: `[media]`;
//! - `tls.rs`: `[tls]`;
//! - `directory.rs`: `[directory]`.
//! - `dns.rs`: `[dns]`.

mod dialplan;
mod directory;
mod dns;
mod listen;
mod media;
mod overload;
mod peers;
mod settings;
mod tenant;
mod tls;

use std::path::Path;

use super::raw::RawConfig;
use super::{AdminSettings, Config, ConfigError, Fqdn, LatchMode, SrtpMode, Transport};

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            key: String::new(),
            line: None,
            reason: format!("cannot read: {e}"),
        })?;
        Config::from_toml(path, &text)
    }

    /// Parses and validates configuration text; `path` names it in errors and anchors
    /// relative paths.
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| toml_error(path, text, &e))?;
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let mut err = toml_error(path, text, &inner);
            if err.key.is_empty() && key != "." {
                err.key = key;
            }
            err
        })?;
        Config::try_from_raw(path, raw)
    }

    fn try_from_raw(path: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
        let v = Validator { file: path };
        let base = path.parent().unwrap_or_else(|| Path::new("."));

        // The tables in this order: the first value refused is the error reported.
        let appliance = v.appliance(base, &raw.appliance)?;
        let (gateway_listen, cloud_listen) = v.listen(&raw.listen)?;
        let tenant = v.tenant(&raw.tenant)?;
        let cloud_peer = v.cloud_peer(&raw.cloud_peer)?;
        let dial_plans = v.dial_plans(&raw.dial_plans)?;
        let (sites, site_names) = v.sites(&raw.sites, &appliance, &dial_plans)?;
        let gateways = v.gateways(base, &raw.gateways, &site_names)?;
        let hosts = v.hosts(&raw.hosts)?;
        v.gateway_addresses(&gateways, &hosts)?;
        let users = v.users(&raw.users, &site_names)?;
        let sip = v.sip(&raw.sip)?;
        let limits = v.limits(&raw.limits)?;
        let routing = v.routing(&raw.routing)?;
        let admin = match &raw.admin {
            Some(a) => v.admin(a)?,
            None => AdminSettings { listen: None },
        };
        let media = match &raw.media {
            Some(m) => Some(v.media(m)?),
            None => None,
        };
        let tls = v.tls(base, &raw.tls, &cloud_peer)?;
        // Other sites' mediation servers hand calls over: a rate of their own may be set.
        let appliances: Vec<String> = sites
            .iter()
            .filter(|s| s.name != appliance.site)
            .flat_map(|s| s.mediation_servers.iter().map(|m| m.fqdn.to_string()))
            .collect();
        let overload = v.overload(
            &raw.overload,
            &gateways,
            cloud_peer.fqdn.as_str(),
            &appliances,
        )?;
        let directory = match &raw.directory {
            Some(d) => Some(v.directory(d)?),
            None => None,
        };
        let dns = v.dns(&raw.dns)?;

        Ok(Config {
            file: path.to_owned(),
            appliance,
            gateway_listen,
            cloud_listen,
            tenant,
            cloud_peer,
            sites,
            gateways,
            hosts,
            users,
            sip,
            limits,
            routing,
            admin,
            media,
            tls,
            overload,
            dial_plans,
            directory,
            dns,
        })
    }
}

/// Turns the mirror into the model, one method per table (in the table's file); every error
/// it returns names `file` and the key path.
struct Validator<'a> {
    file: &'a Path,
}

impl Validator<'_> {
    fn err(&self, key: &str, reason: &str) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            key: key.to_owned(),
            line: None,
            reason: reason.to_owned(),
        }
    }
    fn fqdn(&self, key: &str, s: &str) -> Result<Fqdn, ConfigError> {
        Fqdn::parse(s).map_err(|r| self.err(key, &r))
    }
    fn port(&self, key: &str, p: Option<u16>, default: u16) -> Result<u16, ConfigError> {
        match p.unwrap_or(default) {
            0 => Err(self.err(key, "port 0 is not allowed")),
            p => Ok(p),
        }
    }
    fn srtp(&self, key: &str, s: Option<&str>, default: SrtpMode) -> Result<SrtpMode, ConfigError> {
        s.map_or(Ok(default), SrtpMode::parse)
            .map_err(|r| self.err(key, &r))
    }
    fn latching(&self, key: &str, s: Option<&str>) -> Result<LatchMode, ConfigError> {
        s.map_or(Ok(LatchMode::Strict), LatchMode::parse)
            .map_err(|r| self.err(key, &r))
    }
    fn transport(&self, key: &str, t: Option<&str>) -> Result<Transport, ConfigError> {
        t.map_or(Ok(Transport::Tls), Transport::parse)
            .map_err(|r| self.err(key, &r))
    }
}

/// Turns a toml error into a `ConfigError` with the line number of its span.
fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e
        .span()
        .map(|s| text.get(..s.start).map_or(0, |t| t.matches('\n').count()) + 1);
    ConfigError {
        file: path.to_owned(),
        key: String::new(),
        line,
        reason: e.message().trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{err_of, lab, LAB};

    #[test]
    fn lab_config_loads_with_its_topology() {
        let c = lab();
        assert_eq!(c.appliance.site, "lab");
        assert_eq!(c.appliance.mediation_fqdn.as_str(), "mediation.lab.example");
        assert_eq!(c.appliance.access_edge_fqdn.as_str(), "ap.lab.example");
        assert_eq!(
            c.gateway_listen.udp,
            Some("127.0.0.1:5068".parse().unwrap())
        );
        assert_eq!(c.cloud_listen.tcp, Some("127.0.0.1:5062".parse().unwrap()));
        assert_eq!(c.cloud_peer.fqdn.as_str(), "sip.cloud.lab.example");
        assert_eq!(c.cloud_peer.transport, Transport::Udp);
        assert_eq!(
            c.static_host("sip.cloud.lab.example"),
            Some("127.0.0.3".parse().unwrap())
        );
        assert_eq!(c.gateways.len(), 3);
        assert_eq!(c.users.len(), 5);
        assert_eq!(
            c.tenant.peer_destination.as_ref().unwrap().as_str(),
            "ap.lab.example"
        );
        assert_eq!(c.routing.failover_codes, vec![408, 503, 504]);
        assert_eq!(c.appliance.state_dir, Path::new("config/../state"));
    }

    #[test]
    fn unknown_key_is_refused_with_its_path_and_line() {
        let text = LAB.replace("site = \"remote\"\n", "site = \"remote\"\nsitee = 1\n");
        let e = err_of(&text);
        assert!(e.reason.contains("unknown field `sitee`"), "{e}");
        assert!(e.key.starts_with("gateways[2]"), "{e}");
        assert!(e.line.is_some(), "{e}");
        assert!(e.to_string().starts_with("t.toml:"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = err_of(&LAB.replace("udp = \"127.0.0.1:5068\"", "udp = \"127.0.0.1\""));
        assert_eq!(e.key, "listen.gateway.udp");
        let e = err_of(&LAB.replace(
            "transport = \"udp\"\nsite = \"lab\"",
            "transport = \"sctp\"\nsite = \"lab\"",
        ));
        assert_eq!(e.key, "gateways[0].transport");
        let e = err_of(&LAB.replace("t1_ms = 500", "t1_ms = 0"));
        assert_eq!(e.key, "sip.t1_ms");
        let e = err_of(&LAB.replace("failover_codes = [408, 503, 504]", "failover_codes = [603]"));
        assert_eq!(e.key, "routing.failover_codes[0]");
        let e = err_of(&LAB.replace("line_uri = \"tel:+14255550100\"", "line_uri = \"+1425\""));
        assert_eq!(e.key, "users[0].line_uri");
        let e = err_of(&LAB.replace(
            "access_edge_fqdn = \"ap.lab.example\"\nstate",
            "access_edge_fqdn = \"10.0.0.1\"\nstate",
        ));
        assert_eq!(e.key, "appliance.access_edge_fqdn");
        assert!(e.reason.contains("IP address"));
    }

    #[test]
    fn syntax_error_gives_a_line() {
        let e = err_of("[appliance\nsite = 1\n");
        assert_eq!(e.line, Some(1));
    }
}
