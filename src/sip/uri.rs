//! Borrowed URI view (RFC 3261 §19.1, RFC 3966 `tel:`, RFC 5118 IPv6).

use super::grammar::{parse_u64, uri_class, ParamIter, Span, URI_BAD};
use super::{ParseError, ParseErrorKind};

/// URI scheme. Comparison is case-insensitive (RFC 3261 §19.1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    /// Any other scheme (the proxy answers 416, RFC 3261 §8.2.2.1).
    Other,
}

/// A parsed URI borrowing its bytes. For `sip:`/`sips:` the user, host, port,
/// parameters and headers are split out; for `tel:` the number is the host;
/// for other schemes everything after the colon is the (opaque) host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Uri<'a> {
    raw: &'a [u8],
    scheme: Scheme,
    scheme_raw: &'a [u8],
    user: Option<&'a [u8]>,
    password: Option<&'a [u8]>,
    host: &'a [u8],
    port: Option<u16>,
    params: &'a [u8],
    headers: Option<&'a [u8]>,
}

/// A parsed [`Uri`] stored as offsets into the message buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UriIdx {
    raw: Span,
    scheme: Scheme,
    scheme_raw: Span,
    user: Option<Span>,
    password: Option<Span>,
    host: Span,
    port: Option<u16>,
    params: Span,
    headers: Option<Span>,
}

fn err() -> ParseError {
    ParseError::new(ParseErrorKind::BadUri)
}

fn is_host_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_')
}

/// RFC 5118: inside `[...]` accept hex digits, `:` and `.` (the 3-colon form
/// `[2001:db8:::192.0.2.1]` of §4.10 is tolerated).
fn is_ipv6_char(c: u8) -> bool {
    c.is_ascii_hexdigit() || c == b':' || c == b'.'
}

/// Splits `host[:port]` at the start of `s`; returns host, port and the index
/// just after them. `host` keeps IPv6 brackets.
pub(crate) fn parse_hostport(
    s: &[u8],
    stop: impl Fn(u8) -> bool,
) -> Result<(&[u8], Option<u16>, usize), ()> {
    let mut i = 0;
    if s.first() == Some(&b'[') {
        let close = memchr::memchr(b']', s).ok_or(())?;
        let inner = s.get(1..close).ok_or(())?;
        if inner.is_empty() || !inner.iter().all(|&c| is_ipv6_char(c)) || !inner.contains(&b':') {
            return Err(());
        }
        i = close + 1;
    } else {
        while let Some(&c) = s.get(i) {
            if !is_host_char(c) {
                break;
            }
            i += 1;
        }
        if i == 0 {
            return Err(());
        }
    }
    let host = s.get(..i).ok_or(())?;
    let mut port = None;
    if s.get(i) == Some(&b':') {
        let ps = i + 1;
        let mut j = ps;
        while let Some(&c) = s.get(j) {
            if !c.is_ascii_digit() {
                break;
            }
            j += 1;
        }
        let digits = s.get(ps..j).ok_or(())?;
        let v = parse_u64(digits).ok_or(())?;
        port = Some(u16::try_from(v).map_err(|_| ())?);
        i = j;
    }
    match s.get(i) {
        None => Ok((host, port, i)),
        Some(&c) if stop(c) => Ok((host, port, i)),
        Some(_) => Err(()),
    }
}

impl<'a> Uri<'a> {
    /// Parses a URI. Whitespace, `<`, `>`, `"` and control octets are refused
    /// everywhere (RFC 4475 ltgtruri, lwsruri, badaspec); `sip:`/`sips:` need a
    /// valid host and port (RFC 5118 ipv6-bad: IPv6 without brackets fails).
    pub fn parse(raw: &'a [u8]) -> Result<Uri<'a>, ParseError> {
        // One pass: refuse bad octets, note the first ':' and '@'.
        let mut colon = None;
        let mut at = None;
        for (i, &c) in raw.iter().enumerate() {
            let k = uri_class(c);
            if k == 0 {
                continue;
            }
            if k & URI_BAD != 0 {
                return Err(err());
            }
            if c == b':' && colon.is_none() {
                colon = Some(i);
            } else if c == b'@' && at.is_none() {
                at = Some(i);
            }
        }
        let colon = colon.ok_or_else(err)?;
        let scheme_raw = raw.get(..colon).ok_or_else(err)?;
        let first_ok = scheme_raw.first().is_some_and(|c| c.is_ascii_alphabetic());
        if !first_ok
            || !scheme_raw
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
        {
            return Err(err());
        }
        let scheme = if scheme_raw.eq_ignore_ascii_case(b"sip") {
            Scheme::Sip
        } else if scheme_raw.eq_ignore_ascii_case(b"sips") {
            Scheme::Sips
        } else if scheme_raw.eq_ignore_ascii_case(b"tel") {
            Scheme::Tel
        } else {
            Scheme::Other
        };
        let rest = raw.get(colon + 1..).ok_or_else(err)?;
        if rest.is_empty() {
            return Err(err());
        }
        let mut uri = Uri {
            raw,
            scheme,
            scheme_raw,
            user: None,
            password: None,
            host: rest,
            port: None,
            params: &[],
            headers: None,
        };
        match scheme {
            Scheme::Other => Ok(uri),
            Scheme::Tel => {
                let semi = memchr::memchr(b';', rest).unwrap_or(rest.len());
                uri.host = rest.get(..semi).ok_or_else(err)?;
                uri.params = rest.get(semi..).unwrap_or(&[]);
                if uri.host.is_empty() || !uri_params_ok(uri.params) {
                    return Err(err());
                }
                Ok(uri)
            }
            Scheme::Sip | Scheme::Sips => {
                // userinfo ends at the first '@' (user may hold ';', '?', '/',
                // RFC 3261 §25.1 user-unreserved; RFC 4475 intmeth, semiuri).
                let hostpart = match at.and_then(|a| a.checked_sub(colon + 1)) {
                    Some(at) => {
                        let userinfo = rest.get(..at).ok_or_else(err)?;
                        let (user, pw) = match memchr::memchr(b':', userinfo) {
                            Some(c) => (userinfo.get(..c).ok_or_else(err)?, userinfo.get(c + 1..)),
                            None => (userinfo, None),
                        };
                        if user.is_empty() {
                            return Err(err());
                        }
                        uri.user = Some(user);
                        uri.password = pw;
                        rest.get(at + 1..).ok_or_else(err)?
                    }
                    None => rest,
                };
                let (host, port, end) =
                    parse_hostport(hostpart, |c| c == b';' || c == b'?').map_err(|_| err())?;
                uri.host = host;
                uri.port = port;
                let tail = hostpart.get(end..).unwrap_or(&[]);
                let q = memchr::memchr(b'?', tail).unwrap_or(tail.len());
                uri.params = tail.get(..q).unwrap_or(&[]);
                uri.headers = tail.get(q + 1..).filter(|_| q < tail.len());
                if !uri_params_ok(uri.params) {
                    return Err(err());
                }
                Ok(uri)
            }
        }
    }

    /// Offsets of this view inside `buf` (which it must borrow from).
    pub(crate) fn index(&self, buf: &[u8]) -> Option<UriIdx> {
        Some(UriIdx {
            raw: Span::of(buf, self.raw)?,
            scheme: self.scheme,
            scheme_raw: Span::of(buf, self.scheme_raw)?,
            user: Span::opt(buf, self.user)?,
            password: Span::opt(buf, self.password)?,
            host: Span::of(buf, self.host)?,
            port: self.port,
            params: Span::of(buf, self.params)?,
            headers: Span::opt(buf, self.headers)?,
        })
    }

    /// Rebuilds the view from [`Uri::index`] without parsing.
    pub(crate) fn from_index(buf: &'a [u8], i: &UriIdx) -> Uri<'a> {
        Uri {
            raw: i.raw.get(buf),
            scheme: i.scheme,
            scheme_raw: i.scheme_raw.get(buf),
            user: i.user.map(|s| s.get(buf)),
            password: i.password.map(|s| s.get(buf)),
            host: i.host.get(buf),
            port: i.port,
            params: i.params.get(buf),
            headers: i.headers.map(|s| s.get(buf)),
        }
    }

    /// The URI exactly as received.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The scheme as written (e.g. `nobodyKnowsThisScheme`).
    pub fn scheme_raw(&self) -> &'a [u8] {
        self.scheme_raw
    }

    /// User part (still %-escaped), without the password.
    pub fn user(&self) -> Option<&'a [u8]> {
        self.user
    }

    pub fn password(&self) -> Option<&'a [u8]> {
        self.password
    }

    /// Host (IPv6 references keep their brackets); for `tel:` the number;
    /// for unknown schemes everything after the colon.
    pub fn host(&self) -> &'a [u8] {
        self.host
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// URI parameter (`Some(None)` for a bare flag like `lr`). Names are
    /// compared case-insensitively; values are returned still escaped.
    pub fn param(&self, name: &str) -> Option<Option<&'a [u8]>> {
        ParamIter::uri(self.params).find(name)
    }

    /// All URI parameters as written, starting with `;` (may be empty).
    pub fn params_raw(&self) -> &'a [u8] {
        self.params
    }

    /// The `?headers` part without the `?` (RFC 3261 §19.1.1).
    pub fn headers(&self) -> Option<&'a [u8]> {
        self.headers
    }
}

/// `*(";" name ["=" value])` with non-empty names and values (the octets
/// themselves were checked by the caller).
fn uri_params_ok(p: &[u8]) -> bool {
    if p.is_empty() {
        return true;
    }
    if p.first() != Some(&b';') {
        return false;
    }
    let mut prev = b';';
    let mut in_value = false;
    for &c in p.get(1..).unwrap_or(&[]) {
        match c {
            b';' | b'?' if prev == b';' || prev == b'=' => return false,
            b';' => in_value = false,
            b'=' if prev == b';' => return false,
            b'=' if !in_value => in_value = true,
            _ => {}
        }
        prev = c;
    }
    prev != b';' && prev != b'='
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_parts() {
        let u =
            Uri::parse(b"sip:alice:secret@atlanta.com:5070;transport=tcp;lr?Subject=x").unwrap();
        assert_eq!(u.scheme(), Scheme::Sip);
        assert_eq!(u.user(), Some(&b"alice"[..]));
        assert_eq!(u.password(), Some(&b"secret"[..]));
        assert_eq!(u.host(), b"atlanta.com");
        assert_eq!(u.port(), Some(5070));
        assert_eq!(u.param("transport"), Some(Some(&b"tcp"[..])));
        assert_eq!(u.param("LR"), Some(None));
        assert_eq!(u.param("maddr"), None);
        assert_eq!(u.headers(), Some(&b"Subject=x"[..]));
        assert_eq!(u.params_raw(), b";transport=tcp;lr");
    }

    #[test]
    fn sips_and_case_insensitive_scheme() {
        let u = Uri::parse(b"SIPS:bob@biloxi.com").unwrap();
        assert_eq!(u.scheme(), Scheme::Sips);
        assert_eq!(u.port(), None);
        assert_eq!(u.headers(), None);
    }

    #[test]
    fn ipv6_references() {
        let u = Uri::parse(b"sip:[2001:db8::10]:5070").unwrap();
        assert_eq!(u.host(), b"[2001:db8::10]");
        assert_eq!(u.port(), Some(5070));
        let u = Uri::parse(b"sip:[2001:db8::10:5070]").unwrap();
        assert_eq!(u.host(), b"[2001:db8::10:5070]");
        assert_eq!(u.port(), None);
        // RFC 5118 §4.10: three colons tolerated.
        let u = Uri::parse(b"sip:user@[2001:db8:::192.0.2.1]").unwrap();
        assert_eq!(u.host(), b"[2001:db8:::192.0.2.1]");
        // RFC 5118 §4.2: no brackets is an error.
        assert!(Uri::parse(b"sip:2001:db8::10").is_err());
        assert!(Uri::parse(b"sip:[2001:db8::10").is_err());
        assert!(Uri::parse(b"sip:[]").is_err());
    }

    #[test]
    fn unusual_user_parts() {
        let u = Uri::parse(b"sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user(), Some(&b"user;par=u%40example.net"[..]));
        assert_eq!(u.host(), b"example.com");
        let raw: &[u8] = b"sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com";
        let u = Uri::parse(raw).unwrap();
        assert_eq!(
            u.user(),
            Some(&b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"[..])
        );
        assert_eq!(u.host(), b"example.com");
        assert_eq!(u.headers(), None);
    }

    #[test]
    fn tel_and_other_schemes() {
        let u = Uri::parse(b"tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert_eq!(u.scheme(), Scheme::Tel);
        assert_eq!(u.host(), b"+1-201-555-0123");
        assert_eq!(u.param("phone-context"), Some(Some(&b"example.com"[..])));
        let u = Uri::parse(b"nobodyKnowsThisScheme:totallyopaquecontent").unwrap();
        assert_eq!(u.scheme(), Scheme::Other);
        assert_eq!(u.scheme_raw(), b"nobodyKnowsThisScheme");
        assert_eq!(u.host(), b"totallyopaquecontent");
        assert_eq!(
            Uri::parse(b"soap.beep://192.0.2.103:3002")
                .unwrap()
                .scheme(),
            Scheme::Other
        );
        assert_eq!(
            Uri::parse(b"http://www.example.com").unwrap().scheme(),
            Scheme::Other
        );
    }

    #[test]
    fn uri_param_syntax() {
        assert!(uri_params_ok(b""));
        assert!(uri_params_ok(b";lr"));
        assert!(uri_params_ok(b";a=b;c;d=e=f"));
        for bad in [&b";"[..], b";;", b";=x", b";a=", b";a=;b", b"x", b";a;"] {
            assert!(!uri_params_ok(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn refusals() {
        for bad in [
            &b""[..],
            b"sip",
            b"sip:",
            b"<sip:a@b>",
            b"sip:a@b c",
            b"sip:user@example.com; lr",
            b"1sip:x",
            b"sip:@host",
            b"sip:host:99999",
            b"sip:host:",
            b"sip:ho st",
            b"sip:host;;",
            b"sip:host/x",
        ] {
            assert!(
                Uri::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
