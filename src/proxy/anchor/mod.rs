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
//! The anchor reads no clock (`now` comes in) and opens no socket: the media relay sits behind
//! a [`MediaBackend`] (the real relay in production, an in-memory fake in tests), to which the
//! offer/answer code hands [`MediaUpdate`]s.
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | the anchor's state (calls by [`CallKey`]: peer and Call-ID) and its entry points for the core |
//! | `body.rs` | SDP body glue: finding the SDP in a message, endpoints, crypto choice |
//! | `offer_answer.rs` | RFC 3264 per leg: an offer or answer from one side rewritten for the other |
//! | `policy.rs` | which SDP addresses the relay may be aimed at (loopback, multicast, our own … refused) |
//! | `supervision.rs` | media timeout: idle calls released and handed back with their BYEs; media from elsewhere logged once per leg |
//! A call crosses it in one of two directions (gateway → cloud, cloud → gateway); `Side` is the
//! signalling side (config), `Leg` the media leg, and `sdp::Side` the dialog role.

mod body;
mod offer_answer;
mod policy;
mod supervision;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use bytes::Bytes;
use tracing::{debug, info, warn};

use self::body::{idx, is_opaque_body, leg_of, sdp_body, with_body};
use self::offer_answer::process;
pub use self::policy::AddressPolicy;
use self::supervision::sweep_interval;
use crate::config::{Config, LatchMode, MediaSettings, Side, SrtpMode};
use crate::media::{
    generate_key_salt, BackendStats, LatchPolicy, Leg, LegConfig, LocalPorts, MediaBackend,
    MediaError, MediaUpdate, SessionId, SessionSnapshot, KEY_SALT_LEN,
};
use crate::proxy::CallKey;
use crate::sdp::{self, Carrier, CodecPolicy, Negotiation, SdpError};
use crate::sip::{Message, Method};
pub use crate::stats::AnchorStats;
use crate::stats::{LegTotals, MediaSnapshot};

/// Why the anchor refuses a request: the status and reason phrase the core answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refuse {
    pub status: u16,
    pub reason: String,
}

impl Refuse {
    fn not_acceptable() -> Refuse {
        Refuse {
            status: 488,
            reason: "Not Acceptable Here".into(),
        }
    }

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
    pub key: CallKey,
    /// The session's final counters.
    pub media: Option<SessionSnapshot>,
    pub call_id: String,
    /// One per leg; none when the dialog gave no Contact to address them to.
    pub byes: Vec<ByeSpec>,
}

/// Reason header of the BYEs sent on media timeout (RFC 3326).
pub const MEDIA_TIMEOUT_REASON: &str = "SIP;cause=408;text=\"media timeout\"";

/// One anchored call.
struct Call {
    /// The signalling side the initial INVITE came from.
    caller: Side,
    /// The backend's session, and our local addresses per leg.
    session: SessionId,
    local: [LocalPorts; 2],
    /// The dialog is confirmed (2xx to the initial INVITE): media supervision runs.
    committed: bool,
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
    /// The latching policy per leg, and whether media from elsewhere was logged for it.
    latching: [LatchMode; 2],
    elsewhere_logged: [bool; 2],
}

/// Our SDES keys leave memory with the call.
impl Drop for Call {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.keys);
    }
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
    /// Latching of the cloud peer and of gateways by name (default strict).
    cloud_latching: LatchMode,
    gateway_latching: HashMap<String, LatchMode>,
    policies: [CodecPolicy; 2],
    /// Which media addresses an SDP may name.
    addresses: AddressPolicy,
    media: Box<dyn MediaBackend>,
    calls: HashMap<CallKey, Call>,
    /// Counters of the sessions released so far, per leg.
    released: [LegTotals; 2],
    next_sweep: Option<Instant>,
    pub stats: AnchorStats,
}

/// Each gateway's name, static address and SRTP mode.
fn gateway_modes(cfg: &Config) -> Vec<(String, Option<IpAddr>, SrtpMode)> {
    cfg.gateways
        .iter()
        .map(|g| {
            let name = g.name.to_string();
            let ip = cfg.static_host(&name);
            (name, ip, g.srtp)
        })
        .collect()
}

impl std::fmt::Debug for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anchor")
            .field("calls", &self.calls.len())
            .field("ports", &self.media.stats())
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
    /// The anchor of `[media]` (`settings`) over `media`, with the cloud peer's and each
    /// gateway's SRTP mode from `cfg`.
    pub fn from_config(
        cfg: &Config,
        settings: MediaSettings,
        media: Box<dyn MediaBackend>,
    ) -> Anchor {
        let addresses = AddressPolicy::from_config(cfg, &settings);
        let mut a = Anchor::new(settings, cfg.cloud_peer.srtp, gateway_modes(cfg), media);
        a.addresses = addresses;
        a.set_latching(
            cfg.cloud_peer.latching,
            cfg.gateways
                .iter()
                .map(|g| (g.name.to_string(), g.latching)),
        );
        a
    }

    /// The latching policy of the cloud peer and of gateways by name (the others: strict).
    pub fn set_latching(
        &mut self,
        cloud: LatchMode,
        gateways: impl IntoIterator<Item = (String, LatchMode)>,
    ) {
        self.cloud_latching = cloud;
        self.gateway_latching = gateways
            .into_iter()
            .map(|(n, m)| (n.to_ascii_lowercase(), m))
            .collect();
    }

    /// A reloaded configuration: SRTP modes, codecs and the media timeout of `cfg` apply to
    /// calls set up from now on (media supervision uses the new timeout for every call); calls
    /// in progress keep their negotiation and keys. The address and port range stay (they need
    /// a restart).
    pub fn reconfigure(&mut self, cfg: &Config, settings: &MediaSettings) {
        self.settings = MediaSettings {
            ip: self.settings.ip,
            port_min: self.settings.port_min,
            port_max: self.settings.port_max,
            relay_workers: self.settings.relay_workers,
            ..settings.clone()
        };
        self.policies = [
            CodecPolicy::new(settings.gateway_codecs.iter().cloned()),
            CodecPolicy::new(settings.cloud_codecs.iter().cloned()),
        ];
        self.cloud_srtp = cfg.cloud_peer.srtp;
        self.gateways = gateway_modes(cfg);
        self.addresses = AddressPolicy::from_config(cfg, &self.settings);
        self.set_latching(
            cfg.cloud_peer.latching,
            cfg.gateways
                .iter()
                .map(|g| (g.name.to_string(), g.latching)),
        );
    }

    /// An anchor over `settings` and `media`, with the cloud peer's and each gateway's SRTP
    /// mode.
    pub fn new(
        settings: MediaSettings,
        cloud_srtp: SrtpMode,
        gateways: Vec<(String, Option<IpAddr>, SrtpMode)>,
        media: Box<dyn MediaBackend>,
    ) -> Anchor {
        let policies = [
            CodecPolicy::new(settings.gateway_codecs.iter().cloned()),
            CodecPolicy::new(settings.cloud_codecs.iter().cloned()),
        ];
        let ports = media.stats();
        info!(
            ip = %settings.ip,
            pool_capacity = ports.ports_capacity,
            timeout_s = settings.media_timeout.as_secs(),
            cloud_srtp = cloud_srtp.as_str(),
            "media anchor ready"
        );
        Anchor {
            cloud_latching: LatchMode::Strict,
            gateway_latching: HashMap::new(),
            addresses: AddressPolicy::new(&settings),
            settings,
            cloud_srtp,
            gateways,
            policies,
            media,
            calls: HashMap::new(),
            released: [LegTotals::default(); 2],
            next_sweep: None,
            stats: AnchorStats::default(),
        }
    }

    /// The media backend's counters (free and total port pairs).
    pub fn ports(&self) -> BackendStats {
        self.media.stats()
    }

    /// Calls holding a media session.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// The counters and state of a call's media session.
    pub fn session(&self, call: &CallKey) -> Option<SessionSnapshot> {
        self.media.session(self.calls.get(call)?.session)
    }

    /// Our local media addresses of a call's leg (what the SDP toward that leg carries).
    pub fn local(&self, call: &CallKey, leg: Leg) -> Option<LocalPorts> {
        Some(self.calls.get(call)?.local[leg.index()])
    }

    /// The anchor's state for metrics: counters, ports, and per leg the packets and bytes of
    /// every call so far (released ones plus the live ones).
    pub fn snapshot(&self) -> MediaSnapshot {
        let mut legs = self.released;
        for s in self
            .calls
            .values()
            .filter_map(|c| self.media.session(c.session))
        {
            legs[0].add(&LegTotals::from(&s.a));
            legs[1].add(&LegTotals::from(&s.b));
        }
        let ports = self.media.stats();
        MediaSnapshot {
            stats: self.stats,
            active_calls: self.calls.len(),
            ports_available: ports.ports_available,
            ports_capacity: ports.ports_capacity,
            legs,
        }
    }

    /// Hands the media updates of an offer/answer step to the backend.
    fn apply(&mut self, key: &CallKey, updates: Vec<MediaUpdate>, now: Instant) {
        let Some(id) = self.calls.get(key).map(|c| c.session) else {
            return;
        };
        let call_id = key.call_id_str();
        let call_id = call_id.as_ref();
        for u in updates {
            if let MediaUpdate::Remote { leg, rtp, rtcp } = &u {
                if !self.addresses.allows(*rtp) || rtcp.is_some_and(|a| !self.addresses.allows(a)) {
                    // Only a response or an ACK gets here (a request naming such an address is
                    // refused before): the leg is not aimed at it.
                    self.stats.sdp_address_refused += 1;
                    warn!(call_id, leg = ?leg, remote = %rtp, "media address refused: leg not aimed at it");
                    continue;
                }
            }
            let srtp = match &u {
                MediaUpdate::Srtp { leg, .. } => Some(*leg),
                _ => None,
            };
            match self.media.update(id, u, now) {
                Ok(true) if srtp.is_some() => debug!(call_id, leg = ?srtp, "SRTP keyed"),
                Ok(_) => {}
                Err(e) => warn!(call_id, error = %e, "media update failed"),
            }
        }
    }

    /// Refuses (488) an SDP naming an address the relay may not be aimed at.
    fn check_addresses(&mut self, sdp: &sdp::Sdp, key: &CallKey) -> Result<(), Refuse> {
        let Err(r) = self.addresses.check_sdp(sdp) else {
            return Ok(());
        };
        self.stats.sdp_refused += 1;
        self.stats.sdp_address_refused += 1;
        info!(
            call_id = %key.call_id_str(),
            address = %r.ip,
            class = r.why,
            "SDP media address refused (488)"
        );
        Err(Refuse::not_acceptable())
    }

    fn gateway(&self, name: &str, ip: IpAddr) -> Option<&(String, Option<IpAddr>, SrtpMode)> {
        self.gateways
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
            .or_else(|| self.gateways.iter().find(|(_, i, _)| *i == Some(ip)))
    }

    fn gateway_mode(&self, name: &str, ip: IpAddr) -> SrtpMode {
        self.gateway(name, ip).map_or(SrtpMode::Off, |(_, _, m)| *m)
    }

    fn gateway_latching(&self, name: &str, ip: IpAddr) -> LatchMode {
        self.gateway(name, ip)
            .and_then(|(n, _, _)| self.gateway_latching.get(&n.to_ascii_lowercase()))
            .copied()
            .unwrap_or_default()
    }

    /// The relay's latching policy for a peer's mode.
    fn latch_policy(&self, mode: LatchMode) -> LatchPolicy {
        match mode {
            LatchMode::Strict => LatchPolicy::Strict,
            LatchMode::Nat => LatchPolicy::Nat {
                quiet: self.settings.latch_quiet,
            },
        }
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
        key: &CallKey,
    ) -> Result<Option<Message>, Refuse> {
        let Some(method) = req.method() else {
            return Ok(None);
        };
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
            return self.on_initial_invite(now, req, hop, key.clone());
        }
        let carrier = match method {
            Method::Invite => Carrier::Invite,
            Method::Update => Carrier::Update,
            Method::Prack => Carrier::Prack,
            Method::Ack => Carrier::Ack,
            // A BYE ends the call: the core releases the session with the call's record.
            Method::Bye => return Ok(None),
            _ => return Ok(None),
        };
        let Some(call) = self.calls.get_mut(key) else {
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
        if carrier != Carrier::Ack {
            self.check_addresses(&body, key)?;
        }
        let Some(call) = self.calls.get_mut(key) else {
            return Ok(None);
        };
        let ip = self.settings.ip;
        let policies = &self.policies;
        match process(call, ip, policies, hop.from, carrier, body) {
            Ok((out, updates)) => {
                self.apply(key, updates, now);
                Ok(with_body(req, &out))
            }
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
        key: CallKey,
    ) -> Result<Option<Message>, Refuse> {
        // A new INVITE of the same peer reusing a Call-ID (after a 401/407, or a retry) starts
        // over; another peer's call with that Call-ID is another key, untouched.
        self.release(&key, "new initial INVITE");
        let call_id = key.call_id_str().into_owned();
        let body = match sdp_body(req) {
            Some(Err(e)) => {
                self.stats.sdp_refused += 1;
                return Err(Refuse::sdp(&e));
            }
            Some(Ok(s)) => Some(s),
            None => None,
        };
        if let Some(sdp) = &body {
            // Before any port is allocated.
            self.check_addresses(sdp, &key)?;
        }
        let (gw_mode, gw_latching) = match hop.from {
            Side::Gateway => (
                self.gateway_mode("", hop.from_ip),
                self.gateway_latching("", hop.from_ip),
            ),
            Side::Cloud => (
                self.gateway_mode(hop.to_name, hop.to_ip),
                self.gateway_latching(hop.to_name, hop.to_ip),
            ),
        };
        let leg_cfg = LegConfig {
            ip: self.settings.ip,
            rtcp_mux: false,
        };
        let (session, local) = match self.media.allocate([leg_cfg, leg_cfg]) {
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
            local,
            committed: false,
            neg: [Negotiation::new(), Negotiation::new()],
            keys: [generate_key_salt(), generate_key_salt()],
            modes: [gw_mode, self.cloud_srtp],
            anchored: None,
            last: [None, None],
            dialog: None,
            cseq: [0, 0],
            latching: [gw_latching, self.cloud_latching],
            elsewhere_logged: [false, false],
        };
        if let Some(c) = req.cseq() {
            call.cseq[idx(leg_of(hop.from))] = c.seq;
        }
        // The peers' latching policies, before any address is signalled.
        let latching: Vec<MediaUpdate> = [Leg::A, Leg::B]
            .into_iter()
            .map(|leg| MediaUpdate::Latching {
                leg,
                policy: self.latch_policy(call.latching[idx(leg)]),
            })
            .collect();
        let (out, updates) = match body {
            None => {
                // Late offer (§13.2.1): the offer comes in the 2xx, the answer in the ACK.
                for n in &mut call.neg {
                    let _ = n.on_message(sdp::Side::Caller, Carrier::Invite, None);
                }
                (None, Vec::new())
            }
            Some(sdp) => {
                let ip = self.settings.ip;
                match process(
                    &mut call,
                    ip,
                    &self.policies,
                    hop.from,
                    Carrier::Invite,
                    sdp,
                ) {
                    Ok((out, updates)) => (Some(out), updates),
                    Err(e) => {
                        self.stats.sdp_refused += 1;
                        info!(call_id = %call_id, error = %e, "offer refused");
                        self.media.release(call.session);
                        return Err(Refuse::sdp(&e));
                    }
                }
            }
        };
        self.stats.sessions_created += 1;
        let (a, b) = (call.local[0].rtp, call.local[1].rtp);
        info!(
            call_id = %call_id,
            leg_a = %a,
            leg_b = %b,
            gw_srtp = gw_mode.as_str(),
            gw_latching = gw_latching.as_str(),
            cloud_latching = self.cloud_latching.as_str(),
            "media session allocated"
        );
        self.calls.insert(key.clone(), call);
        self.apply(&key, latching, now);
        self.apply(&key, updates, now);
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
        key: &CallKey,
    ) -> Option<Message> {
        let status = resp.status()?;
        let method = resp.cseq()?.method;
        let call_id = key.call_id_str().into_owned();
        let initial_invite =
            method == Method::Invite && request.to_hdr().and_then(|t| t.tag()).is_none();
        if status >= 300 {
            self.on_error_response(key, initial_invite, &method, from, status);
            return None;
        }
        let carrier = match method {
            Method::Invite | Method::Update | Method::Prack if status < 200 => Carrier::Provisional,
            Method::Invite | Method::Update | Method::Prack => Carrier::Success,
            _ => return None,
        };
        let call = self.calls.get_mut(key)?;
        if initial_invite && status >= 200 {
            if let Some(d) = dialog {
                call.dialog = Some(d);
            }
            // The dialog is confirmed: supervise from now.
            if !call.committed
                && self
                    .media
                    .update(call.session, MediaUpdate::Commit, now)
                    .is_ok()
            {
                call.committed = true;
                if self.next_sweep.is_none() {
                    self.next_sweep = Some(now + sweep_interval(self.settings.media_timeout));
                }
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
            Some(Ok(sdp)) => process(call, self.settings.ip, &self.policies, from, carrier, sdp),
        };
        match out {
            Ok((body, updates)) => {
                self.apply(key, updates, now);
                with_body(resp, &body)
            }
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
        key: &CallKey,
        initial_invite: bool,
        method: &Method,
        from: Side,
        status: u16,
    ) {
        if initial_invite {
            self.release(key, "final error response");
            return;
        }
        if matches!(method, Method::Invite | Method::Update | Method::Prack) {
            if let Some(call) = self.calls.get_mut(key) {
                // RFC 3261 §14.1: a failed re-offer leaves the session as it was.
                let role = call.role(from);
                for n in &mut call.neg {
                    let _ = n.on_message(role, Carrier::Failure, None);
                }
                debug!(call_id = %key.call_id_str(), status, "re-offer failed: session unchanged");
            }
        }
    }

    /// A final response the proxy generated itself for `request` (received from `from`'s
    /// other side): an error to an initial INVITE releases its session.
    pub fn on_local_final(
        &mut self,
        request: &Message,
        status: u16,
        responder: Side,
        key: &CallKey,
    ) {
        if status < 300 {
            return;
        }
        let Some(method) = request.method() else {
            return;
        };
        let initial_invite =
            *method == Method::Invite && request.to_hdr().and_then(|t| t.tag()).is_none();
        self.on_error_response(key, initial_invite, method, responder, status);
    }

    /// Releases the session of a call, exactly once: its final counters the first time,
    /// `None` after.
    pub fn release(&mut self, key: &CallKey, why: &str) -> Option<SessionSnapshot> {
        let call = self.calls.remove(key)?;
        let snap = self.media.release(call.session)?;
        self.stats.sessions_released += 1;
        let ports = self.media.stats();
        info!(
            call_id = %key.call_id_str(),
            reason = why,
            a_rx = snap.a.counters.rx_packets,
            a_fwd = snap.a.counters.forwarded,
            b_rx = snap.b.counters.rx_packets,
            b_fwd = snap.b.counters.forwarded,
            a_foreign = snap.a.counters.drops.foreign_source,
            b_foreign = snap.b.counters.drops.foreign_source,
            pool_available = ports.ports_available,
            pool_capacity = ports.ports_capacity,
            "media session released"
        );
        for (t, leg) in self.released.iter_mut().zip([&snap.a, &snap.b]) {
            t.add(&LegTotals::from(leg));
        }
        Some(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::fake::FakeMedia;
    use crate::media::SessionState;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// The anchor's tests name calls by Call-ID alone (one peer for all of them).
    fn k(call_id: &str) -> CallKey {
        CallKey::new("peer", Bytes::copy_from_slice(call_id.as_bytes()))
    }

    fn key_of(m: &Message) -> CallKey {
        k(&String::from_utf8_lossy(m.call_id().unwrap_or_default()))
    }

    /// The entry points with the call key taken from the message.
    trait ByCallId {
        fn on_request_t(
            &mut self,
            now: Instant,
            req: &Message,
            hop: Hop<'_>,
        ) -> Result<Option<Message>, Refuse>;
        fn on_response_t(
            &mut self,
            now: Instant,
            request: &Message,
            resp: &Message,
            from: Side,
            dialog: Option<DialogInfo>,
        ) -> Option<Message>;
    }

    impl ByCallId for Anchor {
        fn on_request_t(
            &mut self,
            now: Instant,
            req: &Message,
            hop: Hop<'_>,
        ) -> Result<Option<Message>, Refuse> {
            self.on_request(now, req, hop, &key_of(req))
        }
        fn on_response_t(
            &mut self,
            now: Instant,
            request: &Message,
            resp: &Message,
            from: Side,
            dialog: Option<DialogInfo>,
        ) -> Option<Message> {
            self.on_response(now, request, resp, from, dialog, &key_of(resp))
        }
    }

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
            // The tests' UAs live on loopback, as in the lab.
            allow_loopback: true,
            allow_link_local: false,
            latch_quiet: Duration::from_secs(2),
        };
        let gws = vec![(
            "gw1.lab.example".to_owned(),
            Some("127.0.0.2".parse().unwrap()),
            SrtpMode::Off,
        )];
        let pairs = crate::media::PortPool::new(min..=max)
            .expect("range")
            .capacity();
        Anchor::new(settings, cloud, gws, Box::new(FakeMedia::new(pairs)))
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
        a.on_request_t(now, &inv, from_gw())
            .expect("offer")
            .expect("rewritten");
        let ok = resp(
            "200 OK",
            call,
            "1 INVITE",
            Some(&cloud_sdp(30000, "RTP/AVP", KEY, "")),
        );
        a.on_response_t(now, &inv, &ok, Side::Cloud, Some(dialog()))
            .expect("answer rewritten");
        inv
    }

    #[test]
    fn offer_and_answer_are_anchored_with_opportunistic_srtp_toward_the_cloud() {
        let mut a = anchor(42000, 42099, SrtpMode::Optional);
        let now = Instant::now();
        let inv = invite("c-1", Some(&gw_offer(20000)));
        let out = a.on_request_t(now, &inv, from_gw()).unwrap().unwrap();
        let (la, lb) = (
            a.local(&k("c-1"), Leg::A).unwrap(),
            a.local(&k("c-1"), Leg::B).unwrap(),
        );
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
            .on_response_t(now, &inv, &ok, Side::Cloud, Some(dialog()))
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
        let snap = a.session(&k("c-1")).unwrap();
        assert!(snap.b.srtp && !snap.a.srtp, "SRTP on the cloud leg only");
        assert_eq!(snap.a.remote_rtp, Some("127.0.0.2:20000".parse().unwrap()));
        assert_eq!(snap.b.remote_rtp, Some("127.0.0.3:30000".parse().unwrap()));
        assert_eq!(a.session(&k("c-1")).unwrap().state, SessionState::Active);
    }

    #[test]
    fn optional_peer_answering_plain_rtp_gets_plain_rtp() {
        let mut a = anchor(42100, 42199, SrtpMode::Optional);
        let now = Instant::now();
        let inv = invite("c-2", Some(&gw_offer(20000)));
        a.on_request_t(now, &inv, from_gw()).unwrap().unwrap();
        let plain = sdp("127.0.0.3", 30000, "RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n");
        let ok = resp("200 OK", "c-2", "1 INVITE", Some(&plain));
        a.on_response_t(now, &inv, &ok, Side::Cloud, None).unwrap();
        assert!(!a.session(&k("c-2")).unwrap().b.srtp);
    }

    #[test]
    fn required_peer_gets_savp_and_refuses_plain_offers() {
        let mut a = anchor(42200, 42299, SrtpMode::Required);
        let now = Instant::now();
        let inv = invite("c-3", Some(&gw_offer(20000)));
        let out = a.on_request_t(now, &inv, from_gw()).unwrap().unwrap();
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
        a.on_response_t(now, &inv, &ok, Side::Cloud, None).unwrap();
        assert!(a.session(&k("c-3")).unwrap().b.srtp);
        // The cloud calling in with plain RTP: 488, and its ports go back at once.
        let full = a.ports().ports_available;
        let plain = sdp("127.0.0.3", 30000, "RTP/AVP 0\r\n");
        let inv = invite("c-4", Some(&plain));
        let e = a.on_request_t(now, &inv, from_cloud()).unwrap_err();
        assert_eq!(e.status, 488);
        assert_eq!(a.ports().ports_available, full);
    }

    #[test]
    fn cloud_offer_with_savp_is_answered_with_our_key_and_relayed_as_plain_rtp() {
        let mut a = anchor(42300, 42399, SrtpMode::Required);
        let now = Instant::now();
        let offer = cloud_sdp(30000, "RTP/SAVP", KEY, "");
        let inv = invite("c-5", Some(&offer));
        let out = a.on_request_t(now, &inv, from_cloud()).unwrap().unwrap();
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
        let back = a
            .on_response_t(now, &inv, &ok, Side::Gateway, None)
            .unwrap();
        let body = body_of(&back);
        assert!(body.contains(" RTP/SAVP 0\r\n"), "{body}");
        assert!(
            body.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
            "{body}"
        );
        assert!(!body.contains(KEY), "our own key, not theirs: {body}");
        assert!(a.session(&k("c-5")).unwrap().b.srtp);
    }

    #[test]
    fn no_common_codec_and_mki_only_crypto_are_refused_with_488() {
        let mut a = anchor(42400, 42499, SrtpMode::Optional);
        let now = Instant::now();
        let full = a.ports().ports_available;
        let g729 = sdp(
            "127.0.0.2",
            20000,
            "RTP/AVP 18 101\r\na=rtpmap:101 telephone-event/8000\r\n",
        );
        let e = a
            .on_request_t(now, &invite("c-6", Some(&g729)), from_gw())
            .unwrap_err();
        assert_eq!(e.status, 488);
        let mki = sdp(
            "127.0.0.3",
            30000,
            &format!("RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4\r\n"),
        );
        let e = a
            .on_request_t(now, &invite("c-7", Some(&mki)), from_cloud())
            .unwrap_err();
        assert_eq!(e.status, 488);
        assert_eq!(
            a.ports().ports_available,
            full,
            "refused offers hold no ports"
        );
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
        let e = a.on_request_t(Instant::now(), &inv, from_gw()).unwrap_err();
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
            .on_request_t(now, &invite("c-9", Some(&gw_offer(20002))), from_gw())
            .unwrap_err();
        assert_eq!(e.status, 503);
        assert_eq!(a.stats.ports_exhausted, 1);
        assert!(
            a.session(&k("c-8")).is_some(),
            "the existing call is untouched"
        );
    }

    #[test]
    fn late_offer_in_200_answer_in_ack() {
        let mut a = anchor(42600, 42699, SrtpMode::Optional);
        let now = Instant::now();
        let inv = invite("c-10", None);
        assert!(a.on_request_t(now, &inv, from_gw()).unwrap().is_none());
        assert!(
            a.session(&k("c-10")).is_some(),
            "ports held from the INVITE"
        );
        let ok = resp(
            "200 OK",
            "c-10",
            "1 INVITE",
            Some(&cloud_sdp(30000, "RTP/AVP", KEY, "")),
        );
        let out = a
            .on_response_t(now, &inv, &ok, Side::Cloud, Some(dialog()))
            .unwrap();
        let lb = a.local(&k("c-10"), Leg::B).unwrap().rtp.port();
        let la = a.local(&k("c-10"), Leg::A).unwrap().rtp.port();
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
        let out = a.on_request_t(now, &ack, from_gw()).unwrap().unwrap();
        let body = body_of(&out);
        assert!(body.contains(&format!("m=audio {lb} RTP/AVP 0")), "{body}");
        assert!(
            body.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
            "{body}"
        );
        let snap = a.session(&k("c-10")).unwrap();
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
        let out = a.on_request_t(now, &r, from_gw()).unwrap().unwrap();
        assert!(body_of(&out).contains("a=sendonly"), "{}", body_of(&out));
        let ok = resp(
            "200 OK",
            "c-11",
            "2 INVITE",
            Some(&cloud_sdp(30000, "RTP/AVP", KEY, "a=recvonly\r\n")),
        );
        let back = a.on_response_t(now, &r, &ok, Side::Cloud, None).unwrap();
        assert!(body_of(&back).contains("a=recvonly"));
        let snap = a.session(&k("c-11")).unwrap();
        assert!(snap.b.on_hold && !snap.a.on_hold, "{snap:?}");
        // Resume with a new port and a new key from the cloud.
        let r = reinv(&gw_offer(20000).replace("o=ua 1 1", "o=ua 1 3"), 3);
        a.on_request_t(now, &r, from_gw()).unwrap().unwrap();
        let ok = resp(
            "200 OK",
            "c-11",
            "3 INVITE",
            Some(&cloud_sdp(30010, "RTP/AVP", KEY2, "")),
        );
        a.on_response_t(now, &r, &ok, Side::Cloud, None).unwrap();
        let snap = a.session(&k("c-11")).unwrap();
        assert!(!snap.b.on_hold && snap.b.srtp);
        assert_eq!(snap.b.remote_rtp, Some("127.0.0.3:30010".parse().unwrap()));
        // A failed re-offer leaves the session as it was.
        let r = reinv(&gw_offer(20020).replace("o=ua 1 1", "o=ua 1 4"), 4);
        a.on_request_t(now, &r, from_gw()).unwrap().unwrap();
        let busy = resp("488 Not Acceptable Here", "c-11", "4 INVITE", None);
        assert!(a.on_response_t(now, &r, &busy, Side::Cloud, None).is_none());
        assert!(
            a.session(&k("c-11")).is_some(),
            "a failed re-INVITE keeps the call"
        );
        let r = reinv(&gw_offer(20000).replace("o=ua 1 1", "o=ua 1 5"), 5);
        assert!(
            a.on_request_t(now, &r, from_gw()).unwrap().is_some(),
            "no offer left pending"
        );
    }

    #[test]
    fn sdp_aimed_at_loopback_multicast_or_us_is_refused_488_before_any_port() {
        let mut a = anchor(42900, 42999, SrtpMode::Optional);
        a.addresses.allow_loopback = false;
        let now = Instant::now();
        let full = a.ports().ports_available;
        let pcmu = "RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
        for (i, host) in ["127.0.0.2", "224.2.1.1", "255.255.255.255", "169.254.0.9"]
            .iter()
            .enumerate()
        {
            let inv = invite(&format!("addr-{i}"), Some(&sdp(host, 20000, pcmu)));
            let e = a.on_request_t(now, &inv, from_gw()).unwrap_err();
            assert_eq!(e.status, 488, "{host}");
            assert_eq!(e.reason, "Not Acceptable Here");
        }
        // Our own media address, even with loopback allowed.
        a.addresses.allow_loopback = true;
        let inv = invite("addr-own", Some(&sdp("127.0.0.1", 20000, pcmu)));
        assert_eq!(
            a.on_request_t(now, &inv, from_gw()).unwrap_err().status,
            488
        );
        // An a=rtcp address counts as well.
        let rtcp = format!("{pcmu}a=rtcp:20001 IN IP4 127.0.0.1\r\n");
        let inv = invite("addr-rtcp", Some(&sdp("127.0.0.2", 20000, &rtcp)));
        assert_eq!(
            a.on_request_t(now, &inv, from_gw()).unwrap_err().status,
            488
        );
        assert_eq!(a.ports().ports_available, full, "no port allocated");
        assert_eq!(a.active_calls(), 0);
        assert_eq!(a.stats.sdp_address_refused, 6);
        assert_eq!(a.stats.sdp_refused, 6);
        // Hold (c=0.0.0.0) is no refusal.
        let inv = invite(
            "addr-hold",
            Some(&gw_offer(20000).replace("127.0.0.2", "0.0.0.0")),
        );
        assert!(a.on_request_t(now, &inv, from_gw()).is_ok());
        assert_eq!(a.stats.sdp_address_refused, 6);
    }

    #[test]
    fn reoffer_or_answer_naming_us_never_aims_the_relay() {
        let mut a = anchor(43000, 43099, SrtpMode::Optional);
        let now = Instant::now();
        establish(&mut a, "addr-re", now);
        let call = k("addr-re");
        let before = a.session(&call).unwrap();
        assert_eq!(
            before.a.remote_rtp,
            Some("127.0.0.2:20000".parse().unwrap())
        );
        // A re-INVITE from the gateway moving its media to our own address: 488, unchanged.
        let re = msg(
            "INVITE sip:peer@127.0.0.3 SIP/2.0",
            "addr-re",
            "c1",
            Some("u2"),
            "2 INVITE",
            Some(&gw_offer(20000).replace("127.0.0.2", "127.0.0.1")),
        );
        assert_eq!(a.on_request_t(now, &re, from_gw()).unwrap_err().status, 488);
        assert_eq!(a.session(&call).unwrap().a.remote_rtp, before.a.remote_rtp);
        // A cloud re-offer, answered by the gateway with our address: a response cannot be
        // refused, but the relay is not aimed at it.
        let offer = cloud_sdp(30002, "RTP/AVP", KEY, "").replace("o=ua 1 1", "o=ua 1 2");
        let re = msg(
            "INVITE sip:ua@127.0.0.2 SIP/2.0",
            "addr-re",
            "u2",
            Some("c1"),
            "2 INVITE",
            Some(&offer),
        );
        a.on_request_t(now, &re, from_cloud()).unwrap().unwrap();
        let ans = gw_offer(20004)
            .replace("127.0.0.2", "127.0.0.1")
            .replace("o=ua 1 1", "o=ua 1 2");
        let ok = resp("200 OK", "addr-re", "2 INVITE", Some(&ans));
        a.on_response_t(now, &re, &ok, Side::Gateway, None);
        let after = a.session(&call).unwrap();
        assert_ne!(after.a.remote_rtp, Some("127.0.0.1:20004".parse().unwrap()));
        assert_eq!(a.stats.sdp_address_refused, 2);
    }

    #[test]
    fn each_leg_gets_its_peers_latching_policy() {
        let text = include_str!("../../../config/sipedge.toml")
            .replace(
                "name = \"gw1.lab.example\"\nport = 5060\n",
                "name = \"gw1.lab.example\"\nlatching = \"nat\"\nport = 5060\n",
            )
            .replace(
                "allow_loopback = true",
                "allow_loopback = true\nlatch_quiet_ms = 500",
            );
        let cfg = Config::from_toml(std::path::Path::new("t.toml"), &text).unwrap();
        let media = FakeMedia::new(8);
        let settings = cfg.media.clone().unwrap();
        let mut a = Anchor::from_config(&cfg, settings, Box::new(media.clone()));
        let now = Instant::now();
        a.on_request_t(now, &invite("latch-1", Some(&gw_offer(20000))), from_gw())
            .unwrap();
        let nat = LatchPolicy::Nat {
            quiet: Duration::from_millis(500),
        };
        assert_eq!(media.get(1).unwrap().latching, [nat, LatchPolicy::Strict]);
        // Toward gw2 (strict by default) from the cloud.
        let hop = Hop {
            to_name: "gw2.lab.example",
            to_ip: "127.0.0.5".parse().unwrap(),
            ..from_cloud()
        };
        let offer = cloud_sdp(30000, "RTP/AVP", KEY, "");
        a.on_request_t(now, &invite("latch-2", Some(&offer)), hop)
            .unwrap();
        assert_eq!(media.get(2).unwrap().latching, [LatchPolicy::Strict; 2]);
    }

    #[test]
    fn release_exactly_once_and_no_port_leak_after_1000_calls() {
        let mut a = anchor(42800, 42819, SrtpMode::Optional);
        let capacity = a.ports().ports_capacity;
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
                    a.on_request_t(now, &bye, from_gw()).unwrap();
                    // The core releases the session with the call's record.
                    assert!(a.release(&k(&call), "BYE").is_some());
                    // The 200 to the BYE, or a second BYE from the other side: nothing left.
                    let bye2 = msg(
                        "BYE sip:ua@127.0.0.2 SIP/2.0",
                        &call,
                        "u2",
                        Some("c1"),
                        "1 BYE",
                        None,
                    );
                    a.on_request_t(now, &bye2, from_cloud()).unwrap();
                    assert!(a.release(&k(&call), "BYE").is_none());
                }
                1 => {
                    // Refused before answer (a new call reusing nothing).
                    let c2 = format!("busy-{i}");
                    a.release(&k(&call), "test");
                    let inv2 = invite(&c2, Some(&gw_offer(20000)));
                    a.on_request_t(now, &inv2, from_gw()).unwrap();
                    let busy = resp("486 Busy Here", &c2, "1 INVITE", None);
                    a.on_response_t(now, &inv2, &busy, Side::Cloud, None);
                }
                2 => {
                    // CANCEL: the proxy answers 487 itself.
                    a.release(&k(&call), "test");
                    let c2 = format!("cancel-{i}");
                    let inv2 = invite(&c2, Some(&gw_offer(20000)));
                    a.on_request_t(now, &inv2, from_gw()).unwrap();
                    a.on_local_final(&inv2, 487, Side::Cloud, &k(&c2));
                }
                _ => {
                    assert!(a.release(&k(&call), "test").is_some());
                    assert!(
                        a.release(&k(&call), "test").is_none(),
                        "second release is a no-op"
                    );
                    let _ = inv;
                }
            }
        }
        assert_eq!(a.active_calls(), 0);
        assert_eq!(a.ports().ports_available, capacity, "pool back to full");
        assert_eq!(a.stats.sessions_created, a.stats.sessions_released);
        assert_eq!(a.stats.sessions_created, 1500);
    }

    #[test]
    fn media_timeout_releases_once_and_returns_a_bye_for_each_leg() {
        let mut a = anchor(42900, 42999, SrtpMode::Optional);
        let capacity = a.ports().ports_capacity;
        let t0 = Instant::now();
        establish(&mut a, "c-12", t0);
        // Another call still ringing is not supervised.
        a.on_request_t(t0, &invite("c-13", Some(&gw_offer(20000))), from_gw())
            .unwrap();
        let first = a.next_deadline().expect("supervision scheduled");
        assert!(first <= t0 + Duration::from_secs(1));
        assert!(a.sweep(t0 + Duration::from_secs(30)).is_empty(), "not yet");
        let out = a.sweep(t0 + Duration::from_secs(61));
        assert_eq!(out.len(), 1);
        let t = &out[0];
        assert_eq!(t.call_id, "c-12");
        let [to_callee, to_caller] = &t.byes[..] else {
            panic!("one BYE per leg: {:?}", t.byes);
        };
        assert_eq!(to_callee.side, Side::Cloud);
        assert_eq!(to_callee.request_uri, "sip:peer@127.0.0.3:5060");
        assert_eq!(to_callee.cseq, 2, "above the caller's INVITE CSeq");
        assert!(to_callee.from.contains("tag=c1") && to_callee.to.contains("tag=u2"));
        assert_eq!(to_caller.side, Side::Gateway);
        assert_eq!(to_caller.request_uri, "sip:ua@127.0.0.2:5060");
        assert!(to_caller.from.contains("tag=u2") && to_caller.to.contains("tag=c1"));
        assert_eq!(a.stats.media_timeouts, 1);
        assert!(a.session(&k("c-12")).is_none());
        assert!(
            a.sweep(t0 + Duration::from_secs(200)).is_empty(),
            "exactly once"
        );
        assert_eq!(a.stats.media_timeouts, 1);
        a.release(&k("c-13"), "test");
        assert_eq!(a.ports().ports_available, capacity);
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
        a.on_request_t(t0, &r, from_gw()).unwrap().unwrap();
        let ok = resp(
            "200 OK",
            "c-14",
            "2 INVITE",
            Some(&cloud_sdp(30000, "RTP/AVP", KEY, "a=inactive\r\n")),
        );
        a.on_response_t(t0, &r, &ok, Side::Cloud, None).unwrap();
        assert!(a.sweep(t0 + Duration::from_secs(600)).is_empty());
        assert!(a.session(&k("c-14")).is_some());
    }

    #[test]
    fn early_media_answer_in_183_repeated_in_200() {
        let mut a = anchor(43200, 43299, SrtpMode::Optional);
        let now = Instant::now();
        let inv = invite("c-20", Some(&gw_offer(20000)));
        a.on_request_t(now, &inv, from_gw()).unwrap().unwrap();
        let answer = cloud_sdp(30000, "RTP/AVP", KEY, "");
        let early = resp("183 Session Progress", "c-20", "1 INVITE", Some(&answer));
        let e = a
            .on_response_t(now, &inv, &early, Side::Cloud, None)
            .unwrap();
        // Early media is relayed before the 2xx, but not supervised yet.
        let s = a.session(&k("c-20")).unwrap();
        assert!(s.b.srtp);
        assert_eq!(s.idle_since, None);
        let ok = resp("200 OK", "c-20", "1 INVITE", Some(&answer));
        let f = a
            .on_response_t(now, &inv, &ok, Side::Cloud, Some(dialog()))
            .unwrap();
        assert_eq!(e.body(), f.body(), "the same answer, the same rewrite");
        assert!(
            a.session(&k("c-20")).unwrap().idle_since.is_some(),
            "supervised from the 2xx"
        );
    }

    #[test]
    fn update_from_the_cloud_moves_its_port_and_is_answered_by_the_gateway() {
        let mut a = anchor(43300, 43399, SrtpMode::Optional);
        let now = Instant::now();
        establish(&mut a, "c-21", now);
        let la = a.local(&k("c-21"), Leg::A).unwrap().rtp.port();
        let lb = a.local(&k("c-21"), Leg::B).unwrap().rtp.port();
        let offer = cloud_sdp(31000, "RTP/AVP", KEY, "").replace("o=ua 1 1", "o=ua 1 2");
        let upd = msg(
            "UPDATE sip:gw@127.0.0.2:5060 SIP/2.0",
            "c-21",
            "u2",
            Some("c1"),
            "1 UPDATE",
            Some(&offer),
        );
        let out = a.on_request_t(now, &upd, from_cloud()).unwrap().unwrap();
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
        let back = a
            .on_response_t(now, &upd, &ok, Side::Gateway, None)
            .unwrap();
        let body = body_of(&back);
        assert!(body.contains(&format!("m=audio {lb} RTP/AVP 0")), "{body}");
        assert!(
            body.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
            "{body}"
        );
        let snap = a.session(&k("c-21")).unwrap();
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
        a.on_request_t(now, &upd2, from_cloud()).unwrap().unwrap();
        let glare = msg(
            "UPDATE sip:peer@127.0.0.3 SIP/2.0",
            "c-21",
            "c1",
            Some("u2"),
            "3 UPDATE",
            Some(&gw_offer(20000).replace("o=ua 1 1", "o=ua 1 3")),
        );
        assert_eq!(
            a.on_request_t(now, &glare, from_gw()).unwrap_err().status,
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
            // The tests' UAs live on loopback, as in the lab.
            allow_loopback: true,
            allow_link_local: false,
            latch_quiet: Duration::from_secs(2),
        };
        let gws = vec![(
            "gw1.lab.example".to_owned(),
            Some("127.0.0.2".parse().unwrap()),
            SrtpMode::Required,
        )];
        let mut a = Anchor::new(settings, SrtpMode::Off, gws, Box::new(FakeMedia::new(50)));
        let now = Instant::now();
        let plain = sdp("127.0.0.3", 30000, "RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n");
        let inv = invite("c-22", Some(&plain));
        let out = a.on_request_t(now, &inv, from_cloud()).unwrap().unwrap();
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
        let back = a
            .on_response_t(now, &inv, &ok, Side::Gateway, None)
            .unwrap();
        let body = body_of(&back);
        assert!(
            body.contains(" RTP/AVP 0\r\n") && !body.contains("crypto"),
            "{body}"
        );
        let snap = a.session(&k("c-22")).unwrap();
        assert!(snap.a.srtp && !snap.b.srtp, "SRTP on the gateway leg only");
        // A gateway with "required" offering plain RTP is refused.
        let e = a
            .on_request_t(now, &invite("c-23", Some(&gw_offer(20000))), from_gw())
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

        const LAB: &str = include_str!("../../../config/sipedge.toml");

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
            // Two port pairs: one call fills them.
            let settings = cfg.media.clone().unwrap();
            let anchor = Anchor::from_config(&cfg, settings, Box::new(FakeMedia::new(2)));
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
