//! Relay throughput and allocation benchmark (plain `main`, a few seconds).
//!
//!     CARGO_TARGET_DIR=/work/target cargo bench --bench relay
//!
//! Side by side in one run, on 127.0.0.1 with real UDP sockets:
//! * the relay with batched I/O (`recvmmsg`/`sendmmsg`),
//! * the relay with one `recvfrom`/`sendto` per packet,
//! * a naive loop: one blocking `recv_from` + one `send_to` per packet,
//!   no latching, no counters,
//! * the relay with SRTP protection on leg B,
//! * a 100-session scenario where every socket has one packet per wake-up
//!   (how real 20 ms RTP looks to a relay),
//! * rtc-srtp protect/unprotect per second, and ours (`SrtpTransform`,
//!   in place).
//!
//! "per core" = relayed packets / CPU seconds of the relaying thread
//! (`pthread_getcpuclockid`), which is independent of how the 2-core
//! machine schedules the load generator. Allocations are counted by a
//! counting global allocator over the measured window, all threads.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test
#![allow(unsafe_code)] // the counting allocator implements the unsafe allocator trait

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sipedge::media::{
    generate_key_salt, IoMode, Leg, LegConfig, MediaSession, PortPool, Relay, RelayConfig,
    SrtpParams, SrtpSuite, SrtpTransform,
};

#[path = "../tests/common/srtp_oracle.rs"]
mod srtp_oracle;
use srtp_oracle::new_context;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WARMUP: Duration = Duration::from_millis(150);
const MEASURE: Duration = Duration::from_millis(600);
const PAYLOAD: usize = 160; // G.711, 20 ms

fn thread_cpu() -> Duration {
    // SAFETY: clock_gettime into a valid local.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn udp(rcvbuf: usize) -> UdpSocket {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).expect("socket");
    let _ = s.set_recv_buffer_size(rcvbuf);
    let _ = s.set_send_buffer_size(rcvbuf);
    s.bind(&SocketAddr::new(LO, 0).into()).expect("bind");
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    s
}

/// Load generator: sends one packet to each destination (`rounds` times)
/// with `sendmmsg`, then reads as many back with `recvmmsg`; closed loop,
/// so no queue ever overflows. Batched on its side so that the relay, not
/// the generator, is the bottleneck.
struct Pump {
    tx: UdpSocket,
    rx: UdpSocket,
    seq: u16,
    bufs: Vec<[u8; 2048]>,
    addrs: Vec<libc::sockaddr_in>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

#[derive(Default, Clone, Copy)]
struct Window {
    received: u64,
    lost: u64,
    wall: Duration,
}

const PUMP_MAX: usize = 128;

fn sockaddr_in(a: SocketAddr) -> libc::sockaddr_in {
    // SAFETY: zeroed sockaddr_in is valid.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    if let SocketAddr::V4(v4) = a {
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = v4.port().to_be();
        sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
    }
    sin
}

impl Pump {
    fn new() -> Pump {
        let mut bufs = vec![[0u8; 2048]; PUMP_MAX];
        for b in &mut bufs {
            b[0] = 0x80;
            b[8..12].copy_from_slice(&0x5151_5151u32.to_be_bytes());
        }
        // SAFETY: zeroed C structs are valid; pointers are set per call.
        let zero_sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let zero_iov: libc::iovec = unsafe { std::mem::zeroed() };
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        Pump {
            tx: udp(4 << 20),
            rx: udp(4 << 20),
            seq: 0,
            bufs,
            addrs: vec![zero_sin; PUMP_MAX],
            iovs: vec![zero_iov; PUMP_MAX],
            hdrs: vec![zero_hdr; PUMP_MAX],
        }
    }

    fn send_burst(&mut self, dests: &[SocketAddr], rounds: usize) -> u64 {
        let mut n = 0;
        for _ in 0..rounds {
            for d in dests {
                if n == PUMP_MAX {
                    break;
                }
                self.seq = self.seq.wrapping_add(1);
                self.bufs[n][2..4].copy_from_slice(&self.seq.to_be_bytes());
                self.addrs[n] = sockaddr_in(*d);
                self.iovs[n].iov_base = self.bufs[n].as_mut_ptr().cast();
                self.iovs[n].iov_len = 12 + PAYLOAD;
                let h = &mut self.hdrs[n].msg_hdr;
                h.msg_name = (&mut self.addrs[n] as *mut libc::sockaddr_in).cast();
                h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                h.msg_iov = &mut self.iovs[n];
                h.msg_iovlen = 1;
                n += 1;
            }
        }
        let mut at = 0;
        while at < n {
            // SAFETY: hdrs[at..n] point into our own live buffers.
            let r = unsafe {
                libc::sendmmsg(
                    self.tx.as_raw_fd(),
                    self.hdrs.as_mut_ptr().add(at),
                    (n - at) as u32,
                    0,
                )
            };
            if r <= 0 {
                break;
            }
            at += r as usize;
        }
        at as u64
    }

    fn recv_some(&mut self) -> u64 {
        for i in 0..PUMP_MAX {
            self.iovs[i].iov_base = self.bufs[i].as_mut_ptr().cast();
            self.iovs[i].iov_len = 2048;
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
        }
        // SAFETY: as above. MSG_WAITFORONE: block (SO_RCVTIMEO bounded)
        // for the first datagram, then take what is queued.
        let r = unsafe {
            libc::recvmmsg(
                self.rx.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                PUMP_MAX as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if r <= 0 {
            0
        } else {
            r as u64
        }
    }

    fn run(&mut self, dests: &[SocketAddr], rounds: usize, dur: Duration) -> Window {
        let mut w = Window::default();
        let start = Instant::now();
        while start.elapsed() < dur {
            let sent = self.send_burst(dests, rounds);
            let mut got = 0u64;
            while got < sent {
                let r = self.recv_some();
                if r == 0 {
                    break;
                }
                got += r;
            }
            w.received += got;
            w.lost += sent.saturating_sub(got);
        }
        w.wall = start.elapsed();
        w
    }
}

struct Figures {
    name: &'static str,
    packets: u64,
    lost: u64,
    wall: Duration,
    cpu: Duration,
    allocs: u64,
}

impl Figures {
    fn per_core(&self) -> f64 {
        self.packets as f64 / self.cpu.as_secs_f64().max(1e-9)
    }
    fn print(&self) {
        println!(
            "{:<34} {:>10.0} pkt/s wall {:>10.0} pkt/s/core  {:>6.3} allocs/pkt  ({} pkts, {} lost, cpu {:.3}s)",
            self.name,
            self.packets as f64 / self.wall.as_secs_f64(),
            self.per_core(),
            self.allocs as f64 / self.packets.max(1) as f64,
            self.packets,
            self.lost,
            self.cpu.as_secs_f64(),
        );
    }
}

/// Relay scenario: `sessions` calls, leg A ← pump.tx, leg B → pump.rx.
fn bench_relay(
    name: &'static str,
    mode: IoMode,
    sessions: usize,
    rounds: usize,
    srtp: bool,
    base: u16,
) -> Figures {
    let relay = Relay::start(RelayConfig {
        workers: 1,
        io_mode: mode,
        batch_size: 32,
    })
    .expect("relay");
    let pool = PortPool::new(base..=base + 999).expect("pool");
    let mut pump = Pump::new();
    let cfg = LegConfig {
        ip: LO,
        rtcp_mux: true,
    };
    let mut calls = Vec::new();
    let mut dests = Vec::new();
    for _ in 0..sessions {
        let mut s = MediaSession::new(&relay, &pool, cfg, cfg).expect("session");
        s.set_remote(Leg::A, pump.tx.local_addr().expect("a"), None)
            .expect("remote");
        s.set_remote(Leg::B, pump.rx.local_addr().expect("a"), None)
            .expect("remote");
        if srtp {
            s.set_srtp(
                Leg::B,
                SrtpParams {
                    suite: SrtpSuite::Aes128CmSha1_80,
                    local_key_salt: generate_key_salt(),
                    remote_key_salt: generate_key_salt(),
                },
            )
            .expect("srtp");
        }
        dests.push(s.local(Leg::A).rtp);
        calls.push(s);
    }
    pump.run(&dests, rounds, WARMUP);
    let cpu0 = relay.worker_cpu_times().iter().sum::<Duration>();
    let a0 = ALLOCS.load(Ordering::Relaxed);
    let w = pump.run(&dests, rounds, MEASURE);
    let allocs = ALLOCS.load(Ordering::Relaxed) - a0;
    let cpu = relay.worker_cpu_times().iter().sum::<Duration>() - cpu0;
    let forwarded: u64 = calls
        .iter()
        .map(|c| c.snapshot().a.counters.forwarded)
        .sum();
    assert!(forwarded >= w.received, "relay counters cover what arrived");
    Figures {
        name,
        packets: w.received,
        lost: w.lost,
        wall: w.wall,
        cpu,
        allocs,
    }
}

/// The naive loop: one blocking recv_from, one send_to per packet.
fn bench_naive(rounds: usize) -> Figures {
    let mut pump = Pump::new();
    let a = udp(4 << 20);
    let b = udp(4 << 20);
    let dest = pump.rx.local_addr().expect("a");
    let a_addr = a.local_addr().expect("a");
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let cpu_ns = Arc::new(AtomicU64::new(0));
    let (s2, m2, c2) = (
        Arc::clone(&stop),
        Arc::clone(&measuring),
        Arc::clone(&cpu_ns),
    );
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut started: Option<Duration> = None;
        while !s2.load(Ordering::Relaxed) {
            if started.is_none() && m2.load(Ordering::Relaxed) {
                started = Some(thread_cpu());
            }
            if let Ok((n, _src)) = a.recv_from(&mut buf) {
                let _ = b.send_to(&buf[..n], dest);
            }
        }
        let used = started.map_or(Duration::ZERO, |s| thread_cpu() - s);
        c2.store(used.as_nanos() as u64, Ordering::Relaxed);
    });
    let dests = [a_addr];
    pump.run(&dests, rounds, WARMUP);
    measuring.store(true, Ordering::Relaxed);
    let a0 = ALLOCS.load(Ordering::Relaxed);
    let w = pump.run(&dests, rounds, MEASURE);
    let allocs = ALLOCS.load(Ordering::Relaxed) - a0;
    stop.store(true, Ordering::Relaxed);
    t.join().expect("naive thread");
    Figures {
        name: "naive recv_from/send_to loop",
        packets: w.received,
        lost: w.lost,
        wall: w.wall,
        cpu: Duration::from_nanos(cpu_ns.load(Ordering::Relaxed)),
        allocs,
    }
}

fn bench_srtp() {
    const N: u16 = 50_000;
    let key = generate_key_salt();
    let mut tx = new_context(SrtpSuite::Aes128CmSha1_80, &key, false).expect("tx");
    let mut rx = new_context(SrtpSuite::Aes128CmSha1_80, &key, true).expect("rx");
    let mut pkt = [0u8; 12 + PAYLOAD];
    pkt[0] = 0x80;
    pkt[8..12].copy_from_slice(&7u32.to_be_bytes());
    let mut out = Vec::with_capacity(usize::from(N));
    let a0 = ALLOCS.load(Ordering::Relaxed);
    let t0 = Instant::now();
    for seq in 0..N {
        pkt[2..4].copy_from_slice(&seq.to_be_bytes());
        out.push(tx.encrypt_rtp(&pkt).expect("protect"));
    }
    let protect = t0.elapsed();
    let a1 = ALLOCS.load(Ordering::Relaxed);
    let t1 = Instant::now();
    let mut ok = 0u32;
    for p in &out {
        if rx.decrypt_rtp(p).is_ok() {
            ok += 1;
        }
    }
    let unprotect = t1.elapsed();
    let a2 = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(ok, u32::from(N));
    println!(
        "{:<34} {:>10.0} pkt/s  {:>6.3} allocs/pkt",
        "rtc-srtp protect (172 B RTP)",
        f64::from(N) / protect.as_secs_f64(),
        (a1 - a0) as f64 / f64::from(N)
    );
    println!(
        "{:<34} {:>10.0} pkt/s  {:>6.3} allocs/pkt",
        "rtc-srtp unprotect (182 B SRTP)",
        f64::from(N) / unprotect.as_secs_f64(),
        (a2 - a1) as f64 / f64::from(N)
    );
}

/// Our in-place transform on the same packets: protect into a
/// preallocated slab, then unprotect each packet in place.
fn bench_srtp_ours() {
    const N: u16 = 50_000;
    const LEN: usize = 12 + PAYLOAD;
    let key = generate_key_salt();
    let mut tx = SrtpTransform::new(SrtpSuite::Aes128CmSha1_80, &key).expect("tx");
    let mut rx = SrtpTransform::new(SrtpSuite::Aes128CmSha1_80, &key).expect("rx");
    let mut slab = vec![[0u8; LEN + 16]; usize::from(N)];
    let mut lens = vec![0usize; usize::from(N)];
    let a0 = ALLOCS.load(Ordering::Relaxed);
    let t0 = Instant::now();
    for (seq, (buf, len)) in (0..N).zip(slab.iter_mut().zip(lens.iter_mut())) {
        buf[0] = 0x80;
        buf[2..4].copy_from_slice(&seq.to_be_bytes());
        buf[8..12].copy_from_slice(&7u32.to_be_bytes());
        *len = tx.protect_rtp(buf, LEN).expect("protect");
    }
    let protect = t0.elapsed();
    let a1 = ALLOCS.load(Ordering::Relaxed);
    let t1 = Instant::now();
    let mut ok = 0u32;
    for (buf, len) in slab.iter_mut().zip(lens.iter()) {
        if rx.unprotect_rtp(buf, *len) == Ok(LEN) {
            ok += 1;
        }
    }
    let unprotect = t1.elapsed();
    let a2 = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(ok, u32::from(N));
    println!(
        "{:<34} {:>10.0} pkt/s  {:>6.3} allocs/pkt",
        "ours protect (172 B RTP)",
        f64::from(N) / protect.as_secs_f64(),
        (a1 - a0) as f64 / f64::from(N)
    );
    println!(
        "{:<34} {:>10.0} pkt/s  {:>6.3} allocs/pkt",
        "ours unprotect (182 B SRTP)",
        f64::from(N) / unprotect.as_secs_f64(),
        (a2 - a1) as f64 / f64::from(N)
    );
    // The first packet of an SSRC creates its table entry: no heap.
    assert_eq!(a2 - a0, 0, "our SRTP transform allocated");
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    println!(
        "relay benchmark: {} ms per variant after {} ms warm-up, 1 relay worker, 172-byte RTP",
        MEASURE.as_millis(),
        WARMUP.as_millis()
    );
    println!("-- one call, 64-packet bursts (batches fill up)");
    let batched = bench_relay(
        "relay batched (recvmmsg/sendmmsg)",
        IoMode::Batched,
        1,
        64,
        false,
        44000,
    );
    batched.print();
    let single = bench_relay(
        "relay single (recvfrom/sendto)",
        IoMode::Single,
        1,
        64,
        false,
        45000,
    );
    single.print();
    let naive = bench_naive(64);
    naive.print();
    let srtp = bench_relay(
        "relay batched, SRTP on leg B",
        IoMode::Batched,
        1,
        64,
        true,
        46000,
    );
    srtp.print();
    println!("-- 100 calls, one packet per call per round (batches of ~1)");
    let many_b = bench_relay(
        "relay batched, 100 calls",
        IoMode::Batched,
        100,
        1,
        false,
        47000,
    );
    many_b.print();
    let many_s = bench_relay(
        "relay single, 100 calls",
        IoMode::Single,
        100,
        1,
        false,
        48000,
    );
    many_s.print();
    for f in [&batched, &single, &naive, &srtp, &many_b, &many_s] {
        assert_eq!(f.allocs, 0, "{}: heap allocation in steady state", f.name);
    }
    println!("-- ratios (per core)");
    println!(
        "batched / naive = {:.2}x, batched / single = {:.2}x, single / naive = {:.2}x, 100 calls batched / single = {:.2}x",
        batched.per_core() / naive.per_core(),
        batched.per_core() / single.per_core(),
        single.per_core() / naive.per_core(),
        many_b.per_core() / many_s.per_core(),
    );
    bench_srtp();
    bench_srtp_ours();
}
