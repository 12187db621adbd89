//! OPTIONS health probes of the targets (gateways, the cloud peer): one round every
//! `options_interval`, answers consumed by the core and never relayed.

use std::time::Instant;

use bytes::Bytes;

use super::{Core, TimerSlot, ALLOW};
use crate::routing::NextHop;
use crate::txn::ClientKey;

impl Core {
    /// Sends one round of OPTIONS probes (and re-evaluates health), then re-arms the timer.
    pub(super) fn send_probes(&mut self, now: Instant) {
        let hops = self.health.poll_probe(now);
        for hop in hops {
            self.send_probe(now, hop);
        }
        let at = self.health.next_probe();
        self.reschedule(None, Some(at), TimerSlot::Probe);
    }

    /// One OPTIONS to `hop`, with a Contact carrying our FQDN toward its side. Its client
    /// transaction has no parent: the response is consumed by [`Core::on_response`] (health)
    /// and never relayed.
    pub(super) fn send_probe(&mut self, now: Instant, hop: NextHop) {
        self.probe_count += 1;
        let n = self.probe_count;
        let fqdn = self.cfg.fqdn_for(hop.side).to_string();
        let port = self
            .local
            .get(&(hop.side, hop.transport))
            .map_or(5060, |a| a.port());
        let t = hop.transport;
        let branch = format!("z9hG4bK-sipedge-opt-{:x}-{n}", self.probe_seed);
        let text = format!(
            "OPTIONS sip:{name}:{hport};transport={tp} SIP/2.0\r\n\
             Via: SIP/2.0/{via} {fqdn}:{port};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{fqdn}>;tag=opt{seed:x}{n}\r\n\
             To: <sip:{name}>\r\n\
             Call-ID: opt-{seed:x}-{n}@{fqdn}\r\n\
             CSeq: 1 OPTIONS\r\n\
             Contact: <sip:{fqdn}:{port};transport={tp}>\r\n\
             Allow: {ALLOW}\r\n\
             Content-Length: 0\r\n\r\n",
            name = hop.name,
            hport = hop.addr.port(),
            tp = t.uri_param(),
            via = t.via_token(),
            seed = self.probe_seed,
        );
        let data = Bytes::from(text);
        let ckey = ClientKey::new(branch.as_bytes(), b"OPTIONS");
        let name = hop.name.clone();
        if self.start_own_request(now, ckey.clone(), hop, data) {
            self.stats.probes_sent += 1;
            self.probes.insert(ckey, name);
        }
    }
}
