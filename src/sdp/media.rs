//! One media description: the `m=` line (RFC 4566 §5.14) with its
//! transport protocol, and the media-level lines up to the next `m=`
//! (`c=`, `a=rtpmap`, `a=fmtp`, direction, `a=rtcp`, `a=rtcp-mux`,
//! `a=crypto`, ICE).

use super::{Connection, CryptoLine, Direction, Fmtp, Ice, RtcpAttr, Rtpmap};

/// The transport protocol of an m-line (RFC 4566 §5.14, RFC 3551, RFC 3711,
/// RFC 4585, RFC 5124, RFC 5764).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proto {
    /// `RTP/AVP`
    RtpAvp,
    /// `RTP/AVPF`
    RtpAvpf,
    /// `RTP/SAVP`
    RtpSavp,
    /// `RTP/SAVPF`
    RtpSavpf,
    /// `UDP/TLS/RTP/SAVP` (DTLS-SRTP, RFC 5764)
    UdpTlsRtpSavp,
    /// `UDP/TLS/RTP/SAVPF`
    UdpTlsRtpSavpf,
    /// Anything else (`udptl`, `TCP/MSRP` …), verbatim.
    Other(String),
}

impl Proto {
    /// Parses a proto token (case-insensitively for the RTP family).
    pub fn parse(s: &str) -> Proto {
        const KNOWN: [(&str, Proto); 6] = [
            ("RTP/AVP", Proto::RtpAvp),
            ("RTP/AVPF", Proto::RtpAvpf),
            ("RTP/SAVP", Proto::RtpSavp),
            ("RTP/SAVPF", Proto::RtpSavpf),
            ("UDP/TLS/RTP/SAVP", Proto::UdpTlsRtpSavp),
            ("UDP/TLS/RTP/SAVPF", Proto::UdpTlsRtpSavpf),
        ];
        for (name, p) in KNOWN {
            if s.eq_ignore_ascii_case(name) {
                return p;
            }
        }
        Proto::Other(s.to_owned())
    }

    /// The token.
    pub fn as_str(&self) -> &str {
        match self {
            Proto::RtpAvp => "RTP/AVP",
            Proto::RtpAvpf => "RTP/AVPF",
            Proto::RtpSavp => "RTP/SAVP",
            Proto::RtpSavpf => "RTP/SAVPF",
            Proto::UdpTlsRtpSavp => "UDP/TLS/RTP/SAVP",
            Proto::UdpTlsRtpSavpf => "UDP/TLS/RTP/SAVPF",
            Proto::Other(s) => s,
        }
    }

    /// An RTP profile: formats are payload types.
    pub fn is_rtp(&self) -> bool {
        !matches!(self, Proto::Other(_))
    }

    /// A secure profile (SAVP/SAVPF, SDES or DTLS keyed).
    pub fn is_secure(&self) -> bool {
        matches!(
            self,
            Proto::RtpSavp | Proto::RtpSavpf | Proto::UdpTlsRtpSavp | Proto::UdpTlsRtpSavpf
        )
    }

    /// An RTCP feedback profile (AVPF/SAVPF, RFC 4585).
    pub fn is_feedback(&self) -> bool {
        matches!(
            self,
            Proto::RtpAvpf | Proto::RtpSavpf | Proto::UdpTlsRtpSavpf
        )
    }

    /// DTLS-keyed (RFC 5764).
    pub fn is_dtls(&self) -> bool {
        matches!(self, Proto::UdpTlsRtpSavp | Proto::UdpTlsRtpSavpf)
    }
}

/// One media description (`m=` line and the lines up to the next `m=`).
#[derive(Clone, Debug)]
pub struct Media {
    pub(crate) line: usize,
    pub(crate) end: usize,
    pub(crate) conn_line: Option<usize>,
    kind: String,
    port: u16,
    port_count: Option<u16>,
    proto: Proto,
    formats: Vec<String>,
    pub(super) connection: Option<Connection>,
    rtpmaps: Vec<Rtpmap>,
    fmtps: Vec<Fmtp>,
    direction: Option<Direction>,
    rtcp: Option<RtcpAttr>,
    rtcp_mux: bool,
    crypto: Vec<CryptoLine>,
    crypto_lines: usize,
    ice: Ice,
}

/// Static RTP payload types of RFC 3551 §6 (Tables 4 and 5): encoding name,
/// clock rate, channels.
pub fn static_payload_type(pt: u8) -> Option<(&'static str, u32, u8)> {
    Some(match pt {
        0 => ("PCMU", 8000, 1),
        3 => ("GSM", 8000, 1),
        4 => ("G723", 8000, 1),
        5 => ("DVI4", 8000, 1),
        6 => ("DVI4", 16000, 1),
        7 => ("LPC", 8000, 1),
        8 => ("PCMA", 8000, 1),
        // G.722 is registered with an 8000 Hz RTP clock (RFC 3551 §4.5.2).
        9 => ("G722", 8000, 1),
        10 => ("L16", 44100, 2),
        11 => ("L16", 44100, 1),
        12 => ("QCELP", 8000, 1),
        13 => ("CN", 8000, 1),
        14 => ("MPA", 90000, 1),
        15 => ("G728", 8000, 1),
        16 => ("DVI4", 11025, 1),
        17 => ("DVI4", 22050, 1),
        18 => ("G729", 8000, 1),
        25 => ("CelB", 90000, 1),
        26 => ("JPEG", 90000, 1),
        28 => ("nv", 90000, 1),
        31 => ("H261", 90000, 1),
        32 => ("MPV", 90000, 1),
        33 => ("MP2T", 90000, 1),
        34 => ("H263", 90000, 1),
        _ => return None,
    })
}

impl Media {
    /// Media type (`audio`, `video`, `image`, `application` …).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// Port; 0 means the stream is rejected/disabled (RFC 3264 §5.1, §6).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// True if the port is 0.
    pub fn is_rejected(&self) -> bool {
        self.port == 0
    }

    /// The `/<number of ports>` suffix, if any.
    pub fn port_count(&self) -> Option<u16> {
        self.port_count
    }

    /// Transport protocol.
    pub fn proto(&self) -> &Proto {
        &self.proto
    }

    /// Formats as written.
    pub fn formats(&self) -> &[String] {
        &self.formats
    }

    /// Formats that are RTP payload types (only for an RTP proto).
    pub fn payload_types(&self) -> Vec<u8> {
        if !self.proto.is_rtp() {
            return Vec::new();
        }
        self.formats
            .iter()
            .filter_map(|f| f.parse::<u8>().ok())
            .filter(|pt| *pt <= 127)
            .collect()
    }

    /// Media-level `c=`.
    pub fn connection(&self) -> Option<&Connection> {
        self.connection.as_ref()
    }

    /// All `a=rtpmap` lines that parsed.
    pub fn rtpmaps(&self) -> &[Rtpmap] {
        &self.rtpmaps
    }

    /// The `a=rtpmap` of a payload type.
    pub fn rtpmap(&self, pt: u8) -> Option<&Rtpmap> {
        self.rtpmaps.iter().find(|r| r.payload_type == pt)
    }

    /// All `a=fmtp` lines.
    pub fn fmtps(&self) -> &[Fmtp] {
        &self.fmtps
    }

    /// The `a=fmtp` parameters of a payload type.
    pub fn fmtp(&self, pt: u8) -> Option<&str> {
        self.fmtps
            .iter()
            .find(|f| f.format.parse::<u8>().ok() == Some(pt))
            .map(|f| f.params.as_str())
    }

    /// Encoding name and clock rate of a payload type: its rtpmap, else the
    /// RFC 3551 static assignment.
    pub fn encoding(&self, pt: u8) -> Option<(&str, u32)> {
        if let Some(r) = self.rtpmap(pt) {
            return Some((r.encoding.as_str(), r.clock_rate));
        }
        static_payload_type(pt).map(|(n, rate, _)| (n, rate))
    }

    /// Media-level direction attribute, if any.
    pub fn direction_attr(&self) -> Option<Direction> {
        self.direction
    }

    /// `a=rtcp` (RFC 3605).
    pub fn rtcp(&self) -> Option<&RtcpAttr> {
        self.rtcp.as_ref()
    }

    /// `a=rtcp-mux` (RFC 5761 §5.1.1).
    pub fn rtcp_mux(&self) -> bool {
        self.rtcp_mux
    }

    /// The `a=crypto` lines that parsed (RFC 4568).
    pub fn crypto(&self) -> &[CryptoLine] {
        &self.crypto
    }

    /// The first crypto line the media layer can use (known suite, right key
    /// length, no MKI).
    pub fn usable_crypto(&self) -> Option<&CryptoLine> {
        self.crypto.iter().find(|c| c.is_usable())
    }

    /// True if crypto lines are offered but none is usable because all of
    /// them need an MKI.
    pub fn requires_mki(&self) -> bool {
        self.crypto_lines > 0
            && self.usable_crypto().is_none()
            && self.crypto.iter().any(CryptoLine::requires_mki)
    }

    /// Media-level ICE attributes.
    pub fn ice(&self) -> &Ice {
        &self.ice
    }
}

pub(super) fn absorb_media_attr(m: &mut Media, name: &str, val: Option<&str>) {
    if let Some(d) = Direction::from_attr(name) {
        m.direction = Some(d);
        return;
    }
    match name {
        "rtpmap" => {
            if let Some(r) = val.and_then(Rtpmap::parse) {
                m.rtpmaps.push(r);
            }
        }
        "fmtp" => {
            if let Some((format, params)) = val.and_then(|v| v.split_once(' ')) {
                m.fmtps.push(Fmtp {
                    format: format.to_owned(),
                    params: params.trim().to_owned(),
                });
            }
        }
        "rtcp" => m.rtcp = val.and_then(RtcpAttr::parse),
        "rtcp-mux" => m.rtcp_mux = true,
        "crypto" => {
            m.crypto_lines += 1;
            // RFC 4568 §5.1.2: crypto lines that cannot be understood are
            // ignored rather than failing the whole description.
            if let Some(c) = val.and_then(|v| CryptoLine::parse(v).ok()) {
                m.crypto.push(c);
            }
        }
        _ => {
            m.ice.absorb(name, val);
        }
    }
}

pub(super) fn parse_m_line(v: &str, idx: usize) -> Option<Media> {
    let mut f = v.split_ascii_whitespace();
    let kind = f.next()?.to_owned();
    let port_field = f.next()?;
    let (port, port_count) = match port_field.split_once('/') {
        Some((p, n)) => (p.parse().ok()?, Some(n.parse().ok()?)),
        None => (port_field.parse().ok()?, None),
    };
    let proto = Proto::parse(f.next()?);
    let formats: Vec<String> = f.map(str::to_owned).collect();
    if formats.is_empty() {
        return None;
    }
    Some(Media {
        line: idx,
        end: idx + 1,
        conn_line: None,
        kind,
        port,
        port_count,
        proto,
        formats,
        connection: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        direction: None,
        rtcp: None,
        rtcp_mux: false,
        crypto: Vec::new(),
        crypto_lines: 0,
        ice: Ice::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::Sdp;
    use super::*;

    #[test]
    fn protos_are_classified() {
        for (s, rtp, sec, fb, dtls) in [
            ("RTP/AVP", true, false, false, false),
            ("RTP/AVPF", true, false, true, false),
            ("RTP/SAVP", true, true, false, false),
            ("RTP/SAVPF", true, true, true, false),
            ("UDP/TLS/RTP/SAVP", true, true, false, true),
            ("UDP/TLS/RTP/SAVPF", true, true, true, true),
            ("udptl", false, false, false, false),
        ] {
            let p = Proto::parse(s);
            assert_eq!(p.as_str(), s);
            assert_eq!(
                (p.is_rtp(), p.is_secure(), p.is_feedback(), p.is_dtls()),
                (rtp, sec, fb, dtls),
                "{s}"
            );
        }
    }

    #[test]
    fn crypto_ice_and_mux_are_indexed() {
        let body = "v=0\r\n\
o=- 1 1 IN IP4 10.0.0.1\r\n\
s=-\r\n\
a=ice-lite\r\n\
c=IN IP4 10.0.0.1\r\n\
t=0 0\r\n\
m=audio 5000 RTP/SAVP 0\r\n\
a=ice-ufrag:abcd\r\n\
a=ice-pwd:0123456789012345678901\r\n\
a=candidate:1 1 UDP 2130706431 10.0.0.1 5000 typ host\r\n\
a=candidate:broken\r\n\
a=end-of-candidates\r\n\
a=rtcp-mux\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^31|1:1\r\n\
a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^31\r\n\
a=crypto:3 garbage\r\n";
        let sdp = Sdp::parse(body.as_bytes()).unwrap();
        assert!(sdp.ice().lite);
        let m = &sdp.media()[0];
        assert_eq!(m.ice().ufrag.as_deref(), Some("abcd"));
        assert_eq!(m.ice().candidates.len(), 2);
        let cands = m.ice().parsed_candidates();
        assert_eq!(cands.len(), 1);
        assert_eq!(cands[0].port, 5000);
        assert_eq!(cands[0].typ, "host");
        assert!(m.ice().end_of_candidates);
        assert!(m.rtcp_mux());
        assert_eq!(m.crypto().len(), 2);
        assert_eq!(m.usable_crypto().unwrap().tag, 2);
        assert!(!m.requires_mki());
    }

    #[test]
    fn only_mki_crypto_requires_mki() {
        let body = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 5000 RTP/SAVP 0\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^31|1:1\r\n";
        let sdp = Sdp::parse(body.as_bytes()).unwrap();
        assert!(sdp.media()[0].requires_mki());
        assert!(sdp.media()[0].usable_crypto().is_none());
    }
}
