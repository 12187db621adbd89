//! The site's CA on several appliances: `ca backup` writes the root (certificate and key) as a
//! PKCS#12 file encrypted with a passphrase — PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) and an
//! HMAC-SHA256 MAC, [`crate::pki::pkcs12`]; OpenSSL reads it — and `ca restore` installs it on
//! another appliance, which then issues from and trusts the same root.
//!
//! Only the root travels: serial numbers are random (no counter to share), each appliance keeps
//! its own index of what it issued and its own CRL signed by the shared root. The appliance's
//! own certificates issued by a replaced root are re-issued at the next start (they no longer
//! chain to the root).

use std::fs;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rcgen::{KeyPair, PublicKeyData as _};

use super::{now, CaStore};
use crate::pki::fsutil::{self, io_err, PUBLIC, SECRET};
use crate::pki::{pkcs12, PkiError};

/// Shortest passphrase accepted for a backup.
pub const MIN_PASSPHRASE: usize = 8;

/// What `ca restore` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// The root was installed (where there was none, or replacing one with `--force`).
    Installed,
    /// This appliance already had this very root: nothing changed.
    AlreadyThisRoot,
}

fn pem_cert(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn check_passphrase(p: &str) -> Result<(), PkiError> {
    if p.chars().count() < MIN_PASSPHRASE {
        return Err(PkiError::invalid(
            "--passphrase-file",
            format!("the passphrase must have at least {MIN_PASSPHRASE} characters"),
        ));
    }
    Ok(())
}

impl CaStore {
    /// Writes the root certificate and key to `out` (mode 0600), encrypted with `passphrase`.
    /// Refuses to overwrite an existing file unless `force`.
    pub fn backup(&self, out: &Path, passphrase: &str, force: bool) -> Result<(), PkiError> {
        check_passphrase(passphrase)?;
        if out.exists() && !force {
            return Err(PkiError::FileExists(out.to_owned()));
        }
        let _lock = self.lock()?;
        let key_path = self.root_key_path();
        let key = KeyPair::from_pem(&fsutil::read_string(&key_path)?)
            .map_err(|e| PkiError::rcgen(key_path.display().to_string(), e))?;
        let cert = self.root_cert_der()?;
        let bundle = pkcs12::encode(
            &key.serialize_der(),
            &[cert.as_ref()],
            passphrase,
            "sipedge root CA",
        )
        .map_err(|source| PkiError::Pkcs12 {
            what: out.display().to_string(),
            source,
        })?;
        fsutil::write_atomic(out, &bundle, SECRET)
    }

    /// Installs the root of a backup in `<state_dir>/ca`. A different existing CA is refused
    /// unless `force`, which moves it aside as `ca.backup-<timestamp>` first; the same root is
    /// left as it is. A wrong passphrase, a file that is not a backup, a certificate that is no
    /// CA or a key that does not match it are refused before anything is written.
    pub fn restore(
        state_dir: &Path,
        file: &Path,
        passphrase: &str,
        force: bool,
    ) -> Result<(CaStore, Restored), PkiError> {
        let store = CaStore::open(state_dir);
        let data = fsutil::read(file)?;
        let what = file.display().to_string();
        let contents = pkcs12::decode(&data, passphrase).map_err(|source| PkiError::Pkcs12 {
            what: what.clone(),
            source,
        })?;
        let (Some(key_der), Some(cert_der)) = (contents.key_pkcs8, contents.certs.first()) else {
            return Err(PkiError::invalid(
                what,
                "not a CA backup (a key and a certificate are needed)",
            ));
        };
        let key = KeyPair::try_from(key_der.as_slice())
            .map_err(|e| PkiError::rcgen(format!("{what}: the key"), e))?;
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|e| PkiError::invalid(&what, format!("the certificate: {e}")))?;
        if !cert.is_ca() || cert.subject() != cert.issuer() {
            return Err(PkiError::invalid(
                what,
                "the certificate is not a self-signed root CA",
            ));
        }
        if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
            return Err(PkiError::invalid(
                what,
                "the key does not belong to the certificate",
            ));
        }
        if store.is_initialised() {
            if store
                .root_cert_der()
                .is_ok_and(|c| c.as_ref() == cert_der.as_slice())
            {
                return Ok((store, Restored::AlreadyThisRoot));
            }
            if !force {
                return Err(PkiError::CaExists(store.ca_dir()));
            }
            store.move_aside()?;
        }
        fsutil::create_dir(store.state_dir(), 0o700)?;
        fsutil::create_dir(&store.ca_dir(), 0o700)?;
        fsutil::write_atomic(
            &store.root_key_path(),
            key.serialize_pem().as_bytes(),
            SECRET,
        )?;
        fsutil::write_atomic(
            &store.root_cert_path(),
            pem_cert(cert_der).as_bytes(),
            PUBLIC,
        )?;
        store.save_index(&[])?;
        let ca = store.load()?;
        store.write_crl(&ca, &[])?;
        tracing::info!(dir = %store.ca_dir().display(), "root CA restored from a backup");
        Ok((store, Restored::Installed))
    }

    /// Moves `ca/` to `ca.backup-<UTC timestamp>[-n]/`.
    pub(super) fn move_aside(&self) -> Result<(), PkiError> {
        let ca_dir = self.ca_dir();
        let t = now();
        let stamp = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
        let mut backup = self.state_dir().join(format!("ca.backup-{stamp}"));
        let mut n = 1;
        while backup.exists() {
            backup = self.state_dir().join(format!("ca.backup-{stamp}-{n}"));
            n += 1;
        }
        fs::rename(&ca_dir, &backup).map_err(io_err(&ca_dir))?;
        tracing::warn!(backup = %backup.display(), "existing CA moved aside");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{IssueRequest, KeyType, NamePolicy};
    use std::os::unix::fs::PermissionsExt;

    fn chains_to(leaf_chain: &Path, root: &[u8]) -> bool {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let pem = fs::read(leaf_chain).unwrap();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
        let (_, root) = x509_parser::parse_x509_certificate(root).unwrap();
        leaf.issuer() == root.subject() && leaf.verify_signature(Some(root.public_key())).is_ok()
    }

    #[test]
    fn a_restored_ca_issues_under_the_same_root_and_a_wrong_passphrase_is_refused() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let ca_a = CaStore::init(a.path(), KeyType::EcdsaP256, 30, false).unwrap();
        let file = out.path().join("site-ca.p12");
        assert!(ca_a.backup(&file, "short", false).is_err());
        ca_a.backup(&file, "correct horse battery", false).unwrap();
        let mode = fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(
            ca_a.backup(&file, "correct horse battery", false),
            Err(PkiError::FileExists(_))
        ));

        // A wrong passphrase: refused, nothing written.
        let e = CaStore::restore(b.path(), &file, "wrong horse battery", false).unwrap_err();
        assert!(e.to_string().contains("wrong password"), "{e}");
        assert!(!CaStore::open(b.path()).is_initialised());

        let (ca_b, what) =
            CaStore::restore(b.path(), &file, "correct horse battery", false).unwrap();
        assert_eq!(what, Restored::Installed);
        let root = ca_a.root_cert_der().unwrap();
        assert_eq!(ca_b.root_cert_der().unwrap(), root);
        let key_mode = fs::metadata(ca_b.root_key_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        assert!(ca_b.crl_path().exists());
        // The restored CA issues certificates that chain to the one root.
        let issued_dir = out.path().join("issued");
        let issued = ca_b
            .issue(
                &NamePolicy::new(vec!["gw1.lab.example".to_string()]),
                &IssueRequest::new("gw1.lab.example", &issued_dir),
            )
            .unwrap();
        assert!(chains_to(&issued.chain_path, &root));
        // Again: the same root is left alone; another CA is refused unless --force.
        let (_, what) = CaStore::restore(b.path(), &file, "correct horse battery", false).unwrap();
        assert_eq!(what, Restored::AlreadyThisRoot);
        let c = tempfile::tempdir().unwrap();
        CaStore::init(c.path(), KeyType::EcdsaP256, 30, false).unwrap();
        assert!(matches!(
            CaStore::restore(c.path(), &file, "correct horse battery", false),
            Err(PkiError::CaExists(_))
        ));
        let (ca_c, _) = CaStore::restore(c.path(), &file, "correct horse battery", true).unwrap();
        assert_eq!(ca_c.root_cert_der().unwrap(), root);
        assert!(fs::read_dir(c.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("ca.backup-")));
        // A bundle that is not a CA backup (a leaf's PKCS#12) is refused.
        let p12 = issued.p12_path.clone().unwrap();
        let pw = fs::read_to_string(issued.p12_password_path.clone().unwrap()).unwrap();
        let d = tempfile::tempdir().unwrap();
        let e = CaStore::restore(d.path(), &p12, pw.trim(), false).unwrap_err();
        assert!(e.to_string().contains("not a self-signed root CA"), "{e}");
    }
}
