//! **forward**: the next target of a response context gets its copy of the request (§16.6):
//! Request-URI, Route pop, Max-Forwards, double Record-Route (RFC 5658), received/rport, our
//! Via with a stable branch, and a client transaction with its failover timer.

use std::time::Instant;

use bytes::Bytes;
use tracing::{info, info_span};

use super::dialog_token::PARAM as TOKEN_PARAM;
use super::route::rewrite_uri_host;
use super::{ClientEntry, Core, Target};
use crate::config::Side;
use crate::flow::Flow;
use crate::sip::{HeaderName, Message, Method};
use crate::txn::{ClientKey, ClientTxn, ServerKey};

impl Core {
    pub(super) fn forward_next(&mut self, now: Instant, key: &ServerKey) {
        let span = info_span!("forward");
        let _g = span.enter();
        let Some(e) = self.servers.get_mut(key) else {
            return;
        };
        let flow = e.flow;
        let peer = e.peer.clone();
        let call = e.call.clone();
        let Some(ctx) = e.ctx.as_mut() else { return };
        let Some(target) = ctx.remaining.pop_front() else {
            // Nothing left to try: send the best response we have (§16.7 step 6).
            return self.send_best(now, key);
        };
        let idx = ctx.branch_index;
        ctx.branch_index += 1;
        let mut req = ctx.request.clone();
        if let (0, Some(call)) = (idx, &call) {
            // Media anchoring: the SDP is rewritten once; failover targets get the same copy.
            match self.anchor_request(now, &req, &flow, &target, call) {
                Ok(None) => {}
                Ok(Some(r)) => {
                    if let Some(ctx) = self.servers.get_mut(key).and_then(|e| e.ctx.as_mut()) {
                        ctx.request = r.clone();
                    }
                    req = r;
                }
                Err(r) => {
                    self.stats.rejected += 1;
                    tracing::info!(status = r.status, reason = %r.reason, "media anchoring refused");
                    return self.respond(now, key, &req, r.status, &[]);
                }
            }
        }
        let branch = key.branch_for_target(&self.branch_key, idx);
        let is_invite = req.method() == Some(&Method::Invite);
        let initial = req.to_hdr().and_then(|t| t.tag()).is_none();
        let dialog_forming =
            is_invite || initial && matches!(req.method(), Some(Method::Subscribe | Method::Refer));
        // Our Record-Route token binds the dialog to its gateway-side peer: the sender when it
        // came from the gateway side, else the gateway it goes to.
        let token = dialog_forming.then(|| {
            let gateway = if flow.side == Side::Gateway {
                &*peer
            } else {
                target.hop.name.as_str()
            };
            let call_id = req.call_id().unwrap_or_default();
            let caller_tag = req.from_hdr().and_then(|f| f.tag()).unwrap_or_default();
            self.dialog_key.token(call_id, caller_tag, gateway)
        });
        let Some(data) = self.build_forward(&req, &flow, &target, &branch, token.as_deref()) else {
            return self.respond(now, key, &req, 500, &[]);
        };
        let Ok(sent) = Message::parse(data.clone()) else {
            return self.respond(now, key, &req, 500, &[]);
        };
        let ckey = ClientKey::new(
            branch.as_bytes(),
            req.method().map_or("", |m| m.as_str()).as_bytes(),
        );
        info!(target = %target.hop.name, addr = %target.hop.addr, transport = target.hop.transport.via_token(), "forwarding");
        self.stats.forwarded += 1;
        let txn = ClientTxn::new(
            now,
            is_invite,
            data,
            target.hop.transport.is_reliable(),
            &self.timers,
        );
        let deadline = is_invite.then(|| now + self.cfg.routing.failover_timer);
        // An INVITE branch toward a gateway counts in its load until its final response.
        let counted = (is_invite && target.hop.side == Side::Gateway).then(|| {
            self.calls.branch(&target.hop.name, true);
            target.hop.name.clone()
        });
        self.clients.insert(
            ckey.clone(),
            ClientEntry {
                txn,
                slot: None,
                hop: target.hop,
                sent,
                parent: Some(key.clone()),
                is_invite,
                got_provisional: false,
                cancel_pending: false,
                branch_deadline: deadline,
                abandoned: false,
                counted,
            },
        );
        if let Some(ctx) = self.servers.get_mut(key).and_then(|e| e.ctx.as_mut()) {
            ctx.current = Some(ckey.clone());
        }
        self.drain_client(now, &ckey);
    }

    /// Builds the forwarded copy of `req` for `target` (§16.6): Request-URI, Route pop,
    /// Max-Forwards, Record-Route (with `token`, for dialog-forming requests), Via.
    pub(super) fn build_forward(
        &self,
        req: &Message,
        flow: &Flow,
        target: &Target,
        branch: &str,
        token: Option<&str>,
    ) -> Option<Bytes> {
        let mut ed = req.edit();
        // Our own Route entries go (§16.4).
        let ours = req
            .routes()
            .take_while(|r| self.is_us_uri(Some(r.uri())))
            .count();
        ed.pop_routes(ours);
        if let Some(new_ruri) = &target.strict_route {
            // §16.4: Request-URI := last Route value, which leaves the Route set. The kept
            // values are written back in order (after the other header fields).
            let kept: Vec<&[u8]> = req.routes().map(|r| r.raw()).collect();
            let kept = kept.get(..kept.len().saturating_sub(1)).unwrap_or_default();
            ed.set_request_uri(new_ruri.as_bytes());
            ed.remove_headers(HeaderName::Route);
            for r in kept {
                ed.add_header("Route", r);
            }
        }
        if let Some(new) = &target.request_uri {
            ed.set_request_uri(new.as_bytes());
        } else if target.rewrite_host {
            let uri = req.request_uri()?;
            if let Some(new) = rewrite_uri_host(&uri, &target.hop.name) {
                ed.set_request_uri(new.as_bytes());
            }
        }
        // §16.6 step 3.
        ed.set_max_forwards(req.max_forwards().map_or(70, |m| m.saturating_sub(1)));
        let out_side = target.hop.side;
        let out_t = target.hop.transport;
        let out_port = self
            .local
            .get(&(out_side, out_t))
            .map_or(5060, |a| a.port());
        if let Some(token) = token {
            // RFC 5658 double Record-Route: the inbound interface first, then the outbound one on
            // top, so each side's route set starts with the interface it reaches us on.
            let rr_in = format!(
                "<sip:{}:{};transport={};lr;{TOKEN_PARAM}={token}>",
                self.cfg.fqdn_for(flow.side),
                flow.local.port(),
                flow.transport.uri_param()
            );
            let rr_out = format!(
                "<sip:{}:{};transport={};lr;{TOKEN_PARAM}={token}>",
                self.cfg.fqdn_for(out_side),
                out_port,
                out_t.uri_param()
            );
            // Both land above the existing Record-Routes, in call order.
            ed.add_record_route(rr_out.as_bytes());
            ed.add_record_route(rr_in.as_bytes());
        }
        // §18.2.1 / RFC 3581 §4: record where the request really came from in its top Via.
        if let Some(v) = req.top_via() {
            let ip = flow.remote.ip().to_string();
            let rport = v.rport().is_some();
            if rport || v.host().trim_start_matches('[').trim_end_matches(']') != ip {
                ed.set_via_received(ip.as_bytes(), rport.then_some(flow.remote.port()));
            }
        }
        let via = format!(
            "SIP/2.0/{} {}:{};branch={};rport",
            out_t.via_token(),
            self.cfg.fqdn_for(out_side),
            out_port,
            branch
        );
        ed.push_via(via.as_bytes());
        Some(ed.finish())
    }
}
