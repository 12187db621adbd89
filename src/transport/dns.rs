//! Name resolution for the routing table: hickory-resolver, answers kept for their TTL.
//!
//! The names the table needs (cloud peers, gateways, other sites' mediation servers) are
//! resolved at start and on every reload; `[hosts]` entries and IP literals win and never
//! expire. Each DNS answer is kept for its TTL, bounded by `dns.min_ttl_s` and `dns.max_ttl_s`;
//! when the earliest runs out the reloader asks again ([`Resolution`]) and, when an answer
//! changed, hands the core a table rebuilt from it: new calls use the new addresses, calls in
//! flight keep theirs. A name that fails to resolve keeps its last addresses (a DNS outage does
//! not take a cloud peer away) and is asked again after `min_ttl`.
//!
//! Every address of a name is kept (A and AAAA both), so a cloud peer is tried at each. With
//! `cloud_peer.srv`, each cloud peer FQDN is first looked up as an SRV name (RFC 3263 §4.2:
//! `_sips._tcp` for TLS, `_sip._tcp`, `_sip._udp`), its targets in priority order (the lower
//! first; equal priorities by the larger weight, then by name: one deterministic order
//! rather than RFC 2782's weighted draw, because every address is kept as a failover target
//! anyway), each target's addresses at its SRV port; with no SRV records, the A/AAAA records
//! at `cloud_peer.port`. The TLS identity expected stays the configured FQDN (RFC 5922 §4.1).
//!
//! Without a readable `/etc/resolv.conf` and no `dns.servers`, the system's `getaddrinfo` is
//! used; it gives no TTL, so its answers are kept for [`NO_TTL`] (within the bounds).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, NameServerConfigGroup, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use tracing::{info, warn};

use crate::config::Transport;
use crate::config::{Config, DnsSettings};
use crate::routing::{RoutingTable, MAX_ADDRESSES_PER_NAME};

/// How long a `getaddrinfo` answer (no TTL) is kept.
pub const NO_TTL: Duration = Duration::from_secs(60);

/// Longest wait for one lookup (all attempts).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Most SRV targets followed for one name.
const MAX_SRV_TARGETS: usize = 8;

/// The resolver of the process.
pub struct Dns {
    /// `None`: the system's `getaddrinfo`.
    resolver: Option<TokioResolver>,
    min_ttl: Duration,
    max_ttl: Duration,
}

/// What the routing table was built from: every address of each name and the SRV targets of
/// the cloud peers. Two resolutions are equal when the table built from them would be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    pub ips: BTreeMap<String, Vec<IpAddr>>,
    /// By cloud peer FQDN: the addresses of its SRV targets, each at its SRV port, in order.
    pub srv: BTreeMap<String, Vec<SocketAddr>>,
}

impl Resolution {
    /// The table of `cfg` over these answers.
    pub fn table(&self, cfg: &Config) -> Result<RoutingTable, String> {
        RoutingTable::build_resolved(
            cfg,
            &|n| self.ips.get(n).cloned().unwrap_or_default(),
            &|n| self.srv.get(n).cloned().unwrap_or_default(),
        )
    }
}

/// A lookup's outcome: the answer and how long it holds, or why there is none.
type Lookup<T> = Result<(T, Duration), String>;

impl Dns {
    /// The resolver of `[dns]`: its servers, else the system's configuration.
    pub fn new(s: &DnsSettings) -> Dns {
        let mut opts = ResolverOpts::default();
        // Every address of a name, IPv4 and IPv6.
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 2;
        let provider = TokioConnectionProvider::default();
        let resolver = if s.servers.is_empty() {
            match TokioResolver::builder_tokio() {
                Ok(mut b) => {
                    let system = b.options_mut();
                    system.ip_strategy = opts.ip_strategy;
                    system.attempts = system.attempts.min(opts.attempts);
                    system.timeout = system.timeout.min(opts.timeout);
                    Some(b.build())
                }
                Err(e) => {
                    warn!(error = %e, "no system DNS configuration: names resolved by getaddrinfo, kept for 60 s");
                    None
                }
            }
        } else {
            let mut group = Vec::new();
            for a in &s.servers {
                group.push(NameServerConfig::new(*a, Protocol::Udp));
                group.push(NameServerConfig::new(*a, Protocol::Tcp));
            }
            let config =
                ResolverConfig::from_parts(None, vec![], NameServerConfigGroup::from(group));
            Some(
                TokioResolver::builder_with_config(config, provider)
                    .with_options(opts)
                    .build(),
            )
        };
        Dns {
            resolver,
            min_ttl: s.min_ttl,
            max_ttl: s.max_ttl,
        }
    }

    fn bounded(&self, valid_until: Instant) -> Duration {
        valid_until
            .saturating_duration_since(Instant::now())
            .clamp(self.min_ttl, self.max_ttl)
    }

    /// Every address of `name` (at most [`MAX_ADDRESSES_PER_NAME`], in the answer's order).
    pub async fn ips(&self, name: &str) -> Lookup<Vec<IpAddr>> {
        let mut ips: Vec<IpAddr> = Vec::new();
        let ttl = match &self.resolver {
            Some(r) => {
                let lookup = r.lookup_ip(absolute(name));
                match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
                    Ok(Ok(found)) => {
                        ips.extend(found.iter());
                        self.bounded(found.valid_until())
                    }
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => return Err("no answer in time".into()),
                }
            }
            None => {
                let lookup = tokio::net::lookup_host(format!("{name}:0"));
                match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
                    Ok(Ok(found)) => {
                        ips.extend(found.map(|a| a.ip()));
                        NO_TTL.clamp(self.min_ttl, self.max_ttl)
                    }
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => return Err("no answer in time".into()),
                }
            }
        };
        let mut unique = Vec::new();
        for ip in ips {
            if !unique.contains(&ip) && unique.len() < MAX_ADDRESSES_PER_NAME {
                unique.push(ip);
            }
        }
        if unique.is_empty() {
            return Err("no address".into());
        }
        Ok((unique, ttl))
    }

    /// The SRV targets of `service` (e.g. `_sips._tcp.sip.example.com`) as (target, port), in
    /// the order they are tried; `Ok(empty)` when the name has no SRV records.
    async fn srv_targets(&self, service: &str) -> Lookup<Vec<(String, u16)>> {
        let Some(r) = &self.resolver else {
            return Ok((Vec::new(), self.min_ttl));
        };
        match tokio::time::timeout(LOOKUP_TIMEOUT, r.srv_lookup(absolute(service))).await {
            Ok(Ok(found)) => {
                let mut records: Vec<_> = found
                    .iter()
                    .map(|s| {
                        let target = s.target().to_utf8();
                        let target = target.trim_end_matches('.').to_ascii_lowercase();
                        (
                            s.priority(),
                            std::cmp::Reverse(s.weight()),
                            target,
                            s.port(),
                        )
                    })
                    // RFC 2782: a target of "." means the service is not offered there.
                    .filter(|(_, _, t, _)| !t.is_empty())
                    .collect();
                records.sort();
                records.dedup();
                records.truncate(MAX_SRV_TARGETS);
                let ttl = self.bounded(found.as_lookup().valid_until());
                Ok((
                    records.into_iter().map(|(_, _, t, p)| (t, p)).collect(),
                    ttl,
                ))
            }
            Ok(Err(e)) if e.is_no_records_found() || e.is_nx_domain() => {
                Ok((Vec::new(), self.min_ttl))
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer in time".into()),
        }
    }

    /// The first address of `name`, for a next hop named in a message.
    pub async fn first(&self, name: &str) -> Option<IpAddr> {
        self.ips(name)
            .await
            .ok()
            .and_then(|(ips, _)| ips.into_iter().next())
    }

    /// Resolves every name `cfg`'s table needs; `previous` supplies the last addresses of a
    /// name that fails now. Returns the answers and when to ask again (`None`: every name is
    /// static).
    pub async fn resolve(
        &self,
        cfg: &Config,
        previous: Option<&Resolution>,
    ) -> (Resolution, Option<Duration>) {
        let mut out = Resolution::default();
        let mut next: Option<Duration> = None;
        let mut expire = |ttl: Duration| next = Some(next.map_or(ttl, |n| n.min(ttl)));
        let names = RoutingTable::names_to_resolve(cfg);
        for n in names {
            if out.ips.contains_key(&n) {
                continue;
            }
            if let Some(ip) = cfg.static_host(&n) {
                out.ips.insert(n, vec![ip]);
                continue;
            }
            match self.ips(&n).await {
                Ok((ips, ttl)) => {
                    out.ips.insert(n, ips);
                    expire(ttl);
                }
                Err(e) => {
                    expire(self.min_ttl);
                    match previous.and_then(|p| p.ips.get(&n)) {
                        Some(last) => {
                            warn!(name = %n, error = %e, "name does not resolve now: its last addresses stay in use");
                            out.ips.insert(n, last.clone());
                        }
                        None => warn!(name = %n, error = %e, "name does not resolve"),
                    }
                }
            }
        }
        if cfg.cloud_peer.srv {
            let prefix = match cfg.cloud_peer.transport {
                Transport::Tls => "_sips._tcp",
                Transport::Tcp => "_sip._tcp",
                Transport::Udp => "_sip._udp",
            };
            for f in &cfg.cloud_peer.fqdns {
                let f = f.to_string();
                let service = format!("{prefix}.{f}");
                let targets = match self.srv_targets(&service).await {
                    Ok((t, ttl)) => {
                        expire(ttl);
                        t
                    }
                    Err(e) => {
                        expire(self.min_ttl);
                        if let Some(last) = previous.and_then(|p| p.srv.get(&f)) {
                            warn!(%service, error = %e, "SRV lookup failed now: the last targets stay in use");
                            out.srv.insert(f, last.clone());
                        } else {
                            warn!(%service, error = %e, "SRV lookup failed: the A/AAAA records are used");
                        }
                        continue;
                    }
                };
                let mut addrs: Vec<SocketAddr> = Vec::new();
                for (target, port) in targets {
                    let ips = match cfg.static_host(&target) {
                        Some(ip) => vec![ip],
                        None => match self.ips(&target).await {
                            Ok((ips, ttl)) => {
                                expire(ttl);
                                ips
                            }
                            Err(e) => {
                                expire(self.min_ttl);
                                warn!(%service, %target, error = %e, "SRV target does not resolve");
                                continue;
                            }
                        },
                    };
                    for ip in ips {
                        let a = SocketAddr::new(ip, port);
                        if !addrs.contains(&a) && addrs.len() < MAX_ADDRESSES_PER_NAME {
                            addrs.push(a);
                        }
                    }
                }
                if !addrs.is_empty() {
                    out.srv.insert(f, addrs);
                }
            }
        }
        (out, next)
    }
}

/// `name` as an absolute DNS name: configured FQDNs are never completed with search domains.
fn absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

/// Logs what changed between two resolutions, name by name.
pub fn log_changes(old: &Resolution, new: &Resolution) {
    for (n, ips) in &new.ips {
        if old.ips.get(n) != Some(ips) {
            info!(name = %n, addresses = ?ips, "DNS answer changed");
        }
    }
    for (n, addrs) in &new.srv {
        if old.srv.get(n) != Some(addrs) {
            info!(name = %n, targets = ?addrs, "SRV answer changed");
        }
    }
    for n in old.srv.keys().filter(|n| !new.srv.contains_key(*n)) {
        info!(name = %n, "SRV records gone: A/AAAA records used");
    }
}
