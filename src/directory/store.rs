//! [`Store`]: the directory's operations, one implementation of validation and precedence
//! over whichever [`Backend`] holds the data — the embedded SQLite file of one appliance
//! ([`super::sqlite`]) or the PostgreSQL database several appliances share
//! ([`super::postgres`], `[directory] url`).
//!
//! A backend only reads a snapshot and writes rows; everything the CLI and the API refuse
//! (invalid input, conflicts, unknown sites) is decided here, before anything is written.

use super::{glob, validate_fqdn_port, validate_sip_address, StoreError, TenantPatch, UserPatch};
use crate::config::{Config, Fqdn, VoiceRoutingPolicy};
use crate::routing::directory::user_from_decl;
use crate::routing::{
    line_uri_number, DirUser, Directory, HybridMediationServer, TenantHybridConfig,
};

/// Where the directory's rows live. Each write is one transaction, acknowledged only once it
/// is durable; a backend that cannot reach its database answers [`StoreError::Unavailable`].
pub trait Backend: Send {
    /// The whole directory.
    fn snapshot(&mut self) -> Result<Directory, StoreError>;
    /// Imports the configuration's tenant (when the store has none) and users (when absent
    /// and not removed through the CLI or API).
    fn import(
        &mut self,
        peer_destination: Option<&str>,
        users: &[DirUser],
    ) -> Result<(), StoreError>;
    /// A new user ([`StoreError::Conflict`] when the address exists); clears its tombstone.
    fn insert_user(&mut self, u: &DirUser) -> Result<(), StoreError>;
    /// Removes a user and remembers it (not imported again).
    fn delete_user(&mut self, sip_address: &str) -> Result<(), StoreError>;
    /// Writes `after` if the user's row is still `before` (compare and set: several
    /// appliances may change one user at once); `false` when it changed (or is gone).
    fn update_user(&mut self, before: &DirUser, after: &DirUser) -> Result<bool, StoreError>;
    /// Writes `after` if the tenant's row is still `before` (or absent); `false` when it
    /// changed.
    fn update_tenant(
        &mut self,
        before: &TenantHybridConfig,
        after: &TenantHybridConfig,
    ) -> Result<bool, StoreError>;
    fn write_mediation_server(&mut self, m: &HybridMediationServer) -> Result<(), StoreError>;
    /// Where the data lives, for messages (a path, a URL without password).
    fn location(&self) -> String;
}

/// How often a change is re-read and re-applied when its row changed under it.
const CAS_TRIES: usize = 5;

/// An open directory store.
pub struct Store {
    backend: Box<dyn Backend>,
    /// Site names of the configuration, for validation.
    sites: Vec<String>,
}

impl Store {
    /// Opens the store `cfg` names — PostgreSQL with `[directory] url`, else the SQLite file
    /// of the state directory — creating or migrating its schema, and imports the
    /// configuration's users and tenant where absent.
    ///
    /// With PostgreSQL, call it where blocking is allowed (not on an async task).
    pub fn open(cfg: &Config) -> Result<Store, StoreError> {
        let backend: Box<dyn Backend> = match &cfg.directory {
            Some(d) => Box::new(super::postgres::PgBackend::open(d)?),
            None => Box::new(super::sqlite::SqliteBackend::open(
                &cfg.appliance.state_dir,
            )?),
        };
        let mut store = Store {
            backend,
            sites: cfg.sites.iter().map(|s| s.name.clone()).collect(),
        };
        let users: Vec<DirUser> = cfg.users.iter().map(user_from_decl).collect();
        let pd = cfg.tenant.peer_destination.as_ref().map(|f| f.to_string());
        store.backend.import(pd.as_deref(), &users)?;
        Ok(store)
    }

    /// The shared directory's store without reaching its database now (it is down at start):
    /// its operations connect when it is back; the configuration's users are imported at the
    /// next start. `None` without `[directory]`.
    pub fn open_offline(cfg: &Config) -> Result<Option<Store>, StoreError> {
        let Some(d) = &cfg.directory else {
            return Ok(None);
        };
        Ok(Some(Store {
            backend: Box::new(super::postgres::PgBackend::offline(d)?),
            sites: cfg.sites.iter().map(|s| s.name.clone()).collect(),
        }))
    }

    /// Where the data lives (a file, or the database URL without its password).
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// The whole directory as an immutable snapshot.
    pub fn snapshot(&mut self) -> Result<Directory, StoreError> {
        self.backend.snapshot()
    }

    /// The user named by SIP address, UPN or display name.
    pub fn find_user(&mut self, identity: &str) -> Result<DirUser, StoreError> {
        let d = self.snapshot()?;
        d.find_user(identity)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(format!("identity: no user {identity:?}")))
    }

    /// Users whose SIP address, UPN or display name matches `pattern` (`*` wildcards;
    /// case-insensitive); every user for `None`.
    pub fn users(&mut self, pattern: Option<&str>) -> Result<Vec<DirUser>, StoreError> {
        let d = self.snapshot()?;
        Ok(d.users
            .into_iter()
            .filter(|u| {
                pattern.is_none_or(|p| {
                    [
                        Some(u.sip_address.as_str()),
                        u.upn.as_deref(),
                        u.display_name.as_deref(),
                    ]
                    .into_iter()
                    .flatten()
                    .any(|s| glob(p, s))
                })
            })
            .collect())
    }

    /// `user add`: a new user, enterprise voice off unless patched.
    pub fn add_user(
        &mut self,
        sip_address: &str,
        patch: &UserPatch,
    ) -> Result<DirUser, StoreError> {
        let addr = validate_sip_address(sip_address)?;
        let snap = self.snapshot()?;
        if snap.user_by_address(&addr).is_some() {
            return Err(StoreError::Conflict(format!(
                "sip_address: user {addr} already exists"
            )));
        }
        let mut u = DirUser {
            sip_address: addr,
            upn: None,
            display_name: None,
            enterprise_voice: false,
            hosted_voicemail: false,
            line_uri: None,
            voice_routing_policy: VoiceRoutingPolicy::InternationalCallsDisallowed,
            pstn_site: None,
        };
        self.apply(&snap, &mut u, patch)?;
        self.backend.insert_user(&u)?;
        Ok(u)
    }

    /// `user remove`.
    pub fn remove_user(&mut self, identity: &str) -> Result<DirUser, StoreError> {
        let u = self.find_user(identity)?;
        self.backend.delete_user(&u.sip_address)?;
        Ok(u)
    }

    /// `user set`, `user set-pstn-site`, `user grant-policy`: validates the whole patch, then
    /// writes it in one transaction.
    ///
    /// The patch applies to the user as stored when it is written: a concurrent change of
    /// another field (through another appliance) is kept, not overwritten.
    pub fn set_user(&mut self, identity: &str, patch: &UserPatch) -> Result<DirUser, StoreError> {
        for _ in 0..CAS_TRIES {
            let snap = self.snapshot()?;
            let before = snap
                .find_user(identity)
                .cloned()
                .ok_or_else(|| StoreError::NotFound(format!("identity: no user {identity:?}")))?;
            let mut u = before.clone();
            self.apply(&snap, &mut u, patch)?;
            if self.backend.update_user(&before, &u)? {
                return Ok(u);
            }
        }
        Err(StoreError::Conflict(format!(
            "identity: {identity} keeps changing concurrently; try again"
        )))
    }

    /// Validates `patch` against the configuration and the other users, and applies it to `u`.
    fn apply(&self, snap: &Directory, u: &mut DirUser, p: &UserPatch) -> Result<(), StoreError> {
        if let Some(upn) = &p.upn {
            if let Some(v) = upn {
                validate_sip_address(v).map_err(|_| {
                    StoreError::invalid("upn", format!("{v:?} is not of the form user@domain"))
                })?;
                if snap
                    .users
                    .iter()
                    .any(|o| o.sip_address != u.sip_address && o.matches(v))
                {
                    return Err(StoreError::Conflict(format!(
                        "upn: {v} already names another user"
                    )));
                }
            }
            u.upn = upn.clone();
        }
        if let Some(dn) = &p.display_name {
            if let Some(v) = dn {
                if v.trim().is_empty() || v.chars().any(char::is_control) {
                    return Err(StoreError::invalid(
                        "display_name",
                        "must be non-empty printable text",
                    ));
                }
            }
            u.display_name = dn.clone();
        }
        if let Some(ev) = p.enterprise_voice {
            u.enterprise_voice = ev;
        }
        if let Some(hv) = p.hosted_voicemail {
            u.hosted_voicemail = hv;
        }
        if let Some(l) = &p.line_uri {
            if let Some(v) = l {
                let Some(number) = line_uri_number(v) else {
                    return Err(StoreError::invalid(
                        "line_uri",
                        format!("{v:?} is not of the form tel:+E.164[;ext=…]"),
                    ));
                };
                if let Some(o) = snap.user_by_number(&number) {
                    if o.sip_address != u.sip_address {
                        return Err(StoreError::Conflict(format!(
                            "line_uri: {number} is already the line URI of {}",
                            o.sip_address
                        )));
                    }
                }
            }
            u.line_uri = l.clone();
        }
        if let Some(pol) = p.voice_routing_policy {
            u.voice_routing_policy = pol;
        }
        if let Some(site) = &p.pstn_site {
            if let Some(s) = site {
                if !self.sites.iter().any(|n| n == s) {
                    return Err(StoreError::invalid(
                        "site",
                        format!(
                            "site {s:?} is not defined in the configuration (sites: {})",
                            self.sites.join(", ")
                        ),
                    ));
                }
            }
            u.pstn_site = site.clone();
        }
        Ok(())
    }

    pub fn tenant(&mut self) -> Result<TenantHybridConfig, StoreError> {
        Ok(self.snapshot()?.tenant)
    }

    /// `tenant set`.
    pub fn set_tenant(&mut self, p: &TenantPatch) -> Result<TenantHybridConfig, StoreError> {
        for _ in 0..CAS_TRIES {
            let before = self.tenant()?;
            let t = Self::patch_tenant(&before, p)?;
            if self.backend.update_tenant(&before, &t)? {
                return Ok(t);
            }
        }
        Err(StoreError::Conflict(
            "tenant: keeps changing concurrently; try again".into(),
        ))
    }

    fn patch_tenant(
        before: &TenantHybridConfig,
        p: &TenantPatch,
    ) -> Result<TenantHybridConfig, StoreError> {
        let mut t = before.clone();
        if let Some(pd) = &p.peer_destination {
            if let Some(v) = pd {
                validate_fqdn_port(v).map_err(|r| StoreError::invalid("peer_destination", r))?;
            }
            t.peer_destination = pd.as_ref().map(|v| v.to_ascii_lowercase());
        }
        if let Some(b) = p.use_on_prem_dial_plan {
            t.use_on_prem_dial_plan = b;
        }
        if let Some(b) = p.shared_sip_address_space {
            t.shared_sip_address_space = b;
        }
        Ok(t)
    }

    pub fn mediation_servers(&mut self) -> Result<Vec<HybridMediationServer>, StoreError> {
        Ok(self.snapshot()?.mediation_servers)
    }

    /// `mediation-server set`: registers (or updates) a hybrid mediation server.
    pub fn set_mediation_server(
        &mut self,
        identity: &str,
        fqdn: &str,
        edge: &str,
    ) -> Result<HybridMediationServer, StoreError> {
        if identity.trim().is_empty() || identity.chars().any(char::is_control) {
            return Err(StoreError::invalid(
                "identity",
                "must be non-empty printable text",
            ));
        }
        let fqdn = Fqdn::parse(fqdn).map_err(|r| StoreError::invalid("fqdn", r))?;
        let edge =
            Fqdn::parse(edge).map_err(|r| StoreError::invalid("access_proxy_external_fqdn", r))?;
        let others = self.mediation_servers()?;
        if let Some(o) = others
            .iter()
            .find(|m| m.fqdn == fqdn.as_str() && m.identity != identity)
        {
            return Err(StoreError::Conflict(format!(
                "fqdn: {fqdn} is already registered as {:?}",
                o.identity
            )));
        }
        let m = HybridMediationServer {
            identity: identity.to_owned(),
            fqdn: fqdn.to_string(),
            access_proxy_external_fqdn: edge.to_string(),
        };
        self.backend.write_mediation_server(&m)?;
        Ok(m)
    }
}
