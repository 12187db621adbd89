//! SDP rewrite for media anchoring: every line not named here is copied
//! byte-exactly with its own line end.

use std::collections::HashSet;
use std::net::IpAddr;

use super::attributes::split_attr;
use super::ice::is_ice_attr;
use super::parse::Eol;
use super::{AddrType, CryptoLine, Media, Proto, Sdp, SdpError};

/// The RTP profile family toward the side the SDP is sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Plain RTP: `RTP/AVP` (or `RTP/AVPF`).
    Rtp,
    /// SDES-keyed SRTP: `RTP/SAVP` (or `RTP/SAVPF`).
    Srtp,
}

/// What to write into one m-line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaRewrite {
    /// Our RTP port. A rejected m-line (port 0) stays rejected whatever this
    /// says; 0 here rejects an active m-line.
    pub port: u16,
    /// Our RTCP port: rewrites `a=rtcp`; `None` removes `a=rtcp` (RTCP on
    /// port + 1, or muxed). If the SDP has no `a=rtcp` and this is not
    /// port + 1, an `a=rtcp` line is added (RFC 3605).
    pub rtcp_port: Option<u16>,
    /// Profile toward the receiver of this SDP. Non-RTP protos (`udptl` …)
    /// are left alone.
    pub profile: Profile,
    /// Our crypto line. Their `a=crypto` lines are always removed (the keys
    /// are terminated at the anchor); ours is added if given. With
    /// [`Profile::Rtp`] that is an RFC 8643 opportunistic SRTP offer. In an
    /// answer, give it the tag and suite of the offered line accepted.
    pub crypto: Option<CryptoLine>,
    /// RTP payload types to keep (in the m-line's order); the `a=rtpmap`,
    /// `a=fmtp` and `a=rtcp-fb` lines of the others are removed. An empty
    /// list (or one that keeps nothing) rejects the m-line (port 0).
    pub keep_formats: Option<Vec<u8>>,
}

/// Changes to the `o=` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginRewrite {
    /// New `<sess-version>` (RFC 3264 §8: one more than the last SDP sent to
    /// that side when the content changed).
    pub session_version: Option<u64>,
    /// New `<unicast-address>` (hides the other side's host).
    pub address: Option<IpAddr>,
}

/// A rewrite of a whole SDP toward one side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrite {
    /// Our media address: every `c=` (session and media level) and addressed
    /// `a=rtcp`. A `c=` holding `0.0.0.0` is kept: it is the RFC 2543 hold of
    /// RFC 3264 §8.4 and must reach the other side as such.
    pub connection: IpAddr,
    /// One entry per m-line, in order.
    pub media: Vec<MediaRewrite>,
    /// Remove all ICE attributes (the anchor does not do ICE toward this side).
    pub strip_ice: bool,
    /// `o=` changes, if any.
    pub origin: Option<OriginRewrite>,
}

fn target_proto(orig: &Proto, profile: Profile) -> Proto {
    if !orig.is_rtp() {
        return orig.clone();
    }
    match (profile, orig.is_feedback()) {
        (Profile::Rtp, false) => Proto::RtpAvp,
        (Profile::Rtp, true) => Proto::RtpAvpf,
        (Profile::Srtp, false) => Proto::RtpSavp,
        (Profile::Srtp, true) => Proto::RtpSavpf,
    }
}

/// DTLS-SRTP attributes (RFC 8122, RFC 8842) that mean nothing once the
/// profile is no longer UDP/TLS/RTP/*.
fn is_dtls_attr(name: &str) -> bool {
    matches!(name, "fingerprint" | "setup" | "tls-id")
}

fn conn_line(ip: IpAddr) -> String {
    format!("c=IN {} {}", AddrType::of(ip).as_str(), ip)
}

struct Out {
    buf: Vec<u8>,
    eol: Eol,
    unterminated: bool,
}

impl Out {
    fn keep(&mut self, sdp: &Sdp, idx: usize) {
        if let Some(l) = sdp.lines.get(idx) {
            self.buf
                .extend_from_slice(sdp.raw.get(l.start..l.end).unwrap_or_default());
            self.buf.extend_from_slice(l.eol.bytes());
            self.unterminated = l.eol == Eol::None;
        }
    }

    fn replace(&mut self, sdp: &Sdp, idx: usize, text: &str) {
        let eol = sdp.lines.get(idx).map_or(self.eol, |l| l.eol);
        self.buf.extend_from_slice(text.as_bytes());
        self.buf.extend_from_slice(eol.bytes());
        self.unterminated = eol == Eol::None;
    }

    fn insert(&mut self, text: &str) {
        if self.unterminated {
            self.buf.extend_from_slice(self.eol.bytes());
        }
        self.buf.extend_from_slice(text.as_bytes());
        self.buf.extend_from_slice(self.eol.bytes());
        self.unterminated = false;
    }
}

/// The plan for one m-line.
struct MediaPlan<'a> {
    port: u16,
    m_line: String,
    removed_pts: HashSet<u8>,
    rtcp_port: Option<u16>,
    crypto: Option<&'a CryptoLine>,
    drop_dtls: bool,
    needs_conn: bool,
}

fn plan_media<'a>(
    sdp: &Sdp,
    index: usize,
    m: &Media,
    mr: &'a MediaRewrite,
) -> Result<MediaPlan<'a>, SdpError> {
    let proto = target_proto(m.proto(), mr.profile);
    let mut formats: Vec<&str> = m.formats().iter().map(String::as_str).collect();
    let mut removed_pts = HashSet::new();
    let mut reject = m.is_rejected() || mr.port == 0;
    if !reject {
        if let Some(keep) = &mr.keep_formats {
            if m.proto().is_rtp() {
                let kept: Vec<&str> = formats
                    .iter()
                    .copied()
                    .filter(|f| f.parse::<u8>().is_ok_and(|pt| keep.contains(&pt)))
                    .collect();
                if kept.is_empty() {
                    reject = true;
                } else {
                    for pt in m.payload_types() {
                        if !keep.contains(&pt) {
                            removed_pts.insert(pt);
                        }
                    }
                    formats = kept;
                }
            } else if keep.is_empty() {
                reject = true;
            }
        }
    }
    let active = !reject;
    if active && proto.is_secure() && mr.crypto.is_none() {
        return Err(SdpError::MissingCrypto { index });
    }
    let port = if active { mr.port } else { 0 };
    let mut m_line = format!("m={} {}", m.kind(), port);
    if let Some(n) = m.port_count() {
        m_line.push_str(&format!("/{n}"));
    }
    m_line.push(' ');
    m_line.push_str(proto.as_str());
    for f in formats {
        m_line.push(' ');
        m_line.push_str(f);
    }
    Ok(MediaPlan {
        port,
        m_line,
        removed_pts,
        rtcp_port: if active { mr.rtcp_port } else { None },
        crypto: if active { mr.crypto.as_ref() } else { None },
        drop_dtls: m.proto().is_dtls(),
        needs_conn: m.conn_line.is_none() && sdp.conn_line.is_none(),
    })
}

/// The payload type an `a=rtpmap`/`a=fmtp`/`a=rtcp-fb` value refers to.
fn attr_pt(value: Option<&str>) -> Option<u8> {
    value?.split(' ').next()?.trim().parse().ok()
}

/// Rewrites `sdp` toward one side. Lines other than `o=` (if asked), `c=`,
/// `m=`, `a=rtcp`, `a=crypto`, ICE attributes (if asked), DTLS attributes of
/// converted UDP/TLS m-lines and the rtpmap/fmtp/rtcp-fb of removed payload
/// types are copied byte-exactly.
pub fn rewrite(sdp: &Sdp, rw: &Rewrite) -> Result<Vec<u8>, SdpError> {
    let media = sdp.media();
    if media.len() != rw.media.len() {
        return Err(SdpError::RewriteMediaCount {
            expected: media.len(),
            got: rw.media.len(),
        });
    }
    let plans = media
        .iter()
        .zip(&rw.media)
        .enumerate()
        .map(|(i, (m, mr))| plan_media(sdp, i, m, mr))
        .collect::<Result<Vec<_>, _>>()?;
    let any_dtls = media.iter().any(|m| m.proto().is_dtls());
    let new_conn = conn_line(rw.connection);

    let mut out = Out {
        buf: Vec::with_capacity(sdp.raw.len() + 128),
        eol: sdp.default_eol(),
        unterminated: false,
    };

    // Session section.
    for idx in 0..sdp.session_end {
        if Some(idx) == sdp.origin_line {
            if let (Some(orw), Some(o)) = (&rw.origin, sdp.origin()) {
                let mut o = o.clone();
                if let Some(v) = orw.session_version {
                    o.session_version = v;
                }
                if let Some(a) = orw.address {
                    o.addr_type = AddrType::of(a);
                    o.address = a.to_string();
                }
                out.replace(sdp, idx, &o.to_line());
                continue;
            }
        } else if Some(idx) == sdp.conn_line {
            if sdp.connection().is_some_and(|c| c.is_hold()) {
                out.keep(sdp, idx);
            } else {
                out.replace(sdp, idx, &new_conn);
            }
            continue;
        }
        if let Some(name) = attr_name(sdp, idx) {
            if (rw.strip_ice && is_ice_attr(name)) || (any_dtls && is_dtls_attr(name)) {
                continue;
            }
        }
        out.keep(sdp, idx);
    }
    if rw.origin.is_some() && sdp.origin_line.is_none() {
        return Err(SdpError::MissingOrigin);
    }

    // Media sections.
    for (m, plan) in media.iter().zip(&plans) {
        let mut crypto_written = false;
        let mut rtcp_written = false;
        let mut idx = m.line;
        out.replace(sdp, idx, &plan.m_line);
        idx += 1;
        if plan.needs_conn {
            // Keep RFC 4566 §5 order m= i= c=.
            if idx < m.end && sdp.line_bytes(idx).starts_with(b"i=") {
                out.keep(sdp, idx);
                idx += 1;
            }
            out.insert(&new_conn);
        }
        while idx < m.end {
            let line = idx;
            idx += 1;
            if Some(line) == m.conn_line {
                if m.connection().is_some_and(|c| c.is_hold()) {
                    out.keep(sdp, line);
                } else {
                    out.replace(sdp, line, &new_conn);
                }
                continue;
            }
            let Some(name) = attr_name(sdp, line) else {
                out.keep(sdp, line);
                continue;
            };
            let value = attr_value(sdp, line);
            match name {
                "crypto" => {
                    if let (Some(c), false) = (plan.crypto, crypto_written) {
                        out.replace(sdp, line, &c.to_attribute());
                        crypto_written = true;
                    }
                }
                "rtcp" => {
                    if let (Some(p), false) = (plan.rtcp_port, rtcp_written) {
                        let addressed = value.is_some_and(|v| v.trim().contains(' '));
                        let text = if addressed {
                            format!(
                                "a=rtcp:{p} IN {} {}",
                                AddrType::of(rw.connection).as_str(),
                                rw.connection
                            )
                        } else {
                            format!("a=rtcp:{p}")
                        };
                        out.replace(sdp, line, &text);
                        rtcp_written = true;
                    }
                }
                "rtpmap" | "fmtp" | "rtcp-fb"
                    if attr_pt(value).is_some_and(|pt| plan.removed_pts.contains(&pt)) => {}
                n if rw.strip_ice && is_ice_attr(n) => {}
                n if plan.drop_dtls && is_dtls_attr(n) => {}
                _ => out.keep(sdp, line),
            }
        }
        if let (Some(p), false) = (plan.rtcp_port, rtcp_written) {
            if Some(p) != plan.port.checked_add(1) {
                out.insert(&format!("a=rtcp:{p}"));
            }
        }
        if let (Some(c), false) = (plan.crypto, crypto_written) {
            out.insert(&c.to_attribute());
        }
    }
    Ok(out.buf)
}

fn attr_name(sdp: &Sdp, idx: usize) -> Option<&str> {
    let b = sdp.line_bytes(idx).strip_prefix(b"a=")?;
    let v = std::str::from_utf8(b).ok()?;
    Some(split_attr(v).0)
}

fn attr_value(sdp: &Sdp, idx: usize) -> Option<&str> {
    let b = sdp.line_bytes(idx).strip_prefix(b"a=")?;
    let v = std::str::from_utf8(b).ok()?;
    split_attr(v).1
}

#[cfg(test)]
mod tests {
    use super::super::CryptoSuite;
    use super::*;

    fn mr(port: u16) -> MediaRewrite {
        MediaRewrite {
            port,
            rtcp_port: port.checked_add(1),
            profile: Profile::Rtp,
            crypto: None,
            keep_formats: None,
        }
    }

    fn rw(media: Vec<MediaRewrite>) -> Rewrite {
        Rewrite {
            connection: "203.0.113.1".parse().unwrap(),
            media,
            strip_ice: false,
            origin: None,
        }
    }

    fn run(body: &str, r: &Rewrite) -> String {
        let sdp = Sdp::parse(body.as_bytes()).unwrap();
        String::from_utf8(rewrite(&sdp, r).unwrap()).unwrap()
    }

    const G711: &str = "v=0\r\n\
o=gw 100 200 IN IP4 10.1.1.5\r\n\
s=SIP Call\r\n\
c=IN IP4 10.1.1.5\r\n\
t=0 0\r\n\
m=audio 16384 RTP/AVP 8 0 101\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-15\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

    #[test]
    fn rewrites_connection_and_port_only() {
        let out = run(G711, &rw(vec![mr(40000)]));
        let expected = G711
            .replace("c=IN IP4 10.1.1.5", "c=IN IP4 203.0.113.1")
            .replace("m=audio 16384", "m=audio 40000");
        assert_eq!(out, expected);
    }

    #[test]
    fn filters_formats_and_their_attributes() {
        let mut m = mr(40000);
        m.keep_formats = Some(vec![0, 101]);
        let out = run(G711, &rw(vec![m]));
        assert!(out.contains("m=audio 40000 RTP/AVP 0 101\r\n"));
        assert!(!out.contains("PCMA"));
        assert!(out.contains("a=rtpmap:0 PCMU/8000\r\n"));
        assert!(out.contains("a=fmtp:101 0-15\r\n"));
        assert!(out.contains("a=ptime:20\r\na=sendrecv\r\n"));
    }

    #[test]
    fn keeping_nothing_rejects_the_line() {
        let mut m = mr(40000);
        m.keep_formats = Some(vec![18]);
        let out = run(G711, &rw(vec![m]));
        assert!(out.contains("m=audio 0 RTP/AVP 8 0 101\r\n"), "{out}");
        let mut m = mr(40000);
        m.keep_formats = Some(vec![]);
        assert!(run(G711, &rw(vec![m])).contains("m=audio 0 RTP/AVP"));
    }

    #[test]
    fn rejected_line_stays_rejected() {
        let body = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\nm=video 0 RTP/AVP 31\r\n";
        let out = run(body, &rw(vec![mr(40000), mr(40002)]));
        assert!(out.contains("m=audio 40000 RTP/AVP 0\r\n"));
        assert!(out.contains("m=video 0 RTP/AVP 31\r\n"));
        assert!(!out.contains("a=rtcp"));
    }

    #[test]
    fn rtcp_attribute_rewritten_added_and_removed() {
        let body = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:4001 IN IP4 10.0.0.2\r\nm=audio 5000 RTP/AVP 0\r\na=rtcp:5005\r\nm=audio 6000 RTP/AVP 0\r\n";
        let mut a = mr(40000);
        a.rtcp_port = Some(40001);
        let mut b = mr(40002);
        b.rtcp_port = None;
        let mut c = mr(40004);
        c.rtcp_port = Some(40009);
        let out = run(body, &rw(vec![a, b, c]));
        assert!(out.contains("a=rtcp:40001 IN IP4 203.0.113.1\r\n"), "{out}");
        assert!(!out.contains("a=rtcp:5005"));
        assert!(
            out.ends_with("m=audio 40004 RTP/AVP 0\r\na=rtcp:40009\r\n"),
            "{out}"
        );
    }

    #[test]
    fn srtp_toward_cloud_and_rtp_toward_gateway() {
        let key: [u8; 30] = [7; 30];
        let ours = CryptoLine::new(1, CryptoSuite::AesCm128HmacSha1_80, key).unwrap();
        let mut m = mr(40000);
        m.profile = Profile::Srtp;
        m.crypto = Some(ours.clone());
        let out = run(G711, &rw(vec![m]));
        assert!(out.contains("m=audio 40000 RTP/SAVP 8 0 101\r\n"));
        assert!(out.ends_with(&format!("a=sendrecv\r\n{}\r\n", ours.to_attribute())));

        // And back: their crypto removed, profile plain.
        let srtp = out.replace("a=sendrecv", "a=rtcp-mux");
        let out = run(&srtp, &rw(vec![mr(50000)]));
        assert!(out.contains("m=audio 50000 RTP/AVP 8 0 101\r\n"));
        assert!(!out.contains("a=crypto"));
        assert!(out.contains("a=rtcp-mux\r\n"));
    }

    #[test]
    fn crypto_replaced_in_place_and_srtp_without_crypto_is_an_error() {
        let body = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/SAVPF 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\na=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\na=ptime:20\r\n";
        let ours = CryptoLine::new(5, CryptoSuite::AesCm128HmacSha1_32, [1; 30]).unwrap();
        let mut m = mr(40000);
        m.profile = Profile::Srtp;
        m.crypto = Some(ours.clone());
        let out = run(body, &rw(vec![m.clone()]));
        assert!(out.contains("m=audio 40000 RTP/SAVPF 0\r\n"));
        assert!(out.contains(&format!("{}\r\na=ptime:20\r\n", ours.to_attribute())));
        assert_eq!(out.matches("a=crypto").count(), 1);
        m.crypto = None;
        let sdp = Sdp::parse(body.as_bytes()).unwrap();
        assert_eq!(
            rewrite(&sdp, &rw(vec![m])),
            Err(SdpError::MissingCrypto { index: 0 })
        );
        // AVPF maps to AVPF.
        let out = run(body, &rw(vec![mr(1000)]));
        assert!(out.contains("m=audio 1000 RTP/AVPF 0\r\n"));
    }

    #[test]
    fn strips_ice_and_dtls_attributes() {
        let body = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\na=ice-lite\r\na=fingerprint:sha-256 AB:CD\r\nt=0 0\r\nm=audio 4000 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 10.0.0.1\r\na=ice-ufrag:x\r\na=ice-pwd:y\r\na=candidate:1 1 udp 1 10.0.0.1 4000 typ host\r\na=end-of-candidates\r\na=setup:actpass\r\na=rtpmap:111 opus/48000/2\r\n";
        let mut r = rw(vec![mr(40000)]);
        r.strip_ice = true;
        let out = run(body, &r);
        assert_eq!(
            out,
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 40000 RTP/AVPF 111\r\nc=IN IP4 203.0.113.1\r\na=rtpmap:111 opus/48000/2\r\n"
        );
    }

    #[test]
    fn ice_kept_unless_asked() {
        let body = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=ice-ufrag:x\r\n";
        assert!(run(body, &rw(vec![mr(1)])).contains("a=ice-ufrag:x\r\n"));
    }

    #[test]
    fn hold_address_is_kept() {
        let body = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\nm=audio 4002 RTP/AVP 0\r\nc=IN IP4 10.0.0.9\r\n";
        let out = run(body, &rw(vec![mr(40000), mr(40002)]));
        assert!(out.contains("\r\nc=IN IP4 0.0.0.0\r\n"));
        assert!(out.ends_with("m=audio 40002 RTP/AVP 0\r\nc=IN IP4 203.0.113.1\r\n"));
    }

    #[test]
    fn origin_version_and_address() {
        let mut r = rw(vec![mr(40000)]);
        r.origin = Some(OriginRewrite {
            session_version: Some(201),
            address: Some("2001:db8::5".parse().unwrap()),
        });
        r.connection = "2001:db8::5".parse().unwrap();
        let out = run(G711, &r);
        assert!(out.contains("o=gw 100 201 IN IP6 2001:db8::5\r\n"));
        assert!(out.contains("c=IN IP6 2001:db8::5\r\n"));
        let sdp = Sdp::parse(b"v=0\r\ns=-\r\nt=0 0\r\nc=IN IP4 1.2.3.4\r\n").unwrap();
        assert_eq!(
            rewrite(&sdp, &r),
            Err(SdpError::RewriteMediaCount {
                expected: 0,
                got: 1
            })
        );
        r.media.clear();
        assert_eq!(rewrite(&sdp, &r), Err(SdpError::MissingOrigin));
    }

    #[test]
    fn lf_input_gives_lf_output_and_inserted_lines_follow() {
        let body = "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nt=0 0\nm=audio 4000 RTP/AVP 0\ni=voice\na=rtcp:4001";
        let mut m = mr(40000);
        m.crypto = Some(CryptoLine::new(1, CryptoSuite::AesCm128HmacSha1_80, [0; 30]).unwrap());
        let out = run(body, &rw(vec![m]));
        assert!(!out.contains('\r'));
        // No c= anywhere: one is inserted after m= and i=; the last line had
        // no line end and stays so unless a line follows.
        assert!(out.starts_with(
            "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nt=0 0\nm=audio 40000 RTP/AVP 0\ni=voice\nc=IN IP4 203.0.113.1\na=rtcp:40001\na=crypto:1 "
        ), "{out}");
        assert!(out.ends_with('\n'));
    }

    #[test]
    fn udptl_keeps_proto() {
        let body = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=image 4000 udptl t38\r\na=T38FaxVersion:0\r\n";
        let out = run(body, &rw(vec![mr(40000)]));
        assert!(out.contains("m=image 40000 udptl t38\r\na=T38FaxVersion:0\r\n"));
    }
}
