//! Which media addresses an SDP may name: the relay sends wherever a leg's SDP points it, so an
//! address that is not a remote host's would aim it at this host's own services (loopback, our
//! own addresses: the SIP listeners, the relay's own ports), at a whole network (multicast,
//! broadcast) or at a neighbour on the local link. Such addresses in `c=` or `a=rtcp` of an
//! offer or answer are refused (488 for a request, the address never used for a response);
//! `media.allow_loopback` and `media.allow_link_local` admit those two classes (a lab on one
//! host). `c=0.0.0.0` (and `::`) is the RFC 2543 hold of RFC 3264 §8.4: accepted, and never
//! used as a destination.

use std::net::{IpAddr, SocketAddr};

use crate::config::{Config, MediaSettings};
use crate::sdp::{ConnAddr, Connection, Sdp};

/// The address rules of `[media]` and the addresses that are ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPolicy {
    pub allow_loopback: bool,
    pub allow_link_local: bool,
    /// Our media address, the listeners' and the admin API's addresses.
    own: Vec<IpAddr>,
}

/// A refused address and the class that refused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub ip: IpAddr,
    pub why: &'static str,
}

impl AddressPolicy {
    /// The policy of `settings`, with `settings.ip` as our only own address.
    pub fn new(settings: &MediaSettings) -> AddressPolicy {
        AddressPolicy {
            allow_loopback: settings.allow_loopback,
            allow_link_local: settings.allow_link_local,
            own: vec![settings.ip.to_canonical()],
        }
    }

    /// The policy of `settings` with every address `cfg` binds as our own.
    pub fn from_config(cfg: &Config, settings: &MediaSettings) -> AddressPolicy {
        let mut p = AddressPolicy::new(settings);
        let listens = [&cfg.gateway_listen, &cfg.cloud_listen]
            .into_iter()
            .flat_map(|l| [l.udp, l.tcp, l.tls])
            .chain([cfg.admin.listen]);
        for a in listens.flatten() {
            p.add_own(a);
        }
        p
    }

    fn add_own(&mut self, a: SocketAddr) {
        let ip = a.ip().to_canonical();
        // A wildcard listener names no one address; the wildcard itself is refused anyway.
        if !ip.is_unspecified() && !self.own.contains(&ip) {
            self.own.push(ip);
        }
    }

    /// Why `ip` may not be a media destination, `None` when it may.
    pub fn check(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = ip.to_canonical();
        if self.own.contains(&ip) {
            return Some("own address");
        }
        if ip.is_multicast() {
            return Some("multicast");
        }
        if ip.is_loopback() {
            return (!self.allow_loopback).then_some("loopback");
        }
        match ip {
            IpAddr::V4(v4) => {
                if v4.is_broadcast() {
                    return Some("broadcast");
                }
                if v4.octets()[0] == 0 {
                    // 0.0.0.0/8: "this network"; 0.0.0.0 itself is hold, handled by the caller.
                    return Some("unspecified");
                }
                if v4.is_link_local() && !self.allow_link_local {
                    return Some("link-local");
                }
            }
            IpAddr::V6(v6) => {
                if v6.is_unspecified() {
                    return Some("unspecified");
                }
                if v6.is_unicast_link_local() && !self.allow_link_local {
                    return Some("link-local");
                }
            }
        }
        None
    }

    /// Whether a socket address (a media update's destination) may be used.
    pub fn allows(&self, a: SocketAddr) -> bool {
        self.check(a.ip()).is_none()
    }

    fn check_conn(&self, c: &Connection) -> Result<(), Refused> {
        let ConnAddr::Ip(ip) = c.address else {
            // A name is never resolved for media (no destination is set from it).
            return Ok(());
        };
        if c.multicast.is_some() {
            return Err(Refused {
                ip,
                why: "multicast",
            });
        }
        if c.is_hold() {
            return Ok(());
        }
        match self.check(ip) {
            Some(why) => Err(Refused { ip, why }),
            None => Ok(()),
        }
    }

    /// Every address of `sdp` a relay could be aimed at: the session `c=`, each m-line's `c=`
    /// and `a=rtcp` address (rejected m-lines aside).
    pub fn check_sdp(&self, sdp: &Sdp) -> Result<(), Refused> {
        if let Some(c) = sdp.connection() {
            self.check_conn(c)?;
        }
        for (i, m) in sdp.media().iter().enumerate() {
            if m.is_rejected() {
                continue;
            }
            if let Some(c) = m.connection() {
                self.check_conn(c)?;
            }
            if let Some((Some(ConnAddr::Ip(ip)), _)) = sdp.media_rtcp(i) {
                if !ip.is_unspecified() {
                    if let Some(why) = self.check(ip) {
                        return Err(Refused { ip, why });
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn settings(loopback: bool, link_local: bool) -> MediaSettings {
        MediaSettings {
            ip: "192.0.2.1".parse().unwrap(),
            port_min: 40000,
            port_max: 40010,
            media_timeout: Duration::from_secs(60),
            relay_workers: Some(1),
            gateway_codecs: vec!["PCMU".into()],
            cloud_codecs: vec!["PCMU".into()],
            allow_loopback: loopback,
            allow_link_local: link_local,
            latch_quiet: Duration::from_secs(2),
        }
    }

    fn sdp(c: &str, extra: &str) -> Sdp {
        Sdp::parse(
            format!(
                "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc={c}\r\nt=0 0\r\n\
                 m=audio 4000 RTP/AVP 0\r\n{extra}"
            )
            .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn classes_refused_by_default() {
        let p = AddressPolicy::new(&settings(false, false));
        for (ip, why) in [
            ("127.0.0.1", "loopback"),
            ("127.9.9.9", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("0.1.2.3", "unspecified"),
            ("::", "unspecified"),
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("192.0.2.1", "own address"),
            ("::ffff:192.0.2.1", "own address"),
        ] {
            assert_eq!(p.check(ip.parse().unwrap()), Some(why), "{ip}");
        }
        for ip in ["192.0.2.101", "10.0.0.1", "2001:db8::1"] {
            assert_eq!(p.check(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn allow_switches_admit_their_class_only() {
        let p = AddressPolicy::new(&settings(true, true));
        assert_eq!(p.check("127.0.0.2".parse().unwrap()), None);
        assert_eq!(p.check("169.254.1.1".parse().unwrap()), None);
        assert_eq!(p.check("fe80::1".parse().unwrap()), None);
        // Our own address and multicast stay refused whatever is allowed.
        assert_eq!(p.check("192.0.2.1".parse().unwrap()), Some("own address"));
        assert_eq!(p.check("239.1.1.1".parse().unwrap()), Some("multicast"));
    }

    #[test]
    fn sdp_addresses_checked_where_a_relay_could_be_aimed() {
        let p = AddressPolicy::new(&settings(false, false));
        assert!(p.check_sdp(&sdp("IN IP4 192.0.2.101", "")).is_ok());
        // Hold keeps working.
        assert!(p.check_sdp(&sdp("IN IP4 0.0.0.0", "")).is_ok());
        let e = p.check_sdp(&sdp("IN IP4 127.0.0.1", "")).unwrap_err();
        assert_eq!(e.why, "loopback");
        let e = p.check_sdp(&sdp("IN IP4 233.252.0.1/127", "")).unwrap_err();
        assert_eq!(e.why, "multicast");
        // A media-level c= overrides the session's, and is checked too.
        let e = p
            .check_sdp(&sdp("IN IP4 192.0.2.101", "c=IN IP4 192.0.2.1\r\n"))
            .unwrap_err();
        assert_eq!(e.why, "own address");
        // RFC 3605 a=rtcp with an address.
        let e = p
            .check_sdp(&sdp(
                "IN IP4 192.0.2.101",
                "a=rtcp:5061 IN IP4 169.254.9.9\r\n",
            ))
            .unwrap_err();
        assert_eq!(e.why, "link-local");
    }

    #[test]
    fn config_listeners_are_own_addresses() {
        let cfg = Config::from_toml(
            std::path::Path::new("config/sipedge.toml"),
            include_str!("../../../config/sipedge.toml"),
        )
        .unwrap();
        let mut m = cfg.media.clone().unwrap();
        m.ip = "10.9.9.9".parse().unwrap();
        m.allow_loopback = true;
        let p = AddressPolicy::from_config(&cfg, &m);
        // The lab listens on 127.0.0.1: ours even with loopback allowed.
        assert_eq!(p.check("127.0.0.1".parse().unwrap()), Some("own address"));
        assert_eq!(p.check("10.9.9.9".parse().unwrap()), Some("own address"));
        assert_eq!(p.check("127.0.0.2".parse().unwrap()), None);
    }
}
