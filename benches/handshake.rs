//! Full mutual-TLS handshakes per second on loopback: a fresh TCP connection,
//! the complete handshake with client certificate verification (WebPKI +
//! CRL + gateway identity binding), one application byte each way.
//!
//! A timed loop with a fixed count (criterion's statistics add little for a
//! figure dominated by public-key operations). Run:
//! `cargo bench --bench handshake` (optionally `-- <count> <concurrency>`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Instant;

use rustls::ProtocolVersion;
use sipedge::pki::tls::{
    client_config, crypto_provider, server_config_gateway_side, server_name, GatewayIdentity,
    TlsMaterial, TrustAnchors,
};
use sipedge::pki::{CaStore, IssueRequest, KeyType, NamePolicy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

struct Setup {
    server: Arc<rustls::ServerConfig>,
    client_tls13: Arc<rustls::ClientConfig>,
    client_tls12: Arc<rustls::ClientConfig>,
    _dir: tempfile::TempDir,
}

fn setup(key_type: KeyType) -> Result<Setup, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = CaStore::init(dir.path().join("state"), key_type, 3650, false)?;
    let out = dir.path().join("out");
    let policy = NamePolicy::new(["med.lab.example", "gw1.lab.example"]);
    for name in ["med.lab.example", "gw1.lab.example"] {
        store.issue(&policy, &IssueRequest::new(name, &out))?;
    }
    let material = |name: &str| {
        TlsMaterial::from_pem_files(
            &out.join(format!("{name}.chain.pem")),
            &out.join(format!("{name}.key")),
            None,
        )
    };
    let trust = TrustAnchors::from_pem_file(&store.root_cert_path())?;
    let server = server_config_gateway_side(
        material("med.lab.example")?,
        trust.clone(),
        vec![store.crl_der()?],
        vec![GatewayIdentity {
            name: "gw1.lab.example".into(),
            site: "lab".into(),
        }],
        "lab",
    )?;
    let client_tls13 = client_config(material("gw1.lab.example")?, trust.clone())?;
    // The same client restricted to TLS 1.2.
    let m = material("gw1.lab.example")?;
    let tls12 = rustls::ClientConfig::builder_with_provider(crypto_provider(m.key_is_ecdsa()))
        .with_protocol_versions(&[&rustls::version::TLS12])?
        .with_root_certificates({
            let mut r = rustls::RootCertStore::empty();
            r.add(store.root_cert_der()?)?;
            r
        })
        .with_client_auth_cert(m.cert_chain, m.key)?;
    Ok(Setup {
        server,
        client_tls13,
        client_tls12: Arc::new(tls12),
        _dir: dir,
    })
}

async fn run(
    setup: &Setup,
    tls12: bool,
    count: usize,
    concurrency: usize,
) -> Result<(f64, ProtocolVersion), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(setup.server.clone());
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut b = [0u8; 1];
                    if tls.read_exact(&mut b).await.is_ok() {
                        let _ = tls.write_all(&b).await;
                        let _ = tls.flush().await;
                    }
                }
            });
        }
    });
    let client = if tls12 {
        setup.client_tls12.clone()
    } else {
        setup.client_tls13.clone()
    };
    let connector = TlsConnector::from(client);
    let name = server_name("med.lab.example")?;
    let per_task = count.div_ceil(concurrency);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let connector = connector.clone();
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            let mut version = None;
            for _ in 0..per_task {
                let tcp = TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let mut tls = connector.connect(name.clone(), tcp).await?;
                tls.write_all(b"x").await?;
                let mut b = [0u8; 1];
                tls.read_exact(&mut b).await?;
                version = tls.get_ref().1.protocol_version();
            }
            Ok::<_, std::io::Error>(version)
        }));
    }
    let mut version = None;
    for t in tasks {
        version = t.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    server.abort();
    let total = per_task * concurrency;
    Ok((
        total as f64 / elapsed,
        version.unwrap_or(ProtocolVersion::Unknown(0)),
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let count: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(400);
    let concurrency: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "full mTLS handshakes on loopback, {count} per row, {concurrency} concurrent clients, 2 runtime threads (client and server share the machine)"
    );
    for key_type in [KeyType::Rsa3072, KeyType::EcdsaP256] {
        let s = setup(key_type)?;
        for tls12 in [false, true] {
            // Warm-up.
            rt.block_on(run(&s, tls12, 20, 1))?;
            let (rate, version) = rt.block_on(run(&s, tls12, count, concurrency))?;
            println!("{key_type:<11} {version:?}: {rate:8.0} handshakes/s");
        }
    }
    Ok(())
}
