//! Per-dialog offer/answer state (RFC 3264, RFC 3261 §13.2.1, RFC 6337),
//! pure: the caller reports which message carried which body.
//!
//! A media-anchoring proxy has two offer/answer relationships per dialog:
//! the caller with the anchor and the anchor with the callee. Keep one
//! [`Negotiation`] per leg and feed each the bodies as that leg saw them
//! (the UA's original, and our rewritten body): then [`NegotiatedStream::srtp`] and
//! [`NegotiatedStream::rtcp_mux`] describe that leg, and the UA's [`Endpoint`] is where
//! the anchor sends that leg's media. Fed with both originals instead, the
//! endpoints are still each UA's addresses and crypto.

use super::{ConnAddr, CryptoLine, Direction, Proto, Sdp, SdpError};

/// The two ends of the dialog, named after the initial INVITE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The UAC of the initial INVITE.
    Caller,
    /// The UAS of the initial INVITE.
    Callee,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Caller => Side::Callee,
            Side::Callee => Side::Caller,
        }
    }
}

/// The message that carried (or did not carry) a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carrier {
    /// INVITE or re-INVITE.
    Invite,
    /// UPDATE (RFC 3311): its body is always an offer.
    Update,
    /// PRACK (RFC 3262): answer to an offer in a reliable 18x, or a new offer.
    Prack,
    /// ACK of a 2xx: carries the answer to an offer made in the 2xx.
    Ack,
    /// 1xx response.
    Provisional,
    /// 2xx response.
    Success,
    /// 3xx–6xx response to the request that carried the pending offer.
    Failure,
}

/// What a body turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SdpRole {
    /// An offer (RFC 3264 §5, §8).
    Offer,
    /// An answer (RFC 3264 §6).
    Answer,
}

/// A completed offer/answer exchange.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// Who made the offer.
    pub offerer: Side,
    /// The offer.
    pub offer: Sdp,
    /// The answer.
    pub answer: Sdp,
    /// The answer came in a provisional response (early media) and no 2xx
    /// has confirmed the dialog yet.
    pub early: bool,
}

impl Exchange {
    /// The SDP `side` wrote.
    pub fn sdp_of(&self, side: Side) -> &Sdp {
        if side == self.offerer {
            &self.offer
        } else {
            &self.answer
        }
    }
}

/// One side's description of one m-line: where it wants to receive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Effective connection address (media `c=`, else session `c=`).
    pub address: Option<ConnAddr>,
    /// RTP port (0: rejected).
    pub rtp_port: u16,
    /// RTCP address (RFC 3605 `a=rtcp` address, else `address`).
    pub rtcp_address: Option<ConnAddr>,
    /// RTCP port (RFC 3605 `a=rtcp`, else RTP + 1); with negotiated
    /// rtcp-mux RTCP goes to `rtp_port` instead.
    pub rtcp_port: Option<u16>,
    /// This side asked for `a=rtcp-mux`.
    pub rtcp_mux: bool,
    /// Effective direction as this side wrote it.
    pub direction: Direction,
    /// Hold as this side wrote it: sendonly/inactive or `c=0.0.0.0`.
    pub on_hold: bool,
    /// Transport protocol.
    pub proto: Proto,
    /// Payload types.
    pub payload_types: Vec<u8>,
    /// The SDES crypto lines this side offered/answered (suite + key).
    pub crypto: Vec<CryptoLine>,
    /// Crypto lines are present but every one needs an MKI.
    pub requires_mki: bool,
    /// This side keys with SDES: a non-DTLS SAVP/SAVPF m-line, or RTP/AVP
    /// with a usable crypto line (RFC 8643 opportunistic SRTP).
    pub sdes: bool,
}

impl Endpoint {
    /// Builds the endpoint of m-line `index` of `sdp`.
    pub fn from_sdp(sdp: &Sdp, index: usize) -> Option<Endpoint> {
        let m = sdp.media().get(index)?;
        let (rtcp_address, rtcp_port) = match sdp.media_rtcp(index) {
            Some((a, p)) => (a, Some(p)),
            None => (None, None),
        };
        Some(Endpoint {
            address: sdp.media_connection(index).map(|c| c.address.clone()),
            rtp_port: m.port(),
            rtcp_address,
            rtcp_port,
            rtcp_mux: m.rtcp_mux(),
            direction: sdp.media_direction(index),
            on_hold: sdp.media_on_hold(index),
            proto: m.proto().clone(),
            payload_types: m.payload_types(),
            crypto: m.crypto().to_vec(),
            requires_mki: m.requires_mki(),
            sdes: !m.proto().is_dtls()
                && m.proto().is_rtp()
                && (m.proto().is_secure() || m.usable_crypto().is_some()),
        })
    }

    /// The first crypto line the media layer can use (known suite, right key
    /// length, no MKI).
    pub fn usable_crypto(&self) -> Option<&CryptoLine> {
        self.crypto.iter().find(|c| c.is_usable())
    }
}

/// What the media layer needs about one negotiated m-line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NegotiatedStream {
    /// m-line index.
    pub index: usize,
    /// Media type.
    pub kind: String,
    /// Offer or answer has port 0.
    pub rejected: bool,
    /// The caller's side.
    pub caller: Endpoint,
    /// The callee's side.
    pub callee: Endpoint,
    /// Both offer and answer carry `a=rtcp-mux` (RFC 5761 §5.1.1).
    pub rtcp_mux: bool,
    /// SDES-SRTP is in use: the answer uses a secure profile, or offer and
    /// answer both carry crypto on RTP/AVP (RFC 8643 opportunistic SRTP).
    pub srtp: bool,
    /// Either side holds the stream.
    pub on_hold: bool,
}

impl NegotiatedStream {
    /// The endpoint of `side`.
    pub fn endpoint(&self, side: Side) -> &Endpoint {
        match side {
            Side::Caller => &self.caller,
            Side::Callee => &self.callee,
        }
    }
}

/// Offer/answer state of one dialog. A forked INVITE gets one per early
/// dialog: see [`Negotiation::fork`].
#[derive(Clone, Debug, Default)]
pub struct Negotiation {
    pending: Option<(Side, Sdp)>,
    /// A request without body was sent by the other side: the offer will
    /// come in a response from this side (RFC 3261 §13.2.1 late offer).
    late_offer_from: Option<Side>,
    current: Option<Exchange>,
    /// The current answer came in a provisional response: later 18x/2xx to
    /// the same request may carry it again (RFC 3261 §13.2.1, RFC 6337).
    answer_repeatable: bool,
}

fn check_mki(sdp: &Sdp) -> Result<(), SdpError> {
    for (index, m) in sdp.media().iter().enumerate() {
        // Only an SDES-keyed SAVP line depends on its crypto; on RTP/AVP
        // (RFC 8643) unusable crypto just means plain RTP.
        if !m.is_rejected() && m.proto().is_secure() && !m.proto().is_dtls() && m.requires_mki() {
            return Err(SdpError::MkiRequired { index });
        }
    }
    Ok(())
}

fn check_answer(offer: &Sdp, answer: &Sdp) -> Result<(), SdpError> {
    let (o, a) = (offer.media(), answer.media());
    // RFC 3264 §6: one m-line in the answer per m-line in the offer.
    if o.len() != a.len() {
        return Err(SdpError::AnswerMediaCount {
            offered: o.len(),
            answered: a.len(),
        });
    }
    for (index, (om, am)) in o.iter().zip(a).enumerate() {
        if om.is_rejected() && !am.is_rejected() {
            return Err(SdpError::RejectedStreamAccepted { index });
        }
    }
    check_mki(answer)
}

impl Negotiation {
    /// A dialog with no SDP seen yet.
    pub fn new() -> Negotiation {
        Negotiation::default()
    }

    /// Records a message from `from`. Returns what its body was (`None` if it
    /// had none). On error the state is unchanged, except that an ACK
    /// missing its answer abandons the offer of the 2xx.
    pub fn on_message(
        &mut self,
        from: Side,
        carrier: Carrier,
        sdp: Option<Sdp>,
    ) -> Result<Option<SdpRole>, SdpError> {
        let pending_from_other = self.pending.as_ref().is_some_and(|(s, _)| *s != from);
        match (carrier, sdp) {
            (Carrier::Invite | Carrier::Update, Some(sdp)) => self.offer(from, sdp).map(Some),
            (Carrier::Invite, None) => {
                if self.pending.is_some() {
                    return Err(SdpError::OfferPending);
                }
                self.late_offer_from = Some(from.other());
                self.answer_repeatable = false;
                Ok(None)
            }
            (Carrier::Prack, Some(sdp)) => {
                if pending_from_other {
                    self.answer(from, sdp, false).map(Some)
                } else {
                    self.offer(from, sdp).map(Some)
                }
            }
            (Carrier::Ack, Some(sdp)) => {
                if pending_from_other {
                    self.answer(from, sdp, false).map(Some)
                } else if self.repeats_current(from, &sdp) {
                    Ok(None)
                } else {
                    Err(SdpError::UnexpectedSdp)
                }
            }
            (Carrier::Ack, None) => {
                if pending_from_other {
                    // RFC 3261 §13.2.1: an offer in a 2xx is answered in the
                    // ACK; without it the offer is void.
                    self.pending = None;
                    return Err(SdpError::MissingAnswer);
                }
                Ok(None)
            }
            (Carrier::Provisional | Carrier::Success, Some(sdp)) => {
                let early = carrier == Carrier::Provisional;
                if pending_from_other {
                    self.answer(from, sdp, early).map(Some)
                } else if self.late_offer_from == Some(from) {
                    self.offer(from, sdp).map(Some)
                } else if self.answer_repeatable
                    && self.current.as_ref().is_some_and(|c| c.offerer != from)
                {
                    self.repeat_answer(sdp, early).map(Some)
                } else if self.repeats_current(from, &sdp) {
                    // A copy of what this side already sent (e.g. the answer
                    // of a reliable 18x again in the 2xx): nothing new.
                    if carrier == Carrier::Success {
                        if let Some(c) = &mut self.current {
                            c.early = false;
                        }
                    }
                    Ok(None)
                } else {
                    Err(SdpError::UnexpectedSdp)
                }
            }
            (Carrier::Success, None) => {
                if pending_from_other {
                    return Err(SdpError::MissingAnswer);
                }
                if let Some(c) = &mut self.current {
                    c.early = false;
                }
                self.answer_repeatable = false;
                Ok(None)
            }
            (Carrier::Failure, _) => {
                // RFC 3261 §14.1, RFC 3311: a failed offer leaves the
                // session as it was.
                if pending_from_other {
                    self.pending = None;
                }
                if self.late_offer_from == Some(from) {
                    self.late_offer_from = None;
                }
                self.answer_repeatable = false;
                Ok(None)
            }
            (Carrier::Update | Carrier::Prack | Carrier::Provisional, None) => Ok(None),
        }
    }

    /// True if `sdp` is byte-identical to the body `from` gave in the current
    /// exchange.
    fn repeats_current(&self, from: Side, sdp: &Sdp) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| c.sdp_of(from).as_bytes() == sdp.as_bytes())
    }

    fn offer(&mut self, from: Side, sdp: Sdp) -> Result<SdpRole, SdpError> {
        // RFC 3264 §4: no new offer until the previous one is answered.
        if self.pending.is_some() {
            return Err(SdpError::OfferPending);
        }
        if let Some(c) = &self.current {
            // RFC 3264 §8: m-lines are never removed, only rejected.
            let previous = c.offer.media().len().max(c.answer.media().len());
            if sdp.media().len() < previous {
                return Err(SdpError::MediaLinesRemoved {
                    previous,
                    offered: sdp.media().len(),
                });
            }
        }
        check_mki(&sdp)?;
        self.pending = Some((from, sdp));
        self.late_offer_from = None;
        self.answer_repeatable = false;
        Ok(SdpRole::Offer)
    }

    fn answer(&mut self, from: Side, sdp: Sdp, early: bool) -> Result<SdpRole, SdpError> {
        let Some((offerer, offer)) = self.pending.take() else {
            return Err(SdpError::UnexpectedSdp);
        };
        if let Err(e) = check_answer(&offer, &sdp) {
            self.pending = Some((offerer, offer));
            return Err(e);
        }
        debug_assert_eq!(offerer, from.other());
        self.current = Some(Exchange {
            offerer,
            offer,
            answer: sdp,
            early,
        });
        self.answer_repeatable = early;
        Ok(SdpRole::Answer)
    }

    fn repeat_answer(&mut self, sdp: Sdp, early: bool) -> Result<SdpRole, SdpError> {
        let Some(c) = &mut self.current else {
            return Err(SdpError::UnexpectedSdp);
        };
        check_answer(&c.offer, &sdp)?;
        c.answer = sdp;
        c.early = early;
        self.answer_repeatable = early;
        Ok(SdpRole::Answer)
    }

    /// The state for another early dialog of the same initial INVITE (a 1xx
    /// or 2xx with a new To tag after forking, RFC 3261 §13.2.2.4): the
    /// INVITE's offer is pending again so that dialog's own answer can be
    /// applied; with a late offer, that dialog's own offer is awaited.
    pub fn fork(&self) -> Negotiation {
        let late = |side: Side| Negotiation {
            late_offer_from: Some(side),
            ..Negotiation::default()
        };
        match (&self.pending, &self.current) {
            (Some((Side::Callee, _)), None) => late(Side::Callee),
            (_, Some(c)) if c.early && self.pending.is_none() => match c.offerer {
                Side::Caller => Negotiation {
                    pending: Some((Side::Caller, c.offer.clone())),
                    ..Negotiation::default()
                },
                Side::Callee => late(Side::Callee),
            },
            _ => self.clone(),
        }
    }

    /// The offer waiting for its answer, and who made it.
    pub fn pending_offer(&self) -> Option<(Side, &Sdp)> {
        self.pending.as_ref().map(|(s, sdp)| (*s, sdp))
    }

    /// True if a request without body was seen and the offer is expected in
    /// a response (late offer).
    pub fn awaiting_late_offer(&self) -> bool {
        self.late_offer_from.is_some()
    }

    /// The last completed exchange.
    pub fn current(&self) -> Option<&Exchange> {
        self.current.as_ref()
    }

    /// True if the current exchange completed in a provisional response only.
    pub fn is_early(&self) -> bool {
        self.current.as_ref().is_some_and(|c| c.early)
    }

    /// Per m-line view of the current exchange for the media layer.
    pub fn streams(&self) -> Vec<NegotiatedStream> {
        let Some(c) = &self.current else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(c.offer.media().len());
        for (index, (om, am)) in c.offer.media().iter().zip(c.answer.media()).enumerate() {
            let (Some(oe), Some(ae)) = (
                Endpoint::from_sdp(&c.offer, index),
                Endpoint::from_sdp(&c.answer, index),
            ) else {
                continue;
            };
            let srtp = if am.proto().is_rtp() && !am.proto().is_secure() {
                // RFC 8643: RTP/AVP with crypto on both sides.
                oe.usable_crypto().is_some() && ae.usable_crypto().is_some()
            } else {
                am.proto().is_secure() && !am.proto().is_dtls()
            };
            let (caller, callee) = match c.offerer {
                Side::Caller => (oe, ae),
                Side::Callee => (ae, oe),
            };
            out.push(NegotiatedStream {
                index,
                kind: om.kind().to_owned(),
                rejected: om.is_rejected() || am.is_rejected(),
                rtcp_mux: om.rtcp_mux() && am.rtcp_mux(),
                srtp,
                on_hold: caller.on_hold || callee.on_hold,
                caller,
                callee,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdp(version: u32, media: &str) -> Sdp {
        let body = format!(
            "v=0\r\no=- 1 {version} IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n{media}"
        );
        Sdp::parse(body.as_bytes()).unwrap()
    }

    const KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

    #[test]
    fn offer_in_invite_answer_in_200() {
        let mut n = Negotiation::new();
        let r = n.on_message(
            Side::Caller,
            Carrier::Invite,
            Some(sdp(1, "m=audio 4000 RTP/AVP 0 8\r\n")),
        );
        assert_eq!(r, Ok(Some(SdpRole::Offer)));
        assert_eq!(n.pending_offer().map(|p| p.0), Some(Side::Caller));
        assert!(n.streams().is_empty());
        let r = n.on_message(
            Side::Callee,
            Carrier::Success,
            Some(sdp(1, "m=audio 5000 RTP/AVP 0\r\n")),
        );
        assert_eq!(r, Ok(Some(SdpRole::Answer)));
        assert!(n.pending_offer().is_none());
        assert!(!n.is_early());
        let s = n.streams();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].caller.rtp_port, 4000);
        assert_eq!(s[0].callee.rtp_port, 5000);
        assert_eq!(s[0].callee.rtcp_port, Some(5001));
        assert_eq!(s[0].callee.payload_types, vec![0]);
        assert!(!s[0].rejected && !s[0].on_hold && !s[0].rtcp_mux && !s[0].srtp);
        assert_eq!(n.on_message(Side::Caller, Carrier::Ack, None), Ok(None));
    }

    #[test]
    fn late_offer_in_200_answer_in_ack() {
        let mut n = Negotiation::new();
        assert_eq!(n.on_message(Side::Caller, Carrier::Invite, None), Ok(None));
        assert!(n.awaiting_late_offer());
        assert_eq!(
            n.on_message(Side::Callee, Carrier::Provisional, None),
            Ok(None)
        );
        let r = n.on_message(
            Side::Callee,
            Carrier::Success,
            Some(sdp(1, "m=audio 5000 RTP/AVP 0 8\r\n")),
        );
        assert_eq!(r, Ok(Some(SdpRole::Offer)));
        assert_eq!(n.pending_offer().map(|p| p.0), Some(Side::Callee));
        let r = n.on_message(
            Side::Caller,
            Carrier::Ack,
            Some(sdp(1, "m=audio 4000 RTP/AVP 8\r\n")),
        );
        assert_eq!(r, Ok(Some(SdpRole::Answer)));
        let s = n.streams();
        assert_eq!(s[0].caller.rtp_port, 4000);
        assert_eq!(s[0].callee.rtp_port, 5000);
    }

    #[test]
    fn ack_without_answer_is_an_error() {
        let mut n = Negotiation::new();
        n.on_message(Side::Caller, Carrier::Invite, None).unwrap();
        n.on_message(
            Side::Callee,
            Carrier::Success,
            Some(sdp(1, "m=audio 5000 RTP/AVP 0\r\n")),
        )
        .unwrap();
        assert_eq!(
            n.on_message(Side::Caller, Carrier::Ack, None),
            Err(SdpError::MissingAnswer)
        );
        assert!(n.pending_offer().is_none());
    }

    #[test]
    fn several_18x_with_early_media_then_200() {
        let mut n = Negotiation::new();
        n.on_message(
            Side::Caller,
            Carrier::Invite,
            Some(sdp(1, "m=audio 4000 RTP/AVP 0 8\r\n")),
        )
        .unwrap();
        let r = n.on_message(
            Side::Callee,
            Carrier::Provisional,
            Some(sdp(1, "m=audio 5000 RTP/AVP 0\r\n")),
        );
        assert_eq!(r, Ok(Some(SdpRole::Answer)));
        assert!(n.is_early());
        // 183 again, with the announcement server's port.
        let r = n.on_message(
            Side::Callee,
            Carrier::Provisional,
            Some(sdp(1, "m=audio 5002 RTP/AVP 0\r\n")),
        );
        assert_eq!(r, Ok(Some(SdpRole::Answer)));
        assert_eq!(n.streams()[0].callee.rtp_port, 5002);
        let r = n.on_message(
            Side::Callee,
            Carrier::Success,
            Some(sdp(1, "m=audio 5004 RTP/AVP 0\r\n")),
        );
        assert_eq!(r, Ok(Some(SdpRole::Answer)));
        assert!(!n.is_early());
        assert_eq!(n.streams()[0].callee.rtp_port, 5004);
        // After the 2xx a different body in a response is not expected any
        // more; a byte-identical copy is ignored.
        assert_eq!(
            n.on_message(
                Side::Callee,
                Carrier::Success,
                Some(sdp(1, "m=audio 5006 RTP/AVP 0\r\n"))
            ),
            Err(SdpError::UnexpectedSdp)
        );
        assert_eq!(
            n.on_message(
                Side::Callee,
                Carrier::Success,
                Some(sdp(1, "m=audio 5004 RTP/AVP 0\r\n"))
            ),
            Ok(None)
        );
    }

    #[test]
    fn early_answer_confirmed_by_200_without_body() {
        let mut n = Negotiation::new();
        n.on_message(
            Side::Caller,
            Carrier::Invite,
            Some(sdp(1, "m=audio 4000 RTP/AVP 0\r\n")),
        )
        .unwrap();
        n.on_message(
            Side::Callee,
            Carrier::Provisional,
            Some(sdp(1, "m=audio 5000 RTP/AVP 0\r\n")),
        )
        .unwrap();
        assert!(n.is_early());
        assert_eq!(n.on_message(Side::Callee, Carrier::Success, None), Ok(None));
        assert!(!n.is_early());
    }

    #[test]
    fn forked_early_dialogs_get_their_own_answer() {
        let mut a = Negotiation::new();
        a.on_message(
            Side::Caller,
            Carrier::Invite,
            Some(sdp(1, "m=audio 4000 RTP/AVP 0\r\n")),
        )
        .unwrap();
        let before = a.fork();
        assert_eq!(before.pending_offer().map(|p| p.0), Some(Side::Caller));
        a.on_message(
            Side::Callee,
            Carrier::Provisional,
            Some(sdp(1, "m=audio 5000 RTP/AVP 0\r\n")),
        )
        .unwrap();
        // A second early dialog shows up after the first answered.
        let mut b = a.fork();
        assert!(b.current().is_none());
        assert_eq!(
            b.on_message(
                Side::Callee,
                Carrier::Provisional,
                Some(sdp(1, "m=audio 6000 RTP/AVP 0\r\n"))
            ),
            Ok(Some(SdpRole::Answer))
        );
        assert_eq!(a.streams()[0].callee.rtp_port, 5000);
        assert_eq!(b.streams()[0].callee.rtp_port, 6000);
        assert_eq!(b.streams()[0].caller.rtp_port, 4000);

        // Late offer: each dialog makes its own offer.
        let mut l = Negotiation::new();
        l.on_message(Side::Caller, Carrier::Invite, None).unwrap();
        l.on_message(
            Side::Callee,
            Carrier::Provisional,
            Some(sdp(1, "m=audio 5000 RTP/AVP 0\r\n")),
        )
        .unwrap();
        let mut m = l.fork();
        assert!(m.awaiting_late_offer() && m.pending_offer().is_none());
        assert_eq!(
            m.on_message(
                Side::Callee,
                Carrier::Success,
                Some(sdp(1, "m=audio 7000 RTP/AVP 0\r\n"))
            ),
            Ok(Some(SdpRole::Offer))
        );
        // A confirmed dialog forks into a plain copy.
        let mut c = Negotiation::new();
        c.on_message(
            Side::Caller,
            Carrier::Invite,
            Some(sdp(1, "m=audio 4000 RTP/AVP 0\r\n")),
        )
        .unwrap();
        c.on_message(
            Side::Callee,
            Carrier::Success,
            Some(sdp(1, "m=audio 5000 RTP/AVP 0\r\n")),
        )
        .unwrap();
        assert_eq!(c.fork().streams(), c.streams());
    }

    #[test]
    fn answer_media_count_must_match() {
        let mut n = Negotiation::new();
        n.on_message(
            Side::Caller,
            Carrier::Invite,
            Some(sdp(
                1,
                "m=audio 4000 RTP/AVP 0\r\nm=video 4002 RTP/AVP 31\r\n",
            )),
        )
        .unwrap();
        let r = n.on_message(
            Side::Callee,
            Carrier::Success,
            Some(sdp(1, "m=audio 5000 RTP/AVP 0\r\n")),
        );
        assert_eq!(
            r,
            Err(SdpError::AnswerMediaCount {
                offered: 2,
                answered: 1
            })
        );
        assert_eq!(r.unwrap_err().status_code(), 488);
        // The offer is still pending; a proper answer completes it.
        assert!(n.pending_offer().is_some());
        let r = n.on_message(
            Side::Callee,
            Carrier::Success,
            Some(sdp(1, "m=audio 5000 RTP/AVP 0\r\nm=video 0 RTP/AVP 31\r\n")),
        );
        assert_eq!(r, Ok(Some(SdpRole::Answer)));
        let s = n.streams();
        assert!(!s[0].rejected);
        assert!(s[1].rejected);
    }

    #[test]
    fn rejected_stream_stays_rejected() {
        let mut n = Negotiation::new();
        n.on_message(
            Side::Caller,
            Carrier::Invite,
            Some(sdp(1, "m=audio 4000 RTP/AVP 0\r\nm=video 0 RTP/AVP 31\r\n")),
        )
        .unwrap();
        let r = n.on_message(
            Side::Callee,
            Carrier::Success,
            Some(sdp(
                1,
                "m=audio 5000 RTP/AVP 0\r\nm=video 5002 RTP/AVP 31\r\n",
            )),
        );
        assert_eq!(r, Err(SdpError::RejectedStreamAccepted { index: 1 }));
    }

    #[test]
    fn reinvite_hold_resume_and_port_change() {
        let mut n = Negotiation::new();
        n.on_message(
            Side::Caller,
            Carrier::Invite,
            Some(sdp(1, "m=audio 4000 RTP/AVP 0 8\r\n")),
        )
        .unwrap();
        n.on_message(
            Side::Callee,
            Carrier::Success,
            Some(sdp(1, "m=audio 5000 RTP/AVP 0\r\n")),
        )
        .unwrap();
        // Callee holds with sendonly (RFC 3264 §8.4).
        n.on_message(
            Side::Callee,
            Carrier::Invite,
            Some(sdp(2, "m=audio 5000 RTP/AVP 0\r\na=sendonly\r\n")),
        )
        .unwrap();
        n.on_message(
            Side::Caller,
            Carrier::Success,
            Some(sdp(2, "m=audio 4000 RTP/AVP 0\r\na=recvonly\r\n")),
        )
        .unwrap();
        let s = n.streams();
        assert!(s[0].on_hold);
        assert!(s[0].callee.on_hold);
        assert_eq!(s[0].callee.direction, Direction::SendOnly);
        assert_eq!(s[0].caller.direction, Direction::RecvOnly);
        // Both directions off.
        n.on_message(
            Side::Caller,
            Carrier::Update,
            Some(sdp(3, "m=audio 4000 RTP/AVP 0\r\na=inactive\r\n")),
        )
        .unwrap();
        n.on_message(
            Side::Callee,
            Carrier::Success,
            Some(sdp(3, "m=audio 5000 RTP/AVP 0\r\na=inactive\r\n")),
        )
        .unwrap();
        assert!(n.streams()[0].on_hold);
        assert_eq!(n.streams()[0].caller.direction, Direction::Inactive);
        // Old-style hold with c=0.0.0.0.
        let hold = Sdp::parse(
            b"v=0\r\no=- 1 3 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n",
        )
        .unwrap();
        n.on_message(Side::Callee, Carrier::Update, Some(hold))
            .unwrap();
        n.on_message(
            Side::Caller,
            Carrier::Success,
            Some(sdp(3, "m=audio 4000 RTP/AVP 0\r\n")),
        )
        .unwrap();
        assert!(n.streams()[0].on_hold);
        assert!(n.streams()[0]
            .callee
            .address
            .as_ref()
            .is_some_and(ConnAddr::is_hold));
        // Resume with a new port and codec.
        n.on_message(
            Side::Callee,
            Carrier::Invite,
            Some(sdp(4, "m=audio 6000 RTP/AVP 8\r\n")),
        )
        .unwrap();
        n.on_message(
            Side::Caller,
            Carrier::Success,
            Some(sdp(4, "m=audio 4000 RTP/AVP 8\r\n")),
        )
        .unwrap();
        let s = n.streams();
        assert!(!s[0].on_hold);
        assert_eq!(s[0].callee.rtp_port, 6000);
        assert_eq!(s[0].callee.payload_types, vec![8]);
        assert_eq!(n.current().unwrap().offerer, Side::Callee);
    }

    #[test]
    fn failed_reinvite_keeps_the_session() {
        let mut n = Negotiation::new();
        n.on_message(
            Side::Caller,
            Carrier::Invite,
            Some(sdp(1, "m=audio 4000 RTP/AVP 0\r\n")),
        )
        .unwrap();
        n.on_message(
            Side::Callee,
            Carrier::Success,
            Some(sdp(1, "m=audio 5000 RTP/AVP 0\r\n")),
        )
        .unwrap();
        n.on_message(
            Side::Caller,
            Carrier::Invite,
            Some(sdp(2, "m=audio 4100 RTP/AVP 0\r\n")),
        )
        .unwrap();
        // Glare: the callee offers too.
        assert_eq!(
            n.on_message(
                Side::Callee,
                Carrier::Update,
                Some(sdp(2, "m=audio 5100 RTP/AVP 0\r\n"))
            ),
            Err(SdpError::OfferPending)
        );
        assert_eq!(n.on_message(Side::Callee, Carrier::Failure, None), Ok(None));
        assert!(n.pending_offer().is_none());
        assert_eq!(n.streams()[0].caller.rtp_port, 4000);
    }

    #[test]
    fn reoffer_cannot_remove_m_lines() {
        let mut n = Negotiation::new();
        n.on_message(
            Side::Caller,
            Carrier::Invite,
            Some(sdp(
                1,
                "m=audio 4000 RTP/AVP 0\r\nm=video 4002 RTP/AVP 31\r\n",
            )),
        )
        .unwrap();
        n.on_message(
            Side::Callee,
            Carrier::Success,
            Some(sdp(
                1,
                "m=audio 5000 RTP/AVP 0\r\nm=video 5002 RTP/AVP 31\r\n",
            )),
        )
        .unwrap();
        assert_eq!(
            n.on_message(
                Side::Caller,
                Carrier::Invite,
                Some(sdp(2, "m=audio 4000 RTP/AVP 0\r\n"))
            ),
            Err(SdpError::MediaLinesRemoved {
                previous: 2,
                offered: 1
            })
        );
    }

    #[test]
    fn offer_in_reliable_18x_answer_in_prack() {
        let mut n = Negotiation::new();
        n.on_message(Side::Caller, Carrier::Invite, None).unwrap();
        assert_eq!(
            n.on_message(
                Side::Callee,
                Carrier::Provisional,
                Some(sdp(1, "m=audio 5000 RTP/AVP 0\r\n"))
            ),
            Ok(Some(SdpRole::Offer))
        );
        assert_eq!(
            n.on_message(
                Side::Caller,
                Carrier::Prack,
                Some(sdp(1, "m=audio 4000 RTP/AVP 0\r\n"))
            ),
            Ok(Some(SdpRole::Answer))
        );
        // A PRACK with SDP and nothing pending is a new offer (RFC 3262).
        assert_eq!(
            n.on_message(
                Side::Caller,
                Carrier::Prack,
                Some(sdp(2, "m=audio 4000 RTP/AVP 0\r\n"))
            ),
            Ok(Some(SdpRole::Offer))
        );
    }

    #[test]
    fn ack_with_unexpected_sdp() {
        let mut n = Negotiation::new();
        n.on_message(
            Side::Caller,
            Carrier::Invite,
            Some(sdp(1, "m=audio 4000 RTP/AVP 0\r\n")),
        )
        .unwrap();
        n.on_message(
            Side::Callee,
            Carrier::Success,
            Some(sdp(1, "m=audio 5000 RTP/AVP 0\r\n")),
        )
        .unwrap();
        assert_eq!(
            n.on_message(
                Side::Caller,
                Carrier::Ack,
                Some(sdp(1, "m=audio 4002 RTP/AVP 0\r\n"))
            ),
            Err(SdpError::UnexpectedSdp)
        );
        // The caller repeating its own offer in the ACK is harmless.
        assert_eq!(
            n.on_message(
                Side::Caller,
                Carrier::Ack,
                Some(sdp(1, "m=audio 4000 RTP/AVP 0\r\n"))
            ),
            Ok(None)
        );
    }

    #[test]
    fn mki_only_offer_is_refused_and_crypto_exposed() {
        let mut n = Negotiation::new();
        let mki = format!("m=audio 4000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^31|1:4\r\n");
        let r = n.on_message(Side::Caller, Carrier::Invite, Some(sdp(1, &mki)));
        assert_eq!(r, Err(SdpError::MkiRequired { index: 0 }));
        assert!(n.pending_offer().is_none());

        let ok = format!(
            "m=audio 4000 RTP/SAVP 0\r\na=rtcp-mux\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^31|1:4\r\na=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\n"
        );
        n.on_message(Side::Caller, Carrier::Invite, Some(sdp(1, &ok)))
            .unwrap();
        let ans = format!(
            "m=audio 5000 RTP/SAVP 0\r\na=rtcp-mux\r\na=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\n"
        );
        n.on_message(Side::Callee, Carrier::Success, Some(sdp(1, &ans)))
            .unwrap();
        let s = &n.streams()[0];
        assert!(s.srtp);
        assert!(s.rtcp_mux);
        assert!(!s.caller.requires_mki);
        assert_eq!(s.caller.crypto.len(), 2);
        let c = s.caller.usable_crypto().unwrap();
        assert_eq!(c.tag, 2);
        assert_eq!(c.master_key_salt().len(), 30);
        assert_eq!(s.callee.usable_crypto().unwrap().tag, 2);
    }

    #[test]
    fn mki_only_on_rtp_avp_is_plain_rtp() {
        let mut n = Negotiation::new();
        let osrtp = format!(
            "m=audio 4000 RTP/AVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|1:4\r\n"
        );
        n.on_message(Side::Caller, Carrier::Invite, Some(sdp(1, &osrtp)))
            .unwrap();
        n.on_message(
            Side::Callee,
            Carrier::Success,
            Some(sdp(1, "m=audio 5000 RTP/AVP 0\r\n")),
        )
        .unwrap();
        let s = &n.streams()[0];
        assert!(!s.srtp);
        assert!(s.caller.requires_mki);
    }

    #[test]
    fn opportunistic_srtp_when_both_sides_send_crypto() {
        let mut n = Negotiation::new();
        let o = format!(
            "m=audio 4000 RTP/AVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\n"
        );
        n.on_message(Side::Caller, Carrier::Invite, Some(sdp(1, &o)))
            .unwrap();
        let a = o.replace("4000", "5000");
        n.on_message(Side::Callee, Carrier::Success, Some(sdp(1, &a)))
            .unwrap();
        assert!(n.streams()[0].srtp);
    }

    #[test]
    fn rtcp_mux_needs_both_sides() {
        let mut n = Negotiation::new();
        n.on_message(
            Side::Caller,
            Carrier::Invite,
            Some(sdp(1, "m=audio 4000 RTP/AVP 0\r\na=rtcp-mux\r\n")),
        )
        .unwrap();
        n.on_message(
            Side::Callee,
            Carrier::Success,
            Some(sdp(1, "m=audio 5000 RTP/AVP 0\r\n")),
        )
        .unwrap();
        let s = &n.streams()[0];
        assert!(s.caller.rtcp_mux);
        assert!(!s.rtcp_mux);
    }
}
