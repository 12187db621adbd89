//! What crosses between the transports and the proxy core: the flow a message came on, the
//! events the transports (and the driver) hand to the core, and the messages the core puts on
//! the wire. Pure data: no tokio, no sockets, so both `transport` (IO) and `proxy::core`
//! (sans-IO) import it.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use bytes::Bytes;

use crate::config::{Side, Transport};
use crate::sip::Message;

pub type ConnId = u64;

/// Where a message came from (or goes to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub side: Side,
    pub transport: Transport,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The connection, for stream transports.
    pub conn: Option<ConnId>,
    /// The verified certificate identity of a TLS peer (every TLS flow has one: the transport
    /// registers no TLS connection without it); `None` for UDP and TCP.
    pub identity: Option<PeerName>,
}

/// What the transports hand to the proxy. (A `Message` is an index over its bytes, about
/// half a kilobyte inline; boxing it would add an allocation per message on the hot path.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Inbound {
    Message(Flow, Message),
    /// Bytes that did not parse; the proxy answers with `response` when an answer can be
    /// built from them.
    Malformed {
        flow: Flow,
        bytes: Bytes,
        response: Option<(u16, &'static str)>,
        reason: String,
    },
    /// The system resolver's answer for a name the proxy asked about.
    Resolved {
        host: String,
        ip: Option<IpAddr>,
    },
    /// A message could not be delivered to `remote` (connect failure, reset).
    SendFailed {
        side: Side,
        transport: Transport,
        remote: SocketAddr,
    },
}

/// A message to put on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub side: Side,
    pub transport: Transport,
    pub remote: SocketAddr,
    pub data: Bytes,
}

/// The verified certificate identity of a TLS peer (a configured gateway name, the cloud peer's
/// name), interned so that [`Flow`] stays `Copy`.
///
/// Only names that passed verification are interned, and verification admits only configured
/// names (gateways of our site, other sites' mediation servers, `tls.cloud_peer_names`, the
/// FQDNs we connect to), so the set is bounded by the configuration; [`PeerName::intern`]
/// also refuses beyond [`MAX_NAMES`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerName(&'static str);

/// Upper bound on distinct interned peer names.
pub const MAX_NAMES: usize = 65_536;

static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

impl PeerName {
    /// The interned name (lower-case, no trailing dot); `None` when the table is full.
    pub fn intern(name: &str) -> Option<PeerName> {
        let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
        let mut set = NAMES.lock().ok()?;
        if let Some(s) = set.get(name.as_str()) {
            return Some(PeerName(s));
        }
        if set.len() >= MAX_NAMES {
            return None;
        }
        let leaked: &'static str = Box::leak(name.into_boxed_str());
        set.insert(leaked);
        Some(PeerName(leaked))
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl std::ops::Deref for PeerName {
    type Target = str;
    fn deref(&self) -> &str {
        self.0
    }
}

impl std::fmt::Display for PeerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::fmt::Debug for PeerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_names_are_shared_and_normalised() {
        let a = PeerName::intern("GW1.lab.example.").unwrap();
        let b = PeerName::intern("gw1.lab.example").unwrap();
        assert_eq!(a, b);
        assert!(std::ptr::eq(a.as_str(), b.as_str()));
        assert_eq!(&*a, "gw1.lab.example");
        assert_ne!(a, PeerName::intern("gw2.lab.example").unwrap());
    }
}
