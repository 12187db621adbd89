//! **admit**: a request arrives. Its sender is identified first — a configured peer by its
//! verified TLS identity or source address — and a request from anyone else gets no state at
//! all (at most a rate-limited stateless 403). Out-of-dialog requests pass the overload limits
//! before a transaction exists (a stateless 503 with Retry-After otherwise; so do all of them
//! in maintenance and during the drain). Retransmissions
//! find their server transaction (§17.2.3) from the same peer only; a new INVITE gets its
//! transaction and 100 Trying; Max-Forwards (483), Proxy-Require (420), the Request-URI scheme
//! (416) and loops (482) are checked; OPTIONS to us is answered; ACK and CANCEL take their own
//! paths (§16.10, §17.2.1), bound to the peer of the transaction they belong to. Malformed
//! messages get the parser's answer (known peers) or the unknown-sender treatment.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tracing::{debug, info, info_span};

use super::overload::{Answer, Shed};
use super::{Core, Parked, Refusal, RouteError, ServerEntry, ALLOW};
use crate::config::Side;
use crate::flow::{Flow, Transmit};
use crate::routing::Sender;
use crate::sip::{
    build_error_response, build_response, reason_phrase, HeaderName, Message, Method, Scheme,
};
use crate::txn::{RequestFacts, ServerKey, ServerTxn, State};

impl Core {
    /// The configured peer `flow` comes from, and its name (a gateway's name, the cloud peer's
    /// FQDN): by the verified TLS identity, else by the source address.
    pub(super) fn peer_of(&self, flow: &Flow) -> Option<(Sender, Arc<str>)> {
        let sender =
            self.table
                .identify_flow(flow.side, flow.remote.ip(), flow.identity.as_deref())?;
        let name: Arc<str> = match &sender {
            Sender::Gateway { name, .. } => Arc::from(name.as_str()),
            Sender::Appliance { fqdn, .. } => Arc::from(fqdn.as_str()),
            // Every cloud peer is the one cloud: its calls are keyed by the primary's name.
            Sender::CloudPeer => Arc::from(self.table.cloud_peer.name.as_str()),
        };
        Some((sender, name))
    }

    pub(super) fn on_malformed(
        &mut self,
        now: Instant,
        flow: Flow,
        bytes: &[u8],
        response: Option<(u16, &'static str)>,
        why: &str,
    ) {
        self.stats.malformed += 1;
        if self.peer_of(&flow).is_none() {
            self.stats.unknown_senders += 1;
            if !self.unknown.may_answer(flow.remote.ip(), now) {
                debug!(remote = %flow.remote, error = %why, "malformed message from no peer dropped");
                return;
            }
        }
        let Some((status, reason)) = response else {
            debug!(remote = %flow.remote, error = %why, "malformed message dropped");
            return;
        };
        match error_response(bytes, status, reason) {
            Some((resp, rport, via_port)) => {
                info!(remote = %flow.remote, status, error = %why, "malformed request refused");
                self.send_to_flow(&flow, rport, via_port, resp);
            }
            None => {
                debug!(remote = %flow.remote, error = %why, "malformed request dropped: no answer can be built")
            }
        }
    }

    pub(super) fn on_request(&mut self, now: Instant, flow: Flow, req: Message) {
        let Some(method) = req.method().cloned() else {
            return;
        };
        let call_id = String::from_utf8_lossy(req.call_id().unwrap_or_default()).into_owned();
        let span = info_span!("admit", method = method.as_str(), call_id = %call_id, side = flow.side.as_str(), remote = %flow.remote);
        let _g = span.enter();

        let Some(facts) = request_facts(&req) else {
            // The parser guarantees these headers on requests; be defensive all the same.
            return;
        };
        let key = ServerKey::for_request(&facts);

        // Who sent it, before anything is kept: no peer, no state.
        let Some((sender, peer)) = self.peer_of(&flow) else {
            return self.refuse_unknown_sender(now, &flow, &req, &method, &key);
        };

        match method {
            Method::Ack => return self.on_ack(now, flow, req, key, &peer),
            Method::Cancel if !self.servers.contains_key(&key) => {
                let invite = ServerKey::invite_for_cancel(&facts);
                return self.on_cancel(now, flow, req, key, invite, peer);
            }
            _ => {}
        }

        // Retransmission of a request we already have a transaction for (§17.2.3) — from the
        // peer that sent it; the same key from another peer is not its retransmission.
        if let Some(e) = self.servers.get_mut(&key) {
            if e.peer != peer || e.flow.side != flow.side {
                debug!(peer = %peer, "transaction key of another peer's request: dropped");
                return;
            }
            e.txn.handle_retransmission(now);
            self.drain_server(now, &key);
            return;
        }

        // Overload control, before any state: out-of-dialog requests by peer and call rates,
        // every request by the size of the transaction table.
        let initial = req.to_hdr().and_then(|t| t.tag()).is_none();
        let shed = if initial && self.out_of_service().is_some() {
            // Maintenance or drain: new calls and OPTIONS get a 503, so the peers move on to
            // the next appliance; calls in progress keep their in-dialog requests.
            self.out_of_service()
        } else if initial {
            self.overload
                .admit(
                    now,
                    &peer.to_ascii_lowercase(),
                    method == Method::Invite,
                    self.calls.len(),
                    self.servers.len(),
                )
                .err()
        } else {
            (self.servers.len() >= self.overload.limits().max_transactions)
                .then_some(Shed::Transactions)
        };
        if let Some(shed) = shed {
            return self.shed(now, &flow, &req, &key, &peer, shed);
        }

        let is_invite = method == Method::Invite;
        let mut entry = ServerEntry {
            txn: ServerTxn::new(now, is_invite, flow.transport.is_reliable(), &self.timers),
            slot: None,
            flow,
            peer: peer.clone(),
            call: None,
            rport: via_rport(&req),
            via_port: via_port(&req),
            ctx: None,
        };
        // §16.2 / §17.2.1: a proxy answers INVITE with 100 Trying at once.
        if is_invite {
            let trying = build_response(&req, 100, "Trying", None, &[]);
            entry.txn.send_response(now, 100, trying);
        }
        self.servers.insert(key.clone(), entry);
        self.drain_server(now, &key);

        if let Err(r) = self.admit(&req, &method) {
            self.stats.rejected += 1;
            info!(status = r.status, reason = %r.reason, "request refused");
            let extra: Vec<(&str, &[u8])> =
                r.extra.iter().map(|(n, v)| (*n, v.as_slice())).collect();
            self.respond(now, &key, &req, r.status, &extra);
            return;
        }

        // OPTIONS addressed to us: our host in the Request-URI, and a Route set (if any) that
        // names only us — a UA with us as its outbound proxy sends its keep-alive that way
        // (§16.4: our Route entries are ours to remove).
        if method == Method::Options
            && initial
            && req.routes().all(|r| self.is_us_uri(Some(r.uri())))
            && self.is_us_uri(req.request_uri())
        {
            let contact = format!(
                "<sip:{}:{};transport={}>",
                self.cfg.fqdn_for(flow.side),
                flow.local.port(),
                flow.transport.uri_param()
            );
            self.respond(
                now,
                &key,
                &req,
                200,
                &[
                    ("Allow", ALLOW.as_bytes()),
                    ("Accept", b"application/sdp"),
                    ("Contact", contact.as_bytes()),
                    ("Supported", b""),
                ],
            );
            return;
        }

        self.route_and_forward(now, key, flow, req, sender, peer);
    }

    /// A request from an address that is no peer: no transaction, no 100 Trying; one
    /// stateless 403 per source per interval (or nothing, by configuration).
    fn refuse_unknown_sender(
        &mut self,
        now: Instant,
        flow: &Flow,
        req: &Message,
        method: &Method,
        key: &ServerKey,
    ) {
        self.stats.unknown_senders += 1;
        if *method == Method::Ack || !self.unknown.may_answer(flow.remote.ip(), now) {
            debug!(remote = %flow.remote, "request from no peer dropped");
            return;
        }
        info!(remote = %flow.remote, "request from no peer refused (403, stateless)");
        let data = build_response(
            req,
            403,
            reason_phrase(403),
            Some(self.local_tag(key).as_bytes()),
            &[],
        );
        self.send_to_flow(flow, via_rport(req), via_port(req), data);
    }

    /// A request over a limit: a stateless 503 with Retry-After (never retransmitted by us),
    /// itself rate-limited per peer.
    fn shed(
        &mut self,
        now: Instant,
        flow: &Flow,
        req: &Message,
        key: &ServerKey,
        peer: &str,
        shed: Shed,
    ) {
        *self.stats.shed.entry(shed.as_str()).or_insert(0) += 1;
        if self.overload.answer(now, &peer.to_ascii_lowercase()) == Answer::Drop
            || req.method() == Some(&Method::Ack)
        {
            debug!(peer, reason = shed.as_str(), "overload: request dropped");
            return;
        }
        debug!(peer, reason = shed.as_str(), "overload: 503 (stateless)");
        let retry = self.overload.limits().retry_after.as_secs().to_string();
        let data = build_response(
            req,
            503,
            reason_phrase(503),
            Some(self.local_tag(key).as_bytes()),
            &[("Retry-After", retry.as_bytes())],
        );
        self.send_to_flow(flow, via_rport(req), via_port(req), data);
    }

    /// The admit phase: returns the rejection, if any.
    pub(super) fn admit(&self, req: &Message, method: &Method) -> Result<(), Refusal> {
        // §16.3 step 3.
        if req.max_forwards() == Some(0)
            && !(*method == Method::Options && self.is_us_uri(req.request_uri()))
        {
            return Err(Refusal::new(483, "Max-Forwards reached 0".into()));
        }
        // §16.3 step 5: we support no extension a proxy could be required to.
        let required: Vec<&[u8]> = req
            .header_values(HeaderName::ProxyRequire)
            .filter(|v| !v.is_empty())
            .collect();
        if !required.is_empty() {
            return Err(Refusal::new(420, "Proxy-Require names an extension".into())
                .with("Unsupported", &required.join(&b", "[..])));
        }
        // §16.3 step 1: Request-URI scheme.
        match req.request_uri().map(|u| u.scheme()) {
            Some(Scheme::Sip | Scheme::Sips | Scheme::Tel) => {}
            _ => return Err(Refusal::new(416, "Request-URI scheme".into())),
        }
        // §16.3 step 4: loop detection. The branch comparison of §16.6 step 8 cannot see a
        // loop through this appliance (the hash covers the topmost Via, which is ours when the
        // request comes back), and spirals have no place here: we never route to ourselves. So
        // any Via of ours (our FQDN with one of our ports) in a request reaching us is a loop.
        for v in req.vias() {
            let ours_host = [Side::Gateway, Side::Cloud].iter().any(|s| {
                v.host()
                    .eq_ignore_ascii_case(self.cfg.fqdn_for(*s).as_str())
            });
            let ours_port = v
                .port()
                .is_some_and(|p| self.local.values().any(|a| a.port() == p));
            if ours_host && ours_port {
                return Err(Refusal::new(482, "a Via of ours: loop".into()));
            }
        }
        Ok(())
    }

    pub(super) fn on_ack(
        &mut self,
        now: Instant,
        flow: Flow,
        req: Message,
        key: ServerKey,
        peer: &Arc<str>,
    ) {
        if let Some(e) = self.servers.get_mut(&key) {
            if e.txn.state() == State::Completed || e.txn.state() == State::Confirmed {
                if e.peer != *peer {
                    return;
                }
                // ACK for a non-2xx final: absorbed by the transaction (§17.2.1).
                e.txn.handle_ack(now);
                self.drain_server(now, &key);
                return;
            }
        }
        // ACK for a 2xx: a transaction of its own, forwarded statelessly by its Route set
        // (§16.6, RFC 6026 §6) — only inside a dialog we created.
        if req.max_forwards() == Some(0) {
            return;
        }
        let Some((sender, _)) = self.peer_of(&flow) else {
            return;
        };
        let (target, gateway) = match self.route_by_route_set(&flow, &sender, &req) {
            Ok(super::route::Routing::Follow { target, gateway }) => (target, gateway),
            Err(RouteError::Unresolved(host)) => {
                return self.park(host, Parked::Ack { flow, req });
            }
            _ => {
                debug!("ACK outside a dialog of ours: dropped");
                return;
            }
        };
        let seed = req
            .top_via()
            .and_then(|v| v.branch())
            .unwrap_or_default()
            .to_vec();
        let branch = crate::txn::branch_for(&self.branch_key, &seed, u32::MAX);
        // An ACK may carry the answer to an offer in the 2xx (late offer, §13.2.1).
        let call = self.call_of(&req, &gateway);
        let req = match call
            .as_ref()
            .map(|c| self.anchor_request(now, &req, &flow, &target, c))
        {
            Some(Ok(Some(r))) => r,
            _ => req,
        };
        if let Some(data) = self.build_forward(&req, &flow, &target, &branch, None) {
            self.stats.forwarded += 1;
            self.out.push_back(Transmit {
                side: target.hop.side,
                transport: target.hop.transport,
                remote: target.hop.addr,
                data,
            });
        }
    }

    pub(super) fn on_cancel(
        &mut self,
        now: Instant,
        flow: Flow,
        req: Message,
        key: ServerKey,
        invite: ServerKey,
        peer: Arc<str>,
    ) {
        // The CANCEL is a transaction of its own; answer it 200 (§16.10) or 481. It cancels
        // only an INVITE of the same peer, received on the same side.
        let found = self
            .servers
            .get(&invite)
            .is_some_and(|e| e.ctx.is_some() && e.peer == peer && e.flow.side == flow.side);
        let mut entry = ServerEntry {
            txn: ServerTxn::new(now, false, flow.transport.is_reliable(), &self.timers),
            slot: None,
            flow,
            peer,
            call: None,
            rport: via_rport(&req),
            via_port: via_port(&req),
            ctx: None,
        };
        let status = if found { 200 } else { 481 };
        let resp = build_response(&req, status, reason_phrase(status), None, &[]);
        entry.txn.send_response(now, status, resp);
        self.servers.insert(key.clone(), entry);
        self.drain_server(now, &key);
        if !found {
            return;
        }
        info!("CANCEL: cancelling pending branches");
        self.cancel_invite(now, &invite);
    }

    /// Cancels the INVITE of server transaction `invite` (§16.10): no further target is tried,
    /// the branch in progress gets a CANCEL (its 487 goes upstream), or the caller gets a 487
    /// at once when no branch is in progress.
    pub(super) fn cancel_invite(&mut self, now: Instant, invite: &ServerKey) {
        let mut to_cancel = Vec::new();
        let mut answer_487 = false;
        if let Some(e) = self.servers.get_mut(invite) {
            if let Some(ctx) = e.ctx.as_mut() {
                ctx.cancelled = true;
                ctx.remaining.clear();
                match &ctx.current {
                    Some(k) => to_cancel.push(k.clone()),
                    None => answer_487 = !ctx.final_sent,
                }
            }
        }
        for k in to_cancel {
            self.cancel_branch(now, &k);
        }
        if answer_487 {
            if let Some(orig) = self
                .servers
                .get(invite)
                .and_then(|e| e.ctx.as_ref())
                .map(|c| c.request.clone())
            {
                self.respond(now, invite, &orig, 487, &[]);
            }
        }
    }

    /// A To tag for responses we generate, stable for the transaction (retransmissions of the
    /// request get the same tag).
    pub(super) fn local_tag(&self, key: &ServerKey) -> String {
        let b = key.branch_for_target(&self.branch_key, u32::MAX - 1);
        b.get(7..19).unwrap_or("sipedge").to_owned()
    }
}

pub(super) fn via_rport(req: &Message) -> bool {
    req.top_via().is_some_and(|v| v.rport().is_some())
}

pub(super) fn via_port(req: &Message) -> Option<u16> {
    req.top_via().and_then(|v| v.port())
}

pub(super) fn request_facts(req: &Message) -> Option<RequestFacts<'_>> {
    let via = req.top_via()?;
    let uri = req.request_uri()?;
    let cseq = req.cseq()?;
    Some(RequestFacts {
        method: req.method()?.as_str().as_bytes(),
        branch: via.branch(),
        sent_by: sent_by(via.raw()),
        request_uri: uri.raw(),
        from_tag: req.from_hdr().and_then(|f| f.tag()),
        to_tag: req.to_hdr().and_then(|t| t.tag()),
        call_id: req.call_id()?,
        cseq: cseq.seq,
        top_via: via.raw(),
    })
}

/// The sent-by (`host[:port]`) of a raw Via value: after the protocol, before the first `;`.
pub(super) fn sent_by(via: &[u8]) -> &[u8] {
    let after_proto = via
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .map_or(via, |i| via.get(i..).unwrap_or_default());
    let trimmed = after_proto.trim_ascii_start();
    let end = trimmed
        .iter()
        .position(|b| *b == b';')
        .unwrap_or(trimmed.len());
    trimmed.get(..end).unwrap_or_default().trim_ascii_end()
}

/// A response to a request the parser refused (`sip::build_error_response` copies its own
/// Via, From, To, Call-ID and CSeq lines), with whether its top Via asked for rport and its
/// port, for §18.2.2 addressing. `None` when there is no Via to answer along.
pub(super) fn error_response(
    raw: &[u8],
    status: u16,
    reason: &str,
) -> Option<(Bytes, bool, Option<u16>)> {
    let resp = build_error_response(raw, status, reason, Some(b"sipedge-err"))?;
    let parsed = Message::parse(resp.clone()).ok();
    let (rport, port) = parsed
        .as_ref()
        .and_then(|m| m.top_via())
        .map_or((false, None), |v| (v.rport().is_some(), v.port()));
    Some((resp, rport, port))
}
