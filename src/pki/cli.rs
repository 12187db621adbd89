//! `sipedge ca …` and `sipedge cert show …` (clap derive). The binary wires
//! these enums as subcommands and calls [`run_ca`] / [`run_cert`].

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::store::{DEFAULT_CA_DAYS, DEFAULT_LEAF_DAYS};
use super::{
    fsutil, show_cert, CaStore, IndexEntry, IssueRequest, IssuedCert, KeyType, NamePolicy,
    PkiError, RevokeReason, RevokeTarget,
};

/// `sipedge ca …`
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum CaCommand {
    /// Create the root CA in STATE_DIR/ca (refuses to replace an existing one).
    Init {
        #[arg(long, value_enum, default_value_t = KeyType::Rsa3072)]
        key_type: KeyType,
        /// Root validity in days.
        #[arg(long, default_value_t = DEFAULT_CA_DAYS)]
        days: u32,
        /// Replace an existing CA (it is kept as ca.backup-TIMESTAMP).
        #[arg(long)]
        force: bool,
    },
    /// Issue a key, certificate, chain and PKCS#12 bundle for a gateway.
    Issue {
        /// Gateway FQDN or IP address (must be configured unless --force).
        #[arg(long)]
        name: String,
        /// Additional IP address SAN (repeatable).
        #[arg(long)]
        ip: Vec<IpAddr>,
        #[arg(long, default_value_t = DEFAULT_LEAF_DAYS)]
        days: u32,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// File holding the PKCS#12 password (default: generate one and write
        /// it beside the bundle).
        #[arg(long)]
        p12_password_file: Option<PathBuf>,
        /// Issue for an unconfigured name / overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Sign a PKCS#10 CSR: only its public key is used.
    Sign {
        /// CSR file (PEM).
        #[arg(long)]
        csr: PathBuf,
        /// Name to certify (must be configured unless --force).
        #[arg(long)]
        name: String,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Write the root certificate as PEM, DER and PKCS#7 (.p7b).
    Export {
        #[arg(long)]
        out: PathBuf,
    },
    /// List issued certificates.
    List,
    /// Revoke by serial or by name and publish a fresh CRL.
    Revoke {
        #[arg(long, conflicts_with = "name", required_unless_present = "name")]
        serial: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_enum, default_value_t = RevokeReason::Unspecified)]
        reason: RevokeReason,
    },
    /// Re-issue a certificate (new key and serial; the old one is superseded).
    Renew { name: String },
    /// Back up the root CA (certificate and key) to a PKCS#12 file encrypted with a
    /// passphrase (mode 0600), to restore on the site's other appliances.
    Backup {
        /// The backup file to write.
        #[arg(long)]
        out: PathBuf,
        /// File whose first line is the passphrase (at least 8 characters).
        #[arg(long)]
        passphrase_file: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Install the root CA from a `ca backup` file: this appliance then issues from and
    /// trusts the same root as the others of its site.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// File whose first line is the passphrase.
        #[arg(long)]
        passphrase_file: PathBuf,
        /// Replace a different existing CA (it is kept as ca.backup-TIMESTAMP).
        #[arg(long)]
        force: bool,
    },
}

/// `sipedge cert …`
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum CertCommand {
    /// Describe a certificate (PEM, DER or PKCS#12).
    Show {
        file: PathBuf,
        /// Password file for a PKCS#12 bundle.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

/// What the CA commands need from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiContext {
    pub state_dir: PathBuf,
    pub policy: NamePolicy,
}

/// Run a `ca` subcommand, printing to stdout.
pub fn run_ca(cmd: CaCommand, ctx: &PkiContext) -> Result<(), PkiError> {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    run_ca_to(cmd, ctx, &mut lock)
}

/// Run a `cert` subcommand, printing to stdout.
pub fn run_cert(cmd: CertCommand) -> Result<(), PkiError> {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    run_cert_to(cmd, &mut lock)
}

fn read_password(path: &Path) -> Result<String, PkiError> {
    let text = fsutil::read_string(path)?;
    let pw = text.lines().next().unwrap_or("").to_string();
    if pw.is_empty() {
        return Err(PkiError::invalid(
            path.display().to_string(),
            "password file is empty",
        ));
    }
    Ok(pw)
}

fn out_err(e: std::io::Error) -> PkiError {
    PkiError::Io {
        path: PathBuf::from("<stdout>"),
        source: e,
    }
}

fn print_issued(out: &mut impl Write, c: &IssuedCert) -> std::io::Result<()> {
    writeln!(
        out,
        "issued {} serial {} (valid until {})",
        c.name, c.serial, c.not_after
    )?;
    if let Some(k) = &c.key_path {
        writeln!(out, "  key:         {}", k.display())?;
    }
    writeln!(out, "  certificate: {}", c.cert_path.display())?;
    writeln!(out, "  chain:       {}", c.chain_path.display())?;
    if let Some(p) = &c.p12_path {
        writeln!(out, "  PKCS#12:     {}", p.display())?;
    }
    if let Some(p) = &c.p12_password_path {
        writeln!(out, "  password:    {} (generated)", p.display())?;
    }
    Ok(())
}

fn print_entry(out: &mut impl Write, e: &IndexEntry) -> std::io::Result<()> {
    let status = match e.revocation {
        Some((r, t)) => format!("revoked ({}, {})", r.as_str(), t.date()),
        None if e.status == super::CertStatus::Valid
            && e.not_after < time::OffsetDateTime::now_utc() =>
        {
            "expired".to_string()
        }
        None => format!("{:?}", e.status).to_lowercase(),
    };
    writeln!(
        out,
        "{:<34} {:<32} {:<12} {}",
        e.serial,
        e.name,
        e.not_after.date(),
        status
    )
}

/// [`run_ca`] writing to `out`.
pub fn run_ca_to(cmd: CaCommand, ctx: &PkiContext, out: &mut impl Write) -> Result<(), PkiError> {
    let store = CaStore::open(&ctx.state_dir);
    match cmd {
        CaCommand::Init {
            key_type,
            days,
            force,
        } => {
            let store = CaStore::init(&ctx.state_dir, key_type, days, force)?;
            writeln!(
                out,
                "root CA ({key_type}, {days} days) created in {}\n  certificate: {}\n  CRL:         {}",
                store.ca_dir().display(),
                store.root_cert_path().display(),
                store.crl_path().display()
            )
            .map_err(out_err)?;
        }
        CaCommand::Issue {
            name,
            ip,
            days,
            out: out_dir,
            p12_password_file,
            force,
        } => {
            let mut req = IssueRequest::new(name, out_dir);
            req.ips = ip;
            req.days = days;
            req.force = force;
            req.p12_password = p12_password_file
                .as_deref()
                .map(read_password)
                .transpose()?;
            let issued = store.issue(&ctx.policy, &req)?;
            print_issued(out, &issued).map_err(out_err)?;
        }
        CaCommand::Sign {
            csr,
            name,
            out: out_dir,
            force,
        } => {
            let pem = fsutil::read_string(&csr)?;
            let issued = store
                .sign_csr(&ctx.policy, &pem, &name, &out_dir, force)
                .map_err(|e| match e {
                    PkiError::Invalid { what, reason } if what == "CSR" => PkiError::Invalid {
                        what: csr.display().to_string(),
                        reason,
                    },
                    other => other,
                })?;
            print_issued(out, &issued).map_err(out_err)?;
        }
        CaCommand::Export { out: out_dir } => {
            let e = store.export(&out_dir)?;
            writeln!(
                out,
                "root exported:\n  {}\n  {}\n  {}",
                e.pem.display(),
                e.der.display(),
                e.p7b.display()
            )
            .map_err(out_err)?;
        }
        CaCommand::Backup {
            out: file,
            passphrase_file,
            force,
        } => {
            let pass = read_password(&passphrase_file)?;
            store.backup(&file, &pass, force)?;
            writeln!(
                out,
                "root CA backed up to {} (encrypted with the passphrase; mode 0600)\n  restore on each appliance of the site: sipedge ca restore {} --passphrase-file FILE",
                file.display(),
                file.display()
            )
            .map_err(out_err)?;
        }
        CaCommand::Restore {
            file,
            passphrase_file,
            force,
        } => {
            let pass = read_password(&passphrase_file)?;
            let (store, what) = CaStore::restore(&ctx.state_dir, &file, &pass, force)?;
            let line = match what {
                super::Restored::Installed => format!(
                    "root CA restored in {}: certificates are issued from it and it is trusted; restart the appliance to re-issue its own certificates",
                    store.ca_dir().display()
                ),
                super::Restored::AlreadyThisRoot => format!(
                    "{} already holds this root CA: nothing changed",
                    store.ca_dir().display()
                ),
            };
            writeln!(out, "{line}").map_err(out_err)?;
        }
        CaCommand::List => {
            let entries = store.list()?;
            writeln!(
                out,
                "{:<34} {:<32} {:<12} STATUS",
                "SERIAL", "NAME", "NOT AFTER"
            )
            .map_err(out_err)?;
            for e in &entries {
                print_entry(out, e).map_err(out_err)?;
            }
        }
        CaCommand::Revoke {
            serial,
            name,
            reason,
        } => {
            let target = match (serial, name) {
                (Some(s), None) => RevokeTarget::Serial(s),
                (None, Some(n)) => RevokeTarget::Name(n),
                _ => {
                    return Err(PkiError::invalid(
                        "revoke",
                        "give exactly one of --serial or --name",
                    ))
                }
            };
            let revoked = store.revoke(&target, reason)?;
            for e in &revoked {
                writeln!(out, "revoked {} {} ({})", e.serial, e.name, reason.as_str())
                    .map_err(out_err)?;
            }
            writeln!(out, "CRL written to {}", store.crl_path().display()).map_err(out_err)?;
        }
        CaCommand::Renew { name } => {
            let issued = store.renew(&name)?;
            print_issued(out, &issued).map_err(out_err)?;
        }
    }
    Ok(())
}

/// [`run_cert`] writing to `out`.
pub fn run_cert_to(cmd: CertCommand, out: &mut impl Write) -> Result<(), PkiError> {
    match cmd {
        CertCommand::Show {
            file,
            password_file,
        } => {
            let password = password_file.as_deref().map(read_password).transpose()?;
            let info = show_cert(&file, password.as_deref())?;
            writeln!(out, "{info}").map_err(out_err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        ca: CaCommand,
    }

    #[test]
    fn parses_revoke_and_issue() {
        let cli = Cli::try_parse_from([
            "x",
            "revoke",
            "--serial",
            "7A:01",
            "--reason",
            "key-compromise",
        ])
        .expect("parse");
        assert_eq!(
            cli.ca,
            CaCommand::Revoke {
                serial: Some("7A:01".into()),
                name: None,
                reason: RevokeReason::KeyCompromise
            }
        );
        assert!(Cli::try_parse_from(["x", "revoke"]).is_err());
        assert!(Cli::try_parse_from(["x", "revoke", "--serial", "1", "--name", "a"]).is_err());
        let cli = Cli::try_parse_from([
            "x",
            "issue",
            "--name",
            "gw1.lab.example",
            "--ip",
            "10.0.0.1",
            "--out",
            "/tmp/o",
        ])
        .expect("parse");
        match cli.ca {
            CaCommand::Issue { ip, days, .. } => {
                assert_eq!(ip, vec!["10.0.0.1".parse::<IpAddr>().expect("ip")]);
                assert_eq!(days, 365);
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli = Cli::try_parse_from(["x", "init", "--key-type", "ecdsa-p256"]).expect("parse");
        assert!(matches!(
            cli.ca,
            CaCommand::Init {
                key_type: KeyType::EcdsaP256,
                days: 3650,
                force: false
            }
        ));
    }

    #[test]
    fn run_reports_missing_ca_by_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ctx = PkiContext {
            state_dir: dir.path().to_path_buf(),
            policy: NamePolicy::default(),
        };
        let mut buf = Vec::new();
        let err = run_ca_to(CaCommand::List, &ctx, &mut buf).expect_err("no CA");
        assert!(err.to_string().contains("ca init"), "{err}");
        assert!(err.to_string().contains(&dir.path().display().to_string()));
    }
}
