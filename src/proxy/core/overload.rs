//! Overload control, before any state is kept: per-peer request rates, an appliance-wide rate of
//! new calls and a cap on calls in progress, and a bounded transaction table. A request over a
//! limit gets a stateless 503 with Retry-After (no transaction, never retransmitted by us) —
//! and even those answers are rate-limited per peer, so a flood is answered at a bounded rate
//! and otherwise dropped. Requests inside dialogs (ACK, BYE, re-INVITE, …) and CANCEL are not
//! subject to the rates: established calls keep working while a trunk floods.
//!
//! Pure: every instant comes in as `now`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens per second, up to `burst`.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket. A rate of 0 admits nothing; `burst` is at least 1.
    pub fn new(rate: f64, burst: f64) -> TokenBucket {
        let burst = burst.max(1.0);
        TokenBucket {
            rate: rate.max(0.0),
            burst,
            tokens: burst,
            last: None,
        }
    }

    /// Takes one token at `now`; false when the bucket is empty.
    pub fn take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The limits, from configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// New (out-of-dialog) requests per second per peer, and their burst.
    pub peer_rate: f64,
    pub peer_burst: f64,
    /// Per-peer overrides (gateway names, the cloud peer's FQDN): (rate, burst).
    pub peer_overrides: HashMap<String, (f64, f64)>,
    /// New calls (initial INVITEs) per second, all peers together.
    pub calls_per_second: f64,
    /// Calls in progress or established, all peers together.
    pub max_calls: usize,
    /// Server transactions kept at once.
    pub max_transactions: usize,
    /// Stateless 503s per second per peer (beyond: dropped silently).
    pub refusals_per_second: f64,
    /// Retry-After of our 503s.
    pub retry_after: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            peer_rate: 200.0,
            peer_burst: 400.0,
            peer_overrides: HashMap::new(),
            calls_per_second: 500.0,
            max_calls: 10_000,
            max_transactions: 50_000,
            refusals_per_second: 50.0,
            retry_after: Duration::from_secs(5),
        }
    }
}

/// Why a request is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// The peer is over its request rate.
    PeerRate,
    /// Too many new calls per second, appliance-wide.
    CallRate,
    /// Too many calls at once.
    Calls,
    /// The transaction table is full.
    Transactions,
    /// Maintenance mode: the appliance takes no new calls (nor OPTIONS) until it leaves it.
    Maintenance,
    /// The drain after SIGTERM: no new calls before the process exits.
    Draining,
}

impl Shed {
    /// The bounded label of metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Shed::PeerRate => "peer_rate",
            Shed::CallRate => "call_rate",
            Shed::Calls => "calls",
            Shed::Transactions => "transactions",
            Shed::Maintenance => "maintenance",
            Shed::Draining => "draining",
        }
    }
}

/// What to do with a shed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A stateless 503 with Retry-After.
    Refuse,
    /// Nothing: the peer's refusals are over their rate.
    Drop,
}

/// The overload state of one core.
#[derive(Debug)]
pub struct Overload {
    limits: Limits,
    peers: HashMap<String, TokenBucket>,
    refusals: HashMap<String, TokenBucket>,
    calls: TokenBucket,
}

/// Peers tracked at most (the configuration bounds them; this bounds a bug).
const MAX_PEERS: usize = 4096;

impl Overload {
    pub fn new(limits: Limits) -> Overload {
        let calls = TokenBucket::new(limits.calls_per_second, limits.calls_per_second.max(1.0));
        Overload {
            limits,
            peers: HashMap::new(),
            refusals: HashMap::new(),
            calls,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// New limits (configuration reload); the buckets start over.
    pub fn set_limits(&mut self, limits: Limits) {
        *self = Overload::new(limits);
    }

    fn bucket<'a>(
        map: &'a mut HashMap<String, TokenBucket>,
        peer: &str,
        make: impl FnOnce() -> TokenBucket,
    ) -> Option<&'a mut TokenBucket> {
        if !map.contains_key(peer) {
            if map.len() >= MAX_PEERS {
                return None;
            }
            map.insert(peer.to_owned(), make());
        }
        map.get_mut(peer)
    }

    /// Admits (or not) an out-of-dialog request from `peer` at `now`. `invite`: it starts a
    /// call; `calls`: calls in progress or established; `transactions`: server transactions
    /// kept now.
    pub fn admit(
        &mut self,
        now: Instant,
        peer: &str,
        invite: bool,
        calls: usize,
        transactions: usize,
    ) -> Result<(), Shed> {
        if transactions >= self.limits.max_transactions {
            return Err(Shed::Transactions);
        }
        let (rate, burst) = self
            .limits
            .peer_overrides
            .get(peer)
            .copied()
            .unwrap_or((self.limits.peer_rate, self.limits.peer_burst));
        let ok = Self::bucket(&mut self.peers, peer, || TokenBucket::new(rate, burst))
            .is_some_and(|b| b.take(now));
        if !ok {
            return Err(Shed::PeerRate);
        }
        if invite {
            if calls >= self.limits.max_calls {
                return Err(Shed::Calls);
            }
            if !self.calls.take(now) {
                return Err(Shed::CallRate);
            }
        }
        Ok(())
    }

    /// Whether a shed request from `peer` still gets its 503 (else it is dropped).
    pub fn answer(&mut self, now: Instant, peer: &str) -> Answer {
        let rate = self.limits.refusals_per_second;
        let ok = Self::bucket(&mut self.refusals, peer, || TokenBucket::new(rate, rate))
            .is_some_and(|b| b.take(now));
        if ok {
            Answer::Refuse
        } else {
            Answer::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_its_rate_up_to_its_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3.0);
        assert!(b.take(t0) && b.take(t0) && b.take(t0));
        assert!(!b.take(t0), "burst spent");
        assert!(
            b.take(t0 + Duration::from_millis(100)),
            "one token per 100 ms"
        );
        assert!(!b.take(t0 + Duration::from_millis(150)));
        // A long pause refills to the burst, not beyond.
        let t1 = t0 + Duration::from_secs(60);
        assert!(b.take(t1) && b.take(t1) && b.take(t1));
        assert!(!b.take(t1));
    }

    #[test]
    fn one_peer_over_its_rate_does_not_touch_another() {
        let t0 = Instant::now();
        let mut o = Overload::new(Limits {
            peer_rate: 10.0,
            peer_burst: 10.0,
            ..Limits::default()
        });
        let mut flooded = 0;
        for _ in 0..1000 {
            if o.admit(t0, "gw2", true, 0, 0) == Err(Shed::PeerRate) {
                flooded += 1;
            }
        }
        assert_eq!(flooded, 990);
        assert_eq!(o.admit(t0, "gw1", true, 0, 0), Ok(()));
    }

    #[test]
    fn overrides_calls_and_transactions() {
        let t0 = Instant::now();
        let mut limits = Limits {
            max_calls: 2,
            max_transactions: 5,
            calls_per_second: 1.0,
            ..Limits::default()
        };
        limits.peer_overrides.insert("cloud".into(), (0.0, 1.0));
        let mut o = Overload::new(limits);
        assert_eq!(o.admit(t0, "cloud", false, 0, 0), Ok(()));
        assert_eq!(o.admit(t0, "cloud", false, 0, 0), Err(Shed::PeerRate));
        assert_eq!(o.admit(t0, "gw1", true, 2, 0), Err(Shed::Calls));
        assert_eq!(o.admit(t0, "gw1", true, 0, 5), Err(Shed::Transactions));
        assert_eq!(o.admit(t0, "gw1", true, 0, 0), Ok(()));
        assert_eq!(o.admit(t0, "gw1", true, 0, 0), Err(Shed::CallRate));
        // Non-INVITE requests are not calls.
        assert_eq!(o.admit(t0, "gw1", false, 2, 0), Ok(()));
    }

    #[test]
    fn refusals_are_rate_limited_per_peer() {
        let t0 = Instant::now();
        let mut o = Overload::new(Limits {
            refusals_per_second: 2.0,
            ..Limits::default()
        });
        assert_eq!(o.answer(t0, "gw2"), Answer::Refuse);
        assert_eq!(o.answer(t0, "gw2"), Answer::Refuse);
        assert_eq!(o.answer(t0, "gw2"), Answer::Drop);
        assert_eq!(o.answer(t0, "gw1"), Answer::Refuse);
        assert_eq!(o.answer(t0 + Duration::from_secs(1), "gw2"), Answer::Refuse);
    }
}
