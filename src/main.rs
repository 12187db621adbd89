//! The `sipedge` command line: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use sipedge::admin::logging::LogFormat;
use sipedge::config::Config;
use sipedge::proxy::driver::Stop;

#[derive(Parser)]
#[command(
    name = "sipedge",
    version,
    about = "SIP/TLS edge and mediation server for PSTN trunking"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = "config/sipedge.toml")]
    config: PathBuf,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// Log level (overridden by RUST_LOG when set), e.g. info, debug, sipedge=trace.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the appliance.
    Run,
    /// Validate the configuration and exit.
    Check,
    /// The built-in root CA: init, issue, sign, export, list, revoke, renew, backup, restore.
    #[command(subcommand)]
    Ca(sipedge::pki::CaCommand),
    /// Certificate tools.
    #[command(subcommand)]
    Cert(sipedge::pki::CertCommand),
    /// Tenant users (Set-CsUser, Set-CsUserPstnSettings, Grant-CsVoiceRoutingPolicy, …).
    #[command(subcommand)]
    User(sipedge::admin::cli::UserCommand),
    /// Tenant hybrid configuration (Set-CsTenantHybridConfiguration).
    #[command(subcommand)]
    Tenant(sipedge::admin::cli::TenantCommand),
    /// Hybrid mediation servers (Set-CsHybridMediationServer).
    #[command(subcommand)]
    MediationServer(sipedge::admin::cli::MediationServerCommand),
    /// Routing decisions with their trace.
    #[command(subcommand)]
    Route(sipedge::admin::cli::RouteCommand),
    /// What the configuration needs from the network: DNS records, firewall rules.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Check the configuration against the world: names, peers (OPTIONS), certificates,
    /// clock, ports. Exits non-zero naming what failed.
    Doctor {
        /// Seconds to wait for each peer's answer.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=60))]
        timeout: u64,
        /// The checks as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Maintenance mode of the running appliance (Enter-CcUpdate / Exit-CcUpdate).
    #[command(subcommand)]
    Maintenance(sipedge::admin::service_cli::MaintenanceCommand),
    /// Reload the running appliance's configuration file now (as SIGHUP does) and show the
    /// outcome.
    Reload {
        #[arg(long)]
        json: bool,
    },
    /// Call records: `cdr show --last N [--json]`, `cdr tail`.
    #[command(subcommand)]
    Cdr(sipedge::cdr::show::CdrCommand),
}

#[derive(Subcommand)]
enum PlanCommand {
    /// A and SRV records per site (as Cloud Connector Edition documents them).
    Dns {
        #[arg(long)]
        json: bool,
    },
    /// Ports and protocols per side and interface, and the media range's capacity.
    Firewall {
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _log = sipedge::admin::logging::init(cli.log_format, &cli.log_level);
    if let Command::Cert(cmd) = cli.command {
        // Works on files alone: no configuration needed.
        return match sipedge::pki::run_cert(cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let cfg = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Check => {
            // Our certificates against the rules: errors fail the check, warnings are shown.
            let findings =
                sipedge::transport::tls::check_certificates(&cfg, std::time::SystemTime::now());
            for f in &findings {
                eprintln!("{}: {f}", cli.config.display());
            }
            if findings
                .iter()
                .any(|f| f.finding.severity == sipedge::pki::Severity::Error)
            {
                return ExitCode::from(2);
            }
            let security = cfg.security_warnings();
            for w in &security {
                eprintln!("{}: warning: {w}", cli.config.display());
            }
            println!(
                "{}: OK (site {}, {} gateways, {} users{}{})",
                cli.config.display(),
                cfg.appliance.site,
                cfg.gateways.len(),
                cfg.users.len(),
                if findings.is_empty() {
                    String::new()
                } else {
                    format!(", {} certificate warnings", findings.len())
                },
                if security.is_empty() {
                    String::new()
                } else {
                    format!(", {} security warnings", security.len())
                }
            );
            ExitCode::SUCCESS
        }
        Command::Run => run(cfg),
        Command::Ca(cmd) => {
            // Names a certificate may carry: configured gateways and our own FQDNs.
            let mut allowed: Vec<String> =
                cfg.gateways.iter().map(|g| g.name.to_string()).collect();
            allowed.push(cfg.appliance.mediation_fqdn.to_string());
            allowed.push(cfg.appliance.access_edge_fqdn.to_string());
            allowed.extend(cfg.tenant.sip_domains.iter().map(|d| format!("sip.{d}")));
            let ctx = sipedge::pki::PkiContext {
                state_dir: cfg.appliance.state_dir.clone(),
                policy: sipedge::pki::NamePolicy::new(allowed),
            };
            match sipedge::pki::run_ca(cmd, &ctx) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Cert(_) => ExitCode::SUCCESS,
        Command::User(cmd) => admin_result(sipedge::admin::cli::run_user(cmd, &cfg)),
        Command::Tenant(cmd) => admin_result(sipedge::admin::cli::run_tenant(cmd, &cfg)),
        Command::MediationServer(cmd) => {
            admin_result(sipedge::admin::cli::run_mediation_server(cmd, &cfg))
        }
        Command::Route(cmd) => admin_result(sipedge::admin::cli::run_route(cmd, &cfg)),
        Command::Plan(cmd) => plan(cmd, &cfg),
        Command::Maintenance(cmd) => {
            admin_result(sipedge::admin::service_cli::run_maintenance(cmd, &cfg))
        }
        Command::Reload { json } => {
            admin_result(sipedge::admin::service_cli::run_reload(&cfg, json))
        }
        Command::Doctor { timeout, json } => doctor(&cfg, timeout, json),
        Command::Cdr(cmd) => {
            let dir = sipedge::cdr::writer::cdr_dir(&cfg.appliance.state_dir);
            match sipedge::cdr::show::run(cmd, &dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Prints to stdout; a closed stdout (`| head`) is not an error.
fn print(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().write_all(text.as_bytes());
}

fn print_json(v: &impl serde::Serialize) -> ExitCode {
    match serde_json::to_string_pretty(v) {
        Ok(s) => {
            print(&s);
            print("\n");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn plan(cmd: PlanCommand, cfg: &Config) -> ExitCode {
    use sipedge::admin::plan;
    match cmd {
        PlanCommand::Dns { json: true } => print_json(&plan::dns(cfg)),
        PlanCommand::Dns { json: false } => {
            print(&plan::dns_text(&plan::dns(cfg)));
            ExitCode::SUCCESS
        }
        PlanCommand::Firewall { json: true } => print_json(&plan::firewall(cfg)),
        PlanCommand::Firewall { json: false } => {
            print(&plan::firewall_text(&plan::firewall(cfg)));
            ExitCode::SUCCESS
        }
    }
}

fn doctor(cfg: &Config, timeout: u64, json: bool) -> ExitCode {
    use sipedge::admin::doctor;
    let checks = doctor::run(cfg, std::time::Duration::from_secs(timeout));
    if json {
        print_json(&checks);
    } else {
        for c in &checks {
            print(&format!("{c}\n"));
        }
    }
    let failed = doctor::failures(&checks);
    if failed.is_empty() {
        eprintln!("doctor: all {} checks passed", checks.len());
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "doctor: {} of {} checks failed: {}",
            failed.len(),
            checks.len(),
            failed.join(", ")
        );
        ExitCode::FAILURE
    }
}

fn admin_result(r: Result<(), sipedge::admin::cli::CliError>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cfg: Config) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(Stop::Running);
        tokio::spawn(async move {
            // The first SIGTERM/SIGINT drains (new calls refused until the last call ends);
            // a second one stops at once. The sender lives on: the driver watches it.
            let mut signals = Signals::install();
            let mut next = Stop::Drain;
            loop {
                signals.wait().await;
                let _ = tx.send(next);
                next = Stop::Now;
            }
        });
        match sipedge::server::run(Arc::new(cfg), rx).await {
            Ok(stats) => {
                tracing::info!(?stats, "stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGTERM and SIGINT, caught for the life of the process.
struct Signals(Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>);

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => Signals(Some((t, i))),
            _ => Signals(None),
        }
    }

    async fn wait(&mut self) {
        let Some((term, int)) = self.0.as_mut() else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}
