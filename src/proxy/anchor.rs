//! Media anchoring bound to dialogs: the proxy's side of issue 5.
//!
//! For every call (keyed by Call-ID) the anchor holds one [`MediaSession`] (two legs: A toward
//! the gateway, B toward the cloud peer), two RFC 3264 [`Negotiation`]s — one per leg, fed with
//! the bodies as that leg saw them (the UA's original and our rewrite) — and our own SDES keys
//! per leg. The core calls it at a few points:
//!
//! * [`Anchor::on_request`] for every request it forwards (initial INVITE: a session is
//!   allocated, the offer filtered and rewritten; re-INVITE/UPDATE/PRACK/ACK: offers and answers
//!   rewritten; BYE: the session released);
//! * [`Anchor::on_response`] for every response it relays upstream (answers and late offers in
//!   18x/2xx rewritten; the 2xx of the initial INVITE confirms the dialog and stores what a
//!   BYE needs; a final error releases the session or voids a re-offer);
//! * [`Anchor::on_local_final`] for final responses the proxy generates itself (408, 487, 503 …);
//! * [`Anchor::sweep`] on its deadline ([`Anchor::next_deadline`]): media supervision. A call
//!   with no RTP in either supervised direction for `media_timeout` is released once and
//!   returned as [`TimedOut`], from which the core builds a BYE to each leg.
//!
//! The anchor owns real sockets through the media layer, but reads no clock: `now` comes in.
//! A call crosses it in one of two directions (gateway → cloud, cloud → gateway); `Side` is the
//! signalling side (config), `Leg` the media leg, and `sdp::Side` the dialog role.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, info, warn};

use crate::config::{Config, MediaSettings, Side, SrtpMode};
use crate::media::{
    generate_key_salt, Leg, LegConfig, MediaError, MediaSession, PortPool, Relay, RelayConfig,
    SessionState, SrtpParams, SrtpSuite, KEY_SALT_LEN,
};
use crate::sdp::{
    self, filter_offer, rewrite, Carrier, CodecPolicy, CryptoLine, CryptoSuite, Endpoint,
    MediaRewrite, Negotiation, OriginRewrite, Profile, Rewrite, Sdp, SdpError, SdpRole,
};
use crate::sip::{HeaderName, Message, Method};

/// Why the anchor refuses a request: the status and reason phrase the core answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refuse {
    pub status: u16,
    pub reason: String,
}

impl Refuse {
    fn sdp(e: &SdpError) -> Refuse {
        let status = e.status_code();
        Refuse {
            status,
            reason: match status {
                400 => "Bad Request".into(),
                491 => "Request Pending".into(),
                _ => "Not Acceptable Here".into(),
            },
        }
    }
}

/// Counters of the anchor, for the log and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AnchorStats {
    pub sessions_created: u64,
    pub sessions_released: u64,
    pub media_timeouts: u64,
    /// New calls refused with 503: no media ports left.
    pub ports_exhausted: u64,
    /// Requests refused for their SDP (488/400/491).
    pub sdp_refused: u64,
    /// SDP in a response that could not be anchored (relayed unchanged, logged).
    pub sdp_errors: u64,
}

/// What the core needs to end a dialog by itself (media timeout): one BYE per side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByeSpec {
    /// Where the BYE goes (signalling side).
    pub side: Side,
    /// The remote target: that UA's Contact URI (RFC 3261 §12.1).
    pub request_uri: String,
    /// The route set toward that UA beyond us (Record-Route entries of other proxies).
    pub routes: Vec<String>,
    /// From header value (the other UA's identity and tag).
    pub from: String,
    /// To header value (that UA's identity and tag).
    pub to: String,
    pub call_id: String,
    /// Higher than any CSeq the other UA used in this dialog (§12.2.1.1).
    pub cseq: u32,
}

/// The dialog as seen in the 2xx of the initial INVITE: enough to build BYEs later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogInfo {
    /// Contact URI of the caller (from the INVITE).
    pub caller_contact: String,
    /// Contact URI of the callee (from the 2xx).
    pub callee_contact: String,
    /// Record-Route entries of proxies between us and the callee, top first.
    pub routes_to_callee: Vec<String>,
    /// Record-Route entries of proxies between us and the caller, nearest first.
    pub routes_to_caller: Vec<String>,
    /// From header value of the INVITE (caller, with its tag).
    pub caller_from: String,
    /// To header value of the 2xx (callee, with its tag).
    pub callee_to: String,
}

/// A call ended by media supervision: released already; the core sends these BYEs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    pub call_id: String,
    pub byes: [ByeSpec; 2],
}

/// Reason header of the BYEs sent on media timeout (RFC 3326).
pub const MEDIA_TIMEOUT_REASON: &str = "SIP;cause=408;text=\"media timeout\"";

fn leg_of(side: Side) -> Leg {
    match side {
        Side::Gateway => Leg::A,
        Side::Cloud => Leg::B,
    }
}

fn side_of(leg: Leg) -> Side {
    match leg {
        Leg::A => Side::Gateway,
        Leg::B => Side::Cloud,
    }
}

fn idx(leg: Leg) -> usize {
    match leg {
        Leg::A => 0,
        Leg::B => 1,
    }
}

fn srtp_suite(s: &CryptoSuite) -> Option<SrtpSuite> {
    match s {
        CryptoSuite::AesCm128HmacSha1_80 => Some(SrtpSuite::Aes128CmSha1_80),
        CryptoSuite::AesCm128HmacSha1_32 => Some(SrtpSuite::Aes128CmSha1_32),
        _ => None,
    }
}

/// The first crypto line of `ep` our SRTP layer can key: a supported suite, 30 bytes of
/// key||salt, no MKI.
fn pick_crypto(ep: &Endpoint) -> Option<(CryptoLine, SrtpSuite, [u8; KEY_SALT_LEN])> {
    ep.crypto.iter().find_map(|c| {
        if !c.is_usable() {
            return None;
        }
        let suite = srtp_suite(&c.suite)?;
        let key: [u8; KEY_SALT_LEN] = c.master_key_salt().try_into().ok()?;
        Some((c.clone(), suite, key))
    })
}

/// Where an endpoint receives RTP (and RTCP, unless muxed); `None` for hold (`c=0.0.0.0`),
/// a rejected stream or an address we cannot use (an FQDN).
fn endpoint_addrs(ep: &Endpoint, mux: bool) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let ip = ep.address.as_ref()?.ip()?;
    if ip.is_unspecified() || ep.rtp_port == 0 {
        return None;
    }
    let rtp = SocketAddr::new(ip, ep.rtp_port);
    if mux {
        return Some((rtp, None));
    }
    let rtcp_ip = ep
        .rtcp_address
        .as_ref()
        .and_then(|a| a.ip())
        .filter(|i| !i.is_unspecified())
        .unwrap_or(ip);
    let rtcp_port = ep.rtcp_port.or_else(|| ep.rtp_port.checked_add(1));
    Some((rtp, rtcp_port.map(|p| SocketAddr::new(rtcp_ip, p))))
}

/// A leg is "on hold" for supervision when its UA is not expected to send: its direction does
/// not send (RFC 3264 §8.4 recvonly/inactive) or it gave `c=0.0.0.0`.
fn silent(ep: &Endpoint) -> bool {
    !ep.direction.sends() || ep.address.as_ref().is_some_and(|a| a.is_hold())
}

fn is_auxiliary(name: &str) -> bool {
    ["telephone-event", "CN", "red", "ulpfec", "flexfec", "rtx"]
        .iter()
        .any(|a| a.eq_ignore_ascii_case(name))
}

/// The SDP body of a message, if it has one (Content-Type application/sdp, or no
/// Content-Type with a body starting with `v=`).
fn sdp_body(msg: &Message) -> Option<Result<Sdp, SdpError>> {
    let body = msg.body();
    if body.is_empty() {
        return None;
    }
    let is_sdp = match msg.header(HeaderName::ContentType) {
        Some(ct) => {
            let ct = ct.trim_ascii();
            let mime = ct.split(|b| *b == b';').next().unwrap_or_default();
            mime.trim_ascii().eq_ignore_ascii_case(b"application/sdp")
        }
        None => body.starts_with(b"v="),
    };
    is_sdp.then(|| Sdp::from_bytes(msg.body_bytes()))
}

/// A body the anchor cannot look into (multipart: SDP beside ISUP or other parts). Forwarding
/// it would let the media bypass the anchor, so such requests are refused with 415
/// (RFC 3261 §21.4.13).
fn is_opaque_body(msg: &Message) -> bool {
    !msg.body().is_empty()
        && msg.header(HeaderName::ContentType).is_some_and(|ct| {
            ct.trim_ascii()
                .get(..10)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"multipart/"))
        })
}

fn with_body(msg: &Message, body: &[u8]) -> Option<Message> {
    let mut ed = msg.edit();
    ed.set_body(None, body);
    Message::parse(ed.finish()).ok()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One anchored call.
struct Call {
    /// The signalling side the initial INVITE came from.
    caller: Side,
    session: MediaSession,
    /// Per leg (index 0 = A/gateway, 1 = B/cloud).
    neg: [Negotiation; 2],
    /// Our SDES key||salt per leg (what we protect with on that leg).
    keys: [[u8; KEY_SALT_LEN]; 2],
    modes: [SrtpMode; 2],
    /// The m-line carried by the session (one stream per call: at most 4 ports).
    anchored: Option<usize>,
    /// Per leg the body came from: (original, rewritten), for repeated bodies (the same answer
    /// in several 18x and the 2xx).
    last: [Option<(Bytes, Vec<u8>)>; 2],
    dialog: Option<DialogInfo>,
    /// Highest CSeq seen in requests from each leg's UA.
    cseq: [u32; 2],
}

impl Call {
    fn role(&self, from: Side) -> sdp::Side {
        if from == self.caller {
            sdp::Side::Caller
        } else {
            sdp::Side::Callee
        }
    }
}

/// The media anchor of the proxy.
pub struct Anchor {
    settings: MediaSettings,
    cloud_srtp: SrtpMode,
    /// Gateways by name and (static) address, with their SRTP mode.
    gateways: Vec<(String, Option<IpAddr>, SrtpMode)>,
    policies: [CodecPolicy; 2],
    relay: Relay,
    pool: PortPool,
    calls: HashMap<String, Call>,
    next_sweep: Option<Instant>,
    pub stats: AnchorStats,
}

impl std::fmt::Debug for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anchor")
            .field("calls", &self.calls.len())
            .field("pool_available", &self.pool.available())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The anchor of a call in one direction, as the core sees a forwarded request.
#[derive(Debug, Clone, Copy)]
pub struct Hop<'a> {
    /// Signalling side the request came from.
    pub from: Side,
    /// The sender's IP (names the gateway when `from` is the gateway side).
    pub from_ip: IpAddr,
    /// The next hop's name (routing table) and address, on the other side.
    pub to_name: &'a str,
    pub to_ip: IpAddr,
}

impl Anchor {
    /// Starts the relay and the port pool of `[media]`; `None` when the table is absent.
    pub fn from_config(cfg: &Config) -> Result<Option<Anchor>, MediaError> {
        let Some(m) = &cfg.media else {
            return Ok(None);
        };
        let gateways = cfg
            .gateways
            .iter()
            .map(|g| {
                let name = g.name.to_string();
                let ip = cfg.static_host(&name);
                (name, ip, g.srtp)
            })
            .collect();
        Anchor::new(m.clone(), cfg.cloud_peer.srtp, gateways).map(Some)
    }

    /// An anchor over `settings`, with the cloud peer's and each gateway's SRTP mode.
    pub fn new(
        settings: MediaSettings,
        cloud_srtp: SrtpMode,
        gateways: Vec<(String, Option<IpAddr>, SrtpMode)>,
    ) -> Result<Anchor, MediaError> {
        let pool = PortPool::new(settings.port_min..=settings.port_max)?;
        let mut rc = RelayConfig::default();
        if let Some(w) = settings.relay_workers {
            rc.workers = w;
        }
        let relay = Relay::start(rc)?;
        let policies = [
            CodecPolicy::new(settings.gateway_codecs.iter().cloned()),
            CodecPolicy::new(settings.cloud_codecs.iter().cloned()),
        ];
        info!(
            ip = %settings.ip,
            pool_capacity = pool.capacity(),
            timeout_s = settings.media_timeout.as_secs(),
            cloud_srtp = cloud_srtp.as_str(),
            "media anchor ready"
        );
        Ok(Anchor {
            settings,
            cloud_srtp,
            gateways,
            policies,
            relay,
            pool,
            calls: HashMap::new(),
            next_sweep: None,
            stats: AnchorStats::default(),
        })
    }

    /// The port pool (free pairs: [`PortPool::available`]).
    pub fn pool(&self) -> &PortPool {
        &self.pool
    }

    /// Calls holding a media session.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// The media session of a call, for its counters.
    pub fn session(&self, call_id: &str) -> Option<&MediaSession> {
        self.calls.get(call_id).map(|c| &c.session)
    }

    fn gateway_mode(&self, name: &str, ip: IpAddr) -> SrtpMode {
        self.gateways
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
            .or_else(|| self.gateways.iter().find(|(_, i, _)| *i == Some(ip)))
            .map_or(SrtpMode::Off, |(_, _, m)| *m)
    }

    // ------------------------------------------------------------------ requests

    /// A request about to be forwarded from `hop.from` to the other side. Returns the request
    /// to forward instead (SDP rewritten) or a refusal (503 when the ports are exhausted, 488
    /// when no acceptable media remains, 400/491 for bad or crossing offers).
    pub fn on_request(
        &mut self,
        now: Instant,
        req: &Message,
        hop: Hop<'_>,
    ) -> Result<Option<Message>, Refuse> {
        let Some(method) = req.method() else {
            return Ok(None);
        };
        let call_id = text(req.call_id().unwrap_or_default());
        let initial = req.to_hdr().and_then(|t| t.tag()).is_none();
        if matches!(method, Method::Invite | Method::Update | Method::Prack) && is_opaque_body(req)
        {
            self.stats.sdp_refused += 1;
            return Err(Refuse {
                status: 415,
                reason: "Unsupported Media Type".into(),
            });
        }
        if *method == Method::Invite && initial {
            return self.on_initial_invite(now, req, hop, call_id);
        }
        let carrier = match method {
            Method::Invite => Carrier::Invite,
            Method::Update => Carrier::Update,
            Method::Prack => Carrier::Prack,
            Method::Ack => Carrier::Ack,
            Method::Bye => {
                self.release(&call_id, "BYE");
                return Ok(None);
            }
            _ => return Ok(None),
        };
        let Some(call) = self.calls.get_mut(&call_id) else {
            return Ok(None);
        };
        if let Some(c) = req.cseq() {
            let i = idx(leg_of(hop.from));
            call.cseq[i] = call.cseq[i].max(c.seq);
        }
        let body = match sdp_body(req) {
            None => {
                let role = call.role(hop.from);
                for n in &mut call.neg {
                    // An ACK without the answer to a 2xx offer voids it (§13.2.1); nothing to
                    // rewrite either way.
                    let _ = n.on_message(role, carrier, None);
                }
                return Ok(None);
            }
            Some(Err(e)) => {
                self.stats.sdp_refused += 1;
                info!(error = %e, "request SDP does not parse");
                return Err(Refuse::sdp(&e));
            }
            Some(Ok(s)) => s,
        };
        let ip = self.settings.ip;
        let policies = &self.policies;
        match process(call, ip, policies, now, hop.from, carrier, body) {
            Ok(out) => Ok(with_body(req, &out)),
            Err(e) => {
                self.stats.sdp_refused += 1;
                info!(error = %e, "in-dialog offer/answer refused");
                if carrier == Carrier::Ack {
                    // An ACK cannot be refused; forward it as it is.
                    return Ok(None);
                }
                Err(Refuse::sdp(&e))
            }
        }
    }

    fn on_initial_invite(
        &mut self,
        now: Instant,
        req: &Message,
        hop: Hop<'_>,
        call_id: String,
    ) -> Result<Option<Message>, Refuse> {
        // A new INVITE reusing a Call-ID (after a 401/407, or a retry) starts over.
        self.release(&call_id, "new initial INVITE");
        let body = match sdp_body(req) {
            Some(Err(e)) => {
                self.stats.sdp_refused += 1;
                return Err(Refuse::sdp(&e));
            }
            Some(Ok(s)) => Some(s),
            None => None,
        };
        let gw_mode = match hop.from {
            Side::Gateway => self.gateway_mode("", hop.from_ip),
            Side::Cloud => self.gateway_mode(hop.to_name, hop.to_ip),
        };
        let leg_cfg = LegConfig {
            ip: self.settings.ip,
            rtcp_mux: false,
        };
        let session = match MediaSession::new(&self.relay, &self.pool, leg_cfg, leg_cfg) {
            Ok(s) => s,
            Err(MediaError::PortsExhausted) => {
                self.stats.ports_exhausted += 1;
                warn!(call_id = %call_id, "media ports exhausted: new call refused");
                return Err(Refuse {
                    status: 503,
                    reason: "Service Unavailable".into(),
                });
            }
            Err(e) => {
                warn!(call_id = %call_id, error = %e, "media session setup failed");
                return Err(Refuse {
                    status: 500,
                    reason: "Server Internal Error".into(),
                });
            }
        };
        let mut call = Call {
            caller: hop.from,
            session,
            neg: [Negotiation::new(), Negotiation::new()],
            keys: [generate_key_salt(), generate_key_salt()],
            modes: [gw_mode, self.cloud_srtp],
            anchored: None,
            last: [None, None],
            dialog: None,
            cseq: [0, 0],
        };
        if let Some(c) = req.cseq() {
            call.cseq[idx(leg_of(hop.from))] = c.seq;
        }
        let out = match body {
            None => {
                // Late offer (§13.2.1): the offer comes in the 2xx, the answer in the ACK.
                for n in &mut call.neg {
                    let _ = n.on_message(sdp::Side::Caller, Carrier::Invite, None);
                }
                None
            }
            Some(sdp) => {
                let ip = self.settings.ip;
                match process(
                    &mut call,
                    ip,
                    &self.policies,
                    now,
                    hop.from,
                    Carrier::Invite,
                    sdp,
                ) {
                    Ok(out) => Some(out),
                    Err(e) => {
                        self.stats.sdp_refused += 1;
                        info!(call_id = %call_id, error = %e, "offer refused");
                        call.session.release();
                        return Err(Refuse::sdp(&e));
                    }
                }
            }
        };
        self.stats.sessions_created += 1;
        let a = call.session.local(Leg::A).rtp;
        let b = call.session.local(Leg::B).rtp;
        info!(call_id = %call_id, leg_a = %a, leg_b = %b, gw_srtp = gw_mode.as_str(), "media session allocated");
        self.calls.insert(call_id, call);
        Ok(out.and_then(|o| with_body(req, &o)))
    }

    // ------------------------------------------------------------------ responses

    /// A response from `from` to a request of `request` (as received from the other side),
    /// about to be relayed upstream. Returns the response to relay instead. `dialog` is given
    /// with the 2xx of an initial INVITE.
    pub fn on_response(
        &mut self,
        now: Instant,
        request: &Message,
        resp: &Message,
        from: Side,
        dialog: Option<DialogInfo>,
    ) -> Option<Message> {
        let status = resp.status()?;
        let method = resp.cseq()?.method;
        let call_id = text(resp.call_id().unwrap_or_default());
        let initial_invite =
            method == Method::Invite && request.to_hdr().and_then(|t| t.tag()).is_none();
        if status >= 300 {
            self.on_error_response(&call_id, initial_invite, &method, from, status);
            return None;
        }
        let carrier = match method {
            Method::Invite | Method::Update | Method::Prack if status < 200 => Carrier::Provisional,
            Method::Invite | Method::Update | Method::Prack => Carrier::Success,
            _ => return None,
        };
        let call = self.calls.get_mut(&call_id)?;
        if initial_invite && status >= 200 {
            if let Some(d) = dialog {
                call.dialog = Some(d);
            }
            // The dialog is confirmed: supervise from now (§2 of the issue).
            if call.session.commit(now).is_ok() && self.next_sweep.is_none() {
                self.next_sweep = Some(now + sweep_interval(self.settings.media_timeout));
            }
        }
        let out = match sdp_body(resp) {
            None => {
                let role = call.role(from);
                for n in &mut call.neg {
                    let _ = n.on_message(role, carrier, None);
                }
                return None;
            }
            Some(Err(e)) => Err(e),
            Some(Ok(sdp)) => process(
                call,
                self.settings.ip,
                &self.policies,
                now,
                from,
                carrier,
                sdp,
            ),
        };
        match out {
            Ok(body) => with_body(resp, &body),
            Err(e) => {
                // A response cannot be refused; relay it as it came, and say so.
                self.stats.sdp_errors += 1;
                warn!(call_id = %call_id, status, error = %e, "SDP in response not anchored");
                None
            }
        }
    }

    fn on_error_response(
        &mut self,
        call_id: &str,
        initial_invite: bool,
        method: &Method,
        from: Side,
        status: u16,
    ) {
        if initial_invite {
            self.release(call_id, "final error response");
            return;
        }
        if matches!(method, Method::Invite | Method::Update | Method::Prack) {
            if let Some(call) = self.calls.get_mut(call_id) {
                // RFC 3261 §14.1: a failed re-offer leaves the session as it was.
                let role = call.role(from);
                for n in &mut call.neg {
                    let _ = n.on_message(role, Carrier::Failure, None);
                }
                debug!(call_id, status, "re-offer failed: session unchanged");
            }
        }
    }

    /// A final response the proxy generated itself for `request` (received from `from`'s
    /// other side): an error to an initial INVITE releases its session.
    pub fn on_local_final(&mut self, request: &Message, status: u16, responder: Side) {
        if status < 300 {
            return;
        }
        let Some(method) = request.method() else {
            return;
        };
        let call_id = text(request.call_id().unwrap_or_default());
        let initial_invite =
            *method == Method::Invite && request.to_hdr().and_then(|t| t.tag()).is_none();
        self.on_error_response(&call_id, initial_invite, method, responder, status);
    }

    /// Releases the session of a call (exactly once; later calls are no-ops).
    pub fn release(&mut self, call_id: &str, why: &str) -> bool {
        let Some(mut call) = self.calls.remove(call_id) else {
            return false;
        };
        let snap = call.session.snapshot();
        let released = call.session.release();
        if released {
            self.stats.sessions_released += 1;
        }
        info!(
            call_id,
            reason = why,
            a_rx = snap.a.counters.rx_packets,
            a_fwd = snap.a.counters.forwarded,
            b_rx = snap.b.counters.rx_packets,
            b_fwd = snap.b.counters.forwarded,
            a_foreign = snap.a.counters.drops.foreign_source,
            b_foreign = snap.b.counters.drops.foreign_source,
            pool_available = self.pool.available(),
            pool_capacity = self.pool.capacity(),
            "media session released"
        );
        released
    }

    // ------------------------------------------------------------------ supervision

    /// When [`Anchor::sweep`] wants to run next.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Media supervision at `now`: every confirmed call idle for `media_timeout` is released
    /// (once) and returned with its BYEs.
    pub fn sweep(&mut self, now: Instant) -> Vec<TimedOut> {
        match self.next_sweep {
            Some(t) if t <= now => {}
            _ => return Vec::new(),
        }
        let timeout = self.settings.media_timeout;
        let idle: Vec<String> = self
            .calls
            .iter()
            .filter(|(_, c)| c.session.is_idle(now, timeout))
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::with_capacity(idle.len());
        for call_id in idle {
            let Some(call) = self.calls.get(&call_id) else {
                continue;
            };
            let Some(d) = call.dialog.clone() else {
                // A 2xx without Contact: nothing to address a BYE to; free the ports anyway.
                warn!(call_id = %call_id, "media timeout on a dialog without Contact: released without BYE");
                self.stats.media_timeouts += 1;
                self.release(&call_id, "media timeout");
                continue;
            };
            let caller = call.caller;
            let callee = caller.other();
            let cseq_caller = call.cseq[idx(leg_of(caller))];
            let cseq_callee = call.cseq[idx(leg_of(callee))];
            self.stats.media_timeouts += 1;
            warn!(
                call_id = %call_id,
                timeout_s = timeout.as_secs(),
                media_timeouts = self.stats.media_timeouts,
                "media timeout: no RTP in either direction, sending BYE to both legs"
            );
            self.release(&call_id, "media timeout");
            out.push(TimedOut {
                byes: [
                    ByeSpec {
                        side: callee,
                        request_uri: d.callee_contact.clone(),
                        routes: d.routes_to_callee.clone(),
                        from: d.caller_from.clone(),
                        to: d.callee_to.clone(),
                        call_id: call_id.clone(),
                        cseq: cseq_caller.saturating_add(1),
                    },
                    ByeSpec {
                        side: caller,
                        request_uri: d.caller_contact.clone(),
                        routes: d.routes_to_caller.clone(),
                        from: d.callee_to.clone(),
                        to: d.caller_from.clone(),
                        call_id: call_id.clone(),
                        cseq: cseq_callee.saturating_add(1),
                    },
                ],
                call_id,
            });
        }
        let supervised = self
            .calls
            .values()
            .any(|c| c.session.state() == SessionState::Active);
        self.next_sweep = supervised.then(|| now + sweep_interval(timeout));
        out
    }
}

/// How often idle calls are looked for: a quarter of the timeout, at most every second, at
/// least every 50 ms.
fn sweep_interval(timeout: Duration) -> Duration {
    (timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Records a body from `from` in both legs' negotiations and rewrites it for the other leg.
fn process(
    call: &mut Call,
    ip: IpAddr,
    policies: &[CodecPolicy; 2],
    now: Instant,
    from: Side,
    carrier: Carrier,
    sdp: Sdp,
) -> Result<Vec<u8>, SdpError> {
    let lx = leg_of(from);
    let rx = call.role(from);
    let orig = sdp.bytes().clone();
    match call.neg[idx(lx)].on_message(rx, carrier, Some(sdp.clone()))? {
        Some(SdpRole::Offer) => {
            let out = offer_toward_other(call, ip, policies, from, carrier, &sdp)?;
            call.last[idx(lx)] = Some((orig, out.clone()));
            Ok(out)
        }
        Some(SdpRole::Answer) => {
            let out = answer_toward_other(call, ip, now, from, carrier, &sdp)?;
            call.last[idx(lx)] = Some((orig, out.clone()));
            Ok(out)
        }
        None => match &call.last[idx(lx)] {
            // The same body again (an answer repeated in the 2xx): the same rewrite.
            Some((o, w)) if *o == orig => Ok(w.clone()),
            _ => Err(SdpError::UnexpectedSdp),
        },
    }
}

/// `from` made an offer (already recorded in its leg's negotiation): check it against its leg's
/// SRTP mode, filter codecs, point it at our other leg and record it there.
fn offer_toward_other(
    call: &mut Call,
    ip: IpAddr,
    policies: &[CodecPolicy; 2],
    from: Side,
    carrier: Carrier,
    sdp: &Sdp,
) -> Result<Vec<u8>, SdpError> {
    let lx = leg_of(from);
    let ly = lx.other();
    let rx = call.role(from);
    let undo = |call: &mut Call| {
        // Take the offer back out of X's negotiation: the request is refused.
        let _ = call.neg[idx(lx)].on_message(rx.other(), Carrier::Failure, None);
    };
    let fx = filter_offer(sdp, &policies[idx(lx)]);
    let fy = filter_offer(sdp, &policies[idx(ly)]);
    let (fx, fy) = match (fx, fy) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            undo(call);
            return Err(e);
        }
    };
    // The stream we carry: the one anchored before (a re-offer), else the first active RTP
    // m-line with a common codec.
    let mut chosen = None;
    let mut keep: Vec<Option<Vec<u8>>> = Vec::with_capacity(sdp.media().len());
    for (i, m) in sdp.media().iter().enumerate() {
        let k = match (fx.get(i).cloned().flatten(), fy.get(i).cloned().flatten()) {
            (None, None) => None,
            (Some(a), None) | (None, Some(a)) => Some(a),
            (Some(a), Some(b)) => Some(a.into_iter().filter(|p| b.contains(p)).collect()),
        };
        let has_codec = m.proto().is_rtp()
            && !m.is_rejected()
            && k.as_ref()
                .map_or_else(|| m.payload_types(), |v: &Vec<u8>| v.clone())
                .iter()
                .any(|pt| m.encoding(*pt).is_some_and(|(n, _)| !is_auxiliary(n)));
        let wanted = match call.anchored {
            Some(a) => a == i,
            None => chosen.is_none(),
        };
        if has_codec && wanted && chosen.is_none() {
            chosen = Some(i);
        }
        keep.push(k);
    }
    let Some(chosen) = chosen else {
        undo(call);
        return Err(SdpError::NoCommonCodec);
    };
    let ep_x = match Endpoint::from_sdp(sdp, chosen) {
        Some(e) => e,
        None => {
            undo(call);
            return Err(SdpError::NoCommonCodec);
        }
    };
    // SRTP rules of X's leg.
    let mode_x = call.modes[idx(lx)];
    let secure = ep_x.proto.is_secure();
    if ep_x.proto.is_dtls()
        || (secure && (mode_x == SrtpMode::Off || pick_crypto(&ep_x).is_none()))
        || (mode_x == SrtpMode::Required && pick_crypto(&ep_x).is_none())
    {
        undo(call);
        return Err(if ep_x.requires_mki {
            SdpError::MkiRequired { index: chosen }
        } else {
            SdpError::InvalidCrypto
        });
    }
    call.anchored = Some(chosen);
    // Early media from X may flow as soon as Y answers: X's address is known now.
    if let Some((rtp, rtcp)) = endpoint_addrs(&ep_x, false) {
        let _ = call.session.set_remote(lx, rtp, rtcp);
    }
    let local = call.session.local(ly);
    let mode_y = call.modes[idx(ly)];
    let crypto = match mode_y {
        SrtpMode::Off => None,
        _ => CryptoLine::new(1, CryptoSuite::AesCm128HmacSha1_80, call.keys[idx(ly)]).ok(),
    };
    let media = sdp
        .media()
        .iter()
        .enumerate()
        .map(|(i, m)| MediaRewrite {
            port: if i == chosen { local.rtp.port() } else { 0 },
            rtcp_port: local.rtcp.map(|a| a.port()),
            profile: if mode_y == SrtpMode::Required {
                Profile::Srtp
            } else {
                Profile::Rtp
            },
            crypto: crypto.clone(),
            keep_formats: if i == chosen {
                keep.get(i).cloned().flatten()
            } else if m.is_rejected() {
                None
            } else {
                Some(Vec::new())
            },
        })
        .collect();
    let rw = Rewrite {
        connection: ip,
        media,
        strip_ice: true,
        origin: Some(OriginRewrite {
            session_version: None,
            address: Some(ip),
        }),
    };
    let out = match rewrite(sdp, &rw).and_then(|o| Sdp::parse(&o).map(|s| (o, s))) {
        Ok(x) => x,
        Err(e) => {
            undo(call);
            return Err(e);
        }
    };
    if let Err(e) = call.neg[idx(ly)].on_message(rx, carrier, Some(out.1)) {
        undo(call);
        return Err(e);
    }
    Ok(out.0)
}

/// `from` answered our offer (recorded in its leg's negotiation): key and address its leg, then
/// answer the other side's pending offer with our other leg.
fn answer_toward_other(
    call: &mut Call,
    ip: IpAddr,
    now: Instant,
    from: Side,
    carrier: Carrier,
    sdp: &Sdp,
) -> Result<Vec<u8>, SdpError> {
    let lx = leg_of(from);
    let ly = lx.other();
    let rx = call.role(from);
    let ry = rx.other();
    let chosen = call.anchored.ok_or(SdpError::UnexpectedSdp)?;
    // Leg X from its answer.
    let sx = call.neg[idx(lx)]
        .streams()
        .into_iter()
        .find(|s| s.index == chosen)
        .ok_or(SdpError::UnexpectedSdp)?;
    let ep_x = sx.endpoint(rx).clone();
    if !sx.rejected {
        if let Some((rtp, rtcp)) = endpoint_addrs(&ep_x, sx.rtcp_mux) {
            let _ = call.session.set_remote(lx, rtp, rtcp);
        }
    }
    if sx.srtp {
        if let Some((_, suite, key)) = pick_crypto(&ep_x) {
            let params = SrtpParams {
                suite,
                local_key_salt: call.keys[idx(lx)],
                remote_key_salt: key,
            };
            match call.session.set_srtp(lx, params) {
                Ok(true) => debug!(leg = ?lx, "SRTP keyed"),
                Ok(false) => {}
                Err(e) => warn!(error = %e, "SRTP setup failed"),
            }
        }
    } else {
        if call.modes[idx(lx)] == SrtpMode::Required && !sx.rejected {
            // A response cannot be refused: the media stays plain and we say so.
            warn!(
                side = side_of(lx).as_str(),
                "SRTP required but the answer has no usable crypto"
            );
        }
        let _ = call.session.clear_srtp(lx);
    }
    // The other side's offer: pending in its leg, or already answered in an earlier 18x (this
    // is that answer again or a changed one, RFC 3261 §13.2.1, RFC 6337 §3.1).
    let y_offer = match call.neg[idx(ly)].pending_offer() {
        Some((_, o)) => o.clone(),
        None => match call.neg[idx(ly)].current() {
            Some(c) if c.offerer == ry => c.offer.clone(),
            _ => return Err(SdpError::UnexpectedSdp),
        },
    };
    let ep_yo = Endpoint::from_sdp(&y_offer, chosen).ok_or(SdpError::UnexpectedSdp)?;
    let mode_y = call.modes[idx(ly)];
    let y_crypto = if mode_y == SrtpMode::Off {
        None
    } else {
        pick_crypto(&ep_yo)
    };
    let local = call.session.local(ly);
    let crypto = y_crypto
        .as_ref()
        .and_then(|(c, _, _)| CryptoLine::new(c.tag, c.suite.clone(), call.keys[idx(ly)]).ok());
    let profile = if ep_yo.proto.is_secure() {
        Profile::Srtp
    } else {
        Profile::Rtp
    };
    // Only the anchored m-line is ours; the others were rejected in our offer and stay so.
    let media = (0..sdp.media().len())
        .map(|i| MediaRewrite {
            port: if i == chosen { local.rtp.port() } else { 0 },
            rtcp_port: local.rtcp.map(|a| a.port()),
            profile,
            crypto: crypto.clone(),
            keep_formats: None,
        })
        .collect();
    let rw = Rewrite {
        connection: ip,
        media,
        strip_ice: true,
        origin: Some(OriginRewrite {
            session_version: None,
            address: Some(ip),
        }),
    };
    let out = rewrite(sdp, &rw)?;
    let parsed = Sdp::parse(&out)?;
    call.neg[idx(ly)].on_message(rx, carrier, Some(parsed))?;
    // Leg Y from its offer, now that the exchange is complete.
    let sy = call.neg[idx(ly)]
        .streams()
        .into_iter()
        .find(|s| s.index == chosen);
    if let Some(sy) = &sy {
        let ep_y = sy.endpoint(ry);
        if let Some((rtp, rtcp)) = endpoint_addrs(ep_y, sy.rtcp_mux) {
            let _ = call.session.set_remote(ly, rtp, rtcp);
        }
        match (&y_crypto, sy.srtp) {
            (Some((_, suite, key)), true) => {
                let params = SrtpParams {
                    suite: *suite,
                    local_key_salt: call.keys[idx(ly)],
                    remote_key_salt: *key,
                };
                match call.session.set_srtp(ly, params) {
                    Ok(true) => debug!(leg = ?ly, "SRTP keyed"),
                    Ok(false) => {}
                    Err(e) => warn!(error = %e, "SRTP setup failed"),
                }
            }
            _ => {
                let _ = call.session.clear_srtp(ly);
            }
        }
        let _ = call.session.set_hold(ly, silent(ep_y), now);
    }
    let _ = call.session.set_hold(lx, silent(&ep_x), now);
    debug!(leg_x = ?side_of(lx), "offer/answer complete");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
    const KEY2: &str = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk";

    fn anchor(min: u16, max: u16, cloud: SrtpMode) -> Anchor {
        let settings = MediaSettings {
            ip: LO,
            port_min: min,
            port_max: max,
            media_timeout: Duration::from_secs(60),
            relay_workers: Some(1),
            gateway_codecs: vec!["PCMU".into(), "PCMA".into()],
            cloud_codecs: vec!["PCMU".into(), "PCMA".into(), "G722".into()],
        };
        let gws = vec![(
            "gw1.lab.example".to_owned(),
            Some("127.0.0.2".parse().unwrap()),
            SrtpMode::Off,
        )];
        Anchor::new(settings, cloud, gws).expect("anchor")
    }

    fn from_gw() -> Hop<'static> {
        Hop {
            from: Side::Gateway,
            from_ip: "127.0.0.2".parse().unwrap(),
            to_name: "sip.cloud.lab.example",
            to_ip: "127.0.0.3".parse().unwrap(),
        }
    }

    fn from_cloud() -> Hop<'static> {
        Hop {
            from: Side::Cloud,
            from_ip: "127.0.0.3".parse().unwrap(),
            to_name: "gw1.lab.example",
            to_ip: "127.0.0.2".parse().unwrap(),
        }
    }

    fn sdp(host: &str, port: u16, media: &str) -> String {
        format!(
            "v=0\r\no=ua 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n\
             m=audio {port} {media}"
        )
    }

    fn gw_offer(port: u16) -> String {
        sdp(
            "127.0.0.2",
            port,
            "RTP/AVP 0 8 18 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:18 G729/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n",
        )
    }

    fn cloud_sdp(port: u16, proto: &str, key: &str, extra: &str) -> String {
        sdp(
            "127.0.0.3",
            port,
            &format!(
                "{proto} 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
                 a=ice-ufrag:Ab12\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
                 a=candidate:1 1 UDP 2130706431 127.0.0.3 {port} typ host\r\n\
                 a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n{extra}"
            ),
        )
    }

    fn msg(
        start: &str,
        call: &str,
        from_tag: &str,
        to_tag: Option<&str>,
        cseq: &str,
        body: Option<&str>,
    ) -> Message {
        let to = match to_tag {
            Some(t) => format!("<sip:+14255550100@lab.example>;tag={t}"),
            None => "<sip:+14255550100@lab.example>".into(),
        };
        let (ct, b) = match body {
            Some(b) => ("Content-Type: application/sdp\r\n", b),
            None => ("", ""),
        };
        let text = format!(
            "{start}\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-{call}-{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:gw@lab.example>;tag={from_tag}\r\nTo: {to}\r\n\
             Call-ID: {call}\r\nCSeq: {cseq}\r\nContact: <sip:ua@127.0.0.2:5060>\r\n{ct}\
             Content-Length: {}\r\n\r\n{b}",
            b.len()
        )
        .replacen(
            &format!("-{cseq}\r\n"),
            &format!("-{}\r\n", cseq.replace(' ', "")),
            1,
        );
        Message::parse(Bytes::from(text)).expect("test message parses")
    }

    fn invite(call: &str, body: Option<&str>) -> Message {
        msg(
            "INVITE sip:+14255550100@lab.example SIP/2.0",
            call,
            "c1",
            None,
            "1 INVITE",
            body,
        )
    }

    fn resp(status: &str, call: &str, cseq: &str, body: Option<&str>) -> Message {
        msg(
            &format!("SIP/2.0 {status}"),
            call,
            "c1",
            Some("u2"),
            cseq,
            body,
        )
    }

    fn body_of(m: &Message) -> String {
        String::from_utf8_lossy(m.body()).into_owned()
    }

    fn dialog() -> DialogInfo {
        DialogInfo {
            caller_contact: "sip:ua@127.0.0.2:5060".into(),
            callee_contact: "sip:peer@127.0.0.3:5060".into(),
            routes_to_callee: vec![],
            routes_to_caller: vec![],
            caller_from: "<sip:gw@lab.example>;tag=c1".into(),
            callee_to: "<sip:+14255550100@lab.example>;tag=u2".into(),
        }
    }

    /// An established gateway → cloud call; returns the INVITE.
    fn establish(a: &mut Anchor, call: &str, now: Instant) -> Message {
        let inv = invite(call, Some(&gw_offer(20000)));
        a.on_request(now, &inv, from_gw())
            .expect("offer")
            .expect("rewritten");
        let ok = resp(
            "200 OK",
            call,
            "1 INVITE",
            Some(&cloud_sdp(30000, "RTP/AVP", KEY, "")),
        );
        a.on_response(now, &inv, &ok, Side::Cloud, Some(dialog()))
            .expect("answer rewritten");
        inv
    }

    #[test]
    fn offer_and_answer_are_anchored_with_opportunistic_srtp_toward_the_cloud() {
        let mut a = anchor(42000, 42099, SrtpMode::Optional);
        let now = Instant::now();
        let inv = invite("c-1", Some(&gw_offer(20000)));
        let out = a.on_request(now, &inv, from_gw()).unwrap().unwrap();
        let s = a.session("c-1").unwrap();
        let (la, lb) = (s.local(Leg::A), s.local(Leg::B));
        let body = body_of(&out);
        assert!(body.contains("c=IN IP4 127.0.0.1\r\n"), "{body}");
        assert!(
            !body.contains("127.0.0.2"),
            "gateway address hidden: {body}"
        );
        // G.729 is not allowed on the gateway side; telephone-event passes (RFC 4733).
        assert!(
            body.contains(&format!("m=audio {} RTP/AVP 0 8 101\r\n", lb.rtp.port())),
            "{body}"
        );
        // RFC 8643: RTP/AVP with our crypto line toward an "optional" peer.
        assert!(
            body.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
            "{body}"
        );
        assert_eq!(
            out.content_length(),
            Some(out.body().len()),
            "Content-Length follows the new body"
        );

        let ok = resp(
            "200 OK",
            "c-1",
            "1 INVITE",
            Some(&cloud_sdp(30000, "RTP/AVP", KEY, "a=rtcp-mux\r\n")),
        );
        let back = a
            .on_response(now, &inv, &ok, Side::Cloud, Some(dialog()))
            .unwrap();
        let body = body_of(&back);
        assert!(
            body.contains(&format!("m=audio {} RTP/AVP 0 101\r\n", la.rtp.port())),
            "{body}"
        );
        assert!(
            !body.contains("a=crypto"),
            "no crypto toward the gateway: {body}"
        );
        assert!(
            !body.contains("ice-") && !body.contains("candidate"),
            "ICE stripped: {body}"
        );
        assert!(!body.contains("127.0.0.3"), "{body}");
        let snap = a.session("c-1").unwrap().snapshot();
        assert!(snap.b.srtp && !snap.a.srtp, "SRTP on the cloud leg only");
        assert_eq!(snap.a.remote_rtp, Some("127.0.0.2:20000".parse().unwrap()));
        assert_eq!(snap.b.remote_rtp, Some("127.0.0.3:30000".parse().unwrap()));
        assert_eq!(
            a.session("c-1").unwrap().state(),
            crate::media::SessionState::Active
        );
    }

    #[test]
    fn optional_peer_answering_plain_rtp_gets_plain_rtp() {
        let mut a = anchor(42100, 42199, SrtpMode::Optional);
        let now = Instant::now();
        let inv = invite("c-2", Some(&gw_offer(20000)));
        a.on_request(now, &inv, from_gw()).unwrap().unwrap();
        let plain = sdp("127.0.0.3", 30000, "RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n");
        let ok = resp("200 OK", "c-2", "1 INVITE", Some(&plain));
        a.on_response(now, &inv, &ok, Side::Cloud, None).unwrap();
        assert!(!a.session("c-2").unwrap().snapshot().b.srtp);
    }

    #[test]
    fn required_peer_gets_savp_and_refuses_plain_offers() {
        let mut a = anchor(42200, 42299, SrtpMode::Required);
        let now = Instant::now();
        let inv = invite("c-3", Some(&gw_offer(20000)));
        let out = a.on_request(now, &inv, from_gw()).unwrap().unwrap();
        assert!(
            body_of(&out).contains(" RTP/SAVP 0 8 101\r\n"),
            "{}",
            body_of(&out)
        );
        let ok = resp(
            "200 OK",
            "c-3",
            "1 INVITE",
            Some(&cloud_sdp(30000, "RTP/SAVP", KEY, "")),
        );
        a.on_response(now, &inv, &ok, Side::Cloud, None).unwrap();
        assert!(a.session("c-3").unwrap().snapshot().b.srtp);
        // The cloud calling in with plain RTP: 488, and its ports go back at once.
        let full = a.pool().available();
        let plain = sdp("127.0.0.3", 30000, "RTP/AVP 0\r\n");
        let inv = invite("c-4", Some(&plain));
        let e = a.on_request(now, &inv, from_cloud()).unwrap_err();
        assert_eq!(e.status, 488);
        assert_eq!(a.pool().available(), full);
    }

    #[test]
    fn cloud_offer_with_savp_is_answered_with_our_key_and_relayed_as_plain_rtp() {
        let mut a = anchor(42300, 42399, SrtpMode::Required);
        let now = Instant::now();
        let offer = cloud_sdp(30000, "RTP/SAVP", KEY, "");
        let inv = invite("c-5", Some(&offer));
        let out = a.on_request(now, &inv, from_cloud()).unwrap().unwrap();
        let body = body_of(&out);
        assert!(
            body.contains(" RTP/AVP 0 101\r\n") && !body.contains("crypto"),
            "{body}"
        );
        let ok = resp(
            "200 OK",
            "c-5",
            "1 INVITE",
            Some(&sdp("127.0.0.2", 20000, "RTP/AVP 0\r\n")),
        );
        let back = a.on_response(now, &inv, &ok, Side::Gateway, None).unwrap();
        let body = body_of(&back);
        assert!(body.contains(" RTP/SAVP 0\r\n"), "{body}");
        assert!(
            body.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
            "{body}"
        );
        assert!(!body.contains(KEY), "our own key, not theirs: {body}");
        assert!(a.session("c-5").unwrap().snapshot().b.srtp);
    }

    #[test]
    fn no_common_codec_and_mki_only_crypto_are_refused_with_488() {
        let mut a = anchor(42400, 42499, SrtpMode::Optional);
        let now = Instant::now();
        let full = a.pool().available();
        let g729 = sdp(
            "127.0.0.2",
            20000,
            "RTP/AVP 18 101\r\na=rtpmap:101 telephone-event/8000\r\n",
        );
        let e = a
            .on_request(now, &invite("c-6", Some(&g729)), from_gw())
            .unwrap_err();
        assert_eq!(e.status, 488);
        let mki = sdp(
            "127.0.0.3",
            30000,
            &format!("RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4\r\n"),
        );
        let e = a
            .on_request(now, &invite("c-7", Some(&mki)), from_cloud())
            .unwrap_err();
        assert_eq!(e.status, 488);
        assert_eq!(a.pool().available(), full, "refused offers hold no ports");
        assert_eq!(a.active_calls(), 0);
        assert_eq!(a.stats.sdp_refused, 2);
    }

    #[test]
    fn multipart_bodies_are_refused_with_415() {
        let mut a = anchor(43500, 43599, SrtpMode::Optional);
        let body = format!(
            "--b1\r\nContent-Type: application/sdp\r\n\r\n{}\r\n--b1--\r\n",
            gw_offer(20000)
        );
        let text = String::from_utf8_lossy(invite("c-24", Some(&body)).as_bytes()).replace(
            "Content-Type: application/sdp",
            "Content-Type: multipart/mixed;boundary=b1",
        );
        let inv = Message::parse(Bytes::from(text)).unwrap();
        let e = a.on_request(Instant::now(), &inv, from_gw()).unwrap_err();
        assert_eq!(e.status, 415);
        assert_eq!(a.active_calls(), 0);
    }

    #[test]
    fn exhausted_ports_refuse_the_new_call_with_503_and_keep_the_old_one() {
        // Two pairs: one call (two legs) fills the pool.
        let mut a = anchor(42500, 42503, SrtpMode::Optional);
        let now = Instant::now();
        establish(&mut a, "c-8", now);
        let e = a
            .on_request(now, &invite("c-9", Some(&gw_offer(20002))), from_gw())
            .unwrap_err();
        assert_eq!(e.status, 503);
        assert_eq!(a.stats.ports_exhausted, 1);
        assert!(a.session("c-8").is_some(), "the existing call is untouched");
    }

    #[test]
    fn late_offer_in_200_answer_in_ack() {
        let mut a = anchor(42600, 42699, SrtpMode::Optional);
        let now = Instant::now();
        let inv = invite("c-10", None);
        assert!(a.on_request(now, &inv, from_gw()).unwrap().is_none());
        assert!(a.session("c-10").is_some(), "ports held from the INVITE");
        let ok = resp(
            "200 OK",
            "c-10",
            "1 INVITE",
            Some(&cloud_sdp(30000, "RTP/AVP", KEY, "")),
        );
        let out = a
            .on_response(now, &inv, &ok, Side::Cloud, Some(dialog()))
            .unwrap();
        let lb = a.session("c-10").unwrap().local(Leg::B).rtp.port();
        let la = a.session("c-10").unwrap().local(Leg::A).rtp.port();
        let body = body_of(&out);
        assert!(
            body.contains(&format!("m=audio {la} RTP/AVP 0 101")) && !body.contains("crypto"),
            "{body}"
        );
        let ack = msg(
            "ACK sip:peer@127.0.0.3 SIP/2.0",
            "c-10",
            "c1",
            Some("u2"),
            "1 ACK",
            Some(&sdp("127.0.0.2", 20000, "RTP/AVP 0\r\n")),
        );
        let out = a.on_request(now, &ack, from_gw()).unwrap().unwrap();
        let body = body_of(&out);
        assert!(body.contains(&format!("m=audio {lb} RTP/AVP 0")), "{body}");
        assert!(
            body.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
            "{body}"
        );
        let snap = a.session("c-10").unwrap().snapshot();
        assert!(snap.b.srtp);
        assert_eq!(snap.a.remote_rtp, Some("127.0.0.2:20000".parse().unwrap()));
    }

    #[test]
    fn hold_and_resume_by_reinvite_and_rekey_on_a_new_crypto_line() {
        let mut a = anchor(42700, 42799, SrtpMode::Optional);
        let now = Instant::now();
        establish(&mut a, "c-11", now);
        let reinv = |body: &str, n: u32| {
            msg(
                "INVITE sip:ua@127.0.0.1:5068 SIP/2.0",
                "c-11",
                "c1",
                Some("u2"),
                &format!("{n} INVITE"),
                Some(body),
            )
        };
        // The gateway holds: sendonly out, recvonly back. The cloud leg is then silent.
        let hold = gw_offer(20000)
            .replace("a=fmtp:101 0-15\r\n", "a=fmtp:101 0-15\r\na=sendonly\r\n")
            .replace("o=ua 1 1", "o=ua 1 2");
        let r = reinv(&hold, 2);
        let out = a.on_request(now, &r, from_gw()).unwrap().unwrap();
        assert!(body_of(&out).contains("a=sendonly"), "{}", body_of(&out));
        let ok = resp(
            "200 OK",
            "c-11",
            "2 INVITE",
            Some(&cloud_sdp(30000, "RTP/AVP", KEY, "a=recvonly\r\n")),
        );
        let back = a.on_response(now, &r, &ok, Side::Cloud, None).unwrap();
        assert!(body_of(&back).contains("a=recvonly"));
        let snap = a.session("c-11").unwrap().snapshot();
        assert!(snap.b.on_hold && !snap.a.on_hold, "{snap:?}");
        // Resume with a new port and a new key from the cloud.
        let r = reinv(&gw_offer(20000).replace("o=ua 1 1", "o=ua 1 3"), 3);
        a.on_request(now, &r, from_gw()).unwrap().unwrap();
        let ok = resp(
            "200 OK",
            "c-11",
            "3 INVITE",
            Some(&cloud_sdp(30010, "RTP/AVP", KEY2, "")),
        );
        a.on_response(now, &r, &ok, Side::Cloud, None).unwrap();
        let snap = a.session("c-11").unwrap().snapshot();
        assert!(!snap.b.on_hold && snap.b.srtp);
        assert_eq!(snap.b.remote_rtp, Some("127.0.0.3:30010".parse().unwrap()));
        // A failed re-offer leaves the session as it was.
        let r = reinv(&gw_offer(20020).replace("o=ua 1 1", "o=ua 1 4"), 4);
        a.on_request(now, &r, from_gw()).unwrap().unwrap();
        let busy = resp("488 Not Acceptable Here", "c-11", "4 INVITE", None);
        assert!(a.on_response(now, &r, &busy, Side::Cloud, None).is_none());
        assert!(
            a.session("c-11").is_some(),
            "a failed re-INVITE keeps the call"
        );
        let r = reinv(&gw_offer(20000).replace("o=ua 1 1", "o=ua 1 5"), 5);
        assert!(
            a.on_request(now, &r, from_gw()).unwrap().is_some(),
            "no offer left pending"
        );
    }

    #[test]
    fn release_exactly_once_and_no_port_leak_after_1000_calls() {
        let mut a = anchor(42800, 42819, SrtpMode::Optional);
        let capacity = a.pool().capacity();
        let now = Instant::now();
        for i in 0..1000 {
            let call = format!("leak-{i}");
            let inv = establish(&mut a, &call, now);
            match i % 4 {
                0 => {
                    let bye = msg(
                        "BYE sip:peer@127.0.0.3 SIP/2.0",
                        &call,
                        "c1",
                        Some("u2"),
                        "2 BYE",
                        None,
                    );
                    a.on_request(now, &bye, from_gw()).unwrap();
                    // The 200 to the BYE, or a second BYE from the other side: nothing left.
                    let bye2 = msg(
                        "BYE sip:ua@127.0.0.2 SIP/2.0",
                        &call,
                        "u2",
                        Some("c1"),
                        "1 BYE",
                        None,
                    );
                    a.on_request(now, &bye2, from_cloud()).unwrap();
                }
                1 => {
                    // Refused before answer (a new call reusing nothing).
                    let c2 = format!("busy-{i}");
                    a.release(&call, "test");
                    let inv2 = invite(&c2, Some(&gw_offer(20000)));
                    a.on_request(now, &inv2, from_gw()).unwrap();
                    let busy = resp("486 Busy Here", &c2, "1 INVITE", None);
                    a.on_response(now, &inv2, &busy, Side::Cloud, None);
                }
                2 => {
                    // CANCEL: the proxy answers 487 itself.
                    a.release(&call, "test");
                    let c2 = format!("cancel-{i}");
                    let inv2 = invite(&c2, Some(&gw_offer(20000)));
                    a.on_request(now, &inv2, from_gw()).unwrap();
                    a.on_local_final(&inv2, 487, Side::Cloud);
                }
                _ => {
                    assert!(a.release(&call, "test"));
                    assert!(!a.release(&call, "test"), "second release is a no-op");
                    let _ = inv;
                }
            }
        }
        assert_eq!(a.active_calls(), 0);
        assert_eq!(a.pool().available(), capacity, "pool back to full");
        assert_eq!(a.stats.sessions_created, a.stats.sessions_released);
        assert_eq!(a.stats.sessions_created, 1500);
    }

    #[test]
    fn media_timeout_releases_once_and_returns_a_bye_for_each_leg() {
        let mut a = anchor(42900, 42999, SrtpMode::Optional);
        let capacity = a.pool().capacity();
        let t0 = Instant::now();
        establish(&mut a, "c-12", t0);
        // Another call still ringing is not supervised.
        a.on_request(t0, &invite("c-13", Some(&gw_offer(20000))), from_gw())
            .unwrap();
        let first = a.next_deadline().expect("supervision scheduled");
        assert!(first <= t0 + Duration::from_secs(1));
        assert!(a.sweep(t0 + Duration::from_secs(30)).is_empty(), "not yet");
        let out = a.sweep(t0 + Duration::from_secs(61));
        assert_eq!(out.len(), 1);
        let t = &out[0];
        assert_eq!(t.call_id, "c-12");
        let [to_callee, to_caller] = &t.byes;
        assert_eq!(to_callee.side, Side::Cloud);
        assert_eq!(to_callee.request_uri, "sip:peer@127.0.0.3:5060");
        assert_eq!(to_callee.cseq, 2, "above the caller's INVITE CSeq");
        assert!(to_callee.from.contains("tag=c1") && to_callee.to.contains("tag=u2"));
        assert_eq!(to_caller.side, Side::Gateway);
        assert_eq!(to_caller.request_uri, "sip:ua@127.0.0.2:5060");
        assert!(to_caller.from.contains("tag=u2") && to_caller.to.contains("tag=c1"));
        assert_eq!(a.stats.media_timeouts, 1);
        assert!(a.session("c-12").is_none());
        assert!(
            a.sweep(t0 + Duration::from_secs(200)).is_empty(),
            "exactly once"
        );
        assert_eq!(a.stats.media_timeouts, 1);
        a.release("c-13", "test");
        assert_eq!(a.pool().available(), capacity);
    }

    #[test]
    fn hold_on_both_legs_is_not_a_media_timeout() {
        let mut a = anchor(43000, 43099, SrtpMode::Optional);
        let t0 = Instant::now();
        establish(&mut a, "c-14", t0);
        let r = msg(
            "INVITE sip:ua@127.0.0.1:5068 SIP/2.0",
            "c-14",
            "c1",
            Some("u2"),
            "2 INVITE",
            Some(
                &gw_offer(20000)
                    .replace("o=ua 1 1", "o=ua 1 2")
                    .replace("a=fmtp:101 0-15\r\n", "a=fmtp:101 0-15\r\na=inactive\r\n"),
            ),
        );
        a.on_request(t0, &r, from_gw()).unwrap().unwrap();
        let ok = resp(
            "200 OK",
            "c-14",
            "2 INVITE",
            Some(&cloud_sdp(30000, "RTP/AVP", KEY, "a=inactive\r\n")),
        );
        a.on_response(t0, &r, &ok, Side::Cloud, None).unwrap();
        assert!(a.sweep(t0 + Duration::from_secs(600)).is_empty());
        assert!(a.session("c-14").is_some());
    }

    #[test]
    fn early_media_answer_in_183_repeated_in_200() {
        let mut a = anchor(43200, 43299, SrtpMode::Optional);
        let now = Instant::now();
        let inv = invite("c-20", Some(&gw_offer(20000)));
        a.on_request(now, &inv, from_gw()).unwrap().unwrap();
        let answer = cloud_sdp(30000, "RTP/AVP", KEY, "");
        let early = resp("183 Session Progress", "c-20", "1 INVITE", Some(&answer));
        let e = a.on_response(now, &inv, &early, Side::Cloud, None).unwrap();
        // Early media is relayed before the 2xx, but not supervised yet.
        let s = a.session("c-20").unwrap();
        assert!(s.snapshot().b.srtp);
        assert_eq!(s.idle_since(), None);
        let ok = resp("200 OK", "c-20", "1 INVITE", Some(&answer));
        let f = a
            .on_response(now, &inv, &ok, Side::Cloud, Some(dialog()))
            .unwrap();
        assert_eq!(e.body(), f.body(), "the same answer, the same rewrite");
        assert!(
            a.session("c-20").unwrap().idle_since().is_some(),
            "supervised from the 2xx"
        );
    }

    #[test]
    fn update_from_the_cloud_moves_its_port_and_is_answered_by_the_gateway() {
        let mut a = anchor(43300, 43399, SrtpMode::Optional);
        let now = Instant::now();
        establish(&mut a, "c-21", now);
        let la = a.session("c-21").unwrap().local(Leg::A).rtp.port();
        let lb = a.session("c-21").unwrap().local(Leg::B).rtp.port();
        let offer = cloud_sdp(31000, "RTP/AVP", KEY, "").replace("o=ua 1 1", "o=ua 1 2");
        let upd = msg(
            "UPDATE sip:gw@127.0.0.2:5060 SIP/2.0",
            "c-21",
            "u2",
            Some("c1"),
            "1 UPDATE",
            Some(&offer),
        );
        let out = a.on_request(now, &upd, from_cloud()).unwrap().unwrap();
        let body = body_of(&out);
        assert!(
            body.contains(&format!("m=audio {la} RTP/AVP 0 101")),
            "{body}"
        );
        assert!(!body.contains("crypto"), "{body}");
        let ok = msg(
            "SIP/2.0 200 OK",
            "c-21",
            "u2",
            Some("c1"),
            "1 UPDATE",
            Some(&sdp("127.0.0.2", 20000, "RTP/AVP 0\r\n").replace("o=ua 1 1", "o=ua 1 2")),
        );
        let back = a.on_response(now, &upd, &ok, Side::Gateway, None).unwrap();
        let body = body_of(&back);
        assert!(body.contains(&format!("m=audio {lb} RTP/AVP 0")), "{body}");
        assert!(
            body.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
            "{body}"
        );
        let snap = a.session("c-21").unwrap().snapshot();
        assert_eq!(snap.b.remote_rtp, Some("127.0.0.3:31000".parse().unwrap()));
        assert!(snap.b.srtp);
        // A crossing offer while this one is pending would be 491; here a new UPDATE is fine.
        let upd2 = msg(
            "UPDATE sip:gw@127.0.0.2:5060 SIP/2.0",
            "c-21",
            "u2",
            Some("c1"),
            "2 UPDATE",
            Some(&offer.replace("o=ua 1 2", "o=ua 1 3")),
        );
        a.on_request(now, &upd2, from_cloud()).unwrap().unwrap();
        let glare = msg(
            "UPDATE sip:peer@127.0.0.3 SIP/2.0",
            "c-21",
            "c1",
            Some("u2"),
            "3 UPDATE",
            Some(&gw_offer(20000).replace("o=ua 1 1", "o=ua 1 3")),
        );
        assert_eq!(
            a.on_request(now, &glare, from_gw()).unwrap_err().status,
            491
        );
    }

    #[test]
    fn a_gateway_with_srtp_required_gets_savp_from_the_anchor() {
        let settings = MediaSettings {
            ip: LO,
            port_min: 43400,
            port_max: 43499,
            media_timeout: Duration::from_secs(60),
            relay_workers: Some(1),
            gateway_codecs: vec!["PCMU".into()],
            cloud_codecs: vec!["PCMU".into()],
        };
        let gws = vec![(
            "gw1.lab.example".to_owned(),
            Some("127.0.0.2".parse().unwrap()),
            SrtpMode::Required,
        )];
        let mut a = Anchor::new(settings, SrtpMode::Off, gws).unwrap();
        let now = Instant::now();
        let plain = sdp("127.0.0.3", 30000, "RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n");
        let inv = invite("c-22", Some(&plain));
        let out = a.on_request(now, &inv, from_cloud()).unwrap().unwrap();
        let body = body_of(&out);
        assert!(
            body.contains(" RTP/SAVP 0\r\n") && body.contains("a=crypto:1 "),
            "{body}"
        );
        let ans = sdp(
            "127.0.0.2",
            20000,
            &format!("RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}\r\n"),
        );
        let ok = resp("200 OK", "c-22", "1 INVITE", Some(&ans));
        let back = a.on_response(now, &inv, &ok, Side::Gateway, None).unwrap();
        let body = body_of(&back);
        assert!(
            body.contains(" RTP/AVP 0\r\n") && !body.contains("crypto"),
            "{body}"
        );
        let snap = a.session("c-22").unwrap().snapshot();
        assert!(snap.a.srtp && !snap.b.srtp, "SRTP on the gateway leg only");
        // A gateway with "required" offering plain RTP is refused.
        let e = a
            .on_request(now, &invite("c-23", Some(&gw_offer(20000))), from_gw())
            .unwrap_err();
        assert_eq!(e.status, 488);
    }

    /// The core with the anchor, sans IO: the SDP crosses rewritten, a second call finds no
    /// ports (503), and the media timeout makes the core send a BYE along each leg's route set.
    mod with_core {
        use super::*;
        use crate::config::Transport;
        use crate::flow::Transmit;
        use crate::flow::{Flow, Inbound};
        use crate::proxy::core::Core;
        use crate::routing::RoutingTable;
        use std::path::Path;
        use std::sync::Arc;

        const LAB: &str = include_str!("../../config/sipedge.toml");

        fn core() -> Core {
            let text = LAB
                .replace("media_timeout_s = 60", "media_timeout_s = 2")
                .replace("port_min = 49152", "port_min = 43100")
                .replace("port_max = 57500", "port_max = 43103");
            let cfg = Config::from_toml(Path::new("config/sipedge.toml"), &text).unwrap();
            let table = RoutingTable::build(&cfg, &|n| cfg.static_host(n)).unwrap();
            let mut local = std::collections::HashMap::new();
            local.insert(
                (Side::Gateway, Transport::Udp),
                "127.0.0.1:5068".parse().unwrap(),
            );
            local.insert(
                (Side::Cloud, Transport::Udp),
                "127.0.0.1:5062".parse().unwrap(),
            );
            let anchor = Anchor::from_config(&cfg).unwrap().unwrap();
            let dir = Arc::new(arc_swap::ArcSwap::from_pointee(
                crate::routing::Directory::from_config(&cfg),
            ));
            let mut core = Core::new(std::time::Instant::now(), Arc::new(cfg), table, local, dir);
            core.set_anchor(anchor);
            core
        }

        fn flow(side: Side, remote: &str) -> Flow {
            Flow {
                side,
                transport: Transport::Udp,
                local: if side == Side::Gateway {
                    "127.0.0.1:5068".parse().unwrap()
                } else {
                    "127.0.0.1:5062".parse().unwrap()
                },
                remote: remote.parse().unwrap(),
                conn: None,
                identity: None,
            }
        }

        fn drain(core: &mut Core) -> Vec<(Transmit, String)> {
            std::iter::from_fn(|| core.poll_transmit())
                .map(|t| {
                    let s = String::from_utf8_lossy(&t.data).into_owned();
                    (t, s)
                })
                .collect()
        }

        fn header_of<'a>(m: &'a str, name: &str) -> Option<&'a str> {
            m.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        }

        fn gw_invite(call: &str) -> Message {
            let body = gw_offer(20000);
            let text = format!(
                "INVITE sip:+14255550100@mediation.lab.example SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-{call};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:gw@lab.example>;tag=c1\r\n\
                 To: <sip:+14255550100@lab.example>\r\nCall-ID: {call}\r\nCSeq: 1 INVITE\r\n\
                 Contact: <sip:gw@127.0.0.2:5060>\r\nContent-Type: application/sdp\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            Message::parse(Bytes::from(text)).unwrap()
        }

        #[test]
        fn anchored_call_503_on_exhaustion_and_media_timeout_byes() {
            let mut core = core();
            let t0 = Instant::now();
            core.handle_inbound(
                t0,
                Inbound::Message(flow(Side::Gateway, "127.0.0.2:5060"), gw_invite("k-1")),
            );
            let out = drain(&mut core);
            let (_, fwd) = out
                .iter()
                .find(|(t, s)| t.side == Side::Cloud && s.starts_with("INVITE"))
                .expect("INVITE forwarded to the cloud");
            assert!(fwd.contains("c=IN IP4 127.0.0.1\r\n"), "{fwd}");
            assert!(fwd.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80"), "{fwd}");

            // The peer answers through a proxy of its own that record-routed above us.
            let mut ok = String::from("SIP/2.0 200 OK\r\n");
            for l in fwd.lines() {
                let lower = l.to_ascii_lowercase();
                if ["via:", "record-route:", "from:", "call-id:", "cseq:"]
                    .iter()
                    .any(|p| lower.starts_with(p))
                {
                    if lower.starts_with("record-route:") && !ok.contains("Record-Route") {
                        ok.push_str("Record-Route: <sip:127.0.0.3:5070;lr>\r\n");
                    }
                    ok.push_str(l);
                    ok.push_str("\r\n");
                }
                if lower.starts_with("to:") {
                    ok.push_str(&format!("{l};tag=u2\r\n"));
                }
            }
            let answer = cloud_sdp(30000, "RTP/AVP", KEY, "");
            ok.push_str(&format!(
                "Contact: <sip:peer@127.0.0.3:5060>\r\nContent-Type: application/sdp\r\n\
                 Content-Length: {}\r\n\r\n{answer}",
                answer.len()
            ));
            core.handle_inbound(
                t0,
                Inbound::Message(
                    flow(Side::Cloud, "127.0.0.3:5060"),
                    Message::parse(Bytes::from(ok)).unwrap(),
                ),
            );
            let out = drain(&mut core);
            let (_, up) = out
                .iter()
                .find(|(t, s)| t.side == Side::Gateway && s.starts_with("SIP/2.0 200"))
                .expect("200 relayed to the gateway");
            assert!(
                !up.contains("a=crypto") && !up.contains("127.0.0.3 "),
                "{up}"
            );

            // The pool held one call: the next INVITE gets 503.
            core.handle_inbound(
                t0,
                Inbound::Message(flow(Side::Gateway, "127.0.0.2:5060"), gw_invite("k-2")),
            );
            let out = drain(&mut core);
            assert!(
                out.iter().any(|(_, s)| s.starts_with("SIP/2.0 503")),
                "{out:?}"
            );
            assert!(!out.iter().any(|(t, _)| t.side == Side::Cloud));

            // No media at all: after media_timeout_s = 2 the core hangs up both legs.
            let due = core.poll_timeout().expect("a deadline");
            assert!(due <= t0 + Duration::from_secs(1));
            core.handle_timeout(t0 + Duration::from_secs(3));
            let out = drain(&mut core);
            let byes: Vec<_> = out.iter().filter(|(_, s)| s.starts_with("BYE")).collect();
            assert_eq!(byes.len(), 2, "{out:?}");
            let (tc, to_cloud) = byes.iter().find(|(t, _)| t.side == Side::Cloud).unwrap();
            assert_eq!(
                tc.remote,
                "127.0.0.3:5070".parse().unwrap(),
                "via the peer's proxy"
            );
            assert!(
                to_cloud.starts_with("BYE sip:peer@127.0.0.3:5060 SIP/2.0"),
                "{to_cloud}"
            );
            assert!(
                to_cloud.contains("Route: <sip:127.0.0.3:5070;lr>\r\n"),
                "{to_cloud}"
            );
            assert!(to_cloud.contains("CSeq: 2 BYE"), "{to_cloud}");
            assert!(to_cloud.contains(MEDIA_TIMEOUT_REASON), "{to_cloud}");
            let (tg, to_gw) = byes.iter().find(|(t, _)| t.side == Side::Gateway).unwrap();
            assert_eq!(tg.remote, "127.0.0.2:5060".parse().unwrap());
            assert!(
                to_gw.starts_with("BYE sip:gw@127.0.0.2:5060 SIP/2.0"),
                "{to_gw}"
            );
            assert!(
                !to_gw.contains("Route:"),
                "no proxy between us and the gateway"
            );
            assert!(
                to_gw.contains("From: <sip:+14255550100@lab.example>;tag=u2"),
                "{to_gw}"
            );
            assert_eq!(core.anchor().unwrap().stats.media_timeouts, 1);
            assert_eq!(core.anchor().unwrap().active_calls(), 0);
            // Exactly once: later timers only retransmit the same two BYE transactions
            // (UDP, Timer E), with the same branches.
            let branches: Vec<String> = byes
                .iter()
                .filter_map(|(_, s)| header_of(s, "Via").map(str::to_owned))
                .collect();
            core.handle_timeout(t0 + Duration::from_secs(10));
            for (_, s) in drain(&mut core) {
                if s.starts_with("BYE") {
                    let via = header_of(&s, "Via").unwrap_or_default().to_owned();
                    assert!(branches.contains(&via), "a new BYE: {s}");
                }
            }
            assert_eq!(core.anchor().unwrap().stats.media_timeouts, 1);
        }
    }
}
