//! Deterministic simulator for the transaction machines (tests only).
//!
//! One client transaction and the server transaction it creates on the far
//! side, a virtual clock (`base + now`), and a link that delays, drops,
//! duplicates and reorders datagrams deterministically (seeded xorshift or
//! explicit per-message rules). The driver always advances the clock to the
//! earliest of: both `poll_timeout()`s, the next delivery and the next
//! scripted TU action.
//!
//! Wire messages are fake: a 1-byte tag, plus a big-endian status for
//! responses. `Q` request, `A` ACK for a non-2xx (built by the client
//! "caller"), `2` ACK for a 2xx (sent by the client TU, transaction-less),
//! `R` response.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{ClientEvent, ClientTxn, ServerEvent, ServerTxn, State, TimerConfig};

const REQ: u8 = b'Q';
const ACK: u8 = b'A';
const ACK_2XX: u8 = b'2';
const RESP: u8 = b'R';

fn request() -> Bytes {
    Bytes::from_static(&[REQ])
}

fn ack() -> Bytes {
    Bytes::from_static(&[ACK])
}

fn ack_2xx() -> Bytes {
    Bytes::from_static(&[ACK_2XX])
}

fn response(status: u16) -> Bytes {
    let s = status.to_be_bytes();
    Bytes::copy_from_slice(&[RESP, s[0], s[1]])
}

fn status_of(msg: &[u8]) -> Option<u16> {
    match msg {
        [RESP, hi, lo] => Some(u16::from_be_bytes([*hi, *lo])),
        _ => None,
    }
}

/// xorshift64* — deterministic, no dependency.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        // never zero (xorshift fixed point)
        Rng((seed ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with probability `pct`/100.
    pub(crate) fn chance(&mut self, pct: u64) -> bool {
        self.next_u64() % 100 < pct
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// Direction of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    ToServer,
    ToClient,
}

impl Dir {
    fn idx(self) -> usize {
        match self {
            Dir::ToServer => 0,
            Dir::ToClient => 1,
        }
    }
}

type Rule = Box<dyn Fn(Dir, usize) -> bool>;

/// Link behaviour. Explicit rules take `(direction, n)` where `n` counts
/// the sends in that direction from 0.
pub(crate) struct Link {
    /// One-way delay.
    pub delay: Duration,
    /// Random loss, percent (unreliable transport only).
    pub drop_pct: u64,
    /// Random duplication, percent (unreliable only).
    pub dup_pct: u64,
    /// Random extra delay in `0..jitter` per copy, which reorders datagrams.
    pub jitter: Duration,
    /// Deterministic loss.
    pub drop: Rule,
    /// The transport reports a send error (the datagram is not sent).
    pub fail: Rule,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            delay: Duration::from_millis(10),
            drop_pct: 0,
            dup_pct: 0,
            jitter: Duration::ZERO,
            drop: Box::new(|_, _| false),
            fail: Box::new(|_, _| false),
        }
    }
}

#[derive(Clone, Debug)]
struct Flight {
    at: Duration,
    seq: u64,
    dir: Dir,
    msg: Bytes,
}

/// A record of something that happened, for assertions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sent {
    pub at: Duration,
    pub dir: Dir,
    pub msg: Bytes,
}

pub(crate) struct Sim {
    base: Instant,
    pub now: Duration,
    invite: bool,
    reliable: bool,
    cfg: TimerConfig,
    link: Link,
    rng: Rng,
    flights: Vec<Flight>,
    seq: u64,
    sends: [usize; 2],
    pub client: ClientTxn,
    pub server: Option<ServerTxn>,
    server_start: Option<Duration>,
    /// Server TU: (offset from request arrival, status) in order.
    script: Vec<(Duration, u16)>,
    next_step: usize,
    /// Client TU sends an ACK (`2`) for every 2xx it is given.
    pub client_acks_2xx: bool,
    /// Every send attempt that reached the wire (before loss).
    pub sent: Vec<Sent>,
    pub client_events: Vec<(Duration, ClientEvent)>,
    pub server_events: Vec<(Duration, ServerEvent)>,
    pub client_states: Vec<(Duration, State)>,
    pub server_states: Vec<(Duration, State)>,
    /// (time, tag, absorbed) for every ACK delivered to a live server txn.
    pub acks: Vec<(Duration, u8, bool)>,
    /// Messages that arrived when the receiving transaction was gone.
    pub strays: Vec<Sent>,
    /// Datagrams lost on the link (rules and random loss).
    pub lost: usize,
    /// Extra copies created by random duplication.
    pub duplicated: usize,
}

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

impl Sim {
    pub(crate) fn new(
        invite: bool,
        reliable: bool,
        link: Link,
        seed: u64,
        script: &[(u64, u16)],
    ) -> Sim {
        let base = Instant::now();
        let cfg = TimerConfig::default();
        let client = ClientTxn::new(base, invite, request(), reliable, &cfg);
        let mut sim = Sim {
            base,
            now: Duration::ZERO,
            invite,
            reliable,
            cfg,
            link,
            rng: Rng::new(seed),
            flights: Vec::new(),
            seq: 0,
            sends: [0, 0],
            client,
            server: None,
            server_start: None,
            script: script.iter().map(|&(o, s)| (ms(o), s)).collect(),
            next_step: 0,
            client_acks_2xx: invite,
            sent: Vec::new(),
            client_events: Vec::new(),
            server_events: Vec::new(),
            client_states: Vec::new(),
            server_states: Vec::new(),
            acks: Vec::new(),
            strays: Vec::new(),
            lost: 0,
            duplicated: 0,
        };
        sim.client_states.push((Duration::ZERO, sim.client.state()));
        sim
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    fn offset(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.base)
    }

    /// Runs until nothing is scheduled or the clock would pass `limit`.
    pub(crate) fn run(&mut self, limit: Duration) {
        self.pump();
        while let Some(next) = self.next_wakeup() {
            if next > limit {
                break;
            }
            self.now = self.now.max(next);
            self.step();
        }
    }

    fn next_wakeup(&self) -> Option<Duration> {
        let mut cands = Vec::new();
        if let Some(t) = self.client.poll_timeout() {
            cands.push(self.offset(t));
        }
        if let Some(t) = self.server.as_ref().and_then(|s| s.poll_timeout()) {
            cands.push(self.offset(t));
        }
        if let Some(f) = self.flights.iter().map(|f| f.at).min() {
            cands.push(f);
        }
        if let (Some(start), Some((off, _))) = (self.server_start, self.script.get(self.next_step))
        {
            cands.push(start + *off);
        }
        cands.into_iter().min()
    }

    fn step(&mut self) {
        // 1. deliveries due now, in (time, send order) order
        loop {
            let due = self
                .flights
                .iter()
                .enumerate()
                .filter(|(_, f)| f.at <= self.now)
                .min_by_key(|(_, f)| (f.at, f.seq))
                .map(|(i, _)| i);
            let Some(i) = due else { break };
            let f = self.flights.swap_remove(i);
            self.deliver(f.dir, f.msg);
            self.pump();
        }
        // 2. server TU actions due now
        while let (Some(start), Some(&(off, status))) =
            (self.server_start, self.script.get(self.next_step))
        {
            if start + off > self.now {
                break;
            }
            self.next_step += 1;
            let now = self.instant();
            if let Some(s) = self.server.as_mut() {
                s.send_response(now, status, response(status));
            }
            self.pump();
        }
        // 3. timers
        let now = self.instant();
        self.client.handle_timeout(now);
        if let Some(s) = self.server.as_mut() {
            s.handle_timeout(now);
        }
        self.pump();
    }

    fn deliver(&mut self, dir: Dir, msg: Bytes) {
        let now = self.instant();
        let rec = Sent {
            at: self.now,
            dir,
            msg: msg.clone(),
        };
        match dir {
            Dir::ToServer => match (msg.first().copied(), self.server.as_mut()) {
                (Some(REQ), None) => {
                    self.server = Some(ServerTxn::new(now, self.invite, self.reliable, &self.cfg));
                    self.server_start = Some(self.now);
                }
                (_, Some(s)) if s.is_terminated() => self.strays.push(rec),
                (Some(REQ), Some(s)) => s.handle_retransmission(now),
                (Some(tag @ (ACK | ACK_2XX)), Some(s)) => {
                    let absorbed = s.handle_ack(now);
                    self.acks.push((self.now, tag, absorbed));
                }
                _ => self.strays.push(rec),
            },
            Dir::ToClient => match status_of(&msg) {
                Some(_) if self.client.is_terminated() => self.strays.push(rec),
                Some(status) => {
                    let a = (self.invite && status >= 300).then(ack);
                    self.client.handle_response(now, status, a);
                }
                None => self.strays.push(rec),
            },
        }
    }

    /// Moves transmits onto the link and records events/states until quiet.
    fn pump(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(m) = self.client.poll_transmit() {
                progressed = true;
                self.send(Dir::ToServer, m);
            }
            while let Some(m) = self.server.as_mut().and_then(|s| s.poll_transmit()) {
                progressed = true;
                self.send(Dir::ToClient, m);
            }
            while let Some(e) = self.client.poll_event() {
                progressed = true;
                self.client_events.push((self.now, e));
                if let ClientEvent::Final(200..=299) = e {
                    if self.client_acks_2xx {
                        // the TU's ACK for a 2xx is its own request (§13.2.2.4)
                        self.send(Dir::ToServer, ack_2xx());
                    }
                }
            }
            while let Some(e) = self.server.as_mut().and_then(|s| s.poll_event()) {
                progressed = true;
                self.server_events.push((self.now, e));
            }
            if !progressed {
                break;
            }
        }
        let cs = self.client.state();
        if self.client_states.last().map(|x| x.1) != Some(cs) {
            self.client_states.push((self.now, cs));
        }
        if let Some(ss) = self.server.as_ref().map(|s| s.state()) {
            if self.server_states.last().map(|x| x.1) != Some(ss) {
                self.server_states.push((self.now, ss));
            }
        }
    }

    fn send(&mut self, dir: Dir, msg: Bytes) {
        let n = self.sends[dir.idx()];
        self.sends[dir.idx()] += 1;
        if (self.link.fail)(dir, n) {
            let now = self.instant();
            match dir {
                Dir::ToServer => self.client.handle_transport_error(now),
                Dir::ToClient => {
                    if let Some(s) = self.server.as_mut() {
                        s.handle_transport_error(now);
                    }
                }
            }
            return;
        }
        self.sent.push(Sent {
            at: self.now,
            dir,
            msg: msg.clone(),
        });
        if (self.link.drop)(dir, n) {
            self.lost += 1;
            return;
        }
        let mut copies = 1;
        if !self.reliable {
            if self.rng.chance(self.link.drop_pct) {
                self.lost += 1;
                return;
            }
            if self.rng.chance(self.link.dup_pct) {
                self.duplicated += 1;
                copies = 2;
            }
        }
        for _ in 0..copies {
            let jitter = if self.reliable {
                Duration::ZERO
            } else {
                let j = self.link.jitter.as_micros() as u64;
                Duration::from_micros(self.rng.below(j))
            };
            self.seq += 1;
            self.flights.push(Flight {
                at: self.now + self.link.delay + jitter,
                seq: self.seq,
                dir,
                msg: msg.clone(),
            });
        }
    }

    // ---- query helpers ----

    /// Times at which messages with this tag went out in `dir`.
    pub(crate) fn sent_times(&self, dir: Dir, tag: u8) -> Vec<Duration> {
        self.sent
            .iter()
            .filter(|s| s.dir == dir && s.msg.first() == Some(&tag))
            .map(|s| s.at)
            .collect()
    }

    /// Times at which the server sent a response with `status`.
    pub(crate) fn responses_sent(&self, status: u16) -> Vec<Duration> {
        self.sent
            .iter()
            .filter(|s| s.dir == Dir::ToClient && status_of(&s.msg) == Some(status))
            .map(|s| s.at)
            .collect()
    }

    pub(crate) fn client_path(&self) -> Vec<State> {
        self.client_states.iter().map(|x| x.1).collect()
    }

    pub(crate) fn server_path(&self) -> Vec<State> {
        self.server_states.iter().map(|x| x.1).collect()
    }

    pub(crate) fn client_evs(&self) -> Vec<ClientEvent> {
        self.client_events.iter().map(|x| x.1).collect()
    }

    pub(crate) fn server_evs(&self) -> Vec<ServerEvent> {
        self.server_events.iter().map(|x| x.1).collect()
    }

    /// When the client entered `st` (first time).
    pub(crate) fn client_at(&self, st: State) -> Option<Duration> {
        self.client_states.iter().find(|x| x.1 == st).map(|x| x.0)
    }

    pub(crate) fn server_at(&self, st: State) -> Option<Duration> {
        self.server_states.iter().find(|x| x.1 == st).map(|x| x.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::txn::Timer;
    use ClientEvent as CE;
    use ServerEvent as SE;
    use State::*;

    const FOREVER: Duration = Duration::from_secs(600);

    fn times(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&x| ms(x)).collect()
    }

    // ------------------------------------------------------------------
    // INVITE client + INVITE server
    // ------------------------------------------------------------------

    /// Timer A doubles without a T2 cap; Timer B fires at 64*T1 in Calling;
    /// the server absorbs retransmissions while it has no provisional.
    #[test]
    fn invite_no_answer_timer_a_doubles_then_timer_b() {
        let mut sim = Sim::new(true, false, Link::default(), 1, &[]);
        sim.run(FOREVER);
        assert_eq!(
            sim.sent_times(Dir::ToServer, REQ),
            times(&[0, 500, 1500, 3500, 7500, 15500, 31500])
        );
        assert_eq!(sim.client_evs(), vec![CE::Timeout]);
        assert_eq!(sim.client_path(), vec![Calling, Terminated]);
        assert_eq!(sim.client_at(Terminated), Some(ms(32000)));
        // server: Proceeding, no response from the TU → nothing sent
        assert!(sim.sent_times(Dir::ToClient, RESP).is_empty());
        assert_eq!(sim.server_path(), vec![Proceeding]);
    }

    #[test]
    fn invite_no_answer_reliable_sends_once_timer_b() {
        let mut sim = Sim::new(true, true, Link::default(), 1, &[]);
        sim.run(FOREVER);
        assert_eq!(sim.sent_times(Dir::ToServer, REQ), times(&[0]));
        assert_eq!(sim.client_evs(), vec![CE::Timeout]);
        assert_eq!(sim.client_at(Terminated), Some(ms(32000)));
    }

    /// 1xx stops Timer A (and B); 1xx→1xx in Proceeding; 486 → ACK,
    /// Completed, Timer D 32 s. Server: Completed (G, H armed), ACK →
    /// Confirmed, Timer I = T4.
    #[test]
    fn invite_provisionals_then_486_unreliable() {
        let mut sim = Sim::new(
            true,
            false,
            Link::default(),
            1,
            &[(0, 100), (2000, 180), (5000, 486)],
        );
        sim.run(ms(5015));
        // state just after the server sent the 486: G and H armed
        let s = sim.server.as_ref().map(|s| (s.state(), s.next_timer()));
        assert_eq!(
            s,
            Some((Completed, Some((Timer::G, sim.base + ms(5010) + ms(500)))))
        );
        sim.run(FOREVER);
        assert_eq!(sim.sent_times(Dir::ToServer, REQ), times(&[0]));
        assert_eq!(
            sim.client_evs(),
            vec![CE::Provisional(100), CE::Provisional(180), CE::Final(486)]
        );
        assert_eq!(
            sim.client_path(),
            vec![Calling, Proceeding, Completed, Terminated]
        );
        assert_eq!(sim.sent_times(Dir::ToServer, ACK), times(&[5020]));
        assert_eq!(sim.client_at(Terminated), Some(ms(5020 + 32000)));
        assert_eq!(sim.responses_sent(486), times(&[5010]));
        assert_eq!(sim.acks, vec![(ms(5030), ACK, true)]);
        assert_eq!(
            sim.server_path(),
            vec![Proceeding, Completed, Confirmed, Terminated]
        );
        assert_eq!(sim.server_at(Terminated), Some(ms(5030 + 5000)));
        assert_eq!(sim.server_evs(), vec![SE::Terminated]);
    }

    /// Calling → Completed directly; G retransmits the final, an INVITE
    /// retransmission in Completed re-sends the final, every retransmitted
    /// final makes the client re-send its ACK (absorbed, not to the TU),
    /// and ACKs in Confirmed are absorbed.
    #[test]
    fn invite_486_with_slow_link_retransmissions_everywhere() {
        let link = Link {
            delay: ms(300),
            ..Link::default()
        };
        let mut sim = Sim::new(true, false, link, 1, &[(0, 486)]);
        sim.run(FOREVER);
        assert_eq!(sim.sent_times(Dir::ToServer, REQ), times(&[0, 500]));
        // .3 first, .8 on the INVITE retransmission, .8 Timer G
        assert_eq!(sim.responses_sent(486), times(&[300, 800, 800]));
        assert_eq!(
            sim.sent_times(Dir::ToServer, ACK),
            times(&[600, 1100, 1100])
        );
        assert_eq!(sim.client_evs(), vec![CE::Final(486)]);
        assert_eq!(sim.client_path(), vec![Calling, Completed, Terminated]);
        assert_eq!(sim.client_at(Terminated), Some(ms(600 + 32000)));
        assert_eq!(
            sim.acks,
            vec![
                (ms(900), ACK, true),
                (ms(1400), ACK, true),
                (ms(1400), ACK, true)
            ]
        );
        assert_eq!(
            sim.server_path(),
            vec![Proceeding, Completed, Confirmed, Terminated]
        );
        assert_eq!(sim.server_at(Terminated), Some(ms(900 + 5000)));
    }

    /// The final is lost three times (TU send, re-send for the first INVITE
    /// retransmission, first Timer G); the second INVITE retransmission
    /// arriving in Completed re-sends it and that copy gets through.
    #[test]
    fn invite_final_resent_on_request_retransmission() {
        let link = Link {
            drop: Box::new(|d, n| d == Dir::ToClient && n <= 2),
            ..Link::default()
        };
        let mut sim = Sim::new(true, false, link, 1, &[(100, 486)]);
        sim.run(FOREVER);
        assert_eq!(sim.sent_times(Dir::ToServer, REQ), times(&[0, 500, 1500]));
        // 110 TU, 510 retransmission, 610 Timer G (all lost), 1510 on the
        // second retransmission
        assert_eq!(sim.responses_sent(486), times(&[110, 510, 610, 1510]));
        assert_eq!(sim.client_at(Completed), Some(ms(1520)));
        assert_eq!(sim.acks, vec![(ms(1530), ACK, true)]);
        // Timer G was stopped by the ACK: no send at 1610
        assert_eq!(sim.server_at(Terminated), Some(ms(1530 + 5000)));
    }

    /// A lost 180 is re-sent when the INVITE retransmission arrives in
    /// Proceeding (§17.2.1).
    #[test]
    fn invite_provisional_resent_on_request_retransmission() {
        let link = Link {
            drop: Box::new(|d, n| d == Dir::ToClient && n == 0),
            ..Link::default()
        };
        let mut sim = Sim::new(true, false, link, 1, &[(0, 180), (3000, 486)]);
        sim.run(FOREVER);
        assert_eq!(sim.responses_sent(180), times(&[10, 510]));
        assert_eq!(sim.sent_times(Dir::ToServer, REQ), times(&[0, 500]));
        assert_eq!(sim.client_at(Proceeding), Some(ms(520)));
        assert_eq!(sim.client_evs(), vec![CE::Provisional(180), CE::Final(486)]);
    }

    /// Timer H: the ACK never arrives. G backs off to T2; H = 64*T1.
    #[test]
    fn invite_timer_h_without_ack() {
        let link = Link {
            drop: Box::new(|d, n| d == Dir::ToServer && n >= 1),
            ..Link::default()
        };
        let mut sim = Sim::new(true, false, link, 1, &[(0, 486)]);
        sim.run(FOREVER);
        assert_eq!(
            sim.responses_sent(486),
            times(&[10, 510, 1510, 3510, 7510, 11510, 15510, 19510, 23510, 27510, 31510])
        );
        assert_eq!(sim.server_evs(), vec![SE::Timeout, SE::Terminated]);
        assert_eq!(sim.server_at(Terminated), Some(ms(32010)));
        assert_eq!(sim.server_path(), vec![Proceeding, Completed, Terminated]);
        // the client re-sent its ACK for each of the 11 finals, one Final to TU
        assert_eq!(sim.sent_times(Dir::ToServer, ACK).len(), 11);
        assert_eq!(sim.client_evs(), vec![CE::Final(486)]);
        assert!(sim.acks.is_empty());
    }

    /// RFC 6026: 2xx → Accepted on both sides; the TU's 2xx retransmissions
    /// pass through the server txn and every 2xx reaches the client TU; an
    /// INVITE retransmission in Accepted is absorbed; ACKs in Accepted go to
    /// the TU; Timers L and M are 64*T1.
    #[test]
    fn invite_2xx_accepted_rfc6026() {
        let link = Link {
            delay: ms(300),
            ..Link::default()
        };
        let mut sim = Sim::new(true, false, link, 1, &[(0, 200), (500, 200), (1500, 200)]);
        sim.run(FOREVER);
        assert_eq!(sim.sent_times(Dir::ToServer, REQ), times(&[0, 500]));
        // no extra 200 for the INVITE retransmission arriving at .8
        assert_eq!(sim.responses_sent(200), times(&[300, 800, 1800]));
        assert_eq!(
            sim.client_events,
            vec![
                (ms(600), CE::Final(200)),
                (ms(1100), CE::Final(200)),
                (ms(2100), CE::Final(200))
            ]
        );
        assert_eq!(
            sim.acks,
            vec![
                (ms(900), ACK_2XX, false),
                (ms(1400), ACK_2XX, false),
                (ms(2400), ACK_2XX, false)
            ]
        );
        assert_eq!(sim.client_path(), vec![Calling, Accepted, Terminated]);
        assert_eq!(sim.client_at(Terminated), Some(ms(600 + 32000)));
        assert_eq!(sim.server_path(), vec![Proceeding, Accepted, Terminated]);
        assert_eq!(sim.server_at(Terminated), Some(ms(300 + 32000)));
        assert_eq!(sim.server_evs(), vec![SE::Terminated]);
        assert!(sim.sent_times(Dir::ToServer, ACK).is_empty());
    }

    /// Reliable: Proceeding → Accepted; L and M stay 64*T1 (RFC 6026).
    #[test]
    fn invite_reliable_180_then_200() {
        let mut sim = Sim::new(true, true, Link::default(), 1, &[(0, 180), (1000, 200)]);
        sim.run(ms(1025));
        let c = sim.client.next_timer();
        assert_eq!(c, Some((Timer::M, sim.base + ms(1020) + ms(32000))));
        let s = sim.server.as_ref().and_then(|s| s.next_timer());
        assert_eq!(s, Some((Timer::L, sim.base + ms(1010) + ms(32000))));
        sim.run(FOREVER);
        assert_eq!(
            sim.client_path(),
            vec![Calling, Proceeding, Accepted, Terminated]
        );
        assert_eq!(sim.client_at(Terminated), Some(ms(33020)));
        assert_eq!(sim.server_at(Terminated), Some(ms(33010)));
        assert_eq!(sim.sent.len(), 4); // INVITE, 180, 200, ACK-2xx
    }

    /// Reliable non-2xx: no Timer G; D and I are zero, so both sides pass
    /// through Completed/Confirmed and terminate at the same instant.
    #[test]
    fn invite_reliable_603_zero_timers() {
        let mut sim = Sim::new(true, true, Link::default(), 1, &[(0, 180), (1000, 603)]);
        sim.run(ms(1010));
        let s = sim.server.as_ref().and_then(|s| s.next_timer());
        assert_eq!(s, Some((Timer::H, sim.base + ms(1010) + ms(32000))));
        sim.run(FOREVER);
        assert_eq!(
            sim.client_path(),
            vec![Calling, Proceeding, Completed, Terminated]
        );
        assert_eq!(sim.client_at(Completed), Some(ms(1020)));
        assert_eq!(sim.client_at(Terminated), Some(ms(1020)));
        assert_eq!(
            sim.server_path(),
            vec![Proceeding, Completed, Confirmed, Terminated]
        );
        assert_eq!(sim.server_at(Confirmed), Some(ms(1030)));
        assert_eq!(sim.server_at(Terminated), Some(ms(1030)));
        assert_eq!(sim.responses_sent(603), times(&[1010]));
        assert_eq!(sim.server_evs(), vec![SE::Terminated]);
    }

    #[test]
    fn invite_reliable_zero_timer_d_visible_until_handle_timeout() {
        let now = Instant::now();
        let cfg = TimerConfig::default();
        let mut c = ClientTxn::new(now, true, request(), true, &cfg);
        c.handle_response(now, 404, Some(ack()));
        assert_eq!(c.state(), Completed);
        assert_eq!(c.next_timer(), Some((Timer::D, now)));
        c.handle_timeout(now);
        assert!(c.is_terminated());
        let mut s = ServerTxn::new(now, true, true, &cfg);
        s.send_response(now, 404, response(404));
        assert!(s.handle_ack(now));
        assert_eq!(s.next_timer(), Some((Timer::I, now)));
        s.handle_timeout(now);
        assert!(s.is_terminated());
    }

    // ------------------------------------------------------------------
    // non-INVITE
    // ------------------------------------------------------------------

    /// Timer E: T1 doubling capped at T2; Timer F = 64*T1; the server in
    /// Trying absorbs every retransmission.
    #[test]
    fn non_invite_no_answer_timer_e_then_f() {
        let mut sim = Sim::new(false, false, Link::default(), 1, &[]);
        sim.run(FOREVER);
        assert_eq!(
            sim.sent_times(Dir::ToServer, REQ),
            times(&[0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500])
        );
        assert_eq!(sim.client_evs(), vec![CE::Timeout]);
        assert_eq!(sim.client_path(), vec![Trying, Terminated]);
        assert_eq!(sim.client_at(Terminated), Some(ms(32000)));
        assert_eq!(sim.server_path(), vec![Trying]);
        assert!(sim.sent_times(Dir::ToClient, RESP).is_empty());
    }

    #[test]
    fn non_invite_reliable_no_answer_timer_f() {
        let mut sim = Sim::new(false, true, Link::default(), 1, &[]);
        sim.run(FOREVER);
        assert_eq!(sim.sent_times(Dir::ToServer, REQ), times(&[0]));
        assert_eq!(sim.client_evs(), vec![CE::Timeout]);
        assert_eq!(sim.client_at(Terminated), Some(ms(32000)));
    }

    /// Proceeding: E every T2, the server re-sends its last provisional on
    /// each retransmission; 200 → Completed, Timer K = T4, Timer J = 64*T1.
    #[test]
    fn non_invite_proceeding_then_200() {
        let mut sim = Sim::new(false, false, Link::default(), 1, &[(0, 100), (10000, 200)]);
        sim.run(FOREVER);
        assert_eq!(
            sim.sent_times(Dir::ToServer, REQ),
            times(&[0, 500, 4500, 8500])
        );
        assert_eq!(sim.responses_sent(100), times(&[10, 510, 4510, 8510]));
        assert_eq!(sim.responses_sent(200), times(&[10010]));
        assert_eq!(
            sim.client_evs(),
            vec![
                CE::Provisional(100),
                CE::Provisional(100),
                CE::Provisional(100),
                CE::Provisional(100),
                CE::Final(200)
            ]
        );
        assert_eq!(
            sim.client_path(),
            vec![Trying, Proceeding, Completed, Terminated]
        );
        assert_eq!(sim.client_at(Terminated), Some(ms(10020 + 5000)));
        assert_eq!(
            sim.server_path(),
            vec![Trying, Proceeding, Completed, Terminated]
        );
        assert_eq!(sim.server_at(Terminated), Some(ms(10010 + 32000)));
        assert_eq!(sim.server_evs(), vec![SE::Terminated]);
    }

    /// Provisional only: the client stays in Proceeding retransmitting every
    /// T2 until Timer F.
    #[test]
    fn non_invite_timer_f_in_proceeding() {
        let mut sim = Sim::new(false, false, Link::default(), 1, &[(0, 100)]);
        sim.run(FOREVER);
        assert_eq!(
            sim.sent_times(Dir::ToServer, REQ),
            times(&[0, 500, 4500, 8500, 12500, 16500, 20500, 24500, 28500])
        );
        assert_eq!(sim.client_evs().last(), Some(&CE::Timeout));
        assert_eq!(sim.client_path(), vec![Trying, Proceeding, Terminated]);
        assert_eq!(sim.client_at(Terminated), Some(ms(32000)));
        // the server never got a final from its TU: still Proceeding
        assert_eq!(sim.server_path(), vec![Trying, Proceeding]);
    }

    /// Trying → Completed; the request retransmission re-sends the final
    /// and the client absorbs the retransmitted final.
    #[test]
    fn non_invite_final_retransmitted_and_absorbed() {
        let link = Link {
            delay: ms(300),
            ..Link::default()
        };
        let mut sim = Sim::new(false, false, link, 1, &[(0, 200)]);
        sim.run(FOREVER);
        assert_eq!(sim.sent_times(Dir::ToServer, REQ), times(&[0, 500]));
        assert_eq!(sim.responses_sent(200), times(&[300, 800]));
        assert_eq!(sim.client_evs(), vec![CE::Final(200)]);
        assert_eq!(sim.client_path(), vec![Trying, Completed, Terminated]);
        assert_eq!(sim.client_at(Terminated), Some(ms(600 + 5000)));
        assert_eq!(sim.server_path(), vec![Trying, Completed, Terminated]);
        assert_eq!(sim.server_at(Terminated), Some(ms(300 + 32000)));
        assert!(sim.strays.is_empty());
    }

    /// Reliable: no Timer E; K and J are zero.
    #[test]
    fn non_invite_reliable_zero_timers() {
        let mut sim = Sim::new(false, true, Link::default(), 1, &[(0, 100), (2000, 404)]);
        sim.run(FOREVER);
        assert_eq!(sim.sent_times(Dir::ToServer, REQ), times(&[0]));
        assert_eq!(
            sim.client_path(),
            vec![Trying, Proceeding, Completed, Terminated]
        );
        assert_eq!(sim.client_at(Completed), Some(ms(2020)));
        assert_eq!(sim.client_at(Terminated), Some(ms(2020)));
        assert_eq!(
            sim.server_path(),
            vec![Trying, Proceeding, Completed, Terminated]
        );
        assert_eq!(sim.server_at(Terminated), Some(ms(2010)));
        assert_eq!(sim.client_evs(), vec![CE::Provisional(100), CE::Final(404)]);
    }

    #[test]
    fn non_invite_reliable_zero_timers_k_and_j_armed_at_now() {
        let now = Instant::now();
        let cfg = TimerConfig::default();
        let mut c = ClientTxn::new(now, false, request(), true, &cfg);
        c.handle_response(now, 200, None);
        assert_eq!(c.next_timer(), Some((Timer::K, now)));
        let mut s = ServerTxn::new(now, false, true, &cfg);
        s.send_response(now, 200, response(200));
        assert_eq!(s.next_timer(), Some((Timer::J, now)));
        // unreliable: K = T4, J = 64*T1
        let mut c = ClientTxn::new(now, false, request(), false, &cfg);
        c.handle_response(now, 200, None);
        assert_eq!(c.next_timer(), Some((Timer::K, now + cfg.t4)));
        let mut s = ServerTxn::new(now, false, false, &cfg);
        s.send_response(now, 200, response(200));
        assert_eq!(s.next_timer(), Some((Timer::J, now + ms(32000))));
    }

    // ------------------------------------------------------------------
    // transport errors
    // ------------------------------------------------------------------

    #[test]
    fn transport_error_client_invite_calling() {
        let link = Link {
            fail: Box::new(|d, n| d == Dir::ToServer && n == 0),
            ..Link::default()
        };
        let mut sim = Sim::new(true, false, link, 1, &[]);
        sim.run(FOREVER);
        assert_eq!(sim.client_evs(), vec![CE::TransportError]);
        assert_eq!(sim.client_path(), vec![Calling, Terminated]);
        assert_eq!(sim.client_at(Terminated), Some(Duration::ZERO));
        assert!(sim.server.is_none());
    }

    #[test]
    fn transport_error_client_invite_completed_on_ack() {
        let link = Link {
            fail: Box::new(|d, n| d == Dir::ToServer && n == 1),
            ..Link::default()
        };
        let mut sim = Sim::new(true, true, link, 1, &[(0, 500)]);
        sim.run(FOREVER);
        assert_eq!(sim.client_evs(), vec![CE::Final(500), CE::TransportError]);
        assert_eq!(sim.client_path(), vec![Calling, Terminated]);
        // server never got its ACK: Timer H (reliable: no G)
        assert_eq!(sim.responses_sent(500), times(&[10]));
        assert_eq!(sim.server_evs(), vec![SE::Timeout, SE::Terminated]);
        assert_eq!(sim.server_at(Terminated), Some(ms(32010)));
    }

    #[test]
    fn transport_error_client_non_invite_trying_and_proceeding() {
        // Trying: the first send fails
        let link = Link {
            fail: Box::new(|d, n| d == Dir::ToServer && n == 0),
            ..Link::default()
        };
        let mut sim = Sim::new(false, false, link, 1, &[]);
        sim.run(FOREVER);
        assert_eq!(sim.client_evs(), vec![CE::TransportError]);
        assert_eq!(sim.client_path(), vec![Trying, Terminated]);
        // Proceeding: the Timer E retransmission at .5 fails
        let link = Link {
            fail: Box::new(|d, n| d == Dir::ToServer && n == 1),
            ..Link::default()
        };
        let mut sim = Sim::new(false, false, link, 1, &[(0, 100)]);
        sim.run(FOREVER);
        assert_eq!(
            sim.client_evs(),
            vec![CE::Provisional(100), CE::TransportError]
        );
        assert_eq!(sim.client_path(), vec![Trying, Proceeding, Terminated]);
        assert_eq!(sim.client_at(Terminated), Some(ms(500)));
    }

    #[test]
    fn transport_error_server_invite_proceeding_and_completed() {
        // the 100 cannot be sent
        let link = Link {
            fail: Box::new(|d, n| d == Dir::ToClient && n == 0),
            ..Link::default()
        };
        let mut sim = Sim::new(true, false, link, 1, &[(0, 100)]);
        sim.run(FOREVER);
        assert_eq!(sim.server_evs(), vec![SE::TransportError, SE::Terminated]);
        assert_eq!(sim.server_path(), vec![Proceeding, Terminated]);
        // a Timer G retransmission cannot be sent (the ACK is lost)
        let link = Link {
            fail: Box::new(|d, n| d == Dir::ToClient && n == 1),
            drop: Box::new(|d, n| d == Dir::ToServer && n == 1),
            ..Link::default()
        };
        let mut sim = Sim::new(true, false, link, 1, &[(0, 480)]);
        sim.run(FOREVER);
        assert_eq!(sim.server_evs(), vec![SE::TransportError, SE::Terminated]);
        assert_eq!(sim.server_path(), vec![Proceeding, Completed, Terminated]);
        assert_eq!(sim.server_at(Terminated), Some(ms(510)));
    }

    #[test]
    fn transport_error_server_non_invite_proceeding() {
        let link = Link {
            fail: Box::new(|d, n| d == Dir::ToClient && n == 1),
            ..Link::default()
        };
        let mut sim = Sim::new(false, false, link, 1, &[(0, 100), (100, 200)]);
        sim.run(FOREVER);
        // 100 sent, the 200 fails
        assert_eq!(sim.server_evs(), vec![SE::TransportError, SE::Terminated]);
        assert_eq!(sim.server_path(), vec![Trying, Proceeding, Terminated]);
        assert_eq!(sim.server_at(Terminated), Some(ms(110)));
        // the client never hears a final: Timer F
        assert_eq!(sim.client_evs().last(), Some(&CE::Timeout));
    }

    // ------------------------------------------------------------------
    // lossy links
    // ------------------------------------------------------------------

    fn lossy() -> Link {
        Link {
            delay: ms(40),
            drop_pct: 25,
            dup_pct: 15,
            jitter: ms(400),
            ..Link::default()
        }
    }

    /// With 25 % loss, 15 % duplication and reordering, every INVITE
    /// transaction still completes with exactly one final at the client TU
    /// and the server absorbing the ACK.
    #[test]
    fn lossy_invite_486_completes() {
        let (mut lost, mut dup, mut retrans) = (0, 0, 0);
        for seed in 1..=200 {
            let mut sim = Sim::new(true, false, lossy(), seed, &[(50, 100), (1000, 486)]);
            sim.run(FOREVER);
            let finals: Vec<_> = sim
                .client_evs()
                .into_iter()
                .filter(|e| matches!(e, CE::Final(_)))
                .collect();
            assert_eq!(finals, vec![CE::Final(486)], "seed {seed}");
            assert!(sim.client.is_terminated(), "seed {seed}");
            let s = sim.server.as_ref().map(|s| s.is_terminated());
            assert_eq!(s, Some(true), "seed {seed}");
            assert!(
                sim.server_path().contains(&Confirmed),
                "seed {seed}: {:?}",
                sim.server_path()
            );
            assert!(!sim.server_evs().contains(&SE::Timeout), "seed {seed}");
            lost += sim.lost;
            dup += sim.duplicated;
            retrans += sim.sent_times(Dir::ToServer, REQ).len() - 1;
        }
        // the link really misbehaved and the machines really recovered
        assert!(
            lost > 100 && dup > 50 && retrans > 50,
            "{lost} {dup} {retrans}"
        );
    }

    #[test]
    fn lossy_non_invite_completes() {
        let mut lost = 0;
        for seed in 1..=200 {
            let mut sim = Sim::new(false, false, lossy(), seed, &[(50, 100), (1500, 200)]);
            sim.run(FOREVER);
            let finals: Vec<_> = sim
                .client_evs()
                .into_iter()
                .filter(|e| matches!(e, CE::Final(_)))
                .collect();
            assert_eq!(finals, vec![CE::Final(200)], "seed {seed}");
            assert!(sim.client.is_terminated());
            assert_eq!(sim.server.as_ref().map(|s| s.state()), Some(Terminated));
            lost += sim.lost;
        }
        assert!(lost > 100, "{lost}");
    }

    /// 2xx over a lossy link: the TU retransmits its 2xx (§13.3.1.4, modelled
    /// by the script) and the client TU sees at least one 2xx; the server
    /// never retransmits on its own (RFC 6026 §8.7).
    #[test]
    fn lossy_invite_2xx_reaches_client_tu() {
        for seed in 1..=200 {
            let script = [(0, 200), (500, 200), (1500, 200), (3500, 200), (7500, 200)];
            let mut sim = Sim::new(true, false, lossy(), seed, &script);
            sim.run(FOREVER);
            let n = sim
                .client_evs()
                .iter()
                .filter(|e| **e == CE::Final(200))
                .count();
            assert!(n >= 1, "seed {seed}");
            assert_eq!(sim.responses_sent(200).len(), 5, "seed {seed}");
            assert!(sim.client.is_terminated());
            assert!(sim.acks.iter().all(|a| !a.2), "2xx ACKs go to the TU");
        }
    }

    /// The simulator itself is deterministic: same seed, same trace.
    #[test]
    fn simulator_is_deterministic() {
        let run = |seed| {
            let mut sim = Sim::new(true, false, lossy(), seed, &[(50, 100), (1000, 486)]);
            sim.run(FOREVER);
            (sim.sent, sim.client_events, sim.server_events)
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7).0, run(8).0);
    }
}

/// A server "endpoint" that dispatches requests to server transactions by
/// [`ServerKey`], as the proxy will.
#[cfg(test)]
mod endpoint_tests {
    use std::collections::HashMap;
    use std::time::Instant;

    use super::{response, Bytes};
    use crate::txn::{RequestFacts, ServerKey, ServerTxn, State, TimerConfig};

    struct Req {
        method: &'static [u8],
        branch: Option<&'static [u8]>,
        sent_by: &'static [u8],
        to_tag: Option<&'static [u8]>,
        cseq: u32,
    }

    impl Req {
        fn facts(&self) -> RequestFacts<'_> {
            RequestFacts {
                method: self.method,
                branch: self.branch,
                sent_by: self.sent_by,
                request_uri: b"sip:+4930123@sbc.example.net",
                from_tag: Some(b"a73kszlfl"),
                to_tag: self.to_tag,
                call_id: b"1j9FpLxk3uxtm8tn@gw1",
                cseq: self.cseq,
                top_via: if self.sent_by == b"gw1:5060" {
                    b"SIP/2.0/UDP gw1:5060"
                } else {
                    b"SIP/2.0/UDP gw2:5060"
                },
            }
        }
    }

    #[derive(Default)]
    struct Endpoint {
        txns: HashMap<ServerKey, ServerTxn>,
        created: usize,
    }

    enum Outcome {
        New,
        Retransmission,
        AckAbsorbed,
        AckToTu,
        Cancel { invite_found: bool },
    }

    impl Endpoint {
        fn receive(&mut self, now: Instant, r: &Req) -> Outcome {
            let f = r.facts();
            let key = ServerKey::for_request(&f);
            if r.method == b"ACK" {
                let txn = match self.txns.get_mut(&key) {
                    Some(t) => Some(t),
                    None => ServerKey::for_ack_of_untagged_invite(&f)
                        .and_then(|k| self.txns.get_mut(&k)),
                };
                return match txn.map(|t| t.handle_ack(now)) {
                    Some(true) => Outcome::AckAbsorbed,
                    _ => Outcome::AckToTu,
                };
            }
            if let Some(t) = self.txns.get_mut(&key) {
                t.handle_retransmission(now);
                return Outcome::Retransmission;
            }
            let invite = r.method == b"INVITE";
            self.txns.insert(
                key,
                ServerTxn::new(now, invite, false, &TimerConfig::default()),
            );
            self.created += 1;
            if r.method == b"CANCEL" {
                let ik = ServerKey::invite_for_cancel(&f);
                return Outcome::Cancel {
                    invite_found: self.txns.contains_key(&ik),
                };
            }
            Outcome::New
        }

        fn get(&mut self, r: &Req) -> Option<&mut ServerTxn> {
            self.txns.get_mut(&ServerKey::for_request(&r.facts()))
        }
    }

    const B1: &[u8] = b"z9hG4bKnashds8";

    #[test]
    fn endpoint_matching_by_key() {
        let now = Instant::now();
        let mut ep = Endpoint::default();
        let inv = Req {
            method: b"INVITE",
            branch: Some(B1),
            sent_by: b"gw1:5060",
            to_tag: None,
            cseq: 1,
        };
        assert!(matches!(ep.receive(now, &inv), Outcome::New));
        let t = ep.get(&inv).map(|t| {
            t.send_response(now, 486, response(486));
            t.poll_transmit()
        });
        assert_eq!(t, Some(Some(response(486))));
        // retransmission → same txn, final re-sent
        assert!(matches!(ep.receive(now, &inv), Outcome::Retransmission));
        let t = ep.get(&inv).and_then(|t| t.poll_transmit());
        assert_eq!(t, Some(response(486)));
        // same branch from another sent-by → a different transaction
        let other = Req {
            sent_by: b"gw2:5060",
            ..inv
        };
        assert!(matches!(ep.receive(now, &other), Outcome::New));
        assert_eq!(ep.created, 2);
        // ACK with the response's To tag finds the INVITE txn → Confirmed
        let ack = Req {
            method: b"ACK",
            to_tag: Some(b"8321234356"),
            ..inv
        };
        assert!(matches!(ep.receive(now, &ack), Outcome::AckAbsorbed));
        assert_eq!(ep.get(&inv).map(|t| t.state()), Some(State::Confirmed));
        // the gw2 INVITE txn is untouched
        assert_eq!(ep.get(&other).map(|t| t.state()), Some(State::Proceeding));
        // CANCEL for the gw2 INVITE: own txn, finds its INVITE
        let cancel = Req {
            method: b"CANCEL",
            ..other
        };
        assert!(matches!(
            ep.receive(now, &cancel),
            Outcome::Cancel { invite_found: true }
        ));
        assert_eq!(ep.created, 3);
        assert_eq!(ep.get(&cancel).map(|t| t.state()), Some(State::Trying));
        // a CANCEL whose INVITE we never saw
        let stray = Req {
            method: b"CANCEL",
            branch: Some(b"z9hG4bKunknown"),
            ..other
        };
        assert!(matches!(
            ep.receive(now, &stray),
            Outcome::Cancel {
                invite_found: false
            }
        ));
        // an ACK for a 2xx (new branch, RFC 3261 §17.1.1.3) matches nothing
        let ack2xx = Req {
            method: b"ACK",
            branch: Some(b"z9hG4bKfresh"),
            to_tag: Some(b"x"),
            ..inv
        };
        assert!(matches!(ep.receive(now, &ack2xx), Outcome::AckToTu));
    }

    #[test]
    fn endpoint_matching_rfc2543_fallback() {
        let now = Instant::now();
        let mut ep = Endpoint::default();
        let inv = Req {
            method: b"INVITE",
            branch: None,
            sent_by: b"gw1:5060",
            to_tag: None,
            cseq: 5,
        };
        assert!(matches!(ep.receive(now, &inv), Outcome::New));
        assert!(matches!(ep.receive(now, &inv), Outcome::Retransmission));
        // a new CSeq is a new transaction
        let inv6 = Req { cseq: 6, ..inv };
        assert!(matches!(ep.receive(now, &inv6), Outcome::New));
        if let Some(t) = ep.get(&inv) {
            t.send_response(now, 404, Bytes::from_static(b"404"));
        }
        // the ACK carries the 404's To tag: found by the second lookup
        let ack = Req {
            method: b"ACK",
            to_tag: Some(b"srvtag"),
            ..inv
        };
        assert!(matches!(ep.receive(now, &ack), Outcome::AckAbsorbed));
        assert_eq!(ep.get(&inv).map(|t| t.state()), Some(State::Confirmed));
        assert_eq!(ep.get(&inv6).map(|t| t.state()), Some(State::Proceeding));
        // CANCEL of the CSeq 6 INVITE
        let cancel = Req {
            method: b"CANCEL",
            ..inv6
        };
        assert!(matches!(
            ep.receive(now, &cancel),
            Outcome::Cancel { invite_found: true }
        ));
    }
}

/// Property tests: arbitrary input sequences (including nonsense status
/// codes, ACKs in any state, time jumps) never panic and never break the
/// state diagrams of `mod.rs`.
#[cfg(test)]
mod props {
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use proptest::prelude::*;

    use crate::txn::{ClientEvent, ClientTxn, ServerEvent, ServerTxn, State, TimerConfig};
    use State::*;

    #[derive(Clone, Debug)]
    enum Op {
        Advance(u32),
        Response(u16),
        TransportError,
        Timeout,
        Retransmission,
        Ack,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..40_000).prop_map(Op::Advance),
            prop_oneof![0u16..1000, 100u16..700, 200u16..300].prop_map(Op::Response),
            Just(Op::TransportError),
            Just(Op::Timeout),
            Just(Op::Retransmission),
            Just(Op::Ack),
        ]
    }

    fn client_edge_ok(invite: bool, a: State, b: State) -> bool {
        a == b
            || matches!(
                (invite, a, b),
                (
                    true,
                    Calling,
                    Proceeding | Completed | Accepted | Terminated
                ) | (true, Proceeding, Completed | Accepted | Terminated)
                    | (true, Completed | Accepted, Terminated)
                    | (false, Trying, Proceeding | Completed | Terminated)
                    | (false, Proceeding, Completed | Terminated)
                    | (false, Completed, Terminated)
            )
    }

    fn server_edge_ok(invite: bool, a: State, b: State) -> bool {
        a == b
            || matches!(
                (invite, a, b),
                (true, Proceeding, Completed | Accepted | Terminated)
                    | (true, Completed, Confirmed | Terminated)
                    | (true, Confirmed | Accepted, Terminated)
                    | (false, Trying, Proceeding | Completed | Terminated)
                    | (false, Proceeding, Completed | Terminated)
                    | (false, Completed, Terminated)
            )
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 512,
            // no regression files outside src/txn
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// The driver never sleeps past a deadline: an advance stops at the
    /// next `poll_timeout()` (that is the sans-IO contract).
    fn advance(now: Instant, ms: u32, next: Option<Instant>) -> Instant {
        let target = now + Duration::from_millis(u64::from(ms));
        match next {
            Some(at) if at < target => at.max(now),
            _ => target,
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn client_never_breaks_its_diagram(
            invite: bool,
            reliable: bool,
            ops in proptest::collection::vec(op(), 0..60),
        ) {
            let base = Instant::now();
            let mut now = base;
            let cfg = TimerConfig::default();
            let mut t = ClientTxn::new(now, invite, Bytes::from_static(b"Q"), reliable, &cfg);
            prop_assert_eq!(t.poll_transmit(), Some(Bytes::from_static(b"Q")));
            prop_assert_eq!(t.poll_transmit(), None);
            let mut events = Vec::new();
            let mut prev = t.state();
            for op in ops {
                let was_terminated = t.is_terminated();
                match op {
                    Op::Advance(ms) => now = advance(now, ms, t.poll_timeout()),
                    Op::Response(s) => {
                        let ack = (s >= 300).then(|| Bytes::from_static(b"A"));
                        t.handle_response(now, s, ack);
                    }
                    Op::TransportError => t.handle_transport_error(now),
                    Op::Timeout => {
                        t.handle_timeout(now);
                        // everything due has been handled
                        prop_assert!(t.poll_timeout().is_none_or(|at| at > now));
                    }
                    Op::Retransmission | Op::Ack => {}
                }
                prop_assert!(t.poll_timeout().is_none_or(|at| at >= now));
                let st = t.state();
                prop_assert!(client_edge_ok(invite, prev, st), "{prev:?} -> {st:?}");
                prev = st;
                let mut sent = 0;
                while t.poll_transmit().is_some() {
                    sent += 1;
                }
                while let Some(e) = t.poll_event() {
                    events.push(e);
                }
                if was_terminated {
                    prop_assert_eq!(sent, 0);
                }
                if reliable && !invite {
                    // no retransmission on TCP/TLS (and no ACK: non-INVITE)
                    prop_assert_eq!(sent, 0);
                }
                if t.is_terminated() {
                    prop_assert_eq!(t.poll_timeout(), None);
                }
            }
            // at most one failure event, and it is the last one
            let fails = events
                .iter()
                .filter(|e| matches!(e, ClientEvent::Timeout | ClientEvent::TransportError))
                .count();
            prop_assert!(fails <= 1);
            if fails == 1 {
                prop_assert!(matches!(
                    events.last(),
                    Some(ClientEvent::Timeout | ClientEvent::TransportError)
                ));
            }
            let finals: Vec<u16> = events
                .iter()
                .filter_map(|e| match e {
                    ClientEvent::Final(s) => Some(*s),
                    _ => None,
                })
                .collect();
            // non-2xx finals reach the TU once; only 2xx repeat (RFC 6026)
            prop_assert!(finals.iter().filter(|s| **s >= 300).count() <= 1);
            if !invite {
                prop_assert!(finals.len() <= 1);
            }
            if finals.iter().any(|s| *s >= 300) {
                prop_assert_eq!(finals.len(), 1);
            }
            // provisionals never follow a final
            if let Some(i) = events.iter().position(|e| matches!(e, ClientEvent::Final(_))) {
                prop_assert!(!events[i..].iter().any(|e| matches!(e, ClientEvent::Provisional(_))));
            }
        }

        #[test]
        fn server_never_breaks_its_diagram(
            invite: bool,
            reliable: bool,
            ops in proptest::collection::vec(op(), 0..60),
        ) {
            let base = Instant::now();
            let mut now = base;
            let cfg = TimerConfig::default();
            let mut t = ServerTxn::new(now, invite, reliable, &cfg);
            let mut events = Vec::new();
            let mut prev = t.state();
            let mut final_status = None;
            for op in ops {
                let was_terminated = t.is_terminated();
                match op {
                    Op::Advance(ms) => now = advance(now, ms, t.poll_timeout()),
                    Op::Response(s) => {
                        t.send_response(now, s, Bytes::copy_from_slice(&s.to_be_bytes()));
                    }
                    Op::TransportError => t.handle_transport_error(now),
                    Op::Timeout => {
                        t.handle_timeout(now);
                        prop_assert!(t.poll_timeout().is_none_or(|at| at > now));
                    }
                    Op::Retransmission => t.handle_retransmission(now),
                    Op::Ack => {
                        let absorbed = t.handle_ack(now);
                        if t.state() == Accepted || !invite {
                            prop_assert!(!absorbed);
                        }
                    }
                }
                prop_assert!(t.poll_timeout().is_none_or(|at| at >= now));
                let st = t.state();
                prop_assert!(server_edge_ok(invite, prev, st), "{prev:?} -> {st:?}");
                prev = st;
                while let Some(m) = t.poll_transmit() {
                    prop_assert!(!was_terminated);
                    let s = u16::from_be_bytes([m[0], m[1]]);
                    prop_assert!((100..=699).contains(&s));
                    if s >= 200 {
                        // one final per transaction; only a 2xx to INVITE
                        // may be re-sent by the TU
                        match final_status {
                            None => final_status = Some(s),
                            Some(f) => prop_assert!(f == s || (invite && (200..300).contains(&s))),
                        }
                    }
                }
                while let Some(e) = t.poll_event() {
                    events.push(e);
                }
            }
            let terms = events.iter().filter(|e| **e == ServerEvent::Terminated).count();
            prop_assert_eq!(terms, usize::from(t.is_terminated()));
            if t.is_terminated() {
                prop_assert_eq!(events.last(), Some(&ServerEvent::Terminated));
            }
        }
    }
}
