//! Zero-copy SIP messages (RFC 3261 §7, §20, §25; RFC 4475; RFC 5118).
//!
//! # Design
//!
//! * **One buffer plus offsets.** A [`Message`] is one [`bytes::Bytes`] and
//!   a small index of `u32` ranges: the start line, one entry per header
//!   field (name range, trimmed value range, whole-line range and canonical
//!   [`HeaderName`]) and the body. [`Message::parse`] makes one pass over the
//!   header section (memchr for line ends), validates what a proxy relies on
//!   (start line, Content-Length, CSeq, Via, From/To/Contact/Route syntax,
//!   mandatory headers) and allocates only the header-index `Vec`.
//! * **Lazy, borrowed views.** [`Via`], [`Uri`], [`NameAddr`], [`CSeq`] are
//!   built on demand from the stored ranges and borrow the buffer; nothing
//!   is copied or decoded until asked. The views that validation had to
//!   parse anyway (Request-URI, top Via, From, To) are kept as offsets, so
//!   the hot accessors rebuild them without parsing again. Unknown methods
//!   and headers are kept untouched, folding is left in values as received.
//! * **Edits are splices.** [`Editor`] records insertions/replacements at
//!   offsets of the original buffer (like Kamailio "lumps") and
//!   [`Editor::finish`] writes the result in one allocation of the exact
//!   size: every byte not touched goes out exactly as it came in.
//! * **Framing.** [`Message::parse`] is the datagram (UDP) entry point;
//!   [`StreamFramer`] cuts TCP/TLS streams strictly by Content-Length
//!   (RFC 3261 §18.3) and reports RFC 5626 keepalives.
//! * **Errors say what goes on the wire.** [`ParseError::response`] gives the
//!   status to answer (400/413/501/505) or `None` to drop silently
//!   (responses, garbage without Via); [`build_error_response`] writes that
//!   answer from the raw bytes of the refused request.
//!
//! Nothing here panics on network data: all slicing is checked.

mod addr;
mod editor;
mod framer;
mod grammar;
mod message;
#[cfg(test)]
mod proptests;
mod status;
mod uri;
mod via;

pub use addr::NameAddr;
pub use editor::{build_error_response, build_response, Editor};
pub use framer::{Frame, FramingError, StreamFramer, DEFAULT_MAX_MESSAGE};
pub use message::{CSeq, HeaderField, Message};
pub use status::reason_phrase;
pub use uri::{Scheme, Uri};
pub use via::Via;

use bytes::Bytes;

/// Request method. Methods are case-sensitive (RFC 3261 §7.1): `invite` is
/// an unknown method, kept as [`Method::Other`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Prack,
    Update,
    Info,
    Refer,
    Notify,
    Subscribe,
    Message,
    Publish,
    Other(Bytes),
}

impl Method {
    /// Known method for `b`, if any.
    fn known(b: &[u8]) -> Option<Method> {
        Some(match b {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"OPTIONS" => Method::Options,
            b"REGISTER" => Method::Register,
            b"PRACK" => Method::Prack,
            b"UPDATE" => Method::Update,
            b"INFO" => Method::Info,
            b"REFER" => Method::Refer,
            b"NOTIFY" => Method::Notify,
            b"SUBSCRIBE" => Method::Subscribe,
            b"MESSAGE" => Method::Message,
            b"PUBLISH" => Method::Publish,
            _ => return None,
        })
    }

    /// Case-sensitive lookup; unknown tokens are copied into `Other`.
    pub fn from_bytes(b: &[u8]) -> Method {
        Method::known(b).unwrap_or_else(|| Method::Other(Bytes::copy_from_slice(b)))
    }

    /// Like [`Method::from_bytes`] but an unknown method shares `buf`
    /// (no copy): `range` must lie inside `buf`.
    pub(crate) fn from_shared(buf: &Bytes, start: usize, end: usize) -> Method {
        match buf.get(start..end) {
            Some(b) => Method::known(b).unwrap_or_else(|| Method::Other(buf.slice(start..end))),
            None => Method::Other(Bytes::new()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Info => "INFO",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Subscribe => "SUBSCRIBE",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(b) => std::str::from_utf8(b).unwrap_or(""),
        }
    }

    /// The method as bytes (works for non-UTF-8 `Other` too).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Method::Other(b) => b,
            m => m.as_str().as_bytes(),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

/// Header fields the proxy looks at; everything else is `Other` (use
/// [`Message::header_by_name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    ContentLength,
    ContentType,
    Contact,
    Route,
    RecordRoute,
    Require,
    ProxyRequire,
    Supported,
    Unsupported,
    Allow,
    Accept,
    Expires,
    Reason,
    Warning,
    RetryAfter,
    PAssertedIdentity,
    Server,
    UserAgent,
    Other,
}

/// Compact forms of RFC 3261 §7.3.3 and later RFCs (IANA registry):
/// the long name for a one-letter name, if any.
pub(crate) fn expand_compact(name: &[u8]) -> Option<&'static [u8]> {
    let [c] = name else { return None };
    Some(match c.to_ascii_lowercase() {
        b'i' => b"Call-ID",
        b'm' => b"Contact",
        b'e' => b"Content-Encoding",
        b'l' => b"Content-Length",
        b'c' => b"Content-Type",
        b'f' => b"From",
        b's' => b"Subject",
        b'k' => b"Supported",
        b't' => b"To",
        b'v' => b"Via",
        b'o' => b"Event",
        b'u' => b"Allow-Events",
        b'r' => b"Refer-To",
        b'b' => b"Referred-By",
        b'x' => b"Session-Expires",
        b'a' => b"Accept-Contact",
        b'j' => b"Reject-Contact",
        b'd' => b"Request-Disposition",
        b'y' => b"Identity",
        b'n' => b"Identity-Info",
        _ => return None,
    })
}

/// Header names compare equal case-insensitively, compact == long form.
pub(crate) fn names_equal(a: &[u8], b: &[u8]) -> bool {
    let a = expand_compact(a).unwrap_or(a);
    let b = expand_compact(b).unwrap_or(b);
    a.eq_ignore_ascii_case(b)
}

impl HeaderName {
    #[cfg(test)]
    const ALL: [HeaderName; 24] = [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
        HeaderName::MaxForwards,
        HeaderName::ContentLength,
        HeaderName::ContentType,
        HeaderName::Contact,
        HeaderName::Route,
        HeaderName::RecordRoute,
        HeaderName::Require,
        HeaderName::ProxyRequire,
        HeaderName::Supported,
        HeaderName::Unsupported,
        HeaderName::Allow,
        HeaderName::Accept,
        HeaderName::Expires,
        HeaderName::Reason,
        HeaderName::Warning,
        HeaderName::RetryAfter,
        HeaderName::PAssertedIdentity,
        HeaderName::Server,
        HeaderName::UserAgent,
    ];

    /// Case-insensitive, compact forms included (`v` → Via, `i` → Call-ID…).
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        use HeaderName as H;
        let Some(&first) = name.first() else {
            return H::Other;
        };
        let f = first.to_ascii_lowercase();
        if name.len() == 1 {
            return match f {
                b'v' => H::Via,
                b'f' => H::From,
                b't' => H::To,
                b'i' => H::CallId,
                b'm' => H::Contact,
                b'l' => H::ContentLength,
                b'c' => H::ContentType,
                b'k' => H::Supported,
                _ => H::Other,
            };
        }
        // Dispatch on (length, first letter): at most two candidates.
        let cands: &[HeaderName] = match (name.len(), f) {
            (3, b'v') => &[H::Via],
            (4, b'f') => &[H::From],
            (2, b't') => &[H::To],
            (7, b'c') => &[H::CallId, H::Contact],
            (4, b'c') => &[H::CSeq],
            (12, b'm') => &[H::MaxForwards],
            (14, b'c') => &[H::ContentLength],
            (12, b'c') => &[H::ContentType],
            (5, b'r') => &[H::Route],
            (12, b'r') => &[H::RecordRoute],
            (7, b'r') => &[H::Require],
            (13, b'p') => &[H::ProxyRequire],
            (9, b's') => &[H::Supported],
            (11, b'u') => &[H::Unsupported],
            (5, b'a') => &[H::Allow],
            (6, b'a') => &[H::Accept],
            (7, b'e') => &[H::Expires],
            (6, b'r') => &[H::Reason],
            (7, b'w') => &[H::Warning],
            (11, b'r') => &[H::RetryAfter],
            (19, b'p') => &[H::PAssertedIdentity],
            (6, b's') => &[H::Server],
            (10, b'u') => &[H::UserAgent],
            _ => &[],
        };
        cands
            .iter()
            .copied()
            .find(|h| h.as_str().as_bytes().eq_ignore_ascii_case(name))
            .unwrap_or(H::Other)
    }

    /// Canonical spelling (`"Call-ID"`, `"CSeq"`, `"WWW-…"`); `""` for `Other`.
    pub fn as_str(&self) -> &'static str {
        match self {
            HeaderName::Via => "Via",
            HeaderName::From => "From",
            HeaderName::To => "To",
            HeaderName::CallId => "Call-ID",
            HeaderName::CSeq => "CSeq",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::Contact => "Contact",
            HeaderName::Route => "Route",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::Require => "Require",
            HeaderName::ProxyRequire => "Proxy-Require",
            HeaderName::Supported => "Supported",
            HeaderName::Unsupported => "Unsupported",
            HeaderName::Allow => "Allow",
            HeaderName::Accept => "Accept",
            HeaderName::Expires => "Expires",
            HeaderName::Reason => "Reason",
            HeaderName::Warning => "Warning",
            HeaderName::RetryAfter => "Retry-After",
            HeaderName::PAssertedIdentity => "P-Asserted-Identity",
            HeaderName::Server => "Server",
            HeaderName::UserAgent => "User-Agent",
            HeaderName::Other => "",
        }
    }

    /// Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1),
    /// so that several values may share one line.
    pub fn is_list(&self) -> bool {
        matches!(
            self,
            HeaderName::Via
                | HeaderName::Contact
                | HeaderName::Route
                | HeaderName::RecordRoute
                | HeaderName::Require
                | HeaderName::ProxyRequire
                | HeaderName::Supported
                | HeaderName::Unsupported
                | HeaderName::Allow
                | HeaderName::Accept
                | HeaderName::Reason
                | HeaderName::Warning
                | HeaderName::PAssertedIdentity
        )
    }
}

/// What was wrong with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("empty message")]
    Empty,
    #[error("header section not terminated by an empty line")]
    Incomplete,
    #[error("bare CR or LF where CRLF is required")]
    BadLineEnd,
    #[error("malformed start line")]
    BadStartLine,
    #[error("invalid method token")]
    BadMethod,
    #[error("malformed Request-URI")]
    BadRequestUri,
    #[error("escaped headers in Request-URI")]
    RequestUriHeaders,
    #[error("SIP version not supported")]
    VersionNotSupported,
    #[error("bad status code")]
    BadStatusCode,
    #[error("malformed header name")]
    BadHeaderName,
    #[error("header line without colon")]
    MissingColon,
    #[error("continuation line without a header")]
    OrphanContinuation,
    #[error("bad Content-Length")]
    BadContentLength,
    #[error("multiple differing Content-Length values")]
    MultipleContentLength,
    #[error("body shorter than Content-Length")]
    BodyTruncated,
    #[error("bad CSeq")]
    BadCSeq,
    #[error("CSeq method does not match the request method")]
    CSeqMismatch,
    #[error("unknown method and CSeq method mismatch")]
    UnknownMethodMismatch,
    #[error("bad Max-Forwards")]
    BadMaxForwards,
    #[error("bad Call-ID")]
    BadCallId,
    #[error("bad Via")]
    BadVia,
    #[error("unbalanced quotes")]
    UnbalancedQuotes,
    #[error("bad display name")]
    BadDisplayName,
    #[error("bad name-addr")]
    BadNameAddr,
    #[error("bad URI")]
    BadUri,
    #[error("missing mandatory header {}", .0.as_str())]
    MissingHeader(HeaderName),
    #[error("several values of single-value header {}", .0.as_str())]
    DuplicateHeader(HeaderName),
    #[error("message too large")]
    TooLarge,
}

/// A refused message: what was wrong, and enough context to decide the
/// answer ([`ParseError::response`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct ParseError {
    kind: ParseErrorKind,
    request: bool,
    has_via: bool,
}

impl ParseError {
    pub(crate) fn new(kind: ParseErrorKind) -> Self {
        ParseError {
            kind,
            request: false,
            has_via: false,
        }
    }

    pub(crate) fn in_message(kind: ParseErrorKind, raw: &[u8]) -> Self {
        let request = !raw.is_empty()
            && !raw
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"));
        ParseError {
            kind,
            request,
            has_via: request && message::scrape_has_via(raw),
        }
    }

    pub fn kind(&self) -> ParseErrorKind {
        self.kind
    }

    /// True when the refused message looked like a request.
    pub fn is_request(&self) -> bool {
        self.request
    }

    /// The response to put on the wire, or `None` to drop silently: never
    /// answer a response (RFC 4475 bigcode, scalarlg), and never answer
    /// something without a Via to send it back along.
    pub fn response(&self) -> Option<(u16, &'static str)> {
        use ParseErrorKind as K;
        if !self.request || !self.has_via {
            return None;
        }
        Some(match self.kind {
            K::VersionNotSupported => (505, "Version Not Supported"),
            K::UnknownMethodMismatch => (501, "Not Implemented"),
            K::TooLarge => (413, "Request Entity Too Large"),
            K::Empty => return None,
            K::Incomplete => (400, "Bad Request - Incomplete Header Section"),
            K::BadLineEnd => (400, "Bad Request - Bad Line End"),
            K::BadStartLine => (400, "Bad Request - Malformed Request-Line"),
            K::BadMethod => (400, "Bad Request - Bad Method"),
            K::BadRequestUri => (400, "Bad Request - Malformed Request-URI"),
            K::RequestUriHeaders => (400, "Bad Request - Headers in Request-URI"),
            K::BadStatusCode => (400, "Bad Request - Bad Status Code"),
            K::BadHeaderName => (400, "Bad Request - Bad Header Name"),
            K::MissingColon => (400, "Bad Request - Header Without Colon"),
            K::OrphanContinuation => (400, "Bad Request - Bad Header Folding"),
            K::BadContentLength => (400, "Bad Request - Bad Content-Length"),
            K::MultipleContentLength => (400, "Bad Request - Multiple Content-Length"),
            K::BodyTruncated => (400, "Bad Request - Body Shorter Than Content-Length"),
            K::BadCSeq => (400, "Bad Request - Bad CSeq"),
            K::CSeqMismatch => (400, "Bad Request - CSeq Method Mismatch"),
            K::BadMaxForwards => (400, "Bad Request - Bad Max-Forwards"),
            K::BadCallId => (400, "Bad Request - Bad Call-ID"),
            K::BadVia => (400, "Bad Request - Bad Via"),
            K::UnbalancedQuotes => (400, "Bad Request - Unbalanced Quotes"),
            K::BadDisplayName => (400, "Bad Request - Bad Display Name"),
            K::BadNameAddr => (400, "Bad Request - Bad Address"),
            K::BadUri => (400, "Bad Request - Bad URI"),
            K::MissingHeader(h) => (
                400,
                match h {
                    HeaderName::Via => "Bad Request - Missing Via",
                    HeaderName::From => "Bad Request - Missing From",
                    HeaderName::To => "Bad Request - Missing To",
                    HeaderName::CallId => "Bad Request - Missing Call-ID",
                    HeaderName::CSeq => "Bad Request - Missing CSeq",
                    _ => "Bad Request - Missing Header",
                },
            ),
            K::DuplicateHeader(h) => (
                400,
                match h {
                    HeaderName::From => "Bad Request - Multiple From",
                    HeaderName::To => "Bad Request - Multiple To",
                    HeaderName::CallId => "Bad Request - Multiple Call-ID",
                    HeaderName::CSeq => "Bad Request - Multiple CSeq",
                    HeaderName::MaxForwards => "Bad Request - Multiple Max-Forwards",
                    _ => "Bad Request - Duplicate Header",
                },
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_case_sensitive() {
        assert_eq!(Method::from_bytes(b"INVITE"), Method::Invite);
        assert_eq!(Method::from_bytes(b"PUBLISH").as_str(), "PUBLISH");
        let m = Method::from_bytes(b"invite");
        assert_eq!(m, Method::Other(Bytes::from_static(b"invite")));
        assert_eq!(m.as_str(), "invite");
        assert_eq!(Method::from_bytes(b"RE%47IST%45R").as_str(), "RE%47IST%45R");
        assert_eq!(Method::from_bytes(&[0xff]).as_str(), "");
        assert_eq!(Method::from_bytes(&[0xff]).as_bytes(), &[0xff]);
        assert_eq!(Method::Bye.to_string(), "BYE");
        let buf = Bytes::from_static(b"FOO x");
        assert_eq!(Method::from_shared(&buf, 0, 3).as_str(), "FOO");
        assert_eq!(
            Method::from_shared(&buf, 0, 3).as_bytes().as_ptr(),
            buf.as_ptr()
        );
        assert_eq!(
            Method::from_shared(&buf, 3, 99),
            Method::Other(Bytes::new())
        );
    }

    #[test]
    fn header_names_compact_and_case() {
        assert_eq!(HeaderName::from_bytes(b"v"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"VIA"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"i"), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(b"call-id"), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(b"m"), HeaderName::Contact);
        assert_eq!(HeaderName::from_bytes(b"L"), HeaderName::ContentLength);
        assert_eq!(HeaderName::from_bytes(b"c"), HeaderName::ContentType);
        assert_eq!(HeaderName::from_bytes(b"f"), HeaderName::From);
        assert_eq!(HeaderName::from_bytes(b"T"), HeaderName::To);
        assert_eq!(HeaderName::from_bytes(b"k"), HeaderName::Supported);
        assert_eq!(HeaderName::from_bytes(b"s"), HeaderName::Other);
        assert_eq!(
            HeaderName::from_bytes(b"p-asserted-identity"),
            HeaderName::PAssertedIdentity
        );
        assert_eq!(HeaderName::from_bytes(b"cseq"), HeaderName::CSeq);
        assert_eq!(HeaderName::from_bytes(b"C%6Fntact"), HeaderName::Other);
        assert_eq!(HeaderName::CallId.as_str(), "Call-ID");
        assert_eq!(HeaderName::CSeq.as_str(), "CSeq");
        for h in HeaderName::ALL {
            assert_eq!(HeaderName::from_bytes(h.as_str().as_bytes()), h);
        }
        assert!(HeaderName::Via.is_list());
        assert!(!HeaderName::From.is_list());
    }

    #[test]
    fn compact_expansion() {
        assert!(names_equal(b"s", b"Subject"));
        assert!(names_equal(b"SUBJECT", b"S"));
        assert!(names_equal(b"x", b"session-expires"));
        assert!(!names_equal(b"q", b"Subject"));
    }

    #[test]
    fn error_responses() {
        let req = b"OPTIONS sip:a@b SIP/7.0\r\nVia: SIP/7.0/UDP h\r\n\r\n";
        let e = ParseError::in_message(ParseErrorKind::VersionNotSupported, req);
        assert_eq!(e.response(), Some((505, "Version Not Supported")));
        let e =
            ParseError::in_message(ParseErrorKind::BadCSeq, b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n");
        assert_eq!(e.response(), None);
        let e = ParseError::in_message(
            ParseErrorKind::BadCSeq,
            b"INVITE x SIP/2.0\r\nTo: x\r\n\r\n",
        );
        assert_eq!(e.response(), None, "no Via: nowhere to answer");
        let e = ParseError::in_message(
            ParseErrorKind::MissingHeader(HeaderName::CallId),
            b"INVITE x SIP/2.0\r\nv: x\r\n\r\n",
        );
        assert_eq!(e.response(), Some((400, "Bad Request - Missing Call-ID")));
        assert!(e.to_string().contains("Call-ID"));
    }
}
