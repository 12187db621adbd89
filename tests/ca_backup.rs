//! The site's CA on several appliances, through the CLI: `ca backup` on the lab appliance,
//! `ca restore` on the second one (config/lab2.toml), which then issues certificates that
//! OpenSSL verifies against the first appliance's root; a wrong passphrase is refused and
//! changes nothing; OpenSSL reads the backup as PKCS#12.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn config(dir: &Path, file: &str, state_dir_line: &str) -> PathBuf {
    let text = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(file),
    )
    .unwrap()
    .replace(state_dir_line, "state_dir = \"state\"");
    fs::create_dir_all(dir).unwrap();
    let p = dir.join(file);
    fs::write(&p, text).unwrap();
    p
}

fn sipedge(cfg: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sipedge"))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn backup_on_one_appliance_restore_on_another_same_root() {
    let tmp = tempfile::tempdir().unwrap();
    let a = config(
        &tmp.path().join("a"),
        "sipedge.toml",
        "state_dir = \"../state\"",
    );
    let b = config(
        &tmp.path().join("b"),
        "lab2.toml",
        "state_dir = \"../state-lab2\"",
    );
    let pass = tmp.path().join("pass");
    fs::write(&pass, "site lab backup passphrase\n").unwrap();
    let wrong = tmp.path().join("wrong");
    fs::write(&wrong, "not the passphrase\n").unwrap();
    let backup = tmp.path().join("site-lab-ca.p12");

    let o = sipedge(&a, &["ca", "init", "--key-type", "ecdsa-p256"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = sipedge(
        &a,
        &[
            "ca",
            "backup",
            "--out",
            s(&backup),
            "--passphrase-file",
            s(&pass),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A wrong passphrase: exit status 1, no CA on b.
    let o = sipedge(
        &b,
        &["ca", "restore", s(&backup), "--passphrase-file", s(&wrong)],
    );
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("wrong password"), "{}", text(&o));
    assert!(!tmp.path().join("b/state/ca/ca.key").exists());

    let o = sipedge(
        &b,
        &["ca", "restore", s(&backup), "--passphrase-file", s(&pass)],
    );
    assert!(o.status.success(), "{}", text(&o));
    let root_a = tmp.path().join("a/state/ca/ca.pem");
    let root_b = tmp.path().join("b/state/ca/ca.pem");
    assert_eq!(fs::read(&root_a).unwrap(), fs::read(&root_b).unwrap());

    // The second appliance issues a gateway certificate: it chains to the first one's root.
    let out = tmp.path().join("issued");
    let o = sipedge(
        &b,
        &["ca", "issue", "--name", "gw1.lab.example", "--out", s(&out)],
    );
    assert!(o.status.success(), "{}", text(&o));
    let v = Command::new("openssl")
        .args(["verify", "-CAfile", s(&root_a)])
        .arg(out.join("gw1.lab.example.crt"))
        .output()
        .expect("the openssl CLI must be installed for this test");
    assert!(v.status.success(), "{}", text(&v));

    // OpenSSL reads the backup with the passphrase (and only with it).
    let pk = |p: &Path| {
        Command::new("openssl")
            .args(["pkcs12", "-in", s(&backup), "-noout", "-passin"])
            .arg(format!("file:{}", s(p)))
            .output()
            .unwrap()
    };
    assert!(pk(&pass).status.success());
    assert!(!pk(&wrong).status.success());
}
