//! The routing policy: `(request, sender, routing table, directory, live state) -> Decision +
//! trace`.
//!
//! Nothing here does IO or reads the clock: the table is built once from the validated
//! configuration (names already resolved by the IO layer), the [`Directory`] is a snapshot of
//! the persistent store, and [`Live`] carries gateway health and load as the proxy sees them.
//! The caller passes a `spread` counter so that spreading across gateways of equal priority is
//! deterministic in tests.
//!
//! The rules (the Cloud Connector model):
//! - **Inbound** (from a gateway): the gateway must belong to this appliance's site (403); the
//!   called number is normalised to E.164 (484); the user whose line URI it is is found (404)
//!   and must have enterprise voice (480); the call goes to the cloud peer with the
//!   Request-URI set to the user's SIP address.
//!   The cloud peers are tried in priority order, healthy first.
//! - **Outbound** (from the cloud peer, or handed over by another site's appliance): see
//!   `outbound.rs` — conference escalation, caller and site, emergency numbers, enterprise
//!   voice, dial plan, E.164 (484), the voice routing policy (403). This appliance's site → its
//!   gateways (priority groups, weight spread, healthy first, demoted last, full ones skipped;
//!   none → 503 with Retry-After); another site → that site's mediation servers, those down
//!   skipped (all down → 503). A handed-over call always goes to this site's gateways.
//!
//! What makes a dialled number international is defined with the numbers, in `e164.rs`. The
//! trial order of this site's gateways ([`RoutingTable::site_gateways`]) is policy too: it
//! reads [`Live`] and writes the trace, so it is defined here rather than with the table.

use std::collections::{HashMap, HashSet};

use super::directory::Directory;
use super::e164::{called_number, normalize_e164};
use super::outbound::outbound;
use super::table::{GatewayEntry, NextHop, RoutingTable, Sender};
use crate::sip::{HeaderName, Message, Method, NameAddr, Scheme, Uri};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Try `targets` in order: the first, then the next on failure.
    Forward {
        targets: Vec<NextHop>,
        /// Rewrite the Request-URI host to the target's name (ignored with `request_uri`).
        rewrite_host: bool,
        /// `Some(uri)`: the Request-URI becomes `uri` (inbound calls: the user's SIP address).
        request_uri: Option<String>,
        /// The tenant user of the call (the called user inbound, the caller outbound).
        user: Option<String>,
        /// `Some(number)`: the number a dial plan normalized the dialled string to; the
        /// Request-URI becomes `sip:<number>@<target>;user=phone` (ignored with `request_uri`).
        called: Option<String>,
    },
    Reject {
        status: u16,
        reason: String,
        /// Extra header fields for the response (Retry-After, Warning, Reason).
        headers: Vec<(&'static str, String)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub decision: Decision,
    pub trace: Vec<String>,
}

/// Live state of the targets as the proxy sees it: health (from OPTIONS) and load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Live {
    /// Names of targets demoted for want of OPTIONS answers: tried last, not never.
    pub demoted: HashSet<String>,
    /// Calls in progress per gateway name.
    pub sessions: HashMap<String, u32>,
}

impl Live {
    fn load(&self, name: &str) -> u32 {
        self.sessions.get(name).copied().unwrap_or(0)
    }
}

impl RoutingTable {
    /// Gateways of `site` in trial order: priority groups first (lower value first), equal
    /// priority rotated by `spread` in proportion to weight; healthy ones before demoted ones;
    /// gateways at their session cap left out. The trace says why for each.
    pub fn site_gateways(
        &self,
        site: &str,
        live: &Live,
        spread: u64,
        trace: &mut Vec<String>,
    ) -> Vec<&GatewayEntry> {
        let mut gws: Vec<&GatewayEntry> = Vec::new();
        for g in self.gateways.iter().filter(|g| g.site == site) {
            let load = live.load(&g.name);
            match g.max_sessions {
                Some(cap) if load >= cap => {
                    trace.push(format!(
                        "candidate {}: skipped, at its session cap ({load}/{cap})",
                        g.name
                    ));
                }
                _ => gws.push(g),
            }
        }
        gws.sort_by_key(|g| g.priority);
        let mut ordered = Vec::with_capacity(gws.len());
        let mut i = 0;
        while let Some(first) = gws.get(i) {
            let p = first.priority;
            let group: Vec<&GatewayEntry> = gws
                .iter()
                .skip(i)
                .take_while(|g| g.priority == p)
                .copied()
                .collect();
            let n = group.len();
            // Weighted rotation: the start index runs over the sum of the weights.
            let total: u64 = group.iter().map(|g| u64::from(g.weight)).sum();
            let mut pick = spread % total.max(1);
            let mut start = 0;
            for (k, g) in group.iter().enumerate() {
                if pick < u64::from(g.weight) {
                    start = k;
                    break;
                }
                pick -= u64::from(g.weight);
            }
            ordered.extend((0..n).filter_map(|k| group.get((start + k) % n).copied()));
            i += n;
        }
        // Healthy first, demoted last (stable: their relative order is kept).
        let (healthy, demoted): (Vec<_>, Vec<_>) = ordered
            .into_iter()
            .partition(|g| !live.demoted.contains(&g.name));
        let out: Vec<&GatewayEntry> = healthy.into_iter().chain(demoted).collect();
        for g in &out {
            let cap = g
                .max_sessions
                .map_or_else(|| "no cap".to_owned(), |c| format!("cap {c}"));
            trace.push(format!(
                "candidate {}: priority {}, weight {}, {}, load {} ({cap})",
                g.name,
                g.priority,
                g.weight,
                if live.demoted.contains(&g.name) {
                    "demoted (no OPTIONS answer)"
                } else {
                    "healthy"
                },
                live.load(&g.name)
            ));
        }
        out
    }
}

/// Who the caller is, by P-Asserted-Identity (RFC 3325 §9.1), else by From.
pub(super) fn caller_uri(req: &Message) -> Option<(String, &'static str)> {
    let from_pai = req
        .header_values(HeaderName::PAssertedIdentity)
        .filter_map(|v| NameAddr::parse(v).ok())
        .map(|na| uri_identity(&na.uri()))
        .next()
        .flatten();
    if let Some(id) = from_pai {
        return Some((id, "P-Asserted-Identity"));
    }
    req.from_hdr()
        .and_then(|f| uri_identity(&f.uri()))
        .map(|id| (id, "From"))
}

/// `user@host` of a SIP URI, or `+number` of a tel: URI.
fn uri_identity(uri: &Uri<'_>) -> Option<String> {
    let host = String::from_utf8_lossy(uri.host()).to_ascii_lowercase();
    match uri.scheme() {
        Scheme::Tel => Some(host.split(';').next().unwrap_or("").to_owned()),
        Scheme::Sip | Scheme::Sips => {
            let user = String::from_utf8_lossy(uri.user()?).into_owned();
            Some(format!("{}@{host}", user.to_ascii_lowercase()))
        }
        _ => None,
    }
}

pub(super) fn reject(status: u16, reason: String, trace: Vec<String>) -> Routed {
    reject_with(status, reason, Vec::new(), trace)
}

pub(super) fn reject_with(
    status: u16,
    reason: String,
    headers: Vec<(&'static str, String)>,
    mut trace: Vec<String>,
) -> Routed {
    trace.push(format!("reject {status}: {reason}"));
    Routed {
        decision: Decision::Reject {
            status,
            reason,
            headers,
        },
        trace,
    }
}

/// Decides where a dialog-creating or out-of-dialog request goes.
pub fn route(
    req: &Message,
    sender: &Sender,
    table: &RoutingTable,
    dir: &Directory,
    live: &Live,
    spread: u64,
) -> Routed {
    let trace = Vec::new();
    let Some(uri) = req.request_uri() else {
        return reject(400, "no Request-URI".into(), trace);
    };
    if !matches!(uri.scheme(), Scheme::Sip | Scheme::Sips | Scheme::Tel) {
        return reject(416, "Unsupported URI Scheme".into(), trace);
    }
    if req.method() != Some(&Method::Invite) {
        return non_call(sender, table, live, spread, trace);
    }
    match sender {
        Sender::Gateway { name, site } => inbound(&uri, name, site, table, dir, live, trace),
        Sender::Appliance { fqdn, site } => {
            outbound(req, Some((fqdn, site)), table, dir, live, spread, trace)
        }
        Sender::CloudPeer => outbound(req, None, table, dir, live, spread, trace),
    }
}

impl RoutingTable {
    /// The cloud peers in trial order: priority order, healthy before demoted.
    pub fn cloud_targets(&self, live: &Live, trace: &mut Vec<String>) -> Vec<NextHop> {
        let (healthy, demoted): (Vec<&NextHop>, Vec<&NextHop>) = self
            .cloud_peers
            .iter()
            .partition(|p| !live.demoted.contains(&p.name));
        let out: Vec<NextHop> = healthy.into_iter().chain(demoted).cloned().collect();
        if out.len() > 1 {
            for p in &out {
                trace.push(format!(
                    "cloud peer {} ({}): {}",
                    p.name,
                    p.addr,
                    if live.demoted.contains(&p.name) {
                        "demoted (no OPTIONS answer)"
                    } else {
                        "healthy"
                    }
                ));
            }
        }
        out
    }
}

/// An out-of-dialog request that is not a call (OPTIONS not for us, MESSAGE, REGISTER, an
/// unknown method): no number or user to route on, so it crosses the appliance as the
/// foundation did — a gateway's (of our site) to the cloud peer, the cloud peer's to a gateway
/// of our site.
fn non_call(
    sender: &Sender,
    table: &RoutingTable,
    live: &Live,
    spread: u64,
    mut trace: Vec<String>,
) -> Routed {
    trace.push("not an INVITE: no call routing, the request crosses to the other side".into());
    match sender {
        Sender::Gateway { name, site } => {
            if *site != table.own_site {
                return reject(
                    403,
                    format!(
                        "gateway {name} belongs to site {site}; this appliance serves site {}",
                        table.own_site
                    ),
                    trace,
                );
            }
            trace.push(format!("target: cloud peer {}", table.cloud_peer.name));
            Routed {
                decision: Decision::Forward {
                    targets: table.cloud_targets(live, &mut trace),
                    rewrite_host: true,
                    request_uri: None,
                    user: None,
                    called: None,
                },
                trace,
            }
        }
        Sender::Appliance { fqdn, .. } => reject(
            403,
            format!("mediation server {fqdn} of another site hands over calls only"),
            trace,
        ),
        Sender::CloudPeer => to_site(&table.own_site.clone(), table, live, spread, trace),
    }
}

/// Inbound: a gateway calls a user.
fn inbound(
    uri: &Uri<'_>,
    name: &str,
    site: &str,
    table: &RoutingTable,
    dir: &Directory,
    live: &Live,
    mut trace: Vec<String>,
) -> Routed {
    trace.push(format!("inbound: sender gateway {name} of site {site}"));
    if site != table.own_site {
        return reject(
            403,
            format!(
                "gateway {name} belongs to site {site}; this appliance serves site {}",
                table.own_site
            ),
            trace,
        );
    }
    let raw = called_number(uri).unwrap_or_default();
    let Some(number) = normalize_e164(&raw) else {
        return reject(
            484,
            format!("Address Incomplete: called number {raw:?} is not E.164"),
            trace,
        );
    };
    trace.push(format!("called number {raw} → E.164 {}", number.number));
    let Some(user) = dir.user_by_number(&number.number) else {
        return reject(
            404,
            format!("Not Found: no user has line URI tel:{}", number.number),
            trace,
        );
    };
    trace.push(format!(
        "reverse number lookup: {} (line URI {})",
        user.sip_address,
        user.line_uri.as_deref().unwrap_or("-")
    ));
    if !user.enterprise_voice {
        return reject(
            480,
            format!(
                "Temporarily Unavailable: enterprise voice is not enabled for {}",
                user.sip_address
            ),
            trace,
        );
    }
    let ruri = format!("sip:{}", user.sip_address);
    trace.push(format!(
        "target: cloud peer {} with Request-URI {ruri}",
        table.cloud_peer.name
    ));
    let targets = table.cloud_targets(live, &mut trace);
    Routed {
        decision: Decision::Forward {
            targets,
            rewrite_host: false,
            request_uri: Some(ruri),
            user: Some(user.sip_address.clone()),
            called: None,
        },
        trace,
    }
}

/// Routes to the PSTN through `site`: its gateways when it is ours, else its mediation servers.
pub(super) fn to_site(
    site: &str,
    table: &RoutingTable,
    live: &Live,
    spread: u64,
    mut trace: Vec<String>,
) -> Routed {
    if site == table.own_site {
        let gws = table.site_gateways(site, live, spread, &mut trace);
        if gws.is_empty() {
            return reject_with(
                503,
                format!("Service Unavailable: no usable gateway in site {site}"),
                vec![("Retry-After", "30".to_owned())],
                trace,
            );
        }
        return Routed {
            decision: Decision::Forward {
                targets: gws.into_iter().map(|g| g.hop.clone()).collect(),
                rewrite_host: true,
                request_uri: None,
                user: None,
                called: None,
            },
            trace,
        };
    }
    let Some(s) = table.site(site) else {
        return reject(
            403,
            format!("Forbidden: PSTN site {site} is not configured"),
            trace,
        );
    };
    if s.mediation_servers.is_empty() {
        return reject_with(
            503,
            format!("Service Unavailable: site {site} has no mediation server"),
            vec![("Retry-After", "30".to_owned())],
            trace,
        );
    }
    // Another site's appliances that do not answer OPTIONS are skipped: the call would only
    // wait for the failover timer there.
    let mut targets: Vec<NextHop> = Vec::new();
    for t in &s.mediation_servers {
        let down = live.demoted.contains(&t.name);
        trace.push(format!(
            "candidate {} ({}): mediation server of site {site}{}",
            t.name,
            t.addr,
            if down {
                ", skipped: down (no OPTIONS answer)"
            } else {
                ""
            }
        ));
        if !down {
            targets.push(t.clone());
        }
    }
    if targets.is_empty() {
        return reject_with(
            503,
            format!("Service Unavailable: every mediation server of site {site} is down"),
            vec![("Retry-After", "30".to_owned())],
            trace,
        );
    }
    Routed {
        decision: Decision::Forward {
            targets,
            rewrite_host: true,
            request_uri: None,
            user: None,
            called: None,
        },
        trace,
    }
}

/// `route explain`: the decision for a call from the cloud peer by `from` (a user identity:
/// SIP address, UPN or display name) to `to` (a number).
pub fn explain(
    table: &RoutingTable,
    dir: &Directory,
    live: &Live,
    from: &str,
    to: &str,
) -> Result<Routed, String> {
    let user = dir
        .find_user(from)
        .map(|u| u.sip_address.clone())
        .unwrap_or_else(|| from.trim_start_matches("sip:").to_owned());
    let edge = table.own_names.get(1).map_or("localhost", |s| s.as_str());
    let to_ok = !to.is_empty()
        && to
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.()".contains(&b));
    if !to_ok {
        return Err(format!("--to: {to:?} is not a number"));
    }
    if user.contains(['<', '>', '\r', '\n', ' ']) {
        return Err(format!("--from: {from:?} is not a user identity"));
    }
    let text = format!(
        "INVITE sip:{to}@{edge};user=phone SIP/2.0\r\nVia: SIP/2.0/UDP {edge};branch=z9hG4bKexplain\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}>;tag=explain\r\nTo: <sip:{to}@{edge};user=phone>\r\n\
         Call-ID: explain\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    let req = Message::parse(bytes::Bytes::from(text)).map_err(|e| format!("{e}"))?;
    Ok(route(&req, &Sender::CloudPeer, table, dir, live, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, VoiceRoutingPolicy};
    use crate::routing::test_support::{dir, gw1, table};
    use crate::routing::{HybridMediationServer, TenantHybridConfig};
    use std::path::Path;

    fn invite_from(ruri: &str, from: &str, extra: &str) -> Message {
        let text = format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK1\r\n\
             Max-Forwards: 70\r\nFrom: <{from}>;tag=1\r\nTo: <{ruri}>\r\n{extra}\
             Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        Message::parse(bytes::Bytes::from(text)).unwrap()
    }

    fn invite(ruri: &str) -> Message {
        invite_from(ruri, "sip:a@x.example", "")
    }

    /// A call from the cloud peer by `caller` to `number`.
    fn call(caller: &str, number: &str, dir: &Directory, live: &Live, spread: u64) -> Routed {
        route(
            &invite_from(
                &format!("sip:{number}@ap.lab.example;user=phone"),
                &format!("sip:{caller}"),
                "",
            ),
            &Sender::CloudPeer,
            &table(),
            dir,
            live,
            spread,
        )
    }

    fn targets(r: &Routed) -> Vec<String> {
        match &r.decision {
            Decision::Forward { targets, .. } => targets.iter().map(|h| h.name.clone()).collect(),
            d => panic!("expected Forward, got {d:?}; trace {:?}", r.trace),
        }
    }

    fn status(r: &Routed) -> (u16, String) {
        match &r.decision {
            Decision::Reject { status, reason, .. } => (*status, reason.clone()),
            d => panic!("expected Reject, got {d:?}"),
        }
    }

    #[test]
    fn inbound_to_alice_goes_to_the_cloud_peer_with_her_sip_address() {
        for ruri in [
            "sip:+14255550100@mediation.lab.example;user=phone",
            "tel:+1-425-555-0100",
            "sip:14255550100@mediation.lab.example",
        ] {
            let r = route(&invite(ruri), &gw1(), &table(), &dir(), &Live::default(), 0);
            match &r.decision {
                Decision::Forward {
                    targets,
                    request_uri,
                    ..
                } => {
                    assert_eq!(targets.len(), 1);
                    assert_eq!(targets[0].name, "sip.cloud.lab.example");
                    assert_eq!(targets[0].addr, "127.0.0.3:5060".parse().unwrap());
                    assert_eq!(request_uri.as_deref(), Some("sip:alice@lab.example"));
                }
                d => panic!("{ruri}: {d:?}"),
            }
            assert!(r
                .trace
                .iter()
                .any(|l| l.contains("reverse number lookup: alice")));
        }
    }

    #[test]
    fn inbound_rejects_403_484_404_480() {
        let t = table();
        let d = dir();
        let l = Live::default();
        let remote = Sender::Gateway {
            name: "gw1.remote.example".into(),
            site: "remote".into(),
        };
        let r = route(
            &invite("sip:+14255550100@mediation.lab.example"),
            &remote,
            &t,
            &d,
            &l,
            0,
        );
        assert_eq!(status(&r).0, 403);
        assert!(status(&r).1.contains("site remote"));
        let r = route(
            &invite("sip:alice@mediation.lab.example"),
            &gw1(),
            &t,
            &d,
            &l,
            0,
        );
        assert_eq!(status(&r).0, 484);
        let r = route(
            &invite("sip:+999123456789@mediation.lab.example"),
            &gw1(),
            &t,
            &d,
            &l,
            0,
        );
        assert_eq!(status(&r).0, 484, "no country code 999");
        let r = route(
            &invite("sip:+14255550199@mediation.lab.example"),
            &gw1(),
            &t,
            &d,
            &l,
            0,
        );
        assert_eq!(status(&r).0, 404);
        let r = route(&invite("tel:+14255550103"), &gw1(), &t, &d, &l, 0);
        let (s, reason) = status(&r);
        assert_eq!(s, 480);
        assert!(
            reason.contains("enterprise voice") && reason.contains("dave"),
            "{reason}"
        );
    }

    #[test]
    fn outbound_alice_international_goes_to_lab_gateways_spread() {
        let d = dir();
        let l = Live::default();
        assert_eq!(
            targets(&call("alice@lab.example", "+33144556677", &d, &l, 0)),
            vec!["gw1.lab.example", "gw2.lab.example"]
        );
        assert_eq!(
            targets(&call("alice@lab.example", "+33144556677", &d, &l, 1)),
            vec!["gw2.lab.example", "gw1.lab.example"]
        );
    }

    #[test]
    fn outbound_caller_from_p_asserted_identity_first() {
        // From says a stranger; the PAI names alice.
        let r = route(
            &invite_from(
                "sip:+33144556677@ap.lab.example",
                "sip:anonymous@anonymous.invalid",
                "P-Asserted-Identity: <sip:alice@lab.example>\r\n",
            ),
            &Sender::CloudPeer,
            &table(),
            &dir(),
            &Live::default(),
            0,
        );
        assert_eq!(targets(&r).len(), 2);
        assert!(r.trace.iter().any(|l| l.contains("by P-Asserted-Identity")));
        // A tel: PAI finds the user by line URI.
        let r = route(
            &invite_from(
                "sip:+33144556677@ap.lab.example",
                "sip:x@y.example",
                "P-Asserted-Identity: <tel:+14255550100>\r\n",
            ),
            &Sender::CloudPeer,
            &table(),
            &dir(),
            &Live::default(),
            0,
        );
        assert_eq!(targets(&r).len(), 2);
    }

    #[test]
    fn outbound_rejects_unknown_voice_off_not_e164() {
        let d = dir();
        let l = Live::default();
        let (s, reason) = status(&call("zed@lab.example", "+33144556677", &d, &l, 0));
        assert_eq!(s, 403);
        assert!(reason.contains("zed@lab.example"));
        let (s, reason) = status(&call("dave@lab.example", "+14255550199", &d, &l, 0));
        assert_eq!(s, 403);
        assert!(reason.contains("enterprise voice"));
        assert_eq!(status(&call("alice@lab.example", "1234", &d, &l, 0)).0, 484);
    }

    #[test]
    fn international_policy_bob() {
        let d = dir();
        let l = Live::default();
        let r = call("bob@lab.example", "+33144556677", &d, &l, 0);
        match &r.decision {
            Decision::Reject {
                status, headers, ..
            } => {
                assert_eq!(*status, 403);
                assert!(headers
                    .iter()
                    .any(|(n, v)| *n == "Warning" && v.contains("InternationalCallsDisallowed")));
                assert!(headers.iter().any(|(n, _)| *n == "Reason"));
            }
            d => panic!("{d:?}"),
        }
        // National numbers go through.
        assert_eq!(
            targets(&call("bob@lab.example", "+14255550199", &d, &l, 0)).len(),
            2
        );
        // Granting the policy lets the call through.
        let mut d2 = d.clone();
        d2.users[1].voice_routing_policy = VoiceRoutingPolicy::InternationalCallsAllowed;
        let d2 = Directory::new(d2.tenant, d2.users, d2.mediation_servers);
        assert_eq!(
            targets(&call("bob@lab.example", "+33144556677", &d2, &l, 0)).len(),
            2
        );
    }

    #[test]
    fn carol_uses_the_default_site_then_none() {
        let d = dir();
        let l = Live::default();
        let r = call("carol@lab.example", "+14255550199", &d, &l, 0);
        assert_eq!(targets(&r).len(), 2);
        assert!(
            r.trace.iter().any(|t| t.contains("default site")),
            "{:?}",
            r.trace
        );
        // Peer destination names the remote site's edge: carol goes there.
        let mut tenant = d.tenant.clone();
        tenant.peer_destination = Some("ap.remote.example".into());
        let d2 = Directory::new(tenant, d.users.clone(), vec![]);
        assert_eq!(
            targets(&call("carol@lab.example", "+14255550199", &d2, &l, 0)),
            vec!["mediation.remote.example"]
        );
        // No peer destination: no PSTN site.
        let d3 = Directory::new(TenantHybridConfig::default(), d.users.clone(), vec![]);
        let (s, reason) = status(&call("carol@lab.example", "+14255550199", &d3, &l, 0));
        assert_eq!(s, 403);
        assert!(reason.contains("no PSTN site for user"));
        // A peer destination that is no site's edge: same.
        let mut t4 = d.tenant.clone();
        t4.peer_destination = Some("ap.nowhere.example".into());
        let d4 = Directory::new(t4, d.users.clone(), vec![]);
        assert!(
            status(&call("carol@lab.example", "+14255550199", &d4, &l, 0))
                .1
                .contains("no PSTN site")
        );
    }

    #[test]
    fn erin_goes_to_the_remote_mediation_server() {
        let r = call(
            "erin@lab.example",
            "+33144556677",
            &dir(),
            &Live::default(),
            0,
        );
        match &r.decision {
            Decision::Forward { targets, .. } => {
                assert_eq!(targets.len(), 1);
                assert_eq!(targets[0].name, "mediation.remote.example");
                assert_eq!(targets[0].addr, "127.0.0.4:5068".parse().unwrap());
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn conference_escalation_needs_a_registration() {
        let d = dir();
        let l = Live::default();
        let esc = invite_from(
            "sip:+14255550199@mediation.lab.example;user=phone",
            "sip:conf@lab.example",
            "",
        );
        let r = route(&esc, &Sender::CloudPeer, &table(), &d, &l, 0);
        let (s, reason) = status(&r);
        assert_eq!(s, 404);
        assert!(
            reason.contains("mediation.lab.example is not registered"),
            "{reason}"
        );
        let d2 = Directory::new(
            d.tenant.clone(),
            d.users.clone(),
            vec![HybridMediationServer {
                identity: "lab-ms".into(),
                fqdn: "mediation.lab.example".into(),
                access_proxy_external_fqdn: "ap.lab.example".into(),
            }],
        );
        let r = route(&esc, &Sender::CloudPeer, &table(), &d2, &l, 0);
        assert_eq!(targets(&r), vec!["gw1.lab.example", "gw2.lab.example"]);
        assert!(r.trace.iter().any(|t| t.contains("conference escalation")));
    }

    #[test]
    fn health_and_caps_order_the_candidates() {
        let d = dir();
        let mut l = Live::default();
        l.demoted.insert("gw1.lab.example".into());
        // gw1 demoted: gw2 first whatever the spread, gw1 still tried last.
        for spread in 0..4 {
            assert_eq!(
                targets(&call("alice@lab.example", "+14255550199", &d, &l, spread)),
                vec!["gw2.lab.example", "gw1.lab.example"]
            );
        }
        // Caps: gw2 full is skipped; both full → 503 with Retry-After.
        let mut text = include_str!("../../config/sipedge.toml").to_owned();
        text = text.replace(
            "name = \"gw1.lab.example\"\nport = 5060",
            "name = \"gw1.lab.example\"\nmax_sessions = 1\nport = 5060",
        );
        text = text.replace(
            "name = \"gw2.lab.example\"\nport = 5060",
            "name = \"gw2.lab.example\"\nmax_sessions = 2\nport = 5060",
        );
        let c = Config::from_toml(Path::new("x.toml"), &text).unwrap();
        let t = RoutingTable::build(&c, &|n| c.static_host(n)).unwrap();
        let mut l = Live::default();
        l.sessions.insert("gw2.lab.example".into(), 2);
        let mut trace = Vec::new();
        let gws = t.site_gateways("lab", &l, 1, &mut trace);
        assert_eq!(gws.len(), 1);
        assert_eq!(gws[0].name, "gw1.lab.example");
        assert!(trace.iter().any(|t| t.contains("session cap")));
        l.sessions.insert("gw1.lab.example".into(), 1);
        let req = invite_from(
            "sip:+14255550199@ap.lab.example",
            "sip:alice@lab.example",
            "",
        );
        let r = route(&req, &Sender::CloudPeer, &t, &d, &l, 0);
        match r.decision {
            Decision::Reject {
                status, headers, ..
            } => {
                assert_eq!(status, 503);
                assert!(headers.iter().any(|(n, _)| *n == "Retry-After"));
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn priority_groups_and_weights() {
        let mut text = include_str!("../../config/sipedge.toml").to_owned();
        text = text.replace(
            "name = \"gw1.lab.example\"\nport = 5060",
            "name = \"gw1.lab.example\"\nweight = 3\nport = 5060",
        );
        let c = Config::from_toml(Path::new("x.toml"), &text).unwrap();
        let t = RoutingTable::build(&c, &|n| c.static_host(n)).unwrap();
        let l = Live::default();
        let firsts: Vec<String> = (0..400)
            .map(|s| {
                t.site_gateways("lab", &l, s, &mut Vec::new())[0]
                    .name
                    .clone()
            })
            .collect();
        let gw1 = firsts.iter().filter(|n| *n == "gw1.lab.example").count();
        assert_eq!(gw1, 300, "weight 3:1 over 400 calls");
        // A lower priority value wins outright.
        let text2 = include_str!("../../config/sipedge.toml").replace(
            "name = \"gw2.lab.example\"\nport = 5060",
            "name = \"gw2.lab.example\"\npriority = 1\nport = 5060",
        );
        let c = Config::from_toml(Path::new("x.toml"), &text2).unwrap();
        let t = RoutingTable::build(&c, &|n| c.static_host(n)).unwrap();
        for s in 0..5 {
            let order: Vec<&str> = t
                .site_gateways("lab", &l, s, &mut Vec::new())
                .iter()
                .map(|g| g.name.as_str())
                .collect();
            assert_eq!(order, vec!["gw1.lab.example", "gw2.lab.example"]);
        }
    }

    #[test]
    fn requests_other_than_invite_cross_as_before() {
        let msg = |m: &str, ruri: &str| {
            let text = format!(
                "{m} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK1\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:a@x.example>;tag=1\r\nTo: <{ruri}>\r\n\
                 Call-ID: c1\r\nCSeq: 1 {m}\r\nContent-Length: 0\r\n\r\n"
            );
            Message::parse(bytes::Bytes::from(text)).unwrap()
        };
        let (t, d, l) = (table(), dir(), Live::default());
        let r = route(
            &msg("MESSAGE", "sip:bob@mediation.lab.example"),
            &gw1(),
            &t,
            &d,
            &l,
            0,
        );
        assert_eq!(targets(&r), vec!["sip.cloud.lab.example"]);
        let r = route(
            &msg("OPTIONS", "sip:x@ap.lab.example"),
            &Sender::CloudPeer,
            &t,
            &d,
            &l,
            0,
        );
        assert_eq!(targets(&r).len(), 2);
        let remote = Sender::Gateway {
            name: "gw1.remote.example".into(),
            site: "remote".into(),
        };
        let r = route(
            &msg("MESSAGE", "sip:bob@mediation.lab.example"),
            &remote,
            &t,
            &d,
            &l,
            0,
        );
        assert_eq!(status(&r).0, 403);
    }

    #[test]
    fn unknown_scheme_is_416() {
        let r = route(
            &invite("mailto:x@example.com"),
            &Sender::CloudPeer,
            &table(),
            &dir(),
            &Live::default(),
            0,
        );
        assert_eq!(status(&r).0, 416);
    }

    #[test]
    fn explain_prints_the_trace() {
        let r = explain(
            &table(),
            &dir(),
            &Live::default(),
            "alice@lab.example",
            "+33144556677",
        )
        .unwrap();
        assert_eq!(targets(&r).len(), 2);
        assert!(r
            .trace
            .iter()
            .any(|t| t.contains("candidate gw1.lab.example")));
        assert!(r
            .trace
            .iter()
            .any(|t| t.contains("policy InternationalCallsAllowed")));
        assert!(explain(&table(), &dir(), &Live::default(), "alice", "+33<1").is_err());
    }
}
