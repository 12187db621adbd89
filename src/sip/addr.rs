//! Borrowed view of a `name-addr` / `addr-spec` header value (From, To,
//! Contact, Route, Record-Route, P-Asserted-Identity; RFC 3261 §20.10,
//! §25.1).

use super::grammar::{is_lws, is_token_char, quoted_end, skip_lws, trim_lws, ParamIter, Span};
use super::uri::{Uri, UriIdx};
use super::{ParseError, ParseErrorKind};

/// `[display-name] <uri> *(;param)` or `addr-spec *(;param)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameAddr<'a> {
    raw: &'a [u8],
    display: Option<&'a [u8]>,
    uri: Uri<'a>,
    params: &'a [u8],
}

/// A parsed [`NameAddr`] stored as offsets into the message buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AddrIdx {
    raw: Span,
    display: Option<Span>,
    uri: UriIdx,
    params: Span,
}

fn err(kind: ParseErrorKind) -> ParseError {
    ParseError::new(kind)
}

impl<'a> NameAddr<'a> {
    /// Parses one value. Liberal where RFC 4475 asks (lwsdisp: no LWS before
    /// `<`); refuses unterminated quotes (quotbal), non-token display names
    /// (baddn), spaces inside `<...>` (badaspec) and an addr-spec holding `?`
    /// without `<>` (regbadct, RFC 3261 §20.10).
    pub fn parse(raw: &'a [u8]) -> Result<NameAddr<'a>, ParseError> {
        let s = trim_lws(raw);
        if s.is_empty() {
            return Err(err(ParseErrorKind::BadNameAddr));
        }
        let mut display = None;
        // A '<' before any ';' starts a name-addr (a token display name holds
        // no ';'); otherwise this is an addr-spec whose parameters may even
        // hold a quoted '<'.
        let angle = match memchr::memchr2(b'<', b';', s) {
            Some(i) => s.get(i) == Some(&b'<'),
            None => false,
        };
        let (uri_raw, params) = if s.first() == Some(&b'"') || angle {
            let lt = if s.first() == Some(&b'"') {
                let qe = quoted_end(s, 0).ok_or_else(|| err(ParseErrorKind::UnbalancedQuotes))?;
                display = s.get(1..qe.saturating_sub(1));
                let lt = skip_lws(s, qe);
                if s.get(lt) != Some(&b'<') {
                    return Err(err(ParseErrorKind::BadNameAddr));
                }
                lt
            } else {
                let lt = memchr::memchr(b'<', s).ok_or_else(|| err(ParseErrorKind::BadNameAddr))?;
                let dn = trim_lws(s.get(..lt).unwrap_or(&[]));
                if dn.contains(&b'"') {
                    return Err(err(ParseErrorKind::UnbalancedQuotes));
                }
                if !dn.iter().all(|&c| is_token_char(c) || is_lws(c)) {
                    return Err(err(ParseErrorKind::BadDisplayName));
                }
                if !dn.is_empty() {
                    display = Some(dn);
                }
                lt
            };
            let inner = s.get(lt + 1..).unwrap_or(&[]);
            let gt = memchr::memchr(b'>', inner).ok_or_else(|| err(ParseErrorKind::BadNameAddr))?;
            (
                inner.get(..gt).unwrap_or(&[]),
                inner.get(gt + 1..).unwrap_or(&[]),
            )
        } else {
            // addr-spec: URI parameters would be header parameters, so the
            // URI ends at the first ';' or LWS (RFC 3261 §20.10).
            let end = s
                .iter()
                .position(|&c| c == b';' || is_lws(c))
                .unwrap_or(s.len());
            let u = s.get(..end).unwrap_or(&[]);
            if u.contains(&b'?') || u.contains(&b',') {
                return Err(err(ParseErrorKind::BadNameAddr));
            }
            (u, s.get(end..).unwrap_or(&[]))
        };
        let uri = Uri::parse(uri_raw).map_err(|_| err(ParseErrorKind::BadUri))?;
        if !ParamIter::header(params).validate() {
            return Err(err(ParseErrorKind::BadNameAddr));
        }
        Ok(NameAddr {
            raw: s,
            display,
            uri,
            params,
        })
    }

    pub(crate) fn index(&self, buf: &[u8]) -> Option<AddrIdx> {
        Some(AddrIdx {
            raw: Span::of(buf, self.raw)?,
            display: Span::opt(buf, self.display)?,
            uri: self.uri.index(buf)?,
            params: Span::of(buf, self.params)?,
        })
    }

    pub(crate) fn from_index(buf: &'a [u8], i: &AddrIdx) -> NameAddr<'a> {
        NameAddr {
            raw: i.raw.get(buf),
            display: i.display.map(|s| s.get(buf)),
            uri: Uri::from_index(buf, &i.uri),
            params: i.params.get(buf),
        }
    }

    /// The value as received (LWS-trimmed).
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Display name: the inside of the quotes (escapes kept) or the tokens
    /// before `<`.
    pub fn display_name(&self) -> Option<&'a [u8]> {
        self.display
    }

    pub fn uri(&self) -> Uri<'a> {
        self.uri
    }

    pub fn tag(&self) -> Option<&'a [u8]> {
        self.param("tag").flatten()
    }

    /// Header parameter (after the URI), case-insensitive name.
    pub fn param(&self, name: &str) -> Option<Option<&'a [u8]>> {
        ParamIter::header(self.params).find(name)
    }

    /// Header parameters as written (may be empty).
    pub fn params_raw(&self) -> &'a [u8] {
        self.params
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Scheme;

    #[test]
    fn quoted_display_name() {
        let na = NameAddr::parse(br#""Bob \"B\"" <sip:bob@biloxi.com>;tag=a6c85cf"#).unwrap();
        assert_eq!(na.display_name(), Some(&br#"Bob \"B\""#[..]));
        assert_eq!(na.uri().host(), b"biloxi.com");
        assert_eq!(na.tag(), Some(&b"a6c85cf"[..]));
    }

    #[test]
    fn token_display_name_and_lwsdisp() {
        let na = NameAddr::parse(b"Bob Smith <sip:bob@biloxi.com>").unwrap();
        assert_eq!(na.display_name(), Some(&b"Bob Smith"[..]));
        let na = NameAddr::parse(b"caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(na.display_name(), Some(&b"caller"[..]));
        assert_eq!(na.tag(), Some(&b"323"[..]));
        let na = NameAddr::parse(b"<sip:a@b>").unwrap();
        assert_eq!(na.display_name(), None);
    }

    #[test]
    fn addr_spec_params_are_header_params() {
        let na = NameAddr::parse(b"sip:+19725552222@gw1.example.net;unknownparam").unwrap();
        assert_eq!(na.uri().raw(), b"sip:+19725552222@gw1.example.net");
        assert_eq!(na.param("unknownparam"), Some(None));
        assert_eq!(na.uri().param("unknownparam"), None);
        let na = NameAddr::parse(b"<sip:+19725552222@gw1.example.net;unknownparam>").unwrap();
        assert_eq!(na.param("unknownparam"), None);
        assert_eq!(na.uri().param("unknownparam"), Some(None));
        let na =
            NameAddr::parse(b"sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(na.tag(), Some(&b"1918181833n"[..]));
    }

    #[test]
    fn folded_params() {
        let na = NameAddr::parse(
            b"\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8",
        )
        .unwrap();
        assert_eq!(na.tag(), Some(&b"98asjd8"[..]));
        assert_eq!(na.display_name(), Some(&b"J Rosenberg \\\\\\\""[..]));
    }

    #[test]
    fn unknown_schemes() {
        let na = NameAddr::parse(b"isbn:2983792873").unwrap();
        assert_eq!(na.uri().scheme(), Scheme::Other);
        let na = NameAddr::parse(b"<http://www.example.com>;tag=3234233").unwrap();
        assert_eq!(na.uri().scheme(), Scheme::Other);
        assert_eq!(na.tag(), Some(&b"3234233"[..]));
    }

    #[test]
    fn refusals() {
        let kind = |s: &[u8]| NameAddr::parse(s).unwrap_err().kind();
        assert_eq!(
            kind(b"\"Mr. J. User <sip:j.user@example.com>"),
            ParseErrorKind::UnbalancedQuotes
        );
        assert_eq!(
            kind(b"Watson, Thomas <sip:t.watson@example.org>"),
            ParseErrorKind::BadDisplayName
        );
        assert_eq!(
            kind(b"\"Watson, Thomas\" < sip:t.watson@example.org >"),
            ParseErrorKind::BadUri
        );
        assert_eq!(
            kind(b"sip:user@example.com?Route=%3Csip:sip.example.com%3E"),
            ParseErrorKind::BadNameAddr
        );
        assert_eq!(
            kind(b"\"Joe\" <sip:joe@example.org>;;;;"),
            ParseErrorKind::BadNameAddr
        );
        assert_eq!(kind(b""), ParseErrorKind::BadNameAddr);
        assert_eq!(kind(b"<sip:a@b"), ParseErrorKind::BadNameAddr);
        assert_eq!(kind(b"\"x\" sip:a@b"), ParseErrorKind::BadNameAddr);
    }
}
