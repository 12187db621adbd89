//! Addresses and the two lines that carry the session's addresses: `c=`
//! (RFC 4566 §5.7) and `o=` (RFC 4566 §5.2).

use std::net::IpAddr;
use std::str::FromStr;

/// Address type of a `c=`/`o=`/`a=rtcp` address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrType {
    /// `IP4`
    Ip4,
    /// `IP6`
    Ip6,
}

impl AddrType {
    /// `IP4` or `IP6`.
    pub fn as_str(self) -> &'static str {
        match self {
            AddrType::Ip4 => "IP4",
            AddrType::Ip6 => "IP6",
        }
    }

    /// The address type of an IP address.
    pub fn of(ip: IpAddr) -> AddrType {
        match ip {
            IpAddr::V4(_) => AddrType::Ip4,
            IpAddr::V6(_) => AddrType::Ip6,
        }
    }
}

/// A connection address: an IP literal or a domain name (RFC 4566 §5.7 allows
/// an FQDN, as the RFC 4317 examples use).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnAddr {
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
    /// A fully qualified domain name, to be resolved by the caller.
    Name(String),
}

impl ConnAddr {
    /// The IP literal, if it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            ConnAddr::Ip(ip) => Some(*ip),
            ConnAddr::Name(_) => None,
        }
    }

    /// `0.0.0.0` (or `::`): the RFC 2543 way of putting a stream on hold that
    /// RFC 3264 §8.4 still asks answerers to understand.
    pub fn is_hold(&self) -> bool {
        matches!(self, ConnAddr::Ip(ip) if ip.is_unspecified())
    }
}

pub(super) fn parse_addr(s: &str) -> Result<ConnAddr, ()> {
    if s.is_empty() {
        return Err(());
    }
    if let Ok(ip) = IpAddr::from_str(s) {
        return Ok(ConnAddr::Ip(ip));
    }
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        Ok(ConnAddr::Name(s.to_owned()))
    } else {
        Err(())
    }
}

fn parse_addr_type(s: &str) -> Result<AddrType, ()> {
    if s.eq_ignore_ascii_case("IP4") {
        Ok(AddrType::Ip4)
    } else if s.eq_ignore_ascii_case("IP6") {
        Ok(AddrType::Ip6)
    } else {
        Err(())
    }
}

/// A `c=` line (RFC 4566 §5.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// `IP4` or `IP6`.
    pub addr_type: AddrType,
    /// The address.
    pub address: ConnAddr,
    /// Multicast `/ttl[/count]` suffix, verbatim without the first `/`.
    pub multicast: Option<String>,
}

impl Connection {
    /// Parses the value of a `c=` line: `IN IP4 <addr>[/ttl[/n]]`.
    pub fn parse(value: &str) -> Option<Connection> {
        Connection::parse_inner(value).ok()
    }

    fn parse_inner(value: &str) -> Result<Connection, ()> {
        let mut f = value.split_ascii_whitespace();
        let net = f.next().ok_or(())?;
        if !net.eq_ignore_ascii_case("IN") {
            return Err(());
        }
        let addr_type = parse_addr_type(f.next().ok_or(())?)?;
        let addr = f.next().ok_or(())?;
        if f.next().is_some() {
            return Err(());
        }
        let (addr, multicast) = match addr.split_once('/') {
            Some((a, m)) => {
                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_digit() || b == b'/') {
                    return Err(());
                }
                (a, Some(m.to_owned()))
            }
            None => (addr, None),
        };
        let address = parse_addr(addr)?;
        Ok(Connection {
            addr_type,
            address,
            multicast,
        })
    }

    /// True for the `0.0.0.0` hold address.
    pub fn is_hold(&self) -> bool {
        self.address.is_hold()
    }
}

/// The `o=` line (RFC 4566 §5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// `<username>`
    pub username: String,
    /// `<sess-id>` (numeric string, kept verbatim).
    pub session_id: String,
    /// `<sess-version>`, which RFC 3264 §8 has incremented on every change.
    pub session_version: u64,
    /// `IP4`/`IP6`.
    pub addr_type: AddrType,
    /// `<unicast-address>` (IP literal or FQDN), verbatim.
    pub address: String,
}

impl Origin {
    pub(super) fn parse(value: &str) -> Result<Origin, ()> {
        let f: Vec<&str> = value.split_ascii_whitespace().collect();
        let [username, session_id, version, net, addr_type, address] = f.as_slice() else {
            return Err(());
        };
        if !net.eq_ignore_ascii_case("IN")
            || session_id.is_empty()
            || !version.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(());
        }
        Ok(Origin {
            username: (*username).to_owned(),
            session_id: (*session_id).to_owned(),
            session_version: version.parse().map_err(|_| ())?,
            addr_type: parse_addr_type(addr_type)?,
            address: (*address).to_owned(),
        })
    }

    /// The `o=` line text without the line end.
    pub fn to_line(&self) -> String {
        format!(
            "o={} {} {} IN {} {}",
            self.username,
            self.session_id,
            self.session_version,
            self.addr_type.as_str(),
            self.address
        )
    }
}
