//! sipp over TLS. Debian's sipp has no TLS, so each sipp talks TCP to a stunnel that holds a
//! certificate issued by `sipedge ca issue` from the appliance's CA:
//!
//! ```text
//! sipp UAC (gw1) --TCP--> stunnel client [gw1.lab.example] --TLS--> 127.0.0.1:5067 (gateway side)
//!   proxy --TLS--> 127.0.0.3:5071 stunnel server [sip.cloud.lab.example] --TCP--> sipp UAS
//! ```
//!
//! The gateway's source address as seen by the appliance is stunnel's (127.0.0.1): the identity
//! comes from the certificate, which is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{sipp_available, sipp_dir, Lab, Sipp};
use sipedge::pki::CaStore;

/// Is stunnel installed? Under CI its absence is a failure, never a silent pass.
fn stunnel_bin() -> Option<&'static str> {
    for b in ["stunnel4", "stunnel"] {
        let ok = Command::new(b)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if ok {
            return Some(b);
        }
    }
    common::skip_without("stunnel", "apt-get install stunnel4");
    None
}

/// A stunnel process; killed when dropped.
struct Stunnel {
    child: Child,
    log: PathBuf,
}

impl Stunnel {
    fn start(bin: &str, dir: &Path, name: &str, service: &str) -> Stunnel {
        let conf = dir.join(format!("{name}.conf"));
        let log = dir.join(format!("{name}.log"));
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\ndebug = 5\noutput = {}\n\n{service}",
                log.display()
            ),
        )
        .expect("write stunnel conf");
        let child = Command::new(bin)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn stunnel");
        Stunnel { child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sipedge --config CFG ca issue --name NAME --out DIR`.
fn ca_issue(cfg: &Path, name: &str, out: &Path) {
    let st = Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .arg("--config")
        .arg(cfg)
        .args(["ca", "issue", "--name", name, "--out"])
        .arg(out)
        .args(["--force"])
        .output()
        .expect("sipedge ca issue");
    assert!(
        st.status.success(),
        "ca issue {name}: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}

fn wait_port(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {addr}");
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
fn sipp_calls_over_tls_through_stunnel() {
    if !sipp_available() {
        return;
    }
    let Some(bin) = stunnel_bin() else { return };
    let lab = Lab::start_with(|t| {
        t.replace(
            "[cloud_peer]\nfqdn = \"sip.cloud.lab.example\"\nport = 5060\ntransport = \"udp\"",
            "[cloud_peer]\nfqdn = \"sip.cloud.lab.example\"\nport = 5071\ntransport = \"tls\"",
        )
    });
    let cfg = lab.dir.path().join("sipedge.toml");
    let out = lab.dir.path().join("issued");
    ca_issue(&cfg, "gw1.lab.example", &out);
    // The cloud peer's name is not one of ours or a gateway's: `--force`.
    ca_issue(&cfg, "sip.cloud.lab.example", &out);
    let root = CaStore::open(lab.dir.path().join("state")).root_cert_path();
    let file = |n: &str| out.join(n).display().to_string();

    let work = tempfile::tempdir().expect("tempdir");
    let server = Stunnel::start(
        bin,
        work.path(),
        "cloud-peer",
        &format!(
            "[cloud]\naccept = 127.0.0.3:5071\nconnect = 127.0.0.3:5060\ncert = {}\nkey = {}\n\
             CAfile = {}\nverifyChain = yes\nrequireCert = yes\ncheckHost = ap.lab.example\n",
            file("sip.cloud.lab.example.chain.pem"),
            file("sip.cloud.lab.example.key"),
            root.display()
        ),
    );
    let client = Stunnel::start(
        bin,
        work.path(),
        "gw1",
        &format!(
            "[gw1]\nclient = yes\naccept = 127.0.0.2:5090\nconnect = 127.0.0.1:5067\n\
             cert = {}\nkey = {}\nCAfile = {}\nverifyChain = yes\n\
             checkHost = mediation.lab.example\nsni = mediation.lab.example\n",
            file("gw1.lab.example.chain.pem"),
            file("gw1.lab.example.key"),
            root.display()
        ),
    );
    wait_port("127.0.0.2:5090");

    // uas.xml, with a Contact naming the cloud peer's TLS address (sipp would put its own TCP
    // address there, and in-dialog requests would bypass stunnel).
    let uas_text = std::fs::read_to_string(sipp_dir().join("uas.xml")).expect("uas.xml");
    let uas_text = uas_text.replace(
        "sip:callee@[local_ip]:[local_port];transport=[transport]",
        "sip:callee@sip.cloud.lab.example:5071;transport=tls",
    );
    assert!(uas_text.contains("sip.cloud.lab.example:5071;transport=tls"));
    let uas_xml = work.path().join("uas_tls.xml");
    std::fs::write(&uas_xml, uas_text).expect("write uas");
    let uas_xml = uas_xml.display().to_string();
    let mut uas = Sipp::spawn(
        "cloud peer",
        &[
            "-sf",
            &uas_xml,
            "-i",
            "127.0.0.3",
            "-p",
            "5060",
            "-t",
            "t1",
            "-nostdin",
            "-trace_err",
        ],
    );
    wait_port("127.0.0.3:5060");
    let uac_xml = sipp_dir().join("uac.xml").display().to_string();
    let mut uac = Sipp::spawn(
        "gw1",
        &[
            "-sf",
            &uac_xml,
            "-i",
            "127.0.0.2",
            "-p",
            "5060",
            "-t",
            "t1",
            "-s",
            "+14255550100",
            "-set",
            "domain",
            "mediation.lab.example",
            "-r",
            "20",
            "-m",
            "200",
            "-l",
            "200",
            "-recv_timeout",
            "15000",
            "-timeout",
            "90",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
            "127.0.0.2:5090",
        ],
    );
    let started = Instant::now();
    let code = uac.wait(Duration::from_secs(120));
    let took = started.elapsed();
    let log = lab.log_text();
    assert_eq!(
        code,
        0,
        "sipp over stunnel: failed calls\nuac: {}\nuas: {}\nstunnel client:\n{}\nstunnel server:\n{}\nlog tail:\n{}",
        uac.errors(),
        uas.errors(),
        tail(&client.log_text()),
        tail(&server.log_text()),
        tail(&log)
    );
    eprintln!("200 calls over TLS through stunnel in {took:?}");
    // gw1 was identified by its certificate (stunnel connects from 127.0.0.1, no gateway's
    // address), and the cloud leg ran over TLS to the stunnel server.
    assert!(log.contains("TLS peer authenticated"), "{}", tail(&log));
    assert!(
        client.log_text().contains("Certificate accepted")
            || client.log_text().contains("connected"),
        "{}",
        tail(&client.log_text())
    );
    assert!(
        server.log_text().contains("accepted connection"),
        "{}",
        tail(&server.log_text())
    );
    let _ = uas.child.kill();
}
