//! `[listen.gateway]`, `[listen.cloud]` and `[admin]`: the addresses we listen on. Each side
//! needs a listener; an address serves one side per transport, and a TLS listener may not take a
//! TCP listener's port. The admin API stays on loopback unless `allow_remote` is set.

use std::net::SocketAddr;

use super::Validator;
use crate::config::{raw, AdminSettings, ConfigError, SideListen, Transport};

impl Validator<'_> {
    /// Both sides' listeners, `(gateway side, cloud side)`.
    pub(super) fn listen(
        &self,
        raw: &raw::RawListen,
    ) -> Result<(SideListen, SideListen), ConfigError> {
        let gateway_listen = self.side_listen("listen.gateway", &raw.gateway)?;
        let cloud_listen = self.side_listen("listen.cloud", &raw.cloud)?;
        if gateway_listen == SideListen::default() {
            return Err(self.err(
                "listen.gateway",
                "no listener configured on the gateway side",
            ));
        }
        if cloud_listen == SideListen::default() {
            return Err(self.err("listen.cloud", "no listener configured on the cloud side"));
        }
        // Listener clashes: the same transport family on the same address on both sides.
        for (t, name) in [
            (Transport::Udp, "udp"),
            (Transport::Tcp, "tcp"),
            (Transport::Tls, "tls"),
        ] {
            if let (Some(a), Some(b)) = (gateway_listen.addr(t), cloud_listen.addr(t)) {
                if a == b {
                    return Err(self.err(
                        &format!("listen.cloud.{name}"),
                        &format!("{b} is already the gateway side's {name} listener"),
                    ));
                }
            }
        }
        // TCP and TLS share the kernel's TCP port space.
        for (side, l) in [("gateway", &gateway_listen), ("cloud", &cloud_listen)] {
            let others = [&gateway_listen, &cloud_listen];
            if let Some(tls) = l.tls {
                for o in others {
                    if o.tcp == Some(tls) {
                        return Err(self.err(
                            &format!("listen.{side}.tls"),
                            &format!("{tls} is also a TCP listener"),
                        ));
                    }
                }
            }
        }
        Ok((gateway_listen, cloud_listen))
    }

    fn side_listen(&self, key: &str, l: &raw::RawSideListen) -> Result<SideListen, ConfigError> {
        let addr = |name: &str, s: &Option<String>| -> Result<Option<SocketAddr>, ConfigError> {
            match s {
                None => Ok(None),
                Some(s) => s.parse().map(Some).map_err(|_| {
                    self.err(
                        &format!("{key}.{name}"),
                        &format!("{s:?} is not an IP:port address"),
                    )
                }),
            }
        };
        Ok(SideListen {
            udp: addr("udp", &l.udp)?,
            tcp: addr("tcp", &l.tcp)?,
            tls: addr("tls", &l.tls)?,
        })
    }

    /// An `[admin]` table; without one there is no admin listener.
    pub(super) fn admin(&self, raw_admin: &raw::RawAdmin) -> Result<AdminSettings, ConfigError> {
        let text = raw_admin.listen.as_deref().unwrap_or("127.0.0.1:8080");
        let listen = if text.is_empty() {
            None
        } else {
            let a: SocketAddr = text.parse().map_err(|_| {
                self.err(
                    "admin.listen",
                    &format!("{text:?} is not an IP:port address"),
                )
            })?;
            // Loopback by default: another address must be asked for explicitly.
            if !a.ip().is_loopback() && !raw_admin.allow_remote {
                return Err(self.err(
                    "admin.listen",
                    &format!("{a} is not a loopback address; set admin.allow_remote = true to expose the admin API"),
                ));
            }
            Some(a)
        };
        Ok(AdminSettings { listen })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::test_support::{err_of, lab, LAB};
    use crate::config::Config;

    #[test]
    fn admin_listener_is_loopback_unless_allowed() {
        assert_eq!(lab().admin.listen, Some("127.0.0.1:8080".parse().unwrap()));
        let no_admin = LAB.replace("[admin]", "[unused]").replace(
            "[unused]\n# The admin HTTP API (JSON, bearer token in <state_dir>/admin.token) and GET /metrics.\nlisten = \"127.0.0.1:8080\"",
            "",
        );
        let c = Config::from_toml(Path::new("t.toml"), &no_admin).unwrap();
        assert_eq!(c.admin.listen, None);
        let remote = LAB.replace("listen = \"127.0.0.1:8080\"", "listen = \"0.0.0.0:8080\"");
        let e = err_of(&remote);
        assert_eq!(e.key, "admin.listen");
        assert!(e.reason.contains("allow_remote"), "{e}");
        let allowed = LAB.replace(
            "listen = \"127.0.0.1:8080\"",
            "listen = \"0.0.0.0:8080\"\nallow_remote = true",
        );
        assert!(Config::from_toml(Path::new("t.toml"), &allowed).is_ok());
        let bad = LAB.replace("listen = \"127.0.0.1:8080\"", "listen = \"localhost\"");
        assert_eq!(err_of(&bad).key, "admin.listen");
    }

    #[test]
    fn listener_clash_is_refused() {
        let e = err_of(&LAB.replace("udp = \"127.0.0.1:5062\"", "udp = \"127.0.0.1:5068\""));
        assert_eq!(e.key, "listen.cloud.udp");
    }
}
