//! One media session per dialog: two legs, created at the offer, committed
//! at the answer, updated by re-offers, released exactly once.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::latch::LatchPolicy;
use super::pool::PortPool;
use super::relay::{Attachment, Relay, RelayState, SessionShared};
use super::srtp::{SrtpLeg, SrtpParams};
use super::stats::LegSnapshot;
use super::{Leg, MediaError};

/// Local side of one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegConfig {
    /// Address to bind (the interface facing that leg's peer).
    pub ip: IpAddr,
    /// Bind only the RTP port (RFC 5761 rtcp-mux).
    pub rtcp_mux: bool,
}

/// Local addresses of one leg, to put into SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalPorts {
    /// RTP address (even port).
    pub rtp: SocketAddr,
    /// RTCP address (odd port), `None` under rtcp-mux.
    pub rtcp: Option<SocketAddr>,
}

/// Lifecycle of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Created at the offer; media already relayed if remotes are known
    /// (early media).
    Offered,
    /// Answer seen; supervision running.
    Active,
    /// Ports returned.
    Released,
}

/// Snapshot of a session for the call log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSnapshot {
    /// Lifecycle state.
    pub state: SessionState,
    /// Leg A (gateway).
    pub a: LegSnapshot,
    /// Leg B (cloud).
    pub b: LegSnapshot,
    /// Last packet received on leg A / leg B.
    pub last_activity: [Option<Instant>; 2],
    /// See [`MediaSession::idle_since`].
    pub idle_since: Option<Instant>,
}

impl SessionSnapshot {
    /// The snapshot of `leg`.
    pub fn leg(&self, leg: Leg) -> &LegSnapshot {
        match leg {
            Leg::A => &self.a,
            Leg::B => &self.b,
        }
    }
}

fn snapshot_of(st: &RelayState, state: SessionState) -> SessionSnapshot {
    let leg = |l: Leg| {
        let s = &st.legs[l.index()];
        let mut snap = LegSnapshot::new(
            s.counters,
            s.rtp.destination(),
            s.rtp.is_latched_elsewhere(),
            st.activity.on_hold(l),
            s.srtp.is_some(),
        );
        snap.signalled_rtp = s.rtp.signalled();
        snap.first_elsewhere = s.first_elsewhere;
        snap
    };
    SessionSnapshot {
        state,
        a: leg(Leg::A),
        b: leg(Leg::B),
        last_activity: [
            st.activity.last_activity(Leg::A),
            st.activity.last_activity(Leg::B),
        ],
        idle_since: st.activity.idle_since(),
    }
}

/// The media of one dialog.
pub struct MediaSession {
    /// `None` once released.
    shared: Option<Arc<SessionShared>>,
    attachment: Option<Attachment>,
    local: [LocalPorts; 2],
    state: SessionState,
    /// Final snapshot, kept after release for the call log.
    last: Mutex<Option<SessionSnapshot>>,
}

impl std::fmt::Debug for MediaSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaSession")
            .field("state", &self.state)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl MediaSession {
    /// Allocates a port pair per leg (at most 4 ports) and registers them
    /// with the relay. [`MediaError::PortsExhausted`] → answer 503.
    pub fn new(
        relay: &Relay,
        pool: &PortPool,
        a: LegConfig,
        b: LegConfig,
    ) -> Result<MediaSession, MediaError> {
        let pa = pool.allocate(a.ip, a.rtcp_mux)?;
        let pb = pool.allocate(b.ip, b.rtcp_mux)?;
        let local_of = |p: &super::pool::PortPair, ip: IpAddr| LocalPorts {
            rtp: SocketAddr::new(ip, p.rtp_port()),
            rtcp: p.rtcp_port().map(|port| SocketAddr::new(ip, port)),
        };
        let local = [local_of(&pa, a.ip), local_of(&pb, b.ip)];
        let mut st = RelayState::default();
        st.legs[0].has_rtcp_socket = pa.rtcp_socket().is_some();
        st.legs[1].has_rtcp_socket = pb.rtcp_socket().is_some();
        let shared = Arc::new(SessionShared {
            io: [pa, pb],
            state: Mutex::new(st),
        });
        let attachment = relay.attach(&shared)?;
        Ok(MediaSession {
            shared: Some(shared),
            attachment: Some(attachment),
            local,
            state: SessionState::Offered,
            last: Mutex::new(None),
        })
    }

    /// Local RTP/RTCP addresses of `leg` (for the SDP rewrite).
    pub fn local(&self, leg: Leg) -> LocalPorts {
        self.local[leg.index()]
    }

    /// Lifecycle state.
    pub fn state(&self) -> SessionState {
        self.state
    }

    fn shared(&self) -> Result<&Arc<SessionShared>, MediaError> {
        self.shared.as_ref().ok_or(MediaError::Released)
    }

    /// Sets the remote addresses of `leg` from SDP (offer, answer or
    /// re-offer). `rtcp: None` means RTCP is multiplexed on the RTP address
    /// (RFC 5761); the caller resolves RFC 3605 `a=rtcp` or the port+1
    /// default. Resets the source latch.
    pub fn set_remote(
        &mut self,
        leg: Leg,
        rtp: SocketAddr,
        rtcp: Option<SocketAddr>,
    ) -> Result<(), MediaError> {
        self.shared()?.lock().legs[leg.index()].set_remote(rtp, rtcp);
        Ok(())
    }

    /// The latching policy of `leg` (its peer's `latching`): strict or NAT.
    pub fn set_latching(&mut self, leg: Leg, policy: LatchPolicy) -> Result<(), MediaError> {
        self.shared()?.lock().legs[leg.index()].set_latching(policy);
        Ok(())
    }

    /// Sets SRTP keys on `leg`. Returns `true` when the contexts were
    /// (re)created — the crypto changed — and `false` when the same keys
    /// were given again (contexts, rollover counters and replay windows
    /// kept, as a re-offer repeating `a=crypto` requires).
    pub fn set_srtp(&mut self, leg: Leg, params: SrtpParams) -> Result<bool, MediaError> {
        let shared = self.shared()?;
        {
            let st = shared.lock();
            if st.legs[leg.index()]
                .srtp
                .as_ref()
                .is_some_and(|s| *s.params() == params)
            {
                return Ok(false);
            }
        }
        // Key derivation outside the lock (the relay keeps running).
        let ctx = SrtpLeg::new(&params)?;
        shared.lock().legs[leg.index()].srtp = Some(ctx);
        Ok(true)
    }

    /// Removes SRTP from `leg` (plain RTP from now on).
    pub fn clear_srtp(&mut self, leg: Leg) -> Result<(), MediaError> {
        self.shared()?.lock().legs[leg.index()].srtp = None;
        Ok(())
    }

    /// Hold state of `leg` (from SDP direction attributes); a leg on hold
    /// is not supervised for media inactivity. Forwarding is unaffected:
    /// whatever a held endpoint still sends (e.g. music on hold, RTCP) is
    /// relayed as usual.
    pub fn set_hold(&mut self, leg: Leg, on_hold: bool, now: Instant) -> Result<(), MediaError> {
        self.shared()?.lock().activity.set_hold(leg, on_hold, now);
        Ok(())
    }

    /// The answer arrived: the session is established and supervised from
    /// `now`.
    pub fn commit(&mut self, now: Instant) -> Result<(), MediaError> {
        self.shared()?.lock().activity.commit(now);
        self.state = SessionState::Active;
        Ok(())
    }

    /// Last packet received on `leg` (direction `leg` → relay).
    pub fn last_activity(&self, leg: Leg) -> Option<Instant> {
        self.shared
            .as_ref()
            .and_then(|s| s.lock().activity.last_activity(leg))
    }

    /// Since when no media arrived on any leg not on hold; `None` before
    /// commit, after release, or when every leg is on hold. The proxy sends
    /// BYE once `now - idle_since >= media_timeout`.
    pub fn idle_since(&self) -> Option<Instant> {
        self.shared
            .as_ref()
            .and_then(|s| s.lock().activity.idle_since())
    }

    /// `idle_since` compared against `timeout` at `now`.
    pub fn is_idle(&self, now: Instant, timeout: Duration) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| s.lock().activity.is_idle(now, timeout))
    }

    /// Counters of both legs (the final ones after release).
    pub fn snapshot(&self) -> SessionSnapshot {
        if let Some(s) = &self.shared {
            return snapshot_of(&s.lock(), self.state);
        }
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.unwrap_or_else(|| snapshot_of(&RelayState::default(), SessionState::Released))
    }

    /// Stops relaying and returns the ports to the pool. Returns `true` the
    /// first time; later calls are logged no-ops.
    pub fn release(&mut self) -> bool {
        let Some(shared) = self.shared.take() else {
            tracing::debug!("media session released twice: ignored");
            return false;
        };
        // Unregister from the worker first, so nothing new picks it up.
        drop(self.attachment.take());
        let snap = snapshot_of(&shared.lock(), SessionState::Released);
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(snap);
        self.state = SessionState::Released;
        // The ports return when the last reference drops: here, or right
        // after a worker finishes the batch it may be processing.
        drop(shared);
        true
    }
}

impl Drop for MediaSession {
    fn drop(&mut self) {
        if self.shared.is_some() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::relay::RelayConfig;
    use crate::media::srtp::{generate_key_salt, SrtpSuite};
    use std::net::Ipv4Addr;

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn relay() -> Relay {
        Relay::start(RelayConfig {
            workers: 1,
            ..RelayConfig::default()
        })
        .expect("relay")
    }

    fn cfg(rtcp_mux: bool) -> LegConfig {
        LegConfig { ip: LO, rtcp_mux }
    }

    #[test]
    fn lifecycle_offer_commit_release_once() {
        let relay = relay();
        let pool = PortPool::new(41600..=41609).expect("pool");
        let mut s = MediaSession::new(&relay, &pool, cfg(false), cfg(true)).expect("session");
        assert_eq!(pool.available(), 3);
        assert_eq!(s.state(), SessionState::Offered);
        let a = s.local(Leg::A);
        assert_eq!(a.rtcp.map(|r| r.port()), Some(a.rtp.port() + 1));
        assert_eq!(s.local(Leg::B).rtcp, None);
        // No supervision before the answer.
        assert_eq!(s.idle_since(), None);
        let t0 = Instant::now();
        s.commit(t0).expect("commit");
        assert_eq!(s.state(), SessionState::Active);
        assert_eq!(s.idle_since(), Some(t0));
        assert!(s.is_idle(t0 + Duration::from_secs(60), Duration::from_secs(60)));
        s.set_hold(Leg::A, true, t0).expect("hold");
        s.set_hold(Leg::B, true, t0).expect("hold");
        assert_eq!(
            s.idle_since(),
            None,
            "both legs on hold: nothing to supervise"
        );
        let snap = s.snapshot();
        assert!(snap.a.on_hold && snap.b.on_hold);

        assert!(s.release());
        assert_eq!(s.state(), SessionState::Released);
        assert_eq!(pool.available(), 5, "ports back at once when idle");
        assert!(!s.release(), "second release is a no-op");
        assert_eq!(pool.available(), 5);
        assert!(matches!(
            s.set_remote(Leg::A, a.rtp, None),
            Err(MediaError::Released)
        ));
        assert!(matches!(s.commit(t0), Err(MediaError::Released)));
        assert_eq!(s.snapshot().state, SessionState::Released);
        assert!(s.snapshot().a.on_hold, "final snapshot kept");
        assert_eq!(s.idle_since(), None);
    }

    #[test]
    fn drop_releases() {
        let relay = relay();
        let pool = PortPool::new(41700..=41703).expect("pool");
        let s = MediaSession::new(&relay, &pool, cfg(true), cfg(true)).expect("session");
        assert_eq!(pool.available(), 0);
        drop(s);
        assert_eq!(pool.available(), 2);
    }

    #[test]
    fn partial_allocation_is_rolled_back() {
        let relay = relay();
        let pool = PortPool::new(41800..=41801).expect("pool");
        assert!(matches!(
            MediaSession::new(&relay, &pool, cfg(false), cfg(false)),
            Err(MediaError::PortsExhausted)
        ));
        assert_eq!(pool.available(), 1, "leg A's pair returned");
    }

    #[test]
    fn set_srtp_rekeys_only_on_change() {
        let relay = relay();
        let pool = PortPool::new(41900..=41903).expect("pool");
        let mut s = MediaSession::new(&relay, &pool, cfg(true), cfg(true)).expect("session");
        let p = SrtpParams {
            suite: SrtpSuite::Aes128CmSha1_80,
            local_key_salt: generate_key_salt(),
            remote_key_salt: generate_key_salt(),
        };
        assert!(s.set_srtp(Leg::B, p.clone()).expect("first"));
        assert!(!s.set_srtp(Leg::B, p.clone()).expect("same"));
        let mut p2 = p.clone();
        p2.suite = SrtpSuite::Aes128CmSha1_32;
        assert!(s.set_srtp(Leg::B, p2).expect("suite change"));
        assert!(s.snapshot().b.srtp);
        s.clear_srtp(Leg::B).expect("clear");
        assert!(!s.snapshot().b.srtp);
        assert!(s.set_srtp(Leg::B, p).expect("again after clear"));
    }
}
