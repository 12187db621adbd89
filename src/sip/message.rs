//! The parsed message: one `Bytes` plus an index of `u32` offsets.

use bytes::Bytes;

use super::addr::{AddrIdx, NameAddr};
use super::editor::Editor;
use super::grammar::{is_lws, is_token, is_ws, parse_u64, sub_offset, trim_lws, ListIter};
use super::uri::{Uri, UriIdx};
use super::via::{Via, ViaIdx};
use super::{names_equal, HeaderName, Method, ParseError, ParseErrorKind as K};

/// One header field in the index. All offsets are into `Message::buf`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hdr {
    pub(crate) name: HeaderName,
    /// Start of the line (first octet of the name).
    pub(crate) line_start: u32,
    /// End of the name (before any SP/HT and the colon).
    pub(crate) name_end: u32,
    /// Trimmed value (folding inside kept as received).
    pub(crate) value_start: u32,
    pub(crate) value_end: u32,
    /// Just after the CRLF ending the last (continuation) line.
    pub(crate) line_end: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Start {
    Request { method: Method, uri: (u32, u32) },
    Response { code: u16, reason: (u32, u32) },
}

/// A SIP message: the received bytes and an index into them. Cloning is
/// cheap (a reference-count increment and a small `Vec` copy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    buf: Bytes,
    start: Start,
    /// Just after the start line's CRLF (= start of the first header line).
    start_line_end: u32,
    headers: Vec<Hdr>,
    /// Offset of the empty line that ends the header section.
    headers_end: u32,
    body_start: u32,
    /// Views already parsed by validation, kept as offsets so that the
    /// hot accessors do not parse twice.
    cache: Cache,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cache {
    ruri: Option<UriIdx>,
    top_via: Option<ViaIdx>,
    from: Option<AddrIdx>,
    to: Option<AddrIdx>,
}

/// `CSeq: seq METHOD`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

/// One header field as received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderField<'a> {
    /// The name exactly as written (`v`, `VIA`, `X-Custom`).
    pub name: &'a [u8],
    /// Canonical kind (`Other` for unknown headers).
    pub kind: HeaderName,
    /// The value, LWS-trimmed, folding kept.
    pub value: &'a [u8],
}

/// Finds the CRLF ending the line that starts at `from`: `(cr, after_lf)`.
/// `Ok(None)` when the buffer ends first; a bare CR or LF is an error
/// (RFC 3261 §7: CRLF line ends; a bare CR/LF could make another parser
/// see a different header block).
fn line_at(b: &[u8], from: usize) -> Result<Option<(usize, usize)>, K> {
    let Some(rest) = b.get(from..) else {
        return Ok(None);
    };
    let Some(p) = memchr::memchr2(b'\r', b'\n', rest) else {
        return Ok(None);
    };
    let p = from + p;
    if b.get(p) == Some(&b'\n') {
        return Err(K::BadLineEnd);
    }
    match b.get(p + 1) {
        Some(b'\n') => Ok(Some((p, p + 2))),
        None => Ok(None),
        Some(_) => Err(K::BadLineEnd),
    }
}

/// `SIP/<digits>.<digits>`: a version we can name in a 505.
fn looks_like_version(v: &[u8]) -> bool {
    let Some(rest) = v.get(4..) else { return false };
    if !v.get(..4).is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/")) {
        return false;
    }
    let mut parts = rest.split(|&c| c == b'.');
    let ok =
        |p: Option<&[u8]>| p.is_some_and(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit));
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

fn check_version(v: &[u8]) -> Result<(), K> {
    if v.eq_ignore_ascii_case(b"SIP/2.0") {
        Ok(())
    } else if looks_like_version(v) {
        Err(K::VersionNotSupported)
    } else {
        Err(K::BadStartLine)
    }
}

/// `seq LWS method`; seq must be below 2^31 (RFC 3261 §8.1.1.5).
pub(crate) fn parse_cseq(v: &[u8]) -> Option<(u32, &[u8])> {
    let d = v.iter().position(|c| !c.is_ascii_digit())?;
    let seq = parse_u64(v.get(..d)?)?;
    if seq > 0x7fff_ffff {
        return None;
    }
    let rest = v.get(d..)?;
    if !rest.first().is_some_and(|&c| is_lws(c)) {
        return None;
    }
    let m = trim_lws(rest);
    if !is_token(m) {
        return None;
    }
    Some((u32::try_from(seq).ok()?, m))
}

/// Tolerant scan used on the error path: does the header section name a Via?
pub(crate) fn scrape_has_via(raw: &[u8]) -> bool {
    let mut lines = raw.split(|&c| c == b'\n');
    lines.next();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.first().is_some_and(|&c| is_ws(c)) {
            continue;
        }
        if let Some(colon) = memchr::memchr(b':', line) {
            let name = trim_lws(line.get(..colon).unwrap_or(&[]));
            if HeaderName::from_bytes(name) == HeaderName::Via {
                return true;
            }
        }
    }
    false
}

fn u32_of(n: usize) -> u32 {
    // Callers check the buffer length against u32::MAX first.
    u32::try_from(n).unwrap_or(u32::MAX)
}

struct Parsed {
    start: Start,
    start_line_end: u32,
    headers: Vec<Hdr>,
    headers_end: u32,
    body_start: u32,
    end: usize,
    cache: Cache,
}

fn parse_start_line(buf: &Bytes, le: usize, cache: &mut Cache) -> Result<Start, K> {
    let line = buf.get(..le).ok_or(K::BadStartLine)?;
    if line.is_empty() {
        return Err(K::Empty);
    }
    if line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase.
        let sp = memchr::memchr(b' ', line).ok_or(K::BadStartLine)?;
        check_version(line.get(..sp).ok_or(K::BadStartLine)?)?;
        // Tolerate several SP (RFC 3665 §3.9 F6/F8/F10, erratum 6242).
        let mut i = sp;
        while line.get(i) == Some(&b' ') {
            i += 1;
        }
        let mut j = i;
        while line.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        if j - i != 3 {
            return Err(K::BadStatusCode);
        }
        let code = parse_u64(line.get(i..j).ok_or(K::BadStatusCode)?).ok_or(K::BadStatusCode)?;
        if !(100..=699).contains(&code) {
            return Err(K::BadStatusCode);
        }
        let reason = match line.get(j) {
            None => (j, j),
            Some(b' ') => (j + 1, line.len()),
            Some(_) => return Err(K::BadStatusCode),
        };
        let code = u16::try_from(code).map_err(|_| K::BadStatusCode)?;
        return Ok(Start::Response {
            code,
            reason: (u32_of(reason.0), u32_of(reason.1)),
        });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version.
    let sp1 = memchr::memchr(b' ', line).ok_or(K::BadStartLine)?;
    let sp2 = memchr::memrchr(b' ', line).ok_or(K::BadStartLine)?;
    if !is_token(line.get(..sp1).ok_or(K::BadMethod)?) {
        return Err(K::BadMethod);
    }
    if sp2 == sp1 {
        return Err(K::BadStartLine);
    }
    check_version(line.get(sp2 + 1..).ok_or(K::BadStartLine)?)?;
    let uri = line.get(sp1 + 1..sp2).ok_or(K::BadRequestUri)?;
    // No LWS inside the Request-URI and no <> around it (RFC 4475 lwsruri,
    // lwsstart, ltgtruri); Uri::parse refuses both. IPv6 needs [] (RFC 5118).
    let parsed = Uri::parse(uri).map_err(|_| K::BadRequestUri)?;
    if parsed.headers().is_some() {
        // RFC 4475 §3.1.2.11 escruri: headers are not allowed here.
        return Err(K::RequestUriHeaders);
    }
    cache.ruri = parsed.index(buf);
    Ok(Start::Request {
        method: Method::from_shared(buf, 0, sp1),
        uri: (u32_of(sp1 + 1), u32_of(sp2)),
    })
}

fn parse_index(buf: &Bytes) -> Result<Parsed, K> {
    let b: &[u8] = buf;
    if b.is_empty() {
        return Err(K::Empty);
    }
    if b.len() >= u32::MAX as usize {
        return Err(K::TooLarge);
    }
    let (le, mut pos) = line_at(b, 0)?.ok_or(K::Incomplete)?;
    let mut cache = Cache::default();
    let start = parse_start_line(buf, le, &mut cache)?;
    let start_line_end = pos;

    let mut headers: Vec<Hdr> = Vec::with_capacity(24);
    let headers_end;
    loop {
        let (le, nx) = line_at(b, pos)?.ok_or(K::Incomplete)?;
        if le == pos {
            headers_end = pos;
            pos = nx;
            break;
        }
        let first = b.get(pos).copied().unwrap_or(b'\r');
        if is_ws(first) {
            // Folding (RFC 3261 §7.3.1): the line continues the previous value.
            let last = headers.last_mut().ok_or(K::OrphanContinuation)?;
            last.value_end = u32_of(le);
            last.line_end = u32_of(nx);
        } else {
            let line = b.get(pos..le).ok_or(K::BadHeaderName)?;
            let colon = memchr::memchr(b':', line).ok_or(K::MissingColon)?;
            let raw_name = line.get(..colon).ok_or(K::BadHeaderName)?;
            let mut nlen = raw_name.len();
            while nlen > 0 && raw_name.get(nlen - 1).is_some_and(|&c| is_ws(c)) {
                nlen -= 1;
            }
            let name = raw_name.get(..nlen).ok_or(K::BadHeaderName)?;
            if !is_token(name) {
                return Err(K::BadHeaderName);
            }
            headers.push(Hdr {
                name: HeaderName::from_bytes(name),
                line_start: u32_of(pos),
                name_end: u32_of(pos + nlen),
                value_start: u32_of(pos + colon + 1),
                value_end: u32_of(le),
                line_end: u32_of(nx),
            });
        }
        pos = nx;
    }
    let body_start = pos;

    // Trim each value and validate what the proxy relies on.
    let mut n_via = 0usize;
    let mut counts = [0u8; 5]; // From, To, Call-ID, CSeq, Max-Forwards
    let mut content_length: Option<u64> = None;
    let mut cseq_method: Option<&[u8]> = None;
    for h in headers.iter_mut() {
        let raw = b
            .get(h.value_start as usize..h.value_end as usize)
            .unwrap_or(&[]);
        let v = trim_lws(raw);
        let vs = sub_offset(b, v).unwrap_or(h.value_start as usize);
        h.value_start = u32_of(vs);
        h.value_end = u32_of(vs + v.len());
        let bump = |counts: &mut [u8; 5], i: usize| {
            if let Some(c) = counts.get_mut(i) {
                *c = c.saturating_add(1);
            }
        };
        match h.name {
            HeaderName::Via => {
                for e in ListIter::new(v) {
                    let via = Via::parse(e).map_err(|_| K::BadVia)?;
                    if n_via == 0 {
                        cache.top_via = via.index(b);
                    }
                    n_via += 1;
                }
            }
            HeaderName::From | HeaderName::To => {
                let is_to = h.name == HeaderName::To;
                bump(&mut counts, usize::from(is_to));
                let idx = NameAddr::parse(v).map_err(|e| e.kind())?.index(b);
                if is_to {
                    cache.to = idx;
                } else {
                    cache.from = idx;
                }
            }
            HeaderName::CallId => {
                bump(&mut counts, 2);
                if v.is_empty() || v.iter().any(|&c| is_lws(c)) {
                    return Err(K::BadCallId);
                }
            }
            HeaderName::CSeq => {
                bump(&mut counts, 3);
                let (_, m) = parse_cseq(v).ok_or(K::BadCSeq)?;
                cseq_method = Some(m);
            }
            HeaderName::MaxForwards => {
                bump(&mut counts, 4);
                let n = parse_u64(v).ok_or(K::BadMaxForwards)?;
                if n > u64::from(u32::MAX) {
                    return Err(K::BadMaxForwards);
                }
            }
            HeaderName::ContentLength => {
                let n = parse_u64(v).ok_or(K::BadContentLength)?;
                match content_length {
                    Some(prev) if prev != n => return Err(K::MultipleContentLength),
                    _ => content_length = Some(n),
                }
            }
            HeaderName::Contact => {
                for e in ListIter::new(v) {
                    if e != b"*" {
                        NameAddr::parse(e).map_err(|e| e.kind())?;
                    }
                }
            }
            HeaderName::Route | HeaderName::RecordRoute => {
                for e in ListIter::new(v) {
                    NameAddr::parse(e).map_err(|e| e.kind())?;
                }
            }
            _ => {}
        }
    }
    // Mandatory and single-value headers (RFC 3261 §8.1.1, §20; RFC 4475
    // insuf, multi01).
    if n_via == 0 {
        return Err(K::MissingHeader(HeaderName::Via));
    }
    let names = [
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
        HeaderName::MaxForwards,
    ];
    for (i, (&count, &name)) in counts.iter().zip(names.iter()).enumerate() {
        if count == 0 && i < 4 {
            return Err(K::MissingHeader(name));
        }
        if count > 1 {
            return Err(K::DuplicateHeader(name));
        }
    }
    if let Start::Request { method, .. } = &start {
        if cseq_method != Some(method.as_bytes()) {
            // RFC 4475 mismatch02: an unknown method gets 501 first.
            return Err(match method {
                Method::Other(_) => K::UnknownMethodMismatch,
                _ => K::CSeqMismatch,
            });
        }
    }
    // Framing (RFC 3261 §18.3): Content-Length is optional on datagrams; if
    // given, extra octets are ignored (RFC 4475 dblreq), missing ones are an
    // error (clerr).
    let avail = b.len().saturating_sub(body_start);
    let end = match content_length {
        None => b.len(),
        Some(n) => {
            let n = usize::try_from(n).map_err(|_| K::BodyTruncated)?;
            if n > avail {
                return Err(K::BodyTruncated);
            }
            body_start + n
        }
    };
    Ok(Parsed {
        start,
        start_line_end: u32_of(start_line_end),
        headers,
        headers_end: u32_of(headers_end),
        body_start: u32_of(body_start),
        end,
        cache,
    })
}

impl Message {
    /// Datagram parse (UDP): the buffer is one message. Leading CRLFs are
    /// skipped (RFC 3261 §7.5). Content-Length is optional (absent → the body
    /// is the rest of the datagram); if present and smaller than what follows,
    /// the extra octets are ignored (RFC 3261 §18.3, RFC 4475 dblreq); if
    /// larger, the message is refused (clerr).
    pub fn parse(buf: Bytes) -> Result<Message, ParseError> {
        let mut skip = 0;
        while buf.get(skip..skip + 2) == Some(b"\r\n") {
            skip += 2;
        }
        let mut buf = if skip > 0 { buf.slice(skip..) } else { buf };
        match parse_index(&buf) {
            Ok(p) => {
                buf.truncate(p.end);
                Ok(Message {
                    buf,
                    start: p.start,
                    start_line_end: p.start_line_end,
                    headers: p.headers,
                    headers_end: p.headers_end,
                    body_start: p.body_start,
                    cache: p.cache,
                })
            }
            Err(kind) => Err(ParseError::in_message(kind, &buf)),
        }
    }

    #[inline]
    fn slice(&self, start: u32, end: u32) -> &[u8] {
        self.buf.get(start as usize..end as usize).unwrap_or(&[])
    }

    #[inline]
    pub(crate) fn value_of(&self, h: &Hdr) -> &[u8] {
        self.slice(h.value_start, h.value_end)
    }

    pub(crate) fn index(&self) -> &[Hdr] {
        &self.headers
    }

    pub(crate) fn start_line_end(&self) -> usize {
        self.start_line_end as usize
    }

    pub(crate) fn headers_end(&self) -> usize {
        self.headers_end as usize
    }

    pub(crate) fn body_start(&self) -> usize {
        self.body_start as usize
    }

    pub(crate) fn uri_range(&self) -> Option<(usize, usize)> {
        match &self.start {
            Start::Request { uri, .. } => Some((uri.0 as usize, uri.1 as usize)),
            Start::Response { .. } => None,
        }
    }

    /// Exactly the message bytes (without ignored trailing octets).
    pub fn as_bytes(&self) -> &Bytes {
        &self.buf
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, Start::Request { .. })
    }

    /// Request method (`None` for responses).
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            Start::Request { method, .. } => Some(method),
            Start::Response { .. } => None,
        }
    }

    /// Response status code (`None` for requests).
    pub fn status(&self) -> Option<u16> {
        match self.start {
            Start::Response { code, .. } => Some(code),
            Start::Request { .. } => None,
        }
    }

    /// Reason phrase as received (may be empty, may be UTF-8).
    pub fn reason(&self) -> Option<&[u8]> {
        match self.start {
            Start::Response { reason, .. } => Some(self.slice(reason.0, reason.1)),
            Start::Request { .. } => None,
        }
    }

    /// The Request-URI (validated by `parse`; the scheme may be `Other`, for
    /// which the proxy answers 416).
    pub fn request_uri(&self) -> Option<Uri<'_>> {
        self.cache
            .ruri
            .as_ref()
            .map(|i| Uri::from_index(&self.buf, i))
    }

    /// Value of the first header of that kind (LWS-trimmed, folding kept);
    /// `None` for `HeaderName::Other` (use `header_by_name`).
    pub fn header(&self, name: HeaderName) -> Option<&[u8]> {
        if name == HeaderName::Other {
            return None;
        }
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| self.value_of(h))
    }

    /// All values of a header kind, in order. List headers (see
    /// [`HeaderName::is_list`]) are split on top-level commas, respecting
    /// quoted strings and `<...>`.
    pub fn header_values(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> {
        HeaderValues {
            msg: self,
            name,
            idx: 0,
            cur: None,
        }
    }

    /// First header with this name, case-insensitive, compact forms equal
    /// to long ones (`s` = `Subject`). Works for unknown headers.
    pub fn header_by_name(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| names_equal(self.slice(h.line_start, h.name_end), name.as_bytes()))
            .map(|h| self.value_of(h))
    }

    /// Every header field in order, as received.
    pub fn headers(&self) -> impl Iterator<Item = HeaderField<'_>> {
        self.headers.iter().map(move |h| HeaderField {
            name: self.slice(h.line_start, h.name_end),
            kind: h.name,
            value: self.value_of(h),
        })
    }

    pub fn top_via(&self) -> Option<Via<'_>> {
        self.cache
            .top_via
            .as_ref()
            .map(|i| Via::from_index(&self.buf, i))
    }

    /// Every Via value, top first (comma-separated values split).
    pub fn vias(&self) -> impl Iterator<Item = Via<'_>> {
        self.header_values(HeaderName::Via)
            .filter_map(|v| Via::parse(v).ok())
    }

    pub fn call_id(&self) -> Option<&[u8]> {
        self.header(HeaderName::CallId)
    }

    pub fn cseq(&self) -> Option<CSeq> {
        let v = self.header(HeaderName::CSeq)?;
        let (seq, m) = parse_cseq(v)?;
        let off = sub_offset(&self.buf, m)?;
        Some(CSeq {
            seq,
            method: Method::from_shared(&self.buf, off, off + m.len()),
        })
    }

    pub fn from_hdr(&self) -> Option<NameAddr<'_>> {
        self.cache
            .from
            .as_ref()
            .map(|i| NameAddr::from_index(&self.buf, i))
    }

    pub fn to_hdr(&self) -> Option<NameAddr<'_>> {
        self.cache
            .to
            .as_ref()
            .map(|i| NameAddr::from_index(&self.buf, i))
    }

    pub fn max_forwards(&self) -> Option<u32> {
        parse_u64(self.header(HeaderName::MaxForwards)?).and_then(|n| u32::try_from(n).ok())
    }

    /// Route values, top first.
    pub fn routes(&self) -> impl Iterator<Item = NameAddr<'_>> {
        self.header_values(HeaderName::Route)
            .filter_map(|v| NameAddr::parse(v).ok())
    }

    /// Record-Route values, top first.
    pub fn record_routes(&self) -> impl Iterator<Item = NameAddr<'_>> {
        self.header_values(HeaderName::RecordRoute)
            .filter_map(|v| NameAddr::parse(v).ok())
    }

    /// First Contact value (`None` for `Contact: *`).
    pub fn contact(&self) -> Option<NameAddr<'_>> {
        self.contacts().next()
    }

    /// Every Contact value (`*` skipped).
    pub fn contacts(&self) -> impl Iterator<Item = NameAddr<'_>> {
        self.header_values(HeaderName::Contact)
            .filter_map(|v| NameAddr::parse(v).ok())
    }

    pub fn content_length(&self) -> Option<usize> {
        parse_u64(self.header(HeaderName::ContentLength)?).and_then(|n| usize::try_from(n).ok())
    }

    pub fn body(&self) -> &[u8] {
        self.buf.get(self.body_start as usize..).unwrap_or(&[])
    }

    /// The body as a shared `Bytes` (no copy).
    pub fn body_bytes(&self) -> Bytes {
        if (self.body_start as usize) <= self.buf.len() {
            self.buf.slice(self.body_start as usize..)
        } else {
            Bytes::new()
        }
    }

    /// The header section: start line and header lines with their CRLFs,
    /// without the empty line that ends it.
    pub fn head(&self) -> &[u8] {
        self.buf.get(..self.headers_end as usize).unwrap_or(&[])
    }

    /// Starts an edit (splices over this message's bytes).
    pub fn edit(&self) -> Editor<'_> {
        Editor::new(self)
    }
}

struct HeaderValues<'a> {
    msg: &'a Message,
    name: HeaderName,
    idx: usize,
    cur: Option<ListIter<'a>>,
}

impl<'a> Iterator for HeaderValues<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if let Some(it) = self.cur.as_mut() {
                for e in it.by_ref() {
                    if !e.is_empty() {
                        return Some(e);
                    }
                }
                self.cur = None;
            }
            if self.name == HeaderName::Other {
                return None;
            }
            let h = self.msg.headers.get(self.idx)?;
            self.idx += 1;
            if h.name != self.name {
                continue;
            }
            let v = self.msg.value_of(h);
            if self.name.is_list() {
                self.cur = Some(ListIter::new(v));
            } else {
                return Some(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Scheme;

    pub(crate) const INVITE: &[u8] = b"INVITE sip:bob@biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

    fn parse(b: &[u8]) -> Result<Message, ParseError> {
        Message::parse(Bytes::copy_from_slice(b))
    }

    fn kind(b: &[u8]) -> K {
        parse(b).unwrap_err().kind()
    }

    #[test]
    fn basic_request_accessors() {
        let m = parse(INVITE).unwrap();
        assert!(m.is_request());
        assert_eq!(m.method(), Some(&Method::Invite));
        assert_eq!(m.status(), None);
        assert_eq!(m.reason(), None);
        let u = m.request_uri().unwrap();
        assert_eq!(u.user(), Some(&b"bob"[..]));
        assert_eq!(u.scheme(), Scheme::Sip);
        assert_eq!(m.call_id(), Some(&b"a84b4c76e66710@pc33.atlanta.com"[..]));
        assert_eq!(
            m.cseq(),
            Some(CSeq {
                seq: 314159,
                method: Method::Invite
            })
        );
        assert_eq!(m.from_hdr().unwrap().tag(), Some(&b"1928301774"[..]));
        assert_eq!(m.to_hdr().unwrap().tag(), None);
        assert_eq!(m.to_hdr().unwrap().display_name(), Some(&b"Bob"[..]));
        assert_eq!(m.max_forwards(), Some(70));
        assert_eq!(m.content_length(), Some(4));
        assert_eq!(m.body(), b"v=0\n");
        assert_eq!(&m.body_bytes()[..], b"v=0\n");
        assert_eq!(m.as_bytes().as_ref(), INVITE);
        let v = m.top_via().unwrap();
        assert_eq!(v.branch(), Some(&b"z9hG4bK776asdhds"[..]));
        assert_eq!(v.rport(), Some(None));
        assert_eq!(m.contact().unwrap().uri().host(), b"pc33.atlanta.com");
        assert_eq!(
            m.header(HeaderName::ContentType),
            Some(&b"application/sdp"[..])
        );
        assert_eq!(m.header(HeaderName::Other), None);
        assert_eq!(
            m.header_by_name("content-type"),
            Some(&b"application/sdp"[..])
        );
        assert_eq!(m.header_by_name("c"), Some(&b"application/sdp"[..]));
        assert_eq!(m.routes().count(), 0);
        assert_eq!(m.record_routes().count(), 0);
        assert_eq!(m.headers().count(), 9);
        assert!(m.head().starts_with(b"INVITE"));
        assert!(m.head().ends_with(b"Content-Length: 4\r\n"));
    }

    #[test]
    fn response_accessors() {
        let r = b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nTo: <sip:b@c>;tag=x\r\nFrom: <sip:a@c>;tag=y\r\nCall-ID: 1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let m = parse(r).unwrap();
        assert!(!m.is_request());
        assert_eq!(m.status(), Some(180));
        assert_eq!(m.reason(), Some(&b"Ringing"[..]));
        assert_eq!(m.method(), None);
        assert!(m.request_uri().is_none());
        assert_eq!(m.to_hdr().unwrap().tag(), Some(&b"x"[..]));
        // RFC 3665 erratum 6242: two SP after the version.
        let two = b"SIP/2.0  486 Busy Here\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nTo: <sip:b@c>;tag=x\r\nFrom: <sip:a@c>;tag=y\r\nCall-ID: 1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        let m = parse(two).unwrap();
        assert_eq!(m.status(), Some(486));
        assert_eq!(m.reason(), Some(&b"Busy Here"[..]));
        let noreason = b"SIP/2.0 100 \r\nVia: SIP/2.0/UDP a\r\nTo: <sip:b@c>\r\nFrom: <sip:a@c>;tag=y\r\nCall-ID: 1\r\nCSeq: 1 INVITE\r\n\r\n";
        assert_eq!(parse(noreason).unwrap().reason(), Some(&b""[..]));
    }

    #[test]
    fn compact_forms_case_and_folding() {
        let r = b"OPTIONS sip:u@h SIP/2.0\r\n\
v: SIP/2.0/UDP a;branch=z9hG4bK1 ,\r\n SIP/2.0/TCP b\r\n\
VIA  :  SIP/2.0/TLS c\r\n\
f: <sip:a@h>;tag=1\r\n\
t:\r\n  <sip:u@h>\r\n\
i: abc\r\n\
cseq: 0009\r\n  OPTIONS\r\n\
max-forwards: 0068\r\n\
k: timer, 100rel\r\n\
s: hello\r\n\
l: 0\r\n\r\n";
        let m = parse(r).unwrap();
        let hosts: Vec<&str> = m.vias().map(|v| v.host()).collect();
        assert_eq!(hosts, ["a", "b", "c"]);
        assert_eq!(m.call_id(), Some(&b"abc"[..]));
        assert_eq!(m.cseq().unwrap().seq, 9);
        assert_eq!(m.max_forwards(), Some(68));
        assert_eq!(m.to_hdr().unwrap().uri().user(), Some(&b"u"[..]));
        let sup: Vec<&[u8]> = m.header_values(HeaderName::Supported).collect();
        assert_eq!(sup, vec![&b"timer"[..], &b"100rel"[..]]);
        assert_eq!(m.header_by_name("Subject"), Some(&b"hello"[..]));
        assert_eq!(m.header(HeaderName::CSeq), Some(&b"0009\r\n  OPTIONS"[..]));
        assert_eq!(m.content_length(), Some(0));
    }

    #[test]
    fn header_values_split_lists_only() {
        let r = b"OPTIONS sip:u@h SIP/2.0\r\nVia: SIP/2.0/UDP a\r\nFrom: \"a, b\" <sip:a@h>;tag=1\r\nTo: <sip:u@h>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\
Route: <sip:p1;lr>, \"x,y\" <sip:p2;lr>\r\nRoute: <sip:p3;lr>\r\nRecord-Route: <sip:rr1;lr>,<sip:rr2;lr>\r\nUser-Agent: a, b\r\n\r\n";
        let m = parse(r).unwrap();
        let routes: Vec<&[u8]> = m.routes().map(|r| r.uri().host()).collect();
        assert_eq!(routes, vec![&b"p1"[..], b"p2", b"p3"]);
        assert_eq!(m.record_routes().count(), 2);
        assert_eq!(
            m.header_values(HeaderName::UserAgent).collect::<Vec<_>>(),
            vec![&b"a, b"[..]]
        );
        assert_eq!(m.header_values(HeaderName::From).count(), 1);
        assert_eq!(m.header_values(HeaderName::Other).count(), 0);
        assert_eq!(m.from_hdr().unwrap().display_name(), Some(&b"a, b"[..]));
    }

    #[test]
    fn udp_framing() {
        // Absent Content-Length: body is the rest of the datagram.
        let r = b"MESSAGE sip:u@h SIP/2.0\r\nVia: SIP/2.0/UDP a\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:u@h>\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\n\r\nhello";
        let m = parse(r).unwrap();
        assert_eq!(m.body(), b"hello");
        assert_eq!(m.content_length(), None);
        // Smaller Content-Length: trailing octets ignored.
        let mut r2 = r.to_vec();
        r2.splice(r.len() - 7..r.len() - 7, b"l: 2\r\n".iter().copied());
        let m = parse(&r2).unwrap();
        assert_eq!(m.body(), b"he");
        assert!(m.as_bytes().ends_with(b"\r\n\r\nhe"));
        // Larger: refused, 400.
        let mut r3 = r.to_vec();
        r3.splice(r.len() - 7..r.len() - 7, b"l: 99\r\n".iter().copied());
        let e = parse(&r3).unwrap_err();
        assert_eq!(e.kind(), K::BodyTruncated);
        assert_eq!(e.response().map(|r| r.0), Some(400));
        // Leading CRLFs are skipped.
        let mut r4 = b"\r\n\r\n".to_vec();
        r4.extend_from_slice(r);
        assert_eq!(parse(&r4).unwrap().as_bytes().as_ref(), &r[..]);
    }

    #[test]
    fn binary_body_kept() {
        let mut r = b"MESSAGE sip:u@h SIP/2.0\r\nVia: SIP/2.0/UDP a\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:u@h>\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\nContent-Length: 6\r\n\r\n".to_vec();
        r.extend_from_slice(&[0, b'\r', 0xff, b'\n', 0x80, 0]);
        let m = parse(&r).unwrap();
        assert_eq!(m.body(), &[0, b'\r', 0xff, b'\n', 0x80, 0]);
    }

    #[test]
    fn unknown_method_and_headers_kept() {
        let r = b"FOO sip:u@h SIP/2.0\r\nVia: SIP/2.0/UDP a\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:u@h>\r\nCall-ID: x\r\nCSeq: 1 FOO\r\nX-Thing:  odd ;;,, value \r\n\r\n";
        let m = parse(r).unwrap();
        assert_eq!(m.method().unwrap().as_str(), "FOO");
        assert_eq!(m.cseq().unwrap().method.as_str(), "FOO");
        assert_eq!(m.header_by_name("x-thing"), Some(&b"odd ;;,, value"[..]));
        let f: Vec<HeaderField> = m.headers().collect();
        assert_eq!(f[5].name, b"X-Thing");
        assert_eq!(f[5].kind, HeaderName::Other);
    }

    #[test]
    fn start_line_refusals() {
        let tail = "\r\nVia: SIP/2.0/UDP a\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:u@h>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n";
        let k = |line: &str| kind(format!("{line}{tail}").as_bytes());
        assert_eq!(k("INVITE sip:u@h SIP/7.0"), K::VersionNotSupported);
        assert_eq!(k("INVITE <sip:u@h> SIP/2.0"), K::BadRequestUri);
        assert_eq!(k("INVITE sip:u@h; lr SIP/2.0"), K::BadRequestUri);
        assert_eq!(k("INVITE  sip:u@h  SIP/2.0"), K::BadRequestUri);
        assert_eq!(k("INVITE sip:u@h SIP/2.0 "), K::BadStartLine);
        assert_eq!(k("INVITE sip:u@h"), K::BadStartLine);
        assert_eq!(k("INVITE sip:2001:db8::10 SIP/2.0"), K::BadRequestUri);
        assert_eq!(k("INVITE sip:u@h?Route=x SIP/2.0"), K::RequestUriHeaders);
        assert_eq!(k("INV(TE sip:u@h SIP/2.0"), K::BadMethod);
        assert_eq!(k("SIP/2.0 4294967301 big"), K::BadStatusCode);
        assert_eq!(k("SIP/2.0 099 low"), K::BadStatusCode);
        assert_eq!(k("SIP/2.0 700 high"), K::BadStatusCode);
        assert_eq!(k("SIP/2.0 20x OK"), K::BadStatusCode);
        assert_eq!(k("SIP/3.0 200 OK"), K::VersionNotSupported);
        assert_eq!(kind(b""), K::Empty);
        assert_eq!(kind(b"\r\n\r\n"), K::Empty);
        // Unknown scheme parses (the proxy answers 416).
        let m = parse(format!("INVITE foo:bar SIP/2.0{tail}").as_bytes()).unwrap();
        assert_eq!(m.request_uri().unwrap().scheme(), Scheme::Other);
    }

    #[test]
    fn header_refusals() {
        let head = "OPTIONS sip:u@h SIP/2.0\r\n";
        let ok = "Via: SIP/2.0/UDP a\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:u@h>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n";
        let k = |extra: &str| kind(format!("{head}{ok}{extra}\r\n").as_bytes());
        assert_eq!(k("Foobar roobar\r\n"), K::MissingColon);
        assert_eq!(k("Bad Name: x\r\n"), K::BadHeaderName);
        assert_eq!(k(": x\r\n"), K::BadHeaderName);
        assert_eq!(k("Content-Length: -999\r\n"), K::BadContentLength);
        assert_eq!(
            k("Content-Length: 13\r\nl: 5\r\n"),
            K::MultipleContentLength
        );
        assert_eq!(k("Max-Forwards: ten\r\n"), K::BadMaxForwards);
        assert_eq!(
            k("Max-Forwards: 1\r\nMax-Forwards: 2\r\n"),
            K::DuplicateHeader(HeaderName::MaxForwards)
        );
        assert_eq!(k("Call-ID: y\r\n"), K::DuplicateHeader(HeaderName::CallId));
        assert_eq!(k("Via: SIP/2.0/UDP 192.0.2.15;;,;,,\r\n"), K::BadVia);
        assert_eq!(
            k("Contact: \"Joe\" <sip:joe@example.org>;;;;\r\n"),
            K::BadNameAddr
        );
        assert_eq!(k("Route: <sip:a\r\n"), K::BadNameAddr);
        assert_eq!(
            kind(format!("{head} folded-first: x\r\n{ok}\r\n").as_bytes()),
            K::OrphanContinuation
        );
        assert_eq!(kind(format!("{head}{ok}").as_bytes()), K::Incomplete);
        assert_eq!(
            kind(format!("{head}Via: SIP/2.0/UDP a\nX: y\r\n\r\n").as_bytes()),
            K::BadLineEnd
        );
        assert_eq!(
            kind(format!("{head}Via: SIP/2.0/UDP a\rX: y\r\n\r\n").as_bytes()),
            K::BadLineEnd
        );
        let missing = |drop: &str| {
            let hs: String = ok
                .split_inclusive("\r\n")
                .filter(|l| !l.starts_with(drop))
                .collect();
            kind(format!("{head}{hs}\r\n").as_bytes())
        };
        assert_eq!(missing("Via"), K::MissingHeader(HeaderName::Via));
        assert_eq!(missing("From"), K::MissingHeader(HeaderName::From));
        assert_eq!(missing("To"), K::MissingHeader(HeaderName::To));
        assert_eq!(missing("Call-ID"), K::MissingHeader(HeaderName::CallId));
        assert_eq!(missing("CSeq"), K::MissingHeader(HeaderName::CSeq));
    }

    #[test]
    fn cseq_rules() {
        let r = |cseq: &str, method: &str| {
            kind(format!("{method} sip:u@h SIP/2.0\r\nVia: SIP/2.0/UDP a\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:u@h>\r\nCall-ID: x\r\nCSeq: {cseq}\r\n\r\n").as_bytes())
        };
        assert_eq!(r("2147483648 INVITE", "INVITE"), K::BadCSeq);
        assert_eq!(r("36893488147419103232 REGISTER", "REGISTER"), K::BadCSeq);
        assert_eq!(r("1 INVITE", "OPTIONS"), K::CSeqMismatch);
        assert_eq!(r("1 INVITE", "NEWMETHOD"), K::UnknownMethodMismatch);
        assert_eq!(r("1 invite", "INVITE"), K::CSeqMismatch);
        assert_eq!(r("1INVITE", "INVITE"), K::BadCSeq);
        assert_eq!(r("INVITE", "INVITE"), K::BadCSeq);
        let e = parse(b"NEWMETHOD sip:u@h SIP/2.0\r\nVia: SIP/2.0/UDP a\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:u@h>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n").unwrap_err();
        assert_eq!(e.response(), Some((501, "Not Implemented")));
        assert!(parse_cseq(b"2147483647 ACK").is_some());
    }

    #[test]
    fn errors_on_responses_are_silent() {
        let e = parse(
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a\r\nCSeq: 9292394834772304023312 OPTIONS\r\n\r\n",
        )
        .unwrap_err();
        assert!(!e.is_request());
        assert_eq!(e.response(), None);
        let e = parse(b"\x00\x01garbage\r\n\r\n").unwrap_err();
        assert_eq!(e.response(), None);
    }
}
