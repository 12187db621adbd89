//! Fair ingress: the queue between the transports and the proxy core, one lane per peer.
//!
//! A single FIFO lets one peer's flood starve every other peer: under a 20,000 INVITE/s flood
//! from one gateway, the others' requests wait behind (and are dropped with) the flood's. Here
//! every arriving message goes to a lane — a configured peer's own lane (by side and source
//! address, or by verified TLS identity), one lane per side for strangers, and one for the
//! driver's own events (resolver answers, send failures) — and the core takes one message
//! from each non-empty lane in turn (round robin). Each lane is bounded: a full lane drops its
//! newest message (over UDP the sender retransmits; over a stream the connection waits), so a
//! flood costs only its own lane, and memory is bounded by `lanes × capacity`.
//!
//! Lanes exist only while they hold messages; the number of distinct lanes is bounded too
//! (beyond it, new sources share the strangers' lane of their side), so spoofed source
//! addresses cannot grow the table.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::config::Side;
use crate::config::Transport;
use crate::flow::{Flow, Inbound, PeerName};

/// Where a message waits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lane {
    /// A configured peer known by its source address (UDP, TCP).
    Addr(Side, IpAddr),
    /// A peer known by its verified TLS identity.
    Identity(Side, PeerName),
    /// Anything that is no peer of that side: one lane for all of them.
    Stranger(Side),
    /// The driver's own events; never dropped.
    Internal,
}

/// Sizes of the lanes.
#[derive(Debug, Clone, Copy)]
pub struct IngressLimits {
    /// Messages one lane holds; beyond, the newest is dropped.
    pub per_lane: usize,
    /// Lanes at once (besides the strangers' and the internal one).
    pub max_lanes: usize,
}

impl Default for IngressLimits {
    fn default() -> Self {
        IngressLimits {
            per_lane: 1024,
            max_lanes: 1024,
        }
    }
}

#[derive(Default)]
struct LaneQueue {
    queue: VecDeque<Inbound>,
}

struct State {
    lanes: HashMap<Lane, LaneQueue>,
    /// Lanes with messages, in the order they are served.
    ready: VecDeque<Lane>,
    /// Lanes of peers (`Addr`, `Identity`) in `lanes`.
    peer_lanes: usize,
    /// Addresses of the configured peers, by side: their messages get a lane of their own.
    peers: HashSet<(Side, IpAddr)>,
    senders: usize,
    /// The receiver is gone: sends fail.
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    notify: Notify,
    /// Woken when a message leaves a lane (stream readers wait for room).
    space: Notify,
    limits: IngressLimits,
    dropped: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves only queues behind: keep using them.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Puts messages into their lanes (cloned into every receive loop).
pub struct IngressTx {
    shared: Arc<Shared>,
}

/// Takes them out, one lane after the other (the core's driver).
pub struct IngressRx {
    shared: Arc<Shared>,
}

enum Pushed {
    Queued,
    Full,
}

/// A new ingress.
pub fn ingress(limits: IngressLimits) -> (IngressTx, IngressRx) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            lanes: HashMap::new(),
            ready: VecDeque::new(),
            peer_lanes: 0,
            peers: HashSet::new(),
            senders: 1,
            closed: false,
        }),
        notify: Notify::new(),
        space: Notify::new(),
        limits,
        dropped: AtomicU64::new(0),
    });
    (
        IngressTx {
            shared: shared.clone(),
        },
        IngressRx { shared },
    )
}

impl Clone for IngressTx {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        IngressTx {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for IngressTx {
    fn drop(&mut self) {
        let last = {
            let mut st = self.shared.lock();
            st.senders -= 1;
            st.senders == 0
        };
        if last {
            self.shared.notify.notify_one();
        }
    }
}

/// The receiver is gone (the core has stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// The flow a message arrived on, for those events that have one.
fn flow_of(ev: &Inbound) -> Option<&Flow> {
    match ev {
        Inbound::Message(flow, _) | Inbound::Malformed { flow, .. } => Some(flow),
        Inbound::Resolved { .. } | Inbound::SendFailed { .. } => None,
    }
}

impl IngressTx {
    /// Sets the addresses of the configured peers (gateways, the cloud peer, mediation servers
    /// of other sites), replacing the previous set (after a reload).
    pub fn set_peers(&self, peers: impl IntoIterator<Item = (Side, IpAddr)>) {
        self.shared.lock().peers = peers.into_iter().collect();
    }

    /// The lane `ev` waits in: a verified TLS identity's, a configured peer address's, the
    /// strangers' of its side, or the driver's own.
    fn lane_of(&self, st: &State, ev: &Inbound) -> Lane {
        let Some(flow) = flow_of(ev) else {
            return Lane::Internal;
        };
        if let Some(name) = flow.identity {
            return Lane::Identity(flow.side, name);
        }
        let ip = flow.remote.ip();
        if st.peers.contains(&(flow.side, ip)) {
            Lane::Addr(flow.side, ip)
        } else {
            Lane::Stranger(flow.side)
        }
    }

    /// Queues `ev` in its lane. A datagram finding its lane full is dropped and counted (the
    /// sender retransmits); a message read from a stream waits for room, so the connection's
    /// reader — and only that peer's — is held back. Fails once the receiver is gone.
    pub async fn send(&self, ev: Inbound) -> Result<(), Closed> {
        let stream = flow_of(&ev).is_some_and(|f| f.transport != Transport::Udp);
        let mut ev = Some(ev);
        loop {
            let space = self.shared.space.notified();
            {
                let st = self.shared.lock();
                if st.closed {
                    return Err(Closed);
                }
                let Some(e) = ev.as_ref() else {
                    return Ok(());
                };
                let lane = self.lane_of(&st, e);
                drop(st);
                match self.try_push(lane, &mut ev) {
                    Pushed::Queued => return Ok(()),
                    Pushed::Full if !stream => {
                        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    Pushed::Full => {}
                }
            }
            space.await;
        }
    }

    /// Queues `ev` in `lane`; false when that lane is full (the message is dropped and counted).
    pub fn push(&self, lane: Lane, ev: Inbound) -> bool {
        let mut ev = Some(ev);
        match self.try_push(lane, &mut ev) {
            Pushed::Queued => true,
            Pushed::Full => {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Moves `ev` into `lane` unless the lane is full (then `ev` stays).
    fn try_push(&self, lane: Lane, ev: &mut Option<Inbound>) -> Pushed {
        let limits = self.shared.limits;
        {
            let mut st = self.shared.lock();
            let st = &mut *st;
            let lane = match lane {
                Lane::Addr(side, _) | Lane::Identity(side, _) if !st.lanes.contains_key(&lane) => {
                    if st.peer_lanes >= limits.max_lanes {
                        Lane::Stranger(side)
                    } else {
                        st.peer_lanes += 1;
                        lane
                    }
                }
                other => other,
            };
            let internal = lane == Lane::Internal;
            let q = st.lanes.entry(lane.clone()).or_default();
            if !internal && q.queue.len() >= limits.per_lane {
                return Pushed::Full;
            }
            let Some(ev) = ev.take() else {
                return Pushed::Queued;
            };
            if q.queue.is_empty() {
                st.ready.push_back(lane);
            }
            q.queue.push_back(ev);
        }
        self.shared.notify.notify_one();
        Pushed::Queued
    }

    /// The driver's own event (never dropped).
    pub fn push_internal(&self, ev: Inbound) {
        self.push(Lane::Internal, ev);
    }

    /// Messages dropped because their lane was full, since the start.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl IngressRx {
    /// The next message in round-robin order, if any is waiting.
    pub fn try_recv(&mut self) -> Option<Inbound> {
        let mut st = self.shared.lock();
        let st = &mut *st;
        let lane = st.ready.pop_front()?;
        let q = st.lanes.get_mut(&lane)?;
        let ev = q.queue.pop_front();
        if q.queue.is_empty() {
            // Empty lanes go: the table holds only sources with messages waiting.
            st.lanes.remove(&lane);
            if matches!(lane, Lane::Addr(..) | Lane::Identity(..)) {
                st.peer_lanes -= 1;
            }
        } else {
            st.ready.push_back(lane);
        }
        self.shared.space.notify_waiters();
        ev
    }

    /// Waits for the next message; `None` once every sender is gone and nothing is left.
    pub async fn recv(&mut self) -> Option<Inbound> {
        let shared = self.shared.clone();
        loop {
            let notified = shared.notify.notified();
            if let Some(ev) = self.try_recv() {
                return Some(ev);
            }
            if shared.lock().senders == 0 {
                return None;
            }
            notified.await;
        }
    }

    /// Messages dropped because their lane was full, since the start.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Messages waiting, in all lanes.
    pub fn len(&self) -> usize {
        self.shared
            .lock()
            .lanes
            .values()
            .map(|q| q.queue.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for IngressRx {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.space.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(host: &str) -> Inbound {
        Inbound::Resolved {
            host: host.into(),
            ip: None,
        }
    }

    fn host(ev: Inbound) -> String {
        match ev {
            Inbound::Resolved { host, .. } => host,
            other => panic!("{other:?}"),
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn lanes_are_served_in_turn_so_a_flood_cannot_starve_a_peer() {
        let (tx, mut rx) = ingress(IngressLimits {
            per_lane: 100,
            max_lanes: 8,
        });
        for i in 0..100 {
            assert!(tx.push(Lane::Addr(Side::Gateway, ip(5)), ev(&format!("flood{i}"))));
        }
        // The flood's lane is full: the newest is dropped and counted.
        assert!(!tx.push(Lane::Addr(Side::Gateway, ip(5)), ev("flood-extra")));
        assert_eq!(tx.dropped(), 1);
        assert!(tx.push(Lane::Addr(Side::Gateway, ip(2)), ev("gw1-a")));
        assert!(tx.push(Lane::Addr(Side::Gateway, ip(2)), ev("gw1-b")));
        assert!(tx.push(Lane::Addr(Side::Cloud, ip(3)), ev("cloud")));
        // gw1 and the cloud peer wait behind one flood message each, not behind 100.
        let order: Vec<String> = (0..6).map(|_| host(rx.try_recv().unwrap())).collect();
        assert_eq!(
            order,
            ["flood0", "gw1-a", "cloud", "flood1", "gw1-b", "flood2"]
        );
        assert_eq!(rx.len(), 97);
    }

    #[test]
    fn the_lane_table_is_bounded_and_empty_lanes_go() {
        let (tx, mut rx) = ingress(IngressLimits {
            per_lane: 4,
            max_lanes: 2,
        });
        for last in 10..200u8 {
            tx.push(Lane::Addr(Side::Gateway, ip(last)), ev("spoofed"));
        }
        // Beyond the bound, new sources share the strangers' lane (bounded as any lane).
        let st = rx.shared.lock();
        assert_eq!(
            st.lanes.len(),
            3,
            "two peers' lanes and the strangers' lane"
        );
        assert_eq!(st.peer_lanes, 2);
        drop(st);
        assert_eq!(
            rx.len(),
            2 + 4,
            "one message in each peer lane, the strangers' lane full"
        );
        while rx.try_recv().is_some() {}
        assert!(rx.shared.lock().lanes.is_empty());
        assert!(rx.shared.lock().ready.is_empty());
        assert_eq!(rx.shared.lock().peer_lanes, 0);
    }

    #[test]
    fn internal_events_are_never_dropped() {
        let (tx, mut rx) = ingress(IngressLimits {
            per_lane: 1,
            max_lanes: 1,
        });
        for i in 0..10 {
            tx.push_internal(ev(&format!("r{i}")));
        }
        assert_eq!(tx.dropped(), 0);
        assert_eq!(rx.len(), 10);
        assert_eq!(host(rx.try_recv().unwrap()), "r0");
    }

    #[test]
    fn recv_wakes_on_a_message_and_ends_when_the_senders_are_gone() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, mut rx) = ingress(IngressLimits::default());
            let tx2 = tx.clone();
            let task = tokio::spawn(async move {
                tokio::task::yield_now().await;
                tx2.push(Lane::Stranger(Side::Cloud), ev("late"));
            });
            assert_eq!(host(rx.recv().await.unwrap()), "late");
            task.await.unwrap();
            drop(tx);
            assert!(rx.recv().await.is_none());
        });
    }

    fn msg(side: Side, transport: Transport, from: u8) -> Inbound {
        let flow = Flow {
            side,
            transport,
            local: "127.0.0.1:5068".parse().unwrap(),
            remote: std::net::SocketAddr::new(ip(from), 5060),
            conn: None,
            identity: None,
        };
        Inbound::Malformed {
            flow,
            bytes: bytes::Bytes::from_static(b"x"),
            response: None,
            reason: format!("from {from}"),
        }
    }

    fn reason(ev: Inbound) -> String {
        match ev {
            Inbound::Malformed { reason, .. } => reason,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn send_gives_configured_peers_their_own_lane_and_drops_only_the_flood() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, mut rx) = ingress(IngressLimits {
                per_lane: 10,
                max_lanes: 8,
            });
            tx.set_peers([(Side::Gateway, ip(2)), (Side::Gateway, ip(5))]);
            // gw2 (127.0.0.5) floods over UDP: its lane fills and the rest is dropped.
            for _ in 0..50 {
                tx.send(msg(Side::Gateway, Transport::Udp, 5))
                    .await
                    .unwrap();
            }
            assert_eq!(tx.dropped(), 40);
            // A stranger on the gateway side, and gw1: each in its own lane.
            tx.send(msg(Side::Gateway, Transport::Udp, 9))
                .await
                .unwrap();
            tx.send(msg(Side::Gateway, Transport::Udp, 2))
                .await
                .unwrap();
            tx.send(Inbound::Resolved {
                host: "x".into(),
                ip: None,
            })
            .await
            .unwrap();
            let first: Vec<String> = (0..3).map(|_| reason(rx.try_recv().unwrap())).collect();
            assert_eq!(first, ["from 5", "from 9", "from 2"]);
            assert!(matches!(rx.try_recv(), Some(Inbound::Resolved { .. })));
            // The peer's address on the other side is a stranger there.
            tx.send(msg(Side::Cloud, Transport::Udp, 2)).await.unwrap();
            let st = rx.shared.lock();
            assert!(st.lanes.contains_key(&Lane::Stranger(Side::Cloud)));
        });
    }

    #[test]
    fn a_stream_reader_waits_for_room_instead_of_losing_a_message() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, mut rx) = ingress(IngressLimits {
                per_lane: 2,
                max_lanes: 8,
            });
            tx.set_peers([(Side::Gateway, ip(2))]);
            let reader = tokio::spawn(async move {
                for _ in 0..5 {
                    tx.send(msg(Side::Gateway, Transport::Tcp, 2))
                        .await
                        .unwrap();
                }
                tx
            });
            let mut got = 0;
            while got < 5 {
                match rx.try_recv() {
                    Some(_) => got += 1,
                    None => tokio::task::yield_now().await,
                }
            }
            let tx = reader.await.unwrap();
            assert_eq!(tx.dropped(), 0, "nothing read from a stream is dropped");
            // Once the core is gone, a waiting reader gets an error instead of hanging.
            drop(rx);
            assert_eq!(
                tx.send(msg(Side::Gateway, Transport::Tcp, 2)).await,
                Err(Closed)
            );
        });
    }
}
