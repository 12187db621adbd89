//! `[tls]`: our certificate on each side (PEM or PKCS#12), extra trust anchors, the CRL, the
//! handshake limits and the names the cloud peer's certificate must carry. Relative file names
//! are resolved against the configuration file's directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Validator;
use crate::config::{raw, CertSource, CloudPeer, ConfigError, HostName, TlsSettings};

impl Validator<'_> {
    fn path(&self, base: &Path, key: &str, s: &str) -> Result<PathBuf, ConfigError> {
        if s.trim().is_empty() {
            return Err(self.err(key, "an empty file name"));
        }
        let p = PathBuf::from(s);
        Ok(if p.is_absolute() { p } else { base.join(p) })
    }

    fn cert_source(
        &self,
        base: &Path,
        key: &str,
        c: &raw::RawTlsCert,
    ) -> Result<CertSource, ConfigError> {
        let opt = |name: &str, s: &Option<String>| -> Result<Option<PathBuf>, ConfigError> {
            s.as_deref()
                .map(|s| self.path(base, &format!("{key}.{name}"), s))
                .transpose()
        };
        let (cert, k, chain) = (
            opt("cert", &c.cert)?,
            opt("key", &c.key)?,
            opt("chain", &c.chain)?,
        );
        let (p12, pw) = (
            opt("p12", &c.p12)?,
            opt("p12_password_file", &c.p12_password_file)?,
        );
        match (cert, k, p12, pw) {
            (Some(cert), Some(key_path), None, None) => Ok(CertSource::Pem {
                cert,
                key: key_path,
                chain,
            }),
            (None, None, Some(file), Some(password_file)) => {
                if chain.is_some() {
                    return Err(self.err(
                        &format!("{key}.chain"),
                        "a PKCS#12 bundle carries its chain; chain is for PEM",
                    ));
                }
                Ok(CertSource::Pkcs12 {
                    file,
                    password_file,
                })
            }
            (None, None, Some(_), None) => Err(self.err(
                &format!("{key}.p12_password_file"),
                "a PKCS#12 bundle needs its password file",
            )),
            (Some(_), None, None, None) => Err(self.err(
                &format!("{key}.key"),
                "a PEM certificate needs its key file",
            )),
            (None, Some(_), None, None) => Err(self.err(
                &format!("{key}.cert"),
                "a key file needs its certificate file",
            )),
            (None, None, None, _) => Err(self.err(
                key,
                "give cert and key (PEM) or p12 and p12_password_file (PKCS#12)",
            )),
            _ => Err(self.err(
                key,
                "either cert and key (PEM) or p12 and p12_password_file (PKCS#12), not both",
            )),
        }
    }

    pub(super) fn tls(
        &self,
        base: &Path,
        raw: &raw::RawTls,
        peer: &CloudPeer,
    ) -> Result<TlsSettings, ConfigError> {
        let gateway_side = raw
            .gateway_side
            .as_ref()
            .map(|c| self.cert_source(base, "tls.gateway_side", c))
            .transpose()?;
        let cloud_side = raw
            .cloud_side
            .as_ref()
            .map(|c| self.cert_source(base, "tls.cloud_side", c))
            .transpose()?;
        let mut trust = Vec::new();
        for (i, t) in raw.trust.iter().enumerate() {
            trust.push(self.path(base, &format!("tls.trust[{i}]"), t)?);
        }
        let crl = raw
            .crl
            .as_deref()
            .map(|c| self.path(base, "tls.crl", c))
            .transpose()?;
        let timeout = raw.handshake_timeout_s.unwrap_or(10);
        if !(1..=300).contains(&timeout) {
            return Err(self.err(
                "tls.handshake_timeout_s",
                &format!("{timeout} is out of range 1..=300"),
            ));
        }
        let max_handshakes = raw.max_handshakes.unwrap_or(256);
        if !(1..=100_000).contains(&max_handshakes) {
            return Err(self.err(
                "tls.max_handshakes",
                &format!("{max_handshakes} is out of range 1..=100000"),
            ));
        }
        let handshakes_per_source = raw.handshakes_per_source.unwrap_or(8);
        if !(1..=100_000).contains(&handshakes_per_source) {
            return Err(self.err(
                "tls.handshakes_per_source",
                &format!("{handshakes_per_source} is out of range 1..=100000"),
            ));
        }
        let outbound_handshakes = raw.outbound_handshakes.unwrap_or(64);
        if !(1..=100_000).contains(&outbound_handshakes) {
            return Err(self.err(
                "tls.outbound_handshakes",
                &format!("{outbound_handshakes} is out of range 1..=100000"),
            ));
        }
        let crl_refresh = raw.crl_refresh_s.unwrap_or(3600);
        if !(1..=86_400).contains(&crl_refresh) {
            return Err(self.err(
                "tls.crl_refresh_s",
                &format!("{crl_refresh} is out of range 1..=86400"),
            ));
        }
        let cloud_peer_names = match &raw.cloud_peer_names {
            None => peer.fqdns.iter().map(|f| f.to_string()).collect(),
            Some(names) if names.is_empty() => {
                return Err(self.err(
                    "tls.cloud_peer_names",
                    "at least one name (omit the key for the cloud peer's FQDN)",
                ))
            }
            Some(names) => {
                let mut out = Vec::new();
                for (i, n) in names.iter().enumerate() {
                    let h = HostName::parse(n)
                        .map_err(|r| self.err(&format!("tls.cloud_peer_names[{i}]"), &r))?;
                    out.push(h.to_string());
                }
                out
            }
        };
        Ok(TlsSettings {
            gateway_side,
            cloud_side,
            trust,
            crl,
            handshake_timeout: Duration::from_secs(timeout),
            max_handshakes,
            handshakes_per_source,
            outbound_handshakes,
            allow_cn_identity: raw.allow_cn_identity.unwrap_or(true),
            crl_refresh: Duration::from_secs(crl_refresh),
            cloud_peer_names,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use crate::config::test_support::{err_of, lab, LAB};
    use crate::config::{CertSource, Config};

    #[test]
    fn tls_defaults_and_lab_listeners() {
        let c = lab();
        assert_eq!(
            c.gateway_listen.tls,
            Some("127.0.0.1:5067".parse().unwrap())
        );
        assert_eq!(c.cloud_listen.tls, Some("127.0.0.1:5061".parse().unwrap()));
        assert!(c.uses_tls());
        assert_eq!(c.tls.gateway_side, None);
        assert_eq!(c.tls.cloud_side, None);
        assert_eq!(c.tls.handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.tls.cloud_peer_names, vec!["sip.cloud.lab.example"]);
        assert!(c.tls.trust.is_empty());
        assert_eq!(c.tls.handshakes_per_source, 8);
        assert_eq!(c.tls.outbound_handshakes, 64);
        assert!(c.tls.allow_cn_identity);
        assert_eq!(c.tls.crl_refresh, Duration::from_secs(3600));
        assert_eq!(c.limits.message_timeout, Duration::from_secs(5));
        assert_eq!(c.limits.write_queue, 256);
    }

    #[test]
    fn tls_table_parses_pem_and_pkcs12_sources() {
        let text = LAB.replace(
            "[tls]\nhandshake_timeout_s = 10\nmax_handshakes = 256",
            "[tls]\ngateway_side = { cert = \"gw.crt\", key = \"/etc/k.key\", chain = \"c.pem\" }\n\
             cloud_side = { p12 = \"edge.p12\", p12_password_file = \"edge.pw\" }\n\
             trust = [\"vendor.pem\"]\ncrl = \"x.crl\"\nhandshake_timeout_s = 3\nmax_handshakes = 8\n\
             handshakes_per_source = 2\noutbound_handshakes = 5\nallow_cn_identity = false\n\
             crl_refresh_s = 60\n\
             cloud_peer_names = [\"sip.pstnhub.example\", \"SIP2.pstnhub.example\"]\n",
        );
        let c = Config::from_toml(Path::new("/etc/sipedge/s.toml"), &text).unwrap();
        assert_eq!(
            c.tls.gateway_side,
            Some(CertSource::Pem {
                cert: "/etc/sipedge/gw.crt".into(),
                key: "/etc/k.key".into(),
                chain: Some("/etc/sipedge/c.pem".into()),
            })
        );
        assert_eq!(
            c.tls.cloud_side,
            Some(CertSource::Pkcs12 {
                file: "/etc/sipedge/edge.p12".into(),
                password_file: "/etc/sipedge/edge.pw".into(),
            })
        );
        assert_eq!(c.tls.trust, vec![PathBuf::from("/etc/sipedge/vendor.pem")]);
        assert_eq!(c.tls.crl, Some("/etc/sipedge/x.crl".into()));
        assert_eq!(c.tls.handshake_timeout, Duration::from_secs(3));
        assert_eq!(c.tls.max_handshakes, 8);
        assert_eq!(c.tls.handshakes_per_source, 2);
        assert_eq!(c.tls.outbound_handshakes, 5);
        assert!(!c.tls.allow_cn_identity);
        assert_eq!(c.tls.crl_refresh, Duration::from_secs(60));
        assert_eq!(
            c.tls.cloud_peer_names,
            vec!["sip.pstnhub.example", "sip2.pstnhub.example"]
        );
    }

    #[test]
    fn tls_errors_name_their_key() {
        let with = |t: &str| {
            err_of(&LAB.replace(
                "[tls]\nhandshake_timeout_s = 10\nmax_handshakes = 256",
                &format!("[tls]\n{t}\n"),
            ))
        };
        let e = with("gateway_side = { cert = \"a.crt\" }");
        assert_eq!(e.key, "tls.gateway_side.key");
        let e = with("cloud_side = { p12 = \"a.p12\" }");
        assert_eq!(e.key, "tls.cloud_side.p12_password_file");
        let e = with("cloud_side = { p12 = \"a.p12\", p12_password_file = \"p\", cert = \"a\", key = \"b\" }");
        assert_eq!(e.key, "tls.cloud_side");
        assert!(e.reason.contains("not both"), "{e}");
        let e = with("handshake_timeout_s = 0");
        assert_eq!(e.key, "tls.handshake_timeout_s");
        let e = with("handshakes_per_source = 0");
        assert_eq!(e.key, "tls.handshakes_per_source");
        let e = with("crl_refresh_s = 0");
        assert_eq!(e.key, "tls.crl_refresh_s");
        let e = with("cloud_peer_names = []");
        assert_eq!(e.key, "tls.cloud_peer_names");
        let e = with("cloud_peer_names = [\"bad name\"]");
        assert_eq!(e.key, "tls.cloud_peer_names[0]");
        let e = with("certs = 1");
        assert!(e.reason.contains("unknown field `certs`"), "{e}");
        let e = with("gateway_side = { cert = \"a\", key = \"b\", pem = 1 }");
        assert!(e.reason.contains("unknown field `pem`"), "{e}");
    }
}
