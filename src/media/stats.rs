//! Per-leg counters and the RTP sequence-number loss estimate.
//!
//! Everything here is plain data updated by the relay under the session
//! lock; nothing allocates.

use std::net::SocketAddr;

/// RFC 3550 Appendix A.1: a jump of more than this many sequence numbers
/// ahead is a restart/misorder rather than loss.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 Appendix A.1: packets up to this far behind are late/duplicate.
const MAX_MISORDER: u16 = 100;

/// Sequence-number tracking for one inbound RTP stream (one SSRC), after
/// RFC 3550 Appendix A.1 (extended sequence numbers with cycle count) and
/// A.3 (expected vs received → cumulative loss).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqTracker {
    ssrc: Option<u32>,
    base_seq: u32,
    max_seq: u16,
    /// Shifted count of sequence-number wraps (RFC 3550 A.1 `cycles`).
    cycles: u32,
    received: u64,
    late: u64,
    ssrc_changes: u64,
}

impl SeqTracker {
    /// Records one packet of `ssrc` with sequence number `seq`.
    pub fn record(&mut self, ssrc: u32, seq: u16) {
        if self.ssrc != Some(ssrc) {
            if self.ssrc.is_some() {
                self.ssrc_changes = self.ssrc_changes.saturating_add(1);
            }
            self.restart(ssrc, seq);
            return;
        }
        let udelta = seq.wrapping_sub(self.max_seq);
        if udelta == 0 {
            // Duplicate of the highest packet.
            self.late = self.late.saturating_add(1);
        } else if udelta < MAX_DROPOUT {
            // In order, possibly with a gap (lost packets).
            if seq < self.max_seq {
                self.cycles = self.cycles.wrapping_add(1 << 16);
            }
            self.max_seq = seq;
            self.received = self.received.saturating_add(1);
        } else if udelta <= u16::MAX - MAX_MISORDER {
            // A very large jump: the sender restarted its numbering
            // (RFC 3550 A.1 would wait for two sequential packets; a relay
            // only estimates, so resynchronise at once).
            self.restart(ssrc, seq);
            self.ssrc_changes = self.ssrc_changes.saturating_add(1);
        } else {
            // Behind the highest: a late (reordered) or duplicate packet. It
            // counts as received so the loss estimate does not double count
            // it, and as late.
            self.received = self.received.saturating_add(1);
            self.late = self.late.saturating_add(1);
        }
    }

    /// Starts tracking a new stream (RFC 3550 A.1 `init_seq`).
    fn restart(&mut self, ssrc: u32, seq: u16) {
        *self = SeqTracker {
            ssrc: Some(ssrc),
            base_seq: u32::from(seq),
            max_seq: seq,
            cycles: 0,
            received: 1,
            late: 0,
            ssrc_changes: self.ssrc_changes,
        };
    }

    /// How often the stream restarted (new SSRC or sequence jump).
    pub fn restarts(&self) -> u64 {
        self.ssrc_changes
    }

    /// The current SSRC.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// Extended highest sequence number received (RFC 3550 A.1).
    pub fn extended_max(&self) -> u64 {
        u64::from(self.cycles) + u64::from(self.max_seq)
    }

    /// Packets expected since the stream (re)started (RFC 3550 A.3).
    pub fn expected(&self) -> u64 {
        if self.ssrc.is_none() {
            return 0;
        }
        (self.extended_max() + 1).saturating_sub(u64::from(self.base_seq))
    }

    /// Packets received in the current stream.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Cumulative loss estimate, clamped at zero (duplicates can make
    /// received exceed expected, RFC 3550 A.3).
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.received)
    }

    /// Packets that arrived behind the highest sequence number seen.
    pub fn late(&self) -> u64 {
        self.late
    }
}

/// Why a packet was dropped, one counter each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// Source address was not the leg's (latched) remote: RTP bleed.
    pub foreign_source: u64,
    /// SRTP/SRTCP authentication failed (or undecryptable).
    pub srtp_auth: u64,
    /// SRTP/SRTCP replay (RFC 3711 §3.3.2).
    pub replay: u64,
    /// Protecting would have used an SRTP index (keystream) a second time.
    pub srtp_index_reuse: u64,
    /// Too short / not RTP version 2 / does not fit the relay buffer.
    pub malformed: u64,
    /// The other leg has no remote address yet.
    pub no_route: u64,
    /// The kernel refused the send.
    pub send_error: u64,
}

impl Drops {
    /// Sum of all drop counters.
    pub fn total(&self) -> u64 {
        self.foreign_source
            .saturating_add(self.srtp_auth)
            .saturating_add(self.replay)
            .saturating_add(self.srtp_index_reuse)
            .saturating_add(self.malformed)
            .saturating_add(self.no_route)
            .saturating_add(self.send_error)
    }
}

/// Counters of one leg. "rx" is what arrived on the leg's local sockets,
/// "tx" what the relay sent out of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegCounters {
    /// Packets received (accepted or not).
    pub rx_packets: u64,
    /// Bytes received (accepted or not).
    pub rx_bytes: u64,
    /// Packets accepted and relayed to the other leg.
    pub forwarded: u64,
    /// RTCP packets among the accepted ones.
    pub rtcp_packets: u64,
    /// Packets sent out of this leg.
    pub tx_packets: u64,
    /// Bytes sent out of this leg.
    pub tx_bytes: u64,
    /// Drops, by cause.
    pub drops: Drops,
    /// Loss/late estimate of the inbound RTP stream.
    pub seq: SeqTracker,
}

/// A point-in-time copy of one leg's counters, for the call log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegSnapshot {
    /// Counters.
    pub counters: LegCounters,
    /// Inbound SSRC currently tracked.
    pub ssrc: Option<u32>,
    /// Expected inbound RTP packets (RFC 3550 A.3).
    pub expected: u64,
    /// Estimated inbound RTP loss.
    pub lost: u64,
    /// Late/duplicate inbound RTP packets.
    pub late: u64,
    /// Remote RTP address in use (latched or signalled).
    pub remote_rtp: Option<SocketAddr>,
    /// Whether the RTP source was latched to a port other than signalled.
    pub latched: bool,
    /// Hold state.
    pub on_hold: bool,
    /// Whether SRTP is active on this leg.
    pub srtp: bool,
    /// The remote RTP address signalled in SDP.
    pub signalled_rtp: Option<SocketAddr>,
    /// The first source whose packets were dropped as coming from elsewhere.
    pub first_elsewhere: Option<SocketAddr>,
}

impl LegSnapshot {
    pub(crate) fn new(
        counters: LegCounters,
        remote_rtp: Option<SocketAddr>,
        latched: bool,
        on_hold: bool,
        srtp: bool,
    ) -> Self {
        LegSnapshot {
            counters,
            ssrc: counters.seq.ssrc(),
            expected: counters.seq.expected(),
            lost: counters.seq.lost(),
            late: counters.seq.late(),
            remote_rtp,
            latched,
            on_hold,
            srtp,
            signalled_rtp: None,
            first_elsewhere: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_has_no_loss() {
        let mut t = SeqTracker::default();
        for s in 100..200u16 {
            t.record(7, s);
        }
        assert_eq!(t.ssrc(), Some(7));
        assert_eq!(t.expected(), 100);
        assert_eq!(t.received(), 100);
        assert_eq!(t.lost(), 0);
        assert_eq!(t.late(), 0);
    }

    #[test]
    fn gaps_count_as_loss() {
        let mut t = SeqTracker::default();
        for s in [1u16, 2, 3, 6, 7, 10] {
            t.record(1, s);
        }
        assert_eq!(t.expected(), 10);
        assert_eq!(t.received(), 6);
        assert_eq!(t.lost(), 4);
    }

    #[test]
    fn late_packet_fills_the_gap_and_counts_late() {
        let mut t = SeqTracker::default();
        for s in [1u16, 2, 4, 3, 5] {
            t.record(1, s);
        }
        assert_eq!(t.expected(), 5);
        assert_eq!(t.lost(), 0);
        assert_eq!(t.late(), 1);
        // A duplicate of the highest is late too; loss clamps at zero.
        t.record(1, 5);
        assert_eq!(t.late(), 2);
        assert_eq!(t.lost(), 0);
    }

    #[test]
    fn wraparound_extends_the_sequence() {
        let mut t = SeqTracker::default();
        for i in 0..20u16 {
            t.record(9, 65530u16.wrapping_add(i));
        }
        assert_eq!(t.extended_max(), 65536 + 13);
        assert_eq!(t.expected(), 20);
        assert_eq!(t.lost(), 0);
        t.record(9, 20); // 6 lost: 14..=19
        assert_eq!(t.lost(), 6);
    }

    #[test]
    fn ssrc_change_restarts_tracking() {
        let mut t = SeqTracker::default();
        for s in [1u16, 5] {
            t.record(1, s);
        }
        assert_eq!(t.lost(), 3);
        t.record(2, 5000);
        assert_eq!(t.ssrc(), Some(2));
        assert_eq!(t.expected(), 1);
        assert_eq!(t.lost(), 0);
    }

    #[test]
    fn huge_jump_resynchronises() {
        let mut t = SeqTracker::default();
        t.record(1, 10);
        t.record(1, 30000);
        assert_eq!(t.expected(), 1);
        assert_eq!(t.lost(), 0);
    }

    #[test]
    fn drops_total_sums_all_causes() {
        let d = Drops {
            foreign_source: 1,
            srtp_auth: 2,
            replay: 3,
            malformed: 4,
            no_route: 5,
            send_error: 6,
            srtp_index_reuse: 7,
        };
        assert_eq!(d.total(), 28);
    }
}
