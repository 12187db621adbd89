//! The tenant directory as the routing function sees it: an immutable snapshot.
//!
//! The persistent store (`crate::directory`) builds a [`Directory`] after every change and the
//! proxy swaps it in; routing only reads it. This module is pure: no IO, no clock.
//!
//! What each part mirrors in Cloud Connector:
//! - `TenantHybridConfig`: `Set-CsTenantHybridConfiguration -PeerDestination
//!   -UseOnPremDialPlan` and `Set-CsTenantFederationConfiguration -SharedSipAddressSpace`;
//! - `DirUser`: `Set-CsUser`, `Set-CsUserPstnSettings -HybridPstnSite`,
//!   `Grant-CsVoiceRoutingPolicy`;
//! - `HybridMediationServer`: `Set-CsHybridMediationServer`.

use std::collections::HashMap;

use crate::config::{Config, VoiceRoutingPolicy};

/// The tenant's hybrid configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantHybridConfig {
    /// Our access edge FQDN (optionally `:port`) as the tenant configures it. It names the
    /// tenant's *default site*: the site whose access edge FQDN it is. Not to be confused with
    /// the *cloud peer*, where calls are sent.
    pub peer_destination: Option<String>,
    pub use_on_prem_dial_plan: bool,
    pub shared_sip_address_space: bool,
}

impl TenantHybridConfig {
    /// The peer destination's FQDN without the port, lower-case.
    pub fn peer_destination_fqdn(&self) -> Option<String> {
        self.peer_destination.as_deref().map(|p| {
            p.rsplit_once(':')
                .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
                .map_or(p, |(h, _)| h)
                .to_ascii_lowercase()
        })
    }
}

/// A tenant user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirUser {
    /// `user@domain`, lower-case: the identity.
    pub sip_address: String,
    /// User principal name: an alternative identity.
    pub upn: Option<String>,
    /// Display name: an alternative identity.
    pub display_name: Option<String>,
    pub enterprise_voice: bool,
    pub hosted_voicemail: bool,
    /// `tel:+E.164[;ext=…]`
    pub line_uri: Option<String>,
    pub voice_routing_policy: VoiceRoutingPolicy,
    pub pstn_site: Option<String>,
}

impl DirUser {
    /// `VoicePolicy` as Get-CsOnlineUser derives it: `HybridVoice` for a user with enterprise
    /// voice and hosted voicemail, else `None`.
    pub fn voice_policy(&self) -> Option<&'static str> {
        (self.enterprise_voice && self.hosted_voicemail).then_some("HybridVoice")
    }

    /// The E.164 number of the line URI (`+…`, extension dropped).
    pub fn line_number(&self) -> Option<String> {
        self.line_uri.as_deref().and_then(line_uri_number)
    }

    /// Does `identity` name this user (SIP address with or without `sip:`, its user part alone,
    /// UPN, display name; case-insensitive)?
    pub fn matches(&self, identity: &str) -> bool {
        let id = identity.trim();
        let id = id
            .get(..4)
            .filter(|p| p.eq_ignore_ascii_case("sip:"))
            .and_then(|_| id.get(4..))
            .unwrap_or(id);
        let local_part = !id.contains('@')
            && self
                .sip_address
                .split_once('@')
                .is_some_and(|(u, _)| u.eq_ignore_ascii_case(id));
        self.sip_address.eq_ignore_ascii_case(id)
            || local_part
            || self
                .upn
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(id))
            || self
                .display_name
                .as_deref()
                .is_some_and(|d| d.eq_ignore_ascii_case(id))
    }
}

/// The number of a `tel:+E.164[;ext=…]` line URI, `None` when it is not of that form.
pub fn line_uri_number(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("tel:")?;
    let number = rest.split(';').next().unwrap_or("");
    let digits = number.strip_prefix('+')?;
    ((1..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| number.to_owned())
}

/// A registered hybrid mediation server (for conference escalation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HybridMediationServer {
    /// The display name it was registered under.
    pub identity: String,
    /// Its mediation FQDN, lower-case.
    pub fqdn: String,
    /// The access edge FQDN of its site, lower-case.
    pub access_proxy_external_fqdn: String,
}

/// An immutable snapshot of the directory, indexed for routing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Directory {
    pub tenant: TenantHybridConfig,
    pub users: Vec<DirUser>,
    pub mediation_servers: Vec<HybridMediationServer>,
    /// E.164 number (`+…`) → index into `users`.
    by_number: HashMap<String, usize>,
    /// SIP address → index into `users`.
    by_address: HashMap<String, usize>,
}

impl Directory {
    pub fn new(
        tenant: TenantHybridConfig,
        users: Vec<DirUser>,
        mediation_servers: Vec<HybridMediationServer>,
    ) -> Directory {
        let mut by_number = HashMap::new();
        let mut by_address = HashMap::new();
        for (i, u) in users.iter().enumerate() {
            if let Some(n) = u.line_number() {
                by_number.entry(n).or_insert(i);
            }
            by_address.insert(u.sip_address.to_ascii_lowercase(), i);
        }
        Directory {
            tenant,
            users,
            mediation_servers,
            by_number,
            by_address,
        }
    }

    /// The directory a configuration file declares (tenant peer destination, `[[users]]`); no
    /// mediation server is registered. The store imports it; tests use it directly.
    pub fn from_config(cfg: &Config) -> Directory {
        Directory::new(
            TenantHybridConfig {
                peer_destination: cfg.tenant.peer_destination.as_ref().map(|f| f.to_string()),
                use_on_prem_dial_plan: false,
                shared_sip_address_space: true,
            },
            cfg.users.iter().map(user_from_decl).collect(),
            Vec::new(),
        )
    }

    /// The user whose line URI is `number` (E.164, `+…`): reverse number lookup.
    pub fn user_by_number(&self, number: &str) -> Option<&DirUser> {
        self.by_number.get(number).and_then(|&i| self.users.get(i))
    }

    /// The user with this SIP address (`user@domain`).
    pub fn user_by_address(&self, addr: &str) -> Option<&DirUser> {
        self.by_address
            .get(&addr.to_ascii_lowercase())
            .and_then(|&i| self.users.get(i))
    }

    /// The user named by SIP address, UPN or display name; an exact SIP address wins, and an
    /// identity naming several users (`bob` in two domains) names none.
    pub fn find_user(&self, identity: &str) -> Option<&DirUser> {
        let bare = identity.trim().trim_start_matches("sip:");
        if let Some(u) = self.user_by_address(bare) {
            return Some(u);
        }
        let mut it = self.users.iter().filter(|u| u.matches(identity));
        let first = it.next()?;
        it.next().is_none().then_some(first)
    }

    /// The registered mediation server with this FQDN.
    pub fn mediation_server(&self, fqdn: &str) -> Option<&HybridMediationServer> {
        self.mediation_servers
            .iter()
            .find(|m| m.fqdn.eq_ignore_ascii_case(fqdn))
    }
}

/// A `[[users]]` declaration as a directory user.
pub fn user_from_decl(u: &crate::config::UserDecl) -> DirUser {
    DirUser {
        sip_address: u.sip_address.clone(),
        upn: None,
        display_name: None,
        enterprise_voice: u.enterprise_voice,
        hosted_voicemail: u.hosted_voicemail,
        line_uri: u.line_uri.clone(),
        voice_routing_policy: u.voice_routing_policy,
        pstn_site: u.pstn_site.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn dir() -> Directory {
        let cfg = Config::from_toml(
            Path::new("config/sipedge.toml"),
            include_str!("../../config/sipedge.toml"),
        )
        .unwrap();
        Directory::from_config(&cfg)
    }

    #[test]
    fn lookups_by_number_address_and_alternative_identities() {
        let mut d = dir();
        assert_eq!(
            d.user_by_number("+14255550100")
                .map(|u| u.sip_address.as_str()),
            Some("alice@lab.example")
        );
        assert!(d.user_by_number("+14255550199").is_none());
        assert!(d.user_by_address("Bob@Lab.Example").is_some());
        d.users[0].upn = Some("alice.smith@corp.example".into());
        d.users[0].display_name = Some("Alice Smith".into());
        assert!(d.find_user("ALICE.SMITH@corp.example").is_some());
        assert!(d.find_user("alice smith").is_some());
        assert!(d.find_user("sip:alice@lab.example").is_some());
        assert!(d.find_user("zed@lab.example").is_none());
        assert_eq!(
            d.find_user("bob").map(|u| u.sip_address.as_str()),
            Some("bob@lab.example")
        );
        d.users.push(DirUser {
            sip_address: "bob@other.example".into(),
            ..d.users[1].clone()
        });
        assert!(d.find_user("bob").is_none(), "ambiguous");
    }

    #[test]
    fn line_uri_numbers_and_voice_policy() {
        assert_eq!(
            line_uri_number("tel:+14255550100;ext=100").as_deref(),
            Some("+14255550100")
        );
        assert_eq!(line_uri_number("tel:14255550100"), None);
        assert_eq!(line_uri_number("sip:+1@x"), None);
        let mut u = dir().users[0].clone();
        assert_eq!(u.voice_policy(), None, "alice has no hosted voicemail");
        u.hosted_voicemail = true;
        assert_eq!(u.voice_policy(), Some("HybridVoice"));
    }

    #[test]
    fn peer_destination_without_port() {
        let t = TenantHybridConfig {
            peer_destination: Some("AP.lab.example:5061".into()),
            ..Default::default()
        };
        assert_eq!(t.peer_destination_fqdn().as_deref(), Some("ap.lab.example"));
    }
}
