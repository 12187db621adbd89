//! Attacks on the transports and TLS of the running appliance (issue 9), one test each, on
//! the wire: a certificate from one gateway's CA naming another gateway, a foreign CA vouching
//! for the cloud peer (inbound and on our outbound connection), 300 stalled handshakes from one
//! address against gw1's mutual TLS and our outbound cloud connection, plain TCP from an
//! address that is no peer, a slow sender, a revoked gateway's live connection, and an ICMP
//! port-unreachable on a UDP send. Every certificate is issued in the test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

mod common;
#[path = "common/tls_support.rs"]
mod tls_support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{header, rand_u64, Agent, Lab};
use rustls::ClientConfig;
use sipedge::pki::tls::{client_config, server_config_cloud_side, server_name};
use sipedge::pki::{CaStore, IssueRequest, KeyType, NamePolicy, RevokeReason, RevokeTarget};
use tls_support::{
    cloud_peer, invite, material_in, next_seen, options_tls, tls_cloud_config, wait_log, LabPki,
    SipConn,
};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const GW_TLS: &str = "127.0.0.1:5067";
const CLOUD_TLS: &str = "127.0.0.1:5061";

/// A CA of the test's own (a gateway vendor's), outside the appliance.
struct Vendor {
    store: CaStore,
    out: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Vendor {
    fn new() -> Vendor {
        let dir = tempfile::tempdir().unwrap();
        let store = CaStore::init(dir.path().join("state"), KeyType::EcdsaP256, 30, false).unwrap();
        Vendor {
            store,
            out: dir.path().join("out"),
            _dir: dir,
        }
    }
    fn issue(&self, name: &str) {
        let mut req = IssueRequest::new(name, &self.out);
        req.force = true;
        self.store.issue(&NamePolicy::default(), &req).unwrap();
    }
    fn root(&self) -> String {
        self.store.root_cert_path().display().to_string()
    }
}

/// gw1's own `trust`: the vendor's CA.
fn gw1_trusts(cfg: String, vendor_root: &str) -> String {
    cfg.replacen(
        "name = \"gw1.lab.example\"\nport = 5060\ntransport = \"udp\"\nsite = \"lab\"",
        &format!(
            "name = \"gw1.lab.example\"\nport = 5060\ntransport = \"udp\"\nsite = \"lab\"\ntrust = [\"{vendor_root}\"]"
        ),
        1,
    )
}

/// A TCP connection from `src` (a loopback address) to `dst`.
async fn tcp_from(src: &str, dst: &str) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(format!("{src}:0").parse().unwrap())?;
    s.connect(dst.parse().unwrap()).await
}

async fn tls_from(
    src: &str,
    dst: &str,
    sni: &str,
    client: Arc<ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = tcp_from(src, dst).await?;
    tokio_rustls::TlsConnector::from(client)
        .connect(server_name(sni).unwrap(), tcp)
        .await
}

/// OPTIONS over a fresh TLS connection; `Ok(response)` or `Err(why)`.
async fn tls_options(
    src: &str,
    dst: &str,
    sni: &str,
    client: Arc<ClientConfig>,
) -> Result<String, String> {
    let tls = tls_from(src, dst, sni, client)
        .await
        .map_err(|e| e.to_string())?;
    let mut c = SipConn::new(tls);
    c.send(&options_tls("gw.test"))
        .await
        .map_err(|e| e.to_string())?;
    c.recv(Duration::from_secs(5)).await
}

/// Has the peer closed `s` within `t` (EOF or error, before any byte)?
async fn closed_within(s: &mut TcpStream, t: Duration) -> bool {
    let mut buf = [0u8; 256];
    matches!(
        tokio::time::timeout(t, s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// A certificate issued by gw1's vendor CA (configured as gw1's own `trust`) that names gw2 is
/// refused as gw2; the same CA's certificate for gw1 is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_gateway_certificate_is_refused() {
    let vendor = Vendor::new();
    vendor.issue("gw1.lab.example");
    vendor.issue("gw2.lab.example");
    let root = vendor.root();
    let lab = Lab::start_with(|t| gw1_trusts(t, &root));
    let pki = LabPki::of(&lab);
    let client = |name: &str| client_config(material_in(&vendor.out, name), pki.trust()).unwrap();

    let ok = tls_options(
        "127.0.0.2",
        GW_TLS,
        "mediation.lab.example",
        client("gw1.lab.example"),
    )
    .await
    .expect("gw1's certificate from its own CA");
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");

    let r = tls_options(
        "127.0.0.5",
        GW_TLS,
        "mediation.lab.example",
        client("gw2.lab.example"),
    )
    .await;
    assert!(r.is_err(), "gw2 by gw1's CA accepted: {r:?}");
    assert!(
        wait_log(
            &lab,
            "certificate for gw2.lab.example is issued by a CA trusted only for another gateway",
            Duration::from_secs(3)
        )
        .await,
        "{}",
        lab.log_text()
    );
}

/// gw1's vendor CA cannot vouch for the cloud peer: its certificate for sip.cloud.lab.example is
/// refused on 5061, and a cloud peer presenting it is refused on our outbound connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_ca_cannot_vouch_for_the_cloud_peer() {
    let vendor = Vendor::new();
    vendor.issue("sip.cloud.lab.example");
    let root = vendor.root();
    let lab = Lab::start_with(|t| tls_cloud_config(gw1_trusts(t, &root)));
    let pki = LabPki::of(&lab);

    // Inbound on 5061.
    let forged = client_config(
        material_in(&vendor.out, "sip.cloud.lab.example"),
        pki.trust(),
    )
    .unwrap();
    let r = tls_options("127.0.0.3", CLOUD_TLS, "ap.lab.example", forged).await;
    assert!(r.is_err(), "the vendor's cloud certificate accepted: {r:?}");
    assert!(
        wait_log(
            &lab,
            "cloud peer certificate refused",
            Duration::from_secs(3)
        )
        .await,
        "{}",
        lab.log_text()
    );

    // Outbound: the "cloud peer" on 127.0.0.3:5071 presents the vendor's certificate.
    let server = server_config_cloud_side(
        material_in(&vendor.out, "sip.cloud.lab.example"),
        pki.trust(),
        vec!["ap.lab.example".into()],
    )
    .unwrap();
    let lis = TcpListener::bind("127.0.0.3:5071").await.unwrap();
    let handshakes = tokio::spawn(async move {
        let mut completed = 0;
        while let Ok(Ok((tcp, _))) =
            tokio::time::timeout(Duration::from_secs(8), lis.accept()).await
        {
            if tokio_rustls::TlsAcceptor::from(server.clone())
                .accept(tcp)
                .await
                .is_ok()
            {
                completed += 1;
            }
        }
        completed
    });
    pki.issue("gw1.lab.example");
    let tls = tls_from(
        "127.0.0.2",
        GW_TLS,
        "mediation.lab.example",
        pki.client("gw1.lab.example"),
    )
    .await
    .expect("gw1 handshake");
    let mut gw = SipConn::new(tls);
    let call_id = format!("forged-{}", rand_u64());
    gw.send(&invite(&call_id)).await.unwrap();
    let fin = loop {
        let m = gw
            .recv(Duration::from_secs(10))
            .await
            .expect("a final response");
        if m.starts_with("SIP/2.0 ") && !m.starts_with("SIP/2.0 1") {
            break m;
        }
    };
    assert!(
        !fin.starts_with("SIP/2.0 2"),
        "the call went through: {fin}"
    );
    assert!(header(&fin, "Call-ID") == Some(call_id.as_str()), "{fin}");
    assert!(
        wait_log(
            &lab,
            "TLS handshake with sip.cloud.lab.example failed: issuer unknown",
            Duration::from_secs(3)
        )
        .await,
        "{}",
        lab.log_text()
    );
    assert_eq!(
        handshakes.await.unwrap(),
        0,
        "a handshake with the forged peer completed"
    );
}

/// 300 bare TCP connects to 5067 from one address, never sending a ClientHello: gw1's mutual-TLS
/// handshake still succeeds and its call goes out over our outbound TLS connection to the
/// cloud peer (whose handshake has its own budget).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_lock_out_neither_gw1_nor_the_outbound_cloud_connection() {
    let lab = Lab::start_with(tls_cloud_config);
    let pki = LabPki::of(&lab);
    pki.issue("gw1.lab.example");
    pki.issue("sip.cloud.lab.example");
    let peer_cfg = server_config_cloud_side(
        pki.material("sip.cloud.lab.example"),
        pki.trust(),
        vec!["ap.lab.example".into()],
    )
    .unwrap();
    let lis = TcpListener::bind("127.0.0.3:5071").await.unwrap();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let peer = tokio::spawn(cloud_peer(lis, peer_cfg, seen_tx));

    // The attack: 300 stalled handshakes on each TLS listener, all from 127.0.0.9, held open.
    let mut stalled = Vec::new();
    for dst in [GW_TLS, CLOUD_TLS] {
        for _ in 0..300 {
            if let Ok(s) = tcp_from("127.0.0.9", dst).await {
                stalled.push(s);
            }
        }
    }
    assert!(stalled.len() >= 500, "{} connects", stalled.len());
    assert!(
        wait_log(
            &lab,
            "too many handshakes in progress from this address",
            Duration::from_secs(3)
        )
        .await,
        "{}",
        lab.log_text()
    );

    let started = Instant::now();
    let tls = tls_from(
        "127.0.0.2",
        GW_TLS,
        "mediation.lab.example",
        pki.client("gw1.lab.example"),
    )
    .await
    .expect("gw1's handshake during the attack");
    let mut gw = SipConn::new(tls);
    let call_id = format!("stall-{}", rand_u64());
    gw.send(&invite(&call_id)).await.unwrap();
    assert_eq!(
        next_seen(&mut seen, "CLIENT-CERT").await,
        "CLIENT-CERT ap.lab.example"
    );
    next_seen(&mut seen, "INVITE").await;
    let ok = gw.expect("200").await;
    assert!(
        header(&ok, "CSeq").is_some_and(|c| c.contains("INVITE")),
        "{ok}"
    );
    // Well within one handshake timeout (10 s): nobody waited for a slot.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(stalled);
    peer.abort();
}

/// Plain TCP: identity is the source address, so a connection from an address that is no
/// configured peer of that side is closed at once; a gateway's own address still gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_from_a_non_peer_is_closed_at_once() {
    let lab = Lab::start();
    for (src, dst) in [
        ("127.0.0.9", "127.0.0.1:5068"),
        // gw1's address is no peer of the cloud side.
        ("127.0.0.2", "127.0.0.1:5062"),
    ] {
        let mut s = tcp_from(src, dst).await.expect("connect");
        assert!(
            closed_within(&mut s, Duration::from_secs(1)).await,
            "{src} → {dst} stayed open"
        );
    }
    // gw1 over TCP: answered.
    let mut s = tcp_from("127.0.0.2", "127.0.0.1:5068")
        .await
        .unwrap()
        .into_std()
        .unwrap();
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let local = s.local_addr().unwrap();
    s.write_all(options_tcp(local).as_bytes()).unwrap();
    let mut buf = [0u8; 2048];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200"));
    let metrics = lab.log_text();
    assert!(!metrics.contains("panicked"), "{metrics}");
}

fn options_tcp(local: SocketAddr) -> String {
    let n = rand_u64();
    format!(
        "OPTIONS sip:mediation.lab.example SIP/2.0\r\nVia: SIP/2.0/TCP {local};branch=z9hG4bK-t{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:t@{local}>;tag={n}\r\nTo: <sip:mediation.lab.example>\r\n\
         Call-ID: t{n}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A sender that trickles its header (one byte every 200 ms), or whose body never completes,
/// is dropped at the whole-message deadline (`limits.message_timeout_ms`), long before the
/// idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_sender_is_dropped_at_the_message_deadline() {
    let lab = Lab::start_with(|t| {
        t.replace(
            "tcp_idle_timeout_s = 600",
            "tcp_idle_timeout_s = 600\nmessage_timeout_ms = 1500",
        )
    });
    // Header trickled byte by byte: each byte would reset an idle timer, not this deadline.
    let mut s = tcp_from("127.0.0.2", "127.0.0.1:5068").await.unwrap();
    let local = s.local_addr().unwrap();
    let text = options_tcp(local);
    let started = Instant::now();
    let mut closed_at = None;
    for b in text.as_bytes().iter().take(100) {
        use tokio::io::AsyncWriteExt;
        if s.write_all(&[*b]).await.is_err() {
            closed_at = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
            closed_at = Some(started.elapsed());
            break;
        }
    }
    let took = closed_at.expect("the trickling sender was not dropped");
    assert!(
        took >= Duration::from_millis(1300) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // A body that never completes.
    let mut s = tcp_from("127.0.0.2", "127.0.0.1:5068").await.unwrap();
    let local = s.local_addr().unwrap();
    let text = options_tcp(local).replace("Content-Length: 0", "Content-Length: 500") + "v=0\r\n";
    use tokio::io::AsyncWriteExt;
    s.write_all(text.as_bytes()).await.unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(4)).await);
    assert!(started.elapsed() >= Duration::from_millis(1300));
    assert!(
        wait_log(
            &lab,
            "message not complete within the deadline",
            Duration::from_secs(1)
        )
        .await,
        "{}",
        lab.log_text()
    );
}

/// gw1 is connected over mutual TLS; its certificate is revoked: the appliance picks the new
/// CRL up and closes gw1's live connection (it does not wait for gw1 to reconnect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_gateways_live_connection_is_closed() {
    let lab = Lab::start();
    let pki = LabPki::of(&lab);
    pki.issue("gw1.lab.example");
    let tls = tls_from(
        "127.0.0.2",
        GW_TLS,
        "mediation.lab.example",
        pki.client("gw1.lab.example"),
    )
    .await
    .expect("gw1 handshake");
    let mut gw = SipConn::new(tls);
    gw.send(&options_tls("gw1.lab.example")).await.unwrap();
    gw.expect("200").await;
    pki.store
        .revoke(
            &RevokeTarget::Name("gw1.lab.example".into()),
            RevokeReason::KeyCompromise,
        )
        .unwrap();
    let r = gw.recv(Duration::from_secs(8)).await;
    assert!(
        r.as_ref().is_err_and(|e| e != "timeout"),
        "the connection stayed open: {r:?}"
    );
    assert!(
        wait_log(
            &lab,
            "closing TLS connection: its certificate is no longer accepted",
            Duration::from_secs(1)
        )
        .await,
        "{}",
        lab.log_text()
    );
    // And gw1 cannot come back with it.
    assert!(tls_options(
        "127.0.0.2",
        GW_TLS,
        "mediation.lab.example",
        pki.client("gw1.lab.example")
    )
    .await
    .is_err());
}

/// The cloud peer calls a number served by gw1 (first) and gw2; nobody listens on gw1's UDP
/// port: the ICMP port-unreachable fails gw1's branch and gw2 gets the call long before the
/// failover timer (30 s here, so that only ICMP can explain an early failover). The kernel may
/// rate-limit ICMP under load, in which case a retransmission of the INVITE (0.5, 1.5, 3.5 s)
/// draws it: the bound allows for that.
#[test]
fn icmp_unreachable_fails_over_at_once() {
    let _lab = Lab::start_with(|c| {
        c.replace(
            "name = \"gw2.lab.example\"\nport = 5060",
            "name = \"gw2.lab.example\"\npriority = 1\nport = 5060",
        )
        .replace("failover_timer_s = 10", "failover_timer_s = 30")
    });
    let peer = Agent::bind("127.0.0.3:5060");
    let gw2 = Agent::bind("127.0.0.5:5060");
    let a = peer.addr();
    let n = rand_u64();
    let ruri = "sip:+14255550199@ap.lab.example;user=phone";
    let text = format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bK-icmp-{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:anonymous@anonymous.invalid>;tag=f{n}\r\nTo: <{ruri}>\r\n\
         Call-ID: icmp-{n}@test\r\nCSeq: 1 INVITE\r\n\
         P-Asserted-Identity: <sip:alice@lab.example>\r\nContact: <sip:x@{a}>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let started = Instant::now();
    peer.send_to(text.as_bytes(), "127.0.0.1:5062");
    let deadline = started + Duration::from_secs(10);
    let mut got = None;
    while Instant::now() < deadline {
        if let Some((m, _)) = gw2.recv_timeout(Duration::from_millis(200)) {
            let s = String::from_utf8_lossy(&m).into_owned();
            if s.starts_with("INVITE ") {
                got = Some(started.elapsed());
                break;
            }
        }
    }
    let took = got.expect("gw2 never got the call (before 10 s; the failover timer is 30 s)");
    assert!(took < Duration::from_secs(8), "failover took {took:?}");
}
