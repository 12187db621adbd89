//! The validated newtypes and small enums of the configuration: [`ConfigError`] (file, key
//! path, line, reason), the names ([`Fqdn`], [`HostName`]), the per-peer choices ([`Transport`],
//! [`Side`], [`SrtpMode`], [`VoiceRoutingPolicy`]) and where a certificate comes from
//! ([`CertSource`]). Each parses its own TOML text here and reports a bare reason; the
//! validator adds the file and the key path.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

/// A configuration error: which file, which key, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted key path, e.g. `gateways[1].site`; empty when the whole file is at fault.
    pub key: String,
    /// 1-based line, where known.
    pub line: Option<usize>,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// A lower-case, syntactically valid fully qualified domain name (RFC 1123 labels).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fqdn(String);

impl Fqdn {
    pub fn parse(s: &str) -> Result<Fqdn, String> {
        let s = s.trim_end_matches('.');
        if s.is_empty() || s.len() > 253 {
            return Err(format!(
                "{s:?} is not a domain name (empty or longer than 253)"
            ));
        }
        if s.parse::<IpAddr>().is_ok() {
            return Err(format!("{s:?} is an IP address; an FQDN is required here"));
        }
        let labels: Vec<&str> = s.split('.').collect();
        if labels.len() < 2 {
            return Err(format!("{s:?} is not fully qualified (needs a dot)"));
        }
        for label in &labels {
            let ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !ok {
                return Err(format!("{s:?} has an invalid label {label:?}"));
            }
        }
        Ok(Fqdn(s.to_ascii_lowercase()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fqdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A trunk is named by FQDN or by IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostName {
    Fqdn(Fqdn),
    Ip(IpAddr),
}

impl HostName {
    pub fn parse(s: &str) -> Result<HostName, String> {
        let unbracketed = s.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(HostName::Ip(ip));
        }
        Fqdn::parse(s).map(HostName::Fqdn)
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostName::Fqdn(n) => write!(f, "{n}"),
            HostName::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn parse(s: &str) -> Result<Transport, String> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Ok(Transport::Udp),
            "tcp" => Ok(Transport::Tcp),
            "tls" => Ok(Transport::Tls),
            _ => Err(format!(
                "unknown transport {s:?} (expected udp, tcp or tls)"
            )),
        }
    }
    /// The token used in Via (RFC 3261 §20.42).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
    /// The `transport=` URI parameter value.
    pub fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// Which side of the appliance: gateways (PSTN) or the cloud peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Gateway,
    Cloud,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Gateway => Side::Cloud,
            Side::Cloud => Side::Gateway,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Gateway => "gateway",
            Side::Cloud => "cloud",
        }
    }
}

/// SRTP (SDES, RFC 4568) toward one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpMode {
    /// RTP/SAVP with our `a=crypto`; plain RTP is refused (488).
    Required,
    /// RFC 8643 opportunistic SRTP: RTP/AVP with our `a=crypto` in offers; SRTP when the
    /// other side's SDP carries a usable crypto line, plain RTP when it does not.
    Optional,
    /// Plain RTP: no crypto line, SAVP refused (488).
    Off,
}

impl SrtpMode {
    pub fn parse(s: &str) -> Result<SrtpMode, String> {
        match s {
            "required" => Ok(SrtpMode::Required),
            "optional" => Ok(SrtpMode::Optional),
            "off" => Ok(SrtpMode::Off),
            _ => Err(format!(
                "unknown SRTP mode {s:?} (expected \"required\", \"optional\" or \"off\")"
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SrtpMode::Required => "required",
            SrtpMode::Optional => "optional",
            SrtpMode::Off => "off",
        }
    }
}

/// Where a leg's media may come from (`latching` of a gateway or of the cloud peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LatchMode {
    /// Only from the address signalled in SDP: a packet from anywhere else (another port of the
    /// same host included) is dropped and never takes the leg over.
    #[default]
    Strict,
    /// Symmetric RTP behind NAT: the first packet that passes validation (SRTP authentication
    /// on an SRTP leg) takes the latch, from any address; it moves only after the latched source
    /// has been quiet for `media.latch_quiet_ms`.
    Nat,
}

impl LatchMode {
    pub fn parse(s: &str) -> Result<LatchMode, String> {
        match s {
            "strict" => Ok(LatchMode::Strict),
            "nat" => Ok(LatchMode::Nat),
            _ => Err(format!(
                "unknown latching {s:?} (expected \"strict\" or \"nat\")"
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            LatchMode::Strict => "strict",
            LatchMode::Nat => "nat",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoiceRoutingPolicy {
    InternationalCallsAllowed,
    InternationalCallsDisallowed,
}

impl VoiceRoutingPolicy {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "InternationalCallsAllowed" => Ok(Self::InternationalCallsAllowed),
            "InternationalCallsDisallowed" => Ok(Self::InternationalCallsDisallowed),
            _ => Err(format!(
                "unknown policy {s:?} (expected InternationalCallsAllowed or InternationalCallsDisallowed)"
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InternationalCallsAllowed => "InternationalCallsAllowed",
            Self::InternationalCallsDisallowed => "InternationalCallsDisallowed",
        }
    }
}

/// Where one side's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// PEM certificate (leaf first, may hold the chain), PEM key, optional PEM chain file.
    Pem {
        cert: PathBuf,
        key: PathBuf,
        chain: Option<PathBuf>,
    },
    /// A PKCS#12 bundle (key + chain) and the file holding its password (first line).
    Pkcs12 {
        file: PathBuf,
        password_file: PathBuf,
    },
}

impl CertSource {
    /// Every file behind this source (watched for changes).
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            CertSource::Pem { cert, key, chain } => {
                let mut v = vec![cert.clone(), key.clone()];
                v.extend(chain.clone());
                v
            }
            CertSource::Pkcs12 {
                file,
                password_file,
            } => vec![file.clone(), password_file.clone()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fqdn_rules() {
        assert!(Fqdn::parse("gw1.lab.example").is_ok());
        assert_eq!(
            Fqdn::parse("GW1.Lab.Example.").unwrap().as_str(),
            "gw1.lab.example"
        );
        assert!(Fqdn::parse("localhost").is_err());
        assert!(Fqdn::parse("-a.example").is_err());
        assert!(Fqdn::parse("a..example").is_err());
        assert!(Fqdn::parse("127.0.0.1").is_err());
        assert_eq!(
            HostName::parse("[::1]").unwrap(),
            HostName::Ip("::1".parse().unwrap())
        );
    }
}
