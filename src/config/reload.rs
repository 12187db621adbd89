//! What a configuration reload may change on a running appliance, and what needs a restart.
//!
//! Gateways, sites, `[hosts]`, the cloud peer, `[routing]`, `[overload]`, the SIP timers,
//! `limits.drain_timeout_s` and the media settings that concern new calls (codecs, SRTP modes,
//! `media_timeout_s`) take effect at once. Listener addresses, the state directory and the
//! appliance's identity, the admin listener, TLS, connection limits, the media address and
//! port range, the tenant and `[[users]]` (imported into the directory at first start) need a
//! restart: a reload keeps their running values and names them.

use super::model::{Config, MediaSettings};

impl Config {
    /// The keys whose change in `new` needs a restart (empty: everything can be applied).
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let mut v = Vec::new();
        let mut check = |changed: bool, key: &'static str| {
            if changed {
                v.push(key);
            }
        };
        check(self.appliance.site != new.appliance.site, "appliance.site");
        check(
            self.appliance.mediation_fqdn != new.appliance.mediation_fqdn,
            "appliance.mediation_fqdn",
        );
        check(
            self.appliance.access_edge_fqdn != new.appliance.access_edge_fqdn,
            "appliance.access_edge_fqdn",
        );
        check(
            self.appliance.state_dir != new.appliance.state_dir,
            "appliance.state_dir",
        );
        check(self.gateway_listen != new.gateway_listen, "listen.gateway");
        check(self.cloud_listen != new.cloud_listen, "listen.cloud");
        check(self.admin != new.admin, "admin.listen");
        check(self.tls != new.tls, "tls");
        check(self.tenant != new.tenant, "tenant");
        check(self.users != new.users, "users");
        // The resolver is built once, at start.
        check(self.dns != new.dns, "dns");
        check(
            self.limits.max_connections != new.limits.max_connections,
            "limits.max_connections",
        );
        check(
            self.limits.max_connections_per_ip != new.limits.max_connections_per_ip,
            "limits.max_connections_per_ip",
        );
        check(
            self.limits.tcp_idle_timeout != new.limits.tcp_idle_timeout,
            "limits.tcp_idle_timeout_s",
        );
        check(
            self.limits.message_timeout != new.limits.message_timeout,
            "limits.message_timeout_ms",
        );
        check(
            self.limits.write_queue != new.limits.write_queue,
            "limits.write_queue",
        );
        check(
            self.sip.max_message_bytes != new.sip.max_message_bytes,
            "sip.max_message_bytes",
        );
        match (&self.media, &new.media) {
            (Some(a), Some(b)) => {
                check(a.ip != b.ip, "media.ip");
                check(
                    a.port_min != b.port_min || a.port_max != b.port_max,
                    "media.port_min/port_max",
                );
                check(a.relay_workers != b.relay_workers, "media.relay_workers");
            }
            (None, None) => {}
            _ => check(true, "media"),
        }
        v
    }

    /// `new` as the running appliance can apply it: every setting that needs a restart keeps
    /// its value from `self` (the running configuration).
    pub fn applicable(&self, new: &Config) -> Config {
        let mut c = new.clone();
        c.file = self.file.clone();
        c.appliance = self.appliance.clone();
        c.gateway_listen = self.gateway_listen.clone();
        c.cloud_listen = self.cloud_listen.clone();
        c.admin = self.admin.clone();
        c.tls = self.tls.clone();
        c.tenant = self.tenant.clone();
        c.users = self.users.clone();
        c.dns = self.dns.clone();
        c.limits.max_connections = self.limits.max_connections;
        c.limits.max_connections_per_ip = self.limits.max_connections_per_ip;
        c.limits.tcp_idle_timeout = self.limits.tcp_idle_timeout;
        c.limits.message_timeout = self.limits.message_timeout;
        c.limits.write_queue = self.limits.write_queue;
        c.sip.max_message_bytes = self.sip.max_message_bytes;
        c.media = match (&self.media, &new.media) {
            (Some(a), Some(b)) => Some(MediaSettings {
                ip: a.ip,
                port_min: a.port_min,
                port_max: a.port_max,
                relay_workers: a.relay_workers,
                ..b.clone()
            }),
            (old, _) => old.clone(),
        };
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn lab(edit: impl FnOnce(String) -> String) -> Config {
        let text = edit(include_str!("../../config/sipedge.toml").to_owned());
        Config::from_toml(Path::new("config/sipedge.toml"), &text).unwrap()
    }

    #[test]
    fn gateways_limits_and_media_settings_apply_listeners_and_ports_need_a_restart() {
        let old = lab(|t| t);
        let new = lab(|t| {
            t.replace("drain_timeout_s = 32", "drain_timeout_s = 5")
                .replace("media_timeout_s = 60", "media_timeout_s = 30")
                .replace("port_min = 49152", "port_min = 50000")
                .replace("udp = \"127.0.0.1:5068\"", "udp = \"127.0.0.1:5070\"")
                .replace(
                    "[[gateways]]\nname = \"gw2.lab.example\"",
                    "[[gateways]]\nname = \"gw2.lab.example\"\nmax_sessions = 7",
                )
        });
        assert_eq!(
            old.restart_only_changes(&new),
            ["listen.gateway", "media.port_min/port_max"]
        );
        let applied = old.applicable(&new);
        assert_eq!(applied.gateway_listen, old.gateway_listen);
        let m = applied.media.as_ref().unwrap();
        assert_eq!(m.port_min, 49152);
        assert_eq!(m.media_timeout.as_secs(), 30);
        assert_eq!(applied.limits.drain_timeout.as_secs(), 5);
        assert_eq!(applied.gateways[1].max_sessions, Some(7));
        assert!(old.restart_only_changes(&applied).is_empty());
        assert!(old.restart_only_changes(&old.clone()).is_empty());
    }
}
