//! Requests from addresses that are no peer: no transaction, no 100 Trying, no retransmission.
//! At most one small stateless 403 per source per interval (or nothing, by configuration), so
//! a spoofed source draws no more than that toward its victim and costs us no state beyond a
//! bounded table of when each source was last answered.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::UnknownSenders as Mode;

/// Sources remembered at most; when full, the stale ones go, and with none stale no answer.
const MAX_TRACKED: usize = 4096;

#[derive(Debug)]
pub(super) struct UnknownSenders {
    mode: Mode,
    interval: Duration,
    answered: HashMap<IpAddr, Instant>,
}

impl UnknownSenders {
    pub fn new(mode: Mode, interval: Duration) -> UnknownSenders {
        UnknownSenders {
            mode,
            interval,
            answered: HashMap::new(),
        }
    }

    /// May `src` get an answer at `now`? Records it when so.
    pub fn may_answer(&mut self, src: IpAddr, now: Instant) -> bool {
        if self.mode == Mode::Silent {
            return false;
        }
        let interval = self.interval;
        if let Some(last) = self.answered.get(&src) {
            if now.saturating_duration_since(*last) < interval {
                return false;
            }
        }
        if self.answered.len() >= MAX_TRACKED && !self.answered.contains_key(&src) {
            self.answered
                .retain(|_, t| now.saturating_duration_since(*t) < interval);
            if self.answered.len() >= MAX_TRACKED {
                return false;
            }
        }
        self.answered.insert(src, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_answer_per_source_per_interval_and_bounded() {
        let t0 = Instant::now();
        let mut u = UnknownSenders::new(Mode::Reject, Duration::from_secs(10));
        let a: IpAddr = "127.0.0.9".parse().unwrap();
        assert!(u.may_answer(a, t0));
        assert!(!u.may_answer(a, t0 + Duration::from_secs(9)));
        assert!(u.may_answer(a, t0 + Duration::from_secs(10)));
        // A spoofing storm from many sources fills the table, then gets silence.
        let mut answered = 0;
        for i in 0..10_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            if u.may_answer(ip, t0 + Duration::from_secs(10)) {
                answered += 1;
            }
        }
        assert_eq!(answered, MAX_TRACKED - 1);
        // Once the interval has passed, the table makes room again.
        assert!(u.may_answer("10.9.9.9".parse().unwrap(), t0 + Duration::from_secs(30)));
        let mut silent = UnknownSenders::new(Mode::Silent, Duration::from_secs(10));
        assert!(!silent.may_answer(a, t0));
    }
}
