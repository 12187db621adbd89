//! **route**: where a request goes. A Route set naming us is popped and followed (§16.4, with
//! the strict-router case); a mid-dialog request that does not name us is refused; otherwise the
//! routing policy decides over the directory snapshot and live health and load.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tracing::{debug, info, info_span};

use super::{Core, Parked, ResponseContext, RouteError, Target};
use crate::config::{Side, Transport};
use crate::flow::Flow;
use crate::routing;
use crate::routing::{Decision, NextHop, Sender};
use crate::sip::{Message, Method, NameAddr, Scheme, Uri};
use crate::txn::ServerKey;

impl Core {
    pub(super) fn route_and_forward(
        &mut self,
        now: Instant,
        key: ServerKey,
        flow: Flow,
        req: Message,
    ) {
        let span = info_span!("route");
        let _g = span.enter();
        let targets: Vec<Target> = match self.route_by_route_set(&flow, &req) {
            Some(Ok(t)) => vec![t],
            Some(Err(RouteError::Refuse(status, reason))) => {
                self.stats.rejected += 1;
                info!(status, %reason, "route set refused");
                return self.respond(now, &key, &req, status, &reason, &[]);
            }
            Some(Err(RouteError::Unresolved(host))) => {
                debug!(%host, "resolving next hop");
                return self.park(host, Parked::Request { key, flow, req });
            }
            None => {
                let Some(sender) =
                    self.table
                        .identify_flow(flow.side, flow.remote.ip(), flow.identity.as_deref())
                else {
                    return self.respond(now, &key, &req, 403, "Forbidden", &[]);
                };
                self.spread = self.spread.wrapping_add(1);
                if req.method() == Some(&Method::Invite) {
                    self.stats.calls += 1;
                }
                let dir = self.dir.load();
                let live = self.live();
                let routed = routing::route(&req, &sender, &self.table, &dir, &live, self.spread);
                for line in &routed.trace {
                    debug!(trace = %line);
                }
                match routed.decision {
                    Decision::Reject {
                        status,
                        reason,
                        headers,
                    } => {
                        self.stats.rejected += 1;
                        info!(status, %reason, trace = ?routed.trace, "routing refused");
                        let extra: Vec<(&str, &[u8])> =
                            headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
                        return self.respond(now, &key, &req, status, &reason, &extra);
                    }
                    Decision::Forward {
                        targets,
                        rewrite_host,
                        request_uri,
                    } => {
                        if let Sender::Gateway { name, .. } = &sender {
                            debug!(gateway = %name, "inbound call from gateway");
                        }
                        targets
                            .into_iter()
                            .map(|hop| Target {
                                hop,
                                rewrite_host,
                                request_uri: request_uri.clone(),
                                strict_route: None,
                            })
                            .collect()
                    }
                }
            }
        };
        let ctx = ResponseContext {
            request: req,
            remaining: targets.into(),
            current: None,
            best: None,
            final_sent: false,
            cancelled: false,
            branch_index: 0,
        };
        if let Some(e) = self.servers.get_mut(&key) {
            e.ctx = Some(ctx);
        }
        self.forward_next(now, &key);
    }

    /// Routes by the Route header set (§16.4, §16.6 steps 6-7). `None`: no Route set to
    /// follow (an initial request for the routing policy).
    pub(super) fn route_by_route_set(
        &self,
        flow: &Flow,
        req: &Message,
    ) -> Option<Result<Target, RouteError>> {
        let mut routes: Vec<NameAddr<'_>> = req.routes().collect();
        // Our own entries (one or two: the double Record-Route of RFC 5658) are popped.
        let ours = routes
            .iter()
            .take_while(|r| self.is_us_uri(Some(r.uri())))
            .count();
        routes.drain(..ours);
        let in_dialog = req.to_hdr().and_then(|t| t.tag()).is_some();
        // §16.4: a strict router before us put our Record-Route value into the Request-URI;
        // the real target is the last Route value.
        if ours == 0 && in_dialog {
            let ruri = req.request_uri()?;
            if self.is_us_uri(Some(ruri)) && ruri.user().is_none() {
                let Some(last) = routes.last() else {
                    return Some(Err(RouteError::Refuse(
                        404,
                        "Not Found: Request-URI is this proxy".into(),
                    )));
                };
                let uri = last.uri();
                let new_ruri = String::from_utf8_lossy(uri.raw()).into_owned();
                return Some(self.uri_target(flow.side.other(), &uri).map(|hop| Target {
                    hop,
                    rewrite_host: false,
                    request_uri: None,
                    strict_route: Some(new_ruri),
                }));
            }
        }
        if ours == 0 {
            if in_dialog {
                // A mid-dialog request that was not record-routed through us: following its
                // Route or Request-URI to any host would make us an open relay.
                return Some(Err(RouteError::Refuse(
                    403,
                    "Forbidden: dialog not routed through this proxy".into(),
                )));
            }
            // An initial request: the routing policy decides (a preloaded foreign Route is
            // left in place for the next hop).
            return None;
        }
        let uri = if let Some(next) = routes.first() {
            next.uri()
        } else {
            let ruri = req.request_uri()?;
            if self.is_us_uri(Some(ruri)) {
                if !in_dialog {
                    // Our Route, then us again: an initial request for the policy.
                    return None;
                }
                return Some(Err(RouteError::Refuse(
                    404,
                    "Not Found: Request-URI is this proxy".into(),
                )));
            }
            ruri
        };
        Some(self.uri_target(flow.side.other(), &uri).map(|hop| Target {
            hop,
            rewrite_host: false,
            request_uri: None,
            strict_route: None,
        }))
    }

    /// Resolves a URI (from a Route or the Request-URI) into a next hop on `side`.
    pub(super) fn uri_target(&self, side: Side, uri: &Uri<'_>) -> Result<NextHop, RouteError> {
        let maddr = uri.param("maddr").flatten();
        let host = String::from_utf8_lossy(maddr.unwrap_or(uri.host())).into_owned();
        let transport = match uri.param("transport").flatten() {
            Some(t) if t.eq_ignore_ascii_case(b"tcp") => Transport::Tcp,
            Some(t) if t.eq_ignore_ascii_case(b"tls") => Transport::Tls,
            Some(t) if t.eq_ignore_ascii_case(b"udp") => Transport::Udp,
            Some(_) => {
                return Err(RouteError::Refuse(
                    503,
                    "unsupported transport in route".into(),
                ))
            }
            None if uri.scheme() == Scheme::Sips => Transport::Tls,
            None => Transport::Udp,
        };
        let port = uri.port().unwrap_or(if transport == Transport::Tls {
            5061
        } else {
            5060
        });
        // Static entries first (IP literals, `[hosts]`), then what the system resolver said.
        let ip = match self.cfg.static_host(&host) {
            Some(ip) => ip,
            None => match self.dns.get(&host) {
                Some((Some(ip), _)) => *ip,
                Some((None, _)) => {
                    return Err(RouteError::Refuse(
                        503,
                        format!("next hop {host} does not resolve"),
                    ))
                }
                None => return Err(RouteError::Unresolved(host)),
            },
        };
        // Broadcast and unspecified addresses are never a next hop (RFC 4475 bcast).
        if ip.is_unspecified() || ip == IpAddr::V4(std::net::Ipv4Addr::BROADCAST) {
            return Err(RouteError::Refuse(
                400,
                format!("next hop {ip} is not a unicast address"),
            ));
        }
        Ok(NextHop {
            name: host,
            addr: SocketAddr::new(ip, port),
            transport,
            side,
        })
    }

    /// Is this URI one of ours (mediation or access edge FQDN, or a listener address)?
    pub(super) fn is_us_uri(&self, uri: Option<Uri<'_>>) -> bool {
        let Some(uri) = uri else { return false };
        let host = uri.host();
        let host = std::str::from_utf8(host).unwrap_or("");
        if self
            .table
            .own_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(host))
        {
            return true;
        }
        let port = uri.port().unwrap_or(5060);
        let ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>();
        match ip {
            Ok(ip) => self
                .local
                .values()
                .any(|a| a.ip() == ip && a.port() == port),
            Err(_) => false,
        }
    }
}

/// Rewrites the host part of a SIP URI, keeping scheme, user and parameters; `tel:` URIs
/// become `sip:<number>@host;user=phone`.
pub(super) fn rewrite_uri_host(uri: &Uri<'_>, host: &str) -> Option<String> {
    let user = uri.user().map(|u| String::from_utf8_lossy(u).into_owned());
    match uri.scheme() {
        Scheme::Tel => Some(format!(
            "sip:{}@{};user=phone",
            String::from_utf8_lossy(uri.host()),
            host
        )),
        Scheme::Sip | Scheme::Sips => {
            let scheme = if uri.scheme() == Scheme::Sips {
                "sips"
            } else {
                "sip"
            };
            let params = String::from_utf8_lossy(uri.params_raw());
            // maddr would send it elsewhere; the next hop is decided already.
            let params: String = params
                .split(';')
                .filter(|p| !p.is_empty() && !p.to_ascii_lowercase().starts_with("maddr="))
                .map(|p| format!(";{p}"))
                .collect();
            Some(match user {
                Some(u) => format!("{scheme}:{u}@{host}{params}"),
                None => format!("{scheme}:{host}{params}"),
            })
        }
        _ => None,
    }
}
