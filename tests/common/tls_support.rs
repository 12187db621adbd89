//! TLS helpers for the lab tests (from tests/tls_lab.rs): the appliance's CA as the lab
//! created it, a SIP connection over TLS, a TLS cloud peer.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{header, rand_u64, Lab};
use rustls::ClientConfig;
use sipedge::pki::tls::{client_config, TlsMaterial, TrustAnchors};
use sipedge::pki::{CaStore, IssueRequest, NamePolicy};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The appliance's CA, opened from the lab's state directory, and a place for issued files.
pub struct LabPki {
    pub store: CaStore,
    pub out: PathBuf,
    _dir: tempfile::TempDir,
}

impl LabPki {
    pub fn of(lab: &Lab) -> LabPki {
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

    pub fn issue(&self, name: &str) -> String {
        let mut req = IssueRequest::new(name, &self.out);
        req.force = true;
        self.store
            .issue(&NamePolicy::default(), &req)
            .expect("issue")
            .serial
    }

    pub fn material(&self, name: &str) -> TlsMaterial {
        material_in(&self.out, name)
    }

    pub fn trust(&self) -> TrustAnchors {
        TrustAnchors::from_pem_file(&self.store.root_cert_path()).expect("trust")
    }

    pub fn client(&self, name: &str) -> Arc<ClientConfig> {
        client_config(self.material(name), self.trust()).expect("client config")
    }
}

pub fn material_in(dir: &Path, name: &str) -> TlsMaterial {
    TlsMaterial::from_pem_files(
        &dir.join(format!("{name}.chain.pem")),
        &dir.join(format!("{name}.key")),
        None,
    )
    .expect("material")
}

/// A SIP connection over a byte stream (TLS here): writes messages, reads framed ones.
pub struct SipConn<S> {
    rd: BufReader<tokio::io::ReadHalf<S>>,
    wr: tokio::io::WriteHalf<S>,
}

impl<S: AsyncRead + AsyncWrite> SipConn<S> {
    pub fn new(s: S) -> Self {
        let (rd, wr) = tokio::io::split(s);
        SipConn {
            rd: BufReader::new(rd),
            wr,
        }
    }

    pub async fn send(&mut self, msg: &str) -> std::io::Result<()> {
        self.wr.write_all(msg.as_bytes()).await?;
        self.wr.flush().await
    }

    /// One message (head and body by Content-Length); `Err` on EOF, error or timeout.
    pub async fn recv(&mut self, t: Duration) -> Result<String, String> {
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
    pub async fn expect(&mut self, needle: &str) -> String {
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

pub fn options_tls(from: &str) -> String {
    let n = rand_u64();
    format!(
        "OPTIONS sip:mediation.lab.example:5067;transport=tls SIP/2.0\r\n\
         Via: SIP/2.0/TLS {from}:5061;branch=z9hG4bK-o{n}\r\nMax-Forwards: 70\r\n\
         From: <sip:ping@{from}>;tag={n}\r\nTo: <sip:mediation.lab.example>\r\n\
         Call-ID: o{n}@{from}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

pub async fn wait_log(lab: &Lab, needle: &str, t: Duration) -> bool {
    wait_log_count(lab, needle, 1, t).await
}

/// Waits until `needle` occurs at least `n` times in the appliance log.
pub async fn wait_log_count(lab: &Lab, needle: &str, n: usize, t: Duration) -> bool {
    let deadline = Instant::now() + t;
    while Instant::now() < deadline {
        if lab.log_text().matches(needle).count() >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The cloud peer: a TLS server (mutual TLS, our access edge certificate required) that
/// answers INVITE and BYE with 200 and absorbs ACK.
pub async fn cloud_peer(
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
pub fn respond(req: &str, code: u16, reason: &str, contact: &str) -> String {
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

pub fn invite(call_id: &str) -> String {
    format!(
        "INVITE sip:+14255550100@mediation.lab.example;transport=tls SIP/2.0\r\n\
         Via: SIP/2.0/TLS gw1.lab.example:5061;branch=z9hG4bK-i{call_id}\r\nMax-Forwards: 70\r\n\
         From: <sip:+14255550199@gw1.lab.example>;tag=gw{call_id}\r\n\
         To: <sip:+14255550100@mediation.lab.example>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:+14255550199@gw1.lab.example:5061;transport=tls>\r\nContent-Length: 0\r\n\r\n"
    )
}

pub fn tls_cloud_config(text: String) -> String {
    text.replace(
        "[cloud_peer]\nfqdn = \"sip.cloud.lab.example\"\nport = 5060\ntransport = \"udp\"",
        "[cloud_peer]\nfqdn = \"sip.cloud.lab.example\"\nport = 5071\ntransport = \"tls\"",
    )
}

pub async fn next_seen(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    needle: &str,
) -> String {
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
