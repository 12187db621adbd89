//! Line-level SDP parse (RFC 4566 §5): every line is indexed by byte range so
//! that a rewrite can copy every line it does not change byte-exactly.

use bytes::Bytes;

use super::attributes::split_attr;
use super::media::{absorb_media_attr, parse_m_line};
use super::{ConnAddr, Connection, Direction, Ice, Media, Origin, SdpError};

/// Line terminator of one line as it came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Eol {
    /// Last line, unterminated.
    None,
    Lf,
    CrLf,
}

impl Eol {
    pub(crate) fn bytes(self) -> &'static [u8] {
        match self {
            Eol::None => b"",
            Eol::Lf => b"\n",
            Eol::CrLf => b"\r\n",
        }
    }
}

/// One line: `raw[start..end]` is the text without its terminator.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Line {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) eol: Eol,
}

/// A parsed SDP body.
#[derive(Clone, Debug)]
pub struct Sdp {
    pub(crate) raw: Bytes,
    pub(crate) lines: Vec<Line>,
    pub(crate) session_end: usize,
    pub(crate) origin_line: Option<usize>,
    pub(crate) conn_line: Option<usize>,
    origin: Option<Origin>,
    connection: Option<Connection>,
    direction: Option<Direction>,
    ice: Ice,
    media: Vec<Media>,
}

fn text(raw: &[u8], line: usize) -> Result<&str, SdpError> {
    std::str::from_utf8(raw).map_err(|_| SdpError::MalformedLine { line })
}

impl Sdp {
    /// Parses an SDP body, copying it.
    pub fn parse(body: &[u8]) -> Result<Sdp, SdpError> {
        Sdp::from_bytes(Bytes::copy_from_slice(body))
    }

    /// Parses an SDP body held in `Bytes` without copying it.
    pub fn from_bytes(raw: Bytes) -> Result<Sdp, SdpError> {
        let lines = split_lines(&raw);
        if lines.iter().all(|l| l.start == l.end) {
            return Err(SdpError::Empty);
        }
        let mut sdp = Sdp {
            raw: raw.clone(),
            session_end: lines.len(),
            lines,
            origin_line: None,
            conn_line: None,
            origin: None,
            connection: None,
            direction: None,
            ice: Ice::default(),
            media: Vec::new(),
        };
        let mut seen_version = false;
        for idx in 0..sdp.lines.len() {
            let l = sdp.lines[idx];
            let lineno = idx + 1;
            let bytes = raw.get(l.start..l.end).unwrap_or_default();
            if bytes.is_empty() {
                // Stray empty lines (often a trailing CRLF CRLF) are kept.
                continue;
            }
            let (kind, value) = match bytes {
                [k, b'=', rest @ ..] if k.is_ascii_alphabetic() => (*k, rest),
                _ => return Err(SdpError::MalformedLine { line: lineno }),
            };
            if !seen_version {
                // RFC 4566 §5: the description starts with v=0.
                if kind != b'v' || value != b"0" {
                    return Err(SdpError::MissingVersion);
                }
                seen_version = true;
                continue;
            }
            match kind {
                b'm' => {
                    let v = text(value, lineno)?;
                    let media =
                        parse_m_line(v, idx).ok_or(SdpError::InvalidMedia { line: lineno })?;
                    if let Some(prev) = sdp.media.last_mut() {
                        prev.end = idx;
                    } else {
                        sdp.session_end = idx;
                    }
                    sdp.media.push(media);
                }
                b'c' => {
                    let v = text(value, lineno)?;
                    let c =
                        Connection::parse(v).ok_or(SdpError::InvalidConnection { line: lineno })?;
                    match sdp.media.last_mut() {
                        Some(m) => {
                            m.connection = Some(c);
                            m.conn_line = Some(idx);
                        }
                        None => {
                            sdp.connection = Some(c);
                            sdp.conn_line = Some(idx);
                        }
                    }
                }
                b'o' if sdp.media.is_empty() => {
                    let v = text(value, lineno)?;
                    sdp.origin = Some(
                        Origin::parse(v).map_err(|_| SdpError::InvalidOrigin { line: lineno })?,
                    );
                    sdp.origin_line = Some(idx);
                }
                b'a' => {
                    // Attributes we do not interpret may be in any charset
                    // (RFC 4566 §5.13 a=charset); only UTF-8 ones are indexed.
                    let Ok(v) = std::str::from_utf8(value) else {
                        continue;
                    };
                    let (name, val) = split_attr(v);
                    match sdp.media.last_mut() {
                        Some(m) => absorb_media_attr(m, name, val),
                        None => {
                            if let Some(d) = Direction::from_attr(name) {
                                sdp.direction = Some(d);
                            } else {
                                sdp.ice.absorb(name, val);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(last) = sdp.media.last_mut() {
            last.end = sdp.lines.len();
        }
        Ok(sdp)
    }

    /// The body bytes as parsed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The body rebuilt from the line index (every line with its own line
    /// end): equal to the input for any body that parsed.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.raw.len());
        for l in &self.lines {
            out.extend_from_slice(self.raw.get(l.start..l.end).unwrap_or_default());
            out.extend_from_slice(l.eol.bytes());
        }
        out
    }

    /// The body as `Bytes`.
    pub fn bytes(&self) -> &Bytes {
        &self.raw
    }

    /// True if the body used bare LF line ends (then lines we add use LF too).
    pub fn uses_lf(&self) -> bool {
        self.default_eol() == Eol::Lf
    }

    pub(crate) fn default_eol(&self) -> Eol {
        match self.lines.iter().map(|l| l.eol).find(|e| *e != Eol::None) {
            Some(Eol::Lf) => Eol::Lf,
            _ => Eol::CrLf,
        }
    }

    pub(crate) fn line_bytes(&self, idx: usize) -> &[u8] {
        match self.lines.get(idx) {
            Some(l) => self.raw.get(l.start..l.end).unwrap_or_default(),
            None => &[],
        }
    }

    /// The `o=` line.
    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    /// The session-level `c=`.
    pub fn connection(&self) -> Option<&Connection> {
        self.connection.as_ref()
    }

    /// The session-level direction attribute, if any.
    pub fn direction_attr(&self) -> Option<Direction> {
        self.direction
    }

    /// Session-level ICE attributes.
    pub fn ice(&self) -> &Ice {
        &self.ice
    }

    /// The media descriptions in order.
    pub fn media(&self) -> &[Media] {
        &self.media
    }

    /// The connection that applies to media `index`: its own `c=`, else the
    /// session's (RFC 4566 §5.7).
    pub fn media_connection(&self, index: usize) -> Option<&Connection> {
        let m = self.media.get(index)?;
        m.connection.as_ref().or(self.connection.as_ref())
    }

    /// The direction that applies to media `index`: media level, else session
    /// level, else sendrecv (RFC 3264 §5.1).
    pub fn media_direction(&self, index: usize) -> Direction {
        self.media
            .get(index)
            .and_then(Media::direction_attr)
            .or(self.direction)
            .unwrap_or(Direction::SendRecv)
    }

    /// True if media `index` is on hold as this SDP's author describes it:
    /// sendonly/inactive, or the RFC 2543 `c=0.0.0.0` (RFC 3264 §8.4).
    pub fn media_on_hold(&self, index: usize) -> bool {
        let dir = self.media_direction(index);
        matches!(dir, Direction::SendOnly | Direction::Inactive)
            || self
                .media_connection(index)
                .is_some_and(Connection::is_hold)
    }

    /// RTCP port and address of media `index` (RFC 3605 `a=rtcp`, else the
    /// RTP port + 1 of RFC 3550 §11, or the RTP port with rtcp-mux when the
    /// caller knows mux is in effect).
    pub fn media_rtcp(&self, index: usize) -> Option<(Option<ConnAddr>, u16)> {
        let m = self.media.get(index)?;
        let addr = self.media_connection(index).map(|c| c.address.clone());
        match m.rtcp() {
            Some(r) => Some((
                r.connection.as_ref().map(|c| c.address.clone()).or(addr),
                r.port,
            )),
            None => Some((addr, m.port().checked_add(1)?)),
        }
    }
}

fn split_lines(raw: &[u8]) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut start = 0usize;
    for nl in memchr::memchr_iter(b'\n', raw) {
        let (end, eol) = if nl > start && raw.get(nl - 1) == Some(&b'\r') {
            (nl - 1, Eol::CrLf)
        } else {
            (nl, Eol::Lf)
        };
        lines.push(Line { start, end, eol });
        start = nl + 1;
    }
    if start < raw.len() {
        lines.push(Line {
            start,
            end: raw.len(),
            eol: Eol::None,
        });
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::super::{AddrType, ConnAddr, Proto};
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    const OFFER: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com\r\n\
s=\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 97 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:97 iLBC/8000\r\n\
a=fmtp:97 mode=30\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=rtcp:53020 IN IP4 192.0.2.11\r\n\
a=sendonly\r\n\
m=video 0 RTP/AVP 31\r\n\
c=IN IP6 2001:db8::1\r\n";

    #[test]
    fn parses_session_and_media_lines() {
        let sdp = Sdp::parse(OFFER.as_bytes()).unwrap();
        let o = sdp.origin().unwrap();
        assert_eq!(o.username, "alice");
        assert_eq!(o.session_version, 2890844526);
        assert_eq!(o.address, "host.atlanta.example.com");
        assert_eq!(
            sdp.connection().unwrap().address,
            ConnAddr::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)))
        );
        assert_eq!(sdp.media().len(), 2);
        let a = &sdp.media()[0];
        assert_eq!(a.kind(), "audio");
        assert_eq!(a.port(), 49170);
        assert_eq!(a.proto(), &Proto::RtpAvp);
        assert_eq!(a.payload_types(), vec![0, 8, 97, 101]);
        assert_eq!(a.encoding(0), Some(("PCMU", 8000)));
        // PCMA has no rtpmap: the static table answers.
        assert_eq!(a.encoding(8), Some(("PCMA", 8000)));
        assert_eq!(a.encoding(97), Some(("iLBC", 8000)));
        assert_eq!(a.fmtp(97), Some("mode=30"));
        assert_eq!(a.fmtp(101), Some("0-15"));
        let rtcp = a.rtcp().unwrap();
        assert_eq!(rtcp.port, 53020);
        assert_eq!(
            sdp.media_rtcp(0),
            Some((Some(ConnAddr::Ip("192.0.2.11".parse().unwrap())), 53020))
        );
        assert_eq!(sdp.media_direction(0), Direction::SendOnly);
        assert!(sdp.media_on_hold(0));
        let v = &sdp.media()[1];
        assert!(v.is_rejected());
        assert_eq!(v.connection().unwrap().addr_type, AddrType::Ip6);
        assert_eq!(sdp.media_direction(1), Direction::SendRecv);
        assert_eq!(
            sdp.media_connection(1).unwrap().address,
            ConnAddr::Ip("2001:db8::1".parse().unwrap())
        );
    }

    #[test]
    fn lf_line_ends_and_missing_final_eol() {
        let body =
            "v=0\no=- 1 2 IN IP4 10.0.0.1\ns= \nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 0";
        let sdp = Sdp::parse(body.as_bytes()).unwrap();
        assert!(sdp.uses_lf());
        assert_eq!(sdp.media()[0].port(), 4000);
        assert_eq!(sdp.as_bytes(), body.as_bytes());
        assert_eq!(sdp.to_vec(), body.as_bytes());
        // RTCP defaults to RTP + 1 (RFC 3550 §11).
        assert_eq!(sdp.media_rtcp(0).unwrap().1, 4001);
    }

    #[test]
    fn hold_by_connection_address() {
        let body = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let sdp = Sdp::parse(body.as_bytes()).unwrap();
        assert!(sdp.connection().unwrap().is_hold());
        assert!(sdp.media_on_hold(0));
        assert_eq!(sdp.media_direction(0), Direction::SendRecv);
    }

    #[test]
    fn session_level_direction_is_the_default() {
        let body = "v=0\r\no=- 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\na=inactive\r\nm=audio 4000 RTP/AVP 0\r\nm=audio 4002 RTP/AVP 0\r\na=recvonly\r\n";
        let sdp = Sdp::parse(body.as_bytes()).unwrap();
        assert_eq!(sdp.direction_attr(), Some(Direction::Inactive));
        assert_eq!(sdp.media_direction(0), Direction::Inactive);
        assert_eq!(sdp.media_direction(1), Direction::RecvOnly);
    }

    #[test]
    fn malformed_input_is_rejected() {
        let cases: [(&str, SdpError); 8] = [
            ("", SdpError::Empty),
            ("\r\n\r\n", SdpError::Empty),
            ("o=- 1 1 IN IP4 1.2.3.4\r\n", SdpError::MissingVersion),
            ("v=1\r\n", SdpError::MissingVersion),
            ("v=0\r\nbogus\r\n", SdpError::MalformedLine { line: 2 }),
            (
                "v=0\r\nc=IN IP4\r\n",
                SdpError::InvalidConnection { line: 2 },
            ),
            (
                "v=0\r\nm=audio x RTP/AVP 0\r\n",
                SdpError::InvalidMedia { line: 2 },
            ),
            ("v=0\r\no=a b\r\n", SdpError::InvalidOrigin { line: 2 }),
        ];
        for (body, err) in cases {
            assert_eq!(Sdp::parse(body.as_bytes()).unwrap_err(), err, "{body:?}");
        }
        assert_eq!(
            Sdp::parse(b"v=0\r\nm=audio 1 RTP/AVP\r\n").unwrap_err(),
            SdpError::InvalidMedia { line: 2 }
        );
        assert_eq!(
            Sdp::parse(b"v=0\r\nc=IN IP4 a b\r\n").unwrap_err(),
            SdpError::InvalidConnection { line: 2 }
        );
        for bad in ["bad!host", "1.2.3.4/x", "1.2.3.4/"] {
            let body = format!("v=0\r\nc=IN IP4 {bad}\r\n");
            assert_eq!(
                Sdp::parse(body.as_bytes()).unwrap_err(),
                SdpError::InvalidConnection { line: 2 },
                "{bad}"
            );
        }
    }

    #[test]
    fn non_utf8_attribute_is_tolerated_and_kept() {
        let mut body = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\na=tool:\xff\xfe\r\nm=audio 5000 RTP/AVP 0\r\n".to_vec();
        let sdp = Sdp::parse(&body).unwrap();
        assert_eq!(sdp.to_vec(), body);
        // But a c= line that is not text is an error.
        body.extend_from_slice(b"c=IN IP4 \xff\r\n");
        assert!(Sdp::parse(&body).is_err());
    }

    #[test]
    fn multicast_connection_and_port_count() {
        let body = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 224.2.1.1/127/3\r\nt=0 0\r\nm=video 49170/2 RTP/AVP 31\r\n";
        let sdp = Sdp::parse(body.as_bytes()).unwrap();
        assert_eq!(
            sdp.connection().unwrap().multicast.as_deref(),
            Some("127/3")
        );
        assert_eq!(sdp.media()[0].port_count(), Some(2));
    }
}
