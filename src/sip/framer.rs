//! Stream framing for TCP/TLS (RFC 3261 §18.3: Content-Length is mandatory
//! on streams) with RFC 5626 §4.4.1 CRLF keepalives.

use bytes::{Buf, BytesMut};

use super::grammar::{is_ws, parse_u64, trim_lws};
use super::{HeaderName, Message, ParseError};

/// Default largest message accepted on a stream (64 KiB).
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;

/// One unit read from a stream.
// A frame is consumed right away; boxing the message would cost an
// allocation per frame for no benefit.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Frame {
    Message(Message),
    /// A CRLFCRLF ping (RFC 5626 §4.4.1): the caller answers with one CRLF.
    /// (A lone CRLF pong, or stray CRLFs before a message per RFC 3261 §7.5,
    /// are consumed silently and counted by [`StreamFramer::pongs`].)
    Keepalive,
}

/// Why a stream cannot go on. All but `Invalid` leave the stream out of
/// sync: the framer keeps returning the error and the caller closes the
/// connection (after a 400 if one can be built).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("message larger than the stream limit")]
    TooLarge,
    #[error("Content-Length missing on a stream transport")]
    MissingContentLength,
    #[error("bad or conflicting Content-Length")]
    BadContentLength,
    /// Framed correctly (and consumed) but refused by the parser.
    #[error("invalid message: {0}")]
    Invalid(#[from] ParseError),
}

impl FramingError {
    /// The response to send before closing, or `None` to just close.
    /// Framing errors can only be answered when the header section was read;
    /// the caller builds it from [`FramingError::Invalid`]'s parse error.
    pub fn response(&self) -> Option<(u16, &'static str)> {
        match self {
            FramingError::Invalid(e) => e.response(),
            FramingError::TooLarge => Some((513, "Message Too Large")),
            FramingError::MissingContentLength => {
                Some((400, "Bad Request - Missing Content-Length"))
            }
            FramingError::BadContentLength => Some((400, "Bad Request - Bad Content-Length")),
        }
    }
}

/// Incremental framer: `push` bytes as they arrive, then call `next_frame`
/// until it returns `Ok(None)`.
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    max: usize,
    /// How far the search for CRLFCRLF has already looked.
    scanned: usize,
    failed: Option<FramingError>,
    /// Header section of the message that could not be framed.
    rejected_head: Option<bytes::Bytes>,
    /// Size of the message being received, once its headers were read.
    pending_total: Option<usize>,
    pongs: u64,
}

impl Default for StreamFramer {
    fn default() -> Self {
        StreamFramer::new(DEFAULT_MAX_MESSAGE)
    }
}

enum Cl {
    Missing,
    Bad,
    Len(usize),
}

/// Content-Length from a complete header section (start line included).
fn content_length(head: &[u8]) -> Cl {
    let mut found: Option<u64> = None;
    let mut lines = head.split(|&c| c == b'\n').skip(1).peekable();
    while let Some(line) = lines.next() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || line.first().is_some_and(|&c| is_ws(c)) {
            continue;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = trim_lws(line.get(..colon).unwrap_or(&[]));
        if HeaderName::from_bytes(name) != HeaderName::ContentLength {
            continue;
        }
        let mut value: Vec<u8> = line.get(colon + 1..).unwrap_or(&[]).to_vec();
        while let Some(next) = lines.peek() {
            if next.first().is_some_and(|&c| is_ws(c)) {
                value.extend_from_slice(next.strip_suffix(b"\r").unwrap_or(next));
                lines.next();
            } else {
                break;
            }
        }
        let Some(n) = parse_u64(trim_lws(&value)) else {
            return Cl::Bad;
        };
        match found {
            Some(prev) if prev != n => return Cl::Bad,
            _ => found = Some(n),
        }
    }
    match found {
        None => Cl::Missing,
        Some(n) => usize::try_from(n).map_or(Cl::Bad, Cl::Len),
    }
}

fn to_frame(r: Option<Result<Message, ParseError>>) -> Result<Option<Frame>, FramingError> {
    match r {
        None => Ok(None),
        Some(Ok(m)) => Ok(Some(Frame::Message(m))),
        Some(Err(e)) => Err(FramingError::Invalid(e)),
    }
}

impl StreamFramer {
    pub fn new(max_message: usize) -> Self {
        StreamFramer {
            buf: BytesMut::new(),
            max: max_message,
            scanned: 0,
            failed: None,
            rejected_head: None,
            pending_total: None,
            pongs: 0,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_none() {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes buffered and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Is a message partly received (bytes buffered that are more than the start of a
    /// CRLF keepalive)? What a whole-message deadline applies to.
    pub fn in_message(&self) -> bool {
        !self.buf.is_empty() && !b"\r\n\r\n".starts_with(&self.buf)
    }

    /// Lone CRLFs (keepalive pongs, RFC 5626 §4.4.1) seen so far.
    pub fn pongs(&self) -> u64 {
        self.pongs
    }

    /// After an error: the bytes of the last refused message (its header
    /// section for framing errors, the whole frame for
    /// [`FramingError::Invalid`]), so that the caller can answer it with
    /// [`crate::sip::build_error_response`].
    pub fn rejected_head(&self) -> Option<&[u8]> {
        self.rejected_head.as_deref()
    }

    fn fail(&mut self, e: FramingError, head_len: usize) -> Result<Option<Frame>, FramingError> {
        self.failed = Some(e.clone());
        if head_len > 0 && head_len <= self.buf.len() {
            self.rejected_head = Some(self.buf.split_to(head_len).freeze());
        }
        self.buf.clear();
        Err(e)
    }

    /// Next complete frame: `Ok(None)` = wait for more data (incomplete
    /// headers, or a body shorter than Content-Length: RFC 4475 clerr on a
    /// stream); `Err` = see [`FramingError`].
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        // Keepalives and stray CRLFs between messages.
        loop {
            if self.buf.starts_with(b"\r\n\r\n") {
                self.buf.advance(4);
                self.scanned = 0;
                return Ok(Some(Frame::Keepalive));
            }
            if self.buf.starts_with(b"\r\n") {
                if b"\r\n\r\n".starts_with(&self.buf) {
                    return Ok(None); // maybe the first half of a ping
                }
                self.buf.advance(2);
                self.scanned = 0;
                self.pongs = self.pongs.saturating_add(1);
                continue;
            }
            if self.buf.as_ref() == b"\r" {
                return Ok(None);
            }
            break;
        }
        if let Some(total) = self.pending_total {
            return to_frame(self.take(total));
        }
        let from = self.scanned.saturating_sub(3);
        let Some(pos) = self
            .buf
            .get(from..)
            .and_then(|s| memchr::memmem::find(s, b"\r\n\r\n"))
        else {
            self.scanned = self.buf.len();
            if self.buf.len() > self.max {
                return self.fail(FramingError::TooLarge, 0);
            }
            return Ok(None);
        };
        let head_end = from + pos + 4;
        self.scanned = from + pos;
        let head = self.buf.get(..head_end).unwrap_or(&[]);
        let body_len = match content_length(head) {
            Cl::Missing => return self.fail(FramingError::MissingContentLength, head_end),
            Cl::Bad => return self.fail(FramingError::BadContentLength, head_end),
            Cl::Len(n) => n,
        };
        let Some(total) = head_end.checked_add(body_len) else {
            return self.fail(FramingError::TooLarge, head_end);
        };
        if total > self.max {
            return self.fail(FramingError::TooLarge, head_end);
        }
        self.pending_total = Some(total);
        to_frame(self.take(total))
    }

    /// Cuts the pending message once `total` bytes are buffered.
    fn take(&mut self, total: usize) -> Option<Result<Message, ParseError>> {
        if self.buf.len() < total {
            return None;
        }
        let frame = self.buf.split_to(total).freeze();
        self.scanned = 0;
        self.pending_total = None;
        let keep = frame.clone(); // shared: a reference-count increment
        let parsed = Message::parse(frame);
        if parsed.is_err() {
            self.rejected_head = Some(keep);
        }
        Some(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::ParseErrorKind;

    const OPT: &[u8] = b"OPTIONS sip:u@h SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:u@h>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 5\r\n\r\nhello";

    fn msg(f: Option<Frame>) -> Message {
        match f {
            Some(Frame::Message(m)) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn byte_by_byte() {
        let mut f = StreamFramer::default();
        for (i, b) in OPT.iter().enumerate() {
            f.push(std::slice::from_ref(b));
            let r = f.next_frame().unwrap();
            if i + 1 < OPT.len() {
                assert!(r.is_none(), "frame too early at {i}");
            } else {
                let m = msg(r);
                assert_eq!(m.as_bytes().as_ref(), OPT);
                assert_eq!(m.body(), b"hello");
            }
        }
        assert_eq!(f.buffered(), 0);
        assert!(f.next_frame().unwrap().is_none());
    }

    #[test]
    fn in_message_ignores_keepalive_bytes() {
        let mut f = StreamFramer::default();
        assert!(!f.in_message());
        f.push(b"\r\n");
        assert!(f.next_frame().unwrap().is_none());
        assert!(!f.in_message(), "half a ping is no message");
        f.push(b"\r\nOPT");
        assert!(matches!(f.next_frame().unwrap(), Some(Frame::Keepalive)));
        assert!(f.next_frame().unwrap().is_none());
        assert!(f.in_message());
    }

    #[test]
    fn two_messages_one_push_and_keepalives() {
        let mut f = StreamFramer::new(4096);
        let mut data = b"\r\n\r\n".to_vec();
        data.extend_from_slice(OPT);
        data.extend_from_slice(b"\r\n\r\n");
        data.extend_from_slice(OPT);
        f.push(&data);
        assert!(matches!(f.next_frame().unwrap(), Some(Frame::Keepalive)));
        assert_eq!(msg(f.next_frame().unwrap()).as_bytes().as_ref(), OPT);
        assert!(matches!(f.next_frame().unwrap(), Some(Frame::Keepalive)));
        assert_eq!(msg(f.next_frame().unwrap()).as_bytes().as_ref(), OPT);
        assert!(f.next_frame().unwrap().is_none());
    }

    #[test]
    fn lone_crlf_is_a_pong() {
        let mut f = StreamFramer::default();
        f.push(b"\r\n");
        assert!(f.next_frame().unwrap().is_none(), "could be half a ping");
        f.push(b"OPT");
        assert!(f.next_frame().unwrap().is_none());
        assert_eq!(f.pongs(), 1);
        f.push(OPT.get(3..).unwrap());
        assert_eq!(msg(f.next_frame().unwrap()).as_bytes().as_ref(), OPT);
    }

    #[test]
    fn body_split_waits() {
        let mut f = StreamFramer::default();
        f.push(OPT.get(..OPT.len() - 2).unwrap());
        assert!(f.next_frame().unwrap().is_none());
        f.push(OPT.get(OPT.len() - 2..).unwrap());
        assert!(f.next_frame().unwrap().is_some());
    }

    #[test]
    fn too_large() {
        let mut f = StreamFramer::new(64);
        f.push(&[b'A'; 65]);
        assert_eq!(f.next_frame().unwrap_err(), FramingError::TooLarge);
        assert_eq!(
            f.next_frame().unwrap_err(),
            FramingError::TooLarge,
            "sticky"
        );
        let mut f = StreamFramer::new(OPT.len() - 1);
        f.push(OPT.get(..OPT.len() - 5).unwrap());
        assert_eq!(f.next_frame().unwrap_err(), FramingError::TooLarge);
        let mut f = StreamFramer::new(100);
        f.push(b"OPTIONS sip:u@h SIP/2.0\r\nl: 18446744073709551615\r\n\r\n");
        assert_eq!(f.next_frame().unwrap_err(), FramingError::TooLarge);
        assert_eq!(
            FramingError::TooLarge.response(),
            Some((513, "Message Too Large"))
        );
    }

    #[test]
    fn content_length_rules() {
        let no_cl = b"OPTIONS sip:u@h SIP/2.0\r\nVia: SIP/2.0/TCP a\r\n\r\n";
        let mut f = StreamFramer::default();
        f.push(no_cl);
        assert_eq!(
            f.next_frame().unwrap_err(),
            FramingError::MissingContentLength
        );
        let mut f = StreamFramer::default();
        f.push(b"OPTIONS sip:u@h SIP/2.0\r\nContent-Length: -999\r\n\r\n");
        assert_eq!(f.next_frame().unwrap_err(), FramingError::BadContentLength);
        let mut f = StreamFramer::default();
        f.push(b"OPTIONS sip:u@h SIP/2.0\r\nContent-Length: 13\r\nl: 5\r\n\r\n");
        assert_eq!(f.next_frame().unwrap_err(), FramingError::BadContentLength);
        let mut f = StreamFramer::default();
        f.push(b"OPTIONS sip:u@h SIP/2.0\r\nContent-Length:\r\n 2\r\n\r\nab");
        // Folded Content-Length is read; the message itself lacks headers.
        match f.next_frame().unwrap_err() {
            FramingError::Invalid(e) => {
                assert_eq!(e.kind(), ParseErrorKind::MissingHeader(HeaderName::Via))
            }
            e => panic!("{e:?}"),
        }
        assert_eq!(
            f.rejected_head(),
            Some(&b"OPTIONS sip:u@h SIP/2.0\r\nContent-Length:\r\n 2\r\n\r\nab"[..])
        );
        // A parse error does not poison the stream.
        f.push(OPT);
        assert!(f.next_frame().unwrap().is_some());
    }
}
