//! `sipedge maintenance enter|exit|status` and `sipedge reload`: commands to the running
//! appliance through its admin API (see [`super::client`]); they fail (exit status 1) with the
//! reason when it cannot be reached or refuses.

use clap::Subcommand;

use super::cli::{out, print_json, CliError};
use super::client::request;
use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum MaintenanceCommand {
    /// Take the appliance out of service (Enter-CcUpdate): new calls and OPTIONS get 503 with
    /// Retry-After, calls in progress go on until they end. Kept across restarts.
    Enter {
        #[arg(long)]
        json: bool,
    },
    /// Put it back in service (Exit-CcUpdate).
    Exit {
        #[arg(long)]
        json: bool,
    },
    /// In maintenance or not, since when, and the calls in progress.
    Status {
        #[arg(long)]
        json: bool,
    },
}

/// Asks the running appliance; its JSON answer, or the error it gave.
fn ask(cfg: &Config, method: &str, path: &str) -> Result<serde_json::Value, CliError> {
    let (status, v) = request(cfg, method, path).map_err(|e| CliError::Other(e.to_string()))?;
    if status != 200 {
        let why = v["error"].as_str().unwrap_or("refused");
        return Err(CliError::Other(format!("{path}: {status}: {why}")));
    }
    Ok(v)
}

pub fn run_maintenance(cmd: MaintenanceCommand, cfg: &Config) -> Result<(), CliError> {
    let (method, path, json) = match cmd {
        MaintenanceCommand::Enter { json } => ("POST", "/maintenance/enter", json),
        MaintenanceCommand::Exit { json } => ("POST", "/maintenance/exit", json),
        MaintenanceCommand::Status { json } => ("GET", "/maintenance", json),
    };
    let v = ask(cfg, method, path)?;
    if json {
        print_json(&v);
        return Ok(());
    }
    let calls = v["active_calls"].as_u64().unwrap_or(0);
    if v["maintenance"].as_bool() == Some(true) {
        let since = v["since"].as_u64().map_or(String::new(), |t| {
            format!(
                " since {}",
                crate::cdr::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t))
            )
        });
        out(&format!(
            "maintenance: on{since}: new calls and OPTIONS refused (503); {calls} calls in progress"
        ));
    } else {
        out(&format!(
            "maintenance: off: taking calls; {calls} calls in progress"
        ));
    }
    Ok(())
}

/// `sipedge reload`: reloads the configuration file now and shows the outcome; fails when the
/// file was refused (the running configuration stays).
pub fn run_reload(cfg: &Config, json: bool) -> Result<(), CliError> {
    let (status, v) =
        request(cfg, "POST", "/config/reload").map_err(|e| CliError::Other(e.to_string()))?;
    if json {
        print_json(&v);
    }
    if status != 200 {
        let why = v["error"].as_str().unwrap_or("refused");
        return Err(CliError::Other(format!(
            "reload refused, the running configuration stays: {why}"
        )));
    }
    if !json {
        out(&format!("reload: {}", v["result"].as_str().unwrap_or("?")));
    }
    let restart: Vec<&str> = v["needs_restart"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str())
        .collect();
    if !restart.is_empty() && !json {
        out(&format!(
            "  needs a restart (running values kept): {}",
            restart.join(", ")
        ));
    }
    Ok(())
}
