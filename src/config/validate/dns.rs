//! `[dns]`: the name servers and the bounds on how long an answer is kept.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::{raw, ConfigError, DnsSettings};

/// Most name servers listed.
const MAX_SERVERS: usize = 8;

impl super::Validator<'_> {
    pub(super) fn dns(&self, d: &raw::RawDns) -> Result<DnsSettings, ConfigError> {
        let defaults = DnsSettings::default();
        let mut servers = Vec::new();
        for (i, s) in d.servers.iter().flatten().enumerate() {
            let key = format!("dns.servers[{i}]");
            let addr = match (s.parse::<SocketAddr>(), s.parse::<IpAddr>()) {
                (Ok(a), _) => a,
                (_, Ok(ip)) => SocketAddr::new(ip, 53),
                _ => return Err(self.err(&key, &format!("{s:?} is not an ip or ip:port"))),
            };
            if addr.port() == 0 {
                return Err(self.err(&key, "port 0"));
            }
            servers.push(addr);
        }
        if servers.len() > MAX_SERVERS {
            return Err(self.err(
                "dns.servers",
                &format!("at most {MAX_SERVERS} name servers"),
            ));
        }
        let secs =
            |key: &str, v: Option<u64>, default: Duration| -> Result<Duration, ConfigError> {
                match v {
                    None => Ok(default),
                    Some(s) if (1..=86_400).contains(&s) => Ok(Duration::from_secs(s)),
                    Some(_) => Err(self.err(key, "between 1 and 86400 seconds")),
                }
            };
        let min_ttl = secs("dns.min_ttl_s", d.min_ttl_s, defaults.min_ttl)?;
        let max_ttl = secs("dns.max_ttl_s", d.max_ttl_s, defaults.max_ttl)?;
        if max_ttl < min_ttl {
            return Err(self.err("dns.max_ttl_s", "smaller than dns.min_ttl_s"));
        }
        Ok(DnsSettings {
            servers,
            min_ttl,
            max_ttl,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::Config;

    const LAB: &str = include_str!("../../../config/sipedge.toml");

    fn with(table: &str) -> Result<Config, crate::config::ConfigError> {
        Config::from_toml(Path::new("t.toml"), &format!("{LAB}\n{table}"))
    }

    #[test]
    fn dns_servers_and_ttl_bounds_are_checked() {
        let c = with("").unwrap();
        assert!(c.dns.servers.is_empty());
        assert_eq!(c.dns.min_ttl, Duration::from_secs(5));
        assert!(!c.cloud_peer.srv);
        let c = with("[dns]\nservers = [\"127.0.0.1:5353\", \"::1\"]\nmin_ttl_s = 1").unwrap();
        assert_eq!(c.dns.servers[0].to_string(), "127.0.0.1:5353");
        assert_eq!(c.dns.servers[1].to_string(), "[::1]:53");
        assert_eq!(c.dns.min_ttl, Duration::from_secs(1));
        for (bad, key) in [
            ("servers = [\"ns.example\"]", "dns.servers[0]"),
            ("servers = [\"127.0.0.1:0\"]", "dns.servers[0]"),
            ("min_ttl_s = 0", "dns.min_ttl_s"),
            ("min_ttl_s = 60\nmax_ttl_s = 30", "dns.max_ttl_s"),
        ] {
            let e = with(&format!("[dns]\n{bad}")).unwrap_err();
            assert_eq!(e.key, key, "{bad}: {e}");
        }
        assert!(with("[dns]\nretries = 3").is_err());
    }
}
