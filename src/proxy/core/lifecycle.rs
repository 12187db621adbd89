//! A call's life as the core sees it: the first ringing and the answer go upstream, and a
//! call ends — a final error, a BYE from one of its peers, media supervision, or its longest
//! life passed. Each end leaves the counts at once (so a gateway's `max_sessions` never leaks)
//! and yields a [`crate::cdr::CallRecord`].

use std::time::Instant;

use super::calls::MAX_CALL_AGE;
use super::Core;
use crate::cdr::EndedBy;
use crate::config::Side;
use crate::media::SessionSnapshot;
use crate::proxy::CallKey;
use crate::sip::{reason_phrase, Method};
use crate::txn::{ClientKey, ServerKey};

impl Core {
    /// The call of an initial INVITE's server transaction.
    fn initial_invite_call(&self, key: &ServerKey) -> Option<CallKey> {
        let e = self.servers.get(key)?;
        let req = &e.ctx.as_ref()?.request;
        let initial =
            req.method() == Some(&Method::Invite) && req.to_hdr().and_then(|t| t.tag()).is_none();
        initial.then(|| e.call.clone()).flatten()
    }

    /// A response with `code` goes upstream on `key` (relayed or ours): ringing is noted, a
    /// final error ends the call.
    pub(super) fn call_progress(&mut self, now: Instant, key: &ServerKey, code: u16) {
        let Some(call) = self.initial_invite_call(key) else {
            return;
        };
        match code {
            180..=183 => self.calls.ringing(&call, now),
            300.. => {
                let cancelled = self
                    .servers
                    .get(key)
                    .and_then(|e| e.ctx.as_ref())
                    .is_some_and(|c| c.cancelled);
                let by = if cancelled {
                    EndedBy::Caller
                } else {
                    EndedBy::Failure
                };
                self.end_call(now, &call, code, reason_phrase(code), by);
            }
            _ => {}
        }
    }

    /// The 2xx of client transaction `client` goes upstream on `key`: the call is answered,
    /// and holds a session of the gateway that answered it.
    pub(super) fn call_answered(&mut self, now: Instant, key: &ServerKey, client: &ClientKey) {
        let Some(call) = self.initial_invite_call(key) else {
            return;
        };
        let gateway = self
            .clients
            .get(client)
            .filter(|c| c.hop.side == Side::Gateway)
            .map(|c| c.hop.name.clone());
        self.calls.answered(&call, now, gateway.as_deref());
    }

    /// The call ends: its media released, its record made.
    pub(super) fn end_call(
        &mut self,
        now: Instant,
        call: &CallKey,
        status: u16,
        reason: &str,
        by: EndedBy,
    ) {
        if !self.calls.contains(call) {
            return;
        }
        let media = self
            .anchor
            .as_mut()
            .and_then(|a| a.release(call, by.as_str()));
        self.finish_call(now, call, status, reason, by, media);
    }

    /// The call ends with the media counters given (already released).
    pub(super) fn finish_call(
        &mut self,
        now: Instant,
        call: &CallKey,
        status: u16,
        reason: &str,
        by: EndedBy,
        media: Option<SessionSnapshot>,
    ) {
        let site = self.table.own_site.clone();
        let cloud = self.table.cloud_peer.name.clone();
        if let Some(r) = self
            .calls
            .end(call, now, status, reason, by, &site, &cloud, media)
        {
            self.records.push_back(r);
        }
    }

    /// Calls past their longest life (no BYE seen, no media to supervise) leave the counts.
    pub(super) fn expire_calls(&mut self, now: Instant) {
        for call in self.calls.expired(now, MAX_CALL_AGE) {
            self.end_call(
                now,
                &call,
                200,
                "longest call life passed",
                EndedBy::Appliance,
            );
        }
    }
}
