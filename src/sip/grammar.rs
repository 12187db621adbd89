//! Low-level RFC 3261 §25 lexical helpers shared by the views: token
//! characters, linear white space, quoted strings, comma-separated lists and
//! `;name=value` parameters. Everything works on byte slices and returns
//! sub-slices of its input (no allocation, never panics).

const C_TOKEN: u8 = 1;
/// Octets never allowed in a URI: controls, SP, DEL, `<`, `>`, `"`.
const C_URI_BAD: u8 = 2;
/// Stops a header parameter name or value: `;` `,` and LWS (`=` too for
/// names, see [`C_HDR_EQ`]).
const C_HDR_STOP: u8 = 4;
const C_HDR_EQ: u8 = 8;
/// Stops a URI parameter name or value: `;` `?` (`=` for names).
const C_URI_STOP: u8 = 16;
/// `:` and `@`, which split a SIP URI.
const C_URI_MARK: u8 = 32;

/// Character classes (RFC 3261 §25.1): one table lookup per octet.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0usize;
    while c < 256 {
        let b = c as u8;
        let mut v = 0u8;
        // token = alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~"
        if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            )
        {
            v |= C_TOKEN;
        }
        if b <= b' ' || b == 0x7f || b == b'<' || b == b'>' || b == b'"' {
            v |= C_URI_BAD;
        }
        if matches!(b, b';' | b',' | b' ' | b'\t' | b'\r' | b'\n') {
            v |= C_HDR_STOP;
        }
        if b == b'=' {
            v |= C_HDR_EQ;
        }
        if matches!(b, b';' | b'?') {
            v |= C_URI_STOP;
        }
        if matches!(b, b':' | b'@') {
            v |= C_URI_MARK;
        }
        t[c] = v;
        c += 1;
    }
    t
};

#[inline]
fn class(c: u8) -> u8 {
    CLASS[c as usize]
}

#[inline]
pub(crate) fn is_token_char(c: u8) -> bool {
    class(c) & C_TOKEN != 0
}

/// 0 for ordinary URI octets; otherwise the [`URI_BAD`] bit, or the mark
/// bit for `:` and `@`.
#[inline]
pub(crate) fn uri_class(c: u8) -> u8 {
    class(c) & (C_URI_BAD | C_URI_MARK)
}
pub(crate) const URI_BAD: u8 = C_URI_BAD;

/// True when `s` is a non-empty RFC 3261 token.
#[inline]
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&c| is_token_char(c))
}

/// SP or HT.
#[inline]
pub(crate) fn is_ws(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// Any octet of linear white space, including the CRLF of a folded line
/// (RFC 3261 §7.3.1: a CRLF followed by SP/HT is equivalent to one SP).
#[inline]
pub(crate) fn is_lws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// Index of the first non-LWS octet at or after `i` (or `s.len()`).
#[inline]
pub(crate) fn skip_lws(s: &[u8], mut i: usize) -> usize {
    while let Some(&c) = s.get(i) {
        if !is_lws(c) {
            break;
        }
        i += 1;
    }
    i
}

/// `s` without leading and trailing LWS.
#[inline]
pub(crate) fn trim_lws(s: &[u8]) -> &[u8] {
    let start = skip_lws(s, 0);
    let mut end = s.len();
    while end > start {
        match s.get(end - 1) {
            Some(&c) if is_lws(c) => end -= 1,
            _ => break,
        }
    }
    s.get(start..end).unwrap_or(&[])
}

/// Given `s[i] == '"'`, the index just after the closing quote of the quoted
/// string (RFC 3261 §25.1 `quoted-string`, with `quoted-pair` escapes), or
/// `None` when the string is not terminated.
pub(crate) fn quoted_end(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i.checked_add(1)?;
    while let Some(&c) = s.get(j) {
        match c {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// Offset of `inner` inside `outer` when `inner` is a sub-slice of it.
#[inline]
pub(crate) fn sub_offset(outer: &[u8], inner: &[u8]) -> Option<usize> {
    let o = outer.as_ptr() as usize;
    let i = inner.as_ptr() as usize;
    let end = i.checked_add(inner.len())?;
    if i >= o && end <= o.checked_add(outer.len())? {
        Some(i - o)
    } else {
        None
    }
}

/// A sub-slice of the message buffer stored as offsets, so that parsed
/// views can be kept inside `Message` and rebuilt without re-parsing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// Offsets of `s` inside `buf` (any empty slice maps to an empty span).
    #[inline]
    pub(crate) fn of(buf: &[u8], s: &[u8]) -> Option<Span> {
        if s.is_empty() {
            return Some(Span::default());
        }
        let start = sub_offset(buf, s)?;
        Some(Span {
            start: u32::try_from(start).ok()?,
            end: u32::try_from(start + s.len()).ok()?,
        })
    }

    #[inline]
    pub(crate) fn opt(buf: &[u8], s: Option<&[u8]>) -> Option<Option<Span>> {
        match s {
            Some(s) => Span::of(buf, s).map(Some),
            None => Some(None),
        }
    }

    #[inline]
    pub(crate) fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize)
            .unwrap_or(&[])
    }
}

/// Splits a header value on top-level commas (RFC 3261 §7.3.1), ignoring
/// commas inside quoted strings and `<...>` URIs. Elements are LWS-trimmed;
/// empty elements are yielded too (so validation can refuse `a,,b`).
#[derive(Clone, Debug)]
pub(crate) struct ListIter<'a> {
    s: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> ListIter<'a> {
    pub(crate) fn new(s: &'a [u8]) -> Self {
        ListIter {
            s,
            pos: 0,
            done: false,
        }
    }
}

impl<'a> Iterator for ListIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.done {
            return None;
        }
        let s = self.s;
        let start = self.pos;
        let mut i = start;
        while let Some(rest) = s.get(i..) {
            let Some(p) = memchr::memchr3(b'"', b'<', b',', rest) else {
                break;
            };
            i += p;
            match s.get(i) {
                Some(b'"') => match quoted_end(s, i) {
                    Some(e) => i = e,
                    None => break,
                },
                Some(b'<') => {
                    // Commas inside <...> belong to the URI.
                    match s.get(i..).and_then(|r| memchr::memchr(b'>', r)) {
                        Some(q) => i += q + 1,
                        None => break,
                    }
                }
                _ => {
                    self.pos = i + 1;
                    return Some(trim_lws(s.get(start..i).unwrap_or(&[])));
                }
            }
        }
        self.done = true;
        Some(trim_lws(s.get(start..).unwrap_or(&[])))
    }
}

/// One `;name[=value]` parameter. `start`/`end` are offsets in the scanned
/// slice: `start` is the `;`, `end` is just after the value (or name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Param<'a> {
    pub(crate) name: &'a [u8],
    pub(crate) value: Option<&'a [u8]>,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Iterates over `;name[=value]` parameters of a header (LWS allowed around
/// `;` and `=`, values may be quoted strings or `[IPv6]` references) or of a
/// URI (`uri == true`: no LWS, stops at `?`). Yields `Err(())` on a malformed
/// parameter (empty name, stray character); after the parameters, `rest()`
/// tells where scanning stopped.
#[derive(Clone, Debug)]
pub(crate) struct ParamIter<'a> {
    s: &'a [u8],
    pos: usize,
    uri: bool,
    failed: bool,
    /// Class bits that end a name / a value in this mode.
    name_stop: u8,
    value_stop: u8,
}

impl<'a> ParamIter<'a> {
    pub(crate) fn header(s: &'a [u8]) -> Self {
        ParamIter {
            s,
            pos: 0,
            uri: false,
            failed: false,
            name_stop: C_HDR_STOP | C_HDR_EQ,
            value_stop: C_HDR_STOP,
        }
    }

    pub(crate) fn uri(s: &'a [u8]) -> Self {
        ParamIter {
            s,
            pos: 0,
            uri: true,
            failed: false,
            name_stop: C_URI_STOP | C_HDR_EQ,
            value_stop: C_URI_STOP,
        }
    }

    /// Ends a parameter name.
    #[inline]
    fn ends_name(&self, c: u8) -> bool {
        class(c) & self.name_stop != 0
    }

    /// Ends a parameter value (`=` is allowed inside values).
    #[inline]
    fn ends_value(&self, c: u8) -> bool {
        class(c) & self.value_stop != 0
    }

    /// Checks that the whole input is a well-formed parameter list.
    pub(crate) fn validate(mut self) -> bool {
        for p in self.by_ref() {
            if p.is_err() {
                return false;
            }
        }
        !self.failed && self.pos >= self.s.len()
    }

    /// Looks a parameter up by name (case-insensitive, RFC 3261 §7.3.1).
    pub(crate) fn find(self, name: &str) -> Option<Option<&'a [u8]>> {
        for p in self {
            match p {
                Ok(p) if p.name.eq_ignore_ascii_case(name.as_bytes()) => return Some(p.value),
                Ok(_) => {}
                Err(()) => return None,
            }
        }
        None
    }
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = Result<Param<'a>, ()>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let s = self.s;
        let mut i = if self.uri {
            self.pos
        } else {
            skip_lws(s, self.pos)
        };
        match s.get(i) {
            None => {
                self.pos = s.len();
                return None;
            }
            Some(b';') => {}
            Some(_) => {
                // Not a parameter: for URIs this is `?headers`, for headers
                // it is garbage after the value.
                self.pos = i;
                if !self.uri {
                    self.failed = true;
                    return Some(Err(()));
                }
                return None;
            }
        }
        let start = i;
        i += 1;
        if !self.uri {
            i = skip_lws(s, i);
        }
        let name_start = i;
        if self.uri {
            while s.get(i).is_some_and(|&c| !self.ends_name(c)) {
                i += 1;
            }
        } else {
            while s.get(i).is_some_and(|&c| is_token_char(c)) {
                i += 1;
            }
            if s.get(i).is_some_and(|&c| !self.ends_name(c)) {
                self.failed = true;
                return Some(Err(()));
            }
        }
        let name = s.get(name_start..i).unwrap_or(&[]);
        if name.is_empty() {
            self.failed = true;
            return Some(Err(()));
        }
        let mut end = i;
        let after_name = if self.uri { i } else { skip_lws(s, i) };
        let mut value = None;
        if s.get(after_name) == Some(&b'=') {
            let mut v = after_name + 1;
            if !self.uri {
                v = skip_lws(s, v);
            }
            let vstart = v;
            if !self.uri && s.get(v) == Some(&b'"') {
                match quoted_end(s, v) {
                    Some(e) => v = e,
                    None => {
                        self.failed = true;
                        return Some(Err(()));
                    }
                }
            } else {
                while let Some(&c) = s.get(v) {
                    if self.ends_value(c) {
                        break;
                    }
                    v += 1;
                }
            }
            let val = s.get(vstart..v).unwrap_or(&[]);
            if val.is_empty() {
                self.failed = true;
                return Some(Err(()));
            }
            value = Some(val);
            end = v;
        }
        self.pos = end;
        Some(Ok(Param {
            name,
            value,
            start,
            end,
        }))
    }
}

/// Parses a run of ASCII digits into a `u64`, refusing empty input,
/// non-digits and overflow.
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_chars() {
        assert!(is_token(b"INVITE"));
        assert!(is_token(b"!interesting-Method0123456789_*+`.%indeed'~"));
        assert!(!is_token(b""));
        assert!(!is_token(b"Bell, Alexander"));
        assert!(!is_token(b"a b"));
    }

    #[test]
    fn trims_lws_including_folding() {
        assert_eq!(trim_lws(b" \r\n  abc \t"), b"abc");
        assert_eq!(trim_lws(b"   "), b"");
        assert_eq!(trim_lws(b""), b"");
    }

    #[test]
    fn quoted_strings_with_escapes() {
        let s = br#""J Rosenberg \\\"" <sip:x>"#;
        assert_eq!(quoted_end(s, 0), Some(18));
        assert_eq!(quoted_end(b"\"open", 0), None);
        assert_eq!(quoted_end(b"\"ends in escape\\", 0), None);
        assert_eq!(quoted_end(b"\"\"", 0), Some(2));
    }

    #[test]
    fn list_split_respects_quotes_and_angles() {
        let v: Vec<&[u8]> = ListIter::new(br#""a, b" <sip:x;p=1,2>;q=1 , <sip:y>,sip:z"#).collect();
        assert_eq!(
            v,
            vec![
                &br#""a, b" <sip:x;p=1,2>;q=1"#[..],
                &b"<sip:y>"[..],
                &b"sip:z"[..]
            ]
        );
        let v: Vec<&[u8]> = ListIter::new(b"a,,b,").collect();
        assert_eq!(v, vec![&b"a"[..], &b""[..], &b"b"[..], &b""[..]]);
        let v: Vec<&[u8]> = ListIter::new(b"").collect();
        assert_eq!(v, vec![&b""[..]]);
    }

    #[test]
    fn header_params_with_lws_and_quotes() {
        let s = b" ;   tag    = 1918181833n ; x ; q=\"a;b\"";
        let ps: Vec<Param> = ParamIter::header(s).map(|p| p.unwrap()).collect();
        assert_eq!(ps.len(), 3);
        assert_eq!(ps[0].name, b"tag");
        assert_eq!(ps[0].value, Some(&b"1918181833n"[..]));
        assert_eq!(&s[ps[0].start..ps[0].end], b";   tag    = 1918181833n");
        assert_eq!(ps[1].name, b"x");
        assert_eq!(ps[1].value, None);
        assert_eq!(ps[2].value, Some(&b"\"a;b\""[..]));
        assert!(ParamIter::header(s).validate());
        assert_eq!(
            ParamIter::header(s).find("TAG"),
            Some(Some(&b"1918181833n"[..]))
        );
        assert_eq!(ParamIter::header(s).find("x"), Some(None));
        assert_eq!(ParamIter::header(s).find("y"), None);
    }

    #[test]
    fn header_params_refuse_garbage() {
        assert!(!ParamIter::header(b";;").validate());
        assert!(!ParamIter::header(b";a=").validate());
        assert!(!ParamIter::header(b" junk").validate());
        assert!(!ParamIter::header(b";a=\"open").validate());
        assert!(ParamIter::header(b"").validate());
        assert!(ParamIter::header(b";received=[2001:db8::9:255]").validate());
    }

    #[test]
    fn uri_params_stop_at_headers() {
        let s = b";lr;transport=tcp?Route=x";
        let ps: Vec<Param> = ParamIter::uri(s).map(|p| p.unwrap()).collect();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[1].value, Some(&b"tcp"[..]));
        assert_eq!(ps[1].end, 17);
    }

    #[test]
    fn digits() {
        assert_eq!(parse_u64(b"0068"), Some(68));
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"-1"), None);
        assert_eq!(parse_u64(b"36893488147419103232"), None);
    }

    #[test]
    fn spans_round_trip() {
        let buf = b"hello world";
        let sp = Span::of(buf, &buf[6..]).unwrap();
        assert_eq!(sp.get(buf), b"world");
        assert_eq!(Span::of(buf, b"").unwrap().get(buf), b"");
        assert_eq!(Span::of(&buf[..5], &buf[6..]), None);
        assert_eq!(Span::opt(buf, None), Some(None));
    }

    #[test]
    fn sub_offsets() {
        let outer = b"hello world";
        assert_eq!(sub_offset(outer, &outer[6..]), Some(6));
        assert_eq!(sub_offset(&outer[..5], &outer[6..]), None);
    }
}
