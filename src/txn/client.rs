//! Client transactions: INVITE (RFC 3261 §17.1.1, with the RFC 6026
//! Accepted state) and non-INVITE (§17.1.2).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::{State, Timer, TimerConfig, TimerTable, TxnKind};

/// What a client transaction reports to its TU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// A 1xx response (every one received in Calling/Trying/Proceeding).
    Provisional(u16),
    /// A final response. Every 2xx received in Accepted is passed up again
    /// (RFC 6026 §8.4: the TU handles 2xx retransmissions and forked 2xx);
    /// retransmitted non-2xx finals are absorbed (§17.1.1.2, §17.1.2.2).
    Final(u16),
    /// Timer B (INVITE) or Timer F (non-INVITE) fired before a final
    /// response arrived.
    Timeout,
    /// The transport reported a fatal error for a message of this
    /// transaction (§17.1.4); the transaction is Terminated.
    TransportError,
}

/// One client transaction: a sans-IO state machine over opaque wire bytes.
///
/// Drive it with `handle_*`, then drain [`ClientTxn::poll_transmit`] (bytes to
/// send to the transaction's destination), [`ClientTxn::poll_event`] (for the
/// TU) and re-arm the caller's single timer from [`ClientTxn::poll_timeout`].
#[derive(Debug)]
pub struct ClientTxn {
    invite: bool,
    reliable: bool,
    cfg: TimerConfig,
    state: State,
    request: Bytes,
    /// ACK for a 3xx-6xx final (INVITE only), re-sent on retransmitted finals.
    ack: Option<Bytes>,
    timers: TimerTable,
    /// Current interval of Timer A or Timer E.
    interval: std::time::Duration,
    transmits: VecDeque<Bytes>,
    events: VecDeque<ClientEvent>,
    last_status: Option<u16>,
}

impl ClientTxn {
    /// Starts a client transaction and queues the first transmission of
    /// `request` (the exact wire bytes). `reliable` = TCP/TLS: no request
    /// retransmission (Timers A/E unset) and Timers D/K are zero (§17.1.1.2,
    /// §17.1.2.2).
    pub fn new(
        now: Instant,
        kind_invite: bool,
        request: Bytes,
        reliable: bool,
        cfg: &TimerConfig,
    ) -> ClientTxn {
        let cfg = &cfg.sanitized();
        let mut txn = ClientTxn {
            invite: kind_invite,
            reliable,
            cfg: *cfg,
            state: if kind_invite {
                State::Calling
            } else {
                State::Trying
            },
            request: request.clone(),
            ack: None,
            timers: TimerTable::new(),
            interval: cfg.t1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            last_status: None,
        };
        txn.transmits.push_back(request);
        let (retransmit, timeout) = if kind_invite {
            (Timer::A, Timer::B)
        } else {
            (Timer::E, Timer::F)
        };
        if !reliable {
            // §17.1.1.2 / §17.1.2.2: first retransmission after T1
            txn.timers.set_after(retransmit, now, cfg.t1);
        }
        txn.timers.set_after(timeout, now, cfg.timeout_64t1());
        txn
    }

    /// Which of the two client machines this is.
    pub fn kind(&self) -> TxnKind {
        if self.invite {
            TxnKind::InviteClient
        } else {
            TxnKind::NonInviteClient
        }
    }

    /// A response matched to this transaction (the caller matches with
    /// [`super::ClientKey`]). `ack_for_non2xx` is the ACK the caller built for
    /// a 3xx-6xx final response to an INVITE (§17.1.1.3); the transaction
    /// sends it and re-sends it on each retransmitted final while Completed.
    /// Status codes outside 100..=699 are ignored.
    pub fn handle_response(&mut self, now: Instant, status: u16, ack_for_non2xx: Option<Bytes>) {
        if !(100..=699).contains(&status) {
            return;
        }
        if self.invite {
            self.invite_response(now, status, ack_for_non2xx);
        } else {
            self.non_invite_response(now, status);
        }
    }

    fn invite_response(&mut self, now: Instant, status: u16, ack: Option<Bytes>) {
        match (self.state, status) {
            (State::Calling | State::Proceeding, 100..=199) => {
                // §17.1.1.2: stop retransmitting; Timer B no longer applies
                // (the proxy's Timer C, §16.6 step 11, guards Proceeding)
                self.timers.stop(Timer::A);
                self.timers.stop(Timer::B);
                self.state = State::Proceeding;
                self.last_status = Some(status);
                self.events.push_back(ClientEvent::Provisional(status));
            }
            (State::Calling | State::Proceeding, 200..=299) => {
                // RFC 6026 §8.4: Accepted, Timer M = 64*T1
                self.timers.stop(Timer::A);
                self.timers.stop(Timer::B);
                self.state = State::Accepted;
                self.last_status = Some(status);
                self.timers
                    .set_after(Timer::M, now, self.cfg.timeout_64t1());
                self.events.push_back(ClientEvent::Final(status));
            }
            (State::Calling | State::Proceeding, _) => {
                // §17.1.1.2: 300-699 → ACK, Completed, Timer D
                self.timers.stop(Timer::A);
                self.timers.stop(Timer::B);
                self.state = State::Completed;
                self.last_status = Some(status);
                if let Some(a) = ack {
                    self.transmits.push_back(a.clone());
                    self.ack = Some(a);
                }
                let d = if self.reliable {
                    std::time::Duration::ZERO
                } else {
                    self.cfg.timer_d()
                };
                self.timers.set_after(Timer::D, now, d);
                self.events.push_back(ClientEvent::Final(status));
            }
            (State::Completed, 300..=699) => {
                // §17.1.1.2: retransmitted final → re-send ACK, not to TU.
                // The first ACK handed over is kept (it is the same ACK each
                // time, §17.1.1.3).
                if self.ack.is_none() {
                    self.ack = ack;
                }
                if let Some(a) = &self.ack {
                    self.transmits.push_back(a.clone());
                }
            }
            (State::Accepted, 200..=299) => {
                // RFC 6026 §8.4: every 2xx goes to the TU
                self.last_status = Some(status);
                self.events.push_back(ClientEvent::Final(status));
            }
            // anything else (1xx after a final, 2xx in Completed, …) is
            // absorbed: it cannot change the outcome
            _ => {}
        }
    }

    fn non_invite_response(&mut self, now: Instant, status: u16) {
        match (self.state, status) {
            (State::Trying | State::Proceeding, 100..=199) => {
                // §17.1.2.2: Proceeding; Timer E keeps running (capped at T2
                // from now on, see handle_timeout)
                self.state = State::Proceeding;
                self.last_status = Some(status);
                self.events.push_back(ClientEvent::Provisional(status));
            }
            (State::Trying | State::Proceeding, _) => {
                self.timers.stop(Timer::E);
                self.timers.stop(Timer::F);
                self.state = State::Completed;
                self.last_status = Some(status);
                let k = if self.reliable {
                    std::time::Duration::ZERO
                } else {
                    self.cfg.t4
                };
                self.timers.set_after(Timer::K, now, k);
                self.events.push_back(ClientEvent::Final(status));
            }
            // Completed: "buffer response retransmissions" — absorbed
            _ => {}
        }
    }

    /// The transport failed to send a message of this transaction
    /// (§17.1.4): inform the TU and terminate. Ignored once Terminated.
    pub fn handle_transport_error(&mut self, _now: Instant) {
        if self.state == State::Terminated {
            return;
        }
        self.events.push_back(ClientEvent::TransportError);
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
            (Timer::A, State::Calling) => {
                // §17.1.1.2: retransmit, double the interval (no T2 cap)
                self.transmits.push_back(self.request.clone());
                self.interval = self.interval.saturating_mul(2);
                self.timers.set_after(Timer::A, now, self.interval);
            }
            (Timer::B, State::Calling) | (Timer::F, State::Trying | State::Proceeding) => {
                self.events.push_back(ClientEvent::Timeout);
                self.terminate();
            }
            (Timer::E, State::Trying) => {
                // §17.1.2.2: min(2^n*T1, T2)
                self.transmits.push_back(self.request.clone());
                self.interval = self.interval.saturating_mul(2).min(self.cfg.t2);
                self.timers.set_after(Timer::E, now, self.interval);
            }
            (Timer::E, State::Proceeding) => {
                // §17.1.2.2: in Proceeding, reset E to T2
                self.transmits.push_back(self.request.clone());
                self.interval = self.cfg.t2;
                self.timers.set_after(Timer::E, now, self.cfg.t2);
            }
            (Timer::D, State::Completed)
            | (Timer::K, State::Completed)
            | (Timer::M, State::Accepted) => self.terminate(),
            // a timer left over from an earlier state: nothing to do
            _ => {}
        }
    }

    fn terminate(&mut self) {
        self.state = State::Terminated;
        self.timers.clear();
    }

    /// Next message to send (exact wire bytes), if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmits.pop_front()
    }

    /// Next event for the TU, if any.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`ClientTxn::handle_timeout`] must next be called. A zero timer
    /// (reliable D/K) is armed at the `now` of the call that armed it.
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

    /// Status of the last response that changed state or was passed up.
    pub fn last_status(&self) -> Option<u16> {
        self.last_status
    }

    /// The request this transaction sends.
    pub fn request(&self) -> &Bytes {
        &self.request
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg() -> TimerConfig {
        TimerConfig::default()
    }

    fn drain(t: &mut ClientTxn) -> (Vec<Bytes>, Vec<ClientEvent>) {
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
    fn new_invite_queues_request_and_arms_a_b() {
        let now = Instant::now();
        let mut t = ClientTxn::new(now, true, Bytes::from_static(b"INV"), false, &cfg());
        assert_eq!(t.state(), State::Calling);
        assert_eq!(t.kind(), TxnKind::InviteClient);
        assert_eq!(
            t.next_timer(),
            Some((Timer::A, now + Duration::from_millis(500)))
        );
        assert_eq!(t.timers.get(Timer::B), Some(now + Duration::from_secs(32)));
        let (tx, ev) = drain(&mut t);
        assert_eq!(tx, vec![Bytes::from_static(b"INV")]);
        assert!(ev.is_empty());
    }

    #[test]
    fn new_reliable_has_no_retransmit_timer() {
        let now = Instant::now();
        let t = ClientTxn::new(now, false, Bytes::from_static(b"OPT"), true, &cfg());
        assert_eq!(t.state(), State::Trying);
        assert_eq!(
            t.next_timer(),
            Some((Timer::F, now + Duration::from_secs(32)))
        );
        assert_eq!(t.timers.get(Timer::E), None);
    }

    #[test]
    fn invalid_status_ignored() {
        let now = Instant::now();
        let mut t = ClientTxn::new(now, true, Bytes::from_static(b"INV"), false, &cfg());
        t.handle_response(now, 99, None);
        t.handle_response(now, 700, None);
        t.handle_response(now, 0, None);
        assert_eq!(t.state(), State::Calling);
        let (_, ev) = drain(&mut t);
        assert!(ev.is_empty());
    }

    #[test]
    fn invite_completed_ignores_1xx_and_2xx() {
        let now = Instant::now();
        let mut t = ClientTxn::new(now, true, Bytes::from_static(b"INV"), false, &cfg());
        t.handle_response(now, 404, Some(Bytes::from_static(b"ACK")));
        drain(&mut t);
        t.handle_response(now, 180, None);
        t.handle_response(now, 200, None);
        assert_eq!(t.state(), State::Completed);
        let (tx, ev) = drain(&mut t);
        assert!(tx.is_empty() && ev.is_empty());
        assert_eq!(t.last_status(), Some(404));
    }

    #[test]
    fn invite_completed_resends_first_ack_only() {
        let now = Instant::now();
        let mut t = ClientTxn::new(now, true, Bytes::from_static(b"INV"), false, &cfg());
        drain(&mut t);
        // caller could not build the ACK the first time
        t.handle_response(now, 486, None);
        let (tx, ev) = drain(&mut t);
        assert!(tx.is_empty());
        assert_eq!(ev, vec![ClientEvent::Final(486)]);
        t.handle_response(now, 486, Some(Bytes::from_static(b"ACK1")));
        t.handle_response(now, 486, Some(Bytes::from_static(b"ACK2")));
        t.handle_response(now, 486, None);
        let (tx, ev) = drain(&mut t);
        assert_eq!(tx, vec![Bytes::from_static(b"ACK1"); 3]);
        assert!(ev.is_empty());
    }

    #[test]
    fn invite_proceeding_and_accepted_transport_errors_terminate() {
        let now = Instant::now();
        let mut t = ClientTxn::new(now, true, Bytes::from_static(b"INV"), false, &cfg());
        t.handle_response(now, 183, None);
        t.handle_transport_error(now);
        let (_, ev) = drain(&mut t);
        assert_eq!(
            ev,
            vec![ClientEvent::Provisional(183), ClientEvent::TransportError]
        );
        assert!(t.is_terminated());
        let mut t = ClientTxn::new(now, true, Bytes::from_static(b"INV"), false, &cfg());
        t.handle_response(now, 200, None);
        t.handle_transport_error(now);
        let (_, ev) = drain(&mut t);
        assert_eq!(
            ev,
            vec![ClientEvent::Final(200), ClientEvent::TransportError]
        );
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn timers_scale_with_config() {
        let now = Instant::now();
        let cfg = TimerConfig {
            t1: Duration::from_millis(100),
            t2: Duration::from_millis(400),
            t4: Duration::from_secs(1),
        };
        let mut t = ClientTxn::new(now, false, Bytes::from_static(b"OPT"), false, &cfg);
        assert_eq!(
            t.next_timer(),
            Some((Timer::E, now + Duration::from_millis(100)))
        );
        assert_eq!(
            t.timers.get(Timer::F),
            Some(now + Duration::from_millis(6400))
        );
        let mut at = now;
        let mut gaps = Vec::new();
        while let Some((Timer::E, next)) = t.next_timer() {
            gaps.push(next - at);
            at = next;
            t.handle_timeout(at);
            if gaps.len() == 5 {
                break;
            }
        }
        let want: Vec<Duration> = [100, 200, 400, 400, 400]
            .iter()
            .map(|&m| Duration::from_millis(m))
            .collect();
        assert_eq!(gaps, want);
        t.handle_response(at, 200, None);
        assert_eq!(
            t.next_timer(),
            Some((Timer::K, at + Duration::from_secs(1)))
        );
        // Timer D never drops below 32 s, and follows 64*T1 above it
        let big = TimerConfig {
            t1: Duration::from_secs(1),
            ..TimerConfig::default()
        };
        assert_eq!(cfg.timer_d(), Duration::from_secs(32));
        assert_eq!(big.timer_d(), Duration::from_secs(64));
    }

    #[test]
    fn zero_config_does_not_spin() {
        let now = Instant::now();
        let zero = TimerConfig {
            t1: Duration::ZERO,
            t2: Duration::ZERO,
            t4: Duration::ZERO,
        };
        for invite in [true, false] {
            let mut t = ClientTxn::new(now, invite, Bytes::from_static(b"R"), false, &zero);
            // each handle_timeout terminates in bounded work and the clock
            // has to move for the next retransmission
            t.handle_timeout(now);
            let (tx, _) = drain(&mut t);
            assert_eq!(tx.len(), 1, "only the initial send at t=0");
            let next = t.poll_timeout();
            assert_eq!(next, Some(now + TimerConfig::MIN_T1));
            t.handle_timeout(now + Duration::from_secs(1));
            assert!(t.is_terminated(), "64*T1 = 64 ms elapsed");
        }
    }

    #[test]
    fn invite_accepted_absorbs_non_2xx() {
        let now = Instant::now();
        let mut t = ClientTxn::new(now, true, Bytes::from_static(b"INV"), true, &cfg());
        t.handle_response(now, 200, None);
        drain(&mut t);
        t.handle_response(now, 180, None);
        t.handle_response(now, 486, Some(Bytes::from_static(b"ACK")));
        let (tx, ev) = drain(&mut t);
        assert!(tx.is_empty() && ev.is_empty());
        assert_eq!(t.state(), State::Accepted);
    }

    #[test]
    fn transport_error_after_termination_is_ignored() {
        let now = Instant::now();
        let mut t = ClientTxn::new(now, false, Bytes::from_static(b"OPT"), true, &cfg());
        t.handle_transport_error(now);
        t.handle_transport_error(now);
        let (_, ev) = drain(&mut t);
        assert_eq!(ev, vec![ClientEvent::TransportError]);
        assert!(t.is_terminated());
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn late_handle_timeout_fires_in_deadline_order() {
        // A and B both overdue: A retransmits first, then B terminates
        let now = Instant::now();
        let mut t = ClientTxn::new(now, true, Bytes::from_static(b"INV"), false, &cfg());
        drain(&mut t);
        t.handle_timeout(now + Duration::from_secs(40));
        let (tx, ev) = drain(&mut t);
        assert_eq!(tx.len(), 1);
        assert_eq!(ev, vec![ClientEvent::Timeout]);
        assert!(t.is_terminated());
    }
}
