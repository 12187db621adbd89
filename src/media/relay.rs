//! The relay: per-session forwarding state and the fixed pool of worker
//! threads that moves packets between legs.
//!
//! Each worker owns an epoll instance; every media socket of a session is
//! registered (level-triggered) on one worker, chosen round-robin when the
//! session is created. A ready socket is drained in batches: receive
//! (`recvmmsg`, or one `recvfrom` per packet in [`IoMode::Single`]), one
//! lock of the session state for the whole batch, send (`sendmmsg` or
//! `sendto`). Buffers are allocated once per worker; the steady-state path
//! allocates nothing, SRTP included: the packet is copied into the
//! worker's output buffer and protected or unprotected there in place
//! (`srtp_transform`, see the bench).
//!
//! RTP is not parsed beyond its fixed header (RFC 3550 §5.1): version,
//! payload type (to tell RTCP apart under rtcp-mux, RFC 5761 §4), sequence
//! number and SSRC for the loss estimate.
#![allow(unsafe_code)] // the kernel interface of the relay: syscalls on our own buffers

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::batch::{RxBatch, TxBatch, TxItem, SLOT};
use super::latch::{Admit, Latch, LatchPolicy};
use super::pool::PortPair;
use super::srtp::{SrtpFail, SrtpLeg};
use super::stats::LegCounters;
use super::supervision::Activity;
use super::{Leg, MediaError};

/// How workers talk to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    /// `recvmmsg`, then `sendmmsg` per run of datagrams leaving on the
    /// same socket (`sendto` for a lone one, which measured cheaper than a
    /// one-entry `sendmmsg`). The default. Measured with `benches/relay.rs`
    /// on the 2-core dev VM over loopback, packets per relay-thread
    /// CPU-second, 6 runs: full 64-packet bursts 0.93–1.07× (mean ≈1.03×)
    /// of [`IoMode::Single`]; one packet per wake-up (100 calls)
    /// 0.94–1.01× (mean ≈0.98×). The kernel's per-datagram work is >90 % of
    /// the relay thread's time (perf), so the system-call strategy is
    /// within noise; batched is kept for its edge when queues fill, i.e.
    /// under load.
    Batched,
    /// `recvfrom`/`sendto`: one system call per packet.
    Single,
}

/// Relay settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    /// Worker threads (at least 1).
    pub workers: usize,
    /// System-call strategy.
    pub io_mode: IoMode,
    /// Packets per batch (at least 1).
    pub batch_size: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            io_mode: IoMode::Batched,
            batch_size: 32,
        }
    }
}

/// Batches drained from one socket per readiness event before moving on
/// (fairness between sessions of a worker).
const MAX_ROUNDS: usize = 4;
const MAX_EVENTS: usize = 64;
const WAKE_TOKEN: u64 = u64::MAX;

// ---------------------------------------------------------------------------
// Per-session forwarding state
// ---------------------------------------------------------------------------

/// Forwarding state of one leg.
#[derive(Debug, Default)]
pub(crate) struct LegState {
    pub rtp: Latch,
    pub rtcp: Latch,
    /// The remote signalled a distinct RTCP address (no rtcp-mux).
    pub rtcp_signalled: bool,
    /// This leg has a local RTCP socket.
    pub has_rtcp_socket: bool,
    pub srtp: Option<SrtpLeg>,
    pub counters: LegCounters,
    /// The first source whose packets were dropped as coming from elsewhere (for the log).
    pub first_elsewhere: Option<SocketAddr>,
}

impl LegState {
    /// The latching policy of this leg's peer (both sockets).
    pub(crate) fn set_latching(&mut self, policy: LatchPolicy) {
        self.rtp.set_policy(policy);
        self.rtcp.set_policy(policy);
    }

    pub(crate) fn set_remote(&mut self, rtp: SocketAddr, rtcp: Option<SocketAddr>) {
        self.rtp.set_signalled(Some(rtp));
        // Packets on the RTCP socket are expected from the signalled RTCP
        // address; without one, from the RTP address's IP (latching covers
        // the port).
        self.rtcp.set_signalled(Some(rtcp.unwrap_or(rtp)));
        self.rtcp_signalled = rtcp.is_some();
    }
}

/// Where a relayed packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    pub to: Leg,
    pub via_rtcp: bool,
    pub dest: SocketAddr,
    pub len: usize,
    /// The packet is unchanged: send the received bytes.
    pub in_place: bool,
}

/// RFC 5761 §4: under rtcp-mux, an RTCP packet has a second octet (the RTP
/// M bit + payload type position) in 192..=223 (RTCP PT 192–223).
fn looks_like_rtcp(pkt: &[u8]) -> bool {
    matches!(pkt.get(1), Some(192..=223))
}

fn be16(pkt: &[u8], at: usize) -> Option<u16> {
    let b = pkt.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

fn be32(pkt: &[u8], at: usize) -> Option<u32> {
    let b = pkt.get(at..at.checked_add(4)?)?;
    let mut w = [0u8; 4];
    w.copy_from_slice(b);
    Some(u32::from_be_bytes(w))
}

/// Forwarding state of a session: both legs and the activity clock.
#[derive(Debug, Default)]
pub(crate) struct RelayState {
    pub legs: [LegState; 2],
    pub activity: Activity,
}

impl RelayState {
    fn split(&mut self, from: Leg) -> (&mut LegState, &mut LegState) {
        let [a, b] = &mut self.legs;
        match from {
            Leg::A => (a, b),
            Leg::B => (b, a),
        }
    }

    /// Handles one packet received on leg `from` (its RTCP socket when
    /// `on_rtcp_socket`) from `src`. On success the packet to send is in
    /// `out` (or unchanged in `pkt` when `Route::in_place`). `scratch` is
    /// used when both legs are SRTP.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn process(
        &mut self,
        from: Leg,
        on_rtcp_socket: bool,
        src: SocketAddr,
        pkt: &[u8],
        out: &mut [u8],
        scratch: &mut [u8],
        now: Instant,
    ) -> Option<Route> {
        let (inl, outl) = self.split(from);
        let c = &mut inl.counters;
        c.rx_packets = c.rx_packets.saturating_add(1);
        c.rx_bytes = c.rx_bytes.saturating_add(pkt.len() as u64);

        let is_rtcp = on_rtcp_socket || looks_like_rtcp(pkt);
        let latch = if on_rtcp_socket { &inl.rtcp } else { &inl.rtp };
        if latch.admit(src, now) == Admit::Reject {
            // Media from elsewhere than the signalled or latched source: dropped, counted, and
            // still activity (the leg is not silent, its media comes from the wrong place).
            c.drops.foreign_source = c.drops.foreign_source.saturating_add(1);
            inl.first_elsewhere.get_or_insert(src);
            self.activity.on_elsewhere(from, now);
            return None;
        }
        // RFC 3550 §5.1 (12-octet RTP header) / §6.4.1 (8-octet RTCP
        // header + SSRC); version 2 only.
        let min = if is_rtcp { 8 } else { 12 };
        let version_ok = pkt.first().is_some_and(|b| b >> 6 == 2);
        if pkt.len() < min || !version_ok {
            c.drops.malformed = c.drops.malformed.saturating_add(1);
            return None;
        }
        let (dest, via_rtcp) = if is_rtcp && outl.rtcp_signalled {
            (outl.rtcp.destination(), outl.has_rtcp_socket)
        } else {
            (outl.rtp.destination(), false)
        };
        let Some(dest) = dest else {
            c.drops.no_route = c.drops.no_route.saturating_add(1);
            return None;
        };

        let result: Result<(usize, bool), SrtpFail> = match (&mut inl.srtp, &mut outl.srtp) {
            (None, None) => Ok((pkt.len(), true)),
            (Some(i), None) => if is_rtcp {
                i.unprotect_rtcp(pkt, out)
            } else {
                i.unprotect_rtp(pkt, out)
            }
            .map(|n| (n, false)),
            (None, Some(o)) => if is_rtcp {
                o.protect_rtcp(pkt, out)
            } else {
                o.protect_rtp(pkt, out)
            }
            .map(|n| (n, false)),
            (Some(i), Some(o)) => {
                let plain = if is_rtcp {
                    i.unprotect_rtcp(pkt, scratch)
                } else {
                    i.unprotect_rtp(pkt, scratch)
                };
                plain
                    .and_then(|n| scratch.get(..n).ok_or(SrtpFail::Malformed))
                    .and_then(|p| {
                        if is_rtcp {
                            o.protect_rtcp(p, out)
                        } else {
                            o.protect_rtp(p, out)
                        }
                    })
                    .map(|n| (n, false))
            }
        };
        let c = &mut inl.counters;
        let (len, in_place) = match result {
            Ok(r) => r,
            Err(SrtpFail::Auth) => {
                c.drops.srtp_auth = c.drops.srtp_auth.saturating_add(1);
                return None;
            }
            Err(SrtpFail::Replay) => {
                c.drops.replay = c.drops.replay.saturating_add(1);
                return None;
            }
            Err(SrtpFail::IndexReuse) => {
                c.drops.srtp_index_reuse = c.drops.srtp_index_reuse.saturating_add(1);
                return None;
            }
            Err(SrtpFail::Malformed) => {
                c.drops.malformed = c.drops.malformed.saturating_add(1);
                return None;
            }
        };
        if len > SLOT {
            c.drops.malformed = c.drops.malformed.saturating_add(1);
            return None;
        }

        // Valid: the latch may take this source (NAT latching) or note it is alive.
        if on_rtcp_socket {
            inl.rtcp.confirm(src, now);
        } else {
            inl.rtp.confirm(src, now);
        }
        if is_rtcp {
            c.rtcp_packets = c.rtcp_packets.saturating_add(1);
        } else if let (Some(seq), Some(ssrc)) = (be16(pkt, 2), be32(pkt, 8)) {
            // Fixed header fields are in the clear under SRTP too.
            c.seq.record(ssrc, seq);
        }
        c.forwarded = c.forwarded.saturating_add(1);
        let oc = &mut outl.counters;
        oc.tx_packets = oc.tx_packets.saturating_add(1);
        oc.tx_bytes = oc.tx_bytes.saturating_add(len as u64);
        self.activity.on_packet(from, now);
        Some(Route {
            to: from.other(),
            via_rtcp,
            dest,
            len,
            in_place,
        })
    }
}

/// What the workers share with the control side for one session.
pub(crate) struct SessionShared {
    pub io: [PortPair; 2],
    pub state: Mutex<RelayState>,
}

impl SessionShared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, RelayState> {
        // Counters and latches stay consistent field by field; recover.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn socket(&self, leg: Leg, rtcp: bool) -> Option<&UdpSocket> {
        let pair = &self.io[leg.index()];
        if rtcp {
            pair.rtcp_socket()
        } else {
            Some(pair.rtp_socket())
        }
    }
}

// ---------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct Entry {
    session: Arc<SessionShared>,
    leg: Leg,
    rtcp: bool,
}

struct WorkerCtl {
    epfd: OwnedFd,
    wake: OwnedFd,
    stop: AtomicBool,
    table: Mutex<HashMap<u64, Entry>>,
}

impl WorkerCtl {
    fn table(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a valid u64 to our eventfd.
        let _ = unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

fn epoll_ctl(epfd: RawFd, op: libc::c_int, fd: RawFd, token: u64) -> std::io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token,
    };
    // SAFETY: plain epoll_ctl on descriptors we own, with a valid event.
    let r = unsafe { libc::epoll_ctl(epfd, op, fd, &mut ev) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A session's registration on a worker; detaches on drop.
pub(crate) struct Attachment {
    ctl: Arc<WorkerCtl>,
    regs: Vec<(u64, RawFd)>,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let mut table = self.ctl.table();
        for (token, fd) in self.regs.drain(..) {
            // The fd is still open (the session owns it until after this).
            let _ = epoll_ctl(self.ctl.epfd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, 0);
            table.remove(&token);
        }
    }
}

struct Worker {
    ctl: Arc<WorkerCtl>,
    handle: Option<JoinHandle<()>>,
}

struct RelayInner {
    workers: Vec<Worker>,
    next: AtomicUsize,
    next_token: AtomicU64,
    config: RelayConfig,
}

impl Drop for RelayInner {
    fn drop(&mut self) {
        for w in &self.workers {
            w.ctl.stop.store(true, Ordering::Release);
            w.ctl.wake();
        }
        for w in &mut self.workers {
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
    }
}

/// The relay engine: a fixed pool of worker threads. Cheap to clone;
/// the workers stop when the last clone is dropped (sessions still alive
/// then stop being relayed).
#[derive(Clone)]
pub struct Relay {
    inner: Arc<RelayInner>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// Starts `config.workers` relay threads.
    pub fn start(config: RelayConfig) -> Result<Relay, MediaError> {
        let config = RelayConfig {
            workers: config.workers.max(1),
            batch_size: config.batch_size.clamp(1, 1024),
            ..config
        };
        let mut workers = Vec::with_capacity(config.workers);
        for i in 0..config.workers {
            // SAFETY: plain syscalls; the returned descriptors are checked
            // and then owned.
            let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if epfd < 0 {
                return Err(MediaError::Io(std::io::Error::last_os_error()));
            }
            // SAFETY: epfd is a fresh descriptor we own.
            let epfd = unsafe { OwnedFd::from_raw_fd(epfd) };
            // SAFETY: as above.
            let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if wake < 0 {
                return Err(MediaError::Io(std::io::Error::last_os_error()));
            }
            // SAFETY: wake is a fresh descriptor we own.
            let wake = unsafe { OwnedFd::from_raw_fd(wake) };
            epoll_ctl(
                epfd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                wake.as_raw_fd(),
                WAKE_TOKEN,
            )
            .map_err(MediaError::Io)?;
            let ctl = Arc::new(WorkerCtl {
                epfd,
                wake,
                stop: AtomicBool::new(false),
                table: Mutex::new(HashMap::new()),
            });
            let c2 = Arc::clone(&ctl);
            let handle = std::thread::Builder::new()
                .name(format!("media-relay-{i}"))
                .spawn(move || worker_loop(&c2, config.io_mode, config.batch_size))
                .map_err(MediaError::Io)?;
            workers.push(Worker {
                ctl,
                handle: Some(handle),
            });
        }
        Ok(Relay {
            inner: Arc::new(RelayInner {
                workers,
                next: AtomicUsize::new(0),
                next_token: AtomicU64::new(1),
                config,
            }),
        })
    }

    /// The effective configuration.
    pub fn config(&self) -> RelayConfig {
        self.inner.config
    }

    /// CPU time consumed so far by each worker thread (for per-core
    /// throughput figures and metrics).
    pub fn worker_cpu_times(&self) -> Vec<Duration> {
        self.inner
            .workers
            .iter()
            .map(|w| {
                w.handle
                    .as_ref()
                    .map_or(Duration::ZERO, |h| thread_cpu_time(h.as_pthread_t()))
            })
            .collect()
    }

    /// Registers every socket of `session` on one worker.
    pub(crate) fn attach(&self, session: &Arc<SessionShared>) -> Result<Attachment, MediaError> {
        let n = self.inner.workers.len().max(1);
        let idx = self.inner.next.fetch_add(1, Ordering::Relaxed) % n;
        let ctl = self
            .inner
            .workers
            .get(idx)
            .map(|w| Arc::clone(&w.ctl))
            .ok_or(MediaError::Io(std::io::Error::other(
                "relay has no workers",
            )))?;
        let mut att = Attachment {
            ctl,
            regs: Vec::with_capacity(4),
        };
        for leg in [Leg::A, Leg::B] {
            for rtcp in [false, true] {
                let Some(sock) = session.socket(leg, rtcp) else {
                    continue;
                };
                let fd = sock.as_raw_fd();
                let token = self.inner.next_token.fetch_add(1, Ordering::Relaxed);
                att.ctl.table().insert(
                    token,
                    Entry {
                        session: Arc::clone(session),
                        leg,
                        rtcp,
                    },
                );
                att.regs.push((token, fd));
                // On failure `att` drops and unregisters what was added.
                epoll_ctl(att.ctl.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, token)
                    .map_err(MediaError::Io)?;
            }
        }
        Ok(att)
    }
}

/// CPU time of a thread via its CPU-time clock.
fn thread_cpu_time(thread: libc::pthread_t) -> Duration {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the pthread is alive (its JoinHandle is held); out-pointers
    // are valid locals.
    unsafe {
        if libc::pthread_getcpuclockid(thread, &mut clock) != 0 {
            return Duration::ZERO;
        }
        let mut ts: libc::timespec = std::mem::zeroed();
        if libc::clock_gettime(clock, &mut ts) != 0 {
            return Duration::ZERO;
        }
        Duration::new(
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u32::try_from(ts.tv_nsec).unwrap_or(0),
        )
    }
}

struct WorkerBufs {
    rx: RxBatch,
    tx: TxBatch,
    scratch: Box<[u8; SLOT]>,
}

fn worker_loop(ctl: &WorkerCtl, mode: IoMode, batch: usize) {
    let mut bufs = WorkerBufs {
        rx: RxBatch::new(batch),
        tx: TxBatch::new(batch),
        scratch: Box::new([0u8; SLOT]),
    };
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
    loop {
        // SAFETY: events is a valid array of MAX_EVENTS entries.
        let n = unsafe {
            libc::epoll_wait(
                ctl.epfd.as_raw_fd(),
                events.as_mut_ptr(),
                MAX_EVENTS as libc::c_int,
                1000,
            )
        };
        if ctl.stop.load(Ordering::Acquire) {
            return;
        }
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!(error = %e, "media relay epoll_wait failed");
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        let n = usize::try_from(n).unwrap_or(0).min(MAX_EVENTS);
        for ev in events.iter().take(n) {
            let token = ev.u64;
            if token == WAKE_TOKEN {
                let mut v: u64 = 0;
                // SAFETY: reading 8 bytes into a valid u64 from our eventfd.
                let _ = unsafe {
                    libc::read(
                        ctl.wake.as_raw_fd(),
                        (&mut v as *mut u64).cast(),
                        std::mem::size_of::<u64>(),
                    )
                };
                continue;
            }
            let entry = ctl.table().get(&token).cloned();
            if let Some(entry) = entry {
                // A bug in one session must not take down every session of
                // this worker: contain it (state locks recover from
                // poisoning).
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    service(&entry, mode, &mut bufs);
                }));
                if r.is_err() {
                    tracing::error!(leg = ?entry.leg, "media relay: packet handling panicked");
                }
            }
        }
    }
}

/// Drains one ready socket.
fn service(e: &Entry, mode: IoMode, bufs: &mut WorkerBufs) {
    let Some(sock) = e.session.socket(e.leg, e.rtcp) else {
        return;
    };
    let fd = sock.as_raw_fd();
    for _ in 0..MAX_ROUNDS {
        let got = match mode {
            IoMode::Batched => bufs.rx.recv_mmsg(fd),
            IoMode::Single => bufs.rx.recv_single(fd),
        };
        let n = match got {
            Ok(0) => return,
            Ok(n) => n,
            Err(err) => {
                // ICMP port unreachable from a previous send surfaces here
                // as ECONNREFUSED on Linux; it is not fatal.
                tracing::trace!(error = %err, "media recv error");
                return;
            }
        };
        let now = Instant::now();
        bufs.tx.clear();
        {
            let mut st = e.session.lock();
            for i in 0..n {
                let Some((pkt, src)) = bufs.rx.get(i) else {
                    let c = &mut st.legs[e.leg.index()].counters;
                    c.rx_packets = c.rx_packets.saturating_add(1);
                    c.drops.malformed = c.drops.malformed.saturating_add(1);
                    continue;
                };
                let Some(out) = bufs.tx.slot_mut(i) else {
                    continue;
                };
                let route = st.process(
                    e.leg,
                    e.rtcp,
                    src,
                    pkt,
                    &mut out[..],
                    &mut bufs.scratch[..],
                    now,
                );
                if let Some(r) = route {
                    if let Some(s) = e.session.socket(r.to, r.via_rtcp) {
                        bufs.tx.push(TxItem {
                            fd: s.as_raw_fd(),
                            dest: r.dest,
                            len: r.len,
                            in_place: r.in_place,
                            slot: i,
                            leg: r.to,
                        });
                    }
                }
            }
        }
        let failed = match mode {
            IoMode::Batched => bufs.tx.flush_mmsg(&bufs.rx),
            IoMode::Single => bufs.tx.flush_single(&bufs.rx),
        };
        if failed != [0, 0] {
            let mut st = e.session.lock();
            for leg in [Leg::A, Leg::B] {
                let d = &mut st.legs[leg.index()].counters.drops;
                d.send_error = d.send_error.saturating_add(failed[leg.index()]);
            }
        }
        if n < bufs.rx.capacity() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::srtp::{generate_key_salt, SrtpParams, SrtpSuite};

    fn a(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    const GW: &str = "192.0.2.10:4000";
    const CLOUD: &str = "198.51.100.20:5000";

    fn rtp(ssrc: u32, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    fn state() -> RelayState {
        let mut st = RelayState::default();
        st.legs[0].set_remote(a(GW), None);
        st.legs[1].set_remote(a(CLOUD), Some(a("198.51.100.20:5001")));
        st.legs[1].has_rtcp_socket = true;
        st
    }

    struct Bufs {
        out: [u8; SLOT],
        scratch: [u8; SLOT],
    }

    fn bufs() -> Bufs {
        Bufs {
            out: [0; SLOT],
            scratch: [0; SLOT],
        }
    }

    fn run(
        st: &mut RelayState,
        b: &mut Bufs,
        from: Leg,
        rtcp_sock: bool,
        src: &str,
        pkt: &[u8],
    ) -> Option<Route> {
        st.process(
            from,
            rtcp_sock,
            a(src),
            pkt,
            &mut b.out,
            &mut b.scratch,
            Instant::now(),
        )
    }

    #[test]
    fn plain_rtp_is_forwarded_in_place_to_the_other_leg() {
        let mut st = state();
        let mut b = bufs();
        let p = rtp(1, 10, b"abc");
        let r = run(&mut st, &mut b, Leg::A, false, GW, &p).expect("route");
        assert_eq!(
            r,
            Route {
                to: Leg::B,
                via_rtcp: false,
                dest: a(CLOUD),
                len: p.len(),
                in_place: true
            }
        );
        let r = run(&mut st, &mut b, Leg::B, false, CLOUD, &rtp(2, 1, b"x")).expect("back");
        assert_eq!(r.dest, a(GW));
        let ca = st.legs[0].counters;
        assert_eq!((ca.rx_packets, ca.forwarded, ca.tx_packets), (1, 1, 1));
        assert_eq!(ca.rx_bytes, p.len() as u64);
        assert_eq!(st.legs[1].counters.tx_bytes, p.len() as u64);
        assert_eq!(ca.seq.ssrc(), Some(1));
    }

    #[test]
    fn foreign_source_is_dropped_and_counted() {
        let mut st = state();
        let mut b = bufs();
        assert!(run(
            &mut st,
            &mut b,
            Leg::A,
            false,
            "203.0.113.5:4000",
            &rtp(1, 1, b"")
        )
        .is_none());
        let c = st.legs[0].counters;
        assert_eq!(
            (c.rx_packets, c.drops.foreign_source, c.forwarded),
            (1, 1, 0)
        );
        assert_eq!(st.legs[1].counters.tx_packets, 0);
    }

    #[test]
    fn strict_latch_refuses_a_spoofed_first_packet_from_another_port() {
        let mut st = state();
        let mut b = bufs();
        let spoof = "192.0.2.10:34567";
        assert!(run(&mut st, &mut b, Leg::A, false, spoof, &rtp(1, 1, b"")).is_none());
        assert_eq!(st.legs[0].counters.drops.foreign_source, 1);
        assert_eq!(st.legs[0].first_elsewhere, Some(a(spoof)));
        // The signalled source still talks, and replies still go there.
        assert!(run(&mut st, &mut b, Leg::A, false, GW, &rtp(1, 2, b"")).is_some());
        let r = run(&mut st, &mut b, Leg::B, false, CLOUD, &rtp(2, 1, b"")).expect("b");
        assert_eq!(r.dest, a(GW));
        // The spoofed source is counted as activity, not as media.
        assert!(st.activity.last_activity(Leg::A).is_some());
    }

    #[test]
    fn nat_latch_on_first_valid_packet_moves_only_after_quiet() {
        let mut st = state();
        st.legs[0].set_latching(LatchPolicy::Nat {
            quiet: Duration::from_secs(2),
        });
        let mut b = bufs();
        let t0 = Instant::now();
        let nat = a("203.0.113.7:34567");
        let go = |st: &mut RelayState, b: &mut Bufs, src: SocketAddr, seq: u16, t: Instant| {
            st.process(
                Leg::A,
                false,
                src,
                &rtp(1, seq, b""),
                &mut b.out,
                &mut b.scratch,
                t,
            )
        };
        assert!(go(&mut st, &mut b, nat, 1, t0).is_some());
        // Replies go to the latched source (symmetric RTP).
        let r = run(&mut st, &mut b, Leg::B, false, CLOUD, &rtp(2, 1, b"")).expect("b");
        assert_eq!(r.dest, nat);
        // The signalled address is now elsewhere, while the NAT source talks.
        let t1 = t0 + Duration::from_millis(1000);
        assert!(go(&mut st, &mut b, a(GW), 2, t1).is_none());
        assert_eq!(st.legs[0].counters.drops.foreign_source, 1);
        // Quiet for 2 s: another source may take over.
        let t2 = t0 + Duration::from_millis(2100);
        assert!(go(&mut st, &mut b, a(GW), 3, t2).is_some());
        assert!(go(&mut st, &mut b, nat, 4, t2).is_none());
        // Re-offer re-evaluates, and the policy stays.
        st.legs[0].set_remote(a(GW), None);
        assert_eq!(
            st.legs[0].rtp.policy(),
            LatchPolicy::Nat {
                quiet: Duration::from_secs(2)
            }
        );
    }

    #[test]
    fn plain_rtp_duplicate_toward_srtp_is_refused_not_protected_twice() {
        let mut st = state();
        let (ours, theirs) = srtp_pair();
        st.legs[1].srtp = Some(SrtpLeg::new(&ours).expect("ctx"));
        let mut peer = SrtpLeg::new(&theirs).expect("peer");
        let mut b = bufs();
        let p = rtp(7, 100, b"hello");
        assert!(run(&mut st, &mut b, Leg::A, false, GW, &p).is_some());
        // The gateway (or a spoofer on its address) sends the same packet again.
        assert!(run(&mut st, &mut b, Leg::A, false, GW, &p).is_none());
        assert_eq!(st.legs[0].counters.drops.srtp_index_reuse, 1);
        let r = run(&mut st, &mut b, Leg::A, false, GW, &rtp(7, 101, b"next")).expect("next");
        let mut dec = [0u8; 256];
        assert!(peer.unprotect_rtp(&b.out[..r.len], &mut dec).is_ok());
    }

    #[test]
    fn no_remote_on_other_leg_is_no_route() {
        let mut st = RelayState::default();
        st.legs[0].set_remote(a(GW), None);
        let mut b = bufs();
        assert!(run(&mut st, &mut b, Leg::A, false, GW, &rtp(1, 1, b"")).is_none());
        assert_eq!(st.legs[0].counters.drops.no_route, 1);
        // Packets to a leg without remote are foreign (nothing signalled).
        assert!(run(&mut st, &mut b, Leg::B, false, CLOUD, &rtp(1, 1, b"")).is_none());
        assert_eq!(st.legs[1].counters.drops.foreign_source, 1);
    }

    #[test]
    fn malformed_packets_are_dropped() {
        let mut st = state();
        let mut b = bufs();
        assert!(run(&mut st, &mut b, Leg::A, false, GW, &[0x80, 0, 1]).is_none());
        let mut v1 = rtp(1, 1, b"");
        v1[0] = 0x40; // version 1
        assert!(run(&mut st, &mut b, Leg::A, false, GW, &v1).is_none());
        assert!(run(&mut st, &mut b, Leg::A, false, GW, &[]).is_none());
        assert_eq!(st.legs[0].counters.drops.malformed, 3);
    }

    #[test]
    fn rtcp_routing_mux_and_separate() {
        let mut st = state();
        let mut b = bufs();
        let rr = [0x80u8, 201, 0, 1, 0, 0, 0, 9];
        // Leg A is rtcp-mux: RTCP arrives on the RTP socket, recognised by
        // its packet type, and goes to B's RTCP address via B's RTCP socket.
        let r = run(&mut st, &mut b, Leg::A, false, GW, &rr).expect("route");
        assert!(r.via_rtcp);
        assert_eq!(r.dest, a("198.51.100.20:5001"));
        assert_eq!(st.legs[0].counters.rtcp_packets, 1);
        assert_eq!(
            st.legs[0].counters.seq.ssrc(),
            None,
            "RTCP not in RTP stats"
        );
        // B's RTCP socket → A, which is mux: A's RTP socket and address.
        let r = run(&mut st, &mut b, Leg::B, true, "198.51.100.20:5001", &rr).expect("back");
        assert!(!r.via_rtcp);
        assert_eq!(r.dest, a(GW));
        // The RTCP socket locked on 5001: the same IP from another port
        // (here B's RTP port) is bleed now.
        assert!(run(&mut st, &mut b, Leg::B, true, CLOUD, &rr).is_none());
    }

    fn srtp_pair() -> (SrtpParams, SrtpParams) {
        let (k1, k2) = (generate_key_salt(), generate_key_salt());
        (
            SrtpParams {
                suite: SrtpSuite::Aes128CmSha1_80,
                local_key_salt: k1,
                remote_key_salt: k2,
            },
            SrtpParams {
                suite: SrtpSuite::Aes128CmSha1_80,
                local_key_salt: k2,
                remote_key_salt: k1,
            },
        )
    }

    #[test]
    fn srtp_on_leg_b_protects_and_unprotects() {
        let mut st = state();
        let (ours, theirs) = srtp_pair();
        st.legs[1].srtp = Some(SrtpLeg::new(&ours).expect("ctx"));
        let mut peer = SrtpLeg::new(&theirs).expect("peer");
        let mut b = bufs();

        // A (plain) → B (SRTP).
        let p = rtp(7, 100, b"hello");
        let r = run(&mut st, &mut b, Leg::A, false, GW, &p).expect("route");
        assert!(!r.in_place);
        assert_eq!(r.len, p.len() + 10);
        let mut dec = [0u8; 256];
        let n = peer
            .unprotect_rtp(&b.out[..r.len], &mut dec)
            .expect("peer decrypts");
        assert_eq!(&dec[..n], &p[..]);

        // B (SRTP) → A (plain).
        let q = rtp(8, 5, b"world");
        let mut enc = [0u8; 256];
        let m = peer.protect_rtp(&q, &mut enc).expect("peer encrypts");
        let r = run(&mut st, &mut b, Leg::B, false, CLOUD, &enc[..m]).expect("route");
        assert_eq!(&b.out[..r.len], &q[..]);
        assert_eq!(st.legs[1].counters.seq.ssrc(), Some(8));

        // Replay of the same SRTP packet.
        assert!(run(&mut st, &mut b, Leg::B, false, CLOUD, &enc[..m]).is_none());
        assert_eq!(st.legs[1].counters.drops.replay, 1);
        // Tampered packet.
        let q2 = rtp(8, 6, b"world");
        let m2 = peer.protect_rtp(&q2, &mut enc).expect("peer encrypts");
        enc[13] ^= 0x55;
        assert!(run(&mut st, &mut b, Leg::B, false, CLOUD, &enc[..m2]).is_none());
        assert_eq!(st.legs[1].counters.drops.srtp_auth, 1);
        assert_eq!(st.legs[1].counters.forwarded, 1);
    }

    #[test]
    fn failed_auth_does_not_latch() {
        // NAT latching on an SRTP leg: only an authenticated packet takes the latch.
        let mut st = state();
        st.legs[1].set_latching(LatchPolicy::Nat {
            quiet: Duration::from_secs(2),
        });
        let (ours, theirs) = srtp_pair();
        st.legs[1].srtp = Some(SrtpLeg::new(&ours).expect("ctx"));
        let mut peer = SrtpLeg::new(&theirs).expect("peer");
        let mut b = bufs();
        let attacker = "198.51.100.20:6666";
        assert!(run(
            &mut st,
            &mut b,
            Leg::B,
            false,
            attacker,
            &rtp(9, 1, &[0; 20])
        )
        .is_none());
        assert_eq!(st.legs[1].counters.drops.srtp_auth, 1);
        let mut enc = [0u8; 256];
        let m = peer.protect_rtp(&rtp(9, 1, b"ok"), &mut enc).expect("enc");
        assert!(run(&mut st, &mut b, Leg::B, false, CLOUD, &enc[..m]).is_some());
        assert_eq!(st.legs[1].rtp.destination(), Some(a(CLOUD)));
        // Strict: the same packets from another port are dropped before any SRTP work.
        st.legs[1].set_latching(LatchPolicy::Strict);
        let m = peer.protect_rtp(&rtp(9, 2, b"ok"), &mut enc).expect("enc");
        assert!(run(&mut st, &mut b, Leg::B, false, attacker, &enc[..m]).is_none());
        assert_eq!(st.legs[1].counters.drops.foreign_source, 1);
    }

    #[test]
    fn srtcp_under_mux_on_srtp_leg() {
        let mut st = RelayState::default();
        st.legs[0].set_remote(a(GW), None);
        st.legs[1].set_remote(a(CLOUD), None);
        let (ours, theirs) = srtp_pair();
        st.legs[1].srtp = Some(SrtpLeg::new(&ours).expect("ctx"));
        let mut peer = SrtpLeg::new(&theirs).expect("peer");
        let mut b = bufs();
        let sr = [0x80u8, 200, 0, 1, 0, 0, 0, 3];
        let r = run(&mut st, &mut b, Leg::A, false, GW, &sr).expect("route");
        assert!(!r.via_rtcp);
        let mut dec = [0u8; 128];
        let n = peer
            .unprotect_rtcp(&b.out[..r.len], &mut dec)
            .expect("srtcp");
        assert_eq!(&dec[..n], &sr);
    }

    #[test]
    fn activity_is_recorded_per_direction() {
        let mut st = state();
        let mut b = bufs();
        let t = Instant::now();
        st.process(
            Leg::A,
            false,
            a(GW),
            &rtp(1, 1, b""),
            &mut b.out,
            &mut b.scratch,
            t,
        );
        assert_eq!(st.activity.last_activity(Leg::A), Some(t));
        assert_eq!(st.activity.last_activity(Leg::B), None);
        // Dropped packets are not activity.
        st.process(
            Leg::B,
            false,
            a("203.0.113.1:1"),
            &rtp(1, 1, b""),
            &mut b.out,
            &mut b.scratch,
            t,
        );
        assert_eq!(st.activity.last_activity(Leg::B), None);
    }

    #[test]
    fn rtcp_detection_by_packet_type() {
        assert!(looks_like_rtcp(&[0x80, 200]));
        assert!(looks_like_rtcp(&[0x80, 223]));
        assert!(!looks_like_rtcp(&[0x80, 0]));
        assert!(!looks_like_rtcp(&[0x80, 96]));
        assert!(!looks_like_rtcp(&[0x80, 0xe0])); // M bit + PT 96
        assert!(!looks_like_rtcp(&[0x80]));
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::media::srtp::{generate_key_salt, SrtpParams, SrtpSuite};
    use proptest::prelude::*;

    fn srtp_state() -> RelayState {
        let mut st = RelayState::default();
        st.legs[0].set_remote("192.0.2.1:4000".parse().expect("a"), None);
        st.legs[1].set_remote("192.0.2.2:4000".parse().expect("a"), None);
        let p = SrtpParams {
            suite: SrtpSuite::Aes128CmSha1_32,
            local_key_salt: generate_key_salt(),
            remote_key_salt: generate_key_salt(),
        };
        st.legs[1].srtp = SrtpLeg::new(&p).ok();
        st
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Arbitrary datagrams (RTP-looking or not, any length) on either
        /// leg and socket never panic, and every packet is either forwarded
        /// or counted as a drop.
        #[test]
        fn arbitrary_packets_never_panic(
            head in prop_oneof![Just(0x80u8), Just(0x90u8), Just(0xbfu8), any::<u8>()],
            pt in any::<u8>(),
            body in proptest::collection::vec(any::<u8>(), 0..300),
            from_b in any::<bool>(),
            rtcp_sock in any::<bool>(),
        ) {
            let mut st = srtp_state();
            let mut pkt = vec![head, pt];
            pkt.extend_from_slice(&body);
            let mut out = [0u8; SLOT];
            let mut scratch = [0u8; SLOT];
            let (leg, src) = if from_b {
                (Leg::B, "192.0.2.2:4000")
            } else {
                (Leg::A, "192.0.2.1:4000")
            };
            let r = st.process(leg, rtcp_sock, src.parse().expect("a"), &pkt, &mut out, &mut scratch, Instant::now());
            let c = st.legs[leg.index()].counters;
            prop_assert_eq!(c.rx_packets, 1);
            prop_assert_eq!(c.forwarded + c.drops.total(), 1);
            prop_assert_eq!(r.is_some(), c.forwarded == 1);
        }
    }
}
