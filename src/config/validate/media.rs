//! `[media]`: the anchor's media address, the RTP/RTCP port range, the media timeout, the relay
//! threads and the encodings allowed on each side (default [`DEFAULT_CODECS`]).

use std::net::IpAddr;
use std::time::Duration;

use super::Validator;
use crate::config::{raw, ConfigError, MediaSettings, DEFAULT_CODECS};

impl Validator<'_> {
    pub(super) fn media(&self, m: &raw::RawMedia) -> Result<MediaSettings, ConfigError> {
        let ip: IpAddr = match &m.ip {
            Some(s) => s
                .parse()
                .map_err(|_| self.err("media.ip", &format!("{s:?} is not an IP address")))?,
            None => return Err(self.err("media.ip", "missing: the anchor's media address")),
        };
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(self.err(
                "media.ip",
                &format!("{ip} cannot be a media address (unicast, not 0.0.0.0)"),
            ));
        }
        let port_min = m.port_min.unwrap_or(49152);
        let port_max = m.port_max.unwrap_or(57500);
        if port_min < 1024 {
            return Err(self.err("media.port_min", "media ports start at 1024 or above"));
        }
        // At least one even/odd pair inside the range.
        let base = port_min.saturating_add(port_min % 2);
        if port_max <= base {
            return Err(self.err(
                "media.port_max",
                &format!(
                    "range {port_min}-{port_max} holds no RTP/RTCP port pair (even port and the next)"
                ),
            ));
        }
        let secs = m.media_timeout_s.unwrap_or(60);
        if !(1..=86_400).contains(&secs) {
            return Err(self.err(
                "media.media_timeout_s",
                &format!("{secs} is out of range 1..=86400"),
            ));
        }
        if m.relay_workers == Some(0) || m.relay_workers.is_some_and(|w| w > 256) {
            return Err(self.err("media.relay_workers", "between 1 and 256 relay threads"));
        }
        let codecs = |key: &str, c: &Option<Vec<String>>| -> Result<Vec<String>, ConfigError> {
            let list: Vec<String> = match c {
                Some(l) => l.clone(),
                None => DEFAULT_CODECS.iter().map(|s| (*s).to_owned()).collect(),
            };
            for (i, name) in list.iter().enumerate() {
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
                {
                    return Err(self.err(
                        &format!("{key}[{i}]"),
                        &format!("{name:?} is not an encoding name (e.g. \"PCMU\")"),
                    ));
                }
            }
            if list.is_empty() {
                return Err(self.err(key, "at least one codec must be allowed"));
            }
            Ok(list)
        };
        let quiet_ms = m.latch_quiet_ms.unwrap_or(2000);
        if !(100..=60_000).contains(&quiet_ms) {
            return Err(self.err(
                "media.latch_quiet_ms",
                &format!("{quiet_ms} is out of range 100..=60000"),
            ));
        }
        Ok(MediaSettings {
            ip,
            port_min,
            port_max,
            media_timeout: Duration::from_secs(secs),
            relay_workers: m.relay_workers,
            gateway_codecs: codecs("media.gateway_codecs", &m.gateway_codecs)?,
            cloud_codecs: codecs("media.cloud_codecs", &m.cloud_codecs)?,
            allow_loopback: m.allow_loopback.unwrap_or(false),
            allow_link_local: m.allow_link_local.unwrap_or(false),
            latch_quiet: Duration::from_millis(quiet_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::test_support::{err_of, lab, LAB};
    use crate::config::{Config, SrtpMode};

    #[test]
    fn media_table_defaults_and_lab_values() {
        let c = lab();
        let m = c.media.as_ref().expect("lab has [media]");
        assert_eq!(m.ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!((m.port_min, m.port_max), (49152, 57500));
        assert_eq!(m.media_timeout, Duration::from_secs(60));
        assert_eq!(c.cloud_peer.srtp, SrtpMode::Optional);
        assert!(c.gateways.iter().all(|g| g.srtp == SrtpMode::Off));
        // Without [media] nothing is anchored; without cloud_peer.srtp SRTP is required.
        let bare = LAB
            .split("\n[media]")
            .next()
            .unwrap()
            .replace("srtp = \"optional\"\n", "");
        let c = Config::from_toml(Path::new("t.toml"), &bare).unwrap();
        assert!(c.media.is_none());
        assert_eq!(c.cloud_peer.srtp, SrtpMode::Required);
        let c = Config::from_toml(
            Path::new("t.toml"),
            &format!("{bare}\n[media]\nip = \"10.0.0.1\"\n"),
        )
        .unwrap();
        let m = c.media.unwrap();
        assert_eq!(m.media_timeout, Duration::from_secs(60));
        assert!(m.cloud_codecs.iter().any(|c| c == "PCMU"));
    }

    #[test]
    fn media_errors_name_their_key() {
        let bare = LAB.split("\n[media]").next().unwrap().to_owned();
        let media = |t: &str| err_of(&format!("{bare}\n[media]\n{t}\n"));
        assert_eq!(media("port_min = 5000").key, "media.ip");
        assert_eq!(media("ip = \"nope\"").key, "media.ip");
        assert_eq!(media("ip = \"0.0.0.0\"").key, "media.ip");
        let e = media("ip = \"10.0.0.1\"\nport_min = 50000\nport_max = 50000");
        assert_eq!(e.key, "media.port_max");
        assert!(e.reason.contains("no RTP/RTCP port pair"), "{e}");
        assert_eq!(
            media("ip = \"10.0.0.1\"\nmedia_timeout_s = 0").key,
            "media.media_timeout_s"
        );
        assert_eq!(
            media("ip = \"10.0.0.1\"\ncloud_codecs = [\"PC MU\"]").key,
            "media.cloud_codecs[0]"
        );
        let e = media("ip = \"10.0.0.1\"\nspeed = 1");
        assert!(e.reason.contains("unknown field `speed`"), "{e}");
        let e = err_of(&LAB.replace("srtp = \"optional\"", "srtp = \"maybe\""));
        assert_eq!(e.key, "cloud_peer.srtp");
        assert!(e.reason.contains("required"), "{e}");
    }
}
