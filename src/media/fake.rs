//! An in-memory [`MediaBackend`] for tests of the proxy core: no socket is bound and no thread
//! started. Sessions get consecutive fake ports; tests can feed activity
//! ([`FakeMedia::packet`]) and inspect what the anchor asked for ([`FakeMedia::log`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::backend::{BackendStats, MediaBackend, MediaUpdate, SessionId};
use super::latch::LatchPolicy;
use super::session::{LegConfig, LocalPorts, SessionSnapshot, SessionState};
use super::stats::{LegCounters, LegSnapshot};
use super::supervision::Activity;
use super::{Leg, MediaError};

/// What a fake session knows.
#[derive(Debug, Clone)]
pub struct FakeSession {
    pub local: [LocalPorts; 2],
    pub remote: [Option<SocketAddr>; 2],
    pub srtp: [bool; 2],
    pub latching: [LatchPolicy; 2],
    pub state: SessionState,
    activity: Activity,
}

/// One call the anchor made, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeOp {
    Allocate(SessionId),
    Update(SessionId, MediaUpdate),
    Release(SessionId),
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<SessionId, FakeSession>,
    log: Vec<FakeOp>,
    next: SessionId,
    /// Port pairs still free.
    free: usize,
    capacity: usize,
    next_port: u16,
}

/// The fake backend. Clones share state: keep one to inspect what the core did.
#[derive(Debug, Clone)]
pub struct FakeMedia {
    inner: Arc<Mutex<Inner>>,
}

impl FakeMedia {
    /// A backend with `pairs` port pairs (a session takes two, one per leg), handing out even
    /// ports from 40000 up.
    pub fn new(pairs: usize) -> FakeMedia {
        FakeMedia {
            inner: Arc::new(Mutex::new(Inner {
                free: pairs,
                capacity: pairs,
                next: 1,
                next_port: 40000,
                ..Inner::default()
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call the anchor made so far.
    pub fn log(&self) -> Vec<FakeOp> {
        self.lock().log.clone()
    }

    /// A live session.
    pub fn get(&self, id: SessionId) -> Option<FakeSession> {
        self.lock().sessions.get(&id).cloned()
    }

    /// Live sessions.
    pub fn live(&self) -> usize {
        self.lock().sessions.len()
    }

    /// Media arrived on `leg` of session `id` at `now`.
    pub fn packet(&self, id: SessionId, leg: Leg, now: Instant) {
        if let Some(s) = self.lock().sessions.get_mut(&id) {
            s.activity.on_packet(leg, now);
        }
    }
}

fn snapshot(s: &FakeSession) -> SessionSnapshot {
    let leg = |l: Leg| {
        let i = l.index();
        LegSnapshot::new(
            LegCounters::default(),
            s.remote[i],
            false,
            s.activity.on_hold(l),
            s.srtp[i],
        )
    };
    SessionSnapshot {
        state: s.state,
        a: leg(Leg::A),
        b: leg(Leg::B),
        last_activity: [
            s.activity.last_activity(Leg::A),
            s.activity.last_activity(Leg::B),
        ],
        idle_since: s.activity.idle_since(),
    }
}

impl MediaBackend for FakeMedia {
    fn allocate(
        &mut self,
        legs: [LegConfig; 2],
    ) -> Result<(SessionId, [LocalPorts; 2]), MediaError> {
        let mut g = self.lock();
        if g.free < 2 {
            return Err(MediaError::PortsExhausted);
        }
        g.free -= 2;
        let port = |ip: IpAddr, mux: bool, next: &mut u16| {
            let rtp = *next;
            *next = next.wrapping_add(2);
            LocalPorts {
                rtp: SocketAddr::new(ip, rtp),
                rtcp: (!mux).then(|| SocketAddr::new(ip, rtp.wrapping_add(1))),
            }
        };
        let mut next = g.next_port;
        let local = [
            port(legs[0].ip, legs[0].rtcp_mux, &mut next),
            port(legs[1].ip, legs[1].rtcp_mux, &mut next),
        ];
        g.next_port = next;
        let id = g.next;
        g.next += 1;
        g.sessions.insert(
            id,
            FakeSession {
                local,
                remote: [None; 2],
                srtp: [false; 2],
                latching: [LatchPolicy::Strict; 2],
                state: SessionState::Offered,
                activity: Activity::default(),
            },
        );
        g.log.push(FakeOp::Allocate(id));
        Ok((id, local))
    }

    fn update(
        &mut self,
        id: SessionId,
        update: MediaUpdate,
        now: Instant,
    ) -> Result<bool, MediaError> {
        let mut g = self.lock();
        g.log.push(FakeOp::Update(id, update.clone()));
        let s = g.sessions.get_mut(&id).ok_or(MediaError::Released)?;
        match update {
            MediaUpdate::Remote { leg, rtp, .. } => s.remote[leg.index()] = Some(rtp),
            MediaUpdate::Srtp { leg, .. } => s.srtp[leg.index()] = true,
            MediaUpdate::ClearSrtp { leg } => s.srtp[leg.index()] = false,
            MediaUpdate::Hold { leg, on_hold } => s.activity.set_hold(leg, on_hold, now),
            MediaUpdate::Latching { leg, policy } => s.latching[leg.index()] = policy,
            MediaUpdate::Commit => {
                s.activity.commit(now);
                s.state = SessionState::Active;
            }
        }
        Ok(true)
    }

    fn release(&mut self, id: SessionId) -> Option<SessionSnapshot> {
        let mut g = self.lock();
        let mut s = g.sessions.remove(&id)?;
        g.free += 2;
        g.log.push(FakeOp::Release(id));
        s.state = SessionState::Released;
        Some(snapshot(&s))
    }

    fn session(&self, id: SessionId) -> Option<SessionSnapshot> {
        self.lock().sessions.get(&id).map(snapshot)
    }

    fn idle(&self, now: Instant, timeout: Duration) -> Vec<SessionId> {
        self.lock()
            .sessions
            .iter()
            .filter(|(_, s)| s.activity.is_idle(now, timeout))
            .map(|(id, _)| *id)
            .collect()
    }

    fn stats(&self) -> BackendStats {
        let g = self.lock();
        BackendStats {
            ports_available: g.free,
            ports_capacity: g.capacity,
        }
    }
}
