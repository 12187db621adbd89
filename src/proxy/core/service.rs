//! Taking the appliance out of service and changing its configuration without dropping a call.
//!
//! **Maintenance** (`sipedge maintenance enter`) and the **drain** (SIGTERM) refuse every new
//! out-of-dialog request — INVITE and OPTIONS alike — with a stateless 503 and Retry-After in
//! the admit phase (shed reasons `maintenance` and `draining`), so gateways and the cloud move
//! on to the next appliance; requests inside the dialogs of calls in progress (ACK, BYE,
//! re-INVITE, UPDATE, …) and CANCEL pass as before, so those calls keep their media and end
//! normally. The drain ends when the last call has ended ([`Core::is_drained`]), or at its
//! timeout, when [`Core::hang_up_all`] sends a BYE to both legs of every call left (the core
//! knows each dialog's route set and CSeq numbers) and cancels the calls still ringing.
//!
//! **Reload** ([`Core::reload`]) swaps the configuration and the routing table at once: new
//! transactions and calls use them; those in flight keep the targets, timers and media
//! negotiation they started with.

use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use super::overload::Shed;
use super::unknown::UnknownSenders;
use super::{overload_limits, Core};
use crate::cdr::EndedBy;
use crate::config::Config;
use crate::routing::RoutingTable;
use crate::sip::Method;
use crate::txn::{ServerKey, State, TimerConfig};

/// Reason header of the BYEs sent when the drain times out (RFC 3326).
pub const DRAIN_REASON: &str = "SIP;cause=503;text=\"appliance shutting down\"";

impl Core {
    /// Enters (true) or leaves (false) maintenance mode.
    pub fn set_maintenance(&mut self, on: bool) {
        if self.maintenance != on {
            info!(
                maintenance = on,
                calls = self.calls.len(),
                "maintenance mode {}",
                if on {
                    "entered: new calls refused (503)"
                } else {
                    "left: new calls taken"
                }
            );
        }
        self.maintenance = on;
    }

    pub fn maintenance(&self) -> bool {
        self.maintenance
    }

    /// Starts the drain: new calls get a 503 until the process exits (not undone).
    pub fn start_drain(&mut self) {
        self.draining = true;
    }

    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Why new out-of-dialog requests are refused now, if they are.
    pub(super) fn out_of_service(&self) -> Option<Shed> {
        if self.draining {
            Some(Shed::Draining)
        } else if self.maintenance {
            Some(Shed::Maintenance)
        } else {
            None
        }
    }

    /// Nothing left in flight: every server transaction has sent its final response and every
    /// client transaction has received one. (Transactions lingering in Completed/Accepted only
    /// absorb retransmissions, and an OPTIONS probe to a silent target decides nothing; the
    /// drain need not wait for them.)
    pub fn is_idle(&self) -> bool {
        let live = |s: State| matches!(s, State::Calling | State::Trying | State::Proceeding);
        !self.servers.values().any(|e| live(e.txn.state()))
            && !self
                .clients
                .iter()
                .any(|(k, c)| live(c.txn.state()) && !self.probes.contains_key(k))
    }

    /// The drain is over: no call left, nothing in flight.
    pub fn is_drained(&self) -> bool {
        self.calls.len() == 0 && self.is_idle()
    }

    pub fn transaction_count(&self) -> (usize, usize) {
        (self.servers.len(), self.clients.len())
    }

    /// The drain timed out: both legs of every established call get a BYE of ours (with
    /// [`DRAIN_REASON`]), calls still being set up are cancelled (a CANCEL downstream, the 487
    /// upstream), and every call ends with its record. Returns how many calls were ended.
    pub fn hang_up_all(&mut self, now: Instant) -> usize {
        let ringing: Vec<ServerKey> = self
            .servers
            .iter()
            .filter(|(_, e)| {
                e.call.is_some()
                    && e.ctx.as_ref().is_some_and(|c| {
                        !c.final_sent
                            && c.request.method() == Some(&Method::Invite)
                            && c.request.to_hdr().and_then(|t| t.tag()).is_none()
                    })
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &ringing {
            self.cancel_invite(now, k);
        }
        let calls = self.calls.keys();
        for key in &calls {
            let Some(call) = self.calls.get(key) else {
                continue;
            };
            let byes = call.byes(&key.call_id_str());
            let status = if call.answer.is_some() { 200 } else { 487 };
            if byes.is_empty() && status == 200 {
                warn!(call_id = %key.call_id_str(), "drain timeout: answered call without a dialog to address; ended without BYE");
            }
            for b in &byes {
                self.send_bye(now, b, DRAIN_REASON);
            }
            self.end_call(now, key, status, "drain timeout", EndedBy::Appliance);
        }
        calls.len()
    }

    /// A reloaded configuration and its routing table, in force for everything that starts
    /// from now on: senders are identified and requests routed by the new table, limits,
    /// timers, health probing (targets kept keep their health) and media settings are the new
    /// ones. Transactions and calls in flight keep what they started with.
    pub fn reload(&mut self, now: Instant, cfg: Arc<Config>, table: RoutingTable) {
        self.timers = TimerConfig {
            t1: cfg.sip.t1,
            t2: cfg.sip.t2,
            t4: cfg.sip.t4,
        };
        self.health
            .retarget(now, &table, cfg.routing.options_interval);
        if cfg.overload.unknown_senders != self.cfg.overload.unknown_senders
            || cfg.overload.unknown_sender_interval != self.cfg.overload.unknown_sender_interval
        {
            self.unknown = UnknownSenders::new(
                cfg.overload.unknown_senders,
                cfg.overload.unknown_sender_interval,
            );
        }
        if let (Some(a), Some(m)) = (self.anchor.as_mut(), cfg.media.as_ref()) {
            a.reconfigure(&cfg, m);
        }
        self.overload.set_limits(overload_limits(&cfg, &table));
        self.cfg = cfg;
        self.table = table;
    }
}
