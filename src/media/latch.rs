//! Where one media socket accepts packets from, and where it sends: the latching policy of its
//! leg's peer.
//!
//! * [`LatchPolicy::Strict`] (the default): the address signalled in SDP wins. Only packets
//!   from exactly that address are accepted, and the relay sends there; a packet from anywhere
//!   else, another port of the same host included, is dropped and never takes the leg over
//!   (a spoofed first packet cannot redirect the call's media).
//! * [`LatchPolicy::Nat`]: symmetric RTP behind NAT (RFC 4961; what rtpengine and Kamailio call
//!   latching). The first packet that passes validation (the relay confirms only packets that
//!   parse and, on an SRTP leg, authenticate) takes the latch, from any address, and the relay
//!   sends back there. The latch moves to another source only once the latched one has been
//!   quiet for `quiet` (a re-bound NAT mapping), and again only on a validated packet.
//!
//! A re-offer (the remote signalled again) resets the latch; the policy stays.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The latching policy of one leg (from its peer's `latching` setting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LatchPolicy {
    /// Only the signalled address.
    #[default]
    Strict,
    /// Latch on the first validated packet; move after `quiet` without packets from the
    /// latched source.
    Nat { quiet: Duration },
}

/// Outcome of checking a packet's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The source is the leg's current remote.
    Accept,
    /// A source that may take the latch: accept, and latch once the packet proved valid
    /// ([`Latch::confirm`]).
    Latch,
    /// From elsewhere: drop and count.
    Reject,
}

/// Source filter and send destination of one media socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latch {
    policy: LatchPolicy,
    signalled: Option<SocketAddr>,
    current: Option<SocketAddr>,
    locked: bool,
    /// Last validated packet from `current`.
    last_valid: Option<Instant>,
}

impl Latch {
    /// Sets the policy (the leg's peer); the latch itself is kept.
    pub fn set_policy(&mut self, policy: LatchPolicy) {
        self.policy = policy;
    }

    /// The policy.
    pub fn policy(&self) -> LatchPolicy {
        self.policy
    }

    /// Sets the signalled remote and resets the latch (SDP offer/answer or re-offer).
    pub fn set_signalled(&mut self, addr: Option<SocketAddr>) {
        *self = Latch {
            policy: self.policy,
            signalled: addr,
            current: addr,
            locked: false,
            last_valid: None,
        };
    }

    /// The address signalled in SDP.
    pub fn signalled(&self) -> Option<SocketAddr> {
        self.signalled
    }

    /// Checks `src` at `now` without changing state.
    pub fn admit(&self, src: SocketAddr, now: Instant) -> Admit {
        if self.signalled.is_none() {
            return Admit::Reject;
        }
        match self.policy {
            LatchPolicy::Strict => {
                if Some(src) == self.signalled {
                    Admit::Accept
                } else {
                    Admit::Reject
                }
            }
            LatchPolicy::Nat { quiet } => {
                if !self.locked {
                    return if Some(src) == self.current {
                        Admit::Accept
                    } else {
                        Admit::Latch
                    };
                }
                if Some(src) == self.current {
                    Admit::Accept
                } else if self
                    .last_valid
                    .is_none_or(|t| now.saturating_duration_since(t) >= quiet)
                {
                    Admit::Latch
                } else {
                    Admit::Reject
                }
            }
        }
    }

    /// Records that a packet from `src` (admitted by [`Latch::admit`]) was valid: under NAT
    /// latching it takes (or keeps) the latch.
    pub fn confirm(&mut self, src: SocketAddr, now: Instant) {
        if self.signalled.is_none() {
            return;
        }
        match self.policy {
            LatchPolicy::Strict => {
                if Some(src) == self.current {
                    self.last_valid = Some(now);
                }
            }
            LatchPolicy::Nat { .. } => {
                self.current = Some(src);
                self.locked = true;
                self.last_valid = Some(now);
            }
        }
    }

    /// Where to send: the latched source, else the signalled address.
    pub fn destination(&self) -> Option<SocketAddr> {
        self.current
    }

    /// Whether the latch moved away from the signalled address.
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

    const QUIET: Duration = Duration::from_secs(2);

    fn nat() -> Latch {
        let mut l = Latch::default();
        l.set_policy(LatchPolicy::Nat { quiet: QUIET });
        l.set_signalled(Some(a("192.0.2.7:4000")));
        l
    }

    #[test]
    fn unsignalled_rejects_everything() {
        let l = Latch::default();
        let now = Instant::now();
        assert_eq!(l.admit(a("10.0.0.1:4000"), now), Admit::Reject);
        assert_eq!(l.destination(), None);
        let mut n = Latch::default();
        n.set_policy(LatchPolicy::Nat { quiet: QUIET });
        assert_eq!(n.admit(a("10.0.0.1:4000"), now), Admit::Reject);
    }

    #[test]
    fn strict_accepts_only_the_signalled_address() {
        let mut l = Latch::default();
        let now = Instant::now();
        l.set_signalled(Some(a("10.0.0.1:4000")));
        // A spoofed first packet from the same host on another port does not take the latch.
        assert_eq!(l.admit(a("10.0.0.1:4002"), now), Admit::Reject);
        assert_eq!(l.admit(a("10.0.0.9:4000"), now), Admit::Reject);
        assert_eq!(l.admit(a("10.0.0.1:4000"), now), Admit::Accept);
        l.confirm(a("10.0.0.1:4000"), now);
        assert_eq!(l.destination(), Some(a("10.0.0.1:4000")));
        // However long the signalled source is quiet.
        let later = now + Duration::from_secs(3600);
        assert_eq!(l.admit(a("10.0.0.1:4002"), later), Admit::Reject);
        assert!(!l.is_latched_elsewhere());
    }

    #[test]
    fn nat_latches_on_the_first_valid_packet_from_anywhere() {
        let mut l = nat();
        let now = Instant::now();
        let behind_nat = a("203.0.113.9:31000");
        assert_eq!(l.admit(behind_nat, now), Admit::Latch);
        l.confirm(behind_nat, now);
        assert_eq!(l.destination(), Some(behind_nat));
        assert!(l.is_latched_elsewhere());
        assert_eq!(l.admit(behind_nat, now), Admit::Accept);
        // Neither the signalled address nor a third source takes over while it talks.
        let t = now + Duration::from_millis(1500);
        assert_eq!(l.admit(a("192.0.2.7:4000"), t), Admit::Reject);
        assert_eq!(l.admit(a("203.0.113.9:31002"), t), Admit::Reject);
    }

    #[test]
    fn nat_moves_only_after_the_latched_source_is_quiet() {
        let mut l = nat();
        let t0 = Instant::now();
        let first = a("203.0.113.9:31000");
        let moved = a("203.0.113.9:40000");
        l.confirm(first, t0);
        // Still talking at t0 + 1.9 s: the new source is refused at t0 + 3 s (1.1 s quiet).
        l.confirm(first, t0 + Duration::from_millis(1900));
        assert_eq!(l.admit(moved, t0 + Duration::from_secs(3)), Admit::Reject);
        // Quiet for 2 s: the new source may latch, once its packet is valid.
        let t = t0 + Duration::from_millis(3900);
        assert_eq!(l.admit(moved, t), Admit::Latch);
        assert_eq!(l.destination(), Some(first), "not before validation");
        l.confirm(moved, t);
        assert_eq!(l.destination(), Some(moved));
        assert_eq!(
            l.admit(first, t),
            Admit::Reject,
            "the old source is bleed now"
        );
    }

    #[test]
    fn unconfirmed_candidate_does_not_latch() {
        // A packet that then fails validation (SRTP authentication) is never confirmed, so
        // the real stream still latches.
        let mut l = nat();
        let now = Instant::now();
        assert_eq!(l.admit(a("198.51.100.66:666"), now), Admit::Latch);
        assert_eq!(l.admit(a("192.0.2.7:4000"), now), Admit::Accept);
        l.confirm(a("192.0.2.7:4000"), now);
        assert_eq!(l.admit(a("198.51.100.66:666"), now), Admit::Reject);
        assert!(!l.is_latched_elsewhere());
    }

    #[test]
    fn reoffer_resets_the_latch_and_keeps_the_policy() {
        let mut l = nat();
        let now = Instant::now();
        l.confirm(a("203.0.113.9:31000"), now);
        l.set_signalled(Some(a("192.0.2.8:5000")));
        assert_eq!(l.policy(), LatchPolicy::Nat { quiet: QUIET });
        assert_eq!(l.destination(), Some(a("192.0.2.8:5000")));
        assert_eq!(l.admit(a("192.0.2.8:5000"), now), Admit::Accept);
        assert_eq!(l.admit(a("203.0.113.9:31000"), now), Admit::Latch);
    }
}
