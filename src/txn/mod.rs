//! Sans-IO SIP transactions: RFC 3261 §17 with the RFC 6026 corrections.
//!
//! The four machines work on opaque wire messages ([`bytes::Bytes`]) and the
//! few facts the caller extracts (status code, method, Via branch …); this
//! module does not depend on the SIP parser. Nothing here does IO or reads
//! the clock: every input carries `now`, and the caller drains
//! `poll_transmit` / `poll_event` and sleeps until `poll_timeout` (the style
//! of quinn-proto's `Connection`). Each transaction keeps its named timers
//! in one [`TimerTable`].
//!
//! Zero-duration timers (D, I, J, K on a reliable transport) are armed at the
//! `now` of the call that armed them: the state is observable for that
//! instant, and the caller's next `handle_timeout(now)` terminates.
//!
//! ## INVITE client (§17.1.1.2, RFC 6026 §8.4)
//! ```text
//!          Timer A (unreliable): resend, A = 2A
//!                +---+
//!                v   |
//!             +---------+       Timer B: Timeout
//!             | Calling |-----------------------------------+
//!             +---------+                                   |
//!    1xx:        |   |  2xx: Final, Timer M                 |
//!    Provisional |   +------------------------+             |
//!    (stop A, B) v                            v             |
//!      +------------+  2xx: Final, Timer M  +----------+    |
//!      | Proceeding |---------------------->| Accepted |    |
//!      +------------+                       +----------+    |
//!      1xx: Provisional       2xx: Final (again) |          |
//!                                        Timer M |          |
//!      300-699 from Calling or Proceeding:       v          v
//!      Final, send ACK, Timer D (32 s / 0)  +------------------+
//!                    |                      |    Terminated    |
//!                    v                      +------------------+
//!             +-----------+   Timer D                ^
//!             | Completed |--------------------------+
//!             +-----------+
//!      300-699 again: resend ACK (absorbed)
//! ```
//! ## Non-INVITE client (§17.1.2.2)
//! ```text
//!   Timer E: resend, E = min(2E, T2)          Timer E: resend, E = T2
//!   +--------+   1xx: Provisional   +------------+
//!   | Trying |--------------------->| Proceeding |  1xx: Provisional
//!   +--------+                      +------------+
//!       | 200-699: Final                  | 200-699: Final
//!       +----------------+----------------+
//!                        v
//!   +-----------+ Timer K (T4 / 0) +------------+
//!   | Completed |----------------->| Terminated |<-- Timer F: Timeout
//!   +-----------+                  +------------+    (Trying, Proceeding)
//!    responses absorbed
//! ```
//! ## INVITE server (§17.2.1, RFC 6026 §8.7)
//! ```text
//!   +------------+ 1xx from TU: send; INVITE again: resend last 1xx
//!   | Proceeding |
//!   +------------+-- 2xx from TU: send, Timer L --> +----------+
//!         |                                         | Accepted | 2xx from TU: send
//!         | 300-699 from TU: send,                  +----------+ INVITE: absorbed
//!         | Timer G (unreliable), Timer H                |       ACK: to TU (false)
//!         v                                      Timer L |
//!   +-----------+ Timer G: resend, G = min(2G, T2)       v
//!   | Completed | INVITE again: resend final       +------------+
//!   +-----------+-- Timer H: Timeout ------------->| Terminated |
//!         | ACK: Timer I (T4 / 0)                  +------------+
//!         v                                              ^
//!   +-----------+ ACK: absorbed                          |
//!   | Confirmed |---------- Timer I ---------------------+
//!   +-----------+
//! ```
//! ## Non-INVITE server (§17.2.2)
//! ```text
//!   +--------+ 1xx from TU  +------------+ 1xx from TU: send
//!   | Trying |------------->| Proceeding | request again: resend last 1xx
//!   +--------+              +------------+
//!    request again:               |
//!    absorbed  | 200-699 from TU: send, Timer J (64*T1 / 0)
//!              +------------------+
//!                                 v
//!   +-----------+ request again: resend final; further finals discarded
//!   | Completed |---- Timer J ----> [Terminated]
//!   +-----------+
//! ```
//! Any transport error in a live state → [`State::Terminated`] with a
//! `TransportError` event. Server transactions also emit
//! [`ServerEvent::Terminated`] exactly once when they terminate.
//!
//! The INVITE server transaction never sends `100 Trying` on its own: the
//! proxy TU sends it through `send_response` (§17.2.1 allows this: "unless
//! it knows that the TU will generate a provisional or final response within
//! 200 ms").
//!
//! Matching keys ([`ClientKey`], [`ServerKey`]) follow §17.1.3 and §17.2.3
//! including the RFC 2543 fallback; [`branch_for`] makes stable branches for
//! §16.6 step 8.

mod client;
mod key;
mod server;
#[cfg(test)]
mod sim;
mod timer;

use std::time::Duration;

pub use client::{ClientEvent, ClientTxn};
pub use key::{branch_for, BranchKey, ClientKey, RequestFacts, ServerKey, TxnMethod, MAGIC_COOKIE};
pub use server::{ServerEvent, ServerTxn};
pub use timer::{Timer, TimerTable};

/// Timer base values (RFC 3261 §17.1.1.1 and Table 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate, default 500 ms.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE
    /// responses, default 4 s.
    pub t2: Duration,
    /// Maximum duration a message remains in the network, default 5 s.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// The smallest T1 the machines use (1 ms): a zero T1 would make the
    /// retransmission timers A, E and G fire forever at the same instant.
    pub const MIN_T1: Duration = Duration::from_millis(1);

    /// The configuration the machines actually run with: T1 raised to
    /// [`TimerConfig::MIN_T1`], T2 raised to T1 (§17.1.2.2 caps intervals
    /// at T2, which must not be below T1). T4 may be zero.
    pub fn sanitized(&self) -> TimerConfig {
        let t1 = self.t1.max(Self::MIN_T1);
        TimerConfig {
            t1,
            t2: self.t2.max(t1),
            t4: self.t4,
        }
    }

    /// 64*T1: Timers B, F, H, J (unreliable), L, M.
    pub fn timeout_64t1(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// Timer D on an unreliable transport: "at least 32 s" (Table 4). With a
    /// raised T1 the server keeps retransmitting its final for 64*T1 (Timer
    /// H), so D is max(32 s, 64*T1) to keep absorbing those.
    pub fn timer_d(&self) -> Duration {
        Duration::from_secs(32).max(self.timeout_64t1())
    }
}

/// The four transaction machines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnKind {
    /// §17.1.1 with RFC 6026.
    InviteClient,
    /// §17.1.2.
    NonInviteClient,
    /// §17.2.1 with RFC 6026.
    InviteServer,
    /// §17.2.2.
    NonInviteServer,
}

/// Transaction states (union over the four machines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// INVITE client: request sent, nothing heard.
    Calling,
    /// Non-INVITE client and server: initial state.
    Trying,
    /// A provisional response was received (client) or the request is being
    /// worked on (server).
    Proceeding,
    /// A 3xx-6xx (INVITE) or any final (non-INVITE) was received/sent.
    Completed,
    /// INVITE server: the ACK for the 3xx-6xx arrived.
    Confirmed,
    /// INVITE, RFC 6026: a 2xx was received/sent.
    Accepted,
    /// Done: the caller drops the transaction.
    Terminated,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_timer_values_rfc3261_table4() {
        let c = TimerConfig::default();
        assert_eq!(c.t1, Duration::from_millis(500));
        assert_eq!(c.t2, Duration::from_secs(4));
        assert_eq!(c.t4, Duration::from_secs(5));
        assert_eq!(c.timeout_64t1(), Duration::from_secs(32));
        assert_eq!(c.timer_d(), Duration::from_secs(32));
        assert_eq!(c.sanitized(), c);
    }

    #[test]
    fn sanitized_raises_t1_and_t2() {
        let c = TimerConfig {
            t1: Duration::ZERO,
            t2: Duration::ZERO,
            t4: Duration::ZERO,
        }
        .sanitized();
        assert_eq!(c.t1, TimerConfig::MIN_T1);
        assert_eq!(c.t2, TimerConfig::MIN_T1);
        assert_eq!(c.t4, Duration::ZERO);
        let c = TimerConfig {
            t1: Duration::from_secs(2),
            t2: Duration::from_secs(1),
            t4: Duration::from_secs(5),
        }
        .sanitized();
        assert_eq!(c.t2, Duration::from_secs(2));
    }

    /// A proxy keeps one of these per in-flight transaction: keep them small
    /// (measured 392 / 360 bytes on x86_64, the timer table being 192).
    #[test]
    fn per_transaction_footprint() {
        eprintln!(
            "ClientTxn={} ServerTxn={} TimerTable={} ServerKey={} bytes",
            std::mem::size_of::<ClientTxn>(),
            std::mem::size_of::<ServerTxn>(),
            std::mem::size_of::<TimerTable>(),
            std::mem::size_of::<ServerKey>()
        );
        assert!(std::mem::size_of::<ClientTxn>() <= 512);
        assert!(std::mem::size_of::<ServerTxn>() <= 512);
        assert!(std::mem::size_of::<TimerTable>() <= 12 * 16);
    }
}
