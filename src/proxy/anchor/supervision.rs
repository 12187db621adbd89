//! Media supervision: a confirmed call with no media in any direction not on hold for
//! `media_timeout` is released once and handed back to the core as [`TimedOut`], with a BYE
//! for each leg.

use std::time::{Duration, Instant};

use tracing::warn;

use super::body::{idx, leg_of, side_of};
use super::{Anchor, ByeSpec, TimedOut};
use crate::media::Leg;
use crate::proxy::CallKey;

impl Anchor {
    /// When [`Anchor::sweep`] wants to run next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Media supervision at `now`: every confirmed call idle for `media_timeout` is released
    /// (once) and returned with its BYEs.
    pub fn sweep(&mut self, now: Instant) -> Vec<TimedOut> {
        match self.next_sweep {
            Some(t) if t <= now => {}
            _ => return Vec::new(),
        }
        self.log_elsewhere();
        let timeout = self.settings.media_timeout;
        let idle_sessions = self.media.idle(now, timeout);
        let idle: Vec<CallKey> = self
            .calls
            .iter()
            .filter(|(_, c)| c.committed && idle_sessions.contains(&c.session))
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::with_capacity(idle.len());
        for key in idle {
            let Some(call) = self.calls.get(&key) else {
                continue;
            };
            let call_id = key.call_id_str().into_owned();
            let Some(d) = call.dialog.clone() else {
                // A 2xx without Contact: nothing to address a BYE to; free the ports anyway.
                warn!(call_id = %call_id, "media timeout on a dialog without Contact: released without BYE");
                self.stats.media_timeouts += 1;
                let media = self.release(&key, "media timeout");
                out.push(TimedOut {
                    key,
                    media,
                    call_id,
                    byes: Vec::new(),
                });
                continue;
            };
            let caller = call.caller;
            let callee = caller.other();
            let cseq_caller = call.cseq[idx(leg_of(caller))];
            let cseq_callee = call.cseq[idx(leg_of(callee))];
            self.stats.media_timeouts += 1;
            warn!(
                call_id = %call_id,
                timeout_s = timeout.as_secs(),
                media_timeouts = self.stats.media_timeouts,
                "media timeout: no RTP in either direction, sending BYE to both legs"
            );
            let media = self.release(&key, "media timeout");
            out.push(TimedOut {
                key,
                media,
                byes: vec![
                    ByeSpec {
                        side: callee,
                        request_uri: d.callee_contact.clone(),
                        routes: d.routes_to_callee.clone(),
                        from: d.caller_from.clone(),
                        to: d.callee_to.clone(),
                        call_id: call_id.clone(),
                        cseq: cseq_caller.saturating_add(1),
                    },
                    ByeSpec {
                        side: caller,
                        request_uri: d.caller_contact.clone(),
                        routes: d.routes_to_caller.clone(),
                        from: d.callee_to.clone(),
                        to: d.caller_from.clone(),
                        call_id: call_id.clone(),
                        cseq: cseq_callee.saturating_add(1),
                    },
                ],
                call_id,
            });
        }
        let supervised = self.calls.values().any(|c| c.committed);
        self.next_sweep = supervised.then(|| now + sweep_interval(timeout));
        out
    }
}

impl Anchor {
    /// Says once per call leg that its media came from elsewhere than the signalled (strict)
    /// or latched (NAT) source and was dropped: such a leg is not silent, and the drops are
    /// counted (`sipedge_media_from_elsewhere_total`).
    fn log_elsewhere(&mut self) {
        for (key, call) in &mut self.calls {
            if call.elsewhere_logged.iter().all(|l| *l) {
                continue;
            }
            let Some(snap) = self.media.session(call.session) else {
                continue;
            };
            for leg in [Leg::A, Leg::B] {
                let i = idx(leg);
                let l = snap.leg(leg);
                let dropped = l.counters.drops.foreign_source;
                if call.elsewhere_logged[i] || dropped == 0 {
                    continue;
                }
                call.elsewhere_logged[i] = true;
                warn!(
                    call_id = %key.call_id_str(),
                    leg = side_of(leg).as_str(),
                    from = ?l.first_elsewhere,
                    signalled = ?l.signalled_rtp,
                    latched = ?l.remote_rtp,
                    latching = call.latching[i].as_str(),
                    dropped,
                    accepted = l.counters.forwarded,
                    "media from elsewhere than the leg's source: dropped (logged once per call leg)"
                );
            }
        }
    }
}

/// How often idle calls are looked for: a quarter of the timeout, at most every second, at
/// least every 50 ms.
pub(super) fn sweep_interval(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}
