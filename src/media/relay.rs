//! The relay: per-session forwarding state and the fixed pool of worker
//! threads that moves packets between legs.
//!
//! Each worker owns an epoll instance; every media socket of a session is
//! registered (level-triggered) on one worker, chosen round-robin when the
//! session is created. A ready socket is drained in batches: receive
//! (`recvmmsg`, or one `recvfrom` per packet in [`IoMode::Single`]), one
//! lock of the session state for the whole batch, send (`sendmmsg` or
//! `sendto`). Buffers are allocated once per worker; the steady-state path
//! allocates nothing for plain RTP. (rtc-srtp returns each protected or
//! unprotected packet in a fresh `BytesMut`, which is copied into the
//! worker's buffer: one allocation per SRTP packet, see the bench.)
//!
//! RTP is not parsed beyond its fixed header (RFC 3550 §5.1): version,
//! payload type (to tell RTCP apart under rtcp-mux, RFC 5761 §4), sequence
//! number and SSRC for the loss estimate.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::batch::{RxBatch, TxBatch, TxItem, SLOT};
use super::latch::{Admit, Latch};
use super::pool::PortPair;
use super::srtp::{SrtpFail, SrtpLeg};
use super::stats::LegCounters;
use super::supervision::Activity;
use super::{Leg, MediaError};

/// How workers talk to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    /// `recvmmsg`/`sendmmsg`: one system call per batch (the default; see
    /// `benches/relay.rs` for the measurement).
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
}

impl LegState {
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
        if latch.admit(src) == Admit::Reject {
            c.drops.foreign_source = c.drops.foreign_source.saturating_add(1);
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
            Err(SrtpFail::Malformed) => {
                c.drops.malformed = c.drops.malformed.saturating_add(1);
                return None;
            }
        };
        if len > SLOT {
            c.drops.malformed = c.drops.malformed.saturating_add(1);
            return None;
        }

        // Accepted: lock the latch on this source (first valid packet).
        if on_rtcp_socket {
            inl.rtcp.confirm(src);
        } else {
            inl.rtp.confirm(src);
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
            epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, wake.as_raw_fd(), WAKE_TOKEN)
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
            .ok_or(MediaError::Io(std::io::Error::other("relay has no workers")))?;
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
                service(&entry, mode, &mut bufs);
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
