//! Datagram I/O for the relay workers: batched (`recvmmsg`/`sendmmsg`) or
//! one system call per packet (`recvfrom`/`sendto`), over fixed buffers
//! allocated once per worker. Linux only.
//!
//! The structures hold raw pointers into their own boxed buffers (which
//! never move once allocated), so they are `!Send` and live on the worker
//! thread that created them.
#![allow(unsafe_code)] // the kernel interface of the relay: syscalls on our own buffers

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::RawFd;

use socket2::{SockAddr, SockAddrStorage};

use super::Leg;

/// Size of one packet buffer: a full Ethernet MTU plus SRTP/SRTCP overhead
/// fits with room to spare.
pub(crate) const SLOT: usize = 2048;

/// The source address the kernel wrote into `storage` (`len` bytes), or
/// `None` for a family other than IPv4/IPv6. Leaves `storage` zeroed for
/// the next receive.
fn take_source(storage: &mut SockAddrStorage, len: libc::socklen_t) -> Option<SocketAddr> {
    let storage = mem::replace(storage, SockAddrStorage::zeroed());
    // SAFETY: the storage was zeroed before the receive, and the kernel wrote
    // a complete address of the socket's family (AF_INET or AF_INET6 for our
    // UDP sockets) and its length; an unknown family reads as `None`.
    unsafe { SockAddr::new(storage, len) }.as_socket()
}

/// A placeholder destination for unused send slots.
fn unspecified() -> SockAddr {
    SockAddr::from(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// A batch of received datagrams.
pub(crate) struct RxBatch {
    bufs: Box<[[u8; SLOT]]>,
    /// Source addresses, written by the kernel.
    addrs: Box<[SockAddrStorage]>,
    /// Only the kernel reads these (through `hdrs`); kept alive here.
    #[allow(dead_code)]
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    /// Per packet: length (> SLOT when truncated) and source.
    meta: Box<[(usize, Option<SocketAddr>)]>,
    n: usize,
}

impl RxBatch {
    pub(crate) fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        let mut bufs = vec![[0u8; SLOT]; cap].into_boxed_slice();
        let addrs = (0..cap).map(|_| SockAddrStorage::zeroed()).collect();
        // SAFETY: all-zero is a valid iovec / mmsghdr (null pointers, zero
        // lengths); the pointers are set below and in `recv_mmsg`.
        let mut iovs = vec![unsafe { mem::zeroed::<libc::iovec>() }; cap].into_boxed_slice();
        let mut hdrs = vec![unsafe { mem::zeroed::<libc::mmsghdr>() }; cap].into_boxed_slice();
        for i in 0..cap {
            iovs[i].iov_base = bufs[i].as_mut_ptr().cast();
            iovs[i].iov_len = SLOT;
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        RxBatch {
            bufs,
            addrs,
            iovs,
            hdrs,
            meta: vec![(0, None); cap].into_boxed_slice(),
            n: 0,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.bufs.len()
    }

    /// Packet `i`: its bytes and source; `None` for a truncated datagram
    /// (longer than [`SLOT`]) or an unknown address family.
    pub(crate) fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.n {
            return None;
        }
        let (len, src) = *self.meta.get(i)?;
        let data = self.bufs.get(i)?.get(..len)?;
        Some((data, src?))
    }

    /// Receives up to `capacity` datagrams with one `recvmmsg`. Returns the
    /// count (0 when nothing is pending).
    pub(crate) fn recv_mmsg(&mut self, fd: RawFd) -> io::Result<usize> {
        let cap = self.capacity();
        for (h, a) in self.hdrs.iter_mut().zip(self.addrs.iter_mut()) {
            h.msg_hdr.msg_name = (a as *mut SockAddrStorage).cast();
            h.msg_hdr.msg_namelen = a.size_of();
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: hdrs holds `cap` initialised headers whose iovecs and
        // names point into buffers owned by self, alive for the call.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                cap as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            self.n = 0;
            let e = io::Error::last_os_error();
            return if would_block(&e) { Ok(0) } else { Err(e) };
        }
        let n = usize::try_from(r).unwrap_or(0).min(cap);
        for i in 0..n {
            let h = &self.hdrs[i];
            let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let len = if truncated {
                SLOT + 1
            } else {
                h.msg_len as usize
            };
            self.meta[i] = (len, take_source(&mut self.addrs[i], h.msg_hdr.msg_namelen));
        }
        self.n = n;
        Ok(n)
    }

    /// Receives up to `capacity` datagrams with one `recvfrom` each.
    pub(crate) fn recv_single(&mut self, fd: RawFd) -> io::Result<usize> {
        let cap = self.capacity();
        let mut n = 0;
        while n < cap {
            let addr = &mut self.addrs[n];
            let mut len = addr.size_of();
            // SAFETY: the buffer and address storage are owned by self and
            // sized as passed.
            let r = unsafe {
                libc::recvfrom(
                    fd,
                    self.bufs[n].as_mut_ptr().cast(),
                    SLOT,
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    (addr as *mut SockAddrStorage).cast(),
                    &mut len,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if would_block(&e) {
                    break;
                }
                self.n = n;
                return if n > 0 { Ok(n) } else { Err(e) };
            }
            // With MSG_TRUNC the real datagram length is returned.
            let got = usize::try_from(r).unwrap_or(0);
            self.meta[n] = (got, take_source(&mut self.addrs[n], len));
            n += 1;
        }
        self.n = n;
        Ok(n)
    }
}

/// One datagram to send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TxItem {
    pub fd: RawFd,
    pub dest: SocketAddr,
    pub len: usize,
    /// Send the received bytes of rx slot `slot` unchanged (no copy).
    pub in_place: bool,
    pub slot: usize,
    /// Leg the packet leaves on (for error counting).
    pub leg: Leg,
}

/// A batch of datagrams to send.
pub(crate) struct TxBatch {
    bufs: Box<[[u8; SLOT]]>,
    /// Destinations of the queued items, read by the kernel.
    addrs: Box<[SockAddr]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    items: Box<[Option<TxItem>]>,
    n: usize,
}

impl TxBatch {
    pub(crate) fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        // SAFETY: all-zero values are valid for these C structs.
        TxBatch {
            bufs: vec![[0u8; SLOT]; cap].into_boxed_slice(),
            addrs: vec![unspecified(); cap].into_boxed_slice(),
            iovs: vec![unsafe { mem::zeroed::<libc::iovec>() }; cap].into_boxed_slice(),
            hdrs: vec![unsafe { mem::zeroed::<libc::mmsghdr>() }; cap].into_boxed_slice(),
            items: vec![None; cap].into_boxed_slice(),
            n: 0,
        }
    }

    pub(crate) fn clear(&mut self) {
        self.n = 0;
    }

    /// The output buffer of slot `i`.
    pub(crate) fn slot_mut(&mut self, i: usize) -> Option<&mut [u8; SLOT]> {
        self.bufs.get_mut(i)
    }

    /// Queues an item; `false` when the batch is full.
    pub(crate) fn push(&mut self, item: TxItem) -> bool {
        match self.items.get_mut(self.n) {
            Some(s) => {
                *s = Some(item);
                self.n += 1;
                true
            }
            None => false,
        }
    }

    fn data_ptr(&self, item: &TxItem, rx: &RxBatch) -> Option<*const u8> {
        let buf = if item.in_place {
            rx.bufs.get(item.slot)?
        } else {
            self.bufs.get(item.slot)?
        };
        // Bounds: len ≤ SLOT was checked when the item was made.
        buf.get(..item.len).map(|b| b.as_ptr())
    }

    /// Sends the queued items, grouping runs with the same socket into one
    /// `sendmmsg`. Returns the number of failed sends per leg.
    pub(crate) fn flush_mmsg(&mut self, rx: &RxBatch) -> [u64; 2] {
        let mut failed = [0u64; 2];
        let n = self.n;
        // Prepare headers for all items.
        for i in 0..n {
            let Some(item) = self.items[i] else { continue };
            let ptr = self.data_ptr(&item, rx);
            let dest = &mut self.addrs[i];
            *dest = SockAddr::from(item.dest);
            self.iovs[i].iov_base = ptr.map_or(std::ptr::null_mut(), |p| p.cast_mut().cast());
            self.iovs[i].iov_len = if ptr.is_some() { item.len } else { 0 };
            let h = &mut self.hdrs[i];
            // The kernel only reads the name of a datagram it sends.
            h.msg_hdr.msg_name = dest.as_ptr().cast_mut().cast();
            h.msg_hdr.msg_namelen = dest.len();
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        let mut start = 0;
        while start < n {
            let Some(first) = self.items[start] else {
                start += 1;
                continue;
            };
            let mut end = start + 1;
            while end < n && self.items[end].is_some_and(|it| it.fd == first.fd) {
                end += 1;
            }
            if end - start == 1 {
                // A lone datagram: `sendto` is cheaper than `sendmmsg` (no
                // msghdr/iovec import), measured in benches/relay.rs.
                if !self.send_one(start, rx) {
                    failed[first.leg.index()] += 1;
                }
                start = end;
                continue;
            }
            // Send [start, end) with as many sendmmsg calls as needed.
            let mut at = start;
            while at < end {
                // SAFETY: hdrs[at..end] are initialised above and point into
                // buffers owned by self or rx, alive for the call.
                let r = unsafe {
                    libc::sendmmsg(
                        first.fd,
                        self.hdrs.as_mut_ptr().add(at),
                        (end - at) as libc::c_uint,
                        libc::MSG_DONTWAIT,
                    )
                };
                if r <= 0 {
                    // The first packet of the rest failed: count and skip it.
                    failed[first.leg.index()] += 1;
                    at += 1;
                } else {
                    at += usize::try_from(r).unwrap_or(1);
                }
            }
            start = end;
        }
        self.n = 0;
        failed
    }

    /// Sends item `i` with `sendto`; `false` on failure.
    fn send_one(&mut self, i: usize, rx: &RxBatch) -> bool {
        let Some(item) = self.items.get(i).copied().flatten() else {
            return false;
        };
        let Some(ptr) = self.data_ptr(&item, rx) else {
            return false;
        };
        let dest = SockAddr::from(item.dest);
        // SAFETY: ptr points to item.len initialised bytes owned by self or
        // rx; `dest` holds an address of `dest.len()` bytes.
        let r = unsafe {
            libc::sendto(
                item.fd,
                ptr.cast(),
                item.len,
                libc::MSG_DONTWAIT,
                dest.as_ptr().cast(),
                dest.len(),
            )
        };
        r >= 0
    }

    /// Sends the queued items with one `sendto` each.
    pub(crate) fn flush_single(&mut self, rx: &RxBatch) -> [u64; 2] {
        let mut failed = [0u64; 2];
        for i in 0..self.n {
            let Some(item) = self.items[i] else { continue };
            if !self.send_one(i, rx) {
                failed[item.leg.index()] += 1;
            }
        }
        self.n = 0;
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn source_address_round_trip() {
        for s in ["127.0.0.1:5004", "[::1]:6000", "[fe80::1%2]:7"] {
            let a: SocketAddr = s.parse().expect("addr");
            let written = SockAddr::from(a);
            let len = written.len();
            let mut storage = written.as_storage();
            assert_eq!(take_source(&mut storage, len), Some(a));
            // The slot is left zeroed: nothing stale is read next time.
            assert_eq!(take_source(&mut storage, len), None);
        }
        assert_eq!(take_source(&mut SockAddrStorage::zeroed(), 0), None);
    }

    fn exchange(batched: bool) {
        let rx_sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx_sock.set_nonblocking(true).expect("nb");
        let tx_sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let dst = rx_sock.local_addr().expect("addr");
        for i in 0..5u8 {
            tx_sock.send_to(&[i; 20], dst).expect("send");
        }
        tx_sock.send_to(&[9u8; SLOT + 10], dst).expect("send big");
        let mut rx = RxBatch::new(4);
        let mut got = Vec::new();
        let mut truncated = 0;
        for _ in 0..50 {
            let n = if batched {
                rx.recv_mmsg(rx_sock.as_raw_fd())
            } else {
                rx.recv_single(rx_sock.as_raw_fd())
            }
            .expect("recv");
            for i in 0..n {
                match rx.get(i) {
                    Some((d, src)) => {
                        assert_eq!(src, tx_sock.local_addr().expect("a"));
                        got.push(d.to_vec());
                    }
                    None => truncated += 1,
                }
            }
            if got.len() + truncated == 6 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(got.len(), 5);
        assert_eq!(truncated, 1, "oversized datagram flagged");
        assert_eq!(got[3], vec![3u8; 20]);

        // Echo two back: one in place, one from a tx slot.
        let back = UdpSocket::bind("127.0.0.1:0").expect("bind");
        back.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .expect("timeout");
        let _ = rx_sock.send_to(&[1u8; 4], dst); // refill rx slot 0
        let mut rx = RxBatch::new(4);
        let mut n = 0;
        for _ in 0..100 {
            n = rx.recv_mmsg(rx_sock.as_raw_fd()).expect("recv");
            if n > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert!(n >= 1);
        let mut tx = TxBatch::new(4);
        tx.slot_mut(1).expect("slot")[..3].copy_from_slice(b"abc");
        let dest = back.local_addr().expect("a");
        for (in_place, slot, len) in [(true, 0usize, 4usize), (false, 1, 3)] {
            assert!(tx.push(TxItem {
                fd: rx_sock.as_raw_fd(),
                dest,
                len,
                in_place,
                slot,
                leg: Leg::A,
            }));
        }
        let failed = if batched {
            tx.flush_mmsg(&rx)
        } else {
            tx.flush_single(&rx)
        };
        assert_eq!(failed, [0, 0]);
        let mut buf = [0u8; 64];
        let (l, _) = back.recv_from(&mut buf).expect("echo 1");
        assert_eq!(&buf[..l], &[1u8; 4]);
        let (l, _) = back.recv_from(&mut buf).expect("echo 2");
        assert_eq!(&buf[..l], b"abc");
    }

    #[test]
    fn batched_io_moves_datagrams() {
        exchange(true);
    }

    #[test]
    fn single_io_moves_datagrams() {
        exchange(false);
    }
}
