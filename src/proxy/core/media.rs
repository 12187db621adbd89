//! Media hooks: the anchor rewrites (or refuses) requests and responses crossing sides, learns
//! the dialog from the 2xx of an initial INVITE, and its supervision hands back calls to hang up.

use std::time::Instant;

use super::{Core, Target};
use crate::cdr::EndedBy;
use crate::flow::Flow;
use crate::proxy::anchor;
use crate::proxy::anchor::DialogInfo;
use crate::proxy::CallKey;
use crate::sip::{HeaderName, Message, Method, NameAddr};
use crate::txn::ServerKey;

impl Core {
    /// Lets the anchor rewrite (or refuse) a request crossing from `flow` to `target`.
    pub(super) fn anchor_request(
        &mut self,
        now: Instant,
        req: &Message,
        flow: &Flow,
        target: &Target,
        call: &CallKey,
    ) -> Result<Option<Message>, anchor::Refuse> {
        if target.hop.side == flow.side {
            return Ok(None);
        }
        let Some(a) = self.anchor.as_mut() else {
            return Ok(None);
        };
        let hop = anchor::Hop {
            from: flow.side,
            from_ip: flow.remote.ip(),
            to_name: &target.hop.name,
            to_ip: target.hop.addr.ip(),
        };
        a.on_request(now, req, hop, call)
    }

    /// Lets the anchor rewrite a response about to go upstream on `key`'s server transaction
    /// (`dialog`: what a 2xx to the initial INVITE confirmed).
    pub(super) fn anchor_response(
        &mut self,
        now: Instant,
        key: &ServerKey,
        resp: &Message,
        dialog: Option<DialogInfo>,
    ) -> Option<Message> {
        self.anchor.as_ref()?;
        let e = self.servers.get(key)?;
        let call = e.call.clone()?;
        let from = e.flow.side.other();
        let request = e.ctx.as_ref()?.request.clone();
        self.anchor
            .as_mut()?
            .on_response(now, &request, resp, from, dialog, &call)
    }

    /// A 2xx to an initial INVITE about to go upstream on `key`: the dialog it confirms, kept
    /// with the call (the core's BYEs) and handed to the anchor.
    pub(super) fn confirm_dialog(
        &mut self,
        key: &ServerKey,
        resp: &Message,
        code: u16,
    ) -> Option<DialogInfo> {
        if !(200..300).contains(&code) {
            return None;
        }
        let e = self.servers.get(key)?;
        let request = &e.ctx.as_ref()?.request;
        let initial = request.method() == Some(&Method::Invite)
            && request.to_hdr().and_then(|t| t.tag()).is_none();
        if !initial {
            return None;
        }
        let dialog = self.dialog_info(request, resp)?;
        if let Some(call) = e.call.clone() {
            self.calls.confirmed(&call, dialog.clone());
        }
        Some(dialog)
    }

    /// What a BYE of ours needs, from the initial INVITE and its 2xx (§12.1: remote targets
    /// from the Contacts, route sets from the Record-Routes beyond our own entries).
    pub(super) fn dialog_info(&self, req: &Message, resp: &Message) -> Option<DialogInfo> {
        let raw = |n: &NameAddr<'_>| String::from_utf8_lossy(n.raw()).into_owned();
        let rrs: Vec<NameAddr<'_>> = resp.record_routes().collect();
        let ours: Vec<usize> = rrs
            .iter()
            .enumerate()
            .filter(|(_, r)| self.is_us_uri(Some(r.uri())))
            .map(|(i, _)| i)
            .collect();
        let (down, up) = match (ours.first(), ours.last()) {
            (Some(&f), Some(&l)) => (
                rrs.get(..f).unwrap_or_default(),
                rrs.get(l.saturating_add(1)..).unwrap_or_default(),
            ),
            _ => (rrs.as_slice(), &[][..]),
        };
        Some(DialogInfo {
            caller_contact: String::from_utf8_lossy(req.contact()?.uri().raw()).into_owned(),
            callee_contact: String::from_utf8_lossy(resp.contact()?.uri().raw()).into_owned(),
            routes_to_callee: down.iter().map(raw).collect(),
            routes_to_caller: up.iter().map(raw).collect(),
            caller_from: String::from_utf8_lossy(req.header(HeaderName::From)?).into_owned(),
            callee_to: String::from_utf8_lossy(resp.header(HeaderName::To)?).into_owned(),
        })
    }

    /// Media supervision: calls without media for `media_timeout` get a BYE on both legs.
    pub(super) fn media_sweep(&mut self, now: Instant) {
        let Some(a) = self.anchor.as_mut() else {
            return;
        };
        if a.next_deadline().is_none_or(|t| t > now) {
            return;
        }
        for t in a.sweep(now) {
            for bye in &t.byes {
                self.send_bye(now, bye, anchor::MEDIA_TIMEOUT_REASON);
            }
            self.finish_call(
                now,
                &t.key,
                200,
                "media timeout",
                EndedBy::MediaTimeout,
                t.media,
            );
        }
    }
}
