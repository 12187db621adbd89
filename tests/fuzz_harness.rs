//! The fuzz targets of `fuzz/` (plain functions in `fuzz/src/lib.rs`) run for a bounded time
//! without libFuzzer: each target's seeds are mutated (bit flips, byte edits, splices, cuts,
//! repeats, interesting values) by a seeded PRNG for `SIPEDGE_FUZZ_SECS` seconds per target
//! (default 2; `scripts/fuzz [secs]` runs them in release mode). A panic in a target fails the
//! test; the input is written to `target/fuzz-crashes/<target>-<n>.bin` and its seed printed, so
//! `cargo fuzz run <target> <file>` or this harness reproduces it. `SIPEDGE_FUZZ_TARGET` limits
//! the run to one target and `SIPEDGE_FUZZ_SEED` fixes the PRNG seed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// xorshift64*: small, seeded, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b" ",
    b":",
    b";",
    b"/",
    b"|",
    b"=",
    b"0",
    b"65535",
    b"4294967295",
    b"18446744073709551616",
    b"2^63",
    b"2^64",
    b"0.0.0.0",
    b"127.0.0.1",
    b"::1",
    b"224.0.0.1/255/3",
    b"IN IP6 ",
    b"m=audio 0 RTP/SAVP 0\r\n",
    b"c=IN IP4 ",
    b"a=rtcp:",
    b"a=rtcp-mux\r\n",
    b"a=crypto:",
    b"inline:",
    b"AES_CM_128_HMAC_SHA1_80 ",
    b"a=sendonly\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: 99999999\r\n",
    b"Via: SIP/2.0/UDP x;branch=z9hG4bK",
    b"$VIA",
    b"$TO",
    b";tag=",
    b"\x00",
    b"\xff\xff\xff\xff",
    b"\x80",
    b"\xc8",
];

/// One random edit of `input` (with `pool` for splices).
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, pool: &[Vec<u8>]) {
    let len = input.len();
    match rng.below(9) {
        0 if len > 0 => {
            let i = rng.below(len);
            input[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            input[i] = rng.next() as u8;
        }
        2 => {
            let i = rng.below(len + 1);
            input.insert(i, rng.next() as u8);
        }
        3 if len > 0 => {
            let i = rng.below(len);
            let n = 1 + rng.below((len - i).min(32));
            input.drain(i..i + n);
        }
        4 => {
            let t = TOKENS[rng.below(TOKENS.len())];
            let i = rng.below(len + 1);
            input.splice(i..i, t.iter().copied());
        }
        5 if !pool.is_empty() => {
            let other = &pool[rng.below(pool.len())];
            if !other.is_empty() {
                let a = rng.below(other.len());
                let b = a + 1 + rng.below(other.len() - a);
                let i = rng.below(len + 1);
                input.splice(i..i, other[a..b].iter().copied());
            }
        }
        6 if len > 0 => input.truncate(rng.below(len)),
        7 if len > 0 => {
            let i = rng.below(len);
            let n = 1 + rng.below((len - i).min(64));
            let chunk = input[i..i + n].to_vec();
            let at = rng.below(len + 1);
            input.splice(at..at, chunk);
        }
        _ if len > 0 => {
            // A digit run or a byte replaced by an extreme.
            let i = rng.below(len);
            input[i] = [b'0', b'9', 0x00, 0x7f, 0x80, 0xff][rng.below(6)];
        }
        _ => input.push(rng.next() as u8),
    }
    input.truncate(64 * 1024);
}

fn crash_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-crashes")
}

/// Runs `target` for `budget`; returns how many inputs ran, or the failing input.
fn run(name: &str, target: fn(&[u8]), budget: Duration, seed: u64) -> Result<u64, Vec<u8>> {
    let seeds = targets::seeds(name);
    let mut pool: Vec<Vec<u8>> = seeds.clone();
    pool.push(Vec::new());
    let mut rng = Rng(seed | 1);
    let start = Instant::now();
    let mut runs = 0u64;
    // The seeds themselves first.
    let mut queue: Vec<Vec<u8>> = pool.clone();
    while start.elapsed() < budget || !queue.is_empty() {
        let input = match queue.pop() {
            Some(i) => i,
            None => {
                let mut i = pool[rng.below(pool.len())].clone();
                for _ in 0..1 + rng.below(8) {
                    mutate(&mut rng, &mut i, &pool);
                }
                i
            }
        };
        if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            return Err(input);
        }
        runs += 1;
        // Keep some mutants as new starting points (bounded), so edits accumulate.
        if runs.is_multiple_of(16) && pool.len() < 256 {
            pool.push(input);
        }
    }
    Ok(runs)
}

#[test]
fn fuzz_targets_run_without_panic_for_their_budget() {
    let secs: f64 = std::env::var("SIPEDGE_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let only = std::env::var("SIPEDGE_FUZZ_TARGET").ok();
    let seed = std::env::var("SIPEDGE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let budget = Duration::from_secs_f64(secs);
    let mut failed = Vec::new();
    for (name, target) in targets::TARGETS {
        if only.as_deref().is_some_and(|o| o != *name) {
            continue;
        }
        assert!(!targets::seeds(name).is_empty(), "{name} has seeds");
        match run(name, *target, budget, seed) {
            Ok(runs) => eprintln!("fuzz {name}: {runs} inputs in {secs} s, no panic"),
            Err(input) => {
                std::fs::create_dir_all(crash_dir()).unwrap();
                let path = crash_dir().join(format!("{name}-{seed}.bin"));
                std::fs::write(&path, &input).unwrap();
                eprintln!(
                    "fuzz {name}: PANIC (seed {seed}), input in {}",
                    path.display()
                );
                failed.push(name);
            }
        }
    }
    assert!(failed.is_empty(), "targets panicked: {failed:?}");
}

/// The harness itself: a target that panics on a marker is caught, and its input returned.
#[test]
fn a_panicking_target_is_reported_with_its_input() {
    fn bomb(data: &[u8]) {
        assert!(!data.windows(2).any(|w| w == b"\r\n"), "found it");
    }
    let r = std::panic::catch_unwind(|| run("parse_message", bomb, Duration::from_millis(200), 7));
    let input = r
        .expect("run itself does not panic")
        .expect_err("the bomb goes off");
    assert!(input.windows(2).any(|w| w == b"\r\n"));
}
