//! **relay_response** and **fail** (§16.7): responses find their client transaction;
//! provisionals and every 2xx go upstream at once; a failed branch fails over to the next target
//! when its code allows it (408/503/504 by default, never 603), else the best final response is
//! sent upstream (a 503 becomes 500, §21.5.4).

use std::time::Instant;

use tracing::{debug, info, info_span, warn};

use super::local::log_outcome;
use super::own::build_ack;
use super::{Core, TIMER_C};
use crate::config::{Side, Transport};
use crate::flow::Flow;
use crate::routing::NextHop;
use crate::sip::Message;
use crate::txn::{ClientEvent, ClientKey, ServerKey};

impl Core {
    pub(super) fn on_response(&mut self, now: Instant, flow: Flow, resp: Message) {
        let (Some(status), Some(via)) = (resp.status(), resp.top_via()) else {
            return;
        };
        let Some(branch) = via.branch() else {
            self.stats.stray_responses += 1;
            return;
        };
        let Some(cseq) = resp.cseq() else { return };
        let key = ClientKey::new(branch, cseq.method.as_str().as_bytes());
        let span = info_span!("relay_response", status, side = flow.side.as_str());
        let _g = span.enter();
        let Some(c) = self.clients.get_mut(&key) else {
            // RFC 6026 §7.3 / §16.7 step 3: a response matching no client transaction is stray.
            self.stats.stray_responses += 1;
            debug!(status, "stray response dropped");
            return;
        };
        // A response counts only from where its request went: the hop's side, and its address
        // (UDP, TCP) or its verified certificate (TLS). Anything else is forged or lost.
        if !from_hop(&flow, &c.hop) {
            self.stats.stray_responses += 1;
            self.stats.foreign_responses += 1;
            debug!(status, remote = %flow.remote, hop = %c.hop.addr, "response from elsewhere than its hop: dropped");
            return;
        }
        if let Some(name) = self.probes.get(&key) {
            // An answer to our OPTIONS: the target is alive; consumed here, never relayed.
            self.health.on_answer(now, name);
        }
        let ack = (c.is_invite && status >= 300)
            .then(|| build_ack(&c.sent, &resp))
            .flatten();
        c.txn.handle_response(now, status, ack);
        if (101..200).contains(&status) {
            c.got_provisional = true;
            // The far end is alive: the failover timer gives way to Timer C (§16.6 step 11).
            if c.is_invite {
                c.branch_deadline = Some(now + TIMER_C);
            }
        } else if status >= 200 {
            c.branch_deadline = None;
        }
        let cancel_now = c.cancel_pending && (101..200).contains(&status);
        if cancel_now {
            c.cancel_pending = false;
        }
        self.drain_client_with(now, &key, Some(&resp));
        if cancel_now {
            self.cancel_branch(now, &key);
        }
    }

    /// The failover timer or Timer C of an INVITE branch fired.
    pub(super) fn client_branch_timer(&mut self, now: Instant, key: &ClientKey) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        let Some(d) = c.branch_deadline else { return };
        if d > now {
            return;
        }
        c.branch_deadline = None;
        let rang = c.got_provisional;
        let parent = c.parent.clone();
        if c.abandoned {
            return;
        }
        c.abandoned = true;
        warn!(target = %c.hop.name, "no answer in time: abandoning branch");
        // §9.1: a CANCEL only after a provisional response; else the INVITE times out by itself.
        if rang {
            self.cancel_branch(now, key);
        } else if let Some(c) = self.clients.get_mut(key) {
            c.cancel_pending = true;
        }
        if let Some(p) = parent {
            self.branch_failed(now, &p, key, None, 408);
        }
    }

    pub(super) fn client_event(
        &mut self,
        now: Instant,
        key: &ClientKey,
        ev: ClientEvent,
        resp: Option<&Message>,
    ) {
        let Some(c) = self.clients.get(key) else {
            return;
        };
        let Some(parent) = c.parent.clone() else {
            return;
        };
        let abandoned = c.abandoned;
        match ev {
            ClientEvent::Provisional(code) => {
                // §16.7 step 5: 100 is not forwarded; other provisionals are.
                if code > 100 && !abandoned {
                    if let Some(r) = resp {
                        self.relay_upstream(now, &parent, r, code);
                    }
                }
            }
            ClientEvent::Final(code) if (200..300).contains(&code) => {
                // 2xx are forwarded at once, every one of them (§16.7 step 5, RFC 6026).
                if let Some(r) = resp {
                    self.call_answered(now, &parent, key);
                    if let Some(ctx) = self.servers.get_mut(&parent).and_then(|e| e.ctx.as_mut()) {
                        ctx.final_sent = true;
                        ctx.remaining.clear();
                    }
                    self.relay_upstream(now, &parent, r, code);
                }
            }
            ClientEvent::Final(code) => {
                if !abandoned {
                    self.branch_failed(now, &parent, key, resp.cloned(), code);
                }
            }
            ClientEvent::Timeout | ClientEvent::TransportError => {
                if !abandoned {
                    info!(
                        "branch failed: {}",
                        if matches!(ev, ClientEvent::Timeout) {
                            "timeout"
                        } else {
                            "transport error"
                        }
                    );
                    self.branch_failed(
                        now,
                        &parent,
                        key,
                        None,
                        if matches!(ev, ClientEvent::Timeout) {
                            408
                        } else {
                            503
                        },
                    );
                }
            }
        }
    }

    /// The fail phase: a branch ended without a 2xx. Fail over to the next target when the code
    /// allows it, else settle the best response (§16.7 step 6).
    pub(super) fn branch_failed(
        &mut self,
        now: Instant,
        parent: &ServerKey,
        key: &ClientKey,
        resp: Option<Message>,
        code: u16,
    ) {
        let span = info_span!("fail", code);
        let _g = span.enter();
        let failover_codes = self.cfg.routing.failover_codes.clone();
        let Some(e) = self.servers.get_mut(parent) else {
            return;
        };
        let Some(ctx) = e.ctx.as_mut() else { return };
        if ctx.current.as_ref() == Some(key) {
            ctx.current = None;
        }
        if ctx.final_sent {
            return;
        }
        if let Some(r) = resp {
            let better = ctx
                .best
                .as_ref()
                .and_then(|b| b.status())
                .is_none_or(|b| rank(code) < rank(b));
            if better {
                ctx.best = Some(r);
            }
        }
        let retry = !ctx.cancelled
            && code != 603
            && failover_codes.contains(&code)
            && !ctx.remaining.is_empty();
        if retry {
            self.stats.failovers += 1;
            info!(code, "failing over to the next target");
            self.forward_next(now, parent);
        } else {
            if let Some(ctx) = self.servers.get_mut(parent).and_then(|e| e.ctx.as_mut()) {
                ctx.remaining.clear();
            }
            self.send_best_or(now, parent, code);
        }
    }

    pub(super) fn send_best(&mut self, now: Instant, key: &ServerKey) {
        self.send_best_or(now, key, 408);
    }

    /// Sends the best final response upstream, or a locally generated `fallback`.
    pub(super) fn send_best_or(&mut self, now: Instant, key: &ServerKey, fallback: u16) {
        let Some(e) = self.servers.get_mut(key) else {
            return;
        };
        let Some(ctx) = e.ctx.as_mut() else { return };
        if ctx.final_sent {
            return;
        }
        let best = ctx.best.take();
        let req = ctx.request.clone();
        let cancelled = ctx.cancelled;
        match best {
            Some(r) => {
                let code = r.status().unwrap_or(500);
                if code == 503 {
                    // §16.7 step 6 / §21.5.4: a 503 from downstream is not passed upstream as such.
                    self.respond(
                        now,
                        key,
                        &req,
                        500,
                        &[("Reason", b"SIP;cause=503;text=\"next hop unavailable\"")],
                    );
                } else {
                    self.relay_upstream(now, key, &r, code);
                }
            }
            None if cancelled => self.respond(now, key, &req, 487, &[]),
            None => {
                let code = if fallback == 503 { 503 } else { 408 };
                let retry_after: &[(&str, &[u8])] = if code == 503 {
                    &[("Retry-After", b"30")]
                } else {
                    &[]
                };
                self.respond(now, key, &req, code, retry_after);
            }
        }
    }

    /// Forwards a downstream response upstream (§16.7 step 9: our Via removed).
    pub(super) fn relay_upstream(
        &mut self,
        now: Instant,
        key: &ServerKey,
        resp: &Message,
        code: u16,
    ) {
        self.call_progress(now, key, code);
        let dialog = self.confirm_dialog(key, resp, code);
        let anchored = self.anchor_response(now, key, resp, dialog);
        let resp = anchored.as_ref().unwrap_or(resp);
        let mut ed = resp.edit();
        ed.pop_via();
        let data = ed.finish();
        let Some(e) = self.servers.get_mut(key) else {
            return;
        };
        if code >= 200 {
            if let Some(ctx) = e.ctx.as_mut() {
                if !ctx.final_sent {
                    ctx.final_sent = true;
                    log_outcome(ctx, code, "relayed");
                }
            }
        }
        e.txn.send_response(now, code, data);
        self.drain_server(now, key);
    }
}

/// Preference of final responses (§16.7 step 6): 6xx first, then 2xx … ; within failover,
/// 4xx is preferred to 5xx so a definitive answer wins over a failure of ours.
pub(super) fn rank(code: u16) -> u16 {
    match code {
        600..=699 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// Did a response on `flow` come from `hop`, where its request went? Over TLS the verified
/// identity decides (on the cloud side every verified connection is the cloud peer's), else the
/// source address.
fn from_hop(flow: &Flow, hop: &NextHop) -> bool {
    if flow.side != hop.side {
        return false;
    }
    match (flow.transport, flow.identity) {
        (Transport::Tls, Some(_)) if flow.side == Side::Cloud => true,
        (Transport::Tls, Some(id)) => {
            let name = hop.name.trim_end_matches('.');
            match (
                name.parse::<std::net::IpAddr>(),
                id.parse::<std::net::IpAddr>(),
            ) {
                (Ok(a), Ok(b)) => a == b,
                _ => name.eq_ignore_ascii_case(id.as_str()),
            }
        }
        _ => flow.remote.ip() == hop.addr.ip(),
    }
}
