//! `route explain` in both directions, for the CLI and `GET /route/explain`:
//!
//! - `--from` names a gateway (its configured name or address) or another site's mediation
//!   server: an **inbound** call from it to the number `--to` (number → user → cloud peer);
//! - otherwise `--from` is a user (SIP address, UPN or display name): an **outbound** call from
//!   the cloud peer by that user ([`routing::explain`]).
//!
//! The decision is the policy's own ([`routing::route`]) on a synthetic INVITE, with its trace.

use crate::routing::{self, Directory, Live, Routed, RoutingTable, Sender};

/// The gateway-side sender `from` names, when it names one: a configured gateway (by name or
/// address) or another site's mediation server.
pub fn gateway_sender(table: &RoutingTable, from: &str) -> Option<Sender> {
    let f = from
        .trim()
        .trim_start_matches("sip:")
        .trim_start_matches("sips:");
    let host = f.rsplit_once('@').map_or(f, |(_, h)| h);
    let host_only = host
        .split_once(':')
        .filter(|_| !host.starts_with('['))
        .map_or(host, |(h, _)| h)
        .to_ascii_lowercase();
    for g in &table.gateways {
        if g.name.eq_ignore_ascii_case(&host_only)
            || g.hop.addr.ip().to_string() == host_only
            || g.hop.addr.to_string() == host
        {
            return Some(Sender::Gateway {
                name: g.name.clone(),
                site: g.site.clone(),
            });
        }
    }
    for s in &table.sites {
        if s.name == table.own_site {
            continue;
        }
        for m in &s.mediation_servers {
            if m.name.eq_ignore_ascii_case(&host_only) {
                return Some(Sender::Appliance {
                    fqdn: m.name.clone(),
                    site: s.name.clone(),
                });
            }
        }
    }
    None
}

/// Which way the call of an explanation goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExplainDirection {
    Inbound,
    Outbound,
}

impl ExplainDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            ExplainDirection::Inbound => "inbound",
            ExplainDirection::Outbound => "outbound",
        }
    }
}

/// The decision for a call from `from` to `to`, inbound when `from` is a gateway.
pub fn explain(
    table: &RoutingTable,
    dir: &Directory,
    live: &Live,
    from: &str,
    to: &str,
) -> Result<(ExplainDirection, Routed), String> {
    let Some(sender) = gateway_sender(table, from) else {
        return routing::explain(table, dir, live, from, to)
            .map(|r| (ExplainDirection::Outbound, r));
    };
    let to_ok = !to.is_empty()
        && to
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.()".contains(&b));
    if !to_ok {
        return Err(format!("--to: {to:?} is not a number"));
    }
    let Sender::Gateway { name, .. } = &sender else {
        return Err(format!(
            "--from: {from} is another site's mediation server: a call it hands over is routed \
             by its caller's policy to this site's gateways; explain it with --from <user>"
        ));
    };
    let us = table.own_names.first().map_or("localhost", |s| s.as_str());
    let text = format!(
        "INVITE sip:{to}@{us};user=phone SIP/2.0\r\nVia: SIP/2.0/UDP {name};branch=z9hG4bKexplain\r\n\
         Max-Forwards: 70\r\nFrom: <sip:caller@{name}>;tag=explain\r\nTo: <sip:{to}@{us};user=phone>\r\n\
         Call-ID: explain\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    let req = crate::sip::Message::parse(bytes::Bytes::from(text)).map_err(|e| format!("{e}"))?;
    Ok((
        ExplainDirection::Inbound,
        routing::route(&req, &sender, table, dir, live, 0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Decision;

    fn lab() -> (RoutingTable, Directory) {
        let cfg = crate::config::Config::from_toml(
            std::path::Path::new("/x/sipedge.toml"),
            include_str!("../../config/sipedge.toml"),
        )
        .unwrap();
        let table = RoutingTable::build(&cfg, &|n| cfg.static_host(n)).unwrap();
        (table, Directory::from_config(&cfg))
    }

    #[test]
    fn a_gateway_names_an_inbound_call_to_the_user_of_the_number() {
        let (t, d) = lab();
        for from in [
            "gw1.lab.example",
            "GW1.lab.example",
            "127.0.0.2",
            "sip:x@gw1.lab.example",
        ] {
            let (dir, r) = explain(&t, &d, &Live::default(), from, "+14255550100").unwrap();
            assert_eq!(dir, ExplainDirection::Inbound, "{from}");
            match &r.decision {
                Decision::Forward {
                    targets,
                    request_uri,
                    ..
                } => {
                    assert_eq!(targets[0].name, "sip.cloud.lab.example");
                    assert_eq!(request_uri.as_deref(), Some("sip:alice@lab.example"));
                }
                d => panic!("{d:?}"),
            }
            assert!(r.trace.iter().any(|l| l.contains("reverse number lookup")));
        }
        // Unknown number, voice off, another site's gateway.
        let (_, r) = explain(&t, &d, &Live::default(), "gw2.lab.example", "+14255550999").unwrap();
        assert!(matches!(r.decision, Decision::Reject { status: 404, .. }));
        let (_, r) = explain(&t, &d, &Live::default(), "gw1.lab.example", "+14255550103").unwrap();
        assert!(matches!(r.decision, Decision::Reject { status: 480, .. }));
        let (_, r) = explain(
            &t,
            &d,
            &Live::default(),
            "gw1.remote.example",
            "+14255550100",
        )
        .unwrap();
        assert!(matches!(r.decision, Decision::Reject { status: 403, .. }));
        assert!(explain(&t, &d, &Live::default(), "gw1.lab.example", "+1 <x>").is_err());
    }

    #[test]
    fn a_user_names_an_outbound_call() {
        let (t, d) = lab();
        let (dir, r) = explain(
            &t,
            &d,
            &Live::default(),
            "alice@lab.example",
            "+14255550199",
        )
        .unwrap();
        assert_eq!(dir, ExplainDirection::Outbound);
        assert!(matches!(r.decision, Decision::Forward { .. }));
    }

    #[test]
    fn another_sites_mediation_server_is_an_appliance_explained_by_its_caller() {
        let (t, d) = lab();
        assert!(matches!(
            gateway_sender(&t, "mediation.remote.example"),
            Some(Sender::Appliance { .. })
        ));
        let e = explain(
            &t,
            &d,
            &Live::default(),
            "mediation.remote.example",
            "+14255550100",
        )
        .unwrap_err();
        assert!(e.contains("routed by its caller's policy"), "{e}");
    }
}
