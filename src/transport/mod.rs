//! Transport IO: UDP sockets and TCP listeners on both sides, the connection table, and the
//! framing of streams into SIP messages.
//!
//! Everything that arrives becomes an [`Inbound`] on one channel to the proxy; everything the
//! proxy sends goes through [`Transports::send`], which never blocks the proxy: a datagram is
//! sent with `try_send_to`, a stream message is queued to the connection's writer task (a new
//! connection is opened in the background when none exists; failure comes back as
//! [`Inbound::SendFailed`]).
//!
//! Connections are reused in both directions (RFC 3261 §18.2.2, RFC 5923 in spirit): a
//! response goes back over the connection the request came on, and a request to a peer that
//! already has a connection to us uses it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::{Config, Side, Transport};
use crate::sip::{Frame, FramingError, Message, StreamFramer};

pub type ConnId = u64;

/// Where a message came from (or goes to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub side: Side,
    pub transport: Transport,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The connection, for stream transports.
    pub conn: Option<ConnId>,
}

/// What the transports hand to the proxy. (A `Message` is an index over its bytes, about
/// half a kilobyte inline; boxing it would add an allocation per message on the hot path.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Inbound {
    Message(Flow, Message),
    /// Bytes that did not parse; the proxy answers with `response` when an answer can be
    /// built from them.
    Malformed {
        flow: Flow,
        bytes: Bytes,
        response: Option<(u16, &'static str)>,
        reason: String,
    },
    /// The system resolver's answer for a name the proxy asked about.
    Resolved {
        host: String,
        ip: Option<std::net::IpAddr>,
    },
    /// A message could not be delivered to `remote` (connect failure, reset).
    SendFailed {
        side: Side,
        transport: Transport,
        remote: SocketAddr,
    },
}

/// Limits on streams.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    pub max_connections: usize,
    pub max_per_ip: usize,
    pub idle_timeout: Duration,
    pub max_message: usize,
}

struct ConnEntry {
    id: ConnId,
    tx: mpsc::Sender<Bytes>,
}

#[derive(Default)]
struct ConnTable {
    by_remote: HashMap<(Side, SocketAddr), ConnEntry>,
    per_ip: HashMap<IpAddr, usize>,
    total: usize,
}

/// All listeners of both sides.
pub struct Transports {
    udp: HashMap<Side, Arc<UdpSocket>>,
    tcp_local: HashMap<Side, SocketAddr>,
    conns: Arc<Mutex<ConnTable>>,
    next_id: Arc<AtomicU64>,
    inbound: mpsc::Sender<Inbound>,
    limits: StreamLimits,
}

const WRITE_QUEUE: usize = 256;

impl Transports {
    /// Binds every configured listener and starts its receive loop.
    pub async fn bind(
        cfg: &Config,
        inbound: mpsc::Sender<Inbound>,
    ) -> std::io::Result<Arc<Transports>> {
        let limits = StreamLimits {
            max_connections: cfg.limits.max_connections,
            max_per_ip: cfg.limits.max_connections_per_ip,
            idle_timeout: cfg.limits.tcp_idle_timeout,
            max_message: cfg.sip.max_message_bytes,
        };
        let mut udp = HashMap::new();
        let mut tcp_listeners = Vec::new();
        let mut tcp_local = HashMap::new();
        for side in [Side::Gateway, Side::Cloud] {
            let l = cfg.listen(side);
            if let Some(addr) = l.udp {
                let sock = bind_udp(addr).map_err(|e| annotate(e, side, "udp", addr))?;
                info!(side = side.as_str(), %addr, "listening on UDP");
                udp.insert(side, Arc::new(sock));
            }
            if let Some(addr) = l.tcp {
                let lis = TcpListener::bind(addr)
                    .await
                    .map_err(|e| annotate(e, side, "tcp", addr))?;
                info!(side = side.as_str(), %addr, "listening on TCP");
                tcp_local.insert(side, addr);
                tcp_listeners.push((side, lis));
            }
        }
        let t = Arc::new(Transports {
            udp,
            tcp_local,
            conns: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
            inbound,
            limits,
        });
        for (side, sock) in &t.udp {
            tokio::spawn(udp_loop(
                *side,
                sock.clone(),
                t.inbound.clone(),
                t.limits.max_message,
            ));
        }
        for (side, lis) in tcp_listeners {
            tokio::spawn(accept_loop(side, lis, t.clone()));
        }
        Ok(t)
    }

    /// The local address messages of this side and transport leave from.
    pub fn local_addr(&self, side: Side, transport: Transport) -> Option<SocketAddr> {
        match transport {
            Transport::Udp => self.udp.get(&side).and_then(|s| s.local_addr().ok()),
            Transport::Tcp => self.tcp_local.get(&side).copied(),
            Transport::Tls => None,
        }
    }

    /// Sends one message; never blocks. Errors are reported through `Inbound::SendFailed` for
    /// streams, or returned at once for what can be known at once.
    pub fn send(
        self: &Arc<Self>,
        side: Side,
        transport: Transport,
        remote: SocketAddr,
        data: Bytes,
    ) -> Result<(), SendError> {
        match transport {
            Transport::Udp => {
                let sock = self
                    .udp
                    .get(&side)
                    .ok_or(SendError::NoListener(side, transport))?;
                match sock.try_send_to(&data, remote) {
                    Ok(_) => Ok(()),
                    // A full socket buffer is loss; the transaction layer retransmits.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
                    Err(e) => Err(SendError::Io(e.to_string())),
                }
            }
            Transport::Tcp => {
                let existing = {
                    let table = self.conns.lock().map_err(|_| SendError::Internal)?;
                    table.by_remote.get(&(side, remote)).map(|c| c.tx.clone())
                };
                if let Some(tx) = existing {
                    return tx.try_send(data).map_err(|_| SendError::QueueFull);
                }
                let local = self
                    .tcp_local
                    .get(&side)
                    .copied()
                    .ok_or(SendError::NoListener(side, transport))?;
                let t = self.clone();
                tokio::spawn(async move {
                    match connect(local, remote).await {
                        Ok(stream) => {
                            if let Some(tx) = t.register(side, stream, remote) {
                                let _ = tx.try_send(data);
                            }
                        }
                        Err(e) => {
                            warn!(side = side.as_str(), %remote, error = %e, "TCP connect failed");
                            let _ = t
                                .inbound
                                .send(Inbound::SendFailed {
                                    side,
                                    transport,
                                    remote,
                                })
                                .await;
                        }
                    }
                });
                Ok(())
            }
            Transport::Tls => Err(SendError::NoListener(side, transport)),
        }
    }

    /// Number of open stream connections.
    pub fn connection_count(&self) -> usize {
        self.conns.lock().map(|t| t.total).unwrap_or(0)
    }

    /// Registers a connection (accepted or opened) and starts its reader and writer tasks.
    /// Returns its write queue, or `None` when a limit refused it (the stream is dropped).
    fn register(
        self: &Arc<Self>,
        side: Side,
        stream: TcpStream,
        remote: SocketAddr,
    ) -> Option<mpsc::Sender<Bytes>> {
        let local = stream.local_addr().ok()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        {
            let mut table = self.conns.lock().ok()?;
            let per_ip = table.per_ip.get(&remote.ip()).copied().unwrap_or(0);
            if table.total >= self.limits.max_connections || per_ip >= self.limits.max_per_ip {
                warn!(side = side.as_str(), %remote, total = table.total, per_ip, "connection refused: limit reached");
                return None;
            }
            table.total += 1;
            *table.per_ip.entry(remote.ip()).or_insert(0) += 1;
            // A newer connection from the same address replaces the older one for sending.
            table
                .by_remote
                .insert((side, remote), ConnEntry { id, tx: tx.clone() });
        }
        debug!(side = side.as_str(), %remote, conn = id, "connection open");
        let flow = Flow {
            side,
            transport: Transport::Tcp,
            local,
            remote,
            conn: Some(id),
        };
        let (rd, wr) = stream.into_split();
        let t = self.clone();
        tokio::spawn(async move {
            let writer = tokio::spawn(write_loop(wr, rx));
            read_loop(rd, flow, &t).await;
            writer.abort();
            t.unregister(side, remote, id);
        });
        Some(tx)
    }

    fn unregister(&self, side: Side, remote: SocketAddr, id: ConnId) {
        if let Ok(mut table) = self.conns.lock() {
            if table
                .by_remote
                .get(&(side, remote))
                .is_some_and(|c| c.id == id)
            {
                table.by_remote.remove(&(side, remote));
            }
            table.total = table.total.saturating_sub(1);
            if let Some(n) = table.per_ip.get_mut(&remote.ip()) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    table.per_ip.remove(&remote.ip());
                }
            }
        }
        debug!(side = side.as_str(), %remote, conn = id, "connection closed");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no {1:?} listener on the {0:?} side")]
    NoListener(Side, Transport),
    #[error("connection write queue full")]
    QueueFull,
    #[error("socket error: {0}")]
    Io(String),
    #[error("internal error")]
    Internal,
}

fn annotate(e: std::io::Error, side: Side, what: &str, addr: SocketAddr) -> std::io::Error {
    std::io::Error::new(
        e.kind(),
        format!("cannot bind {} {what} listener {addr}: {e}", side.as_str()),
    )
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
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
    UdpSocket::from_std(s.into())
}

async fn connect(local: SocketAddr, remote: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = if remote.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Leave from our listener's address (not its port) so the peer sees the address it knows.
    if local.is_ipv4() == remote.is_ipv4() {
        sock.bind(SocketAddr::new(local.ip(), 0))?;
    }
    let stream = tokio::time::timeout(Duration::from_secs(5), sock.connect(remote))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn udp_loop(side: Side, sock: Arc<UdpSocket>, tx: mpsc::Sender<Inbound>, max: usize) {
    let local = match sock.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut buf = vec![0u8; max.max(1500)];
    loop {
        let (n, remote) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP port unreachable surfaces here on Linux; it is not fatal for the socket.
                debug!(side = side.as_str(), error = %e, "UDP receive error");
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

async fn accept_loop(side: Side, lis: TcpListener, t: Arc<Transports>) {
    loop {
        match lis.accept().await {
            Ok((stream, remote)) => {
                let _ = stream.set_nodelay(true);
                t.register(side, stream, remote);
            }
            Err(e) => {
                warn!(side = side.as_str(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn write_loop(mut wr: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(data) = rx.recv().await {
        if wr.write_all(&data).await.is_err() {
            return;
        }
    }
}

async fn read_loop(mut rd: tokio::net::tcp::OwnedReadHalf, flow: Flow, t: &Arc<Transports>) {
    let mut framer = StreamFramer::new(t.limits.max_message);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match tokio::time::timeout(t.limits.idle_timeout, rd.read(&mut buf)).await {
            Err(_) => {
                debug!(remote = %flow.remote, "connection idle, closing");
                return;
            }
            Ok(Err(_)) | Ok(Ok(0)) => return,
            Ok(Ok(n)) => n,
        };
        framer.push(buf.get(..n).unwrap_or_default());
        loop {
            match framer.next_frame() {
                Ok(None) => break,
                Ok(Some(Frame::Keepalive)) => {
                    // RFC 5626 §4.4.1: a double-CRLF ping gets a single-CRLF pong.
                    let _ = t.send(
                        flow.side,
                        Transport::Tcp,
                        flow.remote,
                        Bytes::from_static(b"\r\n"),
                    );
                }
                Ok(Some(Frame::Message(m))) => {
                    if t.inbound.send(Inbound::Message(flow, m)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let fatal = !matches!(e, FramingError::Invalid(_));
                    if let Some(head) = framer.rejected_head() {
                        let ev = Inbound::Malformed {
                            flow,
                            bytes: Bytes::copy_from_slice(head),
                            response: e.response(),
                            reason: e.to_string(),
                        };
                        if t.inbound.send(ev).await.is_err() {
                            return;
                        }
                    }
                    if !fatal {
                        // A well-framed but invalid message: answered, the stream goes on.
                        continue;
                    }
                    // Framing is lost (RFC 3261 §18.3): give the proxy a moment to queue its
                    // answer, then close.
                    warn!(remote = %flow.remote, error = %e, "stream framing error, closing connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    return;
                }
            }
        }
    }
}
