//! SDP body glue for the anchor: finding the SDP in a message (and refusing bodies it cannot
//! look into), putting a rewritten body back, the media endpoints an SDP describes, and the
//! crypto line our SRTP layer can key.

use std::net::SocketAddr;

use crate::config::Side;
use crate::media::{Leg, SrtpSuite, KEY_SALT_LEN};
use crate::sdp::{CryptoLine, CryptoSuite, Endpoint, Sdp, SdpError};
use crate::sip::{HeaderName, Message};

pub(super) fn leg_of(side: Side) -> Leg {
    match side {
        Side::Gateway => Leg::A,
        Side::Cloud => Leg::B,
    }
}

pub(super) fn side_of(leg: Leg) -> Side {
    match leg {
        Leg::A => Side::Gateway,
        Leg::B => Side::Cloud,
    }
}

pub(super) fn idx(leg: Leg) -> usize {
    match leg {
        Leg::A => 0,
        Leg::B => 1,
    }
}

fn srtp_suite(s: &CryptoSuite) -> Option<SrtpSuite> {
    match s {
        CryptoSuite::AesCm128HmacSha1_80 => Some(SrtpSuite::Aes128CmSha1_80),
        CryptoSuite::AesCm128HmacSha1_32 => Some(SrtpSuite::Aes128CmSha1_32),
        _ => None,
    }
}

/// The first crypto line of `ep` our SRTP layer can key: a supported suite, 30 bytes of
/// key||salt, no MKI.
pub(super) fn pick_crypto(ep: &Endpoint) -> Option<(CryptoLine, SrtpSuite, [u8; KEY_SALT_LEN])> {
    ep.crypto.iter().find_map(|c| {
        if !c.is_usable() {
            return None;
        }
        let suite = srtp_suite(&c.suite)?;
        let key: [u8; KEY_SALT_LEN] = c.master_key_salt().try_into().ok()?;
        Some((c.clone(), suite, key))
    })
}

/// Where an endpoint receives RTP (and RTCP, unless muxed); `None` for hold (`c=0.0.0.0`),
/// a rejected stream or an address we cannot use (an FQDN).
pub(super) fn endpoint_addrs(ep: &Endpoint, mux: bool) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let ip = ep.address.as_ref()?.ip()?;
    if ip.is_unspecified() || ep.rtp_port == 0 {
        return None;
    }
    let rtp = SocketAddr::new(ip, ep.rtp_port);
    if mux {
        return Some((rtp, None));
    }
    let rtcp_ip = ep
        .rtcp_address
        .as_ref()
        .and_then(|a| a.ip())
        .filter(|i| !i.is_unspecified())
        .unwrap_or(ip);
    let rtcp_port = ep.rtcp_port.or_else(|| ep.rtp_port.checked_add(1));
    Some((rtp, rtcp_port.map(|p| SocketAddr::new(rtcp_ip, p))))
}

/// A leg is "on hold" for supervision when its UA is not expected to send: its direction does
/// not send (RFC 3264 §8.4 recvonly/inactive) or it gave `c=0.0.0.0`.
pub(super) fn silent(ep: &Endpoint) -> bool {
    !ep.direction.sends() || ep.address.as_ref().is_some_and(|a| a.is_hold())
}

pub(super) fn is_auxiliary(name: &str) -> bool {
    ["telephone-event", "CN", "red", "ulpfec", "flexfec", "rtx"]
        .iter()
        .any(|a| a.eq_ignore_ascii_case(name))
}

/// The SDP body of a message, if it has one (Content-Type application/sdp, or no
/// Content-Type with a body starting with `v=`).
pub(super) fn sdp_body(msg: &Message) -> Option<Result<Sdp, SdpError>> {
    let body = msg.body();
    if body.is_empty() {
        return None;
    }
    let is_sdp = match msg.header(HeaderName::ContentType) {
        Some(ct) => {
            let ct = ct.trim_ascii();
            let mime = ct.split(|b| *b == b';').next().unwrap_or_default();
            mime.trim_ascii().eq_ignore_ascii_case(b"application/sdp")
        }
        None => body.starts_with(b"v="),
    };
    is_sdp.then(|| Sdp::from_bytes(msg.body_bytes()))
}

/// A body the anchor cannot look into (multipart: SDP beside ISUP or other parts). Forwarding
/// it would let the media bypass the anchor, so such requests are refused with 415
/// (RFC 3261 §21.4.13).
pub(super) fn is_opaque_body(msg: &Message) -> bool {
    !msg.body().is_empty()
        && msg.header(HeaderName::ContentType).is_some_and(|ct| {
            ct.trim_ascii()
                .get(..10)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"multipart/"))
        })
}

pub(super) fn with_body(msg: &Message, body: &[u8]) -> Option<Message> {
    let mut ed = msg.edit();
    ed.set_body(None, body);
    Message::parse(ed.finish()).ok()
}
