//! **route**: where a request goes. Initial requests (no To tag) are routed by the policy
//! alone: our own Route entries are removed, any other Route header is refused (403, as
//! Kamailio's default configuration refuses preloaded routes) and the Request-URI's host is
//! never followed. Inside a dialog, a Route set naming us is followed (§16.4, with the
//! strict-router case) only when our Record-Route token proves the dialog is one we created
//! with this very peer (see [`super::dialog_token`]); then, and only then, names from the Route
//! set may be resolved. Everything else gets a 403 and no lookup.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info, info_span};

use super::calls::Call;
use super::dialog_token::PARAM as TOKEN_PARAM;
use super::{Core, Parked, ResponseContext, RouteError, Target};
use crate::cdr::{Direction, EndedBy};
use crate::config::{Side, Transport};
use crate::flow::Flow;
use crate::proxy::CallKey;
use crate::routing;
use crate::routing::{Decision, NextHop, Sender};
use crate::sip::{Message, Method, NameAddr, Scheme, Uri};
use crate::txn::ServerKey;

/// What the Route set says.
pub(super) enum Routing {
    /// No Route to follow: the routing policy decides (an initial request).
    Policy,
    /// Inside a dialog of ours: this next hop; `gateway` is the dialog's gateway-side peer.
    Follow { target: Target, gateway: String },
}

impl Core {
    pub(super) fn route_and_forward(
        &mut self,
        now: Instant,
        key: ServerKey,
        flow: Flow,
        req: Message,
        sender: Sender,
        peer: Arc<str>,
    ) {
        let span = info_span!("route");
        let _g = span.enter();
        let targets: Vec<Target> = match self.route_by_route_set(&flow, &sender, &req) {
            Ok(Routing::Follow { target, gateway }) => {
                // A request of a call: a BYE ends it here, whatever its own fate downstream.
                if let Some(call) = self.call_of(&req, &gateway) {
                    if let Some(c) = req.cseq() {
                        self.calls.saw_request(&call, flow.side, c.seq);
                    }
                    if req.method() == Some(&Method::Bye) {
                        let caller_side = self
                            .calls
                            .get(&call)
                            .map_or(Side::Cloud, |c| c.caller_side());
                        let by = if flow.side == caller_side {
                            EndedBy::Caller
                        } else {
                            EndedBy::Callee
                        };
                        self.end_call(now, &call, 200, "BYE", by);
                    }
                    if let Some(e) = self.servers.get_mut(&key) {
                        e.call = Some(call);
                    }
                }
                vec![target]
            }
            Err(RouteError::Refuse(status, reason)) => {
                self.stats.rejected += 1;
                info!(status, %reason, "route set refused");
                return self.respond(now, &key, &req, status, &[]);
            }
            Err(RouteError::Unresolved(host)) => {
                debug!(%host, "resolving next hop");
                return self.park(host, Parked::Request { key, flow, req });
            }
            Ok(Routing::Policy) => {
                self.spread = self.spread.wrapping_add(1);
                let is_invite = req.method() == Some(&Method::Invite);
                if is_invite {
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
                        if is_invite {
                            self.start_call(now, &key, &req, &sender, &peer, None);
                        }
                        let extra: Vec<(&str, &[u8])> =
                            headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
                        return self.respond(now, &key, &req, status, &extra);
                    }
                    Decision::Forward {
                        targets,
                        rewrite_host,
                        request_uri,
                        user,
                        called,
                    } => {
                        if is_invite {
                            self.start_call(now, &key, &req, &sender, &peer, user);
                        }
                        targets
                            .into_iter()
                            .map(|hop| {
                                // A number a dial plan normalized goes in the Request-URI.
                                let request_uri = request_uri.clone().or_else(|| {
                                    called
                                        .as_ref()
                                        .map(|n| format!("sip:{n}@{};user=phone", hop.name))
                                });
                                Target {
                                    hop,
                                    rewrite_host,
                                    request_uri,
                                    strict_route: None,
                                }
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

    /// A new call from `peer`: its entry in the call table, bound to its server transaction.
    fn start_call(
        &mut self,
        now: Instant,
        key: &ServerKey,
        req: &Message,
        sender: &Sender,
        peer: &str,
        user: Option<String>,
    ) {
        let Some(call_id) = req.call_id() else { return };
        let call = CallKey::new(peer, bytes::Bytes::copy_from_slice(call_id));
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let (direction, gateway) = match sender {
            Sender::Gateway { name, .. } => (Direction::Inbound, Some(name.clone())),
            // A call another site's appliance hands over is an outbound call of ours.
            Sender::Appliance { .. } | Sender::CloudPeer => (Direction::Outbound, None),
        };
        // The side the INVITE came from (a call another site hands over comes on the gateway
        // side yet is routed as an outbound call).
        let caller = self.servers.get(key).map_or(
            match direction {
                Direction::Inbound => Side::Gateway,
                Direction::Outbound => Side::Cloud,
            },
            |e| e.flow.side,
        );
        let mut cseq = [0, 0];
        if let Some(c) = req.cseq() {
            cseq[super::calls::side_index(caller)] = c.seq;
        }
        self.calls.start(
            call.clone(),
            Call {
                direction,
                caller: req
                    .from_hdr()
                    .map(|f| text(f.uri().raw()))
                    .unwrap_or_default(),
                callee: req.request_uri().map(|u| text(u.raw())).unwrap_or_default(),
                user,
                gateway,
                start: now,
                ringing: None,
                answer: None,
                session_of: None,
                caller_on: caller,
                dialog: None,
                cseq,
            },
        );
        if let Some(e) = self.servers.get_mut(key) {
            e.call = Some(call);
        }
    }

    /// The call an in-dialog request belongs to: started by its gateway-side peer, or by the
    /// cloud peer.
    pub(super) fn call_of(&self, req: &Message, gateway: &str) -> Option<CallKey> {
        let call_id = bytes::Bytes::copy_from_slice(req.call_id()?);
        [gateway, self.table.cloud_peer.name.as_str()]
            .into_iter()
            .map(|p| CallKey::new(p, call_id.clone()))
            .find(|k| self.calls.contains(k))
    }

    /// Routes by the Route header set (§16.4, §16.6 steps 6-7).
    pub(super) fn route_by_route_set(
        &self,
        flow: &Flow,
        sender: &Sender,
        req: &Message,
    ) -> Result<Routing, RouteError> {
        let routes: Vec<NameAddr<'_>> = req.routes().collect();
        // Our own entries (one or two: the double Record-Route of RFC 5658) lead the set.
        let ours = routes
            .iter()
            .take_while(|r| self.is_us_uri(Some(r.uri())))
            .count();
        let to_tag = req.to_hdr().and_then(|t| t.tag());
        let Some(to_tag) = to_tag else {
            // An initial request: the policy decides, and nobody preloads a route through us.
            if let Some(foreign) = routes.get(ours) {
                return Err(RouteError::Refuse(
                    403,
                    format!(
                        "preloaded Route {} refused: initial requests are routed by policy",
                        String::from_utf8_lossy(foreign.raw())
                    ),
                ));
            }
            return Ok(Routing::Policy);
        };
        let ruri = req
            .request_uri()
            .ok_or_else(|| RouteError::Refuse(400, "no Request-URI".into()))?;
        // Where our token is, and what comes next: the Route after ours, else the Request-URI;
        // or (§16.4) a strict router before us put our Record-Route value into the
        // Request-URI, and the real target is the last Route value.
        let (token_uri, next, strict) = if ours > 0 {
            let token_uri = routes.first().map(|r| r.uri());
            match routes.get(ours) {
                Some(n) => (token_uri, Some(n.uri()), false),
                None if self.is_us_uri(Some(ruri)) => {
                    return Err(RouteError::Refuse(404, "Request-URI is this proxy".into()))
                }
                None => (token_uri, Some(ruri), false),
            }
        } else if self.is_us_uri(Some(ruri)) && ruri.user().is_none() {
            (Some(ruri), routes.last().map(|r| r.uri()), true)
        } else {
            // A mid-dialog request that was not record-routed through us: following its Route
            // or Request-URI to any host would make us an open relay.
            return Err(RouteError::Refuse(
                403,
                "in-dialog request not routed through this proxy".into(),
            ));
        };
        let Some(next) = next else {
            return Err(RouteError::Refuse(404, "Request-URI is this proxy".into()));
        };
        let token = token_uri
            .and_then(|u| u.param(TOKEN_PARAM).flatten())
            .unwrap_or_default();
        let call_id = req.call_id().unwrap_or_default();
        let from_tag = req.from_hdr().and_then(|f| f.tag()).unwrap_or_default();
        let tags = [from_tag, to_tag];
        // The dialog's gateway-side peer: the sender when it comes from the gateway side; when
        // it comes from the cloud, the gateway the Route set leads to — a configured one, found
        // without any lookup.
        let (gateway, hop) = match (flow.side, sender) {
            (
                Side::Gateway,
                Sender::Gateway { name, .. } | Sender::Appliance { fqdn: name, .. },
            ) => {
                if self.dialog_key.verify(token, call_id, tags, name) {
                    // Verified: names from the Route set may be resolved now. A call another
                    // site's appliance handed over leads on to one of our gateways.
                    let to_gateway = matches!(sender, Sender::Appliance { .. })
                        .then(|| self.gateway_for_uri(&next))
                        .flatten();
                    let hop = match to_gateway {
                        Some(hop) => hop,
                        None => self.uri_target(Side::Cloud, &next)?,
                    };
                    (name.clone(), hop)
                } else {
                    // A gateway's request inside a call another site's appliance handed over:
                    // the dialog is bound to that appliance, which the Route set leads to.
                    match self.appliance_for_uri(&next) {
                        Some(hop) if self.dialog_key.verify(token, call_id, tags, &hop.name) => {
                            (hop.name.clone(), hop)
                        }
                        _ => {
                            return Err(RouteError::Refuse(
                                403,
                                "no dialog of ours with this peer".into(),
                            ))
                        }
                    }
                }
            }
            (Side::Cloud, Sender::CloudPeer) => {
                let found = self
                    .gateway_for_uri(&next)
                    .or_else(|| self.appliance_for_uri(&next));
                let Some(hop) = found else {
                    return Err(RouteError::Refuse(
                        403,
                        "in-dialog request toward no configured gateway".into(),
                    ));
                };
                if !self.dialog_key.verify(token, call_id, tags, &hop.name) {
                    return Err(RouteError::Refuse(
                        403,
                        "no dialog of ours with this peer".into(),
                    ));
                }
                (hop.name.clone(), hop)
            }
            _ => return Err(RouteError::Refuse(403, "sender on the wrong side".into())),
        };
        let strict_route = strict.then(|| String::from_utf8_lossy(next.raw()).into_owned());
        Ok(Routing::Follow {
            target: Target {
                hop,
                rewrite_host: false,
                request_uri: None,
                strict_route,
            },
            gateway,
        })
    }

    /// The configured gateway a URI names (by its configured name or its address), as the next
    /// hop: the URI's port and transport, the gateway's own address. No name is resolved.
    fn gateway_for_uri(&self, uri: &Uri<'_>) -> Option<NextHop> {
        let host = std::str::from_utf8(uri.host()).ok()?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip = host.parse::<IpAddr>().ok();
        let gw = self.table.gateways.iter().find(|g| {
            g.name
                .trim_end_matches('.')
                .eq_ignore_ascii_case(host.trim_end_matches('.'))
                || ip == Some(g.hop.addr.ip())
        })?;
        let transport = match uri_transport(uri) {
            Ok(Some(t)) => t,
            Ok(None) => gw.hop.transport,
            Err(_) => return None,
        };
        let port = uri.port().unwrap_or(gw.hop.addr.port());
        Some(NextHop {
            name: gw.name.clone(),
            addr: SocketAddr::new(gw.hop.addr.ip(), port),
            transport,
            side: Side::Gateway,
        })
    }

    /// Another site's mediation server a URI names (by its FQDN or its address), as the next
    /// hop on the gateway side: the URI's port and transport, the server's own address.
    fn appliance_for_uri(&self, uri: &Uri<'_>) -> Option<NextHop> {
        let host = std::str::from_utf8(uri.host()).ok()?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip = host.parse::<IpAddr>().ok();
        let (_, m) = self.table.other_appliances().find(|(_, m)| {
            m.name.eq_ignore_ascii_case(host.trim_end_matches('.')) || ip == Some(m.addr.ip())
        })?;
        let transport = match uri_transport(uri) {
            Ok(Some(t)) => t,
            Ok(None) => m.transport,
            Err(_) => return None,
        };
        let port = uri.port().unwrap_or(m.addr.port());
        Some(NextHop {
            name: m.name.clone(),
            addr: SocketAddr::new(m.addr.ip(), port),
            transport,
            side: Side::Gateway,
        })
    }

    /// Resolves a URI (from a Route or the Request-URI) into a next hop on `side`.
    /// `maddr` is not honoured: the next hop is the URI's host (§19.1.1 allows a proxy to
    /// ignore it; honouring it would let a peer aim us anywhere).
    pub(super) fn uri_target(&self, side: Side, uri: &Uri<'_>) -> Result<NextHop, RouteError> {
        let host = String::from_utf8_lossy(uri.host()).into_owned();
        let transport = match uri_transport(uri) {
            Ok(Some(t)) => t,
            Ok(None) if uri.scheme() == Scheme::Sips => Transport::Tls,
            Ok(None) => Transport::Udp,
            Err(()) => {
                return Err(RouteError::Refuse(
                    503,
                    "unsupported transport in route".into(),
                ))
            }
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

/// The `transport` parameter of a URI: `Ok(None)` when absent, `Err` when unsupported.
fn uri_transport(uri: &Uri<'_>) -> Result<Option<Transport>, ()> {
    match uri.param("transport").flatten() {
        Some(t) if t.eq_ignore_ascii_case(b"tcp") => Ok(Some(Transport::Tcp)),
        Some(t) if t.eq_ignore_ascii_case(b"tls") => Ok(Some(Transport::Tls)),
        Some(t) if t.eq_ignore_ascii_case(b"udp") => Ok(Some(Transport::Udp)),
        Some(_) => Err(()),
        None => Ok(None),
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
