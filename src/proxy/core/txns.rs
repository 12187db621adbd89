//! Transaction plumbing: moves each transaction's output to the wire and its events to the
//! response context, and keeps one live timer slot per transaction in the core's heap.

use std::cmp::Reverse;
use std::time::Instant;

use tracing::debug;

use super::local::response_addr;
use super::{Core, TimerSlot};
use crate::flow::Transmit;
use crate::sip::Message;
use crate::txn::{ClientKey, ServerEvent, ServerKey, State};

impl Core {
    pub(super) fn drain_client(&mut self, now: Instant, key: &ClientKey) {
        self.drain_client_with(now, key, None);
    }

    /// Moves a client transaction's output to the wire and its events to the response context.
    /// `resp` is the response just handled, if any (the events refer to it).
    pub(super) fn drain_client_with(
        &mut self,
        now: Instant,
        key: &ClientKey,
        resp: Option<&Message>,
    ) {
        let mut events = Vec::new();
        {
            let Some(c) = self.clients.get_mut(key) else {
                return;
            };
            while let Some(data) = c.txn.poll_transmit() {
                self.out.push_back(Transmit {
                    side: c.hop.side,
                    transport: c.hop.transport,
                    remote: c.hop.addr,
                    data,
                });
            }
            while let Some(ev) = c.txn.poll_event() {
                events.push(ev);
            }
        }
        for ev in events {
            self.client_event(now, key, ev, resp);
        }
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        // An INVITE branch leaves its gateway's load with its final response (or when it is
        // abandoned); a 2xx has made the call an established session of that gateway already.
        let pending = matches!(c.txn.state(), State::Calling | State::Proceeding);
        if !pending || c.abandoned {
            if let Some(gw) = c.counted.take() {
                self.calls.branch(&gw, false);
            }
        }
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if c.txn.is_terminated() {
            if let Some((slot, _)) = c.slot.take() {
                self.slots.remove(&slot);
            }
            self.clients.remove(key);
            self.probes.remove(key);
            return;
        }
        let at = match (c.txn.poll_timeout(), c.branch_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let slot = c.slot;
        let new = self.reschedule(slot, at, TimerSlot::Client(key.clone()));
        if let Some(c) = self.clients.get_mut(key) {
            c.slot = new;
        }
    }

    pub(super) fn drain_server(&mut self, now: Instant, key: &ServerKey) {
        let _ = now;
        let Some(e) = self.servers.get_mut(key) else {
            return;
        };
        while let Some(data) = e.txn.poll_transmit() {
            let remote = response_addr(&e.flow, e.rport, e.via_port);
            self.out.push_back(Transmit {
                side: e.flow.side,
                transport: e.flow.transport,
                remote,
                data,
            });
        }
        while let Some(ev) = e.txn.poll_event() {
            match ev {
                ServerEvent::Timeout => {
                    debug!("server transaction timed out waiting for ACK (Timer H)")
                }
                ServerEvent::TransportError => debug!("server transaction transport error"),
                ServerEvent::Terminated => {}
            }
        }
        if e.txn.is_terminated() {
            if let Some((slot, _)) = e.slot.take() {
                self.slots.remove(&slot);
            }
            self.servers.remove(key);
            return;
        }
        let at = e.txn.poll_timeout();
        let slot = e.slot;
        let new = self.reschedule(slot, at, TimerSlot::Server(key.clone()));
        if let Some(e) = self.servers.get_mut(key) {
            e.slot = new;
        }
    }

    /// Keeps one live heap slot per transaction, at its next deadline.
    pub(super) fn reschedule(
        &mut self,
        old: Option<(u64, Instant)>,
        at: Option<Instant>,
        which: TimerSlot,
    ) -> Option<(u64, Instant)> {
        match (old, at) {
            (Some((slot, t)), Some(a)) if t == a => Some((slot, t)),
            (old, at) => {
                if let Some((slot, _)) = old {
                    self.slots.remove(&slot);
                }
                let a = at?;
                let slot = self.next_slot;
                self.next_slot += 1;
                self.slots.insert(slot, which);
                self.heap.push(Reverse((a, slot)));
                Some((slot, a))
            }
        }
    }
}
