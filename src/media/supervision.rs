//! Media supervision: last activity per direction and the idle test the
//! proxy uses to end calls whose media stopped (the rtpengine-style media
//! timeout; default 60 s).
//!
//! A direction is "leg X → relay". A leg on hold (SDP sendonly/inactive,
//! RFC 3264 §8.4) is expected to be silent and is left out. The call is idle
//! when *none* of the remaining directions has carried a packet since the
//! instant returned by [`Activity::idle_since`]; one-way silence (e.g. a
//! muted endpoint using silence suppression) does not end a call.

use std::time::{Duration, Instant};

use super::Leg;

/// Default media timeout.
pub const DEFAULT_MEDIA_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Direction {
    last_rx: Option<Instant>,
    /// Last packet dropped as coming from elsewhere than the leg's source: the leg is not
    /// silent, so it is not idle either.
    last_elsewhere: Option<Instant>,
    on_hold: bool,
    /// When supervision of this direction (re)started: commit or resume.
    since: Option<Instant>,
}

/// Activity clock of one session. Pure: every instant is passed in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    committed: bool,
    dirs: [Direction; 2],
}

impl Activity {
    /// Supervision starts when the session is committed (answer received).
    pub fn commit(&mut self, now: Instant) {
        if self.committed {
            return;
        }
        self.committed = true;
        for d in &mut self.dirs {
            d.since = Some(now);
        }
    }

    /// A valid packet arrived on `leg`.
    pub fn on_packet(&mut self, leg: Leg, now: Instant) {
        let d = &mut self.dirs[leg.index()];
        if d.last_rx.is_none_or(|t| now > t) {
            d.last_rx = Some(now);
        }
    }

    /// A packet arrived on `leg` from elsewhere than its signalled or latched source.
    pub fn on_elsewhere(&mut self, leg: Leg, now: Instant) {
        let d = &mut self.dirs[leg.index()];
        if d.last_elsewhere.is_none_or(|t| now > t) {
            d.last_elsewhere = Some(now);
        }
    }

    /// Puts `leg` on hold or resumes it. Resuming restarts its clock, so a
    /// long hold is not mistaken for dead media.
    pub fn set_hold(&mut self, leg: Leg, on_hold: bool, now: Instant) {
        let d = &mut self.dirs[leg.index()];
        if d.on_hold && !on_hold && self.committed {
            d.since = Some(now);
        }
        d.on_hold = on_hold;
    }

    /// Whether `leg` is on hold.
    pub fn on_hold(&self, leg: Leg) -> bool {
        self.dirs[leg.index()].on_hold
    }

    /// Last packet received on `leg`.
    pub fn last_activity(&self, leg: Leg) -> Option<Instant> {
        self.dirs[leg.index()].last_rx
    }

    /// The instant since which the session has carried no media in any
    /// supervised direction; `None` before commit or when every leg is on
    /// hold (nothing to supervise).
    pub fn idle_since(&self) -> Option<Instant> {
        if !self.committed {
            return None;
        }
        self.dirs
            .iter()
            .filter(|d| !d.on_hold)
            .filter_map(|d| {
                let rx = match (d.last_rx, d.last_elsewhere) {
                    (Some(r), Some(e)) => Some(r.max(e)),
                    (r, e) => r.or(e),
                };
                match (rx, d.since) {
                    (Some(r), Some(s)) => Some(r.max(s)),
                    (r, s) => r.or(s),
                }
            })
            .max()
    }

    /// Whether the session has been idle for at least `timeout` at `now`.
    pub fn is_idle(&self, now: Instant, timeout: Duration) -> bool {
        self.idle_since()
            .is_some_and(|t| now.saturating_duration_since(t) >= timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = DEFAULT_MEDIA_TIMEOUT;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn nothing_supervised_before_commit() {
        let t0 = Instant::now();
        let mut a = Activity::default();
        a.on_packet(Leg::A, t0);
        assert_eq!(a.idle_since(), None);
        assert!(!a.is_idle(t0 + s(3600), T));
    }

    #[test]
    fn no_media_after_commit_times_out() {
        let t0 = Instant::now();
        let mut a = Activity::default();
        a.commit(t0);
        assert_eq!(a.idle_since(), Some(t0));
        assert!(!a.is_idle(t0 + s(59), T));
        assert!(a.is_idle(t0 + s(60), T));
    }

    #[test]
    fn latest_packet_in_either_direction_counts() {
        let t0 = Instant::now();
        let mut a = Activity::default();
        a.commit(t0);
        a.on_packet(Leg::A, t0 + s(10));
        a.on_packet(Leg::B, t0 + s(40));
        assert_eq!(a.last_activity(Leg::A), Some(t0 + s(10)));
        assert_eq!(a.idle_since(), Some(t0 + s(40)));
        assert!(!a.is_idle(t0 + s(99), T));
        assert!(a.is_idle(t0 + s(100), T));
        // An out-of-order older instant never moves the clock back.
        a.on_packet(Leg::B, t0 + s(5));
        assert_eq!(a.last_activity(Leg::B), Some(t0 + s(40)));
    }

    #[test]
    fn media_from_elsewhere_is_activity_not_silence() {
        let t0 = Instant::now();
        let mut a = Activity::default();
        a.commit(t0);
        a.on_elsewhere(Leg::A, t0 + s(50));
        // Nothing valid arrived, yet the leg is not silent: no "no RTP" timeout.
        assert_eq!(a.last_activity(Leg::A), None);
        assert!(!a.is_idle(t0 + s(100), T));
        assert!(a.is_idle(t0 + s(110), T));
    }

    #[test]
    fn held_leg_is_not_idle() {
        let t0 = Instant::now();
        let mut a = Activity::default();
        a.commit(t0);
        a.set_hold(Leg::A, true, t0 + s(1));
        a.set_hold(Leg::B, true, t0 + s(1));
        assert!(a.on_hold(Leg::A));
        assert_eq!(a.idle_since(), None);
        assert!(!a.is_idle(t0 + s(3600), T));
    }

    #[test]
    fn held_leg_is_left_out_and_resume_restarts_its_clock() {
        let t0 = Instant::now();
        let mut a = Activity::default();
        a.commit(t0);
        a.on_packet(Leg::A, t0 + s(5));
        a.on_packet(Leg::B, t0 + s(50));
        // B goes on hold: only A is supervised, idle since its last packet.
        a.set_hold(Leg::B, true, t0 + s(50));
        assert_eq!(a.idle_since(), Some(t0 + s(5)));
        // Resumed after a long hold: B's clock restarts at resume.
        a.set_hold(Leg::B, false, t0 + s(500));
        assert_eq!(a.idle_since(), Some(t0 + s(500)));
        assert!(!a.is_idle(t0 + s(559), T));
        assert!(a.is_idle(t0 + s(560), T));
    }
}
