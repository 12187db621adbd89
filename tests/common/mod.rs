//! Shared harness for the lab integration tests: runs the real `sipedge` binary on a copy of
//! the lab configuration, plus small SIP agents on loopback and a sipp runner.
#![allow(dead_code)]

pub mod sans_io;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The lab listens on fixed ports: tests in one binary take turns (this mutex), and so do
/// test binaries and other worktrees on the machine (an flock on [`LAB_LOCK_FILE`]).
static LAB_LOCK: Mutex<()> = Mutex::new(());
pub const LAB_LOCK_FILE: &str = "/tmp/sipedge-lab.lock";

/// Holds the machine-wide lab lock until dropped.
pub struct MachineLock(std::fs::File);

impl MachineLock {
    pub fn acquire() -> MachineLock {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LAB_LOCK_FILE)
            .expect("open lab lock file");
        // An OS advisory lock: released when the file closes, or the process dies.
        f.lock().expect("lock the lab lock file");
        MachineLock(f)
    }
}

/// How long a lab appliance may take to answer its first OPTIONS.
const READY_TIMEOUT_S: u64 = 60;

pub fn lab_config_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sipedge.toml"))
        .unwrap()
}

/// A running appliance; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Lab {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    _machine: MachineLock,
    _guard: MutexGuard<'static, ()>,
}

impl Lab {
    /// Starts the appliance on the lab config, with `edit` applied to its text.
    pub fn start_with(edit: impl FnOnce(String) -> String) -> Lab {
        let guard = LAB_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let machine = MachineLock::acquire();
        let dir = tempfile::tempdir().unwrap();
        let text =
            edit(lab_config_text()).replace("state_dir = \"../state\"", "state_dir = \"state\"");
        let cfg = dir.path().join("sipedge.toml");
        std::fs::write(&cfg, text).unwrap();
        let log = dir.path().join("sipedge.log");
        let child = Command::new(env!("CARGO_BIN_EXE_sipedge"))
            .arg("--config")
            .arg(&cfg)
            .arg("--log-level")
            .arg(std::env::var("SIPEDGE_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .arg("run")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn sipedge");
        let mut lab = Lab {
            child,
            dir,
            log,
            _machine: machine,
            _guard: guard,
        };
        lab.wait_ready();
        lab
    }

    pub fn start() -> Lab {
        Lab::start_with(|t| t)
    }

    /// Waits until the appliance answers OPTIONS. The first start creates an RSA-3072 root CA
    /// and issues our certificates, which takes seconds on a loaded 2-core machine (a debug
    /// build shares it with other test binaries): the bound is generous, and an early exit of
    /// the process is reported at once.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(READY_TIMEOUT_S);
        let agent = Agent::bind("127.0.0.2:0");
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "sipedge exited ({st}) before it was ready; log:\n{}",
                    self.log_text()
                );
            }
            agent.send_to(
                &options("sip:mediation.lab.example", &agent),
                "127.0.0.1:5068",
            );
            if agent.recv_timeout(Duration::from_millis(200)).is_some() {
                return;
            }
        }
        panic!(
            "sipedge did not answer OPTIONS within {READY_TIMEOUT_S} s; log:\n{}",
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "sipedge did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep the appliance's log of a failed test for inspection.
            let keep = std::env::temp_dir().join(format!("sipedge-failed-{}.log", self.child.id()));
            let _ = std::fs::copy(&self.log, &keep);
            eprintln!("sipedge log kept in {}", keep.display());
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A UDP SIP agent on a loopback address.
pub struct Agent {
    pub sock: UdpSocket,
}

impl Agent {
    pub fn bind(addr: &str) -> Agent {
        let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        Agent { sock }
    }
    pub fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }
    pub fn send_to(&self, msg: &[u8], to: &str) {
        self.sock.send_to(msg, to).unwrap();
    }
    pub fn recv_timeout(&self, t: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        self.sock.set_read_timeout(Some(t)).unwrap();
        let mut buf = vec![0u8; 65536];
        match self.sock.recv_from(&mut buf) {
            Ok((n, from)) => Some((buf[..n].to_vec(), from)),
            Err(_) => None,
        }
    }
    /// Waits for a message whose first line contains `needle`, skipping others.
    pub fn expect(&self, needle: &str, t: Duration) -> String {
        let deadline = Instant::now() + t;
        while Instant::now() < deadline {
            if let Some((m, _)) =
                self.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                let s = String::from_utf8_lossy(&m).into_owned();
                if s.lines().next().unwrap_or("").contains(needle) {
                    return s;
                }
            }
        }
        panic!("no message with {needle:?} within {t:?}");
    }
}

pub fn options(ruri: &str, agent: &Agent) -> Vec<u8> {
    let a = agent.addr();
    let n: u64 = rand_u64();
    format!(
        "OPTIONS {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bK-opt-{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{a}>;tag={n}\r\nTo: <{ruri}>\r\n\
         Call-ID: opt-{n}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// Header value of `name` in a message text.
pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The RFC corpus kept in the repository (`tests/corpus`, with its `manifest.tsv`).
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// A test that cannot run without `tool`: under CI that is a failure, never a silent pass;
/// elsewhere one line on the real stderr (not captured by the test harness) says it was skipped.
pub fn skip_without(tool: &str, install: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{tool} is required under CI ({install})");
    }
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let line = format!("SKIPPED {test}: {tool} not installed ({install}; CI fails instead)\n");
    use std::io::Write;
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Is sipp installed? When not, the test is skipped (see [`skip_without`]).
pub fn sipp_available() -> bool {
    let ok = Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        skip_without("sipp", "apt-get install sip-tester");
    }
    ok
}

pub fn sipp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp")
}

/// A sipp process; killed when dropped.
pub struct Sipp {
    pub child: Child,
    pub name: String,
    pub stat_dir: tempfile::TempDir,
}

impl Sipp {
    /// Starts sipp with `args` (in a scratch directory for its logs).
    pub fn spawn(name: &str, args: &[&str]) -> Sipp {
        let stat_dir = tempfile::tempdir().unwrap();
        let child = Command::new("sipp")
            .args(args)
            .current_dir(stat_dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sipp");
        Sipp {
            child,
            name: name.into(),
            stat_dir,
        }
    }

    /// Waits for exit within `t`; returns the exit code (0 = every call succeeded).
    pub fn wait(&mut self, t: Duration) -> i32 {
        let deadline = Instant::now() + t;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "sipp {} did not finish within {t:?}; {}",
                    self.name,
                    self.errors()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The first lines of sipp's error log, for failure messages.
    pub fn errors(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = std::fs::read_dir(self.stat_dir.path()) {
            for e in rd.flatten() {
                let p = e.path();
                if p.to_string_lossy().contains("error") {
                    if let Ok(f) = std::fs::File::open(&p) {
                        for l in BufReader::new(f).lines().take(40).map_while(Result::ok) {
                            out.push_str(&l);
                            out.push('\n');
                        }
                    }
                }
            }
        }
        out
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
