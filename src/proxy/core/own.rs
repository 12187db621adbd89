//! Requests of our own, each in a client transaction no server transaction waits for: CANCEL
//! of a branch (§9.1), the ACK of a non-2xx (§17.1.1.3), and the BYEs of a media timeout or
//! of the drain's end.

use std::time::Instant;

use bytes::Bytes;
use tracing::{info, warn};

use super::{ClientEntry, Core, RouteError};
use crate::proxy::anchor::ByeSpec;
use crate::routing::NextHop;
use crate::sip::{HeaderName, Message, NameAddr};
use crate::txn::{ClientKey, ClientTxn, State};

impl Core {
    /// Sends a CANCEL for an INVITE branch (§9.1): same Request-URI, Call-ID, From, To, CSeq
    /// number and the single Via of the request it cancels, with its Route set.
    pub(super) fn cancel_branch(&mut self, now: Instant, key: &ClientKey) {
        let Some(c) = self.clients.get_mut(key) else {
            return;
        };
        if !c.got_provisional {
            c.cancel_pending = true;
            return;
        }
        if c.txn.state() != State::Proceeding {
            return;
        }
        let Some(data) = build_cancel(&c.sent) else {
            return;
        };
        let hop = c.hop.clone();
        let ckey = ClientKey {
            branch: key.branch.clone(),
            method: crate::txn::TxnMethod::Cancel,
        };
        if self.clients.contains_key(&ckey) {
            return;
        }
        self.start_own_request(now, ckey, hop, data);
    }

    /// Starts a non-INVITE client transaction of our own (a CANCEL, an OPTIONS probe, a
    /// media-timeout BYE): no server transaction waits for its outcome. Returns false when the
    /// message we built does not parse back (our bug; logged by the caller).
    pub(super) fn start_own_request(
        &mut self,
        now: Instant,
        ckey: ClientKey,
        hop: NextHop,
        data: Bytes,
    ) -> bool {
        let Ok(sent) = Message::parse(data.clone()) else {
            return false;
        };
        let txn = ClientTxn::new(now, false, data, hop.transport.is_reliable(), &self.timers);
        self.clients.insert(
            ckey.clone(),
            ClientEntry {
                txn,
                slot: None,
                hop,
                sent,
                parent: None,
                is_invite: false,
                got_provisional: false,
                cancel_pending: false,
                branch_deadline: None,
                // Without a parent, nothing is relayed or failed over from it.
                abandoned: false,
                counted: None,
            },
        );
        self.drain_client(now, &ckey);
        true
    }

    /// Sends a BYE of our own in its own client transaction (RFC 3261 §15.1.1 as a UAC for
    /// both sides: the dialog's identifiers, a CSeq above the sender's, RFC 3326 `reason`).
    pub(super) fn send_bye(&mut self, now: Instant, b: &ByeSpec, reason: &str) {
        let next = b
            .routes
            .first()
            .cloned()
            .unwrap_or_else(|| format!("<{}>", b.request_uri));
        let Ok(na) = NameAddr::parse(next.as_bytes()) else {
            warn!(call_id = %b.call_id, uri = %next, "BYE: next hop does not parse");
            return;
        };
        let hop = match self.uri_target(b.side, &na.uri()) {
            Ok(h) => h,
            Err(RouteError::Refuse(_, why) | RouteError::Unresolved(why)) => {
                // A Contact by name outside [hosts]: the BYE is not worth parking for the
                // resolver; the session is released already.
                warn!(call_id = %b.call_id, %why, "BYE: no next hop");
                return;
            }
        };
        let port = self
            .local
            .get(&(b.side, hop.transport))
            .map_or(5060, |a| a.port());
        let seed = format!("{}|{}", b.call_id, b.side.as_str());
        let branch = crate::txn::branch_for(&self.branch_key, seed.as_bytes(), u32::MAX - 3);
        let mut s = format!(
            "BYE {} SIP/2.0\r\nVia: SIP/2.0/{} {}:{};branch={};rport\r\n",
            b.request_uri,
            hop.transport.via_token(),
            self.cfg.fqdn_for(b.side),
            port,
            branch
        );
        for r in &b.routes {
            s.push_str(&format!("Route: {r}\r\n"));
        }
        s.push_str(&format!(
            "Max-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} BYE\r\n\
             Reason: {}\r\nContent-Length: 0\r\n\r\n",
            b.from, b.to, b.call_id, b.cseq, reason
        ));
        let data = Bytes::from(s);
        let ckey = ClientKey::new(branch.as_bytes(), b"BYE");
        if self.clients.contains_key(&ckey) {
            return;
        }
        info!(call_id = %b.call_id, side = b.side.as_str(), addr = %hop.addr, %reason, "BYE of ours");
        if !self.start_own_request(now, ckey, hop, data) {
            warn!(call_id = %b.call_id, "BYE: built message does not parse");
        }
    }
}

/// The ACK for a non-2xx final response to an INVITE we sent (§17.1.1.3): To from the
/// response (with its tag).
pub(super) fn build_ack(sent: &Message, resp: &Message) -> Option<Bytes> {
    hop_by_hop_request(sent, "ACK", resp.header(HeaderName::To)?)
}

/// A CANCEL for a request we sent (§9.1): To as in the request.
pub(super) fn build_cancel(sent: &Message) -> Option<Bytes> {
    hop_by_hop_request(sent, "CANCEL", sent.header(HeaderName::To)?)
}

/// ACK and CANCEL share their shape (§9.1, §17.1.1.3): the Request-URI, the single (top) Via,
/// the Route set, From, Call-ID and CSeq number of the request they follow, with `method`.
pub(super) fn hop_by_hop_request(sent: &Message, method: &str, to: &[u8]) -> Option<Bytes> {
    let uri = sent.request_uri()?;
    let top = sent.top_via()?;
    let cseq = sent.cseq()?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut s = String::with_capacity(512);
    s.push_str(&format!("{method} {} SIP/2.0\r\n", text(uri.raw())));
    s.push_str(&format!("Via: {}\r\n", text(top.raw())));
    for r in sent.routes() {
        s.push_str(&format!("Route: {}\r\n", text(r.raw())));
    }
    s.push_str("Max-Forwards: 70\r\n");
    s.push_str(&format!(
        "From: {}\r\n",
        text(sent.header(HeaderName::From)?)
    ));
    s.push_str(&format!("To: {}\r\n", text(to)));
    s.push_str(&format!("Call-ID: {}\r\n", text(sent.call_id()?)));
    s.push_str(&format!("CSeq: {} {method}\r\n", cseq.seq));
    s.push_str("Content-Length: 0\r\n\r\n");
    Some(Bytes::from(s))
}
