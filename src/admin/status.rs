//! The status page: `GET /status` serves a static page (HTML, script and style compiled into
//! the binary, no data in them) whose script reads the admin token from the URL fragment
//! (`/status#token=…`: a fragment never travels in a request line, a `Referer` or a log), keeps
//! it in `sessionStorage`, drops it from the address bar and fetches `GET /status.json` with
//! `Authorization: Bearer …` every two seconds. Without a token the page shows only what
//! `/readyz` says: no site, gateway or user name.
//!
//! [`status_json`] builds that JSON from the routing table, the core's snapshot and the
//! appliance's state: sites, this appliance, gateways and the cloud peer with health and load,
//! live calls, certificate expiry, recent TLS refusals and failed calls.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::certs::Expiry;
use super::metrics::active_calls;
use super::state::OpsState;
use crate::cdr::rfc3339;
use crate::routing::{NextHop, RoutingTable};
use crate::stats::{Published, TlsRefusal};

/// The page, its script and its style.
pub const PAGE_HTML: &str = include_str!("status.html");
pub const PAGE_JS: &str = include_str!("status.js");
pub const PAGE_CSS: &str = include_str!("status.css");

/// Headers for the page's files: only our own script and style, data only from ourselves, no
/// framing, no referrer, no caching.
pub const PAGE_HEADERS: [(&str, &str); 5] = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
         img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("referrer-policy", "no-referrer"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("cache-control", "no-store"),
];

/// How many TLS refusals the page and `GET /tls/refusals` show by default.
pub const REFUSALS_SHOWN: usize = 20;

fn health(snap: &Published, name: &str) -> &'static str {
    match snap.health.get(name) {
        Some(true) => "healthy",
        Some(false) => "demoted",
        None => "not probed",
    }
}

fn hop_json(snap: &Published, h: &NextHop) -> Value {
    json!({
        "name": h.name,
        "address": h.addr.to_string(),
        "transport": h.transport.uri_param(),
        "health": health(snap, &h.name),
    })
}

/// A refusal as JSON.
pub fn refusal_json(r: &TlsRefusal) -> Value {
    json!({
        "at": rfc3339(r.at),
        "side": r.side.as_str(),
        "direction": r.direction.as_str(),
        "remote": r.remote.to_string(),
        "reason": r.reason,
        "category": r.category,
    })
}

fn expiry_json(e: &Expiry, now: SystemTime) -> Value {
    json!({
        "certificate": e.what,
        "subject": e.subject,
        "not_after": e.not_after.map(|t| {
            rfc3339(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64))
        }),
        "days_left": e.days_left(now),
        "error": e.error,
    })
}

/// Everything the status page shows.
pub fn status_json(
    table: &RoutingTable,
    snap: &Published,
    ops: &OpsState,
    refusals: &[TlsRefusal],
    now: SystemTime,
) -> Value {
    let cfg = &ops.cfg;
    let not_ready = ops.readiness.not_ready();
    let sites: Vec<Value> = table
        .sites
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "access_edge_fqdn": s.access_edge_fqdn,
                "this_appliance": s.name == table.own_site,
                "gateways": table.gateways.iter().filter(|g| g.site == s.name).count(),
                "mediation_servers": s.mediation_servers.iter().map(|h| {
                    let mut v = hop_json(snap, h);
                    if table.own_names.iter().any(|n| n.eq_ignore_ascii_case(&h.name)) {
                        v["health"] = json!(if not_ready.is_empty() { "this appliance" } else { "not ready" });
                    }
                    v
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    let gateways: Vec<Value> = table
        .gateways
        .iter()
        .map(|g| {
            let mut v = hop_json(snap, &g.hop);
            v["site"] = json!(g.site);
            v["ours"] = json!(g.site == table.own_site);
            v["sessions"] = json!(snap.live.sessions.get(&g.name).copied().unwrap_or(0));
            v["max_sessions"] = json!(g.max_sessions);
            v["priority"] = json!(g.priority);
            if g.site != table.own_site {
                v["health"] = json!("another site's trunk");
            }
            v
        })
        .collect();
    let calls = ops.calls.lock().map(|c| c.clone()).unwrap_or_default();
    let failures: Vec<Value> = calls
        .failures
        .iter()
        .rev()
        .map(|f| {
            json!({
                "at": f.end, "call_id": f.call_id, "direction": f.direction,
                "gateway": f.gateway, "status": f.status, "outcome": f.outcome, "reason": f.reason,
            })
        })
        .collect();
    let started = ops.started;
    json!({
        "generated": rfc3339(now),
        "appliance": {
            "site": cfg.appliance.site,
            "mediation_fqdn": cfg.appliance.mediation_fqdn.to_string(),
            "access_edge_fqdn": cfg.appliance.access_edge_fqdn.to_string(),
            "version": env!("CARGO_PKG_VERSION"),
            "started": rfc3339(started),
            "uptime_s": now.duration_since(started).map_or(0, |d| d.as_secs()),
            "ready": not_ready.is_empty(),
            "not_ready": not_ready,
            "draining": ops.readiness.draining(),
            "maintenance": ops.readiness.maintenance(),
        },
        "sites": sites,
        "gateways": gateways,
        "cloud_peer": hop_json(snap, &table.cloud_peer),
        "calls": {
            "live": active_calls(snap),
            "attempted": snap.proxy.calls,
            "ended": calls.by_outcome(),
        },
        "media": snap.media.as_ref().map(|m| json!({
            "sessions": m.active_calls,
            "ports_free": m.ports_available,
            "ports_total": m.ports_capacity,
        })),
        "certificates": ops.certificates.load().iter().map(|e| expiry_json(e, now)).collect::<Vec<_>>(),
        "tls_refusals": refusals.iter().map(refusal_json).collect::<Vec<_>>(),
        "recent_failures": failures,
        "counters": {
            "requests": snap.proxy.requests_in,
            "rejected": snap.proxy.rejected,
            "failovers": snap.proxy.failovers,
            "malformed": snap.proxy.malformed,
        },
    })
}
