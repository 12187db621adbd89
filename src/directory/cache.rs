//! The last snapshot of a shared directory, kept in `<state_dir>/directory.cache.json` (mode
//! 0600: it names users) every time the watcher loads one, so an appliance restarted while the
//! database is unreachable still routes — from that snapshot — and takes changes again when the
//! database returns. Only the PostgreSQL store uses it: the SQLite file is local.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::VoiceRoutingPolicy;
use crate::routing::{DirUser, Directory, HybridMediationServer, TenantHybridConfig};

/// The cache file in a state directory.
pub fn cache_path(state_dir: &Path) -> PathBuf {
    state_dir.join("directory.cache.json")
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CachedTenant {
    peer_destination: Option<String>,
    use_on_prem_dial_plan: bool,
    shared_sip_address_space: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CachedUser {
    sip_address: String,
    upn: Option<String>,
    display_name: Option<String>,
    enterprise_voice: bool,
    hosted_voicemail: bool,
    line_uri: Option<String>,
    voice_routing_policy: String,
    pstn_site: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CachedServer {
    identity: String,
    fqdn: String,
    access_proxy_external_fqdn: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cached {
    tenant: CachedTenant,
    users: Vec<CachedUser>,
    mediation_servers: Vec<CachedServer>,
}

/// Writes `d` atomically (temporary file, fsync, rename), mode 0600.
pub fn save(state_dir: &Path, d: &Directory) -> std::io::Result<()> {
    let c = Cached {
        tenant: CachedTenant {
            peer_destination: d.tenant.peer_destination.clone(),
            use_on_prem_dial_plan: d.tenant.use_on_prem_dial_plan,
            shared_sip_address_space: d.tenant.shared_sip_address_space,
        },
        users: d
            .users
            .iter()
            .map(|u| CachedUser {
                sip_address: u.sip_address.clone(),
                upn: u.upn.clone(),
                display_name: u.display_name.clone(),
                enterprise_voice: u.enterprise_voice,
                hosted_voicemail: u.hosted_voicemail,
                line_uri: u.line_uri.clone(),
                voice_routing_policy: u.voice_routing_policy.as_str().to_owned(),
                pstn_site: u.pstn_site.clone(),
            })
            .collect(),
        mediation_servers: d
            .mediation_servers
            .iter()
            .map(|m| CachedServer {
                identity: m.identity.clone(),
                fqdn: m.fqdn.clone(),
                access_proxy_external_fqdn: m.access_proxy_external_fqdn.clone(),
            })
            .collect(),
    };
    let text = serde_json::to_vec(&c).map_err(std::io::Error::other)?;
    std::fs::create_dir_all(state_dir)?;
    let path = cache_path(state_dir);
    let tmp = state_dir.join(".directory.cache.json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&text)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// The cached snapshot; `None` when there is none or it does not parse.
pub fn load(state_dir: &Path) -> Option<Directory> {
    let text = std::fs::read(cache_path(state_dir)).ok()?;
    let c: Cached = match serde_json::from_slice(&text) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "the directory cache does not parse; ignored");
            return None;
        }
    };
    let users = c
        .users
        .into_iter()
        .map(|u| DirUser {
            sip_address: u.sip_address,
            upn: u.upn,
            display_name: u.display_name,
            enterprise_voice: u.enterprise_voice,
            hosted_voicemail: u.hosted_voicemail,
            line_uri: u.line_uri,
            voice_routing_policy: VoiceRoutingPolicy::parse(&u.voice_routing_policy)
                .unwrap_or(VoiceRoutingPolicy::InternationalCallsDisallowed),
            pstn_site: u.pstn_site,
        })
        .collect();
    let servers = c
        .mediation_servers
        .into_iter()
        .map(|m| HybridMediationServer {
            identity: m.identity,
            fqdn: m.fqdn,
            access_proxy_external_fqdn: m.access_proxy_external_fqdn,
        })
        .collect();
    let tenant = TenantHybridConfig {
        peer_destination: c.tenant.peer_destination,
        use_on_prem_dial_plan: c.tenant.use_on_prem_dial_plan,
        shared_sip_address_space: c.tenant.shared_sip_address_space,
    };
    Some(Directory::new(tenant, users, servers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_0600_and_garbage_ignored() {
        let cfg = Config::from_toml(
            Path::new("x.toml"),
            include_str!("../../config/sipedge.toml"),
        )
        .unwrap();
        let mut d = Directory::from_config(&cfg);
        d = Directory::new(
            d.tenant.clone(),
            d.users.clone(),
            vec![HybridMediationServer {
                identity: "ms".into(),
                fqdn: "mediation.lab.example".into(),
                access_proxy_external_fqdn: "ap.lab.example".into(),
            }],
        );
        let tmp = tempfile::tempdir().unwrap();
        assert!(load(tmp.path()).is_none());
        save(tmp.path(), &d).unwrap();
        assert_eq!(load(tmp.path()).unwrap(), d);
        let mode = std::fs::metadata(cache_path(tmp.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(cache_path(tmp.path()), b"{\"tenant\":").unwrap();
        assert!(load(tmp.path()).is_none());
    }
}
