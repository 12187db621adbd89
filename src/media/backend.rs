//! The interface between the proxy's media anchor and a media relay: allocate a session (a port
//! pair per leg), update its legs as SDP is negotiated, release it, read its counters. The proxy
//! core stays sans-IO behind it: [`RelayBackend`] binds sockets and runs relay threads,
//! [`super::fake::FakeMedia`] keeps everything in memory for tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use super::latch::LatchPolicy;
use super::pool::PortPool;
use super::relay::{Relay, RelayConfig};
use super::session::{LegConfig, LocalPorts, MediaSession, SessionSnapshot};
use super::srtp::SrtpParams;
use super::{Leg, MediaError};

/// A media session of a backend.
pub type SessionId = u64;

/// A change to one session, from SDP offer/answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaUpdate {
    /// The remote RTP (and RTCP, `None`: multiplexed) address of a leg; resets its latch.
    Remote {
        leg: Leg,
        rtp: SocketAddr,
        rtcp: Option<SocketAddr>,
    },
    /// SRTP keys of a leg; the result tells whether the contexts changed (a re-offer repeating
    /// the same `a=crypto` keeps rollover counters and replay windows).
    Srtp { leg: Leg, params: SrtpParams },
    /// Plain RTP on a leg from now on.
    ClearSrtp { leg: Leg },
    /// The latching policy of a leg (its peer's `latching`); the latch itself is kept.
    Latching { leg: Leg, policy: LatchPolicy },
    /// Hold state of a leg (a held leg is not supervised for inactivity).
    Hold { leg: Leg, on_hold: bool },
    /// The answer arrived: the session is established and supervised from `now`.
    Commit,
}

/// Counters of a backend as a whole.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BackendStats {
    /// Free and total port pairs.
    pub ports_available: usize,
    pub ports_capacity: usize,
}

/// What the media anchor needs of a relay. Errors: [`MediaError::PortsExhausted`] (→ 503),
/// [`MediaError::Released`] for an unknown or released session, others for IO/SRTP failures.
pub trait MediaBackend: Send {
    /// A new session with a port pair per leg: `legs[0]` is leg A (gateway), `legs[1]` leg B
    /// (cloud). Returns its id and the local addresses to put into SDP.
    fn allocate(
        &mut self,
        legs: [LegConfig; 2],
    ) -> Result<(SessionId, [LocalPorts; 2]), MediaError>;
    /// Applies one change at `now`; `Ok(true)` when SRTP contexts were (re)created (always
    /// `true` for the other updates).
    fn update(
        &mut self,
        id: SessionId,
        update: MediaUpdate,
        now: Instant,
    ) -> Result<bool, MediaError>;
    /// Stops relaying and returns the ports; the final counters, `None` when unknown (released
    /// already: release happens exactly once).
    fn release(&mut self, id: SessionId) -> Option<SessionSnapshot>;
    /// The counters and activity of a live session.
    fn session(&self, id: SessionId) -> Option<SessionSnapshot>;
    /// Sessions with no media on any leg not on hold for `timeout` at `now` (supervision).
    fn idle(&self, now: Instant, timeout: Duration) -> Vec<SessionId>;
    /// Counters of the backend.
    fn stats(&self) -> BackendStats;
}

/// The real relay: a [`PortPool`] over the configured range and the relay's worker threads.
pub struct RelayBackend {
    relay: Relay,
    pool: PortPool,
    sessions: HashMap<SessionId, MediaSession>,
    next: SessionId,
}

impl std::fmt::Debug for RelayBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayBackend")
            .field("sessions", &self.sessions.len())
            .field("pool_available", &self.pool.available())
            .finish_non_exhaustive()
    }
}

impl RelayBackend {
    /// Starts the relay (`workers` threads, the default when `None`) over the ports of
    /// `range`.
    pub fn start(
        range: RangeInclusive<u16>,
        workers: Option<usize>,
    ) -> Result<RelayBackend, MediaError> {
        let pool = PortPool::new(range)?;
        let mut rc = RelayConfig::default();
        if let Some(w) = workers {
            rc.workers = w;
        }
        let relay = Relay::start(rc)?;
        Ok(RelayBackend {
            relay,
            pool,
            sessions: HashMap::new(),
            next: 1,
        })
    }

    fn get(&mut self, id: SessionId) -> Result<&mut MediaSession, MediaError> {
        self.sessions.get_mut(&id).ok_or(MediaError::Released)
    }
}

impl MediaBackend for RelayBackend {
    fn allocate(
        &mut self,
        legs: [LegConfig; 2],
    ) -> Result<(SessionId, [LocalPorts; 2]), MediaError> {
        let [a, b] = legs;
        let s = MediaSession::new(&self.relay, &self.pool, a, b)?;
        let local = [s.local(Leg::A), s.local(Leg::B)];
        let id = self.next;
        self.next += 1;
        self.sessions.insert(id, s);
        Ok((id, local))
    }

    fn update(
        &mut self,
        id: SessionId,
        update: MediaUpdate,
        now: Instant,
    ) -> Result<bool, MediaError> {
        let s = self.get(id)?;
        match update {
            MediaUpdate::Remote { leg, rtp, rtcp } => s.set_remote(leg, rtp, rtcp).map(|()| true),
            MediaUpdate::Srtp { leg, params } => s.set_srtp(leg, params),
            MediaUpdate::ClearSrtp { leg } => s.clear_srtp(leg).map(|()| true),
            MediaUpdate::Hold { leg, on_hold } => s.set_hold(leg, on_hold, now).map(|()| true),
            MediaUpdate::Latching { leg, policy } => s.set_latching(leg, policy).map(|()| true),
            MediaUpdate::Commit => s.commit(now).map(|()| true),
        }
    }

    fn release(&mut self, id: SessionId) -> Option<SessionSnapshot> {
        let mut s = self.sessions.remove(&id)?;
        s.release();
        Some(s.snapshot())
    }

    fn session(&self, id: SessionId) -> Option<SessionSnapshot> {
        self.sessions.get(&id).map(MediaSession::snapshot)
    }

    fn idle(&self, now: Instant, timeout: Duration) -> Vec<SessionId> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.is_idle(now, timeout))
            .map(|(id, _)| *id)
            .collect()
    }

    fn stats(&self) -> BackendStats {
        BackendStats {
            ports_available: self.pool.available(),
            ports_capacity: self.pool.capacity(),
        }
    }
}
