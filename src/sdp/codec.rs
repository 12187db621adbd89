//! Codec policy over an offer: which payload types each m-line keeps.

use super::{Sdp, SdpError};

/// Encoding names allowed through (case-insensitive: `PCMU`, `PCMA`, `G729`,
/// `G722`, `opus`, `CN`, … and for non-RTP m-lines their format, e.g. `t38`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodecPolicy {
    allowed: Vec<String>,
}

/// Payload formats that are not codecs by themselves: an m-line left with
/// only these has no common codec.
fn is_auxiliary(name: &str) -> bool {
    ["telephone-event", "CN", "red", "ulpfec", "flexfec", "rtx"]
        .iter()
        .any(|a| a.eq_ignore_ascii_case(name))
}

impl CodecPolicy {
    /// A policy allowing these encoding names.
    pub fn new<I, S>(allowed: I) -> CodecPolicy
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        CodecPolicy {
            allowed: allowed.into_iter().map(Into::into).collect(),
        }
    }

    /// True if `name` is allowed. RFC 4733 `telephone-event` always is.
    pub fn allows(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case("telephone-event")
            || self.allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
    }
}

/// Applies `policy` to an offer. Per m-line:
/// * `None`: leave the formats alone (rejected m-line, or a non-RTP m-line
///   whose format is allowed);
/// * `Some(pts)`: keep these payload types (offer order), telephone-event
///   included whenever it was offered (RFC 4733);
/// * `Some(vec![])`: nothing acceptable — reject this m-line (port 0,
///   RFC 3264 §6), which [`super::rewrite`] does with `keep_formats`.
///
/// Static payload types without rtpmap are named by RFC 3551 §6; a dynamic
/// payload type without rtpmap cannot be identified and is dropped.
/// If no active m-line keeps a codec: [`SdpError::NoCommonCodec`] (488).
pub fn filter_offer(sdp: &Sdp, policy: &CodecPolicy) -> Result<Vec<Option<Vec<u8>>>, SdpError> {
    let mut out = Vec::with_capacity(sdp.media().len());
    let mut active = 0usize;
    let mut usable = 0usize;
    for m in sdp.media() {
        if m.is_rejected() {
            out.push(None);
            continue;
        }
        active += 1;
        if !m.proto().is_rtp() {
            if m.formats().iter().any(|f| policy.allows(f)) {
                usable += 1;
                out.push(None);
            } else {
                out.push(Some(Vec::new()));
            }
            continue;
        }
        let mut kept = Vec::new();
        let mut codecs = 0usize;
        for pt in m.payload_types() {
            let Some((name, _rate)) = m.encoding(pt) else {
                continue;
            };
            if policy.allows(name) && !kept.contains(&pt) {
                kept.push(pt);
                if !is_auxiliary(name) {
                    codecs += 1;
                }
            }
        }
        if codecs == 0 {
            kept.clear();
        } else {
            usable += 1;
        }
        out.push(Some(kept));
    }
    if active > 0 && usable == 0 {
        return Err(SdpError::NoCommonCodec);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdp(media: &str) -> Sdp {
        let body = format!(
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n{media}"
        );
        Sdp::parse(body.as_bytes()).unwrap()
    }

    #[test]
    fn static_payload_types_without_rtpmap() {
        let s = sdp("m=audio 4000 RTP/AVP 0 8 18 9 3\r\n");
        let p = CodecPolicy::new(["pcma", "G729", "G722"]);
        assert_eq!(filter_offer(&s, &p).unwrap(), vec![Some(vec![8, 18, 9])]);
    }

    #[test]
    fn telephone_event_passes_but_is_not_a_codec() {
        let s = sdp("m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n");
        let p = CodecPolicy::new(["PCMU"]);
        assert_eq!(filter_offer(&s, &p).unwrap(), vec![Some(vec![0, 101])]);
        let p = CodecPolicy::new(["G729"]);
        assert_eq!(filter_offer(&s, &p), Err(SdpError::NoCommonCodec));
    }

    #[test]
    fn dynamic_names_from_rtpmap_and_unknown_dynamic_dropped() {
        let s = sdp("m=audio 4000 RTP/AVP 111 96 0\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n");
        let p = CodecPolicy::new(["OPUS", "PCMU"]);
        assert_eq!(filter_offer(&s, &p).unwrap(), vec![Some(vec![111, 0])]);
    }

    #[test]
    fn rtpmap_overrides_static_name() {
        // A (non-conforming) rtpmap re-using PT 18 for something else wins.
        let s = sdp("m=audio 4000 RTP/AVP 18\r\na=rtpmap:18 X-FOO/8000\r\n");
        assert_eq!(
            filter_offer(&s, &CodecPolicy::new(["G729"])),
            Err(SdpError::NoCommonCodec)
        );
    }

    #[test]
    fn one_line_without_codec_is_rejected_not_the_call() {
        let s = sdp("m=audio 4000 RTP/AVP 0\r\nm=video 4002 RTP/AVP 31\r\nm=audio 0 RTP/AVP 0\r\n");
        let p = CodecPolicy::new(["PCMU"]);
        assert_eq!(
            filter_offer(&s, &p).unwrap(),
            vec![Some(vec![0]), Some(vec![]), None]
        );
    }

    #[test]
    fn comfort_noise_alone_is_not_enough() {
        let s = sdp("m=audio 4000 RTP/AVP 13 18\r\n");
        let p = CodecPolicy::new(["CN", "PCMU"]);
        assert_eq!(filter_offer(&s, &p), Err(SdpError::NoCommonCodec));
        let p = CodecPolicy::new(["CN", "G729"]);
        assert_eq!(filter_offer(&s, &p).unwrap(), vec![Some(vec![13, 18])]);
    }

    #[test]
    fn t38_by_format_name() {
        let s = sdp("m=image 4000 udptl t38\r\n");
        assert_eq!(
            filter_offer(&s, &CodecPolicy::new(["t38"])).unwrap(),
            vec![None]
        );
        assert_eq!(
            filter_offer(&s, &CodecPolicy::new(["PCMU"])),
            Err(SdpError::NoCommonCodec)
        );
    }

    #[test]
    fn no_media_is_not_an_error() {
        let s = sdp("");
        assert_eq!(
            filter_offer(&s, &CodecPolicy::new(["PCMU"])).unwrap(),
            Vec::<Option<Vec<u8>>>::new()
        );
    }
}
