//! UDP port pool for media anchoring.
//!
//! The pool hands out RTP/RTCP *pairs*: an even RTP port and the odd port
//! just above it for RTCP (RFC 3550 §11: "RTP SHOULD use an even destination
//! port number and the corresponding RTCP stream SHOULD use the next higher
//! (odd) destination port number"). With rtcp-mux (RFC 5761) only the even
//! port is bound; the odd one stays reserved so the pairing never breaks.
//!
//! Each pair is bound to real UDP sockets at allocation time, so a port the
//! pool hands out is known to be usable. A pair is returned to the pool when
//! its [`PortPair`] is dropped or [`PortPair::release`]d — exactly once. Every
//! allocation carries a generation number, so a stale release (one whose pair
//! was already released and perhaps handed to another call) is a logged
//! no-op rather than a double free.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard};

use socket2::{Domain, Protocol, Socket, Type};

use super::MediaError;

/// Default media port range (the IANA dynamic range up to a conventional
/// SBC limit).
pub const DEFAULT_PORT_RANGE: RangeInclusive<u16> = 49152..=57500;

/// Receive/send socket buffer size requested for media sockets.
const SOCKET_BUFFER_BYTES: usize = 1 << 20;

#[derive(Debug)]
struct PairSlot {
    in_use: bool,
    generation: u64,
}

#[derive(Debug)]
struct PoolState {
    /// Indices of free pairs, FIFO so a just-released port is reused last
    /// (stale packets of the previous call then find nobody listening).
    free: VecDeque<usize>,
    slots: Vec<PairSlot>,
    next_generation: u64,
}

#[derive(Debug)]
struct PoolInner {
    /// Even RTP port of pair 0.
    base: u16,
    state: Mutex<PoolState>,
}

impl PoolInner {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A panic while holding the lock cannot leave the bookkeeping half
        // updated (every update is a single field store), so recover.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn port_of(&self, index: usize) -> Option<u16> {
        let offset = u16::try_from(index.checked_mul(2)?).ok()?;
        self.base.checked_add(offset)
    }

    /// Returns a pair to the pool. `false` (and a warning) when the pair is
    /// not currently allocated under `generation`.
    fn release(&self, index: usize, generation: u64) -> bool {
        let mut st = self.lock();
        let Some(slot) = st.slots.get_mut(index) else {
            tracing::warn!(index, "media port release: no such pair");
            return false;
        };
        if !slot.in_use || slot.generation != generation {
            tracing::warn!(
                port = self.port_of(index),
                generation,
                "media port release ignored: pair already released"
            );
            return false;
        }
        slot.in_use = false;
        st.free.push_back(index);
        true
    }
}

/// A pool of RTP/RTCP port pairs in a configured range. Cheap to clone (the
/// clones share one pool).
#[derive(Debug, Clone)]
pub struct PortPool {
    inner: Arc<PoolInner>,
}

impl PortPool {
    /// A pool over `range` (inclusive). The first pair starts at the first
    /// even port of the range; a pair is only included when both of its ports
    /// lie inside the range.
    pub fn new(range: RangeInclusive<u16>) -> Result<Self, MediaError> {
        let (first, last) = (*range.start(), *range.end());
        let base = first.checked_add(first % 2).ok_or(MediaError::EmptyRange)?;
        if base == 0 || last <= base {
            return Err(MediaError::EmptyRange);
        }
        // Pairs (base + 2k, base + 2k + 1) with base + 2k + 1 <= last.
        // Ports base..=last hold floor((last - base + 1) / 2) whole pairs.
        let pairs = usize::from((last - base).div_ceil(2));
        if pairs == 0 {
            return Err(MediaError::EmptyRange);
        }
        let slots = (0..pairs)
            .map(|_| PairSlot {
                in_use: false,
                generation: 0,
            })
            .collect();
        Ok(PortPool {
            inner: Arc::new(PoolInner {
                base,
                state: Mutex::new(PoolState {
                    free: (0..pairs).collect(),
                    slots,
                    next_generation: 1,
                }),
            }),
        })
    }

    /// The pool over [`DEFAULT_PORT_RANGE`].
    pub fn with_default_range() -> Self {
        // The default range is a non-empty constant.
        match Self::new(DEFAULT_PORT_RANGE) {
            Ok(p) => p,
            Err(_) => unreachable!("default port range is valid"),
        }
    }

    /// Number of pairs the pool manages.
    pub fn capacity(&self) -> usize {
        self.inner.lock().slots.len()
    }

    /// Number of pairs currently free.
    pub fn available(&self) -> usize {
        self.inner.lock().free.len()
    }

    /// Allocates a pair and binds it on `ip`: the even port always, the odd
    /// port unless `rtcp_mux`. A pair whose port cannot be bound (taken by
    /// another process) is put back at the end of the queue and the next
    /// one is tried. [`MediaError::PortsExhausted`] when no pair is left
    /// (the proxy answers 503).
    pub fn allocate(&self, ip: IpAddr, rtcp_mux: bool) -> Result<PortPair, MediaError> {
        let mut st = self.inner.lock();
        let attempts = st.free.len();
        let mut last_err = None;
        for _ in 0..attempts {
            let Some(index) = st.free.pop_front() else {
                break;
            };
            let Some(rtp_port) = self.inner.port_of(index) else {
                st.free.push_back(index);
                continue;
            };
            match bind_pair(ip, rtp_port, rtcp_mux) {
                Ok((rtp, rtcp)) => {
                    let generation = st.next_generation;
                    st.next_generation = st.next_generation.wrapping_add(1);
                    if let Some(slot) = st.slots.get_mut(index) {
                        slot.in_use = true;
                        slot.generation = generation;
                    }
                    return Ok(PortPair {
                        rtp,
                        rtcp,
                        rtp_port,
                        _lease: Lease {
                            index,
                            generation,
                            pool: Arc::clone(&self.inner),
                        },
                    });
                }
                Err(e) => {
                    tracing::debug!(port = rtp_port, error = %e, "media port busy, skipping");
                    st.free.push_back(index);
                    last_err = Some(e);
                }
            }
        }
        match last_err {
            Some(e) if attempts > 0 && e.kind() != std::io::ErrorKind::AddrInUse => {
                Err(MediaError::Bind(e))
            }
            _ => Err(MediaError::PortsExhausted),
        }
    }

    #[cfg(test)]
    fn release_raw(&self, index: usize, generation: u64) -> bool {
        self.inner.release(index, generation)
    }
}

fn bind_one(ip: IpAddr, port: u16) -> std::io::Result<UdpSocket> {
    let addr = SocketAddr::new(ip, port);
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: larger buffers absorb bursts; the kernel caps them.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

fn bind_pair(
    ip: IpAddr,
    rtp_port: u16,
    rtcp_mux: bool,
) -> std::io::Result<(UdpSocket, Option<UdpSocket>)> {
    let rtp = bind_one(ip, rtp_port)?;
    let rtcp = if rtcp_mux {
        None
    } else {
        let port = rtp_port
            .checked_add(1)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::AddrNotAvailable))?;
        Some(bind_one(ip, port)?)
    };
    Ok((rtp, rtcp))
}

/// An allocated RTP/RTCP pair with its bound, non-blocking sockets. The pair
/// returns to the pool when released or dropped — exactly once.
#[derive(Debug)]
pub struct PortPair {
    // Field order matters: fields drop in declaration order, so both sockets
    // are closed before `_lease` hands the ports back to the pool (a new
    // allocation can then bind them at once).
    rtp: UdpSocket,
    rtcp: Option<UdpSocket>,
    rtp_port: u16,
    _lease: Lease,
}

/// The pool bookkeeping of one allocation; releases on drop.
#[derive(Debug)]
struct Lease {
    index: usize,
    generation: u64,
    pool: Arc<PoolInner>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.release(self.index, self.generation);
    }
}

impl PortPair {
    /// The even RTP port.
    pub fn rtp_port(&self) -> u16 {
        self.rtp_port
    }

    /// The odd RTCP port, `None` under rtcp-mux.
    pub fn rtcp_port(&self) -> Option<u16> {
        self.rtcp.as_ref().map(|_| self.rtp_port.saturating_add(1))
    }

    /// The RTP socket.
    pub fn rtp_socket(&self) -> &UdpSocket {
        &self.rtp
    }

    /// The RTCP socket, `None` under rtcp-mux.
    pub fn rtcp_socket(&self) -> Option<&UdpSocket> {
        self.rtcp.as_ref()
    }

    /// Returns the pair to the pool now (the sockets are closed first).
    pub fn release(self) {
        drop(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn range_is_split_into_even_odd_pairs() {
        let pool = PortPool::new(49152..=57500).expect("pool");
        // 49152/49153 .. 57498/57499: 57500 has no odd partner in range.
        assert_eq!(pool.capacity(), 4174);
        let odd_start = PortPool::new(41001..=41006).expect("pool");
        // 41002/41003, 41004/41005
        assert_eq!(odd_start.capacity(), 2);
        assert!(matches!(
            PortPool::new(41001..=41002),
            Err(MediaError::EmptyRange)
        ));
        assert!(matches!(PortPool::new(0..=0), Err(MediaError::EmptyRange)));
    }

    #[test]
    fn allocate_all_exhaust_release_all() {
        let pool = PortPool::new(41100..=41139).expect("pool");
        assert_eq!(pool.capacity(), 20);
        let mut pairs = Vec::new();
        for _ in 0..20 {
            let p = pool.allocate(LO, false).expect("allocate");
            assert_eq!(p.rtp_port() % 2, 0, "RTP port is even");
            assert_eq!(p.rtcp_port(), Some(p.rtp_port() + 1));
            assert_eq!(
                p.rtp_socket().local_addr().expect("addr").port(),
                p.rtp_port()
            );
            pairs.push(p);
        }
        let mut ports: Vec<u16> = pairs.iter().map(|p| p.rtp_port()).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 20, "no pair handed out twice");
        assert_eq!(pool.available(), 0);
        assert!(matches!(
            pool.allocate(LO, false),
            Err(MediaError::PortsExhausted)
        ));
        pairs.clear();
        assert_eq!(pool.available(), 20);
        assert!(pool.allocate(LO, true).is_ok());
    }

    #[test]
    fn rtcp_mux_binds_only_the_even_port() {
        let pool = PortPool::new(41200..=41201).expect("pool");
        let p = pool.allocate(LO, true).expect("allocate");
        assert_eq!(p.rtp_port(), 41200);
        assert!(p.rtcp_socket().is_none());
        assert_eq!(p.rtcp_port(), None);
        // The odd port is free to bind for anyone: we did not take it.
        let probe = UdpSocket::bind((LO, 41201));
        assert!(probe.is_ok());
    }

    #[test]
    fn thousand_cycles_leak_nothing() {
        let pool = PortPool::new(41300..=41309).expect("pool");
        for _ in 0..1000 {
            let a = pool.allocate(LO, false).expect("a");
            let b = pool.allocate(LO, true).expect("b");
            assert_eq!(pool.available(), 3);
            a.release();
            drop(b);
        }
        assert_eq!(pool.available(), pool.capacity());
    }

    #[test]
    fn double_release_is_a_no_op() {
        let pool = PortPool::new(41400..=41403).expect("pool");
        let p = pool.allocate(LO, true).expect("allocate");
        let (index, generation) = (p._lease.index, p._lease.generation);
        drop(p);
        assert_eq!(pool.available(), 2);
        // Second release of the same lease: refused, nothing freed twice.
        assert!(!pool.release_raw(index, generation));
        assert_eq!(pool.available(), 2);
        // The pair is handed out again under a new generation; the stale
        // lease cannot free it from under its new owner.
        let a = pool.allocate(LO, true).expect("a");
        let b = pool.allocate(LO, true).expect("b");
        let reused = if a._lease.index == index { &a } else { &b };
        assert_ne!(reused._lease.generation, generation);
        assert!(!pool.release_raw(index, generation));
        assert_eq!(pool.available(), 0);
        assert!(!pool.release_raw(99, 1), "unknown pair");
    }

    #[test]
    fn busy_port_is_skipped() {
        let pool = PortPool::new(41500..=41503).expect("pool");
        let squatter = UdpSocket::bind((LO, 41500)).expect("squat");
        let p = pool.allocate(LO, false).expect("allocate skips 41500");
        assert_eq!(p.rtp_port(), 41502);
        assert!(matches!(
            pool.allocate(LO, false),
            Err(MediaError::PortsExhausted)
        ));
        drop(squatter);
        assert_eq!(
            pool.allocate(LO, false).expect("now free").rtp_port(),
            41500
        );
    }
}
