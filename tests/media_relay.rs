//! End-to-end relay tests on 127.0.0.1 with real UDP sockets: a "gateway"
//! socket on leg A (plain RTP) and a "peer" socket on leg B (SRTP), the peer
//! owning its own rtc-srtp contexts built from the signalled keys.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

#[path = "common/srtp_oracle.rs"]
mod srtp_oracle;

use rtc_srtp::context::Context;
use sipedge::media::{
    generate_key_salt, IoMode, Leg, LegConfig, MediaError, MediaSession, PortPool, Relay,
    RelayConfig, SessionState, SrtpParams, SrtpSuite,
};
use srtp_oracle::new_context;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn rtp(ssrc: u32, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq).wrapping_mul(160)).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn payload(i: u16) -> Vec<u8> {
    (0..160u16).map(|k| (k ^ i) as u8).collect()
}

fn sock(ip: IpAddr) -> UdpSocket {
    let s = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    s
}

fn recv(s: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 2048];
    let (n, _) = s.recv_from(&mut buf).expect("packet relayed in time");
    buf[..n].to_vec()
}

/// Polls `f` until true or 3 s elapse.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(3);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    f()
}

struct Call {
    session: MediaSession,
    gateway: UdpSocket,
    peer: UdpSocket,
    /// Peer's inbound context (the relay's local key).
    peer_rx: Context,
    /// Peer's outbound context (the peer's key).
    peer_tx: Context,
}

fn setup(relay: &Relay, pool: &PortPool, suite: SrtpSuite) -> Call {
    let mut session = MediaSession::new(
        relay,
        pool,
        LegConfig {
            ip: LO,
            rtcp_mux: false,
        },
        LegConfig {
            ip: LO,
            rtcp_mux: true,
        },
    )
    .expect("session");
    let gateway = sock(LO);
    let peer = sock(LO);
    session
        .set_remote(Leg::A, gateway.local_addr().expect("a"), None)
        .expect("remote a");
    session
        .set_remote(Leg::B, peer.local_addr().expect("b"), None)
        .expect("remote b");
    let (relay_key, peer_key) = (generate_key_salt(), generate_key_salt());
    let rekeyed = session
        .set_srtp(
            Leg::B,
            SrtpParams {
                suite,
                local_key_salt: relay_key,
                remote_key_salt: peer_key,
            },
        )
        .expect("srtp");
    assert!(rekeyed);
    session.commit(Instant::now()).expect("commit");
    Call {
        session,
        gateway,
        peer,
        peer_rx: new_context(suite, &relay_key, true).expect("peer rx"),
        peer_tx: new_context(suite, &peer_key, false).expect("peer tx"),
    }
}

fn relay_both_ways(mode: IoMode, suite: SrtpSuite, base: u16) {
    let relay = Relay::start(RelayConfig {
        workers: 2,
        io_mode: mode,
        batch_size: 16,
    })
    .expect("relay");
    let pool = PortPool::new(base..=base + 19).expect("pool");
    let mut call = setup(&relay, &pool, suite);
    let a = call.session.local(Leg::A);
    let b = call.session.local(Leg::B);
    assert_eq!(a.rtp.port() % 2, 0);
    assert_eq!(a.rtcp.map(|r| r.port()), Some(a.rtp.port() + 1));
    assert_eq!(b.rtcp, None, "leg B is rtcp-mux");

    const N: u16 = 300;
    // Gateway → relay (plain) → peer (SRTP), in bursts of 50 so the
    // receiving socket's default buffer never overflows; order must be kept.
    for burst in 0..N / 50 {
        for i in burst * 50..(burst + 1) * 50 {
            call.gateway
                .send_to(&rtp(0x1111, 1000 + i, &payload(i)), a.rtp)
                .expect("send");
        }
        for i in burst * 50..(burst + 1) * 50 {
            let pkt = recv(&call.peer);
            assert_eq!(pkt.len(), 12 + 160 + suite.rtp_overhead());
            let plain = call.peer_rx.decrypt_rtp(&pkt).expect("peer decrypts");
            assert_eq!(
                &plain[..],
                &rtp(0x1111, 1000 + i, &payload(i))[..],
                "packet {i}"
            );
        }
    }

    // Peer → relay (SRTP) → gateway (plain).
    for burst in 0..N / 50 {
        for i in burst * 50..(burst + 1) * 50 {
            let enc = call
                .peer_tx
                .encrypt_rtp(&rtp(0x2222, 50 + i, &payload(i)))
                .expect("peer encrypts");
            call.peer.send_to(&enc, b.rtp).expect("send");
        }
        for i in burst * 50..(burst + 1) * 50 {
            assert_eq!(
                recv(&call.gateway),
                rtp(0x2222, 50 + i, &payload(i)),
                "packet {i}"
            );
        }
    }

    // SRTCP from the peer (muxed on RTP) → plain RTCP to the gateway's RTP
    // address (the gateway signalled no separate RTCP address).
    let rr = [0x80u8, 201, 0, 1, 0, 0, 0x22, 0x22];
    let enc = call.peer_tx.encrypt_rtcp(&rr).expect("srtcp");
    call.peer.send_to(&enc, b.rtp).expect("send");
    assert_eq!(recv(&call.gateway), rr.to_vec());

    // RTP bleed: a foreign IP, and the right IP from another port after
    // the latch locked on the gateway's port.
    let stranger = sock(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    stranger
        .send_to(&rtp(0x3333, 1, b"bleed"), a.rtp)
        .expect("send");
    let same_ip = sock(LO);
    same_ip
        .send_to(&rtp(0x3333, 2, b"bleed"), a.rtp)
        .expect("send");
    // A replayed SRTP packet from the peer.
    call.peer.send_to(&enc, b.rtp).expect("send replay");
    assert!(eventually(|| {
        let s = call.session.snapshot();
        s.a.counters.drops.foreign_source == 2 && s.b.counters.drops.replay == 1
    }));
    // Nothing of it reached the peer.
    call.peer
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut buf = [0u8; 2048];
    assert!(call.peer.recv_from(&mut buf).is_err(), "bleed was relayed");

    let s = call.session.snapshot();
    assert_eq!(s.state, SessionState::Active);
    assert_eq!(s.a.counters.forwarded, u64::from(N));
    assert_eq!(s.a.counters.rx_packets, u64::from(N) + 2);
    assert_eq!(s.b.counters.forwarded, u64::from(N) + 1);
    assert_eq!(s.b.counters.rtcp_packets, 1);
    assert_eq!(s.b.counters.tx_packets, u64::from(N));
    assert_eq!(
        (s.a.ssrc, s.a.lost, s.a.expected),
        (Some(0x1111), 0, u64::from(N))
    );
    assert_eq!((s.b.ssrc, s.b.lost), (Some(0x2222), 0));
    assert!(s.b.srtp && !s.a.srtp);
    assert!(s.last_activity[0].is_some() && s.last_activity[1].is_some());
    assert!(call.session.idle_since().is_some());
    assert!(!call
        .session
        .is_idle(Instant::now(), Duration::from_secs(60)));

    assert!(call.session.release());
    assert!(!call.session.release(), "second release is a no-op");
    assert_eq!(call.session.snapshot().a.counters.forwarded, u64::from(N));
    assert!(eventually(|| pool.available() == pool.capacity()));
}

#[test]
fn relays_plain_to_srtp_and_back_batched() {
    relay_both_ways(IoMode::Batched, SrtpSuite::Aes128CmSha1_80, 43000);
}

#[test]
fn relays_plain_to_srtp_and_back_single() {
    relay_both_ways(IoMode::Single, SrtpSuite::Aes128CmSha1_32, 43100);
}

#[test]
fn rekey_on_reoffer_and_plain_after_clear() {
    let relay = Relay::start(RelayConfig {
        workers: 1,
        ..RelayConfig::default()
    })
    .expect("relay");
    let pool = PortPool::new(43200..=43219).expect("pool");
    let mut call = setup(&relay, &pool, SrtpSuite::Aes128CmSha1_80);
    let a = call.session.local(Leg::A);

    // Same keys again: no re-key.
    // New keys: re-key; the peer must use the new ones.
    let (rk, pk) = (generate_key_salt(), generate_key_salt());
    let params = SrtpParams {
        suite: SrtpSuite::Aes128CmSha1_80,
        local_key_salt: rk,
        remote_key_salt: pk,
    };
    assert!(call
        .session
        .set_srtp(Leg::B, params.clone())
        .expect("rekey"));
    assert!(!call.session.set_srtp(Leg::B, params).expect("same keys"));
    let mut peer_rx = new_context(SrtpSuite::Aes128CmSha1_80, &rk, true).expect("ctx");
    call.gateway
        .send_to(&rtp(5, 1, b"after rekey"), a.rtp)
        .expect("send");
    let pkt = recv(&call.peer);
    assert_eq!(
        &peer_rx.decrypt_rtp(&pkt).expect("new key")[..],
        &rtp(5, 1, b"after rekey")[..]
    );
    assert!(
        call.peer_rx.decrypt_rtp(&pkt).is_err(),
        "old key no longer valid"
    );

    // Re-offer without crypto: plain both ways.
    call.session.clear_srtp(Leg::B).expect("clear");
    call.gateway
        .send_to(&rtp(5, 2, b"plain"), a.rtp)
        .expect("send");
    assert_eq!(recv(&call.peer), rtp(5, 2, b"plain"));

    // Re-offer moving the peer to a new port: the latch follows.
    let peer2 = sock(LO);
    call.session
        .set_remote(Leg::B, peer2.local_addr().expect("a"), None)
        .expect("remote");
    call.gateway
        .send_to(&rtp(5, 3, b"moved"), a.rtp)
        .expect("send");
    assert_eq!(recv(&peer2), rtp(5, 3, b"moved"));
}

#[test]
fn exhaustion_is_a_typed_error() {
    let relay = Relay::start(RelayConfig {
        workers: 1,
        ..RelayConfig::default()
    })
    .expect("relay");
    let pool = PortPool::new(43300..=43303).expect("pool");
    let cfg = LegConfig {
        ip: LO,
        rtcp_mux: false,
    };
    let s = MediaSession::new(&relay, &pool, cfg, cfg).expect("first");
    assert!(matches!(
        MediaSession::new(&relay, &pool, cfg, cfg),
        Err(MediaError::PortsExhausted)
    ));
    drop(s);
    assert!(eventually(|| pool.available() == 2));
    assert!(MediaSession::new(&relay, &pool, cfg, cfg).is_ok());
}

#[test]
fn thousand_sessions_return_every_port() {
    let relay = Relay::start(RelayConfig {
        workers: 2,
        ..RelayConfig::default()
    })
    .expect("relay");
    let pool = PortPool::new(43400..=43499).expect("pool");
    assert_eq!(pool.capacity(), 50);
    let gw = sock(LO);
    let cfg_a = LegConfig {
        ip: LO,
        rtcp_mux: false,
    };
    let cfg_b = LegConfig {
        ip: LO,
        rtcp_mux: true,
    };
    let mut live = Vec::new();
    for i in 0..1000u16 {
        let mut s = MediaSession::new(&relay, &pool, cfg_a, cfg_b).expect("session");
        s.set_remote(Leg::A, gw.local_addr().expect("a"), None)
            .expect("remote");
        s.set_remote(Leg::B, gw.local_addr().expect("a"), None)
            .expect("remote");
        // Some traffic while sessions come and go.
        if i % 10 == 0 {
            let _ = gw.send_to(&rtp(1, i, b"x"), s.local(Leg::A).rtp);
        }
        live.push(s);
        if live.len() == 20 {
            for mut s in live.drain(..) {
                assert!(s.release());
            }
        }
    }
    drop(live);
    assert!(
        eventually(|| pool.available() == pool.capacity()),
        "ports leaked: {} of {} free",
        pool.available(),
        pool.capacity()
    );
}
