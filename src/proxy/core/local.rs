//! Responses we generate ourselves, and the **log** phase: one line per proxied transaction
//! when its final response goes upstream. Responses go where §18.2.2 / RFC 3581 say.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use tracing::{info, info_span};

use super::{Core, ResponseContext};
use crate::flow::{Flow, Transmit};
use crate::sip::{build_response, reason_phrase, Message};
use crate::txn::ServerKey;

impl Core {
    /// Sends a locally generated response through the server transaction. The reason phrase
    /// is the status code's standard one: why we answered so goes to the log, never to the
    /// peer (it could name a user, an address or our configuration).
    pub(super) fn respond(
        &mut self,
        now: Instant,
        key: &ServerKey,
        req: &Message,
        status: u16,
        extra: &[(&str, &[u8])],
    ) {
        let tag = (status > 100 && req.to_hdr().and_then(|t| t.tag()).is_none())
            .then(|| self.local_tag(key));
        let data = build_response(
            req,
            status,
            reason_phrase(status),
            tag.as_deref().map(str::as_bytes),
            extra,
        );
        if status >= 300 {
            // A call refused or failed here ends with its final response.
            self.call_progress(now, key, status);
        }
        if status >= 300 {
            *self.stats.rejects_by_status.entry(status).or_insert(0) += 1;
        }
        let Some(e) = self.servers.get_mut(key) else {
            return;
        };
        if status >= 200 {
            if let Some(ctx) = e.ctx.as_mut() {
                if !ctx.final_sent {
                    ctx.final_sent = true;
                    log_outcome(ctx, status, "local");
                }
            }
        }
        let responder = e.flow.side.other();
        let call = e.call.clone();
        e.txn.send_response(now, status, data);
        self.drain_server(now, key);
        if let (true, Some(a), Some(call)) = (status >= 300, self.anchor.as_mut(), call) {
            a.on_local_final(req, status, responder, &call);
        }
    }

    pub(super) fn send_to_flow(
        &mut self,
        flow: &Flow,
        rport: bool,
        via_port: Option<u16>,
        data: Bytes,
    ) {
        self.out.push_back(Transmit {
            side: flow.side,
            transport: flow.transport,
            remote: response_addr(flow, rport, via_port),
            data,
        });
    }
}

/// The log phase: one line per proxied transaction when its final response goes upstream.
pub(super) fn log_outcome(ctx: &ResponseContext, status: u16, origin: &str) {
    let span = info_span!("log");
    let _g = span.enter();
    let req = &ctx.request;
    info!(
        method = req.method().map_or("", |m| m.as_str()),
        call_id = %String::from_utf8_lossy(req.call_id().unwrap_or_default()),
        status,
        origin,
        branches = ctx.branch_index,
        cancelled = ctx.cancelled,
        "transaction completed"
    );
}

/// Where a response to a request received on `flow` goes (§18.2.2, RFC 3581 §4): streams
/// answer on the connection; datagrams to the source IP, and the source port when the Via
/// asked for rport, else the Via's sent-by port.
pub(super) fn response_addr(flow: &Flow, rport: bool, via_port: Option<u16>) -> SocketAddr {
    if flow.transport.is_reliable() || rport {
        flow.remote
    } else {
        SocketAddr::new(flow.remote.ip(), via_port.unwrap_or(5060))
    }
}
