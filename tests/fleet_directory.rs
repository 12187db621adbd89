//! Two appliances of site lab on one PostgreSQL directory (issue 10): the lab appliance
//! (config/sipedge.toml, 127.0.0.1) and the second one (config/lab2.toml, 127.0.0.7), both with
//! `[directory] url` naming a database created for the test. A policy granted through one is
//! in force on the other within 1 s, both ways (API and CLI); with the database unreachable
//! (a TCP forwarder in front of it, stopped — the machine's PostgreSQL is never stopped) both
//! keep routing and refuse changes (CLI exit status ≠ 0, API 503); when it returns, a change
//! propagates again. An appliance restarted while the database is down starts from the
//! snapshot it kept in its state directory.
//!
//! Needs PostgreSQL on 127.0.0.1:5432 with trust authentication for user postgres (.ci/run
//! starts it): under CI its absence fails the test, elsewhere the test prints one skip line.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{options, Agent, Lab};

const PG: &str = "127.0.0.1:5432";
const ADMIN_A: &str = "127.0.0.1:8080";
const ADMIN_B: &str = "127.0.0.7:8080";
/// How soon a change must be in force on the other appliance.
const PROPAGATION: Duration = Duration::from_secs(1);

/// Runs SQL on the `postgres` database as user postgres.
fn admin_sql(sql: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg: tokio_postgres::Config = format!("postgres://postgres@{PG}/postgres")
            .parse()
            .unwrap();
        let (client, conn) =
            tokio::time::timeout(Duration::from_secs(5), cfg.connect(tokio_postgres::NoTls))
                .await
                .map_err(|_| "connection timed out".to_string())?
                .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))?;
        let driver = tokio::spawn(conn);
        let r = client.batch_execute(sql).await.map_err(|e| e.to_string());
        drop(client);
        let _ = driver.await;
        r
    })
}

/// A database of its own for the test, dropped afterwards.
struct TestDb {
    name: String,
}

impl TestDb {
    /// `None` (after one skip line) when there is no PostgreSQL; a failure under CI.
    fn create() -> Option<TestDb> {
        let name = format!("sipedge_test_{}", std::process::id());
        let _ = admin_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        match admin_sql(&format!("CREATE DATABASE {name}")) {
            Ok(()) => Some(TestDb { name }),
            Err(e) if std::env::var_os("CI").is_some() => panic!(
                "PostgreSQL on {PG} (user postgres, trust) is required under CI and failed: {e}"
            ),
            Err(e) => {
                eprintln!("SKIP fleet_directory: no PostgreSQL on {PG} ({e})");
                None
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = admin_sql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// A TCP forwarder 127.0.0.1:port → PostgreSQL: stopping it closes the listener and every
/// connection through it, as a database going away would.
struct Forwarder {
    port: u16,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    fn start(port: u16) -> Forwarder {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accept = {
            let stop = stop.clone();
            let conns = conns.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((down, _)) => {
                            down.set_nonblocking(false).unwrap();
                            let Ok(up) = TcpStream::connect(PG) else {
                                continue;
                            };
                            let mut list = conns.lock().unwrap();
                            list.push(down.try_clone().unwrap());
                            list.push(up.try_clone().unwrap());
                            for (mut from, mut to) in [
                                (down.try_clone().unwrap(), up.try_clone().unwrap()),
                                (up, down),
                            ] {
                                std::thread::spawn(move || {
                                    let _ = std::io::copy(&mut from, &mut to);
                                    let _ = to.shutdown(Shutdown::Both);
                                });
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Forwarder {
            port,
            stop,
            conns,
            accept: Some(accept),
        }
    }

    /// Closes the listener and every connection.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            t.join().unwrap();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The second appliance (config/lab2.toml), run on a copy with `[directory]`.
struct Second {
    child: Child,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Second {
    fn start(directory: &str) -> Second {
        let dir = tempfile::tempdir().unwrap();
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lab2.toml"))
                .unwrap()
                .replace("state_dir = \"../state-lab2\"", "state_dir = \"state\"");
        let cfg = dir.path().join("lab2.toml");
        std::fs::write(&cfg, format!("{text}\n{directory}")).unwrap();
        let log = dir.path().join("sipedge.log");
        let child = Second::spawn(&cfg, &log);
        let mut s = Second { child, dir, log };
        s.wait_ready();
        s
    }

    fn spawn(cfg: &Path, log: &Path) -> Child {
        Command::new(env!("CARGO_BIN_EXE_sipedge"))
            .arg("--config")
            .arg(cfg)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    }

    /// Kills the process and starts it again on the same configuration and state.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Second::spawn(&self.config(), &self.log);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let agent = Agent::bind("127.0.0.2:0");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("lab2 exited ({st}); log:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "lab2 did not answer OPTIONS; log:\n{}",
                self.log_text()
            );
            agent.send_to(
                &options("sip:mediation2.lab.example", &agent),
                "127.0.0.7:5068",
            );
            if agent.recv_timeout(Duration::from_millis(200)).is_some() {
                return;
            }
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("lab2.toml")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Second {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("lab2 log:\n{}", self.log_text());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One admin API request; `(status, body)`.
fn http(addr: &str, method: &str, path: &str, token: &str, body: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}

/// bob calling France, as the appliance at `addr` decides it now: "forward" or "reject".
fn bob_to_france(addr: &str, token: &str) -> String {
    let (st, body) = http(
        addr,
        "GET",
        "/route/explain?from=bob@lab.example&to=%2B33144556677",
        token,
        None,
    );
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["decision"].as_str().unwrap().to_owned()
}

fn grant_api(addr: &str, token: &str, policy: &str) -> (u16, String) {
    http(
        addr,
        "POST",
        "/users/bob@lab.example/policy",
        token,
        Some(&format!("{{\"policy\":\"{policy}\"}}")),
    )
}

fn grant_cli(cfg: &Path, policy: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .arg("--config")
        .arg(cfg)
        .args([
            "user",
            "grant-policy",
            "bob@lab.example",
            "--policy",
            policy,
        ])
        .output()
        .unwrap()
}

/// Waits until `addr` decides `want` for bob; how long it took.
fn until_decision(addr: &str, token: &str, want: &str, within: Duration) -> Duration {
    let t = Instant::now();
    loop {
        if bob_to_france(addr, token) == want {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < within,
            "{addr} still does not decide {want} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn answers_options(ruri: &str, to: &str) -> bool {
    let agent = Agent::bind("127.0.0.2:0");
    for _ in 0..10 {
        agent.send_to(&options(ruri, &agent), to);
        if let Some((m, _)) = agent.recv_timeout(Duration::from_millis(300)) {
            return String::from_utf8_lossy(&m).starts_with("SIP/2.0 200");
        }
    }
    false
}

fn token_in(state: &Path) -> String {
    std::fs::read_to_string(state.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn two_appliances_share_one_postgresql_directory() {
    let Some(db) = TestDb::create() else {
        return;
    };
    let mut fwd = Forwarder::start(0);
    let port = fwd.port;
    let directory = format!(
        "[directory]\nurl = \"postgres://postgres@127.0.0.1:{port}/{}\"\n",
        db.name
    );
    let a = Lab::start_with(|t| format!("{t}\n{directory}"));
    let b = Second::start(&directory);
    let ta = token_in(&a.dir.path().join("state"));
    let tb = token_in(&b.dir.path().join("state"));
    let cfg_a = a.dir.path().join("sipedge.toml");

    // Both imported the configuration's users into the one database: bob may not call abroad.
    assert_eq!(bob_to_france(ADMIN_A, &ta), "reject");
    assert_eq!(bob_to_france(ADMIN_B, &tb), "reject");

    // Granted through A's API: in force on B within 1 s.
    let (st, body) = grant_api(ADMIN_A, &ta, "InternationalCallsAllowed");
    assert_eq!(st, 200, "{body}");
    let took = until_decision(ADMIN_B, &tb, "forward", PROPAGATION);
    eprintln!("A (API) → B: {took:?}");
    // And back through B's CLI: in force on A within 1 s.
    let out = grant_cli(&b.config(), "InternationalCallsDisallowed");
    assert!(out.status.success(), "{out:?}");
    let took = until_decision(ADMIN_A, &ta, "reject", PROPAGATION);
    eprintln!("B (CLI) → A: {took:?}");
    // B learns its own CLI's change the same way, through the database's notification.
    let took = until_decision(ADMIN_B, &tb, "reject", PROPAGATION);
    eprintln!("B (CLI) → B: {took:?}");

    // The database goes away: both keep routing from their snapshot and refuse changes.
    fwd.stop();
    std::thread::sleep(Duration::from_millis(300));
    assert!(answers_options(
        "sip:mediation.lab.example",
        "127.0.0.1:5068"
    ));
    assert!(answers_options(
        "sip:mediation2.lab.example",
        "127.0.0.7:5068"
    ));
    assert_eq!(bob_to_france(ADMIN_A, &ta), "reject");
    assert_eq!(bob_to_france(ADMIN_B, &tb), "reject");
    let (st, body) = grant_api(ADMIN_A, &ta, "InternationalCallsAllowed");
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("unreachable"), "{body}");
    let (st, body) = grant_api(ADMIN_B, &tb, "InternationalCallsAllowed");
    assert_eq!(st, 503, "{body}");
    let out = grant_cli(&b.config(), "InternationalCallsAllowed");
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unreachable"), "{err}");
    let out = grant_cli(&cfg_a, "InternationalCallsAllowed");
    assert!(!out.status.success(), "{out:?}");
    // Nothing changed anywhere, and both still route.
    assert_eq!(bob_to_france(ADMIN_A, &ta), "reject");
    assert_eq!(bob_to_france(ADMIN_B, &tb), "reject");
    let (st, _) = http(ADMIN_A, "GET", "/healthz", &ta, None);
    assert_eq!(st, 200);
    // Restarted while the database is down, B starts from the snapshot it kept, routes from it
    // and refuses changes.
    let mut b = b;
    b.restart();
    assert!(
        b.log_text().contains("routing from the last snapshot"),
        "{}",
        b.log_text()
    );
    assert_eq!(bob_to_france(ADMIN_B, &tb), "reject");
    let (st, body) = grant_api(ADMIN_B, &tb, "InternationalCallsAllowed");
    assert_eq!(st, 503, "{body}");

    // It returns (same address): no restart; both watchers reconnect and a change through
    // either appliance propagates again.
    let _fwd = Forwarder::start(port);
    let back = Instant::now();
    let reconnected = |log: &str| log.contains("directory database reachable again");
    while !(reconnected(&a.log_text()) && reconnected(&b.log_text())) {
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "the watchers did not reconnect; A:\n{}\nB:\n{}",
            a.log_text(),
            b.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("watchers back after {:?}", back.elapsed());
    let (st, body) = grant_api(ADMIN_B, &tb, "InternationalCallsAllowed");
    assert_eq!(st, 200, "{body}");
    let took = until_decision(ADMIN_A, &ta, "forward", PROPAGATION);
    eprintln!("after the outage, B (API) → A: {took:?}");
    let out = grant_cli(&cfg_a, "InternationalCallsDisallowed");
    assert!(out.status.success(), "{out:?}");
    let took = until_decision(ADMIN_B, &tb, "reject", PROPAGATION);
    eprintln!("after the outage, A (CLI) → B: {took:?}");
    assert!(a.log_text().contains("directory database unreachable"));
    drop(b);
    drop(a);
    drop(db);
}
