//! Real tokio-rustls handshakes on 127.0.0.1 against the gateway-side server
//! configuration, with every certificate minted by our CA inside the test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::{ClientConfig, ServerConfig};
use sipedge::pki::tls::{
    client_config, describe_refusal, peer_identity, server_config_gateway_side, server_name,
    GatewayIdentity, GatewaySideFiles, ReloadableTls, TlsMaterial, TrustAnchors,
};
use sipedge::pki::{
    show_cert, CaStore, IssueRequest, KeyType, NamePolicy, RevokeReason, RevokeTarget,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const SERVER: &str = "med.lab.example";

fn gateways() -> Vec<GatewayIdentity> {
    let gw = |name: &str, site: &str| GatewayIdentity {
        name: name.into(),
        site: site.into(),
    };
    vec![
        gw("gw1.lab.example", "lab"),
        gw("gw2.lab.example", "lab"),
        gw("gw3.lab.example", "lab"),
        gw("10.20.30.40", "lab"),
        gw("gw1.remote.example", "remote"),
    ]
}

struct Pki {
    _dir: tempfile::TempDir,
    store: CaStore,
    out: PathBuf,
    policy: NamePolicy,
}

impl Pki {
    fn new(key_type: KeyType) -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CaStore::init(dir.path().join("state"), key_type, 3650, false).expect("init");
        let out = dir.path().join("out");
        let mut names: Vec<String> = gateways().into_iter().map(|g| g.name).collect();
        names.push(SERVER.into());
        let pki = Pki {
            _dir: dir,
            store,
            out,
            policy: NamePolicy::new(names),
        };
        pki.issue(SERVER);
        pki
    }

    fn issue(&self, name: &str) {
        let mut req = IssueRequest::new(name, &self.out);
        req.force = true;
        self.store.issue(&self.policy, &req).expect("issue");
    }

    fn material(&self, name: &str) -> TlsMaterial {
        let stem = name.replace(':', "_");
        TlsMaterial::from_pem_files(
            &self.out.join(format!("{stem}.chain.pem")),
            &self.out.join(format!("{stem}.key")),
            None,
        )
        .expect("material")
    }

    fn trust(&self) -> TrustAnchors {
        TrustAnchors::from_pem_file(&self.store.root_cert_path()).expect("trust")
    }

    fn crls(&self) -> Vec<CertificateRevocationListDer<'static>> {
        vec![self.store.crl_der().expect("crl")]
    }

    fn server_config(&self) -> Arc<ServerConfig> {
        server_config_gateway_side(
            self.material(SERVER),
            self.trust(),
            self.crls(),
            gateways(),
            "lab",
        )
        .expect("server config")
    }

    fn client(&self, name: &str) -> Arc<ClientConfig> {
        client_config(self.material(name), self.trust()).expect("client config")
    }

    fn files(&self) -> GatewaySideFiles {
        GatewaySideFiles {
            cert: self.out.join(format!("{SERVER}.chain.pem")),
            key: self.out.join(format!("{SERVER}.key")),
            chain: None,
            trust: self.store.root_cert_path(),
            crl: Some(self.store.crl_path()),
        }
    }
}

/// One handshake: server result (peer identity or refusal reason) and
/// whether the client could exchange application data.
async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> (Result<Option<String>, String>, Result<(), String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        match TlsAcceptor::from(server).accept(tcp).await {
            Ok(mut tls) => {
                let id = peer_identity(tls.get_ref().1);
                let _ = tls.write_all(b"hello\n").await;
                let _ = tls.flush().await;
                Ok(id)
            }
            Err(e) => Err(e
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .map(describe_refusal)
                .unwrap_or_else(|| e.to_string())),
        }
    });
    let cli = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let tls = TlsConnector::from(client)
            .connect(server_name(SERVER).map_err(|e| e.to_string())?, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let mut lines = BufReader::new(tls).lines();
        match lines.next_line().await.map_err(|e| e.to_string())? {
            Some(l) if l == "hello" => Ok(()),
            other => Err(format!("unexpected {other:?}")),
        }
    };
    let client_result = tokio::time::timeout(Duration::from_secs(10), cli)
        .await
        .unwrap_or_else(|_| Err("client timeout".into()));
    let server_result = tokio::time::timeout(Duration::from_secs(10), srv)
        .await
        .expect("server timeout")
        .expect("server task");
    (server_result, client_result)
}

async fn refused(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> String {
    let (srv, cli) = handshake(server, client).await;
    assert!(cli.is_err(), "client must not get application data");
    srv.expect_err("server must refuse")
}

#[tokio::test]
async fn gateway_of_our_site_is_accepted_with_identity() {
    let pki = Pki::new(KeyType::EcdsaP256);
    pki.issue("gw1.lab.example");
    let (srv, cli) = handshake(pki.server_config(), pki.client("gw1.lab.example")).await;
    assert_eq!(srv, Ok(Some("gw1.lab.example".to_string())));
    assert_eq!(cli, Ok(()));

    // An IP-named gateway is matched on its IP SAN.
    pki.issue("10.20.30.40");
    let (srv, _) = handshake(pki.server_config(), pki.client("10.20.30.40")).await;
    assert_eq!(srv, Ok(Some("10.20.30.40".to_string())));
}

#[tokio::test]
async fn negative_matrix() {
    let pki = Pki::new(KeyType::EcdsaP256);

    // 1. No client certificate.
    let no_cert = Arc::new(
        ClientConfig::builder_with_provider(sipedge::pki::tls::crypto_provider(true))
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
    let reason = refused(pki.server_config(), no_cert).await;
    assert_eq!(reason, "no client certificate presented");

    // 2. A rogue CA issuing a configured name.
    let rogue = Pki::new(KeyType::EcdsaP256);
    rogue.issue("gw1.lab.example");
    let rogue_client = client_config(rogue.material("gw1.lab.example"), pki.trust()).expect("cfg");
    let reason = refused(pki.server_config(), rogue_client).await;
    assert_eq!(reason, "issuer unknown");

    // 3. Revoked (the server is built with the fresh CRL).
    pki.issue("gw2.lab.example");
    pki.store
        .revoke(
            &RevokeTarget::Name("gw2.lab.example".into()),
            RevokeReason::KeyCompromise,
        )
        .expect("revoke");
    let reason = refused(pki.server_config(), pki.client("gw2.lab.example")).await;
    assert_eq!(reason, "certificate revoked");

    // 4. Expired (issued with a past validity through the test hook).
    let now = time::OffsetDateTime::now_utc();
    let mut req = IssueRequest::new("gw3.lab.example", &pki.out);
    req.validity = Some((
        now - time::Duration::days(400),
        now - time::Duration::days(35),
    ));
    pki.store.issue(&pki.policy, &req).expect("issue expired");
    let reason = refused(pki.server_config(), pki.client("gw3.lab.example")).await;
    assert!(reason.starts_with("expired"), "{reason}");

    // 5. A valid certificate of a gateway configured for another site.
    pki.issue("gw1.remote.example");
    let reason = refused(pki.server_config(), pki.client("gw1.remote.example")).await;
    assert_eq!(
        reason,
        "gw1.remote.example belongs to site remote; this appliance serves site lab"
    );

    // 6. A valid certificate (our CA) for a name no gateway is configured with.
    pki.issue("stranger.lab.example");
    let reason = refused(pki.server_config(), pki.client("stranger.lab.example")).await;
    assert_eq!(reason, "no configured gateway named stranger.lab.example");
}

/// rustls cannot speak TLS 1.1, so the old client is `openssl s_client
/// -tls1_1` (OpenSSL 3 needs `@SECLEVEL=0` to even offer it). The CBC-only
/// TLS 1.2 client shows that the SHA256/SHA384 CBC suites are not served.
#[tokio::test]
async fn legacy_clients_are_refused() {
    let pki = Pki::new(KeyType::Rsa3072);
    pki.issue("gw1.lab.example");
    let server = pki.server_config();
    let key = pki.out.join("gw1.lab.example.key");
    let cert = pki.out.join("gw1.lab.example.crt");
    let cases: [(&[&str], &str); 3] = [
        (&["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"], "TLS 1.1"),
        (
            &[
                "-tls1_2",
                "-cipher",
                "ECDHE-RSA-AES256-SHA384:ECDHE-RSA-AES128-SHA256",
            ],
            "CBC",
        ),
        (
            &["-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"],
            "GCM",
        ),
    ];
    for (args, label) in cases {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let acceptor = TlsAcceptor::from(server.clone());
        let srv = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            match acceptor.accept(tcp).await {
                Ok(mut tls) => {
                    let id = peer_identity(tls.get_ref().1);
                    let v = tls.get_ref().1.protocol_version();
                    let _ = tls.shutdown().await;
                    Ok((id, v))
                }
                Err(e) => Err(e
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<rustls::Error>())
                    .map(describe_refusal)
                    .unwrap_or_else(|| e.to_string())),
            }
        });
        let mut cmd_args: Vec<String> = vec![
            "s_client".into(),
            "-connect".into(),
            format!("127.0.0.1:{port}"),
            "-cert".into(),
            cert.display().to_string(),
            "-key".into(),
            key.display().to_string(),
        ];
        cmd_args.extend(args.iter().map(|s| s.to_string()));
        let out = tokio::task::spawn_blocking(move || {
            Command::new("openssl")
                .args(&cmd_args)
                .stdin(Stdio::null())
                .output()
                .expect("openssl CLI")
        })
        .await
        .expect("join");
        let result = tokio::time::timeout(Duration::from_secs(10), srv)
            .await
            .expect("server timeout")
            .expect("server task");
        match label {
            "GCM" => assert_eq!(
                result,
                Ok((
                    Some("gw1.lab.example".into()),
                    Some(rustls::ProtocolVersion::TLSv1_2)
                )),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            ),
            _ => {
                let reason = result.expect_err(label);
                eprintln!("{label}: {reason}");
                let want = if label == "CBC" {
                    "no cipher suite in common"
                } else {
                    "older than TLS 1.2"
                };
                assert!(reason.contains(want), "{label}: {reason}");
            }
        }
    }
}

#[tokio::test]
async fn tls13_is_preferred() {
    let pki = Pki::new(KeyType::Rsa3072);
    pki.issue("gw1.lab.example");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(pki.server_config());
    let srv = tokio::spawn(async move {
        let mut out = Vec::new();
        for _ in 0..2 {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut tls = acceptor.accept(tcp).await.expect("handshake");
            let conn = tls.get_ref().1;
            out.push((conn.protocol_version(), conn.handshake_kind()));
            let _ = tls.write_all(b"x").await;
            let _ = tls.flush().await;
        }
        out
    });
    let client = pki.client("gw1.lab.example");
    for _ in 0..2 {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let mut tls = TlsConnector::from(client.clone())
            .connect(server_name(SERVER).expect("name"), tcp)
            .await
            .expect("client handshake");
        let mut b = [0u8; 1];
        tokio::io::AsyncReadExt::read_exact(&mut tls, &mut b)
            .await
            .expect("read");
    }
    // TLS 1.3 negotiated, and the reconnect is a full handshake (no
    // resumption: the client certificate is verified on every connect).
    let full = Some(rustls::HandshakeKind::Full);
    assert_eq!(
        srv.await.expect("join"),
        vec![
            (Some(rustls::ProtocolVersion::TLSv1_3), full),
            (Some(rustls::ProtocolVersion::TLSv1_3), full)
        ]
    );
}

fn serial_of(cert: &CertificateDer<'_>) -> String {
    let (_, c) = x509_parser::parse_x509_certificate(cert).expect("x509");
    c.raw_serial().iter().map(|b| format!("{b:02X}")).collect()
}

async fn connect(
    addr: std::net::SocketAddr,
    client: Arc<ClientConfig>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    TlsConnector::from(client)
        .connect(server_name(SERVER).expect("name"), tcp)
        .await
        .expect("handshake")
}

async fn echo(stream: &mut tokio_rustls::client::TlsStream<TcpStream>, msg: &str) -> String {
    stream
        .write_all(format!("{msg}\n").as_bytes())
        .await
        .expect("write");
    let mut line = String::new();
    let mut reader = BufReader::new(stream);
    reader.read_line(&mut line).await.expect("read");
    line.trim_end().to_string()
}

fn server_serial(stream: &tokio_rustls::client::TlsStream<TcpStream>) -> String {
    let certs = stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("server certs");
    serial_of(certs.first().expect("leaf"))
}

#[tokio::test]
async fn reload_swaps_certificate_and_keeps_established_connections() {
    let pki = Pki::new(KeyType::EcdsaP256);
    pki.issue("gw1.lab.example");
    let reloadable = Arc::new(
        ReloadableTls::gateway_side(pki.files(), gateways(), "lab".into()).expect("reloadable"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let r = reloadable.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = r.acceptor();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (rd, mut wr) = tokio::io::split(tls);
                let mut lines = BufReader::new(rd).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    if wr.write_all(format!("{l}\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });

    let first_serial = show_cert(&pki.out.join(format!("{SERVER}.crt")), None)
        .expect("show")
        .serial;
    let mut a = connect(addr, pki.client("gw1.lab.example")).await;
    assert_eq!(server_serial(&a), first_serial);
    assert_eq!(echo(&mut a, "one").await, "one");

    // Renew the server certificate on disk and reload.
    let renewed = pki.store.renew(SERVER).expect("renew");
    assert_ne!(renewed.serial, first_serial);
    reloadable.reload().expect("reload");

    let mut b = connect(addr, pki.client("gw1.lab.example")).await;
    assert_eq!(server_serial(&b), renewed.serial);
    assert_eq!(echo(&mut b, "two").await, "two");
    // The connection established before the reload still works.
    assert_eq!(echo(&mut a, "three").await, "three");
    assert_eq!(server_serial(&a), first_serial);

    // A broken certificate file: reload fails, the previous config serves on.
    let cert_file = pki.files().cert;
    std::fs::write(&cert_file, b"-----BEGIN CERTIFICATE-----\ngarbage\n").expect("break");
    let err = reloadable.reload().expect_err("broken file");
    assert!(err.to_string().contains(&path_str(&cert_file)), "{err}");
    let c = connect(addr, pki.client("gw1.lab.example")).await;
    assert_eq!(server_serial(&c), renewed.serial);
    server.abort();
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn crl_file_loads_as_pem() {
    let pki = Pki::new(KeyType::EcdsaP256);
    let data = std::fs::read(pki.store.crl_path()).expect("crl");
    let crls: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .expect("pem");
    assert_eq!(crls.len(), 1);
}

#[tokio::test]
async fn client_verifies_server_name_and_cloud_side_allow_list() {
    use sipedge::pki::tls::server_config_cloud_side;
    let pki = Pki::new(KeyType::EcdsaP256);
    pki.issue("gw1.lab.example");
    pki.issue("gw2.lab.example");

    // Outbound: the server certificate must match the configured FQDN.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(pki.server_config());
    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        acceptor.accept(tcp).await.is_ok()
    });
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let err = TlsConnector::from(pki.client("gw1.lab.example"))
        .connect(server_name("other.lab.example").expect("name"), tcp)
        .await
        .expect_err("name mismatch");
    assert!(
        err.to_string()
            .contains("not valid for name \"other.lab.example\""),
        "{err}"
    );
    assert!(!srv.await.expect("join"));

    // Cloud side: any certificate of the trusted CA naming an allowed peer.
    let cloud = server_config_cloud_side(
        pki.material(SERVER),
        pki.trust(),
        vec!["gw1.lab.example".into()],
    )
    .expect("cloud config");
    let (srv, cli) = handshake(cloud.clone(), pki.client("gw1.lab.example")).await;
    assert!(srv.is_ok() && cli.is_ok(), "{srv:?} {cli:?}");
    let (srv, _) = handshake(cloud, pki.client("gw2.lab.example")).await;
    assert_eq!(
        srv,
        Err("certificate gw2.lab.example is not an allowed peer name".to_string())
    );
}
