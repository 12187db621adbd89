//! Borrowed view of one Via value (RFC 3261 §20.42, §18.2.1; RFC 3581;
//! RFC 5118 IPv6).

use super::grammar::{is_lws, is_token_char, skip_lws, trim_lws, Param, ParamIter, Span};
use super::uri::parse_hostport;
use super::{ParseError, ParseErrorKind};

/// One Via value: `SIP / 2.0 / UDP host[:port] ;params`. LWS (including
/// folding) is accepted around `/`, `:` `;` and `=` (RFC 4475 wsinv).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    raw: &'a [u8],
    protocol: &'a [u8],
    version: &'a [u8],
    transport: &'a [u8],
    host: &'a [u8],
    port: Option<u16>,
    params: &'a [u8],
}

/// A parsed [`Via`] stored as offsets into the message buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ViaIdx {
    raw: Span,
    protocol: Span,
    version: Span,
    transport: Span,
    host: Span,
    port: Option<u16>,
    params: Span,
}

fn err() -> ParseError {
    ParseError::new(ParseErrorKind::BadVia)
}

fn token_at(s: &[u8], i: usize) -> (usize, usize) {
    let mut j = i;
    while let Some(&c) = s.get(j) {
        if !is_token_char(c) {
            break;
        }
        j += 1;
    }
    (i, j)
}

fn as_str(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or("")
}

impl<'a> Via<'a> {
    /// Parses one Via value (one element of a comma-separated Via header).
    pub fn parse(raw: &'a [u8]) -> Result<Via<'a>, ParseError> {
        let raw = trim_lws(raw);
        let s = raw;
        let mut parts: [&[u8]; 3] = [&[]; 3];
        let mut i = 0;
        for (n, part) in parts.iter_mut().enumerate() {
            if n > 0 {
                i = skip_lws(s, i);
                if s.get(i) != Some(&b'/') {
                    return Err(err());
                }
                i = skip_lws(s, i + 1);
            }
            let (a, b) = token_at(s, i);
            if a == b {
                return Err(err());
            }
            *part = s.get(a..b).ok_or_else(err)?;
            i = b;
        }
        // sent-protocol and sent-by are separated by LWS.
        if !s.get(i).is_some_and(|&c| is_lws(c)) {
            return Err(err());
        }
        i = skip_lws(s, i);
        let rest = s.get(i..).ok_or_else(err)?;
        // sent-by = host [ COLON port ]; tolerate LWS around the colon.
        let (host, mut port, used) =
            parse_hostport(rest, |c| c == b';' || is_lws(c)).map_err(|_| err())?;
        let mut j = i + used;
        if port.is_none() {
            let k = skip_lws(s, j);
            if s.get(k) == Some(&b':') {
                let ps = skip_lws(s, k + 1);
                let mut pe = ps;
                while s.get(pe).is_some_and(|c| c.is_ascii_digit()) {
                    pe += 1;
                }
                let digits = s.get(ps..pe).ok_or_else(err)?;
                let v = super::grammar::parse_u64(digits).ok_or_else(err)?;
                port = Some(u16::try_from(v).map_err(|_| err())?);
                j = pe;
            }
        }
        let params = s.get(j..).unwrap_or(&[]);
        if !ParamIter::header(params).validate() {
            return Err(err());
        }
        Ok(Via {
            raw,
            protocol: parts[0],
            version: parts[1],
            transport: parts[2],
            host,
            port,
            params,
        })
    }

    pub(crate) fn index(&self, buf: &[u8]) -> Option<ViaIdx> {
        Some(ViaIdx {
            raw: Span::of(buf, self.raw)?,
            protocol: Span::of(buf, self.protocol)?,
            version: Span::of(buf, self.version)?,
            transport: Span::of(buf, self.transport)?,
            host: Span::of(buf, self.host)?,
            port: self.port,
            params: Span::of(buf, self.params)?,
        })
    }

    pub(crate) fn from_index(buf: &'a [u8], i: &ViaIdx) -> Via<'a> {
        Via {
            raw: i.raw.get(buf),
            protocol: i.protocol.get(buf),
            version: i.version.get(buf),
            transport: i.transport.get(buf),
            host: i.host.get(buf),
            port: i.port,
            params: i.params.get(buf),
        }
    }

    /// The value as received (LWS-trimmed, folding kept).
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Protocol name, normally `SIP`.
    pub fn protocol(&self) -> &'a str {
        as_str(self.protocol)
    }

    /// Protocol version, normally `2.0`.
    pub fn version(&self) -> &'a str {
        as_str(self.version)
    }

    /// Transport token as written: `UDP`, `TCP`, `TLS`, `SCTP`, `WS`, or an
    /// unknown token (RFC 4475 transports).
    pub fn transport(&self) -> &'a str {
        as_str(self.transport)
    }

    /// sent-by host; IPv6 references keep their brackets.
    pub fn host(&self) -> &'a str {
        as_str(self.host)
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Via parameter by case-insensitive name: `Some(None)` for a flag.
    pub fn param(&self, name: &str) -> Option<Option<&'a [u8]>> {
        ParamIter::header(self.params).find(name)
    }

    /// All parameters as written, starting at the first `;` (may be empty).
    pub fn params_raw(&self) -> &'a [u8] {
        self.params
    }

    pub fn branch(&self) -> Option<&'a [u8]> {
        self.param("branch").flatten()
    }

    /// `received` as written (RFC 5118 §4.5: may hold `[IPv6]`).
    pub fn received(&self) -> Option<&'a [u8]> {
        self.param("received").flatten()
    }

    /// RFC 3581: `None` = no rport, `Some(None)` = bare `;rport` (or an
    /// unparsable value), `Some(Some(p))` = `;rport=p`.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.param("rport").map(|v| {
            v.and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse().ok())
        })
    }

    pub fn maddr(&self) -> Option<&'a [u8]> {
        self.param("maddr").flatten()
    }

    pub fn ttl(&self) -> Option<u8> {
        self.param("ttl")
            .flatten()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
    }

    /// Parameters with their offsets inside `params_raw()` (for the editor).
    pub(crate) fn param_spans(&self) -> impl Iterator<Item = Param<'a>> + 'a {
        ParamIter::header(self.params).filter_map(Result::ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_via() {
        let v = Via::parse(
            b"SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776asdhds;rport;received=192.0.2.1",
        )
        .unwrap();
        assert_eq!(v.protocol(), "SIP");
        assert_eq!(v.version(), "2.0");
        assert_eq!(v.transport(), "UDP");
        assert_eq!(v.host(), "pc33.atlanta.com");
        assert_eq!(v.port(), Some(5066));
        assert_eq!(v.branch(), Some(&b"z9hG4bK776asdhds"[..]));
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.received(), Some(&b"192.0.2.1"[..]));
        assert_eq!(v.maddr(), None);
        assert_eq!(v.ttl(), None);
        assert_eq!(v.param("BRANCH"), Some(Some(&b"z9hG4bK776asdhds"[..])));
    }

    #[test]
    fn tortuous_whitespace_and_folding() {
        let v = Via::parse(b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.transport(), "UDP");
        assert_eq!(v.host(), "192.0.2.2");
        assert_eq!(v.branch(), Some(&b"390skdjuw"[..]));
        let v = Via::parse(
            b"SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8",
        )
        .unwrap();
        assert_eq!(v.transport(), "TCP");
        assert_eq!(v.host(), "spindle.example.com");
        assert_eq!(v.branch(), Some(&b"z9hG4bK9ikj8"[..]));
        let v = Via::parse(b"SIP/2.0/UDP host : 5060 ;ttl=16;maddr=224.2.0.1;rport=1234").unwrap();
        assert_eq!(v.port(), Some(5060));
        assert_eq!(v.ttl(), Some(16));
        assert_eq!(v.maddr(), Some(&b"224.2.0.1"[..]));
        assert_eq!(v.rport(), Some(Some(1234)));
    }

    #[test]
    fn ipv6_sent_by_and_received() {
        let v = Via::parse(b"SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKas3-111").unwrap();
        assert_eq!(v.host(), "[2001:db8::9:1]");
        assert_eq!(v.port(), Some(6050));
        let v = Via::parse(
            b"SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3-111",
        )
        .unwrap();
        assert_eq!(v.received(), Some(&b"[2001:db8::9:255]"[..]));
        let v =
            Via::parse(b"SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3")
                .unwrap();
        assert_eq!(v.received(), Some(&b"2001:db8::9:255"[..]));
        assert_eq!(v.branch(), Some(&b"z9hG4bKas3"[..]));
    }

    #[test]
    fn unknown_transport() {
        let v = Via::parse(b"SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en").unwrap();
        assert_eq!(v.transport(), "UNKNOWN");
    }

    #[test]
    fn refusals() {
        for bad in [
            &b""[..],
            b"SIP/2.0/UDP",
            b"SIP/2.0 UDP host",
            b"SIP/2.0/UDPhost",
            b"SIP/2.0/UDP 192.0.2.15;;",
            b"SIP/2.0/UDP host;branch=",
            b"SIP/2.0/UDP host:70000",
            b"SIP/2.0/UDP host junk",
            b"SIP/2.0/UDP [::1",
        ] {
            assert!(
                Via::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
