//! Named transaction timers (RFC 3261 Table 4, RFC 6026 §8.4/§8.7) and the
//! table that answers "what fires next".
//!
//! The table is a fixed array indexed by [`Timer`], in the style of
//! quinn-proto's `TimerTable`: setting a timer overwrites its previous
//! deadline, stopping it clears it, and the next deadline is the minimum over
//! all armed timers. Ties are broken by the declaration order of [`Timer`] so
//! that expiry order is deterministic.

use std::time::{Duration, Instant};

/// Every timer of RFC 3261 §17 plus the two RFC 6026 adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// INVITE client: request retransmit interval, unreliable only (§17.1.1.2).
    A = 0,
    /// INVITE client: transaction timeout, 64*T1 (§17.1.1.2).
    B = 1,
    /// INVITE client: wait time for response retransmissions in Completed (§17.1.1.2).
    D = 2,
    /// Non-INVITE client: request retransmit interval, unreliable only (§17.1.2.2).
    E = 3,
    /// Non-INVITE client: transaction timeout, 64*T1 (§17.1.2.2).
    F = 4,
    /// INVITE server: final response retransmit interval, unreliable only (§17.2.1).
    G = 5,
    /// INVITE server: wait time for ACK receipt, 64*T1 (§17.2.1).
    H = 6,
    /// INVITE server: wait time for ACK retransmissions in Confirmed (§17.2.1).
    I = 7,
    /// Non-INVITE server: wait time for request retransmissions (§17.2.2).
    J = 8,
    /// Non-INVITE client: wait time for response retransmissions (§17.1.2.2).
    K = 9,
    /// INVITE server: wait time in Accepted for INVITE retransmissions (RFC 6026 §8.7).
    L = 10,
    /// INVITE client: wait time in Accepted for 2xx retransmissions (RFC 6026 §8.4).
    M = 11,
}

impl Timer {
    /// Every timer, in index order.
    pub const ALL: [Timer; 12] = [
        Timer::A,
        Timer::B,
        Timer::D,
        Timer::E,
        Timer::F,
        Timer::G,
        Timer::H,
        Timer::I,
        Timer::J,
        Timer::K,
        Timer::L,
        Timer::M,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Deadlines of the named timers of one transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimerTable {
    data: [Option<Instant>; 12],
}

impl TimerTable {
    /// An empty table (no timer armed).
    pub fn new() -> TimerTable {
        TimerTable::default()
    }

    /// Arms `t` to fire at `at`, replacing any earlier deadline.
    pub fn set(&mut self, t: Timer, at: Instant) {
        if let Some(slot) = self.data.get_mut(t.index()) {
            *slot = Some(at);
        }
    }

    /// Disarms `t` (no-op when it is not armed).
    pub fn stop(&mut self, t: Timer) {
        if let Some(slot) = self.data.get_mut(t.index()) {
            *slot = None;
        }
    }

    /// Disarms every timer.
    pub fn clear(&mut self) {
        self.data = [None; 12];
    }

    /// The deadline of `t`, if armed.
    pub fn get(&self, t: Timer) -> Option<Instant> {
        self.data.get(t.index()).copied().flatten()
    }

    /// The earliest armed timer and its deadline (ties: declaration order).
    pub fn next(&self) -> Option<(Timer, Instant)> {
        let mut best: Option<(Timer, Instant)> = None;
        for t in Timer::ALL {
            if let Some(at) = self.get(t) {
                match best {
                    Some((_, b)) if b <= at => {}
                    _ => best = Some((t, at)),
                }
            }
        }
        best
    }

    /// The earliest timer whose deadline is at or before `now`. The caller
    /// stops it (or re-arms it) before asking again.
    pub fn expired(&self, now: Instant) -> Option<Timer> {
        match self.next() {
            Some((t, at)) if at <= now => Some(t),
            _ => None,
        }
    }

    /// Arms `t` at `now + after`; a deadline that would overflow `Instant`
    /// is treated as "never" and leaves the timer disarmed.
    pub(crate) fn set_after(&mut self, t: Timer, now: Instant, after: Duration) {
        match now.checked_add(after) {
            Some(at) => self.set(t, at),
            None => self.stop(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_has_no_deadline() {
        let t = TimerTable::new();
        assert_eq!(t.next(), None);
        assert_eq!(t.expired(Instant::now()), None);
    }

    #[test]
    fn next_is_the_minimum_and_stop_removes() {
        let base = Instant::now();
        let mut t = TimerTable::new();
        t.set(Timer::B, base + Duration::from_secs(32));
        t.set(Timer::A, base + Duration::from_millis(500));
        t.set(Timer::M, base + Duration::from_secs(1));
        assert_eq!(
            t.next(),
            Some((Timer::A, base + Duration::from_millis(500)))
        );
        t.stop(Timer::A);
        assert_eq!(t.next(), Some((Timer::M, base + Duration::from_secs(1))));
        t.stop(Timer::M);
        assert_eq!(t.next(), Some((Timer::B, base + Duration::from_secs(32))));
        t.stop(Timer::B);
        assert_eq!(t.next(), None);
        // stopping an unarmed timer is harmless
        t.stop(Timer::K);
        assert_eq!(t.next(), None);
    }

    #[test]
    fn set_overwrites_previous_deadline() {
        let base = Instant::now();
        let mut t = TimerTable::new();
        t.set(Timer::E, base + Duration::from_secs(4));
        t.set(Timer::E, base + Duration::from_secs(1));
        assert_eq!(t.get(Timer::E), Some(base + Duration::from_secs(1)));
        assert_eq!(t.next(), Some((Timer::E, base + Duration::from_secs(1))));
    }

    #[test]
    fn expired_respects_now_and_ties_break_by_declaration_order() {
        let base = Instant::now();
        let at = base + Duration::from_secs(2);
        let mut t = TimerTable::new();
        t.set(Timer::H, at);
        t.set(Timer::G, at);
        assert_eq!(t.expired(base), None);
        assert_eq!(t.expired(at - Duration::from_nanos(1)), None);
        assert_eq!(t.expired(at), Some(Timer::G));
        t.stop(Timer::G);
        assert_eq!(t.expired(at), Some(Timer::H));
        t.stop(Timer::H);
        assert_eq!(t.expired(at + Duration::from_secs(100)), None);
    }

    #[test]
    fn every_timer_has_its_own_slot() {
        let base = Instant::now();
        let mut t = TimerTable::new();
        for (i, timer) in Timer::ALL.iter().enumerate() {
            t.set(*timer, base + Duration::from_secs(100 - i as u64));
        }
        for (i, timer) in Timer::ALL.iter().enumerate() {
            assert_eq!(
                t.get(*timer),
                Some(base + Duration::from_secs(100 - i as u64))
            );
        }
        assert_eq!(t.next().map(|(x, _)| x), Some(Timer::M));
        t.clear();
        assert_eq!(t.next(), None);
    }

    #[test]
    fn set_after_overflow_disarms() {
        let base = Instant::now();
        let mut t = TimerTable::new();
        t.set(Timer::D, base);
        t.set_after(Timer::D, base, Duration::MAX);
        assert_eq!(t.get(Timer::D), None);
        t.set_after(Timer::D, base, Duration::from_secs(32));
        assert_eq!(t.get(Timer::D), Some(base + Duration::from_secs(32)));
    }
}
