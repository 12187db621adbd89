//! Outbound calls: the cloud peer calls the PSTN for a user (or a conference escalates), or
//! another site's appliance hands over a call of a user whose PSTN site is ours.
//!
//! The order of the checks:
//! 1. a conference escalation (the Request-URI names a registered hybrid mediation server);
//! 2. the caller (P-Asserted-Identity, else From) and the caller's site — the user's hybrid
//!    PSTN site, else the tenant's default site; for a handover, always this site;
//! 3. **emergency numbers** of that site: to its gateways whatever the caller's policy or
//!    voice setting (a caller unknown or without a site uses the default site), never 484;
//! 4. the caller must be a user with enterprise voice (403);
//! 5. the site's **dial plan** when the tenant's UseOnPremDialPlan is on (first matching rule;
//!    the number it yields may be an emergency number too), then E.164 (484);
//! 6. the voice routing policy (international, 403);
//! 7. this site's gateways, or another site's mediation servers.

use super::dialplan::{dial_string, is_emergency};
use super::directory::{DirUser, Directory};
use super::e164::{called_number, is_international, normalize_e164};
use super::policy::{caller_uri, reject, reject_with, to_site, Decision, Live, Routed};
use super::table::RoutingTable;
use crate::config::VoiceRoutingPolicy;
use crate::sip::{Message, Scheme};

/// Who handed the call over: `(mediation FQDN, site)` of another site's appliance; `None`:
/// the cloud peer.
pub(super) type Via<'a> = Option<(&'a str, &'a str)>;

/// A dial string (digits, `*`, `#`, an optional leading `+`, separators dropped)?
fn is_dial_string(raw: &str) -> bool {
    let d = dial_string(raw);
    let d = d.strip_prefix('+').unwrap_or(&d);
    !d.is_empty()
        && d.bytes()
            .all(|b| b.is_ascii_digit() || b == b'*' || b == b'#')
}

/// The tenant's default site: the site whose access edge is the peer destination.
fn default_site(table: &RoutingTable, dir: &Directory) -> Result<String, String> {
    let Some(pd) = dir.tenant.peer_destination_fqdn() else {
        return Err("no peer destination".into());
    };
    table
        .sites
        .iter()
        .find(|s| s.access_edge_fqdn.eq_ignore_ascii_case(&pd))
        .map(|s| s.name.clone())
        .ok_or_else(|| format!("peer destination {pd} is no site's access edge"))
}

/// The caller's site: this site for a handover, the user's hybrid PSTN site, else the default
/// site; `Err(why)` when there is none.
fn caller_site(
    via: Via<'_>,
    user: Option<&DirUser>,
    table: &RoutingTable,
    dir: &Directory,
    trace: &mut Vec<String>,
) -> Result<String, String> {
    if via.is_some() {
        let theirs = user.and_then(|u| u.pstn_site.as_deref()).unwrap_or("-");
        trace.push(format!(
            "site {}: a handed-over call goes to this site's gateways (the user's hybrid PSTN site: {theirs})",
            table.own_site
        ));
        return Ok(table.own_site.clone());
    }
    if let Some(s) = user.and_then(|u| u.pstn_site.as_ref()) {
        trace.push(format!("site {s}: the user's hybrid PSTN site"));
        return Ok(s.clone());
    }
    let site = default_site(table, dir)?;
    trace.push(format!(
        "site {site}: the tenant's default site (its access edge is the peer destination); {}",
        if user.is_some() {
            "the user has no hybrid PSTN site"
        } else {
            "the caller is no user"
        }
    ));
    Ok(site)
}

/// An emergency call to `site`'s PSTN: before any policy.
fn emergency(
    site: &str,
    number: &str,
    user: Option<&DirUser>,
    table: &RoutingTable,
    live: &Live,
    spread: u64,
    mut trace: Vec<String>,
) -> Routed {
    trace.push(format!(
        "emergency number {number} of site {site}: routed to the site's PSTN before any policy"
    ));
    let mut routed = to_site(site, table, live, spread, trace);
    if let Decision::Forward { user: u, .. } = &mut routed.decision {
        *u = user.map(|u| u.sip_address.clone());
    }
    routed
}

/// Outbound: see the module doc for the order of the checks.
pub(super) fn outbound(
    req: &Message,
    via: Via<'_>,
    table: &RoutingTable,
    dir: &Directory,
    live: &Live,
    spread: u64,
    mut trace: Vec<String>,
) -> Routed {
    match via {
        None => trace.push("outbound: sender cloud peer".into()),
        Some((fqdn, site)) => trace.push(format!(
            "outbound: handed over by mediation server {fqdn} of site {site}"
        )),
    }
    let Some(uri) = req.request_uri() else {
        return reject(400, "no Request-URI".into(), trace);
    };
    let host = String::from_utf8_lossy(uri.host()).to_ascii_lowercase();
    let raw = called_number(&uri).unwrap_or_default();

    // Conference escalation: the Request-URI names a hybrid mediation server. A handed-over
    // call names our mediation server with the number dialled: that is no escalation.
    let handover_of_a_number = via.is_some() && is_dial_string(&raw);
    if uri.scheme() != Scheme::Tel && !handover_of_a_number {
        if let Some(ms) = dir.mediation_server(&host) {
            trace.push(format!(
                "conference escalation: {host} is registered as hybrid mediation server {:?} (edge {})",
                ms.identity, ms.access_proxy_external_fqdn
            ));
            let site = table.site_of_mediation_fqdn(&host).or_else(|| {
                table.sites.iter().find(|s| {
                    s.access_edge_fqdn
                        .eq_ignore_ascii_case(&ms.access_proxy_external_fqdn)
                })
            });
            let Some(site) = site else {
                return reject(
                    404,
                    format!(
                        "Not Found: hybrid mediation server {host} belongs to no configured site"
                    ),
                    trace,
                );
            };
            trace.push(format!("site {} (its mediation server)", site.name));
            let name = if via.is_some() {
                table.own_site.clone()
            } else {
                site.name.clone()
            };
            return to_site(&name, table, live, spread, trace);
        }
        if table.site_of_mediation_fqdn(&host).is_some() {
            return reject(
                404,
                format!(
                    "Not Found: mediation server {host} is not registered (Set-CsHybridMediationServer)"
                ),
                trace,
            );
        }
    }

    let caller = caller_uri(req);
    let user = caller.as_ref().and_then(|(c, _)| {
        if c.starts_with('+') {
            dir.user_by_number(c)
        } else {
            dir.user_by_address(c)
        }
    });
    match (&caller, user) {
        (Some((_, by)), Some(u)) => trace.push(format!("caller {} (by {by})", u.sip_address)),
        (Some((c, by)), None) => trace.push(format!("caller {c} ({by}) is not a user")),
        (None, _) => trace.push("no caller identity".into()),
    }
    let site = caller_site(via, user, table, dir, &mut trace);

    // Emergency numbers first: whatever the caller's policy or voice setting.
    if let Ok(s) = &site {
        if let Some(entry) = table.site(s) {
            if is_emergency(&entry.emergency_numbers, &raw) {
                return emergency(s, &raw, user, table, live, spread, trace);
            }
        }
    }

    let Some(user) = user else {
        let why = match caller {
            Some((c, by)) => format!("Forbidden: caller {c} ({by}) is not a user of the tenant"),
            None => "Forbidden: no caller identity".into(),
        };
        return reject(403, why, trace);
    };
    if !user.enterprise_voice {
        return reject(
            403,
            format!(
                "Forbidden: enterprise voice is not enabled for {}",
                user.sip_address
            ),
            trace,
        );
    }
    let site = match site {
        Ok(s) => s,
        Err(why) => {
            return reject(
                403,
                format!(
                    "Forbidden: no PSTN site for user {} (no hybrid PSTN site; {why})",
                    user.sip_address
                ),
                trace,
            )
        }
    };

    // The site's dial plan (UseOnPremDialPlan); a handed-over number was normalized already.
    let mut dialled = raw.clone();
    let mut normalized = false;
    let plan = table.site(&site).and_then(|s| s.dial_plan.as_ref());
    match (dir.tenant.use_on_prem_dial_plan, plan, via) {
        (false, _, _) => {}
        (true, _, Some(_)) => {
            trace.push("dial plan: not applied again to a handed-over call".into());
        }
        (true, None, None) => trace.push(format!("dial plan: site {site} has none")),
        (true, Some(p), None) => match p.normalize(&raw) {
            Some(n) => {
                trace.push(format!(
                    "dial plan {}: rule {:?} ({} → {}) matched: {raw} → {}",
                    p.name, n.rule.name, n.rule.pattern, n.rule.translation, n.number
                ));
                normalized = n.number != raw;
                dialled = n.number;
                if let Some(entry) = table.site(&site) {
                    if is_emergency(&entry.emergency_numbers, &dialled) {
                        return emergency(&site, &dialled, Some(user), table, live, spread, trace);
                    }
                }
            }
            None => trace.push(format!("dial plan {}: no rule matches {raw}", p.name)),
        },
    }
    let Some(number) = normalize_e164(&dialled) else {
        return reject(
            484,
            format!("Address Incomplete: dialled number {dialled:?} is not E.164"),
            trace,
        );
    };
    trace.push(format!(
        "dialled {} (country code {}{})",
        number.number,
        number.code,
        number
            .region
            .as_deref()
            .map(|r| format!(", region {r}"))
            .unwrap_or_default()
    ));

    // International policy.
    let own = user.line_number().as_deref().and_then(normalize_e164);
    let international = own.as_ref().is_none_or(|o| is_international(o, &number));
    trace.push(format!(
        "policy {}: the number is {}",
        user.voice_routing_policy.as_str(),
        if international {
            "international"
        } else {
            "national"
        }
    ));
    if international
        && user.voice_routing_policy == VoiceRoutingPolicy::InternationalCallsDisallowed
    {
        let agent = table.own_names.get(1).map_or("sipedge", |s| s.as_str());
        return reject_with(
            403,
            "Forbidden: international calls are not allowed by InternationalCallsDisallowed"
                .into(),
            vec![
                (
                    "Warning",
                    format!(
                        "399 {agent} \"voice routing policy InternationalCallsDisallowed forbids {}\"",
                        number.number
                    ),
                ),
                (
                    "Reason",
                    "SIP;cause=403;text=\"InternationalCallsDisallowed\"".to_owned(),
                ),
            ],
            trace,
        );
    }
    let mut routed = to_site(&site, table, live, spread, trace);
    if let Decision::Forward {
        user: u, called, ..
    } = &mut routed.decision
    {
        *u = Some(user.sip_address.clone());
        if normalized {
            *called = Some(number.number.clone());
        }
    }
    routed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::routing::test_support::{dir, table};
    use crate::routing::{route, Sender, TenantHybridConfig};
    use std::path::Path;

    fn invite(ruri: &str, from: &str) -> Message {
        let text = format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.4:5068;branch=z9hG4bK1\r\n\
             Max-Forwards: 70\r\nFrom: <{from}>;tag=1\r\nTo: <{ruri}>\r\n\
             Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        Message::parse(bytes::Bytes::from(text)).unwrap()
    }

    fn remote_appliance() -> Sender {
        Sender::Appliance {
            fqdn: "mediation.remote.example".into(),
            site: "remote".into(),
        }
    }

    fn from_cloud(t: &RoutingTable, d: &Directory, caller: &str, number: &str) -> Routed {
        route(
            &invite(
                &format!("sip:{number}@ap.lab.example;user=phone"),
                &format!("sip:{caller}"),
            ),
            &Sender::CloudPeer,
            t,
            d,
            &Live::default(),
            0,
        )
    }

    fn names(r: &Routed) -> Vec<String> {
        match &r.decision {
            Decision::Forward { targets, .. } => targets.iter().map(|h| h.name.clone()).collect(),
            d => panic!("expected Forward, got {d:?}; trace {:?}", r.trace),
        }
    }

    fn status(r: &Routed) -> u16 {
        match &r.decision {
            Decision::Reject { status, .. } => *status,
            d => panic!("expected Reject, got {d:?}"),
        }
    }

    /// The lab table with a dial plan on site lab.
    fn planned() -> RoutingTable {
        let text = include_str!("../../config/sipedge.toml").replace(
            "name = \"lab\"\naccess_edge_fqdn = \"ap.lab.example\"\n",
            "name = \"lab\"\naccess_edge_fqdn = \"ap.lab.example\"\ndial_plan = \"lab-plan\"\nemergency_numbers = [\"911\", \"112\", \"9911\"]\n",
        ) + "\n[[dial_plans]]\nname = \"lab-plan\"\nrules = [\n  \
             { name = \"outside-line\", pattern = '^9(\\d{3})$', translation = \"$1\" },\n  \
             { name = \"extension\", pattern = '^(\\d{4})$', translation = \"+1425555$1\" },\n  \
             { name = \"national\", pattern = '^(\\d{10})$', translation = \"+1$1\" },\n]\n";
        let cfg = Config::from_toml(Path::new("config/sipedge.toml"), &text).unwrap();
        RoutingTable::build(&cfg, &|n| cfg.static_host(n)).unwrap()
    }

    fn with_dial_plan(on: bool) -> Directory {
        let d = dir();
        let mut tenant = d.tenant.clone();
        tenant.use_on_prem_dial_plan = on;
        Directory::new(tenant, d.users.clone(), vec![])
    }

    #[test]
    fn another_sites_appliance_hands_over_to_our_gateways_by_the_callers_policy() {
        let t = table();
        let d = dir();
        let l = Live::default();
        // alice (site lab) through the remote appliance: our gateways.
        let r = route(
            &invite(
                "sip:+33144556677@mediation.lab.example;user=phone",
                "sip:alice@lab.example",
            ),
            &remote_appliance(),
            &t,
            &d,
            &l,
            0,
        );
        let mut n = names(&r);
        n.sort();
        assert_eq!(n, ["gw1.lab.example", "gw2.lab.example"], "{:?}", r.trace);
        assert!(r.trace.iter().any(|l| l.contains("handed over by")));
        // bob's policy still applies to a handed-over call.
        let r = route(
            &invite(
                "sip:+33144556677@mediation.lab.example;user=phone",
                "sip:bob@lab.example",
            ),
            &remote_appliance(),
            &t,
            &d,
            &l,
            0,
        );
        assert_eq!(status(&r), 403);
        // erin's site is remote, but a handed-over call never goes back out: our gateways.
        let r = route(
            &invite(
                "sip:+14255550199@mediation.lab.example;user=phone",
                "sip:erin@lab.example",
            ),
            &remote_appliance(),
            &t,
            &d,
            &l,
            0,
        );
        assert_eq!(names(&r).len(), 2);
        // Not a call: refused.
        let opt = Message::parse(bytes::Bytes::from_static(
            b"MESSAGE sip:x@mediation.lab.example SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.4;branch=z9hG4bK2\r\n\
              Max-Forwards: 70\r\nFrom: <sip:a@b.example>;tag=1\r\nTo: <sip:x@y.example>\r\n\
              Call-ID: m\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n",
        ))
        .unwrap();
        assert_eq!(
            status(&route(&opt, &remote_appliance(), &t, &d, &l, 0)),
            403
        );
    }

    #[test]
    fn down_mediation_servers_are_skipped_all_down_is_503() {
        let t = table();
        let d = dir();
        let mut l = Live::default();
        l.demoted.insert("mediation.remote.example".into());
        let r = route(
            &invite(
                "sip:+33144556677@ap.lab.example;user=phone",
                "sip:erin@lab.example",
            ),
            &Sender::CloudPeer,
            &t,
            &d,
            &l,
            0,
        );
        assert_eq!(status(&r), 503);
        assert!(r.trace.iter().any(|l| l.contains("skipped: down")));
    }

    #[test]
    fn cloud_peers_in_priority_order_healthy_first() {
        let text = include_str!("../../config/sipedge.toml")
            .replace(
                "fqdn = \"sip.cloud.lab.example\"",
                "fqdns = [\"sip.cloud.lab.example\", \"sip2.cloud.lab.example\", \"sip3.cloud.lab.example\"]",
            )
            .replace(
                "[hosts]\n",
                "[hosts]\n\"sip2.cloud.lab.example\" = \"127.0.0.8\"\n\"sip3.cloud.lab.example\" = \"127.0.0.9\"\n",
            );
        let cfg = Config::from_toml(Path::new("config/sipedge.toml"), &text).unwrap();
        let t = RoutingTable::build(&cfg, &|n| cfg.static_host(n)).unwrap();
        let d = dir();
        let gw1 = Sender::Gateway {
            name: "gw1.lab.example".into(),
            site: "lab".into(),
        };
        let inbound = |l: &Live| {
            route(
                &invite(
                    "sip:+14255550100@mediation.lab.example;user=phone",
                    "sip:x@gw1.lab.example",
                ),
                &gw1,
                &t,
                &d,
                l,
                0,
            )
        };
        assert_eq!(
            names(&inbound(&Live::default())),
            [
                "sip.cloud.lab.example",
                "sip2.cloud.lab.example",
                "sip3.cloud.lab.example"
            ]
        );
        let mut l = Live::default();
        l.demoted.insert("sip.cloud.lab.example".into());
        assert_eq!(
            names(&inbound(&l)),
            [
                "sip2.cloud.lab.example",
                "sip3.cloud.lab.example",
                "sip.cloud.lab.example"
            ]
        );
        // Every cloud peer is the cloud.
        let ip = |s: &str| s.parse().unwrap();
        assert_eq!(
            t.identify(crate::config::Side::Cloud, ip("127.0.0.9")),
            Some(Sender::CloudPeer)
        );
    }

    #[test]
    fn emergency_numbers_go_to_the_site_whatever_the_policy_never_484() {
        let t = table();
        let d = dir();
        // bob: international calls disallowed; carol: no site (the default site).
        for (caller, number) in [
            ("bob@lab.example", "911"),
            ("bob@lab.example", "112"),
            ("carol@lab.example", "911"),
            ("dave@lab.example", "999"),
            ("nobody@lab.example", "933"),
        ] {
            let r = from_cloud(&t, &d, caller, number);
            let mut n = names(&r);
            n.sort();
            assert_eq!(
                n,
                ["gw1.lab.example", "gw2.lab.example"],
                "{caller} {number}"
            );
            assert!(
                r.trace.iter().any(|l| l.contains("emergency number")),
                "{:?}",
                r.trace
            );
        }
        // erin (site remote): the remote site's emergency service.
        assert_eq!(
            names(&from_cloud(&t, &d, "erin@lab.example", "911")),
            ["mediation.remote.example"]
        );
        // Not an emergency number of the site: the rules as before.
        assert_eq!(status(&from_cloud(&t, &d, "bob@lab.example", "4711")), 484);
        // No default site, no emergency site: 403, never 484.
        let d2 = Directory::new(TenantHybridConfig::default(), d.users.clone(), vec![]);
        assert_eq!(
            status(&from_cloud(&t, &d2, "carol@lab.example", "911")),
            403
        );
    }

    #[test]
    fn dial_plan_applies_with_use_on_prem_dial_plan_first_rule_wins() {
        let t = planned();
        // Off: an extension is incomplete.
        assert_eq!(
            status(&from_cloud(
                &t,
                &with_dial_plan(false),
                "alice@lab.example",
                "4711"
            )),
            484
        );
        let d = with_dial_plan(true);
        let r = from_cloud(&t, &d, "alice@lab.example", "4711");
        assert_eq!(names(&r).len(), 2, "{:?}", r.trace);
        match &r.decision {
            Decision::Forward { called, .. } => {
                assert_eq!(called.as_deref(), Some("+14255554711"))
            }
            d => panic!("{d:?}"),
        }
        assert!(
            r.trace
                .iter()
                .any(|l| l.contains("rule \"extension\"") && l.contains("+14255554711")),
            "{:?}",
            r.trace
        );
        // The translation may be an emergency number (9 for an outside line).
        let r = from_cloud(&t, &d, "bob@lab.example", "9112");
        assert!(r.trace.iter().any(|l| l.contains("emergency number 112")));
        // A configured emergency number is matched before the plan.
        let r = from_cloud(&t, &d, "bob@lab.example", "9911");
        assert!(r.trace.iter().any(|l| l.contains("emergency number 9911")));
        // The policy applies to the translated number: national for bob.
        let r = from_cloud(&t, &d, "bob@lab.example", "4711");
        assert_eq!(names(&r).len(), 2);
        assert!(r.trace.iter().any(|l| l.contains("the number is national")));
        // No rule matches: the number as dialled.
        let r = from_cloud(&t, &d, "alice@lab.example", "+33144556677");
        assert!(r.trace.iter().any(|l| l.contains("no rule matches")));
        assert_eq!(names(&r).len(), 2);
    }
}
