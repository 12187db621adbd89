//! UDP: the sockets of both sides, their receive loops, and ICMP errors.
//!
//! An ICMP port-unreachable (or host/network unreachable) answering a datagram we sent is a
//! transport error for that destination (RFC 3261 §18.4): the proxy fails the branch at once
//! and tries the next target (§16.7, §17.1.4) instead of waiting for its failover timer. On
//! Linux an unconnected UDP socket reports ICMP errors only with `IP_RECVERR`: the error is
//! queued on the socket's error queue with the original destination as its address, and the
//! socket polls with `EPOLLERR`; [`error_loop`] reads the queue and hands the core an
//! `Inbound::SendFailed` per destination.

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use crate::transport::ingress::IngressTx;
use bytes::Bytes;
use nix::sys::socket::{self as nxs, MsgFlags, SockaddrIn, SockaddrIn6};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::{debug, info};

use crate::config::{Side, Transport};
use crate::flow::{Flow, Inbound};
use crate::sip::Message;

pub(super) fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Room for bursts of signalling at load.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    // ICMP errors onto the error queue, with the destination they answer.
    let on = if addr.is_ipv4() {
        nxs::setsockopt(&s, nxs::sockopt::Ipv4RecvErr, &true)
    } else {
        nxs::setsockopt(&s, nxs::sockopt::Ipv6RecvErr, &true)
    };
    if let Err(e) = on {
        debug!(%addr, error = %e, "IP_RECVERR not available: ICMP errors are not reported");
    }
    UdpSocket::from_std(s.into())
}

/// Is this error one an ICMP message left on the socket (for some earlier datagram)?
pub(super) fn is_icmp_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH)
    )
}

/// Reads the socket's error queue: the destinations that answered with an ICMP unreachable.
pub(super) fn drain_errors(sock: &UdpSocket) -> Vec<SocketAddr> {
    let fd = sock.as_raw_fd();
    let v6 = sock.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    let mut out = Vec::new();
    // Bounded: a flood of ICMP cannot keep us here.
    for _ in 0..256 {
        let mut data = [0u8; 64];
        let mut iov = [IoSliceMut::new(&mut data)];
        let mut cmsg = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in6);
        let flags = MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT;
        let got = if v6 {
            nxs::recvmsg::<SockaddrIn6>(fd, &mut iov, Some(&mut cmsg), flags).map(|m| {
                let unreachable = m.cmsgs().ok().is_some_and(|mut c| {
                    c.any(|c| {
                        matches!(c, nxs::ControlMessageOwned::Ipv6RecvErr(e, _) if unreachable(&e))
                    })
                });
                (
                    m.address
                        .map(|a| SocketAddr::V6(std::net::SocketAddrV6::from(a))),
                    unreachable,
                )
            })
        } else {
            nxs::recvmsg::<SockaddrIn>(fd, &mut iov, Some(&mut cmsg), flags).map(|m| {
                let unreachable = m.cmsgs().ok().is_some_and(|mut c| {
                    c.any(|c| {
                        matches!(c, nxs::ControlMessageOwned::Ipv4RecvErr(e, _) if unreachable(&e))
                    })
                });
                (
                    m.address
                        .map(|a| SocketAddr::V4(std::net::SocketAddrV4::from(a))),
                    unreachable,
                )
            })
        };
        match got {
            Ok((Some(dest), true)) => {
                if !out.contains(&dest) {
                    out.push(dest);
                }
            }
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    out
}

fn unreachable(e: &libc::sock_extended_err) -> bool {
    const ORIGIN_ICMP: u8 = 2;
    const ORIGIN_ICMP6: u8 = 3;
    (e.ee_origin == ORIGIN_ICMP || e.ee_origin == ORIGIN_ICMP6)
        && matches!(
            i32::try_from(e.ee_errno).unwrap_or(0),
            libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH
        )
}

/// Hands the core a transport error per unreachable destination.
pub(super) fn report(side: Side, dests: Vec<SocketAddr>, tx: &IngressTx) {
    for remote in dests {
        info!(side = side.as_str(), %remote, "ICMP unreachable: the destination refuses UDP");
        crate::stats::TRANSPORT.icmp_unreachable();
        tx.push_internal(Inbound::SendFailed {
            side,
            transport: Transport::Udp,
            remote,
        });
    }
}

/// Waits for the socket's error readiness and reports what its error queue holds.
pub(super) async fn error_loop(side: Side, sock: Arc<UdpSocket>, tx: IngressTx) {
    loop {
        if sock.ready(Interest::ERROR).await.is_err() {
            return;
        }
        let mut dests = Vec::new();
        // Clears the error readiness once the queue is empty.
        let _ = sock.try_io(Interest::ERROR, || {
            dests.extend(drain_errors(&sock));
            Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
        });
        report(side, dests, &tx);
    }
}

pub(super) async fn udp_loop(side: Side, sock: Arc<UdpSocket>, tx: IngressTx, max: usize) {
    let local = match sock.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut buf = vec![0u8; max.max(1500)];
    loop {
        let (n, remote) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // The pending error of an ICMP message; not fatal for the socket. The receive
                // may take the socket's error readiness before the error loop sees it: read
                // the error queue here too (each message is read once, by whichever comes
                // first), so that the destination's transactions fail at once either way.
                debug!(side = side.as_str(), error = %e, "UDP receive error");
                if is_icmp_error(&e) {
                    report(side, drain_errors(&sock), &tx);
                }
                continue;
            }
        };
        let data = match buf.get(..n) {
            Some(d) => d,
            None => continue,
        };
        // RFC 5626 §4.4.1 keepalives and stray CRLFs carry nothing.
        if data.iter().all(|b| *b == b'\r' || *b == b'\n') {
            continue;
        }
        let flow = Flow {
            side,
            transport: Transport::Udp,
            local,
            remote,
            conn: None,
            identity: None,
        };
        let bytes = Bytes::copy_from_slice(data);
        let ev = match Message::parse(bytes.clone()) {
            Ok(m) => Inbound::Message(flow, m),
            Err(e) => Inbound::Malformed {
                flow,
                bytes,
                response: e.response(),
                reason: e.to_string(),
            },
        };
        if tx.send(ev).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A datagram to a closed port comes back as ICMP port-unreachable on loopback: the error
    /// loop reports its destination.
    #[tokio::test]
    async fn port_unreachable_is_reported_with_its_destination() {
        let sock = Arc::new(bind_udp("127.0.0.1:0".parse().unwrap()).unwrap());
        // A port that was just free: nobody listens there.
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dest = closed.local_addr().unwrap();
        drop(closed);
        let (tx, mut rx) = crate::transport::ingress::ingress(Default::default());
        tokio::spawn(error_loop(Side::Gateway, sock.clone(), tx));
        sock.send_to(b"OPTIONS", dest).await.unwrap();
        let ev = tokio::time::timeout(std::time::Duration::from_secs(2), rx.recv())
            .await
            .expect("reported")
            .unwrap();
        match ev {
            Inbound::SendFailed {
                side,
                transport,
                remote,
            } => {
                assert_eq!(side, Side::Gateway);
                assert_eq!(transport, Transport::Udp);
                assert_eq!(remote, dest);
            }
            other => panic!("{other:?}"),
        }
    }
}
