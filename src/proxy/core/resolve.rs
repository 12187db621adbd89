//! Next hops by name: a request whose next hop needs the system resolver is parked until the
//! driver answers (`Core::poll_resolve` → `Inbound::Resolved`); answers are cached.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::admit::request_facts;
use super::{Core, Parked};
use crate::txn::ServerKey;

/// How long a resolved name is trusted, and a failure remembered.
const DNS_TTL: Duration = Duration::from_secs(60);
const DNS_NEGATIVE_TTL: Duration = Duration::from_secs(10);

impl Core {
    /// The driver resolved `host` (`None`: it does not resolve): requests parked on it go on.
    pub fn handle_resolved(&mut self, now: Instant, host: String, ip: Option<IpAddr>) {
        let ttl = if ip.is_some() {
            DNS_TTL
        } else {
            DNS_NEGATIVE_TTL
        };
        self.dns.insert(host.clone(), (ip, now + ttl));
        for p in self.parked.remove(&host).unwrap_or_default() {
            match p {
                Parked::Request { key, flow, req } => {
                    // The peer was identified before it was parked; a reload may have
                    // removed it since.
                    match self.peer_of(&flow) {
                        Some((sender, peer)) => {
                            self.route_and_forward(now, key, flow, req, sender, peer)
                        }
                        None => self.respond(now, &key, &req, 403, &[]),
                    }
                }
                Parked::Ack { flow, req } => {
                    if let (Some(facts), Some((_, peer))) =
                        (request_facts(&req), self.peer_of(&flow))
                    {
                        let key = ServerKey::for_request(&facts);
                        self.on_ack(now, flow, req.clone(), key, &peer);
                    }
                }
            }
        }
    }

    /// Parks a request until `host` resolves, asking the driver once per name.
    pub(super) fn park(&mut self, host: String, p: Parked) {
        let waiting = self.parked.entry(host.clone()).or_default();
        if waiting.is_empty() {
            self.resolve_out.push_back(host);
        }
        waiting.push(p);
    }
}
