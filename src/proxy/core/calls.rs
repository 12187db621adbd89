//! The calls we routed, from the initial INVITE to their end, kept incrementally: how many are
//! up (the appliance-wide cap), how many each gateway carries (pending INVITE branches to it
//! plus calls established through it: `max_sessions`), and a [`CallRecord`] for each call when
//! it ends. A call is keyed by the peer that sent its initial INVITE and its Call-ID, so two
//! peers' calls never meet, and only the call's own peers can end it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::debug;

use crate::cdr::{CallRecord, Direction, EndedBy, LegRecord};
use crate::config::Side;
use crate::media::SessionSnapshot;
use crate::proxy::anchor::{ByeSpec, DialogInfo};
use crate::proxy::CallKey;

/// A call in progress or established.
#[derive(Debug, Clone)]
pub(super) struct Call {
    pub direction: Direction,
    pub caller: String,
    pub callee: String,
    pub user: Option<String>,
    /// The gateway-side peer: the sender of an inbound call, the answering gateway of an
    /// outbound one (the first target until one answers).
    pub gateway: Option<String>,
    pub start: Instant,
    pub ringing: Option<Instant>,
    pub answer: Option<Instant>,
    /// The gateway whose session count this established call holds.
    pub session_of: Option<String>,
    /// The signalling side the initial INVITE came from.
    pub caller_on: Side,
    /// The dialog as the 2xx of the initial INVITE set it up (enough for BYEs of our own).
    pub dialog: Option<DialogInfo>,
    /// Highest CSeq seen in requests from each side's UA (gateway side, cloud side).
    pub cseq: [u32; 2],
}

impl Call {
    /// The signalling side of the caller (the initial INVITE's sender).
    pub fn caller_side(&self) -> Side {
        self.caller_on
    }

    /// BYEs for both legs, as a UAC for each side (§15.1.1): toward the callee as the caller
    /// and toward the caller as the callee, each with a CSeq above what that UA's peer used.
    /// Empty before the dialog is confirmed.
    pub fn byes(&self, call_id: &str) -> Vec<ByeSpec> {
        let Some(d) = &self.dialog else {
            return Vec::new();
        };
        let caller = self.caller_side();
        let callee = caller.other();
        vec![
            ByeSpec {
                side: callee,
                request_uri: d.callee_contact.clone(),
                routes: d.routes_to_callee.clone(),
                from: d.caller_from.clone(),
                to: d.callee_to.clone(),
                call_id: call_id.to_owned(),
                cseq: self.cseq[side_index(caller)].saturating_add(1),
            },
            ByeSpec {
                side: caller,
                request_uri: d.caller_contact.clone(),
                routes: d.routes_to_caller.clone(),
                from: d.callee_to.clone(),
                to: d.caller_from.clone(),
                call_id: call_id.to_owned(),
                cseq: self.cseq[side_index(callee)].saturating_add(1),
            },
        ]
    }
}

/// Index of a side in per-side arrays.
pub(super) fn side_index(side: Side) -> usize {
    match side {
        Side::Gateway => 0,
        Side::Cloud => 1,
    }
}

/// Every call, and the counts kept with them.
#[derive(Debug, Default)]
pub(super) struct Calls {
    calls: HashMap<CallKey, Call>,
    /// Per gateway: INVITE branches waiting for a final response plus established calls.
    load: HashMap<String, u32>,
}

/// A call's longest life without a BYE (a lost BYE, no media supervision): then it is dropped
/// from the counts with a record ended by the appliance.
pub(super) const MAX_CALL_AGE: Duration = Duration::from_secs(24 * 3600);

impl Calls {
    /// Calls in progress or established.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Sessions per gateway, for routing (`max_sessions`) and metrics.
    pub fn load(&self) -> &HashMap<String, u32> {
        &self.load
    }

    pub fn get(&self, key: &CallKey) -> Option<&Call> {
        self.calls.get(key)
    }

    pub fn contains(&self, key: &CallKey) -> bool {
        self.calls.contains_key(key)
    }

    /// A new call (a repeated initial INVITE with the same key keeps the first entry).
    pub fn start(&mut self, key: CallKey, call: Call) {
        self.calls.entry(key).or_insert(call);
    }

    /// An INVITE branch toward `gateway` starts (+1) or got its final answer (-1).
    pub fn branch(&mut self, gateway: &str, open: bool) {
        let n = self.load.entry(gateway.to_owned()).or_insert(0);
        if open {
            *n = n.saturating_add(1);
        } else {
            *n = n.saturating_sub(1);
        }
    }

    /// A request of the call came from `side` with CSeq number `seq`.
    pub fn saw_request(&mut self, key: &CallKey, side: Side, seq: u32) {
        if let Some(c) = self.calls.get_mut(key) {
            let n = &mut c.cseq[side_index(side)];
            *n = (*n).max(seq);
        }
    }

    /// The 2xx of the initial INVITE went upstream: the dialog (the first one is kept).
    pub fn confirmed(&mut self, key: &CallKey, dialog: DialogInfo) {
        if let Some(c) = self.calls.get_mut(key) {
            c.dialog.get_or_insert(dialog);
        }
    }

    /// The first ringing went upstream.
    pub fn ringing(&mut self, key: &CallKey, now: Instant) {
        if let Some(c) = self.calls.get_mut(key) {
            c.ringing.get_or_insert(now);
        }
    }

    /// The call was answered; `via_gateway`: the gateway that answered it (an outbound call),
    /// whose session count it holds until it ends.
    pub fn answered(&mut self, key: &CallKey, now: Instant, via_gateway: Option<&str>) {
        let Some(c) = self.calls.get_mut(key) else {
            return;
        };
        if c.answer.is_some() {
            return;
        }
        c.answer = Some(now);
        if let Some(g) = via_gateway {
            c.gateway = Some(g.to_owned());
            c.session_of = Some(g.to_owned());
            *self.load.entry(g.to_owned()).or_insert(0) += 1;
        }
    }

    /// The call ends: removed from the counts; its record, when it existed.
    #[allow(clippy::too_many_arguments)]
    pub fn end(
        &mut self,
        key: &CallKey,
        now: Instant,
        status: u16,
        reason: &str,
        ended_by: EndedBy,
        site: &str,
        cloud_peer: &str,
        media: Option<SessionSnapshot>,
    ) -> Option<CallRecord> {
        let c = self.calls.remove(key)?;
        if let Some(g) = &c.session_of {
            if let Some(n) = self.load.get_mut(g) {
                *n = n.saturating_sub(1);
            }
        }
        let legs = media.map(|s| {
            [&s.a, &s.b].map(|l| LegRecord {
                rx_packets: l.counters.rx_packets,
                rx_bytes: l.counters.rx_bytes,
                tx_packets: l.counters.tx_packets,
                tx_bytes: l.counters.tx_bytes,
                lost: l.lost,
                late: l.late,
                dropped: l.counters.drops.total(),
                srtp: l.srtp,
            })
        });
        let record = CallRecord {
            call_id: String::from_utf8_lossy(&key.call_id).into_owned(),
            direction: c.direction,
            caller: c.caller,
            callee: c.callee,
            user: c.user,
            site: site.to_owned(),
            gateway: c.gateway,
            cloud_peer: cloud_peer.to_owned(),
            start: c.start,
            ringing: c.ringing,
            answer: c.answer,
            end: now,
            status,
            reason: reason.to_owned(),
            ended_by,
            legs,
        };
        debug!(
            call_id = %record.call_id,
            direction = record.direction.as_str(),
            status,
            ended_by = ended_by.as_str(),
            duration_ms = record.duration().as_millis() as u64,
            "call ended"
        );
        Some(record)
    }

    /// Established calls older than `max_age` at `now` (never ended by a BYE we saw).
    pub fn expired(&self, now: Instant, max_age: Duration) -> Vec<CallKey> {
        self.calls
            .iter()
            .filter(|(_, c)| now.saturating_duration_since(c.start) >= max_age)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Every call's key (drain).
    pub fn keys(&self) -> Vec<CallKey> {
        self.calls.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn key(peer: &str, id: &str) -> CallKey {
        CallKey::new(peer, Bytes::copy_from_slice(id.as_bytes()))
    }

    fn call(now: Instant) -> Call {
        Call {
            direction: Direction::Outbound,
            caller: "sip:alice@lab.example".into(),
            callee: "tel:+14255550199".into(),
            user: Some("alice@lab.example".into()),
            gateway: None,
            start: now,
            ringing: None,
            answer: None,
            session_of: None,
            caller_on: Side::Cloud,
            dialog: None,
            cseq: [0, 1],
        }
    }

    #[test]
    fn counts_follow_branches_answers_and_ends() {
        let t0 = Instant::now();
        let mut c = Calls::default();
        let k = key("sip.cloud.lab.example", "c1");
        c.start(k.clone(), call(t0));
        assert_eq!(c.len(), 1);
        c.branch("gw1", true);
        assert_eq!(c.load()["gw1"], 1);
        c.ringing(&k, t0 + Duration::from_millis(300));
        // The 2xx: the pending branch becomes an established session.
        c.branch("gw1", false);
        c.answered(&k, t0 + Duration::from_secs(1), Some("gw1"));
        assert_eq!(c.load()["gw1"], 1);
        let r = c
            .end(
                &k,
                t0 + Duration::from_secs(61),
                200,
                "BYE",
                EndedBy::Caller,
                "lab",
                "cloud",
                None,
            )
            .unwrap();
        assert_eq!(c.load()["gw1"], 0);
        assert_eq!(c.len(), 0);
        assert_eq!(r.duration(), Duration::from_secs(60));
        assert_eq!(r.setup(), Some(Duration::from_millis(300)));
        assert_eq!(r.gateway.as_deref(), Some("gw1"));
        // Ended once: a second BYE finds nothing.
        assert!(c
            .end(&k, t0, 200, "BYE", EndedBy::Callee, "lab", "cloud", None)
            .is_none());
    }

    #[test]
    fn calls_of_two_peers_with_one_call_id_are_apart() {
        let t0 = Instant::now();
        let mut c = Calls::default();
        c.start(key("gw1", "same"), call(t0));
        c.start(key("gw2", "same"), call(t0));
        assert_eq!(c.len(), 2);
        assert!(c
            .end(
                &key("gw2", "same"),
                t0,
                487,
                "",
                EndedBy::Caller,
                "lab",
                "cloud",
                None
            )
            .is_some());
        assert!(c.contains(&key("gw1", "same")));
        assert_eq!(c.expired(t0 + MAX_CALL_AGE, MAX_CALL_AGE).len(), 1);
    }
}
