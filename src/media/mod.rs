//! # media — the RTP/SRTP relay
//!
//! Anchors the media of each call: two legs per call (A = gateway side,
//! B = cloud side), each with a local RTP/RTCP socket pair from the
//! [`PortPool`] and a remote address the caller learnt from SDP. The relay
//! forwards packets between the legs on a fixed pool of worker threads,
//! translating plain RTP ⇄ SRTP when a leg has keys, with a latching policy
//! per leg (strict: the signalled address only; NAT: the first validated
//! source, moved only after it went quiet), per-leg counters and
//! media-timeout supervision.
//!
//! This module knows nothing of SIP or SDP: it is given IP addresses, ports
//! and keys. The proxy reaches it only through [`MediaBackend`] (allocate, update, release,
//! counters): [`RelayBackend`] is the real relay, [`fake::FakeMedia`] an in-memory stand-in
//! for tests.
//!
//! ```text
//!  gateway ──RTP──▶ [leg A sockets] ─┐ worker ┌─ [leg B sockets] ──SRTP──▶ cloud
//!          ◀──────                   └────────┘                  ◀──────
//! ```

mod backend;
mod batch;
pub mod fake;
mod latch;
mod pool;
mod relay;
mod session;
mod srtp;
mod srtp_transform;
mod stats;
mod supervision;

pub use backend::{BackendStats, MediaBackend, MediaUpdate, RelayBackend, SessionId};
pub use latch::{Admit, Latch, LatchPolicy};
pub use pool::{PortPair, PortPool, DEFAULT_PORT_RANGE};
pub use relay::{IoMode, Relay, RelayConfig};
pub use session::{LegConfig, LocalPorts, MediaSession, SessionSnapshot, SessionState};
pub use srtp::{generate_key_salt, SrtpParams, SrtpSuite, KEY_SALT_LEN};
pub use srtp_transform::{SrtpError, SrtpTransform, MAX_SSRCS};
pub use stats::{Drops, LegCounters, LegSnapshot, SeqTracker};
pub use supervision::{Activity, DEFAULT_MEDIA_TIMEOUT};

/// One side of a relayed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    /// The gateway (site) side.
    A,
    /// The cloud peer side.
    B,
}

impl Leg {
    /// The other leg.
    pub fn other(self) -> Leg {
        match self {
            Leg::A => Leg::B,
            Leg::B => Leg::A,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Leg::A => 0,
            Leg::B => 1,
        }
    }
}

/// Errors of the media layer.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The configured port range holds no even/odd pair.
    #[error("media port range holds no RTP/RTCP pair")]
    EmptyRange,
    /// Every port pair is in use: the proxy answers 503.
    #[error("media ports exhausted")]
    PortsExhausted,
    /// Binding a media socket failed for another reason than "in use".
    #[error("cannot bind media socket: {0}")]
    Bind(#[source] std::io::Error),
    /// SRTP context creation failed.
    #[error("SRTP setup failed: {0}")]
    Srtp(String),
    /// Relay setup (epoll, threads) failed.
    #[error("relay I/O error: {0}")]
    Io(#[source] std::io::Error),
    /// The session was already released.
    #[error("media session already released")]
    Released,
}
