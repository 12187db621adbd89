//! TLS against the running appliance: the gateway-side negative matrix on 127.0.0.1:5067, a call
//! over TLS end to end (gateway → 5067 → proxy → cloud peer over TLS), and a certificate
//! replaced while a call is up. Every certificate is issued in the test by our `pki` module,
//! from the CA the appliance created in its state directory at start.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{header, rand_u64, Lab};
use rustls::pki_types::CertificateDer;
use rustls::ClientConfig;
use sipedge::pki::tls::{
    client_config, server_config_cloud_side, server_name, TlsMaterial, TrustAnchors,
};
use sipedge::pki::{
    show_cert, show_cert_bytes, CaStore, IssueRequest, KeyType, NamePolicy, RevokeReason,
    RevokeTarget,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const GW_TLS: &str = "127.0.0.1:5067";

/// The appliance's CA, opened from the lab's state directory, and a place for issued files.
struct LabPki {
    store: CaStore,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl LabPki {
    fn of(lab: &Lab) -> LabPki {
        let store = CaStore::open(lab.dir.path().join("state"));
        assert!(
            store.is_initialised(),
            "the appliance created its CA at start"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        LabPki {
            store,
            out: dir.path().to_path_buf(),
            _dir: dir,
        }
    }

    fn issue(&self, name: &str) -> String {
        let mut req = IssueRequest::new(name, &self.out);
        req.force = true;
        self.store
            .issue(&NamePolicy::default(), &req)
            .expect("issue")
            .serial
    }

    fn material(&self, name: &str) -> TlsMaterial {
        material_in(&self.out, name)
    }

    fn trust(&self) -> TrustAnchors {
        TrustAnchors::from_pem_file(&self.store.root_cert_path()).expect("trust")
    }

    fn client(&self, name: &str) -> Arc<ClientConfig> {
        client_config(self.material(name), self.trust()).expect("client config")
    }
}

fn material_in(dir: &Path, name: &str) -> TlsMaterial {
    TlsMaterial::from_pem_files(
        &dir.join(format!("{name}.chain.pem")),
        &dir.join(format!("{name}.key")),
        None,
    )
    .expect("material")
}

/// A SIP connection over a byte stream (TLS here): writes messages, reads framed ones.
struct SipConn<S> {
    rd: BufReader<tokio::io::ReadHalf<S>>,
    wr: tokio::io::WriteHalf<S>,
}

impl<S: AsyncRead + AsyncWrite> SipConn<S> {
    fn new(s: S) -> Self {
        let (rd, wr) = tokio::io::split(s);
        SipConn {
            rd: BufReader::new(rd),
            wr,
        }
    }

    async fn send(&mut self, msg: &str) -> std::io::Result<()> {
        self.wr.write_all(msg.as_bytes()).await?;
        self.wr.flush().await
    }

    /// One message (head and body by Content-Length); `Err` on EOF, error or timeout.
    async fn recv(&mut self, t: Duration) -> Result<String, String> {
        tokio::time::timeout(t, async {
            let mut head = String::new();
            loop {
                let mut line = String::new();
                let n = self
                    .rd
                    .read_line(&mut line)
                    .await
                    .map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("connection closed".to_string());
                }
                if line == "\r\n" && head.is_empty() {
                    continue; // keepalive
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let len: usize = header(&head, "Content-Length")
                .or_else(|| header(&head, "l"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            self.rd
                .read_exact(&mut body)
                .await
                .map_err(|e| e.to_string())?;
            head.push_str(&String::from_utf8_lossy(&body));
            Ok(head)
        })
        .await
        .map_err(|_| "timeout".to_string())?
    }

    /// The next message whose first line contains `needle` (others are skipped).
    async fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self
                .recv(left)
                .await
                .unwrap_or_else(|e| panic!("waiting for {needle:?}: {e}"));
            if m.lines().next().unwrap_or("").contains(needle) {
                return m;
            }
        }
    }
}

async fn connect_gw(
    client: Arc<ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(GW_TLS).await?;
    tokio_rustls::TlsConnector::from(client)
        .connect(server_name("mediation.lab.example").expect("name"), tcp)
        .await
}

fn options_tls(from: &str) -> String {
    let n = rand_u64();
    format!(
        "OPTIONS sip:mediation.lab.example:5067;transport=tls SIP/2.0\r\n\
         Via: SIP/2.0/TLS {from}:5061;branch=z9hG4bK-o{n}\r\nMax-Forwards: 70\r\n\
         From: <sip:ping@{from}>;tag={n}\r\nTo: <sip:mediation.lab.example>\r\n\
         Call-ID: o{n}@{from}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Connects with `client`, sends OPTIONS; `Ok(response)` or `Err(why)`.
async fn try_options(client: Arc<ClientConfig>) -> Result<String, String> {
    let tls = connect_gw(client).await.map_err(|e| e.to_string())?;
    let mut c = SipConn::new(tls);
    // With TLS 1.3 a refused client certificate shows on the first read (the server's alert).
    c.send(&options_tls("gw.test"))
        .await
        .map_err(|e| e.to_string())?;
    c.recv(Duration::from_secs(5)).await
}

async fn wait_log(lab: &Lab, needle: &str, t: Duration) -> bool {
    wait_log_count(lab, needle, 1, t).await
}

/// Waits until `needle` occurs at least `n` times in the appliance log.
async fn wait_log_count(lab: &Lab, needle: &str, n: usize, t: Duration) -> bool {
    let deadline = Instant::now() + t;
    while Instant::now() < deadline {
        if lab.log_text().matches(needle).count() >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_side_negative_matrix() {
    let lab = Lab::start();
    let pki = LabPki::of(&lab);

    // Accepted: gw1 of our site, and its OPTIONS answered.
    pki.issue("gw1.lab.example");
    let ok = try_options(pki.client("gw1.lab.example"))
        .await
        .expect("gw1 accepted");
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(
        header(&ok, "Contact").is_some_and(
            |c| c.contains("transport=tls") && c.contains("mediation.lab.example:5067")
        ),
        "{ok}"
    );
    assert!(wait_log(&lab, "TLS peer authenticated", Duration::from_secs(2)).await);

    // No client certificate.
    let anon = Arc::new(
        ClientConfig::builder_with_provider(sipedge::pki::tls::crypto_provider(false))
            .with_protocol_versions(sipedge::pki::tls::PROTOCOL_VERSIONS)
            .expect("versions")
            .with_root_certificates({
                let mut r = rustls::RootCertStore::empty();
                r.add(pki.store.root_cert_der().expect("root"))
                    .expect("add");
                r
            })
            .with_no_client_auth(),
    );
    let mut cases: Vec<(&str, Arc<ClientConfig>, &str)> = vec![(
        "no client certificate",
        anon,
        "no client certificate presented",
    )];

    // A rogue CA's certificate for gw1.
    let rogue_dir = tempfile::tempdir().expect("tempdir");
    let rogue = CaStore::init(
        rogue_dir.path().join("state"),
        KeyType::EcdsaP256,
        30,
        false,
    )
    .expect("rogue CA");
    let mut req = IssueRequest::new("gw1.lab.example", rogue_dir.path().join("out"));
    req.force = true;
    rogue
        .issue(&NamePolicy::default(), &req)
        .expect("rogue issue");
    let rogue_client = client_config(
        material_in(&rogue_dir.path().join("out"), "gw1.lab.example"),
        pki.trust(),
    )
    .expect("cfg");
    cases.push(("rogue CA", rogue_client, "issuer unknown"));

    // Revoked: gw2 issued, then revoked; the appliance picks the fresh CRL up by itself.
    pki.issue("gw2.lab.example");
    let reloads = lab.log_text().matches("TLS configuration reloaded").count();
    pki.store
        .revoke(
            &RevokeTarget::Name("gw2.lab.example".into()),
            RevokeReason::KeyCompromise,
        )
        .expect("revoke");
    assert!(
        wait_log_count(
            &lab,
            "TLS configuration reloaded",
            reloads + 1,
            Duration::from_secs(6)
        )
        .await,
        "the CRL change was not picked up:\n{}",
        lab.log_text()
    );
    cases.push((
        "revoked",
        pki.client("gw2.lab.example"),
        "certificate revoked",
    ));

    // Expired (a past validity window).
    let now = time::OffsetDateTime::now_utc();
    let exp_dir = tempfile::tempdir().expect("tempdir");
    let mut req = IssueRequest::new("gw2.lab.example", exp_dir.path());
    req.force = true;
    req.validity = Some((
        now - time::Duration::days(400),
        now - time::Duration::days(35),
    ));
    pki.store
        .issue(&NamePolicy::default(), &req)
        .expect("expired");
    let expired =
        client_config(material_in(exp_dir.path(), "gw2.lab.example"), pki.trust()).expect("cfg");
    cases.push(("expired", expired, "expired"));

    // Another site's gateway.
    pki.issue("gw1.remote.example");
    cases.push((
        "other site",
        pki.client("gw1.remote.example"),
        "gw1.remote.example belongs to site remote; this appliance serves site lab",
    ));

    // A name no gateway is configured with.
    pki.issue("gw9.lab.example");
    cases.push((
        "unconfigured name",
        pki.client("gw9.lab.example"),
        "no configured gateway named gw9.lab.example",
    ));

    for (label, client, reason) in cases {
        let r = try_options(client).await;
        assert!(r.is_err(), "{label}: accepted: {r:?}");
        assert!(
            wait_log(&lab, reason, Duration::from_secs(3)).await,
            "{label}: no {reason:?} in the log:\n{}",
            lab.log_text()
        );
        eprintln!("{label}: refused ({reason})");
    }
    assert!(lab.log_text().contains("TLS handshake refused"));

    // A TLS 1.1 client (OpenSSL; rustls cannot speak it) holding gw1's valid certificate.
    let out = pki.out.clone();
    let tls11 = tokio::task::spawn_blocking(move || {
        Command::new("openssl")
            .args(["s_client", "-connect", GW_TLS, "-tls1_1"])
            .args(["-cipher", "DEFAULT:@SECLEVEL=0"])
            .arg("-cert")
            .arg(out.join("gw1.lab.example.crt"))
            .arg("-key")
            .arg(out.join("gw1.lab.example.key"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    })
    .await
    .expect("join");
    if let Ok(st) = tls11 {
        assert!(!st.success(), "a TLS 1.1 handshake succeeded");
        assert!(
            wait_log(&lab, "older than TLS 1.2", Duration::from_secs(3)).await,
            "{}",
            lab.log_text()
        );
    }

    // gw1 still works after all that.
    let again = try_options(pki.client("gw1.lab.example")).await;
    assert!(again.is_ok_and(|m| m.starts_with("SIP/2.0 200")));
}

/// The cloud peer: a TLS server (mutual TLS, our access edge certificate required) that
/// answers INVITE and BYE with 200 and absorbs ACK.
async fn cloud_peer(
    lis: TcpListener,
    server: Arc<rustls::ServerConfig>,
    seen: tokio::sync::mpsc::UnboundedSender<String>,
) {
    let (tcp, _) = lis.accept().await.expect("accept");
    let tls = tokio_rustls::TlsAcceptor::from(server)
        .accept(tcp)
        .await
        .expect("cloud-side handshake");
    let client_name = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(sipedge::pki::tls::cert_identity);
    let _ = seen.send(format!("CLIENT-CERT {}", client_name.unwrap_or_default()));
    let mut c = SipConn::new(tls);
    while let Ok(m) = c.recv(Duration::from_secs(30)).await {
        let first = m.lines().next().unwrap_or("").to_string();
        let _ = seen.send(m.clone());
        if first.starts_with("INVITE") || first.starts_with("BYE") {
            let resp = respond(
                &m,
                200,
                "OK",
                "sip:peer@sip.cloud.lab.example:5071;transport=tls",
            );
            c.send(&resp).await.expect("send");
        }
    }
}

/// A response to `req`: Vias, From, To (with a tag), Call-ID, CSeq and Record-Route copied.
fn respond(req: &str, code: u16, reason: &str, contact: &str) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for l in req.lines() {
        let Some((n, _)) = l.split_once(':') else {
            continue;
        };
        let n = n.trim().to_ascii_lowercase();
        if [
            "via",
            "v",
            "from",
            "f",
            "call-id",
            "i",
            "cseq",
            "record-route",
        ]
        .contains(&n.as_str())
        {
            out.push_str(l);
            out.push_str("\r\n");
        } else if n == "to" || n == "t" {
            out.push_str(l);
            if !l.contains("tag=") {
                out.push_str(";tag=peer1");
            }
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!(
        "Contact: <{contact}>\r\nContent-Length: 0\r\n\r\n"
    ));
    out
}

fn invite(call_id: &str) -> String {
    format!(
        "INVITE sip:+14255550100@mediation.lab.example;transport=tls SIP/2.0\r\n\
         Via: SIP/2.0/TLS gw1.lab.example:5061;branch=z9hG4bK-i{call_id}\r\nMax-Forwards: 70\r\n\
         From: <sip:+14255550199@gw1.lab.example>;tag=gw{call_id}\r\n\
         To: <sip:+14255550100@mediation.lab.example>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:+14255550199@gw1.lab.example:5061;transport=tls>\r\nContent-Length: 0\r\n\r\n"
    )
}

/// ACK or BYE along the route set of a 2xx (Record-Route in reverse, RFC 3261 §12.1.2).
fn in_dialog(method: &str, cseq: u32, ok: &str, call_id: &str) -> String {
    let mut rr: Vec<String> = ok
        .lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case("record-route")
                .then(|| v.trim().to_string())
        })
        .flat_map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    rr.reverse();
    let to = header(ok, "To").expect("To");
    let contact = header(ok, "Contact").expect("Contact");
    let target = contact.trim_start_matches('<').trim_end_matches('>');
    let n = rand_u64();
    let routes: String = rr.iter().map(|r| format!("Route: {r}\r\n")).collect();
    format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/TLS gw1.lab.example:5061;branch=z9hG4bK-{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:+14255550199@gw1.lab.example>;tag=gw{call_id}\r\nTo: {to}\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n{routes}Content-Length: 0\r\n\r\n"
    )
}

fn tls_cloud_config(text: String) -> String {
    text.replace(
        "[cloud_peer]\nfqdn = \"sip.cloud.lab.example\"\nport = 5060\ntransport = \"udp\"",
        "[cloud_peer]\nfqdn = \"sip.cloud.lab.example\"\nport = 5071\ntransport = \"tls\"",
    )
}

async fn next_seen(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(m)) if m.lines().next().unwrap_or("").contains(needle) => return m,
            Ok(Some(_)) => continue,
            _ => panic!("the cloud peer saw no {needle:?}"),
        }
    }
}

fn serial_of(der: &CertificateDer<'_>) -> String {
    show_cert_bytes(der.as_ref(), None, "peer")
        .expect("cert")
        .serial
}

/// gw1 over TLS to 5067 → proxy → the cloud peer over TLS → 200 → ACK → BYE; halfway through,
/// the appliance's gateway-side certificate is replaced: the call completes over the
/// established connections, and the next handshake presents the new certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_over_tls_end_to_end_with_certificate_replaced_midway() {
    let lab = Lab::start_with(tls_cloud_config);
    let pki = LabPki::of(&lab);
    pki.issue("gw1.lab.example");
    pki.issue("sip.cloud.lab.example");
    let peer_cfg = server_config_cloud_side(
        pki.material("sip.cloud.lab.example"),
        pki.trust(),
        vec!["ap.lab.example".into()],
    )
    .expect("peer config");
    let lis = TcpListener::bind("127.0.0.3:5071")
        .await
        .expect("bind peer");
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let peer = tokio::spawn(cloud_peer(lis, peer_cfg, seen_tx));

    let tls = connect_gw(pki.client("gw1.lab.example"))
        .await
        .expect("gw1 handshake");
    let first_serial = serial_of(
        tls.get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .expect("server cert"),
    );
    let mut gw = SipConn::new(tls);
    let call_id = format!("tls-{}", rand_u64());
    gw.send(&invite(&call_id)).await.expect("INVITE");

    // The cloud peer sees our access edge certificate and the INVITE with TLS Via/Record-Route.
    let client = next_seen(&mut seen, "CLIENT-CERT").await;
    assert_eq!(client, "CLIENT-CERT ap.lab.example");
    let inv = next_seen(&mut seen, "INVITE").await;
    // Reverse number lookup: the Request-URI is alice's SIP address (routing issue).
    assert!(inv.starts_with("INVITE sip:alice@lab.example "), "{inv}");
    let via = header(&inv, "Via").expect("Via");
    assert!(via.starts_with("SIP/2.0/TLS ap.lab.example:5061;"), "{inv}");
    let rrs: Vec<&str> = inv
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("record-route"))
        .collect();
    assert!(
        rrs.iter()
            .any(|l| l.contains("<sip:ap.lab.example:5061;transport=tls;lr;sx=")),
        "{inv}"
    );
    assert!(
        rrs.iter()
            .any(|l| l.contains("<sip:mediation.lab.example:5067;transport=tls;lr;sx=")),
        "{inv}"
    );

    let ok = gw.expect("200").await;
    assert!(
        header(&ok, "CSeq").is_some_and(|c| c.contains("INVITE")),
        "{ok}"
    );
    gw.send(&in_dialog("ACK", 1, &ok, &call_id))
        .await
        .expect("ACK");
    next_seen(&mut seen, "ACK").await;

    // Replace the appliance's gateway-side certificate (key and chain) while the call is up.
    let fresh = tempfile::tempdir().expect("tempdir");
    let mut req = IssueRequest::new("mediation.lab.example", fresh.path());
    req.force = true;
    pki.store
        .issue(&NamePolicy::default(), &req)
        .expect("reissue");
    let reloads = lab.log_text().matches("TLS configuration reloaded").count();
    let certs = lab.dir.path().join("state/certs");
    for f in [
        "mediation.lab.example.key",
        "mediation.lab.example.chain.pem",
    ] {
        std::fs::copy(fresh.path().join(f), certs.join(f)).expect("replace");
    }
    assert!(
        wait_log_count(
            &lab,
            "TLS configuration reloaded",
            reloads + 1,
            Duration::from_secs(8)
        )
        .await,
        "{}",
        lab.log_text()
    );

    // The call completes over the connections it started on.
    gw.send(&in_dialog("BYE", 2, &ok, &call_id))
        .await
        .expect("BYE");
    next_seen(&mut seen, "BYE").await;
    let bye_ok = gw.expect("200").await;
    assert!(
        header(&bye_ok, "CSeq").is_some_and(|c| c.contains("BYE")),
        "{bye_ok}"
    );

    // The next handshake presents the new certificate.
    let tls2 = connect_gw(pki.client("gw1.lab.example"))
        .await
        .expect("second handshake");
    let second_serial = serial_of(
        tls2.get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .expect("server cert"),
    );
    assert_ne!(first_serial, second_serial);
    let want = show_cert(&fresh.path().join("mediation.lab.example.crt"), None)
        .expect("show")
        .serial;
    assert_eq!(second_serial, want);
    peer.abort();
}

fn reuse_config(text: String) -> String {
    text.replace(
        "name = \"gw1.lab.example\"\nport = 5060\ntransport = \"udp\"",
        "name = \"gw1.lab.example\"\nport = 5061\ntransport = \"tls\"",
    )
    .replace(
        "name = \"gw2.lab.example\"\nport = 5060\ntransport = \"udp\"\nsite = \"lab\"",
        "name = \"gw2.lab.example\"\nport = 5060\ntransport = \"udp\"\nsite = \"lab\"\npriority = 9",
    )
}

/// The cloud peer calls in over TLS on 5061 (mutual TLS, its name checked); the call goes to
/// gw1 (a TLS trunk) over the connection gw1 opened to us — nobody listens on gw1's own TLS
/// port, so only reuse by identity (RFC 5923 spirit) can deliver it. A client whose
/// certificate is not the cloud peer's is refused on 5061.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_call_reaches_a_gateway_over_its_own_tls_connection() {
    let lab = Lab::start_with(reuse_config);
    let pki = LabPki::of(&lab);
    pki.issue("gw1.lab.example");
    pki.issue("sip.cloud.lab.example");

    // gw1 connects and pings: its connection is now known by its identity.
    let tls = connect_gw(pki.client("gw1.lab.example"))
        .await
        .expect("gw1 handshake");
    let mut gw = SipConn::new(tls);
    gw.send(&options_tls("gw1.lab.example"))
        .await
        .expect("OPTIONS");
    gw.expect("200").await;

    let connect_cloud = |client: Arc<ClientConfig>| async move {
        let tcp = TcpStream::connect("127.0.0.1:5061").await?;
        tokio_rustls::TlsConnector::from(client)
            .connect(server_name("ap.lab.example").expect("name"), tcp)
            .await
    };
    // Not the cloud peer's certificate: refused at the handshake on the cloud side.
    let wrong = connect_cloud(pki.client("gw1.lab.example")).await;
    if let Ok(s) = wrong {
        let mut c = SipConn::new(s);
        let _ = c.send(&options_tls("gw1.lab.example")).await;
        assert!(c.recv(Duration::from_secs(5)).await.is_err());
    }
    assert!(
        wait_log(
            &lab,
            "certificate gw1.lab.example is not an allowed peer name",
            Duration::from_secs(3)
        )
        .await,
        "{}",
        lab.log_text()
    );

    let cloud_tls = connect_cloud(pki.client("sip.cloud.lab.example"))
        .await
        .expect("cloud handshake");
    let edge = show_cert_bytes(
        cloud_tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .expect("server cert")
            .as_ref(),
        None,
        "edge",
    )
    .expect("edge cert");
    assert_eq!(edge.subject_cn.as_deref(), Some("ap.lab.example"));
    assert!(
        edge.sans.iter().any(|s| s == "DNS:sip.lab.example"),
        "{:?}",
        edge.sans
    );
    let mut cloud = SipConn::new(cloud_tls);
    let call_id = format!("in-{}", rand_u64());
    let n = rand_u64();
    cloud
        .send(&format!(
            "INVITE sip:+14255550100@ap.lab.example;transport=tls SIP/2.0\r\n\
             Via: SIP/2.0/TLS sip.cloud.lab.example:5061;branch=z9hG4bK-c{n}\r\nMax-Forwards: 70\r\n\
             From: <sip:alice@lab.example>;tag=c{n}\r\nTo: <sip:+14255550100@ap.lab.example>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:alice@sip.cloud.lab.example:5061;transport=tls>\r\nContent-Length: 0\r\n\r\n"
        ))
        .await
        .expect("INVITE");

    let inv = gw.expect("INVITE").await;
    let via = header(&inv, "Via").expect("Via");
    assert!(
        via.starts_with("SIP/2.0/TLS mediation.lab.example:5067;"),
        "{inv}"
    );
    gw.send(&respond(
        &inv,
        200,
        "OK",
        "sip:+14255550100@gw1.lab.example:5061;transport=tls",
    ))
    .await
    .expect("200");
    let ok = cloud.expect("200").await;
    assert!(
        ok.lines()
            .any(|l| l.to_ascii_lowercase().starts_with("record-route")
                && l.contains("ap.lab.example:5061;transport=tls")),
        "{ok}"
    );
    // BYE from the cloud along the route set, to gw1's Contact: again over gw1's connection.
    let to = header(&ok, "To").expect("To");
    let rr: Vec<String> = ok
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("record-route")
                .then(|| v.trim().to_string())
        })
        .flat_map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let routes: String = rr.iter().map(|r| format!("Route: {r}\r\n")).collect();
    for (method, cseq) in [("ACK", 1), ("BYE", 2)] {
        let b = rand_u64();
        cloud
            .send(&format!(
                "{method} sip:+14255550100@gw1.lab.example:5061;transport=tls SIP/2.0\r\n\
                 Via: SIP/2.0/TLS sip.cloud.lab.example:5061;branch=z9hG4bK-b{b}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:alice@lab.example>;tag=c{n}\r\nTo: {to}\r\n\
                 Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n{routes}Content-Length: 0\r\n\r\n"
            ))
            .await
            .expect("send");
    }
    gw.expect("ACK").await;
    let bye = gw.expect("BYE").await;
    gw.send(&respond(
        &bye,
        200,
        "OK",
        "sip:gw1.lab.example:5061;transport=tls",
    ))
    .await
    .expect("200 BYE");
    let bye_ok = cloud.expect("200").await;
    assert!(
        header(&bye_ok, "CSeq").is_some_and(|c| c.contains("BYE")),
        "{bye_ok}"
    );
    // No connection to gw1's own port was ever attempted.
    assert!(
        !lab.log_text().contains("connect failed"),
        "{}",
        lab.log_text()
    );

    // SIGHUP reloads too.
    let reloads = lab.log_text().matches("TLS configuration reloaded").count();
    let _ = Command::new("kill")
        .arg("-HUP")
        .arg(lab.child.id().to_string())
        .status();
    assert!(
        wait_log_count(
            &lab,
            "TLS configuration reloaded",
            reloads + 1,
            Duration::from_secs(5)
        )
        .await
    );
    assert!(lab.log_text().contains("SIGHUP"));
}

/// A connection that never starts its handshake is closed after `tls.handshake_timeout_s`, and
/// while it holds the only handshake slot (`tls.max_handshakes = 1`) a second one is closed at
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_timeout_and_cap() {
    let lab = Lab::start_with(|t| {
        t.replace(
            "[tls]\nhandshake_timeout_s = 10\nmax_handshakes = 256",
            "[tls]\nhandshake_timeout_s = 2\nmax_handshakes = 1",
        )
    });
    let started = Instant::now();
    let mut idle = TcpStream::connect(GW_TLS).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut second = TcpStream::connect(GW_TLS).await.expect("connect");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(1), second.read(&mut buf))
        .await
        .expect("the second connection is closed at once");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(
        wait_log(
            &lab,
            "too many handshakes in progress",
            Duration::from_secs(2)
        )
        .await
    );
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("the idle connection is closed by the timeout");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1800), "{took:?}");
    assert!(wait_log(&lab, "handshake timed out", Duration::from_secs(2)).await);
    // The slot is free again: gw1 gets in.
    let pki = LabPki::of(&lab);
    pki.issue("gw1.lab.example");
    let ok = try_options(pki.client("gw1.lab.example")).await;
    assert!(ok.is_ok_and(|m| m.starts_with("SIP/2.0 200")));
}
