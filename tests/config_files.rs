//! Every shipped configuration file loads, and an injected unknown key in any of its tables is
//! refused with the file, the key path and the line (the hickory-dns practice).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

use std::path::Path;

use sipedge::config::Config;

fn shipped() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no configuration shipped under {}",
        dir.display()
    );
    files
}

#[test]
fn every_shipped_config_loads() {
    for f in shipped() {
        Config::load(&f).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn an_unknown_key_is_refused_in_every_table() {
    for f in shipped() {
        let text = std::fs::read_to_string(&f).unwrap();
        // After each table header, inject a key nobody knows.
        let headers: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with('['))
            .collect();
        assert!(!headers.is_empty());
        for (idx, header) in headers {
            let mut lines: Vec<&str> = text.lines().collect();
            lines.insert(idx + 1, "surely_not_a_key = 1");
            let bad = lines.join("\n");
            let e = Config::from_toml(&f, &bad).expect_err(header);
            assert!(e.to_string().contains("surely_not_a_key"), "{header}: {e}");
            if header != "[hosts]" {
                // [hosts] is a map of names: its keys are data, refused by their value.
                assert!(e.reason.contains("unknown field"), "{header}: {e}");
                assert_eq!(e.line, Some(idx + 2), "{header}: {e}");
            }
            assert!(e.to_string().starts_with(&f.display().to_string()), "{e}");
        }
    }
}

#[test]
fn check_command_names_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sipedge.toml"))
            .unwrap()
            .replace("site = \"remote\"\n", "site = \"atlantis\"\n");
    std::fs::write(&cfg, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .args(["--config", cfg.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("gateways[2].site") && err.contains("atlantis"),
        "{err}"
    );
    // The shipped config passes.
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .args(["--config", "config/sipedge.toml", "check"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // … with its security warnings: the lab's cloud peer speaks UDP with SDES keys.
    let warned = String::from_utf8_lossy(&ok.stderr);
    assert!(
        warned.contains("warning: cloud_peer.transport = \"udp\"")
            && warned.contains("SDES keys (a=crypto) would travel in clear signalling"),
        "{warned}"
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("2 security warnings"));
    // A bad argument names the argument.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .args(["--log-format", "xml", "check"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--log-format"));
}
