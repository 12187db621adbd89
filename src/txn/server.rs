//! Server transactions: INVITE (RFC 3261 §17.2.1, with the RFC 6026
//! Accepted state) and non-INVITE (§17.2.2).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{State, Timer, TimerConfig, TimerTable, TxnKind};

/// What a server transaction reports to its TU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// Timer H fired: no ACK arrived for a 3xx-6xx final (§17.2.1).
    Timeout,
    /// The transport failed to send a response (§17.2.4).
    TransportError,
    /// The transaction entered Terminated. Emitted exactly once, after
    /// `Timeout`/`TransportError` when one of those caused it.
    Terminated,
}

/// One server transaction: a sans-IO state machine over opaque wire bytes.
///
/// The INVITE server transaction does **not** send `100 Trying` by itself
/// (§17.2.1 allows omitting it when the TU answers within 200 ms): the proxy
/// TU sends 100 through [`ServerTxn::send_response`] as soon as it accepts
/// the request.
#[derive(Debug)]
pub struct ServerTxn {
    invite: bool,
    reliable: bool,
    cfg: TimerConfig,
    state: State,
    /// Last response sent (provisional in Proceeding, final in Completed).
    last: Option<Bytes>,
    last_status: Option<u16>,
    timers: TimerTable,
    /// Current Timer G interval.
    interval: Duration,
    transmits: VecDeque<Bytes>,
    events: VecDeque<ServerEvent>,
}

impl ServerTxn {
    /// Creates the transaction for a request that just arrived. INVITE starts
    /// in Proceeding (§17.2.1), non-INVITE in Trying (§17.2.2). No timer runs
    /// until the TU responds.
    pub fn new(_now: Instant, kind_invite: bool, reliable: bool, cfg: &TimerConfig) -> ServerTxn {
        ServerTxn {
            invite: kind_invite,
            reliable,
            cfg: cfg.sanitized(),
            state: if kind_invite {
                State::Proceeding
            } else {
                State::Trying
            },
            last: None,
            last_status: None,
            timers: TimerTable::new(),
            interval: cfg.sanitized().t1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// Which of the two server machines this is.
    pub fn kind(&self) -> TxnKind {
        if self.invite {
            TxnKind::InviteServer
        } else {
            TxnKind::NonInviteServer
        }
    }

    /// A retransmission of the request arrived (matched with
    /// [`super::ServerKey`]). Re-sends the last response if the state calls
    /// for it, absorbs the request otherwise:
    /// - Proceeding: the most recent provisional, if any (§17.2.1, §17.2.2);
    /// - Completed: the final response (§17.2.1, §17.2.2);
    /// - Trying, Confirmed, Accepted (RFC 6026 §8.7), Terminated: absorbed.
    pub fn handle_retransmission(&mut self, _now: Instant) {
        match self.state {
            State::Proceeding | State::Completed => {
                if let Some(r) = &self.last {
                    self.transmits.push_back(r.clone());
                }
            }
            _ => {}
        }
    }

    /// The TU sends a response (exact wire bytes).
    ///
    /// - 1xx in Proceeding/Trying: sent, Proceeding;
    /// - 2xx to INVITE: sent, Accepted with Timer L = 64*T1 (RFC 6026 §8.7);
    ///   further 2xx in Accepted are passed through (the TU retransmits 2xx,
    ///   §13.3.1.4);
    /// - 3xx-6xx to INVITE: sent, Completed with Timer G (unreliable) and H;
    /// - final to non-INVITE: sent, Completed with Timer J.
    ///
    /// Anything else (a response after the final, a status outside
    /// 100..=699) is discarded (§17.2.2: "any other final responses passed
    /// by the TU ... MUST be discarded while in the Completed state").
    pub fn send_response(&mut self, now: Instant, status: u16, response: Bytes) {
        if !(100..=699).contains(&status) {
            return;
        }
        let open = matches!(self.state, State::Trying | State::Proceeding);
        match (self.invite, status) {
            (_, 100..=199) if open => {
                self.state = State::Proceeding;
                self.record(status, response);
            }
            (true, 200..=299) if open => {
                self.state = State::Accepted;
                self.record(status, response);
                self.timers
                    .set_after(Timer::L, now, self.cfg.timeout_64t1());
            }
            (true, 200..=299) if self.state == State::Accepted => {
                // RFC 6026 §8.7: 2xx retransmissions from the TU go out
                self.record(status, response);
            }
            (true, _) if open => {
                self.state = State::Completed;
                self.record(status, response);
                if !self.reliable {
                    self.interval = self.cfg.t1;
                    self.timers.set_after(Timer::G, now, self.cfg.t1);
                }
                self.timers
                    .set_after(Timer::H, now, self.cfg.timeout_64t1());
            }
            (false, _) if open => {
                self.state = State::Completed;
                self.record(status, response);
                let j = if self.reliable {
                    Duration::ZERO
                } else {
                    self.cfg.timeout_64t1()
                };
                self.timers.set_after(Timer::J, now, j);
            }
            _ => {}
        }
    }

    fn record(&mut self, status: u16, response: Bytes) {
        self.transmits.push_back(response.clone());
        self.last = Some(response);
        self.last_status = Some(status);
    }

    /// An ACK matched this transaction. Returns true when the transaction
    /// absorbed it:
    /// - Completed (INVITE, 3xx-6xx sent): → Confirmed, Timer I (§17.2.1);
    /// - Confirmed: ACK retransmission, absorbed;
    /// - Proceeding: no final sent yet, so the ACK belongs to nothing;
    ///   absorbed (dropped).
    ///
    /// Returns false ("pass it to the TU") in Accepted — the ACK of a 2xx is
    /// a transaction-less request (RFC 6026 §8.7) — and for non-INVITE or
    /// Terminated transactions.
    pub fn handle_ack(&mut self, now: Instant) -> bool {
        if !self.invite {
            return false;
        }
        match self.state {
            State::Completed => {
                self.timers.stop(Timer::G);
                self.timers.stop(Timer::H);
                self.state = State::Confirmed;
                let i = if self.reliable {
                    Duration::ZERO
                } else {
                    self.cfg.t4
                };
                self.timers.set_after(Timer::I, now, i);
                true
            }
            State::Confirmed | State::Proceeding => true,
            _ => false,
        }
    }

    /// The transport failed to send a response (§17.2.4): inform the TU and
    /// terminate. Ignored once Terminated.
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if self.state == State::Terminated {
            return;
        }
        self.events.push_back(ServerEvent::TransportError);
        self.terminate();
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(t) = self.timers.expired(now) {
            self.timers.stop(t);
            self.on_timer(t, now);
        }
    }

    fn on_timer(&mut self, t: Timer, now: Instant) {
        match (t, self.state) {
            (Timer::G, State::Completed) => {
                // §17.2.1: retransmit the final, min(2^n*T1, T2)
                if let Some(r) = &self.last {
                    self.transmits.push_back(r.clone());
                }
                self.interval = self.interval.saturating_mul(2).min(self.cfg.t2);
                self.timers.set_after(Timer::G, now, self.interval);
            }
            (Timer::H, State::Completed) => {
                self.events.push_back(ServerEvent::Timeout);
                self.terminate();
            }
            (Timer::I, State::Confirmed)
            | (Timer::J, State::Completed)
            | (Timer::L, State::Accepted) => self.terminate(),
            _ => {}
        }
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.timers.clear();
        self.events.push_back(ServerEvent::Terminated);
    }

    /// Next response to send (exact wire bytes), if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmits.pop_front()
    }

    /// Next event for the TU, if any.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// When [`ServerTxn::handle_timeout`] must next be called. A zero timer
    /// (reliable I/J) is armed at the `now` of the call that armed it.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next().map(|(_, at)| at)
    }

    /// The next timer to fire and its deadline (diagnostics, tests).
    pub fn next_timer(&self) -> Option<(Timer, Instant)> {
        self.timers.next()
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// True once Terminated: the caller drops the transaction.
    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    /// Status of the last response sent.
    pub fn last_status(&self) -> Option<u16> {
        self.last_status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(t: &mut ServerTxn) -> (Vec<Bytes>, Vec<ServerEvent>) {
        let mut tx = Vec::new();
        while let Some(b) = t.poll_transmit() {
            tx.push(b);
        }
        let mut ev = Vec::new();
        while let Some(e) = t.poll_event() {
            ev.push(e);
        }
        (tx, ev)
    }

    #[test]
    fn new_states_and_no_timers() {
        let now = Instant::now();
        let inv = ServerTxn::new(now, true, false, &TimerConfig::default());
        assert_eq!(inv.state(), State::Proceeding);
        assert_eq!(inv.kind(), TxnKind::InviteServer);
        assert_eq!(inv.poll_timeout(), None);
        assert_eq!(inv.last_status(), None);
        let nin = ServerTxn::new(now, false, false, &TimerConfig::default());
        assert_eq!(nin.state(), State::Trying);
        assert_eq!(nin.kind(), TxnKind::NonInviteServer);
    }

    #[test]
    fn invite_retransmission_before_any_response_is_absorbed() {
        let now = Instant::now();
        let mut t = ServerTxn::new(now, true, false, &TimerConfig::default());
        t.handle_retransmission(now);
        let (tx, ev) = drain(&mut t);
        assert!(tx.is_empty() && ev.is_empty());
        // and an ACK with nothing to acknowledge is dropped
        assert!(t.handle_ack(now));
        assert_eq!(t.state(), State::Proceeding);
    }

    #[test]
    fn completed_discards_further_responses() {
        let now = Instant::now();
        let mut t = ServerTxn::new(now, false, false, &TimerConfig::default());
        t.send_response(now, 200, Bytes::from_static(b"200"));
        t.send_response(now, 500, Bytes::from_static(b"500"));
        t.send_response(now, 180, Bytes::from_static(b"180"));
        let (tx, _) = drain(&mut t);
        assert_eq!(tx, vec![Bytes::from_static(b"200")]);
        assert_eq!(t.last_status(), Some(200));
        t.handle_retransmission(now);
        assert_eq!(t.poll_transmit(), Some(Bytes::from_static(b"200")));
    }

    #[test]
    fn invalid_status_not_sent() {
        let now = Instant::now();
        let mut t = ServerTxn::new(now, true, false, &TimerConfig::default());
        t.send_response(now, 99, Bytes::from_static(b"x"));
        t.send_response(now, 700, Bytes::from_static(b"x"));
        assert_eq!(t.poll_transmit(), None);
        assert_eq!(t.state(), State::Proceeding);
    }

    #[test]
    fn non_invite_never_takes_ack() {
        let now = Instant::now();
        let mut t = ServerTxn::new(now, false, false, &TimerConfig::default());
        t.send_response(now, 404, Bytes::from_static(b"404"));
        assert!(!t.handle_ack(now));
        assert_eq!(t.state(), State::Completed);
    }

    #[test]
    fn transport_error_in_completed_and_confirmed_and_accepted() {
        let now = Instant::now();
        let cfg = TimerConfig::default();
        // non-INVITE Completed: re-sent final fails
        let mut t = ServerTxn::new(now, false, false, &cfg);
        t.send_response(now, 200, Bytes::from_static(b"200"));
        t.handle_retransmission(now);
        t.handle_transport_error(now);
        let (_, ev) = drain(&mut t);
        assert_eq!(
            ev,
            vec![ServerEvent::TransportError, ServerEvent::Terminated]
        );
        // INVITE Accepted: a TU 2xx retransmission fails
        let mut t = ServerTxn::new(now, true, false, &cfg);
        t.send_response(now, 200, Bytes::from_static(b"200"));
        t.handle_transport_error(now);
        assert!(t.is_terminated());
        assert_eq!(t.poll_timeout(), None);
        // once Terminated, nothing more happens
        t.handle_transport_error(now);
        t.handle_retransmission(now);
        t.send_response(now, 200, Bytes::from_static(b"200"));
        assert!(!t.handle_ack(now));
        let (tx, ev) = drain(&mut t);
        assert_eq!(tx, vec![Bytes::from_static(b"200")]);
        assert_eq!(
            ev,
            vec![ServerEvent::TransportError, ServerEvent::Terminated]
        );
    }

    #[test]
    fn timer_g_caps_at_t2_and_h_is_64_t1() {
        let now = Instant::now();
        let cfg = TimerConfig::default();
        let mut t = ServerTxn::new(now, true, false, &cfg);
        t.send_response(now, 480, Bytes::from_static(b"480"));
        assert_eq!(t.timers.get(Timer::H), Some(now + Duration::from_secs(32)));
        let mut at = now;
        let mut gaps = Vec::new();
        while let Some((Timer::G, next)) = t.next_timer() {
            gaps.push((next - at).as_millis());
            at = next;
            t.handle_timeout(at);
        }
        // .5 1 2 4 4 4 4 4 4 4 (then H at 32 s wins)
        assert_eq!(
            gaps,
            vec![500, 1000, 2000, 4000, 4000, 4000, 4000, 4000, 4000, 4000]
        );
        let (tx, _) = drain(&mut t);
        assert_eq!(tx.len(), 11);
        t.handle_timeout(now + Duration::from_secs(32));
        assert_eq!(t.poll_event(), Some(ServerEvent::Timeout));
        assert_eq!(t.poll_event(), Some(ServerEvent::Terminated));
        assert_eq!(t.poll_event(), None);
    }

    #[test]
    fn accepted_ignores_non_2xx_from_tu() {
        let now = Instant::now();
        let mut t = ServerTxn::new(now, true, false, &TimerConfig::default());
        t.send_response(now, 200, Bytes::from_static(b"200"));
        t.send_response(now, 486, Bytes::from_static(b"486"));
        t.send_response(now, 183, Bytes::from_static(b"183"));
        let (tx, _) = drain(&mut t);
        assert_eq!(tx, vec![Bytes::from_static(b"200")]);
        assert_eq!(t.state(), State::Accepted);
        assert_eq!(t.last_status(), Some(200));
    }
}
