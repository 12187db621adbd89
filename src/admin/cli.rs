//! The admin commands mirroring the Cloud Connector cmdlets. `main.rs` only parses and
//! dispatches; the work is here and in [`super::directory`].
//!
//! | cmdlet | command |
//! |---|---|
//! | Set-CsUser | `user set IDENTITY [--enterprise-voice BOOL] [--hosted-voicemail BOOL] [--line-uri tel:+…]` |
//! | Set-CsUserPstnSettings | `user set-pstn-site IDENTITY (--site NAME \| --clear)` |
//! | Get-CsOnlineUser | `user show [IDENTITY or *pattern] [--json]` |
//! | Grant-CsVoiceRoutingPolicy | `user grant-policy IDENTITY --policy …` |
//! | Set-CsTenantHybridConfiguration | `tenant set …`, `tenant show` |
//! | Set-CsHybridMediationServer | `mediation-server set IDENTITY --fqdn … --access-proxy-external-fqdn …`, `mediation-server show` |

use clap::{Args, Subcommand};

use super::json::{mediation_server_json, tenant_json, user_json};
use crate::config::{Config, VoiceRoutingPolicy};
use crate::directory::{Store, StoreError, TenantPatch, UserPatch};
use crate::routing::{self, Live, Routed, RoutingTable};

/// Parses a PowerShell-ish boolean: true/false, $true/$false, yes/no, 1/0.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim_start_matches('$').to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean (true or false)")),
    }
}

fn parse_policy(s: &str) -> Result<VoiceRoutingPolicy, String> {
    VoiceRoutingPolicy::parse(s)
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user (New-CsOnlineUser has no CCE equivalent; `user set` then configures it).
    Add(UserAddArgs),
    /// Remove a user.
    Remove { identity: String },
    /// Set-CsUser: enterprise voice, hosted voicemail, line URI, alternative identities.
    Set(UserSetArgs),
    /// Set-CsUserPstnSettings -HybridPstnSite.
    SetPstnSite(SetSiteArgs),
    /// Get-CsOnlineUser / Get-CsUserPstnSettings: one user, a `*` pattern, or every user.
    Show(ShowArgs),
    /// Grant-CsVoiceRoutingPolicy.
    GrantPolicy(GrantArgs),
}

#[derive(Args, Debug)]
pub struct UserFields {
    #[arg(long, value_parser = parse_bool, value_name = "BOOL")]
    pub enterprise_voice: Option<bool>,
    #[arg(long, value_parser = parse_bool, value_name = "BOOL")]
    pub hosted_voicemail: Option<bool>,
    /// tel:+E.164[;ext=…]
    #[arg(long, value_name = "TEL_URI")]
    pub line_uri: Option<String>,
    /// User principal name (an alternative identity).
    #[arg(long)]
    pub upn: Option<String>,
    /// Display name (an alternative identity).
    #[arg(long)]
    pub display_name: Option<String>,
}

impl UserFields {
    fn patch(&self) -> UserPatch {
        UserPatch {
            upn: self.upn.clone().map(Some),
            display_name: self.display_name.clone().map(Some),
            enterprise_voice: self.enterprise_voice,
            hosted_voicemail: self.hosted_voicemail,
            line_uri: self.line_uri.clone().map(Some),
            ..Default::default()
        }
    }
}

#[derive(Args, Debug)]
pub struct UserAddArgs {
    /// SIP address, user@domain.
    pub sip_address: String,
    #[command(flatten)]
    pub fields: UserFields,
    #[arg(long, value_parser = parse_policy)]
    pub policy: Option<VoiceRoutingPolicy>,
    #[arg(long)]
    pub site: Option<String>,
}

#[derive(Args, Debug)]
pub struct UserSetArgs {
    /// SIP address, UPN or display name.
    pub identity: String,
    #[command(flatten)]
    pub fields: UserFields,
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct SiteChoice {
    /// A site of the configuration.
    #[arg(long)]
    pub site: Option<String>,
    /// Remove the user's site (the tenant's default site applies).
    #[arg(long)]
    pub clear: bool,
}

#[derive(Args, Debug)]
pub struct SetSiteArgs {
    pub identity: String,
    #[command(flatten)]
    pub choice: SiteChoice,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// SIP address, UPN, display name, or a pattern with `*`; every user when absent.
    pub identity: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct GrantArgs {
    pub identity: String,
    /// InternationalCallsAllowed or InternationalCallsDisallowed.
    #[arg(long, value_parser = parse_policy)]
    pub policy: VoiceRoutingPolicy,
}

#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Set-CsTenantHybridConfiguration / Set-CsTenantFederationConfiguration.
    Set(TenantSetArgs),
    Show {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct TenantSetArgs {
    /// Our access edge FQDN[:PORT] as the tenant configures it; names the default site.
    #[arg(long, value_name = "FQDN[:PORT]")]
    pub peer_destination: Option<String>,
    /// Remove the peer destination.
    #[arg(long, conflicts_with = "peer_destination")]
    pub clear_peer_destination: bool,
    #[arg(long, value_parser = parse_bool, value_name = "BOOL")]
    pub use_on_prem_dial_plan: Option<bool>,
    #[arg(long, value_parser = parse_bool, value_name = "BOOL")]
    pub shared_sip_address_space: Option<bool>,
}

#[derive(Subcommand, Debug)]
pub enum MediationServerCommand {
    /// Set-CsHybridMediationServer.
    Set {
        /// The display name it is registered under.
        identity: String,
        #[arg(long)]
        fqdn: String,
        #[arg(long)]
        access_proxy_external_fqdn: String,
    },
    Show {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum RouteCommand {
    /// The decision for a call, with its trace: from a gateway (inbound: number → user →
    /// cloud peer), or from the cloud peer by a user (outbound).
    Explain {
        /// The caller: a gateway (name or address) for an inbound call; a user (SIP address,
        /// UPN or display name) for an outbound call.
        #[arg(long)]
        from: String,
        /// The dialled number.
        #[arg(long)]
        to: String,
        #[arg(long)]
        json: bool,
    },
}

/// A command's error: the message to print.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
}

/// Prints a line; a closed stdout (`| head`) is not an error worth a panic.
pub(super) fn out(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

pub(super) fn print_json(v: &serde_json::Value) {
    out(&serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

fn print_user(u: &crate::routing::DirUser) {
    let v = user_json(u);
    print_object(&v);
}

fn print_object(v: &serde_json::Value) {
    if let Some(map) = v.as_object() {
        let w = map.keys().map(|k| k.len()).max().unwrap_or(0);
        for (k, val) in map {
            let s = match val {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out(&format!("{k:<w$} : {s}"));
        }
    }
}

pub fn run_user(cmd: UserCommand, cfg: &Config) -> Result<(), CliError> {
    let mut store = Store::open(cfg)?;
    match cmd {
        UserCommand::Add(a) => {
            let mut p = a.fields.patch();
            p.voice_routing_policy = a.policy;
            p.pstn_site = a.site.map(Some);
            let u = store.add_user(&a.sip_address, &p)?;
            print_user(&u);
        }
        UserCommand::Remove { identity } => {
            let u = store.remove_user(&identity)?;
            out(&format!("removed {}", u.sip_address));
        }
        UserCommand::Set(a) => {
            let p = a.fields.patch();
            if p == UserPatch::default() {
                return Err(CliError::Other(
                    "user set: nothing to change (give --enterprise-voice, --hosted-voicemail, --line-uri, --upn or --display-name)".into(),
                ));
            }
            let u = store.set_user(&a.identity, &p)?;
            print_user(&u);
        }
        UserCommand::SetPstnSite(a) => {
            let p = UserPatch {
                pstn_site: Some(if a.choice.clear { None } else { a.choice.site }),
                ..Default::default()
            };
            let u = store.set_user(&a.identity, &p)?;
            print_user(&u);
        }
        UserCommand::GrantPolicy(a) => {
            let p = UserPatch {
                voice_routing_policy: Some(a.policy),
                ..Default::default()
            };
            let u = store.set_user(&a.identity, &p)?;
            print_user(&u);
        }
        UserCommand::Show(a) => {
            let users = match a.identity.as_deref() {
                Some(p) if p.contains('*') => store.users(Some(p))?,
                Some(id) => vec![store.find_user(id)?],
                None => store.users(None)?,
            };
            if a.json {
                let v: Vec<serde_json::Value> = users.iter().map(user_json).collect();
                print_json(&serde_json::Value::Array(v));
            } else {
                for (i, u) in users.iter().enumerate() {
                    if i > 0 {
                        out("");
                    }
                    print_user(u);
                }
            }
        }
    }
    Ok(())
}

pub fn run_tenant(cmd: TenantCommand, cfg: &Config) -> Result<(), CliError> {
    let mut store = Store::open(cfg)?;
    match cmd {
        TenantCommand::Set(a) => {
            let p = TenantPatch {
                peer_destination: if a.clear_peer_destination {
                    Some(None)
                } else {
                    a.peer_destination.map(Some)
                },
                use_on_prem_dial_plan: a.use_on_prem_dial_plan,
                shared_sip_address_space: a.shared_sip_address_space,
            };
            if p == TenantPatch::default() {
                return Err(CliError::Other("tenant set: nothing to change".into()));
            }
            print_object(&tenant_json(&store.set_tenant(&p)?));
        }
        TenantCommand::Show { json } => {
            let t = tenant_json(&store.tenant()?);
            if json {
                print_json(&t)
            } else {
                print_object(&t)
            }
        }
    }
    Ok(())
}

pub fn run_mediation_server(cmd: MediationServerCommand, cfg: &Config) -> Result<(), CliError> {
    let mut store = Store::open(cfg)?;
    match cmd {
        MediationServerCommand::Set {
            identity,
            fqdn,
            access_proxy_external_fqdn,
        } => {
            let m = store.set_mediation_server(&identity, &fqdn, &access_proxy_external_fqdn)?;
            print_object(&mediation_server_json(&m));
        }
        MediationServerCommand::Show { json } => {
            let ms = store.mediation_servers()?;
            if json {
                print_json(&serde_json::Value::Array(
                    ms.iter().map(mediation_server_json).collect(),
                ));
            } else {
                for (i, m) in ms.iter().enumerate() {
                    if i > 0 {
                        out("");
                    }
                    print_object(&mediation_server_json(m));
                }
            }
        }
    }
    Ok(())
}

/// Builds the routing table with static `[hosts]` entries, then the system resolver.
pub fn table_for(cfg: &Config) -> Result<RoutingTable, CliError> {
    use std::net::ToSocketAddrs;
    RoutingTable::build(cfg, &|n| {
        cfg.static_host(n).or_else(|| {
            (n, 0)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .map(|a| a.ip())
        })
    })
    .map_err(CliError::Other)
}

/// A routing decision as JSON.
pub fn routed_json(r: &Routed) -> serde_json::Value {
    match &r.decision {
        routing::Decision::Forward {
            targets,
            request_uri,
            ..
        } => serde_json::json!({
            "decision": "forward",
            "targets": targets.iter().map(|t| serde_json::json!({
                "name": t.name, "address": t.addr.to_string(), "transport": t.transport.uri_param(),
            })).collect::<Vec<_>>(),
            "request_uri": request_uri,
            "trace": r.trace,
        }),
        routing::Decision::Reject {
            status,
            reason,
            headers,
        } => serde_json::json!({
            "decision": "reject",
            "status": status,
            "reason": reason,
            "headers": headers.iter().map(|(n, v)| format!("{n}: {v}")).collect::<Vec<_>>(),
            "trace": r.trace,
        }),
    }
}

pub fn run_route(cmd: RouteCommand, cfg: &Config) -> Result<(), CliError> {
    let RouteCommand::Explain { from, to, json } = cmd;
    // A running server knows health and load: ask its admin API first. Without one, decide
    // from the directory with every target healthy and idle, and say so.
    let (value, live) = match explain_from_server(cfg, &from, &to) {
        Some(v) => (v, true),
        None => {
            let mut store = Store::open(cfg)?;
            let dir = store.snapshot()?;
            let table = table_for(cfg)?;
            let (direction, r) =
                super::explain::explain(&table, &dir, &Live::default(), &from, &to)
                    .map_err(CliError::Other)?;
            let mut v = routed_json(&r);
            v["direction"] = serde_json::json!(direction.as_str());
            (v, false)
        }
    };
    if json {
        print_json(&value);
        return Ok(());
    }
    if !live {
        out("  (server not reachable: health and load are not live; every target counts as healthy and idle)");
    }
    if let Some(d) = value["direction"].as_str() {
        out(&format!("  direction: {d}"));
    }
    for line in value["trace"].as_array().into_iter().flatten() {
        out(&format!("  {}", line.as_str().unwrap_or_default()));
    }
    match value["decision"].as_str() {
        Some("forward") => {
            let list: Vec<String> = value["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    format!(
                        "{} ({})",
                        t["name"].as_str().unwrap_or_default(),
                        t["address"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            out(&format!("decision: forward to {}", list.join(", then ")));
        }
        _ => out(&format!(
            "decision: reject {} {}",
            value["status"],
            value["reason"].as_str().unwrap_or_default()
        )),
    }
    Ok(())
}

/// `GET /route/explain` on the running server's admin listener (loopback, bearer token from
/// the state directory); `None` when there is no server, no token or no valid answer.
fn explain_from_server(cfg: &Config, from: &str, to: &str) -> Option<serde_json::Value> {
    use super::client::{query_value as q, request};
    let path = format!("/route/explain?from={}&to={}", q(from), q(to));
    match request(cfg, "GET", &path) {
        Ok((200, v)) => Some(v),
        _ => None,
    }
}
