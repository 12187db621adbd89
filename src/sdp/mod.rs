//! SDP parse and rewrite for media anchoring (pure: no IO, no clock, no
//! randomness; key material is passed in by the caller).
//!
//! * [`Sdp::parse`] indexes every line (RFC 4566 §5) and keeps the bytes, so
//!   [`rewrite`] copies every line it does not change byte-exactly, with the
//!   line ends that came in (CRLF or bare LF).
//! * [`rewrite`] points `c=`, `m=` ports, `a=rtcp` (RFC 3605) at the anchor,
//!   switches the profile RTP/AVP ↔ RTP/SAVP (AVPF ↔ SAVPF), swaps their SDES
//!   `a=crypto` (RFC 4568) for ours, strips ICE (RFC 8839), filters formats.
//! * [`filter_offer`] applies a [`CodecPolicy`] (RFC 3551 static payload
//!   types, RFC 4733 telephone-event always kept).
//! * [`Negotiation`] is the per-dialog RFC 3264 offer/answer state.

mod address;
mod attributes;
mod codec;
mod crypto;
mod ice;
mod media;
mod negotiation;
mod parse;
mod rewrite;

pub use address::{AddrType, ConnAddr, Connection, Origin};
pub use attributes::{Direction, Fmtp, RtcpAttr, Rtpmap};
pub use codec::{filter_offer, CodecPolicy};
pub use crypto::{base64_decode, base64_encode, CryptoLine, CryptoSuite, KeyParam, Lifetime, Mki};
pub use ice::{Candidate, Ice};
pub use media::{static_payload_type, Media, Proto};
pub use negotiation::{Carrier, Endpoint, Exchange, NegotiatedStream, Negotiation, SdpRole, Side};
pub use parse::Sdp;
pub use rewrite::{rewrite, MediaRewrite, OriginRewrite, Profile, Rewrite};

/// Everything that can go wrong with an SDP body or an offer/answer exchange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body has no lines.
    #[error("empty SDP body")]
    Empty,
    /// The first line is not `v=0` (RFC 4566 §5).
    #[error("SDP does not start with v=0")]
    MissingVersion,
    /// A line is not `<letter>=<value>`, or is not text where text is needed.
    #[error("malformed SDP line {line}")]
    MalformedLine {
        /// 1-based line number.
        line: usize,
    },
    /// The `o=` line does not parse.
    #[error("invalid o= line {line}")]
    InvalidOrigin {
        /// 1-based line number.
        line: usize,
    },
    /// A `c=` line does not parse.
    #[error("invalid c= line {line}")]
    InvalidConnection {
        /// 1-based line number.
        line: usize,
    },
    /// An `m=` line does not parse.
    #[error("invalid m= line {line}")]
    InvalidMedia {
        /// 1-based line number.
        line: usize,
    },
    /// An `a=crypto` value does not parse, or a key does not fit its suite.
    #[error("invalid crypto attribute")]
    InvalidCrypto,
    /// Invalid base64.
    #[error("invalid base64")]
    InvalidBase64,
    /// A rewrite asked for an `o=` change but the SDP has no `o=`.
    #[error("SDP has no o= line")]
    MissingOrigin,
    /// The rewrite does not describe every m-line.
    #[error("rewrite describes {got} m-lines, SDP has {expected}")]
    RewriteMediaCount {
        /// m-lines in the SDP.
        expected: usize,
        /// m-lines in the rewrite.
        got: usize,
    },
    /// An active m-line toward an SRTP side needs our crypto line.
    #[error("m-line {index} uses SRTP but no crypto line was supplied")]
    MissingCrypto {
        /// 0-based m-line index.
        index: usize,
    },
    /// No active m-line has a codec allowed by the policy (488).
    #[error("no common codec")]
    NoCommonCodec,
    /// The only usable crypto lines of an m-line need an MKI, which our SRTP
    /// layer does not implement (488).
    #[error("m-line {index} offers only crypto with MKI")]
    MkiRequired {
        /// 0-based m-line index.
        index: usize,
    },
    /// An answer does not have as many m-lines as the offer (RFC 3264 §6, 488).
    #[error("answer has {answered} m-lines, offer had {offered}")]
    AnswerMediaCount {
        /// m-lines in the offer.
        offered: usize,
        /// m-lines in the answer.
        answered: usize,
    },
    /// An answer accepted an m-line the offer had rejected (RFC 3264 §6).
    #[error("answer accepts m-line {index}, which the offer rejected")]
    RejectedStreamAccepted {
        /// 0-based m-line index.
        index: usize,
    },
    /// A re-offer has fewer m-lines than the previous SDP (RFC 3264 §8).
    #[error("re-offer has {offered} m-lines, previous SDP had {previous}")]
    MediaLinesRemoved {
        /// m-lines in the previous SDP.
        previous: usize,
        /// m-lines in the new offer.
        offered: usize,
    },
    /// An offer arrived while another offer is waiting for its answer
    /// (RFC 3264 §4; glare, RFC 3261 §14.1).
    #[error("offer while another offer is pending")]
    OfferPending,
    /// SDP where neither an offer nor an answer may appear.
    #[error("SDP body where no offer or answer is expected")]
    UnexpectedSdp,
    /// A message that must carry the answer carried none (RFC 3261 §13.2.1).
    #[error("answer missing")]
    MissingAnswer,
}

impl SdpError {
    /// The SIP status a proxy answers a request carrying this SDP with:
    /// 400 for a body that does not parse, 491 for glare, 488 Not Acceptable
    /// Here for everything it cannot negotiate.
    pub fn status_code(&self) -> u16 {
        match self {
            SdpError::Empty
            | SdpError::MissingVersion
            | SdpError::MalformedLine { .. }
            | SdpError::InvalidOrigin { .. }
            | SdpError::InvalidConnection { .. }
            | SdpError::InvalidMedia { .. }
            | SdpError::UnexpectedSdp
            | SdpError::MissingAnswer => 400,
            SdpError::OfferPending => 491,
            SdpError::InvalidCrypto
            | SdpError::InvalidBase64
            | SdpError::MissingOrigin
            | SdpError::RewriteMediaCount { .. }
            | SdpError::MissingCrypto { .. }
            | SdpError::NoCommonCodec
            | SdpError::MkiRequired { .. }
            | SdpError::AnswerMediaCount { .. }
            | SdpError::RejectedStreamAccepted { .. }
            | SdpError::MediaLinesRemoved { .. } => 488,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes() {
        assert_eq!(SdpError::NoCommonCodec.status_code(), 488);
        assert_eq!(SdpError::MkiRequired { index: 0 }.status_code(), 488);
        assert_eq!(
            SdpError::AnswerMediaCount {
                offered: 2,
                answered: 1
            }
            .status_code(),
            488
        );
        assert_eq!(SdpError::MalformedLine { line: 3 }.status_code(), 400);
        assert_eq!(SdpError::OfferPending.status_code(), 491);
    }

    mod fuzz {
        use super::super::*;
        use proptest::prelude::*;

        const SEED: &str =
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/SAVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n\
a=rtcp:4001 IN IP4 10.0.0.2\r\na=rtcp-mux\r\na=ice-ufrag:x\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^31\r\n\
m=video 0 RTP/AVP 31\r\n";

        fn rewrite_for(sdp: &Sdp, port: u16, srtp: bool, keep: Option<Vec<u8>>) -> Rewrite {
            let crypto = CryptoLine::new(1, CryptoSuite::AesCm128HmacSha1_80, [9; 30]).ok();
            Rewrite {
                connection: "203.0.113.1".parse().unwrap(),
                media: (0..sdp.media().len())
                    .map(|_| MediaRewrite {
                        port,
                        rtcp_port: port.checked_add(1),
                        profile: if srtp { Profile::Srtp } else { Profile::Rtp },
                        crypto: crypto.clone(),
                        keep_formats: keep.clone(),
                    })
                    .collect(),
                strip_ice: true,
                origin: None,
            }
        }

        fn body(i: u8) -> Option<Sdp> {
            let media = match i % 5 {
                0 => return None,
                1 => "m=audio 4000 RTP/AVP 0\r\n",
                2 => "m=audio 4002 RTP/AVP 0\r\na=sendonly\r\nm=video 0 RTP/AVP 31\r\n",
                3 => "m=audio 0 RTP/AVP 0\r\nm=video 4004 RTP/AVP 31\r\n",
                _ => "m=audio 4006 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n",
            };
            let text = format!(
                "v=0\r\no=- 1 {i} IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n{media}"
            );
            Sdp::parse(text.as_bytes()).ok()
        }

        const CARRIERS: [Carrier; 7] = [
            Carrier::Invite,
            Carrier::Update,
            Carrier::Prack,
            Carrier::Ack,
            Carrier::Provisional,
            Carrier::Success,
            Carrier::Failure,
        ];

        proptest! {
            #[test]
            fn random_message_sequences_keep_invariants(
                steps in proptest::collection::vec((any::<bool>(), 0usize..7, any::<u8>()), 0..24)
            ) {
                let mut n = Negotiation::new();
                for (caller, c, b) in steps {
                    let side = if caller { Side::Caller } else { Side::Callee };
                    let before_pending = n.pending_offer().map(|(s, _)| s);
                    let r = n.on_message(side, CARRIERS[c], body(b));
                    if let Ok(Some(SdpRole::Answer)) = r {
                        prop_assert!(n.pending_offer().is_none());
                    }
                    if let Ok(Some(SdpRole::Offer)) = r {
                        prop_assert_eq!(before_pending, None);
                        prop_assert_eq!(n.pending_offer().map(|(s, _)| s), Some(side));
                    }
                    if let Some(x) = n.current() {
                        // RFC 3264 §6: every completed exchange pairs m-lines.
                        prop_assert_eq!(x.offer.media().len(), x.answer.media().len());
                        for (o, a) in x.offer.media().iter().zip(x.answer.media()) {
                            prop_assert!(!o.is_rejected() || a.is_rejected());
                        }
                        prop_assert_eq!(n.streams().len(), x.offer.media().len());
                    }
                    let _ = n.fork();
                }
            }

            #[test]
            fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
                if let Ok(sdp) = Sdp::parse(&body) {
                    prop_assert_eq!(sdp.to_vec(), body);
                    let _ = filter_offer(&sdp, &CodecPolicy::new(["PCMU"]));
                    let _ = rewrite(&sdp, &rewrite_for(&sdp, 1, false, None));
                }
            }

            #[test]
            fn mutated_sdp_never_panics_and_rewrites_reparse(
                pos in 0usize..400,
                byte in any::<u8>(),
                port in any::<u16>(),
                srtp in any::<bool>(),
                keep in proptest::option::of(proptest::collection::vec(0u8..128, 0..4)),
            ) {
                let mut body = SEED.as_bytes().to_vec();
                let pos = pos % body.len();
                body[pos] = byte;
                let Ok(sdp) = Sdp::parse(&body) else { return Ok(()); };
                prop_assert_eq!(sdp.to_vec(), body.clone());
                let mut n = Negotiation::new();
                let _ = n.on_message(Side::Caller, Carrier::Invite, Some(sdp.clone()));
                let _ = n.on_message(Side::Callee, Carrier::Success, Some(sdp.clone()));
                let _ = n.streams();
                if let Ok(out) = rewrite(&sdp, &rewrite_for(&sdp, port, srtp, keep)) {
                    let re = Sdp::parse(&out);
                    prop_assert!(re.is_ok(), "{:?}", String::from_utf8_lossy(&out));
                    let re = re.unwrap();
                    prop_assert_eq!(re.media().len(), sdp.media().len());
                    for (a, b) in sdp.media().iter().zip(re.media()) {
                        if a.is_rejected() {
                            prop_assert!(b.is_rejected());
                        }
                    }
                }
            }
        }
    }
}
