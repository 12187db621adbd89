//! Typed views of the media attributes the anchor reads: direction
//! (RFC 3264 §5.1), `a=rtpmap`/`a=fmtp` (RFC 4566 §6), `a=rtcp` (RFC 3605),
//! and the `name[:value]` split every attribute goes through.

use super::Connection;

/// Media direction (RFC 4566 §6, RFC 3264 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv` (the default).
    SendRecv,
    /// `a=sendonly`
    SendOnly,
    /// `a=recvonly`
    RecvOnly,
    /// `a=inactive`
    Inactive,
}

impl Direction {
    /// Parses an attribute name.
    pub fn from_attr(name: &str) -> Option<Direction> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The side that wrote this direction sends media.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// The side that wrote this direction receives media.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The direction as seen from the peer (sendonly ↔ recvonly).
    pub fn reversed(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }
}

/// `a=rtpmap:<pt> <name>/<rate>[/<params>]` (RFC 4566 §6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rtpmap {
    /// Payload type.
    pub payload_type: u8,
    /// Encoding name as written.
    pub encoding: String,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Encoding parameters (channel count for audio).
    pub params: Option<String>,
}

impl Rtpmap {
    pub(super) fn parse(value: &str) -> Option<Rtpmap> {
        let (pt, rest) = value.split_once(' ')?;
        let payload_type: u8 = pt.parse().ok().filter(|p| *p <= 127)?;
        let mut parts = rest.trim().splitn(3, '/');
        let encoding = parts.next().filter(|e| !e.is_empty())?.to_owned();
        let clock_rate = parts.next()?.parse().ok()?;
        let params = parts.next().map(str::to_owned);
        Some(Rtpmap {
            payload_type,
            encoding,
            clock_rate,
            params,
        })
    }
}

/// `a=fmtp:<format> <params>` (RFC 4566 §6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fmtp {
    /// The format (a payload type for RTP), verbatim.
    pub format: String,
    /// Format parameters, verbatim.
    pub params: String,
}

/// `a=rtcp:<port> [IN <type> <addr>]` (RFC 3605).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtcpAttr {
    /// RTCP port.
    pub port: u16,
    /// Optional address.
    pub connection: Option<Connection>,
}

impl RtcpAttr {
    pub(super) fn parse(value: &str) -> Option<RtcpAttr> {
        let value = value.trim();
        let (port, rest) = match value.split_once(' ') {
            Some((p, r)) => (p, Some(r)),
            None => (value, None),
        };
        let port = port.parse().ok()?;
        let connection = match rest {
            Some(r) => Some(Connection::parse(r)?),
            None => None,
        };
        Some(RtcpAttr { port, connection })
    }
}

/// Splits an attribute value `name[:value]`.
pub(crate) fn split_attr(value: &str) -> (&str, Option<&str>) {
    match value.split_once(':') {
        Some((n, v)) => (n, Some(v)),
        None => (value, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtpmap_edge_cases() {
        assert_eq!(
            Rtpmap::parse("111 opus/48000/2"),
            Some(Rtpmap {
                payload_type: 111,
                encoding: "opus".into(),
                clock_rate: 48000,
                params: Some("2".into()),
            })
        );
        assert_eq!(Rtpmap::parse("200 X/8000"), None);
        assert_eq!(Rtpmap::parse("96 /8000"), None);
        assert_eq!(Rtpmap::parse("96 X"), None);
    }
}
