//! Splice-based editing (Kamailio "lumps"): every operation records a
//! replacement of an original byte range; `finish` writes the result in one
//! allocation of the exact size. Bytes not touched go out as they came in.

use bytes::Bytes;

use super::grammar::{sub_offset, trim_lws, ListIter};
use super::message::{Hdr, Message};
use super::via::Via;
use super::{names_equal, HeaderName, NameAddr};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Splice {
    /// Original range replaced (empty for an insertion).
    start: usize,
    end: usize,
    /// Replacement bytes, a range of `Editor::arena`.
    ins_start: usize,
    ins_end: usize,
}

/// Pending edits over one message. Offsets always refer to the original
/// message, so operations compose in any order.
#[derive(Debug)]
pub struct Editor<'a> {
    msg: &'a Message,
    splices: Vec<Splice>,
    arena: Vec<u8>,
}

/// Decimal digits of `n` into `buf`, returning the used tail.
fn digits(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        if let Some(slot) = buf.get_mut(i) {
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    buf.get(i..).unwrap_or(&[])
}

impl<'a> Editor<'a> {
    pub(crate) fn new(msg: &'a Message) -> Self {
        Editor {
            msg,
            splices: Vec::with_capacity(8),
            arena: Vec::with_capacity(256),
        }
    }

    /// Records "replace `start..end` with the concatenation of `parts`".
    /// A second replacement of the very same non-empty range supersedes the
    /// first (e.g. two `set_max_forwards`).
    fn splice(&mut self, start: usize, end: usize, parts: &[&[u8]]) {
        let ins_start = self.arena.len();
        for p in parts {
            self.arena.extend_from_slice(p);
        }
        let sp = Splice {
            start,
            end,
            ins_start,
            ins_end: self.arena.len(),
        };
        if end > start {
            if let Some(old) = self
                .splices
                .iter_mut()
                .find(|s| s.start == start && s.end == end)
            {
                *old = sp;
                return;
            }
        }
        // Keep sorted by start; equal starts keep call order.
        let pos = self.splices.partition_point(|s| s.start <= start);
        self.splices.insert(pos, sp);
    }

    fn first(&self, name: HeaderName) -> Option<Hdr> {
        self.msg.index().iter().find(|h| h.name == name).copied()
    }

    /// Absolute ranges of the non-empty comma-separated elements of `h`.
    fn elements(&self, h: &Hdr) -> impl Iterator<Item = (usize, usize)> + 'a {
        let buf: &'a [u8] = self.msg.as_bytes();
        let v: &'a [u8] = buf
            .get(h.value_start as usize..h.value_end as usize)
            .unwrap_or(&[]);
        ListIter::new(v)
            .filter(|e| !e.is_empty())
            .filter_map(move |e| sub_offset(buf, e).map(|o| (o, o + e.len())))
    }

    /// Removes the first value of a list header: "a, b" keeps "b"; a line
    /// holding one value is removed whole.
    fn pop_first_value(&mut self, name: HeaderName) -> &mut Self {
        let Some(h) = self.first(name) else {
            return self;
        };
        let mut els = self.elements(&h);
        let first = els.next();
        let second = els.next();
        match (first, second) {
            (Some((a, _)), Some((b, _))) => self.splice(a, b, &[]),
            _ => self.splice(h.line_start as usize, h.line_end as usize, &[]),
        }
        self
    }

    /// Inserts a new first `Via: value` line before the current top Via.
    pub fn push_via(&mut self, value: &[u8]) -> &mut Self {
        let at = self
            .first(HeaderName::Via)
            .map_or(self.msg.start_line_end(), |h| h.line_start as usize);
        self.splice(at, at, &[b"Via: ", value, b"\r\n"]);
        self
    }

    /// Removes the top Via value (RFC 3261 §16.7 step 3 / §18.1.2).
    pub fn pop_via(&mut self) -> &mut Self {
        self.pop_first_value(HeaderName::Via)
    }

    /// Rewrites Max-Forwards, or inserts it (at the end of the header
    /// section) when absent (RFC 3261 §16.6 step 3).
    pub fn set_max_forwards(&mut self, n: u32) -> &mut Self {
        let mut b = [0u8; 20];
        let d = digits(u64::from(n), &mut b);
        match self.first(HeaderName::MaxForwards) {
            Some(h) => self.splice(h.value_start as usize, h.value_end as usize, &[d]),
            None => {
                let at = self.msg.headers_end();
                self.splice(at, at, &[b"Max-Forwards: ", d, b"\r\n"]);
            }
        }
        self
    }

    /// Inserts `Record-Route: value` above the existing Record-Route headers,
    /// or right after the Via headers when there is none (RFC 3261 §16.6
    /// step 4).
    pub fn add_record_route(&mut self, value: &[u8]) -> &mut Self {
        let at = match self.first(HeaderName::RecordRoute) {
            Some(h) => h.line_start as usize,
            None => self
                .msg
                .index()
                .iter()
                .filter(|h| h.name == HeaderName::Via)
                .map(|h| h.line_end as usize)
                .next_back()
                .unwrap_or(self.msg.start_line_end()),
        };
        self.splice(at, at, &[b"Record-Route: ", value, b"\r\n"]);
        self
    }

    /// Removes the first Route value (RFC 3261 §16.4 / §16.12).
    pub fn pop_route(&mut self) -> &mut Self {
        self.pop_first_value(HeaderName::Route)
    }

    /// Removes the first `n` Route values, across Route lines (a proxy pops every entry that
    /// names it: two with a double Record-Route, RFC 5658). Repeated [`Editor::pop_route`]
    /// calls would all address the same original first value.
    pub fn pop_routes(&mut self, n: usize) -> &mut Self {
        let mut left = n;
        let routes: Vec<Hdr> = self
            .msg
            .index()
            .iter()
            .filter(|h| h.name == HeaderName::Route)
            .copied()
            .collect();
        for h in routes {
            if left == 0 {
                break;
            }
            let els: Vec<(usize, usize)> = self.elements(&h).collect();
            if els.len() <= left {
                // Every value of this line goes: the whole line goes.
                self.splice(h.line_start as usize, h.line_end as usize, &[]);
                left -= els.len().min(left);
            } else {
                // Keep the tail of the line from the first surviving value.
                if let (Some((a, _)), Some((b, _))) = (els.first().copied(), els.get(left).copied())
                {
                    self.splice(a, b, &[]);
                }
                left = 0;
            }
        }
        self
    }

    /// Replaces the Request-URI (no-op on responses).
    pub fn set_request_uri(&mut self, uri: &[u8]) -> &mut Self {
        if let Some((s, e)) = self.msg.uri_range() {
            self.splice(s, e, &[uri]);
        }
        self
    }

    /// Appends `name: value` after the last header.
    pub fn add_header(&mut self, name: &str, value: &[u8]) -> &mut Self {
        let at = self.msg.headers_end();
        self.splice(at, at, &[name.as_bytes(), b": ", value, b"\r\n"]);
        self
    }

    /// Removes every header line of that kind (no-op for `Other`; use
    /// [`Editor::remove_headers_by_name`]).
    pub fn remove_headers(&mut self, name: HeaderName) -> &mut Self {
        if name == HeaderName::Other {
            return self;
        }
        let lines: Vec<(usize, usize)> = self
            .msg
            .index()
            .iter()
            .filter(|h| h.name == name)
            .map(|h| (h.line_start as usize, h.line_end as usize))
            .collect();
        for (s, e) in lines {
            self.splice(s, e, &[]);
        }
        self
    }

    /// Removes every header line with this name (case-insensitive, compact
    /// forms equal to long ones); works for unknown headers.
    pub fn remove_headers_by_name(&mut self, name: &str) -> &mut Self {
        let buf = self.msg.as_bytes();
        let lines: Vec<(usize, usize)> = self
            .msg
            .index()
            .iter()
            .filter(|h| {
                names_equal(
                    buf.get(h.line_start as usize..h.name_end as usize)
                        .unwrap_or(&[]),
                    name.as_bytes(),
                )
            })
            .map(|h| (h.line_start as usize, h.line_end as usize))
            .collect();
        for (s, e) in lines {
            self.splice(s, e, &[]);
        }
        self
    }

    /// RFC 3261 §18.2.1 / RFC 3581 §4 on the top Via value: add or replace
    /// `;received=` (IPv6 written without brackets, per the RFC 3261
    /// grammar and RFC 5118 §4.5), and fill `;rport=` when the client asked
    /// with a bare `;rport` (or replace an existing value).
    pub fn set_via_received(&mut self, received: &[u8], rport: Option<u16>) -> &mut Self {
        let received = received
            .strip_prefix(b"[")
            .and_then(|r| r.strip_suffix(b"]"))
            .unwrap_or(received);
        let Some(h) = self.first(HeaderName::Via) else {
            return self;
        };
        let Some((es, ee)) = self.elements(&h).next() else {
            return self;
        };
        let buf: &'a [u8] = self.msg.as_bytes();
        let Some(via) = buf.get(es..ee).and_then(|e| Via::parse(e).ok()) else {
            return self;
        };
        let Some(base) = sub_offset(buf, via.params_raw()) else {
            return self;
        };
        let mut pb = [0u8; 20];
        let port = rport.map(|p| digits(u64::from(p), &mut pb).to_vec());
        let mut has_received = false;
        let spans: Vec<(bool, usize, usize)> = via
            .param_spans()
            .filter_map(|p| {
                if p.name.eq_ignore_ascii_case(b"received") {
                    Some((true, base + p.start, base + p.end))
                } else if p.name.eq_ignore_ascii_case(b"rport") {
                    Some((false, base + p.start, base + p.end))
                } else {
                    None
                }
            })
            .collect();
        for (is_received, s, e) in spans {
            if is_received {
                has_received = true;
                self.splice(s, e, &[b";received=", received]);
            } else if let Some(p) = &port {
                self.splice(s, e, &[b";rport=", p]);
            }
        }
        if !has_received {
            self.splice(ee, ee, &[b";received=", received]);
        }
        self
    }

    /// Replaces the body and makes Content-Length right (the header is always
    /// present afterwards; extra Content-Length lines are removed).
    /// `content_type: Some(..)` sets Content-Type; `None` keeps the existing
    /// one, except that an empty body drops it.
    pub fn set_body(&mut self, content_type: Option<&[u8]>, body: &[u8]) -> &mut Self {
        let msg = self.msg;
        self.splice(msg.body_start(), msg.as_bytes().len(), &[body]);
        let mut b = [0u8; 20];
        let len = digits(body.len() as u64, &mut b).to_vec();
        let at = msg.headers_end();
        let cls: Vec<Hdr> = msg
            .index()
            .iter()
            .filter(|h| h.name == HeaderName::ContentLength)
            .copied()
            .collect();
        match cls.split_first() {
            Some((first, rest)) => {
                self.splice(
                    first.value_start as usize,
                    first.value_end as usize,
                    &[&len],
                );
                for h in rest {
                    self.splice(h.line_start as usize, h.line_end as usize, &[]);
                }
            }
            None => self.splice(at, at, &[b"Content-Length: ", &len, b"\r\n"]),
        }
        let cts: Vec<Hdr> = msg
            .index()
            .iter()
            .filter(|h| h.name == HeaderName::ContentType)
            .copied()
            .collect();
        match content_type {
            Some(ct) => match cts.split_first() {
                Some((first, rest)) => {
                    self.splice(first.value_start as usize, first.value_end as usize, &[ct]);
                    for h in rest {
                        self.splice(h.line_start as usize, h.line_end as usize, &[]);
                    }
                }
                None => self.splice(at, at, &[b"Content-Type: ", ct, b"\r\n"]),
            },
            None if body.is_empty() => {
                for h in cts {
                    self.splice(h.line_start as usize, h.line_end as usize, &[]);
                }
            }
            None => {}
        }
        self
    }

    /// Walks the splices in order: `emit(original_range_or_insert)`.
    fn walk(&self, mut emit: impl FnMut(&[u8])) {
        let src: &[u8] = self.msg.as_bytes();
        let mut cursor = 0usize;
        for s in &self.splices {
            if s.start > cursor {
                emit(src.get(cursor..s.start).unwrap_or(&[]));
                cursor = s.start;
            }
            emit(self.arena.get(s.ins_start..s.ins_end).unwrap_or(&[]));
            cursor = cursor.max(s.end);
        }
        if cursor < src.len() {
            emit(src.get(cursor..).unwrap_or(&[]));
        }
    }

    /// The edited message, written in one allocation of the exact size
    /// (or the original `Bytes`, shared, when nothing was edited).
    pub fn finish(&self) -> Bytes {
        if self.splices.is_empty() {
            return self.msg.as_bytes().clone();
        }
        let mut total = 0usize;
        self.walk(|b| total = total.saturating_add(b.len()));
        let mut out = Vec::with_capacity(total);
        self.walk(|b| out.extend_from_slice(b));
        Bytes::from(out)
    }
}

/// Builds a response to `req` per RFC 3261 §8.2.6: status line, all Via
/// values (in order), From, To (with `to_tag` added if given and To has no
/// tag), Call-ID, CSeq, the `extra` headers, and `Content-Length: 0`.
pub fn build_response(
    req: &Message,
    status: u16,
    reason: &str,
    to_tag: Option<&[u8]>,
    extra: &[(&str, &[u8])],
) -> Bytes {
    fn write(
        req: &Message,
        status: &[u8],
        reason: &str,
        to_tag: Option<&[u8]>,
        extra: &[(&str, &[u8])],
        out: &mut dyn FnMut(&[u8]),
    ) {
        out(b"SIP/2.0 ");
        out(status);
        out(b" ");
        out(reason.as_bytes());
        out(b"\r\n");
        for v in req
            .headers()
            .filter(|h| h.kind == HeaderName::Via)
            .map(|h| h.value)
        {
            out(b"Via: ");
            out(v);
            out(b"\r\n");
        }
        if let Some(f) = req.header(HeaderName::From) {
            out(b"From: ");
            out(f);
            out(b"\r\n");
        }
        if let Some(t) = req.header(HeaderName::To) {
            out(b"To: ");
            out(t);
            if let Some(tag) = to_tag {
                let has_tag = NameAddr::parse(t).ok().and_then(|n| n.tag()).is_some();
                if !has_tag {
                    out(b";tag=");
                    out(tag);
                }
            }
            out(b"\r\n");
        }
        if let Some(c) = req.header(HeaderName::CallId) {
            out(b"Call-ID: ");
            out(c);
            out(b"\r\n");
        }
        if let Some(c) = req.header(HeaderName::CSeq) {
            out(b"CSeq: ");
            out(c);
            out(b"\r\n");
        }
        for (name, value) in extra {
            out(name.as_bytes());
            out(b": ");
            out(value);
            out(b"\r\n");
        }
        out(b"Content-Length: 0\r\n\r\n");
    }
    let mut sb = [0u8; 20];
    let status = digits(u64::from(status), &mut sb);
    let mut total = 0usize;
    write(req, status, reason, to_tag, extra, &mut |b| {
        total = total.saturating_add(b.len())
    });
    let mut out = Vec::with_capacity(total);
    write(req, status, reason, to_tag, extra, &mut |b| {
        out.extend_from_slice(b)
    });
    Bytes::from(out)
}

/// Best-effort response to a request that [`Message::parse`] refused
/// (RFC 3261 §8.2.6 / §16.3; Kamailio's `sl_reply_error`): the Via, From,
/// To (tagged with `to_tag` unless it has a tag), Call-ID and CSeq lines are
/// copied from the raw header section as they are, then `Content-Length: 0`.
/// `None` when `raw` does not look like a request or names no Via (nowhere
/// to send the answer), or when a copied line holds a bare CR.
/// Typically: `err.response().and_then(|(c, r)| build_error_response(raw, c, r, tag))`.
pub fn build_error_response(
    raw: &[u8],
    status: u16,
    reason: &str,
    to_tag: Option<&[u8]>,
) -> Option<Bytes> {
    if raw.get(..4).is_none_or(|p| p.eq_ignore_ascii_case(b"SIP/")) {
        return None;
    }
    // Header lines (continuations kept with their line) up to the empty line.
    let mut lines: Vec<(HeaderName, &[u8], &[u8])> = Vec::new();
    let mut iter = raw.split(|&c| c == b'\n');
    iter.next();
    for line in iter {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.contains(&b'\r') {
            return None;
        }
        if line.first().is_some_and(|&c| c == b' ' || c == b'\t') {
            continue; // folded values are copied from their first line only
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = trim_lws(line.get(..colon).unwrap_or(&[]));
        let kind = HeaderName::from_bytes(name);
        let value = trim_lws(line.get(colon + 1..).unwrap_or(&[]));
        if matches!(
            kind,
            HeaderName::Via
                | HeaderName::From
                | HeaderName::To
                | HeaderName::CallId
                | HeaderName::CSeq
        ) {
            lines.push((kind, kind_name(kind), value));
        }
    }
    if !lines.iter().any(|l| l.0 == HeaderName::Via) {
        return None;
    }
    let mut sb = [0u8; 20];
    let status = digits(u64::from(status), &mut sb);
    let mut out = Vec::with_capacity(128 + lines.iter().map(|l| l.2.len() + 24).sum::<usize>());
    out.extend_from_slice(b"SIP/2.0 ");
    out.extend_from_slice(status);
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for order in [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ] {
        for (kind, name, value) in lines.iter().filter(|l| l.0 == order) {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            if *kind == HeaderName::To {
                if let Some(tag) = to_tag {
                    let tagged = NameAddr::parse(value).ok().and_then(|n| n.tag()).is_some();
                    if !tagged {
                        out.extend_from_slice(b";tag=");
                        out.extend_from_slice(tag);
                    }
                }
            }
            out.extend_from_slice(b"\r\n");
            if order != HeaderName::Via {
                break; // one of each single-value header
            }
        }
    }
    out.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    Some(Bytes::from(out))
}

fn kind_name(h: HeaderName) -> &'static [u8] {
    h.as_str().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &[u8] = b"INVITE sip:bob@biloxi.com SIP/2.0\r\n\
Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bK1, SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK0;rport\r\n\
v: SIP/2.0/TCP old.example.com;branch=z9hG4bKold\r\n\
Max-Forwards: 70\r\n\
Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n\
Route: <sip:p3.example.com;lr>\r\n\
To: Bob <sip:bob@biloxi.com>\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
X-Keep:  untouched  value\r\n\
Content-Type: application/sdp\r\n\
l: 4\r\n\
\r\n\
v=0\n";

    fn msg(b: &[u8]) -> Message {
        Message::parse(Bytes::copy_from_slice(b)).unwrap()
    }

    fn replace(src: &[u8], from: &str, to: &str) -> Vec<u8> {
        let s = String::from_utf8(src.to_vec()).unwrap();
        assert!(s.contains(from), "{from}");
        s.replacen(from, to, 1).into_bytes()
    }

    #[test]
    fn no_edit_shares_buffer() {
        let m = msg(REQ);
        let out = m.edit().finish();
        assert_eq!(out, m.as_bytes());
        assert_eq!(out.as_ptr(), m.as_bytes().as_ptr());
    }

    #[test]
    fn push_via_inserts_first_line() {
        let m = msg(REQ);
        let out = m
            .edit()
            .push_via(b"SIP/2.0/TLS edge.example.net;branch=z9hG4bKnew")
            .finish();
        let want = replace(
            REQ,
            "Via: SIP/2.0/UDP p1",
            "Via: SIP/2.0/TLS edge.example.net;branch=z9hG4bKnew\r\nVia: SIP/2.0/UDP p1",
        );
        assert_eq!(&out[..], &want[..]);
        let m2 = Message::parse(out).unwrap();
        assert_eq!(m2.top_via().unwrap().host(), "edge.example.net");
        assert_eq!(m2.vias().count(), 4);
    }

    #[test]
    fn pop_via_multi_value_line_keeps_second() {
        let m = msg(REQ);
        let out = m.edit().pop_via().finish();
        let want = replace(REQ, "SIP/2.0/UDP p1.example.com;branch=z9hG4bK1, ", "");
        assert_eq!(&out[..], &want[..]);
        let m2 = Message::parse(out).unwrap();
        assert_eq!(m2.top_via().unwrap().host(), "pc33.atlanta.com");
        // Popping again removes the whole (now single-value) line, then the
        // compact `v:` line becomes the top.
        let out = m2.edit().pop_via().finish();
        let m3 = Message::parse(out).unwrap();
        assert_eq!(m3.top_via().unwrap().host(), "old.example.com");
        assert!(!m3.as_bytes().windows(4).any(|w| w == b"pc33"));
    }

    #[test]
    fn max_forwards_rewrite_and_insert() {
        let m = msg(REQ);
        let out = m.edit().set_max_forwards(69).finish();
        assert_eq!(
            &out[..],
            &replace(REQ, "Max-Forwards: 70", "Max-Forwards: 69")[..]
        );
        // Last call wins on the same range.
        let out = m.edit().set_max_forwards(5).set_max_forwards(4).finish();
        assert_eq!(Message::parse(out).unwrap().max_forwards(), Some(4));
        let no_mf = replace(REQ, "Max-Forwards: 70\r\n", "");
        let m = msg(&no_mf);
        let out = m.edit().set_max_forwards(70).finish();
        let want = replace(&no_mf, "l: 4\r\n\r\n", "l: 4\r\nMax-Forwards: 70\r\n\r\n");
        assert_eq!(&out[..], &want[..]);
    }

    #[test]
    fn record_route_goes_above_existing_or_after_vias() {
        let m = msg(REQ);
        let out = m
            .edit()
            .add_record_route(b"<sip:edge.example.net;lr>")
            .finish();
        let want = replace(
            REQ,
            "Max-Forwards: 70\r\n",
            "Record-Route: <sip:edge.example.net;lr>\r\nMax-Forwards: 70\r\n",
        );
        assert_eq!(&out[..], &want[..]);
        let with_rr = replace(REQ, "X-Keep", "Record-Route: <sip:old;lr>\r\nX-Keep");
        let m = msg(&with_rr);
        let out = m.edit().add_record_route(b"<sip:new;lr>").finish();
        let m2 = Message::parse(out).unwrap();
        let rr: Vec<&[u8]> = m2.record_routes().map(|r| r.uri().host()).collect();
        assert_eq!(rr, vec![&b"new"[..], b"old"]);
    }

    #[test]
    fn pop_route_first_value() {
        let m = msg(REQ);
        let out = m.edit().pop_route().finish();
        let want = replace(REQ, "<sip:p1.example.com;lr>, ", "");
        assert_eq!(&out[..], &want[..]);
        let m2 = Message::parse(out).unwrap();
        let out = m2.edit().pop_route().finish();
        let m3 = Message::parse(out).unwrap();
        let hosts: Vec<&[u8]> = m3.routes().map(|r| r.uri().host()).collect();
        assert_eq!(hosts, vec![&b"p3.example.com"[..]]);
        assert!(!m3.as_bytes().windows(5).any(|w| w == b"p2.ex"));
    }

    #[test]
    fn request_uri_and_headers() {
        let m = msg(REQ);
        let out = m
            .edit()
            .set_request_uri(b"sip:bob@192.0.2.4:5060")
            .add_header("X-Edge", b"1")
            .remove_headers(HeaderName::Route)
            .remove_headers(HeaderName::Other)
            .finish();
        let mut want = replace(REQ, "sip:bob@biloxi.com SIP", "sip:bob@192.0.2.4:5060 SIP");
        want = replace(
            &want,
            "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n",
            "",
        );
        want = replace(&want, "Route: <sip:p3.example.com;lr>\r\n", "");
        want = replace(&want, "l: 4\r\n\r\n", "l: 4\r\nX-Edge: 1\r\n\r\n");
        assert_eq!(&out[..], &want[..]);
        let out = m.edit().remove_headers_by_name("x-keep").finish();
        assert_eq!(
            &out[..],
            &replace(REQ, "X-Keep:  untouched  value\r\n", "")[..]
        );
        let out = m.edit().remove_headers_by_name("Content-Length").finish();
        assert_eq!(&out[..], &replace(REQ, "l: 4\r\n", "")[..]);
    }

    #[test]
    fn via_received_and_rport() {
        let m = msg(REQ);
        // Top value has no rport: received appended, rport not invented.
        let out = m.edit().set_via_received(b"192.0.2.7", Some(5062)).finish();
        let want = replace(
            REQ,
            "branch=z9hG4bK1,",
            "branch=z9hG4bK1;received=192.0.2.7,",
        );
        assert_eq!(&out[..], &want[..]);
        let r = b"OPTIONS sip:u@h SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::9:1];rport;received=[2001:db8::1];branch=z9hG4bKx\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:u@h>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let m = msg(r);
        let out = m
            .edit()
            .set_via_received(b"[2001:db8::9:255]", Some(6050))
            .finish();
        let want = replace(
            r,
            ";rport;received=[2001:db8::1];",
            ";rport=6050;received=2001:db8::9:255;",
        );
        assert_eq!(&out[..], &want[..]);
        let v = Message::parse(out).unwrap();
        let via = v.top_via().unwrap();
        assert_eq!(via.rport(), Some(Some(6050)));
        assert_eq!(via.received(), Some(&b"2001:db8::9:255"[..]));
        assert_eq!(via.branch(), Some(&b"z9hG4bKx"[..]));
        // rport None leaves a bare ;rport alone.
        let out = m.edit().set_via_received(b"2001:db8::7", None).finish();
        assert_eq!(
            &out[..],
            &replace(r, "received=[2001:db8::1]", "received=2001:db8::7")[..]
        );
    }

    #[test]
    fn set_body_fixes_lengths() {
        let m = msg(REQ);
        let out = m
            .edit()
            .set_body(None, b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n")
            .finish();
        let m2 = Message::parse(out.clone()).unwrap();
        assert_eq!(m2.body(), b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n");
        assert_eq!(m2.content_length(), Some(31));
        let mut want = replace(REQ, "l: 4\r\n", "l: 31\r\n");
        want.truncate(want.len() - 4);
        want.extend_from_slice(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n");
        assert_eq!(&out[..], &want[..]);
        // Empty body without type: Content-Type dropped, Content-Length 0.
        let out = m.edit().set_body(None, b"").finish();
        let m3 = Message::parse(out).unwrap();
        assert_eq!(m3.content_length(), Some(0));
        assert_eq!(m3.header(HeaderName::ContentType), None);
        assert_eq!(m3.body(), b"");
        // No Content-Length at all: inserted.
        let r = b"MESSAGE sip:u@h SIP/2.0\r\nVia: SIP/2.0/UDP a\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:u@h>\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\n\r\nold";
        let m = msg(r);
        let out = m.edit().set_body(Some(b"text/plain"), b"hello").finish();
        let want = b"MESSAGE sip:u@h SIP/2.0\r\nVia: SIP/2.0/UDP a\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:u@h>\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello";
        assert_eq!(&out[..], &want[..]);
    }

    #[test]
    fn combined_proxy_edits() {
        let m = msg(REQ);
        let out = m
            .edit()
            .push_via(b"SIP/2.0/UDP edge;branch=z9hG4bKe")
            .set_max_forwards(69)
            .add_record_route(b"<sip:edge;lr>")
            .pop_route()
            .finish();
        let m2 = Message::parse(out.clone()).unwrap();
        assert_eq!(m2.top_via().unwrap().host(), "edge");
        assert_eq!(m2.max_forwards(), Some(69));
        assert_eq!(m2.record_routes().next().unwrap().uri().host(), b"edge");
        assert_eq!(m2.routes().next().unwrap().uri().host(), b"p2.example.com");
        assert_eq!(m2.header_by_name("X-Keep"), Some(&b"untouched  value"[..]));
        assert_eq!(m2.body(), b"v=0\n");
    }

    #[test]
    fn error_response_from_raw_request() {
        let raw = b"INVITE sip:u@h SIP/7.0\r\nv: SIP/2.0/UDP a;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP b\r\nTo: <sip:u@h>\r\nf: <sip:a@h>;tag=1\r\ni: abc\r\nCSeq: 1 INVITE\r\nX: y\r\n\r\nbody";
        let err = Message::parse(Bytes::from_static(raw)).unwrap_err();
        let (code, reason) = err.response().unwrap();
        let r = build_error_response(raw, code, reason, Some(b"s1")).unwrap();
        let want = b"SIP/2.0 505 Version Not Supported\r\n\
Via: SIP/2.0/UDP a;branch=z9hG4bK1\r\n\
Via: SIP/2.0/UDP b\r\n\
From: <sip:a@h>;tag=1\r\n\
To: <sip:u@h>;tag=s1\r\n\
Call-ID: abc\r\n\
CSeq: 1 INVITE\r\n\
Content-Length: 0\r\n\r\n";
        assert_eq!(&r[..], &want[..]);
        assert_eq!(Message::parse(r).unwrap().status(), Some(505));
        assert_eq!(
            build_error_response(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", 400, "x", None),
            None
        );
        assert_eq!(
            build_error_response(b"INVITE x SIP/2.0\r\nTo: x\r\n\r\n", 400, "x", None),
            None
        );
        assert_eq!(build_error_response(b"", 400, "x", None), None);
        assert_eq!(
            build_error_response(b"INVITE x SIP/2.0\r\nVia: a\rb\r\n\r\n", 400, "x", None),
            None
        );
    }

    #[test]
    fn digits_render() {
        let mut b = [0u8; 20];
        assert_eq!(digits(0, &mut b), b"0");
        assert_eq!(digits(u64::MAX, &mut b), b"18446744073709551615");
    }

    #[test]
    fn response_building() {
        let m = msg(REQ);
        let r = build_response(
            &m,
            486,
            "Busy Here",
            Some(b"edge1"),
            &[("Retry-After", b"30")],
        );
        let want = b"SIP/2.0 486 Busy Here\r\n\
Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bK1, SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK0;rport\r\n\
Via: SIP/2.0/TCP old.example.com;branch=z9hG4bKold\r\n\
From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n\
To: Bob <sip:bob@biloxi.com>;tag=edge1\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
Retry-After: 30\r\n\
Content-Length: 0\r\n\r\n";
        assert_eq!(&r[..], &want[..]);
        let p = Message::parse(r).unwrap();
        assert_eq!(p.status(), Some(486));
        assert_eq!(p.vias().count(), 3);
        // To already tagged: left alone; 100 Trying without tag.
        let tagged = replace(
            REQ,
            "To: Bob <sip:bob@biloxi.com>",
            "To: Bob <sip:bob@biloxi.com>;tag=x",
        );
        let r = build_response(&msg(&tagged), 200, "OK", Some(b"y"), &[]);
        assert!(r.windows(6).any(|w| w == b"tag=x\r"));
        assert!(!r.windows(5).any(|w| w == b"tag=y"));
        let r = build_response(&m, 100, "Trying", None, &[]);
        assert!(r
            .windows(30)
            .any(|w| w == b"To: Bob <sip:bob@biloxi.com>\r\n"));
    }

    #[test]
    fn pop_routes_removes_entries_across_lines() {
        let raw = "BYE sip:b@h SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nRoute: <sip:p1;lr>\r\nRoute: <sip:p2;lr>, <sip:p3;lr>\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
        let m = Message::parse(Bytes::from(raw)).unwrap();
        let two = m.edit().pop_routes(2).finish();
        let t = String::from_utf8(two.to_vec()).unwrap();
        assert!(
            !t.contains("p1") && !t.contains("p2") && t.contains("Route: <sip:p3;lr>"),
            "{t}"
        );
        let all = m.edit().pop_routes(5).finish();
        assert!(!String::from_utf8(all.to_vec()).unwrap().contains("Route"));
        let none = m.edit().pop_routes(0).finish();
        assert_eq!(none, m.as_bytes());
    }
}
