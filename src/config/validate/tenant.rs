//! `[appliance]`, `[tenant]` and `[[users]]`: who this appliance is (its site, its FQDN on
//! each side, its state directory), the tenant's SIP domains and peer destination, and the
//! users it declares.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::Validator;
use crate::config::{raw, Appliance, ConfigError, Fqdn, Tenant, UserDecl, VoiceRoutingPolicy};

impl Validator<'_> {
    /// The appliance; a relative `state_dir` resolves against `base`.
    pub(super) fn appliance(
        &self,
        base: &Path,
        raw: &raw::RawAppliance,
    ) -> Result<Appliance, ConfigError> {
        let mediation_fqdn = self.fqdn("appliance.mediation_fqdn", &raw.mediation_fqdn)?;
        let access_edge_fqdn = self.fqdn("appliance.access_edge_fqdn", &raw.access_edge_fqdn)?;
        let state_dir = {
            let p = PathBuf::from(&raw.state_dir);
            if p.is_absolute() {
                p
            } else {
                base.join(p)
            }
        };
        Ok(Appliance {
            site: raw.site.clone(),
            mediation_fqdn,
            access_edge_fqdn,
            state_dir,
        })
    }

    pub(super) fn tenant(&self, raw: &raw::RawTenant) -> Result<Tenant, ConfigError> {
        if raw.sip_domains.is_empty() {
            return Err(self.err("tenant.sip_domains", "at least one SIP domain is required"));
        }
        let mut sip_domains = Vec::new();
        for (i, d) in raw.sip_domains.iter().enumerate() {
            sip_domains.push(self.fqdn(&format!("tenant.sip_domains[{i}]"), d)?);
        }
        let peer_destination = match &raw.peer_destination {
            Some(p) => Some(self.fqdn("tenant.peer_destination", p)?),
            None => None,
        };
        Ok(Tenant {
            sip_domains,
            peer_destination,
        })
    }

    /// The users; a `pstn_site` must be one of `site_names`.
    pub(super) fn users(
        &self,
        raw: &[raw::RawUser],
        site_names: &HashSet<String>,
    ) -> Result<Vec<UserDecl>, ConfigError> {
        let mut users = Vec::new();
        let mut user_names = HashSet::new();
        for (i, u) in raw.iter().enumerate() {
            let key = format!("users[{i}]");
            let addr = u
                .sip_address
                .trim_start_matches("sip:")
                .to_ascii_lowercase();
            let valid = addr
                .split_once('@')
                .is_some_and(|(user, dom)| !user.is_empty() && Fqdn::parse(dom).is_ok());
            if !valid {
                return Err(self.err(&format!("{key}.sip_address"), "expected user@domain"));
            }
            if !user_names.insert(addr.clone()) {
                return Err(self.err(
                    &format!("{key}.sip_address"),
                    &format!("user {addr} is declared twice"),
                ));
            }
            if let Some(l) = &u.line_uri {
                let ok = l
                    .strip_prefix("tel:+")
                    .map(|rest| rest.split(';').next().unwrap_or(""))
                    .is_some_and(|d| {
                        (1..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit())
                    });
                if !ok {
                    return Err(self.err(&format!("{key}.line_uri"), "expected tel:+E.164[;ext=…]"));
                }
            }
            if let Some(s) = &u.pstn_site {
                if !site_names.contains(s) {
                    return Err(self.err(
                        &format!("{key}.pstn_site"),
                        &format!("site {s:?} is not defined"),
                    ));
                }
            }
            let voice_routing_policy = match &u.voice_routing_policy {
                Some(p) => VoiceRoutingPolicy::parse(p)
                    .map_err(|r| self.err(&format!("{key}.voice_routing_policy"), &r))?,
                None => VoiceRoutingPolicy::InternationalCallsDisallowed,
            };
            users.push(UserDecl {
                sip_address: addr,
                line_uri: u.line_uri.clone(),
                enterprise_voice: u.enterprise_voice,
                hosted_voicemail: u.hosted_voicemail,
                voice_routing_policy,
                pstn_site: u.pstn_site.clone(),
            });
        }
        Ok(users)
    }
}
