//! Strict-source latching for one media socket.
//!
//! A packet is accepted only from the address signalled in SDP. One
//! exception covers symmetric RTP behind NAT (RFC 4961 "Symmetric RTP";
//! the practice rtpengine/Kamailio call "latching"): the *first* accepted
//! packet may come from the signalled IP on another port, and then that
//! source is latched. Anything else is RTP bleed and is dropped. The latch
//! is re-evaluated whenever the remote is signalled again (re-offer).

use std::net::SocketAddr;

/// Outcome of checking a packet's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The source is the leg's current remote.
    Accept,
    /// Same IP as signalled, other port, nothing locked yet: accept and
    /// latch once the packet proved valid.
    Latch,
    /// Foreign source: drop and count.
    Reject,
}

/// Source filter and send destination of one media socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latch {
    signalled: Option<SocketAddr>,
    current: Option<SocketAddr>,
    locked: bool,
}

impl Latch {
    /// Sets the signalled remote and resets the latch (SDP offer/answer or
    /// re-offer).
    pub fn set_signalled(&mut self, addr: Option<SocketAddr>) {
        *self = Latch {
            signalled: addr,
            current: addr,
            locked: false,
        };
    }

    /// The address signalled in SDP.
    pub fn signalled(&self) -> Option<SocketAddr> {
        self.signalled
    }

    /// Checks `src` without changing state.
    pub fn admit(&self, src: SocketAddr) -> Admit {
        let Some(signalled) = self.signalled else {
            return Admit::Reject;
        };
        if self.locked {
            return if Some(src) == self.current {
                Admit::Accept
            } else {
                Admit::Reject
            };
        }
        if src == signalled {
            Admit::Accept
        } else if src.ip() == signalled.ip() {
            Admit::Latch
        } else {
            Admit::Reject
        }
    }

    /// Records that a packet from `src` (admitted by [`Latch::admit`]) was
    /// valid: the first one locks the latch on its source.
    pub fn confirm(&mut self, src: SocketAddr) {
        if !self.locked && self.signalled.is_some() {
            self.current = Some(src);
            self.locked = true;
        }
    }

    /// Where to send: the latched source, else the signalled address.
    pub fn destination(&self) -> Option<SocketAddr> {
        self.current
    }

    /// Whether the latch moved away from the signalled port.
    pub fn is_latched_elsewhere(&self) -> bool {
        self.locked && self.current != self.signalled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn unsignalled_rejects_everything() {
        let l = Latch::default();
        assert_eq!(l.admit(a("10.0.0.1:4000")), Admit::Reject);
        assert_eq!(l.destination(), None);
    }

    #[test]
    fn exact_source_is_accepted_and_locks() {
        let mut l = Latch::default();
        l.set_signalled(Some(a("10.0.0.1:4000")));
        assert_eq!(l.admit(a("10.0.0.1:4000")), Admit::Accept);
        l.confirm(a("10.0.0.1:4000"));
        // Locked on the signalled port: the same IP on another port is
        // now bleed.
        assert_eq!(l.admit(a("10.0.0.1:4002")), Admit::Reject);
        assert!(!l.is_latched_elsewhere());
    }

    #[test]
    fn foreign_ip_is_rejected_before_and_after_lock() {
        let mut l = Latch::default();
        l.set_signalled(Some(a("10.0.0.1:4000")));
        assert_eq!(l.admit(a("10.0.0.9:4000")), Admit::Reject);
        l.confirm(a("10.0.0.1:4000"));
        assert_eq!(l.admit(a("10.0.0.9:4000")), Admit::Reject);
    }

    #[test]
    fn nat_port_change_latches_on_first_packet_only() {
        let mut l = Latch::default();
        l.set_signalled(Some(a("192.0.2.7:4000")));
        assert_eq!(l.admit(a("192.0.2.7:31000")), Admit::Latch);
        l.confirm(a("192.0.2.7:31000"));
        assert_eq!(l.destination(), Some(a("192.0.2.7:31000")));
        assert!(l.is_latched_elsewhere());
        assert_eq!(l.admit(a("192.0.2.7:31000")), Admit::Accept);
        // Neither the signalled port nor a third port can take over.
        assert_eq!(l.admit(a("192.0.2.7:4000")), Admit::Reject);
        assert_eq!(l.admit(a("192.0.2.7:31002")), Admit::Reject);
    }

    #[test]
    fn reoffer_resets_the_latch() {
        let mut l = Latch::default();
        l.set_signalled(Some(a("192.0.2.7:4000")));
        l.confirm(a("192.0.2.7:31000"));
        l.set_signalled(Some(a("192.0.2.8:5000")));
        assert_eq!(l.destination(), Some(a("192.0.2.8:5000")));
        assert_eq!(l.admit(a("192.0.2.7:31000")), Admit::Reject);
        assert_eq!(l.admit(a("192.0.2.8:5002")), Admit::Latch);
    }

    #[test]
    fn unconfirmed_latch_candidate_does_not_lock() {
        // A same-IP packet that then fails validation (e.g. SRTP auth) is
        // never confirmed, so the real stream can still latch.
        let mut l = Latch::default();
        l.set_signalled(Some(a("192.0.2.7:4000")));
        assert_eq!(l.admit(a("192.0.2.7:666")), Admit::Latch);
        assert_eq!(l.admit(a("192.0.2.7:4000")), Admit::Accept);
        l.confirm(a("192.0.2.7:4000"));
        assert_eq!(l.admit(a("192.0.2.7:666")), Admit::Reject);
    }
}
