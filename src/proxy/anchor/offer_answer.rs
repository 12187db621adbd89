//! RFC 3264 offer/answer per leg: a body from one side is recorded in that leg's negotiation,
//! checked against the leg's SRTP mode and codec policy, and rewritten for the other leg (our
//! media address and ports, our SDES key, ICE stripped). Pure: the media changes it implies
//! come back as [`MediaUpdate`]s for the anchor to hand to its backend.

use std::net::IpAddr;

use tracing::{debug, warn};

use super::body::{endpoint_addrs, idx, is_auxiliary, leg_of, pick_crypto, side_of, silent};
use super::Call;
use crate::config::{Side, SrtpMode};
use crate::media::{MediaUpdate, SrtpParams};
use crate::sdp::{
    filter_offer, rewrite, Carrier, CodecPolicy, CryptoLine, CryptoSuite, Endpoint, MediaRewrite,
    OriginRewrite, Profile, Rewrite, Sdp, SdpError, SdpRole,
};

/// Records a body from `from` in both legs' negotiations and rewrites it for the other leg.
/// Returns the rewritten body and the media updates it implies, for the caller to hand to the
/// backend.
pub(super) fn process(
    call: &mut Call,
    ip: IpAddr,
    policies: &[CodecPolicy; 2],
    from: Side,
    carrier: Carrier,
    sdp: Sdp,
) -> Result<(Vec<u8>, Vec<MediaUpdate>), SdpError> {
    let mut updates = Vec::new();
    let lx = leg_of(from);
    let rx = call.role(from);
    let orig = sdp.bytes().clone();
    match call.neg[idx(lx)].on_message(rx, carrier, Some(sdp.clone()))? {
        Some(SdpRole::Offer) => {
            let out = offer_toward_other(call, ip, policies, from, carrier, &sdp, &mut updates)?;
            call.last[idx(lx)] = Some((orig, out.clone()));
            Ok((out, updates))
        }
        Some(SdpRole::Answer) => {
            let out = answer_toward_other(call, ip, from, carrier, &sdp, &mut updates)?;
            call.last[idx(lx)] = Some((orig, out.clone()));
            Ok((out, updates))
        }
        None => match &call.last[idx(lx)] {
            // The same body again (an answer repeated in the 2xx): the same rewrite.
            Some((o, w)) if *o == orig => Ok((w.clone(), updates)),
            _ => Err(SdpError::UnexpectedSdp),
        },
    }
}

/// `from` made an offer (already recorded in its leg's negotiation): check it against its leg's
/// SRTP mode, filter codecs, point it at our other leg and record it there.
fn offer_toward_other(
    call: &mut Call,
    ip: IpAddr,
    policies: &[CodecPolicy; 2],
    from: Side,
    carrier: Carrier,
    sdp: &Sdp,
    updates: &mut Vec<MediaUpdate>,
) -> Result<Vec<u8>, SdpError> {
    let lx = leg_of(from);
    let ly = lx.other();
    let rx = call.role(from);
    let undo = |call: &mut Call| {
        // Take the offer back out of X's negotiation: the request is refused.
        let _ = call.neg[idx(lx)].on_message(rx.other(), Carrier::Failure, None);
    };
    let fx = filter_offer(sdp, &policies[idx(lx)]);
    let fy = filter_offer(sdp, &policies[idx(ly)]);
    let (fx, fy) = match (fx, fy) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            undo(call);
            return Err(e);
        }
    };
    // The stream we carry: the one anchored before (a re-offer), else the first active RTP
    // m-line with a common codec.
    let mut chosen = None;
    let mut keep: Vec<Option<Vec<u8>>> = Vec::with_capacity(sdp.media().len());
    for (i, m) in sdp.media().iter().enumerate() {
        let k = match (fx.get(i).cloned().flatten(), fy.get(i).cloned().flatten()) {
            (None, None) => None,
            (Some(a), None) | (None, Some(a)) => Some(a),
            (Some(a), Some(b)) => Some(a.into_iter().filter(|p| b.contains(p)).collect()),
        };
        let has_codec = m.proto().is_rtp()
            && !m.is_rejected()
            && k.as_ref()
                .map_or_else(|| m.payload_types(), |v: &Vec<u8>| v.clone())
                .iter()
                .any(|pt| m.encoding(*pt).is_some_and(|(n, _)| !is_auxiliary(n)));
        let wanted = match call.anchored {
            Some(a) => a == i,
            None => chosen.is_none(),
        };
        if has_codec && wanted && chosen.is_none() {
            chosen = Some(i);
        }
        keep.push(k);
    }
    let Some(chosen) = chosen else {
        undo(call);
        return Err(SdpError::NoCommonCodec);
    };
    let ep_x = match Endpoint::from_sdp(sdp, chosen) {
        Some(e) => e,
        None => {
            undo(call);
            return Err(SdpError::NoCommonCodec);
        }
    };
    // SRTP rules of X's leg.
    let mode_x = call.modes[idx(lx)];
    let secure = ep_x.proto.is_secure();
    if ep_x.proto.is_dtls()
        || (secure && (mode_x == SrtpMode::Off || pick_crypto(&ep_x).is_none()))
        || (mode_x == SrtpMode::Required && pick_crypto(&ep_x).is_none())
    {
        undo(call);
        return Err(if ep_x.requires_mki {
            SdpError::MkiRequired { index: chosen }
        } else {
            SdpError::InvalidCrypto
        });
    }
    call.anchored = Some(chosen);
    // Early media from X may flow as soon as Y answers: X's address is known now.
    if let Some((rtp, rtcp)) = endpoint_addrs(&ep_x, false) {
        updates.push(MediaUpdate::Remote { leg: lx, rtp, rtcp });
    }
    let local = call.local[idx(ly)];
    let mode_y = call.modes[idx(ly)];
    let crypto = match mode_y {
        SrtpMode::Off => None,
        _ => CryptoLine::new(1, CryptoSuite::AesCm128HmacSha1_80, call.keys[idx(ly)]).ok(),
    };
    let media = sdp
        .media()
        .iter()
        .enumerate()
        .map(|(i, m)| MediaRewrite {
            port: if i == chosen { local.rtp.port() } else { 0 },
            rtcp_port: local.rtcp.map(|a| a.port()),
            profile: if mode_y == SrtpMode::Required {
                Profile::Srtp
            } else {
                Profile::Rtp
            },
            crypto: crypto.clone(),
            keep_formats: if i == chosen {
                keep.get(i).cloned().flatten()
            } else if m.is_rejected() {
                None
            } else {
                Some(Vec::new())
            },
        })
        .collect();
    let rw = Rewrite {
        connection: ip,
        media,
        strip_ice: true,
        origin: Some(OriginRewrite {
            session_version: None,
            address: Some(ip),
        }),
    };
    let out = match rewrite(sdp, &rw).and_then(|o| Sdp::parse(&o).map(|s| (o, s))) {
        Ok(x) => x,
        Err(e) => {
            undo(call);
            return Err(e);
        }
    };
    if let Err(e) = call.neg[idx(ly)].on_message(rx, carrier, Some(out.1)) {
        undo(call);
        return Err(e);
    }
    Ok(out.0)
}

/// `from` answered our offer (recorded in its leg's negotiation): key and address its leg, then
/// answer the other side's pending offer with our other leg.
fn answer_toward_other(
    call: &mut Call,
    ip: IpAddr,
    from: Side,
    carrier: Carrier,
    sdp: &Sdp,
    updates: &mut Vec<MediaUpdate>,
) -> Result<Vec<u8>, SdpError> {
    let lx = leg_of(from);
    let ly = lx.other();
    let rx = call.role(from);
    let ry = rx.other();
    let chosen = call.anchored.ok_or(SdpError::UnexpectedSdp)?;
    // Leg X from its answer.
    let sx = call.neg[idx(lx)]
        .streams()
        .into_iter()
        .find(|s| s.index == chosen)
        .ok_or(SdpError::UnexpectedSdp)?;
    let ep_x = sx.endpoint(rx).clone();
    if !sx.rejected {
        if let Some((rtp, rtcp)) = endpoint_addrs(&ep_x, sx.rtcp_mux) {
            updates.push(MediaUpdate::Remote { leg: lx, rtp, rtcp });
        }
    }
    if sx.srtp {
        if let Some((_, suite, key)) = pick_crypto(&ep_x) {
            let params = SrtpParams {
                suite,
                local_key_salt: call.keys[idx(lx)],
                remote_key_salt: key,
            };
            updates.push(MediaUpdate::Srtp { leg: lx, params });
        }
    } else {
        if call.modes[idx(lx)] == SrtpMode::Required && !sx.rejected {
            // A response cannot be refused: the media stays plain and we say so.
            warn!(
                side = side_of(lx).as_str(),
                "SRTP required but the answer has no usable crypto"
            );
        }
        updates.push(MediaUpdate::ClearSrtp { leg: lx });
    }
    // The other side's offer: pending in its leg, or already answered in an earlier 18x (this
    // is that answer again or a changed one, RFC 3261 §13.2.1, RFC 6337 §3.1).
    let y_offer = match call.neg[idx(ly)].pending_offer() {
        Some((_, o)) => o.clone(),
        None => match call.neg[idx(ly)].current() {
            Some(c) if c.offerer == ry => c.offer.clone(),
            _ => return Err(SdpError::UnexpectedSdp),
        },
    };
    let ep_yo = Endpoint::from_sdp(&y_offer, chosen).ok_or(SdpError::UnexpectedSdp)?;
    let mode_y = call.modes[idx(ly)];
    let y_crypto = if mode_y == SrtpMode::Off {
        None
    } else {
        pick_crypto(&ep_yo)
    };
    let local = call.local[idx(ly)];
    let crypto = y_crypto
        .as_ref()
        .and_then(|(c, _, _)| CryptoLine::new(c.tag, c.suite.clone(), call.keys[idx(ly)]).ok());
    let profile = if ep_yo.proto.is_secure() {
        Profile::Srtp
    } else {
        Profile::Rtp
    };
    // Only the anchored m-line is ours; the others were rejected in our offer and stay so.
    let media = (0..sdp.media().len())
        .map(|i| MediaRewrite {
            port: if i == chosen { local.rtp.port() } else { 0 },
            rtcp_port: local.rtcp.map(|a| a.port()),
            profile,
            crypto: crypto.clone(),
            keep_formats: None,
        })
        .collect();
    let rw = Rewrite {
        connection: ip,
        media,
        strip_ice: true,
        origin: Some(OriginRewrite {
            session_version: None,
            address: Some(ip),
        }),
    };
    let out = rewrite(sdp, &rw)?;
    let parsed = Sdp::parse(&out)?;
    call.neg[idx(ly)].on_message(rx, carrier, Some(parsed))?;
    // Leg Y from its offer, now that the exchange is complete.
    let sy = call.neg[idx(ly)]
        .streams()
        .into_iter()
        .find(|s| s.index == chosen);
    if let Some(sy) = &sy {
        let ep_y = sy.endpoint(ry);
        if let Some((rtp, rtcp)) = endpoint_addrs(ep_y, sy.rtcp_mux) {
            updates.push(MediaUpdate::Remote { leg: ly, rtp, rtcp });
        }
        match (&y_crypto, sy.srtp) {
            (Some((_, suite, key)), true) => {
                let params = SrtpParams {
                    suite: *suite,
                    local_key_salt: call.keys[idx(ly)],
                    remote_key_salt: *key,
                };
                updates.push(MediaUpdate::Srtp { leg: ly, params });
            }
            _ => updates.push(MediaUpdate::ClearSrtp { leg: ly }),
        }
        updates.push(MediaUpdate::Hold {
            leg: ly,
            on_hold: silent(ep_y),
        });
    }
    updates.push(MediaUpdate::Hold {
        leg: lx,
        on_hold: silent(&ep_x),
    });
    debug!(leg_x = ?side_of(lx), "offer/answer complete");
    Ok(out)
}
