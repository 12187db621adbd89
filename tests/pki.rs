//! CA life cycle in a temporary state directory, cross-checked with the
//! `openssl` command line and x509-parser.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a failed unwrap is a failed test

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sipedge::pki::{
    appliance_certs, check_edge_cert, show_cert, ApplianceCertRequest, CaStore, CertStatus,
    IssueRequest, KeyType, NamePolicy, Origin, PkiError, RevokeReason, RevokeTarget, Severity,
};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

fn policy() -> NamePolicy {
    NamePolicy::new([
        "gw1.lab.example",
        "gw2.lab.example",
        "10.20.30.40",
        "med.lab.example",
        "edge.lab.example",
    ])
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl CLI must be installed for these tests");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn der_of(path: &Path) -> Vec<u8> {
    let data = fs::read(path).expect("read");
    CertificateDer::from_pem_slice(&data)
        .expect("PEM cert")
        .as_ref()
        .to_vec()
}

struct Ctx {
    _dir: tempfile::TempDir,
    state: PathBuf,
    out: PathBuf,
    store: CaStore,
}

fn ca(key_type: KeyType) -> Ctx {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let out = dir.path().join("out");
    let store = CaStore::init(&state, key_type, 3650, false).expect("init");
    Ctx {
        _dir: dir,
        state,
        out,
        store,
    }
}

#[test]
fn init_layout_modes_and_refusal() {
    let c = ca(KeyType::EcdsaP256);
    assert_eq!(mode(&c.store.root_key_path()), 0o600);
    assert_eq!(mode(&c.store.ca_dir()), 0o700);
    assert!(c.store.crl_path().exists());
    assert!(c.store.list().expect("list").is_empty());

    // The root: CA:TRUE, keyCertSign + cRLSign, serial >= 64 bits.
    let der = der_of(&c.store.root_cert_path());
    let (_, root) = x509_parser::parse_x509_certificate(&der).expect("x509");
    assert!(root.is_ca());
    assert!(root.raw_serial().len() >= 8);
    let ku = root.key_usage().expect("ku").expect("ku present").value;
    assert!(ku.key_cert_sign() && ku.crl_sign());

    // A second init refuses and leaves the CA alone.
    let before = fs::read(c.store.root_key_path()).expect("key");
    let err = CaStore::init(&c.state, KeyType::Rsa3072, 3650, false).expect_err("exists");
    assert!(matches!(err, PkiError::CaExists(_)), "{err}");
    assert!(err.to_string().contains("--force"));
    assert_eq!(fs::read(c.store.root_key_path()).expect("key"), before);

    // --force keeps a timestamped backup.
    CaStore::init(&c.state, KeyType::EcdsaP256, 3650, true).expect("force init");
    let backups: Vec<PathBuf> = fs::read_dir(&c.state)
        .expect("readdir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ca.backup-"))
        })
        .collect();
    assert_eq!(backups.len(), 1);
    assert_eq!(
        fs::read(backups[0].join("ca.key")).expect("backup key"),
        before
    );
    assert_ne!(fs::read(c.store.root_key_path()).expect("key"), before);
}

#[test]
fn issue_rsa_gateway_cert_openssl_verifies() {
    let c = ca(KeyType::Rsa3072);
    let mut req = IssueRequest::new("GW1.lab.example", &c.out);
    req.ips = vec!["192.0.2.7".parse().expect("ip")];
    let issued = c.store.issue(&policy(), &req).expect("issue");
    let key = issued.key_path.clone().expect("key path");
    let p12 = issued.p12_path.clone().expect("p12");
    let pass = issued
        .p12_password_path
        .clone()
        .expect("generated password");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&p12), 0o600);
    assert_eq!(mode(&pass), 0o600);
    assert_eq!(mode(&issued.cert_path), 0o644);

    let root = c.store.root_cert_path();
    let (ok, text) = openssl(&["verify", "-CAfile", s(&root), s(&issued.cert_path)]);
    assert!(ok && text.contains(": OK"), "{text}");
    let (ok, text) = openssl(&[
        "verify",
        "-purpose",
        "sslclient",
        "-CAfile",
        s(&root),
        s(&issued.cert_path),
    ]);
    assert!(ok, "clientAuth purpose: {text}");

    // The bundle opens with OpenSSL 3 defaults (no -legacy needed).
    let passin = format!("file:{}", s(&pass));
    let (ok, text) = openssl(&[
        "pkcs12",
        "-info",
        "-nokeys",
        "-in",
        s(&p12),
        "-passin",
        &passin,
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("MAC: sha256"), "{text}");
    assert!(text.contains("CN = gw1.lab.example"), "{text}");
    let (ok, text) = openssl(&[
        "pkcs12",
        "-in",
        s(&p12),
        "-passin",
        &passin,
        "-nocerts",
        "-nodes",
    ]);
    assert!(ok && text.contains("BEGIN PRIVATE KEY"), "{text}");
    let (ok, _) = openssl(&[
        "pkcs12",
        "-info",
        "-nokeys",
        "-in",
        s(&p12),
        "-passin",
        "pass:wrong",
    ]);
    assert!(!ok, "a wrong password must fail the MAC");

    // Profile: CN, SANs, EKU, CA:FALSE, key usage, 64+ bit serial.
    let der = der_of(&issued.cert_path);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok()),
        Some("gw1.lab.example")
    );
    let san = cert
        .subject_alternative_name()
        .expect("san")
        .expect("san present")
        .value;
    assert!(san
        .general_names
        .iter()
        .any(|g| matches!(g, GeneralName::DNSName("gw1.lab.example"))));
    assert!(san
        .general_names
        .iter()
        .any(|g| matches!(g, GeneralName::IPAddress(&[192, 0, 2, 7]))));
    let eku = cert
        .extended_key_usage()
        .expect("eku")
        .expect("eku present")
        .value;
    assert!(eku.server_auth && eku.client_auth);
    let bc = cert
        .basic_constraints()
        .expect("bc")
        .expect("bc present")
        .value;
    assert!(!bc.ca);
    let ku = cert.key_usage().expect("ku").expect("ku present").value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    assert!(cert.raw_serial().len() >= 8);
    assert_eq!(cert.public_key().parsed().expect("key").key_size(), 3072);

    // Chain file: leaf then root.
    let chain = fs::read(&issued.chain_path).expect("chain");
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<Vec<_>, _>>()
        .expect("chain pem");
    assert_eq!(certs.len(), 2);
    assert_eq!(certs[1].as_ref(), der_of(&root).as_slice());

    // Index survives a fresh handle.
    let entries = CaStore::open(&c.state).list().expect("list");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].serial, issued.serial);
    assert_eq!(entries[0].name, "gw1.lab.example");
    assert_eq!(entries[0].status, CertStatus::Valid);
    assert_eq!(entries[0].origin, Origin::Issued);
    assert_eq!(mode(&c.store.index_path()), 0o600);
}

#[test]
fn issue_refuses_unconfigured_names_and_existing_files() {
    let c = ca(KeyType::EcdsaP256);
    let err = c
        .store
        .issue(&policy(), &IssueRequest::new("rogue.example", &c.out))
        .expect_err("not configured");
    assert!(matches!(err, PkiError::NameNotAllowed { .. }), "{err}");
    assert!(err.to_string().contains("rogue.example"));

    let mut forced = IssueRequest::new("rogue.example", &c.out);
    forced.force = true;
    c.store.issue(&policy(), &forced).expect("forced");

    // IP-named gateway: CN and IP SAN, no DNS SAN; given password honoured.
    let mut req = IssueRequest::new("10.20.30.40", &c.out);
    req.p12_password = Some("correct horse".into());
    let issued = c.store.issue(&policy(), &req).expect("ip issue");
    assert!(issued.p12_password_path.is_none());
    let info = show_cert(
        issued.p12_path.as_deref().expect("p12"),
        Some("correct horse"),
    )
    .expect("show p12");
    assert_eq!(info.sans, vec!["IP:10.20.30.40".to_string()]);
    assert_eq!(info.subject_cn.as_deref(), Some("10.20.30.40"));

    // Same name again without force: the files exist.
    let err = c
        .store
        .issue(&policy(), &IssueRequest::new("10.20.30.40", &c.out))
        .expect_err("exists");
    assert!(matches!(err, PkiError::FileExists(_)), "{err}");
}

#[test]
fn csr_pitfall_only_public_key_is_kept() {
    let c = ca(KeyType::EcdsaP256);
    // A CSR asking for CA:TRUE, an extra SAN, keyCertSign and a far expiry
    // (expiry cannot even be expressed in PKCS#10; rcgen ignores it).
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::new(vec![
        "gw2.lab.example".to_string(),
        "evil.example".to_string(),
    ])
    .expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    params.not_after = rcgen::date_time_ymd(2099, 1, 1);
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "Totally A CA");
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key).expect("csr");
    let csr_pem = csr.pem().expect("pem");

    let issued = c
        .store
        .sign_csr(&policy(), &csr_pem, "gw2.lab.example", &c.out, false)
        .expect("sign");
    assert!(issued.key_path.is_none() && issued.p12_path.is_none());
    let der = der_of(&issued.cert_path);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("x509");
    // Same public key as the CSR.
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    // None of what was asked.
    assert!(!cert.is_ca());
    let mut dns = Vec::new();
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for g in &san.general_names {
                    if let GeneralName::DNSName(d) = g {
                        dns.push(d.to_string());
                    }
                }
            }
            ParsedExtension::BasicConstraints(bc) => assert!(!bc.ca),
            ParsedExtension::KeyUsage(ku) => assert!(!ku.key_cert_sign()),
            _ => {}
        }
    }
    assert_eq!(dns, vec!["gw2.lab.example".to_string()]);
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok()),
        Some("gw2.lab.example")
    );
    let days =
        (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()) / 86_400;
    assert!(days <= 366, "validity {days} days");
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        s(&c.store.root_cert_path()),
        s(&issued.cert_path),
    ]);
    assert!(ok, "{text}");
    let entries = c.store.list().expect("list");
    assert_eq!(entries[0].origin, Origin::Csr);

    // A tampered CSR (signature no longer verifies) is refused.
    let mut der = csr.der().as_ref().to_vec();
    let last = der.len() - 3;
    der[last] ^= 0x55;
    let tampered = pem_wrap("CERTIFICATE REQUEST", &der);
    let err = c
        .store
        .sign_csr(&policy(), &tampered, "gw2.lab.example", &c.out, true)
        .expect_err("bad signature");
    assert!(err.to_string().contains("signature"), "{err}");

    // Renewing a CSR-signed certificate is refused (we have no key).
    let err = c.store.renew("gw2.lab.example").expect_err("csr renew");
    assert!(err.to_string().contains("CSR"), "{err}");
}

#[test]
fn openssl_csr_with_ca_true_is_tamed() {
    let c = ca(KeyType::Rsa3072);
    let tmp = c.out.parent().expect("parent").join("csr");
    fs::create_dir_all(&tmp).expect("mkdir");
    let key = tmp.join("k.pem");
    let csr = tmp.join("r.csr");
    let (ok, text) = openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        s(&key),
        "-out",
        s(&csr),
        "-subj",
        "/CN=evil-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "subjectAltName=DNS:gw1.lab.example,DNS:evil.example",
    ]);
    assert!(ok, "{text}");
    let pem = fs::read_to_string(&csr).expect("csr");
    let issued = c
        .store
        .sign_csr(&policy(), &pem, "gw1.lab.example", &c.out, false)
        .expect("sign");
    let info = show_cert(&issued.cert_path, None).expect("show");
    assert!(!info.is_ca);
    assert_eq!(info.sans, vec!["DNS:gw1.lab.example".to_string()]);
    assert_eq!(info.key_bits, 2048);
}

fn pem_wrap(label: &str, der: &[u8]) -> String {
    // Minimal base64 for the test (standard alphabet, padded).
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("ascii"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[test]
fn export_pem_der_p7b() {
    let c = ca(KeyType::EcdsaP256);
    let exp = c.store.export(&c.out).expect("export");
    let pem_der = der_of(&exp.pem);
    assert_eq!(fs::read(&exp.der).expect("der"), pem_der);
    let (ok, text) = openssl(&[
        "pkcs7",
        "-print_certs",
        "-inform",
        "DER",
        "-in",
        s(&exp.p7b),
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("sipedge root CA"), "{text}");
    assert!(text.contains("BEGIN CERTIFICATE"), "{text}");
    let (ok, text) = openssl(&[
        "x509",
        "-inform",
        "DER",
        "-in",
        s(&exp.der),
        "-noout",
        "-subject",
    ]);
    assert!(ok && text.contains("sipedge root CA"), "{text}");
}

#[test]
fn revoke_writes_crl_and_renew_supersedes() {
    let c = ca(KeyType::EcdsaP256);
    let gw1 = c
        .store
        .issue(&policy(), &IssueRequest::new("gw1.lab.example", &c.out))
        .expect("gw1");
    let gw2 = c
        .store
        .issue(&policy(), &IssueRequest::new("gw2.lab.example", &c.out))
        .expect("gw2");

    // Revoke gw1 by name, gw2 stays valid.
    let revoked = c
        .store
        .revoke(
            &RevokeTarget::Name("GW1.lab.example".into()),
            RevokeReason::KeyCompromise,
        )
        .expect("revoke");
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].serial, gw1.serial);

    let crl_der = c.store.crl_der().expect("crl");
    let (_, crl) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&crl_der).expect("crl");
    let serials: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|r| r.raw_serial().iter().map(|b| format!("{b:02X}")).collect())
        .collect();
    assert_eq!(serials, vec![gw1.serial.clone()]);

    let root = c.store.root_cert_path();
    let crl_path = c.store.crl_path();
    let (ok, text) = openssl(&[
        "verify",
        "-crl_check",
        "-CRLfile",
        s(&crl_path),
        "-CAfile",
        s(&root),
        s(&gw1.cert_path),
    ]);
    assert!(!ok && text.contains("revoked"), "{text}");
    let (ok, text) = openssl(&[
        "verify",
        "-crl_check",
        "-CRLfile",
        s(&crl_path),
        "-CAfile",
        s(&root),
        s(&gw2.cert_path),
    ]);
    assert!(ok, "{text}");

    // By serial, in openssl's colon form: gw2; revoking twice is an error.
    let colon: Vec<String> = gw2
        .serial
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_lowercase())
        .collect();
    c.store
        .revoke(
            &RevokeTarget::Serial(colon.join(":")),
            RevokeReason::Superseded,
        )
        .expect("revoke by serial");
    assert!(c
        .store
        .revoke(
            &RevokeTarget::Serial(gw2.serial.clone()),
            RevokeReason::Unspecified
        )
        .is_err());
    assert!(matches!(
        c.store.revoke(
            &RevokeTarget::Name("nobody.example".into()),
            RevokeReason::Unspecified
        ),
        Err(PkiError::NotFound(_))
    ));

    // Renew: a fresh gateway certificate, then renew it.
    let mut req = IssueRequest::new("med.lab.example", &c.out);
    req.days = 90;
    let first = c.store.issue(&policy(), &req).expect("issue");
    let second = c.store.renew("med.lab.example").expect("renew");
    assert_ne!(first.serial, second.serial);
    assert_eq!(second.cert_path, first.cert_path);
    let info = show_cert(&second.cert_path, None).expect("show");
    assert_eq!(info.serial, second.serial);
    assert_eq!((info.not_after - info.not_before).whole_days(), 90);

    let entries = CaStore::open(&c.state).list().expect("list");
    let status = |serial: &str| {
        entries
            .iter()
            .find(|e| e.serial == serial)
            .map(|e| (e.status, e.revocation.map(|r| r.0)))
    };
    assert_eq!(
        status(&gw1.serial),
        Some((CertStatus::Revoked, Some(RevokeReason::KeyCompromise)))
    );
    assert_eq!(
        status(&gw2.serial),
        Some((CertStatus::Revoked, Some(RevokeReason::Superseded)))
    );
    assert_eq!(status(&first.serial), Some((CertStatus::Superseded, None)));
    assert_eq!(status(&second.serial), Some((CertStatus::Valid, None)));
}

#[test]
fn show_cert_pem_der_p12_and_openssl_made_p12() {
    let c = ca(KeyType::Rsa3072);
    let mut req = IssueRequest::new("gw1.lab.example", &c.out);
    req.p12_password = Some("pw-1".into());
    let issued = c.store.issue(&policy(), &req).expect("issue");

    let pem = show_cert(&issued.cert_path, None).expect("pem");
    assert_eq!(pem.format, "PEM");
    assert_eq!(pem.serial, issued.serial);
    assert_eq!(pem.key_type, "RSA");
    assert_eq!(pem.key_bits, 3072);
    assert_eq!(
        pem.eku,
        vec!["serverAuth".to_string(), "clientAuth".to_string()]
    );
    assert!(pem.issuer.contains("sipedge root CA"));
    assert_eq!(pem.sha256_fingerprint.len(), 32 * 3 - 1);

    let der_path = c.out.join("gw1.der");
    fs::write(&der_path, der_of(&issued.cert_path)).expect("write der");
    let der = show_cert(&der_path, None).expect("der");
    assert_eq!(der.format, "DER");
    assert_eq!(der.sha256_fingerprint, pem.sha256_fingerprint);

    let p12_path = issued.p12_path.clone().expect("p12");
    let p12 = show_cert(&p12_path, Some("pw-1")).expect("p12");
    assert_eq!(p12.format, "PKCS#12");
    assert_eq!(p12.serial, issued.serial);
    assert_eq!(p12.chain_len, 2);
    assert!(show_cert(&p12_path, Some("nope")).is_err());
    let err = show_cert(&p12_path, None).expect_err("needs password");
    assert!(err.to_string().contains("password"), "{err}");

    // A bundle written by OpenSSL 3 with its defaults (AES-256-CBC for the
    // certificates too, SHA-256 MAC) reads as well.
    let theirs = c.out.join("openssl.p12");
    let (ok, text) = openssl(&[
        "pkcs12",
        "-export",
        "-in",
        s(&issued.chain_path),
        "-inkey",
        s(issued.key_path.as_deref().expect("key")),
        "-out",
        s(&theirs),
        "-passout",
        "pass:other-pw",
    ]);
    assert!(ok, "{text}");
    let info = show_cert(&theirs, Some("other-pw")).expect("openssl p12");
    assert_eq!(info.serial, issued.serial);
    assert_eq!(info.chain_len, 2);
}

#[test]
fn appliance_certs_satisfy_edge_rules() {
    let c = ca(KeyType::EcdsaP256);
    let req = ApplianceCertRequest {
        mediation_fqdn: "med.lab.example".into(),
        access_edge_fqdn: "edge.lab.example".into(),
        sip_domains: vec!["contoso.example".into(), "fabrikam.example".into()],
        out_dir: c.out.clone(),
        days: 365,
    };
    let certs = appliance_certs(&c.store, &req).expect("appliance");
    assert!(certs.issued_cloud_side && certs.issued_gateway_side);
    let cloud = show_cert(&certs.cloud_side.cert_path, None).expect("show");
    assert_eq!(cloud.subject_cn.as_deref(), Some("edge.lab.example"));
    assert_eq!(
        cloud.sans,
        vec![
            "DNS:edge.lab.example".to_string(),
            "DNS:sip.contoso.example".to_string(),
            "DNS:sip.fabrikam.example".to_string()
        ]
    );
    let gw = show_cert(&certs.gateway_side.cert_path, None).expect("show");
    assert_eq!(gw.sans, vec!["DNS:med.lab.example".to_string()]);

    // Idempotent: a second call keeps both.
    let again = appliance_certs(&c.store, &req).expect("again");
    assert!(!again.issued_cloud_side && !again.issued_gateway_side);
    assert_eq!(again.cloud_side.serial, certs.cloud_side.serial);
    // With another SIP domain only the cloud side is re-issued.
    let mut more = req.clone();
    more.sip_domains.push("northwind.example".into());
    let third = appliance_certs(&c.store, &more).expect("third");
    assert!(third.issued_cloud_side && !third.issued_gateway_side);
    // After `init --force` (new root) both are re-issued.
    CaStore::init(&c.state, KeyType::EcdsaP256, 3650, true).expect("reinit");
    let fourth = appliance_certs(&c.store, &req).expect("fourth");
    assert!(fourth.issued_cloud_side && fourth.issued_gateway_side);
    let certs = fourth;

    let load = |p: &Path| CertificateDer::from_pem_file(p).expect("cert");
    let key = PrivateKeyDer::from_pem_file(certs.cloud_side.key_path.as_deref().expect("key"))
        .expect("key");
    let cert = load(&certs.cloud_side.cert_path);
    let root = load(&c.store.root_cert_path());
    let domains = req.sip_domains.clone();
    let now = SystemTime::now();
    let findings = check_edge_cert(
        &cert,
        &key,
        std::slice::from_ref(&root),
        "edge.lab.example",
        &domains,
        now,
    );
    assert!(findings.is_empty(), "{findings:?}");

    // The gateway-side certificate used as an edge cert: wrong CN, missing
    // SANs, wrong key; no chain.
    let other_key =
        PrivateKeyDer::from_pem_file(certs.gateway_side.key_path.as_deref().expect("key"))
            .expect("key");
    let findings = check_edge_cert(&cert, &other_key, &[], "edge.lab.example", &domains, now);
    let texts: Vec<String> = findings.iter().map(ToString::to_string).collect();
    assert!(
        texts.iter().any(|t| t.contains("does not match")),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("no certificate chain")),
        "{texts:?}"
    );
    let gw_cert = load(&certs.gateway_side.cert_path);
    let findings = check_edge_cert(
        &gw_cert,
        &other_key,
        std::slice::from_ref(&root),
        "edge.lab.example",
        &domains,
        now,
    );
    let texts: Vec<String> = findings.iter().map(ToString::to_string).collect();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("subject CN is med.lab.example")),
        "{texts:?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("no DNS SAN sip.contoso.example")),
        "{texts:?}"
    );

    // Expiry window: warning under 30 days, error after.
    let in_350_days = now + std::time::Duration::from_secs(350 * 86_400);
    let f = check_edge_cert(
        &cert,
        &key,
        std::slice::from_ref(&root),
        "edge.lab.example",
        &domains,
        in_350_days,
    );
    assert!(
        f.len() == 1 && f[0].severity == Severity::Warning && f[0].text.contains("expires in"),
        "{f:?}"
    );
    let in_400_days = now + std::time::Duration::from_secs(400 * 86_400);
    let f = check_edge_cert(
        &cert,
        &key,
        std::slice::from_ref(&root),
        "edge.lab.example",
        &domains,
        in_400_days,
    );
    assert!(
        f.iter()
            .any(|x| x.severity == Severity::Error && x.text.contains("expired")),
        "{f:?}"
    );
    let last_year = now - std::time::Duration::from_secs(365 * 86_400);
    let f = check_edge_cert(
        &cert,
        &key,
        &[root],
        "edge.lab.example",
        &domains,
        last_year,
    );
    assert!(
        f.iter().any(|x| x.text.contains("not valid before")),
        "{f:?}"
    );

    // A sip.<domain> subject is called out explicitly.
    let mut bad = IssueRequest::new("sip.contoso.example", &c.out);
    bad.force = true;
    let wrong = c.store.issue(&policy(), &bad).expect("issue");
    let wrong_key =
        PrivateKeyDer::from_pem_file(wrong.key_path.as_deref().expect("key")).expect("k");
    let f = check_edge_cert(
        &load(&wrong.cert_path),
        &wrong_key,
        &[load(&c.store.root_cert_path())],
        "edge.lab.example",
        &domains,
        now,
    );
    assert!(
        f.iter().any(|x| x.text.contains("never in the subject")),
        "{f:?}"
    );
}

#[test]
fn cli_end_to_end() {
    use sipedge::pki::cli::{run_ca_to, run_cert_to, CaCommand, CertCommand, PkiContext};
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = PkiContext {
        state_dir: dir.path().join("state"),
        policy: policy(),
    };
    let out_dir = dir.path().join("out");
    let mut buf = Vec::new();
    run_ca_to(
        CaCommand::Init {
            key_type: KeyType::EcdsaP256,
            days: 30,
            force: false,
        },
        &ctx,
        &mut buf,
    )
    .expect("init");
    let pw = dir.path().join("pw");
    fs::write(&pw, "s3cret\n").expect("pw");
    run_ca_to(
        CaCommand::Issue {
            name: "gw1.lab.example".into(),
            ip: vec![],
            days: 10,
            out: out_dir.clone(),
            p12_password_file: Some(pw.clone()),
            force: false,
        },
        &ctx,
        &mut buf,
    )
    .expect("issue");
    run_ca_to(CaCommand::List, &ctx, &mut buf).expect("list");
    run_ca_to(
        CaCommand::Revoke {
            serial: None,
            name: Some("gw1.lab.example".into()),
            reason: RevokeReason::CessationOfOperation,
        },
        &ctx,
        &mut buf,
    )
    .expect("revoke");
    run_ca_to(CaCommand::List, &ctx, &mut buf).expect("list");
    run_cert_to(
        CertCommand::Show {
            file: out_dir.join("gw1.lab.example.p12"),
            password_file: Some(pw),
        },
        &mut buf,
    )
    .expect("show");
    let text = String::from_utf8(buf).expect("utf-8");
    assert!(
        text.contains("root CA (ECDSA-P256, 30 days) created"),
        "{text}"
    );
    assert!(text.contains("issued gw1.lab.example serial"), "{text}");
    assert!(text.contains("valid"), "{text}");
    assert!(text.contains("revoked (cessation-of-operation"), "{text}");
    assert!(text.contains("Format:       PKCS#12"), "{text}");
    assert!(
        text.contains("EKU:          serverAuth, clientAuth"),
        "{text}"
    );

    // Errors name the argument / file.
    let mut sink = Vec::new();
    let err = run_ca_to(
        CaCommand::Sign {
            csr: dir.path().join("missing.csr"),
            name: "gw1.lab.example".into(),
            out: out_dir.clone(),
            force: false,
        },
        &ctx,
        &mut sink,
    )
    .expect_err("missing csr");
    assert!(err.to_string().contains("missing.csr"), "{err}");
    let bad_csr = dir.path().join("bad.csr");
    fs::write(
        &bad_csr,
        "-----BEGIN CERTIFICATE REQUEST-----\nMAA=\n-----END CERTIFICATE REQUEST-----\n",
    )
    .expect("write");
    let err = run_ca_to(
        CaCommand::Sign {
            csr: bad_csr,
            name: "gw1.lab.example".into(),
            out: out_dir,
            force: false,
        },
        &ctx,
        &mut sink,
    )
    .expect_err("bad csr");
    assert!(err.to_string().contains("bad.csr"), "{err}");
}
