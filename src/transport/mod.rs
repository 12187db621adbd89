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
//! already has a connection to us uses it. For TLS the peer is its verified certificate
//! identity: a request to a gateway goes over the connection that gateway opened to us, from
//! whatever source port (see [`tls`]).
//!
//! Who may hold a connection: TLS peers by their verified certificate ([`tls`]), with
//! handshake slots per side and per source address ([`handshake`]); plain TCP only from the
//! addresses of the configured peers of that side (identity on plain TCP is the source
//! address: anyone else's connection is closed at once). A message must arrive whole within
//! its deadline, and writes are bounded per connection ([`conn`]). After every TLS reload
//! (a changed file, SIGHUP, the scheduled CRL refresh) each live TLS connection's certificate
//! is verified again, and a connection whose certificate is now refused (revoked) is closed.

mod conn;
pub mod dns;
pub mod handshake;
pub mod ingress;
mod stream;
pub mod tls;
mod udp;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, warn};

use crate::config::{Config, Side, Transport};
use crate::transport::ingress::IngressTx;
use conn::{enqueue, read_loop, write_loop};
use stream::Stream;
use udp::{bind_udp, udp_loop};

pub use self::tls::TlsContext;
pub use crate::flow::{ConnId, Flow, Inbound, PeerName};

/// Limits on streams.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    pub max_connections: usize,
    pub max_per_ip: usize,
    pub idle_timeout: Duration,
    pub max_message: usize,
    /// A stream message must arrive whole within this time of its first byte.
    pub message_timeout: Duration,
    /// Messages queued per connection.
    pub write_queue: usize,
}

/// A live TLS connection, as the re-verification after a reload needs it.
#[derive(Clone)]
struct LiveTls {
    side: Side,
    remote: SocketAddr,
    identity: Option<PeerName>,
    chain: Vec<CertificateDer<'static>>,
    /// The name we verified the server against, for connections we opened.
    server_name: Option<String>,
    close: Arc<Notify>,
}

struct ConnEntry {
    id: ConnId,
    tx: mpsc::Sender<Bytes>,
}

type ConnKey = (Side, Transport, SocketAddr);

#[derive(Default)]
struct ConnTable {
    by_remote: HashMap<ConnKey, ConnEntry>,
    /// TLS connections by verified peer identity (the newest one per identity).
    by_identity: HashMap<(Side, PeerName), (ConnKey, ConnId)>,
    per_ip: HashMap<IpAddr, usize>,
    total: usize,
    tls: HashMap<ConnId, LiveTls>,
}

impl ConnTable {
    fn has_room(&self, limits: &StreamLimits, ip: IpAddr) -> bool {
        let per_ip = self.per_ip.get(&ip).copied().unwrap_or(0);
        self.total < limits.max_connections && per_ip < limits.max_per_ip
    }
}

/// All listeners of both sides.
pub struct Transports {
    udp: HashMap<Side, Arc<UdpSocket>>,
    tcp_local: HashMap<Side, SocketAddr>,
    tls_local: HashMap<Side, SocketAddr>,
    tls: Option<Arc<TlsContext>>,
    /// Names to present as SNI (and verify) when we open a TLS connection to an address.
    server_names: Mutex<HashMap<(Side, IpAddr), String>>,
    /// Remotes whose last connect failed: no new attempt before `until`.
    backoff: Mutex<HashMap<ConnKey, Backoff>>,
    conns: Arc<Mutex<ConnTable>>,
    next_id: Arc<AtomicU64>,
    inbound: IngressTx,
    limits: StreamLimits,
    /// The addresses of the configured peers, by side: the only sources of plain TCP.
    peers: RwLock<HashSet<(Side, IpAddr)>>,
}

impl Transports {
    /// Binds every configured listener and starts its receive loop. When TLS is in use the
    /// TLS configuration is built first (our certificates issued from the built-in CA when the
    /// configuration names none) and watched for changes.
    pub async fn bind(cfg: &Config, inbound: IngressTx) -> std::io::Result<Arc<Transports>> {
        let tls = if cfg.uses_tls() {
            let ctx = TlsContext::start(cfg).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("TLS: {e}"))
            })?;
            ctx.watch(Duration::from_secs(2));
            Some(ctx)
        } else {
            None
        };
        Self::bind_with_tls(cfg, inbound, tls).await
    }

    /// [`Transports::bind`] with a TLS context built by the caller.
    pub async fn bind_with_tls(
        cfg: &Config,
        inbound: IngressTx,
        tls: Option<Arc<TlsContext>>,
    ) -> std::io::Result<Arc<Transports>> {
        let limits = StreamLimits {
            max_connections: cfg.limits.max_connections,
            max_per_ip: cfg.limits.max_connections_per_ip,
            idle_timeout: cfg.limits.tcp_idle_timeout,
            max_message: cfg.sip.max_message_bytes,
            message_timeout: cfg.limits.message_timeout,
            write_queue: cfg.limits.write_queue,
        };
        let mut udp = HashMap::new();
        let mut tcp_listeners = Vec::new();
        let mut tcp_local = HashMap::new();
        let mut tls_listeners = Vec::new();
        let mut tls_local = HashMap::new();
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
            if let (Some(addr), Some(_)) = (l.tls, &tls) {
                let lis = TcpListener::bind(addr)
                    .await
                    .map_err(|e| annotate(e, side, "tls", addr))?;
                info!(side = side.as_str(), %addr, "listening on TLS");
                tls_local.insert(side, addr);
                tls_listeners.push((side, lis));
            }
        }
        // Default SNI names: the configured peers, by the addresses they resolve to statically.
        // The same addresses are the peers until the routing table names them all.
        let mut server_names = HashMap::new();
        let mut peers = HashSet::new();
        if let Some(ip) = cfg.static_host(cfg.cloud_peer.fqdn.as_str()) {
            server_names.insert((Side::Cloud, ip), cfg.cloud_peer.fqdn.to_string());
            peers.insert((Side::Cloud, ip));
        }
        for g in &cfg.gateways {
            if let Some(ip) = cfg.static_host(&g.name.to_string()) {
                server_names.insert((Side::Gateway, ip), tls::sni_name(&g.name));
                peers.insert((Side::Gateway, ip));
            }
        }
        // Other sites' mediation servers (our own site's are us).
        for s in cfg.sites.iter().filter(|s| s.name != cfg.appliance.site) {
            for m in &s.mediation_servers {
                if let Some(ip) = cfg.static_host(m.fqdn.as_str()) {
                    peers.insert((Side::Gateway, ip));
                }
            }
        }
        let t = Arc::new(Transports {
            udp,
            tcp_local,
            tls_local,
            tls,
            server_names: Mutex::new(server_names),
            backoff: Mutex::default(),
            conns: Arc::default(),
            next_id: Arc::new(AtomicU64::new(1)),
            inbound,
            limits,
            peers: RwLock::new(peers),
        });
        for (side, sock) in &t.udp {
            tokio::spawn(udp_loop(
                *side,
                sock.clone(),
                t.inbound.clone(),
                t.limits.max_message,
            ));
            tokio::spawn(udp::error_loop(*side, sock.clone(), t.inbound.clone()));
        }
        if let Some(ctx) = &t.tls {
            tokio::spawn(recheck_loop(Arc::downgrade(&t), ctx.subscribe()));
        }
        for (side, lis) in tcp_listeners {
            tokio::spawn(accept_loop(side, lis, t.clone()));
        }
        for (side, lis) in tls_listeners {
            tokio::spawn(tls_accept_loop(side, lis, t.clone()));
        }
        Ok(t)
    }

    /// Sets the names we present as SNI and verify the server certificate against when we open
    /// a TLS connection to an address (the routing table's resolved hops).
    pub fn set_server_names(&self, names: impl IntoIterator<Item = (Side, IpAddr, String)>) {
        if let Ok(mut m) = self.server_names.lock() {
            for (side, ip, name) in names {
                m.insert((side, ip), name);
            }
        }
    }

    /// Sets the addresses of the configured peers of each side (the routing table's resolved
    /// hops): plain TCP is accepted from these only, and their TLS handshakes do not count
    /// against the side's handshake slots (only against the per-source ones).
    pub fn set_peer_addresses(&self, addrs: impl IntoIterator<Item = (Side, IpAddr)>) {
        if let Ok(mut p) = self.peers.write() {
            // The table names them all: after a reload, a removed peer is no peer.
            *p = addrs.into_iter().collect();
        }
    }

    fn is_peer(&self, side: Side, ip: IpAddr) -> bool {
        self.peers
            .read()
            .map(|p| p.contains(&(side, ip)))
            .unwrap_or(false)
    }

    /// The live TLS configuration, when TLS is in use.
    pub fn tls(&self) -> Option<&Arc<TlsContext>> {
        self.tls.as_ref()
    }

    /// The local address messages of this side and transport leave from.
    pub fn local_addr(&self, side: Side, transport: Transport) -> Option<SocketAddr> {
        match transport {
            Transport::Udp => self.udp.get(&side).and_then(|s| s.local_addr().ok()),
            Transport::Tcp => self.tcp_local.get(&side).copied(),
            Transport::Tls => self.tls_local.get(&side).copied(),
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
                let mut r = sock.try_send_to(&data, remote);
                if let Err(e) = &r {
                    if udp::is_icmp_error(e) {
                        // The pending error of an ICMP message about an earlier datagram,
                        // perhaps to another destination: report it for its own destination,
                        // and send this one.
                        udp::report(side, udp::drain_errors(sock), &self.inbound);
                        r = sock.try_send_to(&data, remote);
                    }
                }
                match r {
                    Ok(_) => Ok(()),
                    // A full socket buffer is loss; the transaction layer retransmits.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
                    Err(e) => Err(SendError::Io(e.to_string())),
                }
            }
            Transport::Tcp | Transport::Tls => self.send_stream(side, transport, remote, data),
        }
    }

    fn send_stream(
        self: &Arc<Self>,
        side: Side,
        transport: Transport,
        remote: SocketAddr,
        data: Bytes,
    ) -> Result<(), SendError> {
        let key = (side, transport, remote);
        let name = if transport == Transport::Tls {
            if self.tls.is_none() {
                return Err(SendError::NoListener(side, transport));
            }
            self.server_names
                .lock()
                .map_err(|_| SendError::Internal)?
                .get(&(side, remote.ip()))
                .cloned()
        } else {
            None
        };
        let reserved = {
            let mut table = self.conns.lock().map_err(|_| SendError::Internal)?;
            let existing = table.by_remote.get(&key).map(|c| c.tx.clone()).or_else(|| {
                // A TLS peer's own connection to us, from whatever port (RFC 5923 spirit).
                let id = PeerName::intern(name.as_deref()?)?;
                let (k, _) = table.by_identity.get(&(side, id))?;
                table.by_remote.get(k).map(|c| c.tx.clone())
            });
            if let Some(tx) = existing {
                return enqueue(&tx, data, self.limits.write_queue);
            }
            if let Some(b) = self.backoff.lock().ok().and_then(|m| m.get(&key).copied()) {
                let left = b.until.saturating_duration_since(std::time::Instant::now());
                if !left.is_zero() {
                    return Err(SendError::Backoff(left));
                }
            }
            if !table.has_room(&self.limits, remote.ip()) {
                warn!(side = side.as_str(), %remote, "connection not opened: limit reached");
                return Err(SendError::Limit);
            }
            // The entry exists while we connect: later messages queue behind this one instead
            // of opening a second connection.
            let (id, tx, rx) = self.reserve(&mut table, key);
            let _ = tx.try_send(data);
            (id, rx)
        };
        let (id, rx) = reserved;
        let local = match transport {
            Transport::Tls => self.tls_local.get(&side),
            _ => self.tcp_local.get(&side),
        }
        .copied()
        .or_else(|| self.tcp_local.get(&side).copied())
        .or_else(|| self.tls_local.get(&side).copied());
        let t = self.clone();
        tokio::spawn(async move {
            let opened = match (transport, local) {
                (_, None) => Err(format!(
                    "no TCP or TLS listener on the {} side",
                    side.as_str()
                )),
                (Transport::Tls, Some(local)) => match &name {
                    Some(name) => t.connect_tls(side, local, remote, name).await,
                    None => Err(format!(
                        "no configured name for {remote}: cannot verify a TLS server by address"
                    )),
                },
                (_, Some(local)) => connect(local, remote)
                    .await
                    .map(|s| (Stream::Tcp(s), None))
                    .map_err(|e| e.to_string()),
            };
            match opened {
                Ok((stream, identity)) => {
                    if let Ok(mut b) = t.backoff.lock() {
                        b.remove(&key);
                    }
                    t.start(
                        key,
                        id,
                        stream,
                        identity,
                        rx,
                        server_name_of(transport, &name),
                    )
                }
                Err(e) => {
                    let wait = t.backoff.lock().ok().map(|mut m| {
                        let next = next_backoff(m.get(&key).map(|b| b.last));
                        m.insert(
                            key,
                            Backoff {
                                until: std::time::Instant::now() + next,
                                last: next,
                            },
                        );
                        next
                    });
                    warn!(side = side.as_str(), %remote, transport = transport.via_token(), error = %e, backoff = ?wait, "connect failed");
                    t.unregister(key, id, None);
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

    /// Opens a TLS connection: our certificate of `side` as client certificate, SNI `name`,
    /// the server certificate verified against `name`.
    async fn connect_tls(
        &self,
        side: Side,
        local: SocketAddr,
        remote: SocketAddr,
        name: &str,
    ) -> Result<(Stream, Option<PeerName>), String> {
        let ctx = self.tls.as_ref().ok_or("TLS is not configured")?;
        let server_name =
            crate::pki::tls::server_name(name).map_err(|e| format!("server name: {e}"))?;
        let identity = PeerName::intern(name).ok_or("too many peer names")?;
        let tcp = connect(local, remote).await.map_err(|e| e.to_string())?;
        // Our own budget: never queued behind inbound handshakes.
        let _permit = tokio::time::timeout(ctx.handshake_timeout, ctx.slots.outbound())
            .await
            .map_err(|_| "no outbound handshake slot within the handshake timeout")?
            .ok_or("handshake limiter closed")?;
        let connector = tokio_rustls::TlsConnector::from(ctx.client(side));
        let r =
            match tokio::time::timeout(ctx.handshake_timeout, connector.connect(server_name, tcp))
                .await
            {
                Err(_) => Err("TLS handshake timed out".into()),
                Ok(Err(e)) => Err(format!(
                    "TLS handshake with {name} failed: {}",
                    tls::handshake_failure_reason(&e)
                )),
                Ok(Ok(s)) => Ok((Stream::TlsClient(Box::new(s)), Some(identity))),
            };
        crate::stats::TRANSPORT.tls_outbound(side, remote, &r, std::time::SystemTime::now());
        r
    }

    /// Number of open stream connections.
    pub fn connection_count(&self) -> usize {
        self.conns.lock().map(|t| t.total).unwrap_or(0)
    }

    /// Puts a connection in the table (counted against the limits) before it is open.
    fn reserve(
        &self,
        table: &mut ConnTable,
        key: ConnKey,
    ) -> (ConnId, mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel::<Bytes>(self.limits.write_queue);
        table.total += 1;
        *table.per_ip.entry(key.2.ip()).or_insert(0) += 1;
        // A newer connection from the same address replaces the older one for sending.
        table
            .by_remote
            .insert(key, ConnEntry { id, tx: tx.clone() });
        (id, tx, rx)
    }

    /// Registers an accepted connection; `None` when a limit refused it (it is dropped).
    fn register(
        self: &Arc<Self>,
        side: Side,
        transport: Transport,
        stream: Stream,
        remote: SocketAddr,
        identity: Option<PeerName>,
    ) -> Option<()> {
        let key = (side, transport, remote);
        let (id, rx) = {
            let mut table = self.conns.lock().ok()?;
            if !table.has_room(&self.limits, remote.ip()) {
                let per_ip = table.per_ip.get(&remote.ip()).copied().unwrap_or(0);
                warn!(side = side.as_str(), %remote, total = table.total, per_ip, "connection refused: limit reached");
                return None;
            }
            let (id, _tx, rx) = self.reserve(&mut table, key);
            (id, rx)
        };
        self.start(key, id, stream, identity, rx, None);
        Some(())
    }

    /// Starts the reader and writer tasks of an open connection.
    fn start(
        self: &Arc<Self>,
        key: ConnKey,
        id: ConnId,
        stream: Stream,
        identity: Option<PeerName>,
        rx: mpsc::Receiver<Bytes>,
        server_name: Option<String>,
    ) {
        let (side, transport, remote) = key;
        let Some(local) = stream.local_addr() else {
            self.unregister(key, id, None);
            return;
        };
        let close = Arc::new(Notify::new());
        if let Ok(mut table) = self.conns.lock() {
            if let Some(name) = identity {
                table.by_identity.insert((side, name), (key, id));
            }
            if let Some(chain) = stream.peer_chain() {
                table.tls.insert(
                    id,
                    LiveTls {
                        side,
                        remote,
                        identity,
                        chain,
                        server_name,
                        close: close.clone(),
                    },
                );
            }
        }
        debug!(side = side.as_str(), %remote, conn = id, identity = ?identity, "connection open");
        let flow = Flow {
            side,
            transport,
            local,
            remote,
            conn: Some(id),
            identity,
        };
        let t = self.clone();
        crate::stats::TRANSPORT.connection_opened(side, transport);
        tokio::spawn(async move {
            let (rd, wr) = tokio::io::split(stream);
            let writer = tokio::spawn(write_loop(wr, rx, t.limits.message_timeout, close.clone()));
            let ended = read_loop(rd, flow, &t, &close).await;
            debug!(side = side.as_str(), %remote, conn = id, ?ended, "connection ends");
            crate::stats::TRANSPORT.connection_closed(side, transport);
            writer.abort();
            t.unregister(key, id, identity);
        });
    }

    fn unregister(&self, key: ConnKey, id: ConnId, identity: Option<PeerName>) {
        let (side, _, remote) = key;
        if let Ok(mut table) = self.conns.lock() {
            table.tls.remove(&id);
            if table.by_remote.get(&key).is_some_and(|c| c.id == id) {
                table.by_remote.remove(&key);
            }
            if let Some(name) = identity {
                if table
                    .by_identity
                    .get(&(side, name))
                    .is_some_and(|(_, i)| *i == id)
                {
                    table.by_identity.remove(&(side, name));
                }
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

/// After a failed connect, new messages to that remote fail at once (the proxy fails over)
/// until `until`; the wait doubles on each further failure.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: std::time::Instant,
    last: Duration,
}

const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The wait after a failed connect, given the previous one: 0.5 s, doubling, at most 30 s.
fn next_backoff(prev: Option<Duration>) -> Duration {
    match prev {
        None => BACKOFF_FIRST,
        Some(p) => p.saturating_mul(2).clamp(BACKOFF_FIRST, BACKOFF_MAX),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no {1:?} listener on the {0:?} side")]
    NoListener(Side, Transport),
    #[error("connection write queue full")]
    QueueFull,
    #[error("connection limit reached")]
    Limit,
    #[error("the last connect failed; next attempt in {0:?}")]
    Backoff(Duration),
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

async fn accept_loop(side: Side, lis: TcpListener, t: Arc<Transports>) {
    loop {
        match lis.accept().await {
            Ok((stream, remote)) => {
                if !t.is_peer(side, remote.ip()) {
                    // Identity on plain TCP is the source address: no peer, no connection.
                    crate::stats::TRANSPORT.tcp_refused();
                    debug!(side = side.as_str(), %remote, "TCP connection from an address that is no peer of this side: closed");
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                t.register(side, Transport::Tcp, Stream::Tcp(stream), remote, None);
            }
            Err(e) => {
                warn!(side = side.as_str(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts TLS connections: per-address and total limits first, then a handshake slot (the
/// semaphore caps handshakes in progress), then the handshake within the timeout. The
/// verifiers decide inside the handshake, so a refused peer gets a TLS alert; the reason is
/// logged here with the peer's address.
async fn tls_accept_loop(side: Side, lis: TcpListener, t: Arc<Transports>) {
    let Some(ctx) = t.tls.clone() else { return };
    loop {
        let (tcp, remote) = match lis.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(side = side.as_str(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let room = t
            .conns
            .lock()
            .map(|table| table.has_room(&t.limits, remote.ip()))
            .unwrap_or(false);
        if !room {
            warn!(side = side.as_str(), %remote, "TLS connection refused: connection limit reached");
            crate::stats::TRANSPORT.tls_refused(
                side,
                crate::stats::HandshakeDirection::Inbound,
                remote,
                "connection limit reached",
                std::time::SystemTime::now(),
            );
            continue;
        }
        let permit = match ctx
            .slots
            .try_inbound(side, remote.ip(), t.is_peer(side, remote.ip()))
        {
            Ok(p) => p,
            Err(no) => {
                warn!(side = side.as_str(), %remote, reason = no.reason(), "TLS connection refused");
                crate::stats::TRANSPORT.tls_refused(
                    side,
                    crate::stats::HandshakeDirection::Inbound,
                    remote,
                    no.reason(),
                    std::time::SystemTime::now(),
                );
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let t = t.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(ctx.server(side));
            let res = tokio::time::timeout(ctx.handshake_timeout, acceptor.accept(tcp)).await;
            drop(permit);
            let tls = match res {
                Err(_) => {
                    tls::log_refusal(side, remote, "handshake timed out");
                    return;
                }
                Ok(Err(e)) => {
                    tls::log_refusal(side, remote, &tls::handshake_failure_reason(&e));
                    return;
                }
                Ok(Ok(s)) => s,
            };
            let identity =
                crate::pki::tls::peer_identity(tls.get_ref().1).and_then(|n| PeerName::intern(&n));
            let Some(identity) = identity else {
                tls::log_refusal(side, remote, "no usable certificate identity");
                return;
            };
            info!(side = side.as_str(), %remote, peer = %identity, "TLS peer authenticated");
            crate::stats::TRANSPORT.tls_accepted(side, crate::stats::HandshakeDirection::Inbound);
            t.register(
                side,
                Transport::Tls,
                Stream::TlsServer(Box::new(tls)),
                remote,
                Some(identity),
            );
        });
    }
}

/// The name a TLS connection we open verifies its server against.
fn server_name_of(transport: Transport, name: &Option<String>) -> Option<String> {
    (transport == Transport::Tls)
        .then(|| name.clone())
        .flatten()
}

/// After each TLS reload: every live TLS connection's certificate is verified again against
/// the configuration now in force; one that would be refused today (revoked, its CA no longer
/// trusted, its gateway no longer configured) is closed.
async fn recheck_loop(
    t: std::sync::Weak<Transports>,
    mut changes: tokio::sync::watch::Receiver<u64>,
) {
    while changes.changed().await.is_ok() {
        let Some(t) = t.upgrade() else { return };
        let Some(ctx) = t.tls.clone() else { return };
        let live: Vec<(ConnId, LiveTls)> = match t.conns.lock() {
            Ok(table) => table.tls.iter().map(|(id, c)| (*id, c.clone())).collect(),
            Err(_) => continue,
        };
        for (id, c) in live {
            if let Err(reason) = ctx.recheck(c.side, &c.chain, c.server_name.as_deref()) {
                warn!(side = c.side.as_str(), remote = %c.remote, conn = id, peer = ?c.identity, %reason, "closing TLS connection: its certificate is no longer accepted");
                crate::stats::TRANSPORT.revoked_closed();
                c.close.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut d = next_backoff(None);
        assert_eq!(d, Duration::from_millis(500));
        let mut seen = vec![d];
        for _ in 0..10 {
            d = next_backoff(Some(d));
            seen.push(d);
        }
        assert_eq!(seen[1], Duration::from_secs(1));
        assert_eq!(seen[2], Duration::from_secs(2));
        assert_eq!(*seen.last().unwrap(), Duration::from_secs(30));
        assert!(seen.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn connection_table_limits() {
        let limits = StreamLimits {
            max_connections: 3,
            max_per_ip: 2,
            idle_timeout: Duration::from_secs(1),
            max_message: 1500,
            message_timeout: Duration::from_secs(1),
            write_queue: 8,
        };
        let mut t = ConnTable::default();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        assert!(t.has_room(&limits, a));
        t.per_ip.insert(a, 2);
        t.total = 2;
        assert!(!t.has_room(&limits, a));
        assert!(t.has_room(&limits, b));
        t.total = 3;
        assert!(!t.has_room(&limits, b));
    }
}
