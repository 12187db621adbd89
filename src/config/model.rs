//! The validated model: [`Config`] and its tables as the rest of the crate reads them, and the
//! accessors on `Config`. Only the validator builds these; every value in them has been checked.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::types::{
    CertSource, Fqdn, HostName, LatchMode, Side, SrtpMode, Transport, VoiceRoutingPolicy,
};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SideListen {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
}

impl SideListen {
    pub fn addr(&self, t: Transport) -> Option<SocketAddr> {
        match t {
            Transport::Udp => self.udp,
            Transport::Tcp => self.tcp,
            Transport::Tls => self.tls,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appliance {
    pub site: String,
    pub mediation_fqdn: Fqdn,
    pub access_edge_fqdn: Fqdn,
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub sip_domains: Vec<Fqdn>,
    pub peer_destination: Option<Fqdn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudPeer {
    /// The first (primary) cloud peer: the one name the cloud side is known by.
    pub fqdn: Fqdn,
    /// Every cloud peer FQDN in priority order (`fqdn` first); one port and transport for all.
    pub fqdns: Vec<Fqdn>,
    pub port: u16,
    pub transport: Transport,
    /// SRTP on the cloud leg (default `required`, as Direct Routing demands).
    pub srtp: SrtpMode,
    /// Where the cloud leg's media may come from (default `strict`).
    pub latching: LatchMode,
    /// Each FQDN is first looked up as `_sips._tcp.<fqdn>` (`_sip._tcp`, `_sip._udp` for the
    /// other transports), RFC 3263 §4.2; without SRV records, its A/AAAA records at `port`.
    pub srv: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediationServer {
    pub fqdn: Fqdn,
    pub port: u16,
    pub transport: Transport,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub name: String,
    pub access_edge_fqdn: Fqdn,
    pub mediation_servers: Vec<MediationServer>,
    /// Dialled strings always routed to this site's gateways, whatever the caller's policy.
    pub emergency_numbers: Vec<String>,
    /// The name of the site's dial plan (a `[[dial_plans]]` entry).
    pub dial_plan: Option<String>,
}

/// The default emergency numbers of a site.
pub const DEFAULT_EMERGENCY_NUMBERS: &[&str] = &["911", "112", "999", "933"];

/// One normalization rule of a dial plan: `pattern` (a regular expression, checked when the
/// file is read) → `translation` (`$1`… name its groups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialRule {
    pub name: String,
    pub pattern: String,
    pub translation: String,
}

/// `[[dial_plans]]`: named normalization rules, first match wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialPlanDecl {
    pub name: String,
    pub rules: Vec<DialRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    pub name: HostName,
    pub port: u16,
    pub transport: Transport,
    pub site: String,
    pub priority: u8,
    pub weight: u16,
    pub max_sessions: Option<u32>,
    pub send_options: bool,
    /// SRTP on this gateway's leg (default `off`: PSTN gateways speak plain RTP).
    pub srtp: SrtpMode,
    /// Where this gateway's media may come from (default `strict`).
    pub latching: LatchMode,
    /// Extra trust anchors for this gateway's certificate (a vendor's CA), besides our root.
    pub trust: Vec<PathBuf>,
}

/// Default encodings allowed on each side (no transcoding: the offer is filtered).
pub const DEFAULT_CODECS: &[&str] = &["PCMU", "PCMA", "G722", "G729", "opus", "SILK", "CN"];

/// `[media]`: media anchoring. Absent: SDP passes untouched (signalling-only proxy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSettings {
    /// Our media address, written into every rewritten `c=`.
    pub ip: IpAddr,
    /// RTP/RTCP port range (inclusive).
    pub port_min: u16,
    pub port_max: u16,
    /// No RTP in either direction for this long (hold respected) → BYE to both legs.
    pub media_timeout: Duration,
    /// Relay worker threads (default: the number of CPUs).
    pub relay_workers: Option<usize>,
    /// Encoding names allowed toward/from the gateways.
    pub gateway_codecs: Vec<String>,
    /// Encoding names allowed toward/from the cloud peer.
    pub cloud_codecs: Vec<String>,
    /// SDP media addresses on loopback are accepted (a lab on one host); refused by default.
    pub allow_loopback: bool,
    /// SDP media addresses that are link-local are accepted; refused by default.
    pub allow_link_local: bool,
    /// `latching = "nat"`: how long the latched source must be quiet before another may take
    /// the latch.
    pub latch_quiet: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserDecl {
    /// `user@domain`, lower-cased.
    pub sip_address: String,
    /// `tel:+E.164[;ext=…]`
    pub line_uri: Option<String>,
    pub enterprise_voice: bool,
    pub hosted_voicemail: bool,
    pub voice_routing_policy: VoiceRoutingPolicy,
    pub pstn_site: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipSettings {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
    pub max_message_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub tcp_idle_timeout: Duration,
    /// A stream message (header and body) must arrive whole within this time of its first
    /// byte; a slower sender's connection is closed.
    pub message_timeout: Duration,
    /// Messages queued to one connection's writer; beyond half of it, pings and our OPTIONS are
    /// shed first.
    pub write_queue: usize,
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingSettings {
    pub failover_timer: Duration,
    pub failover_codes: Vec<u16>,
    pub options_interval: Duration,
}

/// `[tls]`: our certificates (issued from the built-in CA at start when absent), extra trust
/// anchors, the CRL and the handshake limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Our certificate toward gateways; `None`: issued from the built-in CA for the mediation
    /// FQDN.
    pub gateway_side: Option<CertSource>,
    /// Our certificate toward the cloud peer; `None`: issued from the built-in CA for the
    /// access edge FQDN with `sip.<domain>` SANs.
    pub cloud_side: Option<CertSource>,
    /// Trust anchors in addition to the built-in CA's root (PEM files).
    pub trust: Vec<PathBuf>,
    /// CRL file (PEM); default: the built-in CA's CRL when it exists.
    pub crl: Option<PathBuf>,
    pub handshake_timeout: Duration,
    /// Inbound handshakes in progress at once, per side (addresses of configured peers are
    /// not counted against it, only against `handshakes_per_source`).
    pub max_handshakes: usize,
    /// Inbound handshakes in progress at once from one source address.
    pub handshakes_per_source: usize,
    /// Outbound handshakes in progress at once (their own budget: never behind inbound ones).
    pub outbound_handshakes: usize,
    /// Accept a certificate's CN as its identity when it has no subjectAltName at all.
    pub allow_cn_identity: bool,
    /// The built-in CA's CRL is re-signed, and every CRL re-read (live connections of revoked
    /// certificates closed), at this interval.
    pub crl_refresh: Duration,
    /// Names the cloud peer's certificate must carry (default: its FQDN).
    pub cloud_peer_names: Vec<String>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub file: PathBuf,
    pub appliance: Appliance,
    pub gateway_listen: SideListen,
    pub cloud_listen: SideListen,
    pub tenant: Tenant,
    pub cloud_peer: CloudPeer,
    pub sites: Vec<Site>,
    pub gateways: Vec<Gateway>,
    /// Static host entries; they take precedence over the system resolver.
    pub hosts: BTreeMap<Fqdn, IpAddr>,
    pub users: Vec<UserDecl>,
    pub sip: SipSettings,
    pub limits: Limits,
    pub routing: RoutingSettings,
    /// Media anchoring; `None` when the file has no `[media]` table.
    pub media: Option<MediaSettings>,
    pub tls: TlsSettings,
    pub admin: AdminSettings,
    pub overload: OverloadSettings,
    pub dial_plans: Vec<DialPlanDecl>,
    /// `[directory]`: the shared directory database; `None`: the embedded SQLite store.
    pub directory: Option<DirectorySettings>,
    pub dns: DnsSettings,
}

/// `[dns]`: the names of the routing table (cloud peers, gateways, mediation servers) not in
/// `[hosts]` are resolved through these servers and looked up again when their TTL runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// Empty: the system's name servers (`/etc/resolv.conf`).
    pub servers: Vec<std::net::SocketAddr>,
    /// An answer is kept at least this long (a zero-TTL name does not make us query in a loop).
    pub min_ttl: Duration,
    /// And at most this long, whatever its TTL.
    pub max_ttl: Duration,
}

impl Default for DnsSettings {
    fn default() -> DnsSettings {
        DnsSettings {
            servers: Vec::new(),
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_secs(3600),
        }
    }
}

/// `[directory]`: users, tenant settings and mediation-server registrations in PostgreSQL,
/// shared by the appliances of a site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorySettings {
    /// `postgres://user[:password]@host[:port]/database` (checked by the driver's parser).
    pub url: String,
}

impl DirectorySettings {
    /// The URL without its password, for logs and errors.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, tail) = match rest.split_once('@') {
        Some((a, t)) => (a, t),
        None => return url.to_owned(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{tail}"),
        None => url.to_owned(),
    }
}

/// What requests from addresses that are no peer get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownSenders {
    /// One stateless 403 per source per interval, nothing else.
    Reject,
    /// Nothing at all.
    Silent,
}

/// `[overload]`: per-peer request rates (out-of-dialog requests; bursts of twice the rate),
/// the appliance-wide rate of new calls and caps, what shed requests and unknown senders get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverloadSettings {
    pub peer_requests_per_second: u32,
    pub cloud_peer_requests_per_second: u32,
    /// Overrides by peer name (a gateway's name, the cloud peer's FQDN), lower-case.
    pub peers: BTreeMap<String, u32>,
    pub calls_per_second: u32,
    pub max_calls: usize,
    pub max_transactions: usize,
    pub refusals_per_second: u32,
    pub retry_after: Duration,
    pub unknown_senders: UnknownSenders,
    pub unknown_sender_interval: Duration,
}

/// The admin HTTP API listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// `None`: no admin listener (`listen = ""`).
    pub listen: Option<SocketAddr>,
}

impl Config {
    /// Is TLS in use anywhere (a listener, the cloud peer or a gateway)?
    pub fn uses_tls(&self) -> bool {
        self.gateway_listen.tls.is_some()
            || self.cloud_listen.tls.is_some()
            || self.cloud_peer.transport == Transport::Tls
            || self.gateways.iter().any(|g| g.transport == Transport::Tls)
    }

    /// This appliance's own site.
    pub fn own_site(&self) -> Option<&Site> {
        self.sites.iter().find(|s| s.name == self.appliance.site)
    }

    /// Our FQDN as seen from one side: the mediation FQDN toward gateways, the access edge FQDN
    /// toward the cloud peer.
    pub fn fqdn_for(&self, side: Side) -> &Fqdn {
        match side {
            Side::Gateway => &self.appliance.mediation_fqdn,
            Side::Cloud => &self.appliance.access_edge_fqdn,
        }
    }

    pub fn listen(&self, side: Side) -> &SideListen {
        match side {
            Side::Gateway => &self.gateway_listen,
            Side::Cloud => &self.cloud_listen,
        }
    }

    /// Static lookup: an IP literal, or a `[hosts]` entry.
    pub fn static_host(&self, name: &str) -> Option<IpAddr> {
        let unbracketed = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = unbracketed.parse() {
            return Some(ip);
        }
        let f = Fqdn::parse(name).ok()?;
        self.hosts.get(&f).copied()
    }
}
