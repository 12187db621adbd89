//! The serde mirror of the TOML file: every table refuses unknown keys, and nothing here is
//! trusted. [`super::Config::try_from_raw`] turns it into validated types.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub appliance: RawAppliance,
    #[serde(default)]
    pub listen: RawListen,
    pub tenant: RawTenant,
    pub cloud_peer: RawCloudPeer,
    #[serde(default)]
    pub sites: Vec<RawSite>,
    #[serde(default)]
    pub gateways: Vec<RawGateway>,
    #[serde(default)]
    pub hosts: BTreeMap<String, String>,
    #[serde(default)]
    pub users: Vec<RawUser>,
    #[serde(default)]
    pub sip: RawSip,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub routing: RawRouting,
    /// No `[admin]` table: no admin listener.
    pub admin: Option<RawAdmin>,
    pub media: Option<RawMedia>,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub overload: RawOverload,
    #[serde(default)]
    pub dial_plans: Vec<RawDialPlan>,
    /// No `[directory]` table: the embedded SQLite store in the state directory.
    pub directory: Option<RawDirectory>,
    #[serde(default)]
    pub dns: RawDns,
}

/// `[dns]`: where names are resolved and how long answers are kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    /// Name servers (`ip` or `ip:port`); none: the system's (`/etc/resolv.conf`).
    pub servers: Option<Vec<String>>,
    pub min_ttl_s: Option<u64>,
    pub max_ttl_s: Option<u64>,
}

/// `[[dial_plans]]`: a named list of normalization rules (first match wins).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDialPlan {
    pub name: String,
    #[serde(default)]
    pub rules: Vec<RawDialRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDialRule {
    pub name: String,
    pub pattern: String,
    pub translation: String,
}

/// `[directory]`: a shared directory database for several appliances.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirectory {
    pub url: String,
}

/// `[overload]`: rates and caps applied before any state is kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverload {
    pub peer_requests_per_second: Option<u32>,
    pub cloud_peer_requests_per_second: Option<u32>,
    pub calls_per_second: Option<u32>,
    pub max_calls: Option<usize>,
    pub max_transactions: Option<usize>,
    pub refusals_per_second: Option<u32>,
    pub retry_after_s: Option<u64>,
    pub unknown_senders: Option<String>,
    pub unknown_sender_interval_s: Option<u64>,
    /// Per-peer request rates: gateway name (or the cloud peer's FQDN) → requests per second.
    #[serde(default)]
    pub peers: BTreeMap<String, u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAppliance {
    pub site: String,
    pub mediation_fqdn: String,
    pub access_edge_fqdn: String,
    #[serde(default = "default_state_dir")]
    pub state_dir: String,
}

fn default_state_dir() -> String {
    "state".to_owned()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    #[serde(default)]
    pub gateway: RawSideListen,
    #[serde(default)]
    pub cloud: RawSideListen,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSideListen {
    pub udp: Option<String>,
    pub tcp: Option<String>,
    pub tls: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    pub sip_domains: Vec<String>,
    pub peer_destination: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCloudPeer {
    /// The single-peer form; `fqdns` lists several in priority order.
    pub fqdn: Option<String>,
    pub fqdns: Option<Vec<String>>,
    pub port: Option<u16>,
    pub transport: Option<String>,
    pub srtp: Option<String>,
    pub latching: Option<String>,
    /// Locate the peers by SRV (RFC 3263 §4.2) before A/AAAA.
    pub srv: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSite {
    pub name: String,
    pub access_edge_fqdn: String,
    #[serde(default)]
    pub mediation_servers: Vec<RawMediationServer>,
    /// Numbers always routed to this site's gateways (default 911, 112, 999, 933).
    pub emergency_numbers: Option<Vec<String>>,
    /// The `[[dial_plans]]` entry applied to this site's users (UseOnPremDialPlan).
    pub dial_plan: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMediationServer {
    pub fqdn: String,
    pub port: Option<u16>,
    pub transport: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    pub name: String,
    pub port: Option<u16>,
    pub transport: Option<String>,
    pub site: String,
    pub priority: Option<u8>,
    pub weight: Option<u16>,
    pub max_sessions: Option<u32>,
    pub send_options: Option<bool>,
    pub srtp: Option<String>,
    pub latching: Option<String>,
    /// CA files (PEM) this gateway's certificate may chain to, besides our root.
    #[serde(default)]
    pub trust: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub sip_address: String,
    pub line_uri: Option<String>,
    #[serde(default)]
    pub enterprise_voice: bool,
    #[serde(default)]
    pub hosted_voicemail: bool,
    pub voice_routing_policy: Option<String>,
    pub pstn_site: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSip {
    pub t1_ms: Option<u64>,
    pub t2_ms: Option<u64>,
    pub t4_ms: Option<u64>,
    pub max_message_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub tcp_idle_timeout_s: Option<u64>,
    pub message_timeout_ms: Option<u64>,
    pub write_queue: Option<usize>,
    pub drain_timeout_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    pub failover_timer_s: Option<u64>,
    pub failover_codes: Option<Vec<u16>>,
    pub options_interval_s: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    #[serde(default)]
    pub allow_remote: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMedia {
    pub ip: Option<String>,
    pub port_min: Option<u16>,
    pub port_max: Option<u16>,
    pub media_timeout_s: Option<u64>,
    pub relay_workers: Option<usize>,
    pub gateway_codecs: Option<Vec<String>>,
    pub cloud_codecs: Option<Vec<String>>,
    pub allow_loopback: Option<bool>,
    pub allow_link_local: Option<bool>,
    pub latch_quiet_ms: Option<u64>,
}

/// `[tls]`: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub gateway_side: Option<RawTlsCert>,
    pub cloud_side: Option<RawTlsCert>,
    #[serde(default)]
    pub trust: Vec<String>,
    pub crl: Option<String>,
    pub handshake_timeout_s: Option<u64>,
    pub max_handshakes: Option<usize>,
    pub handshakes_per_source: Option<usize>,
    pub outbound_handshakes: Option<usize>,
    pub allow_cn_identity: Option<bool>,
    pub crl_refresh_s: Option<u64>,
    pub cloud_peer_names: Option<Vec<String>>,
}

/// Our certificate for one side: PEM (`cert`, `key`, optional `chain`) or PKCS#12 (`p12` and
/// `p12_password_file`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTlsCert {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub chain: Option<String>,
    pub p12: Option<String>,
    pub p12_password_file: Option<String>,
}
