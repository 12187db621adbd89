//! The embedded directory store: SQLite (bundled) in `<state_dir>/directory.sqlite`, WAL mode.
//!
//! - **Durability**: every change is one transaction committed with `synchronous = FULL`
//!   before it is acknowledged, so a `kill -9` right after an acknowledged change keeps it.
//!   Validation happens before the transaction: invalid input never writes anything.
//! - **Precedence**: users declared in the configuration file are imported when absent from
//!   the store; once a user exists, the store wins (later edits of the file do not overwrite
//!   it). A user removed through the CLI or API is remembered (a tombstone) and not imported
//!   again; `user add` clears the tombstone. The tenant's peer destination is imported from
//!   `tenant.peer_destination` once, when the store has no tenant row.
//! - **Live changes**: [`spawn_watcher`] polls `PRAGMA data_version` every 500 ms and swaps a
//!   fresh [`Directory`] snapshot into the running proxy: a change reaches it within a second,
//!   calls in progress are untouched (they keep the targets they were routed to).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::{glob, validate_fqdn_port, validate_sip_address, StoreError, TenantPatch, UserPatch};
use crate::config::{Config, Fqdn, VoiceRoutingPolicy};
use crate::routing::directory::user_from_decl;
use crate::routing::{
    line_uri_number, DirUser, Directory, HybridMediationServer, TenantHybridConfig,
};

/// The store's file in a state directory.
pub fn store_path(state_dir: &Path) -> PathBuf {
    state_dir.join("directory.sqlite")
}

/// An open directory store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Site names of the configuration, for validation.
    sites: Vec<String>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenant (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    peer_destination TEXT,
    use_on_prem_dial_plan INTEGER NOT NULL,
    shared_sip_address_space INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    sip_address TEXT PRIMARY KEY,
    upn TEXT,
    display_name TEXT,
    enterprise_voice INTEGER NOT NULL,
    hosted_voicemail INTEGER NOT NULL,
    line_uri TEXT,
    voice_routing_policy TEXT NOT NULL,
    pstn_site TEXT
);
CREATE TABLE IF NOT EXISTS removed_users (sip_address TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS mediation_servers (
    identity TEXT PRIMARY KEY,
    fqdn TEXT NOT NULL UNIQUE,
    access_proxy_external_fqdn TEXT NOT NULL
);
";

impl Store {
    /// Opens (creating if needed) the store of `cfg`'s state directory and imports the
    /// configuration's users and tenant where absent.
    pub fn open(cfg: &Config) -> Result<Store, StoreError> {
        let dir = &cfg.appliance.state_dir;
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = store_path(dir);
        let conn = open_conn(&path)?;
        let mut store = Store {
            conn,
            path,
            sites: cfg.sites.iter().map(|s| s.name.clone()).collect(),
        };
        store.import(cfg)?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn import(&mut self, cfg: &Config) -> Result<(), StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        let has_tenant: bool = tx
            .query_row("SELECT COUNT(*) FROM tenant", [], |r| r.get::<_, i64>(0))
            .map_err(sql)?
            > 0;
        if !has_tenant {
            tx.execute(
                "INSERT INTO tenant (id, peer_destination, use_on_prem_dial_plan, shared_sip_address_space) VALUES (1, ?1, 0, 1)",
                params![cfg.tenant.peer_destination.as_ref().map(|f| f.to_string())],
            )
            .map_err(sql)?;
        }
        for decl in &cfg.users {
            let u = user_from_decl(decl);
            let removed: bool = tx
                .query_row(
                    "SELECT COUNT(*) FROM removed_users WHERE sip_address = ?1",
                    params![u.sip_address],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(sql)?
                > 0;
            if !removed {
                tx.execute(
                    "INSERT OR IGNORE INTO users (sip_address, upn, display_name, enterprise_voice, hosted_voicemail, line_uri, voice_routing_policy, pstn_site) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    user_params(&u).as_slice(),
                )
                .map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)
    }

    /// The whole directory as an immutable snapshot.
    pub fn snapshot(&self) -> Result<Directory, StoreError> {
        read_snapshot(&self.conn).map_err(|e| self.sql(e))
    }

    /// The user named by SIP address, UPN or display name.
    pub fn find_user(&self, identity: &str) -> Result<DirUser, StoreError> {
        let d = self.snapshot()?;
        d.find_user(identity)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(format!("identity: no user {identity:?}")))
    }

    /// Users whose SIP address, UPN or display name matches `pattern` (`*` wildcards;
    /// case-insensitive); every user for `None`.
    pub fn users(&self, pattern: Option<&str>) -> Result<Vec<DirUser>, StoreError> {
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
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        tx.execute(
            "INSERT INTO users (sip_address, upn, display_name, enterprise_voice, hosted_voicemail, line_uri, voice_routing_policy, pstn_site) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            user_params(&u).as_slice(),
        )
        .map_err(sql)?;
        tx.execute(
            "DELETE FROM removed_users WHERE sip_address = ?1",
            params![u.sip_address],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(u)
    }

    /// `user remove`.
    pub fn remove_user(&mut self, identity: &str) -> Result<DirUser, StoreError> {
        let u = self.find_user(identity)?;
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        tx.execute(
            "DELETE FROM users WHERE sip_address = ?1",
            params![u.sip_address],
        )
        .map_err(sql)?;
        tx.execute(
            "INSERT OR IGNORE INTO removed_users (sip_address) VALUES (?1)",
            params![u.sip_address],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(u)
    }

    /// `user set`, `user set-pstn-site`, `user grant-policy`: validates the whole patch, then
    /// writes it in one transaction.
    pub fn set_user(&mut self, identity: &str, patch: &UserPatch) -> Result<DirUser, StoreError> {
        let snap = self.snapshot()?;
        let mut u = snap
            .find_user(identity)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(format!("identity: no user {identity:?}")))?;
        self.apply(&snap, &mut u, patch)?;
        self.conn
            .execute(
                "UPDATE users SET upn = ?2, display_name = ?3, enterprise_voice = ?4, hosted_voicemail = ?5, line_uri = ?6, voice_routing_policy = ?7, pstn_site = ?8 WHERE sip_address = ?1",
                user_params(&u).as_slice(),
            )
            .map_err(|e| self.sql(e))?;
        Ok(u)
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

    pub fn tenant(&self) -> Result<TenantHybridConfig, StoreError> {
        Ok(self.snapshot()?.tenant)
    }

    /// `tenant set`.
    pub fn set_tenant(&mut self, p: &TenantPatch) -> Result<TenantHybridConfig, StoreError> {
        let mut t = self.tenant()?;
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
        self.conn
            .execute(
                "INSERT OR REPLACE INTO tenant (id, peer_destination, use_on_prem_dial_plan, shared_sip_address_space) VALUES (1, ?1, ?2, ?3)",
                params![t.peer_destination, t.use_on_prem_dial_plan, t.shared_sip_address_space],
            )
            .map_err(|e| self.sql(e))?;
        Ok(t)
    }

    pub fn mediation_servers(&self) -> Result<Vec<HybridMediationServer>, StoreError> {
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
        self.conn
            .execute(
                "INSERT OR REPLACE INTO mediation_servers (identity, fqdn, access_proxy_external_fqdn) VALUES (?1, ?2, ?3)",
                params![m.identity, m.fqdn, m.access_proxy_external_fqdn],
            )
            .map_err(|e| self.sql(e))?;
        Ok(m)
    }
}

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let sql = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let conn = Connection::open(path).map_err(sql)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
    // WAL: readers (the running server) never block the CLI's writes. synchronous = FULL: the
    // WAL is synced at every commit, so an acknowledged change survives kill -9 and power loss.
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sql)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sql)?;
    conn.execute_batch(SCHEMA).map_err(sql)?;
    Ok(conn)
}

fn user_params(u: &DirUser) -> [&dyn rusqlite::ToSql; 8] {
    [
        &u.sip_address,
        &u.upn,
        &u.display_name,
        &u.enterprise_voice,
        &u.hosted_voicemail,
        &u.line_uri,
        policy_str(u),
        &u.pstn_site,
    ]
}

fn policy_str(u: &DirUser) -> &'static &'static str {
    match u.voice_routing_policy {
        VoiceRoutingPolicy::InternationalCallsAllowed => &"InternationalCallsAllowed",
        VoiceRoutingPolicy::InternationalCallsDisallowed => &"InternationalCallsDisallowed",
    }
}

fn read_snapshot(conn: &Connection) -> Result<Directory, rusqlite::Error> {
    let tenant = conn
        .query_row(
            "SELECT peer_destination, use_on_prem_dial_plan, shared_sip_address_space FROM tenant WHERE id = 1",
            [],
            |r| {
                Ok(TenantHybridConfig {
                    peer_destination: r.get(0)?,
                    use_on_prem_dial_plan: r.get(1)?,
                    shared_sip_address_space: r.get(2)?,
                })
            },
        )
        .optional()?
        .unwrap_or_default();
    let mut st = conn.prepare(
        "SELECT sip_address, upn, display_name, enterprise_voice, hosted_voicemail, line_uri, voice_routing_policy, pstn_site FROM users ORDER BY sip_address",
    )?;
    let users = st
        .query_map([], |r| {
            let policy: String = r.get(6)?;
            Ok(DirUser {
                sip_address: r.get(0)?,
                upn: r.get(1)?,
                display_name: r.get(2)?,
                enterprise_voice: r.get(3)?,
                hosted_voicemail: r.get(4)?,
                line_uri: r.get(5)?,
                voice_routing_policy: VoiceRoutingPolicy::parse(&policy)
                    .unwrap_or(VoiceRoutingPolicy::InternationalCallsDisallowed),
                pstn_site: r.get(7)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut st = conn.prepare(
        "SELECT identity, fqdn, access_proxy_external_fqdn FROM mediation_servers ORDER BY identity",
    )?;
    let servers = st
        .query_map([], |r| {
            Ok(HybridMediationServer {
                identity: r.get(0)?,
                fqdn: r.get(1)?,
                access_proxy_external_fqdn: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Directory::new(tenant, users, servers))
}

/// Watches the store and swaps a fresh snapshot into `handle` within ~500 ms of any committed
/// change (by the CLI, the API or another process). Runs on its own thread for the process's
/// life.
pub fn spawn_watcher(
    path: PathBuf,
    handle: Arc<arc_swap::ArcSwap<Directory>>,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    let conn = open_conn(&path)?;
    std::thread::Builder::new()
        .name("directory-watch".into())
        .spawn(move || {
            let version = |c: &Connection| -> Option<i64> {
                c.query_row("PRAGMA data_version", [], |r| r.get(0)).ok()
            };
            let mut last = version(&conn);
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let v = version(&conn);
                if v == last {
                    continue;
                }
                last = v;
                match read_snapshot(&conn) {
                    Ok(d) => {
                        tracing::info!(
                            users = d.users.len(),
                            mediation_servers = d.mediation_servers.len(),
                            "directory changed: new snapshot in use"
                        );
                        handle.store(Arc::new(d));
                    }
                    Err(e) => tracing::error!(error = %e, "directory reload failed"),
                }
            }
        })
        .map_err(|source| StoreError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> Config {
        let text = include_str!("../../config/sipedge.toml").replace(
            "state_dir = \"../state\"",
            &format!("state_dir = {:?}", dir.display().to_string()),
        );
        Config::from_toml(Path::new("x.toml"), &text).unwrap()
    }

    #[test]
    fn imports_config_users_then_the_store_wins() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cfg(tmp.path());
        let mut s = Store::open(&c).unwrap();
        let d = s.snapshot().unwrap();
        assert_eq!(d.users.len(), 5);
        assert_eq!(d.tenant.peer_destination.as_deref(), Some("ap.lab.example"));
        s.set_user(
            "bob@lab.example",
            &UserPatch {
                voice_routing_policy: Some(VoiceRoutingPolicy::InternationalCallsAllowed),
                ..Default::default()
            },
        )
        .unwrap();
        s.remove_user("dave@lab.example").unwrap();
        drop(s);
        // Reopening (a restart) imports again: bob keeps the store's policy, dave stays removed.
        let s = Store::open(&c).unwrap();
        let d = s.snapshot().unwrap();
        assert_eq!(
            d.user_by_address("bob@lab.example")
                .unwrap()
                .voice_routing_policy,
            VoiceRoutingPolicy::InternationalCallsAllowed
        );
        assert!(d.user_by_address("dave@lab.example").is_none());
        assert_eq!(d.users.len(), 4);
    }

    #[test]
    fn invalid_input_names_the_field_and_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Store::open(&cfg(tmp.path())).unwrap();
        let before = s.snapshot().unwrap();
        // A valid field with an invalid one: nothing is written.
        let e = s
            .set_user(
                "alice@lab.example",
                &UserPatch {
                    enterprise_voice: Some(false),
                    line_uri: Some(Some("tel:12345".into())),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(e.to_string().starts_with("line_uri:"), "{e}");
        let e = s
            .set_user(
                "alice@lab.example",
                &UserPatch {
                    pstn_site: Some(Some("mars".into())),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(e.to_string().starts_with("site:"), "{e}");
        let e = s
            .set_user(
                "alice@lab.example",
                &UserPatch {
                    line_uri: Some(Some("tel:+14255550101".into())),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(e.http_status(), 409, "{e}");
        assert!(matches!(
            s.add_user("no-domain", &UserPatch::default()),
            Err(StoreError::Invalid { ref field, .. }) if field == "sip_address"
        ));
        assert!(s
            .set_tenant(&TenantPatch {
                peer_destination: Some(Some("ap.remote.example:99999".into())),
                ..Default::default()
            })
            .unwrap_err()
            .to_string()
            .starts_with("peer_destination:"));
        assert!(s
            .set_mediation_server("x", "not a name", "ap.lab.example")
            .unwrap_err()
            .to_string()
            .starts_with("fqdn:"));
        assert_eq!(s.snapshot().unwrap(), before);
        assert_eq!(s.find_user("zed").unwrap_err().http_status(), 404);
    }

    #[test]
    fn add_show_and_other_stores_see_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let c = cfg(tmp.path());
        let mut a = Store::open(&c).unwrap();
        let b = Store::open(&c).unwrap();
        let u = a
            .add_user(
                "sip:Frank@lab.example",
                &UserPatch {
                    upn: Some(Some("frank.f@corp.example".into())),
                    display_name: Some(Some("Frank F".into())),
                    enterprise_voice: Some(true),
                    hosted_voicemail: Some(true),
                    line_uri: Some(Some("tel:+14255550120;ext=120".into())),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(u.sip_address, "frank@lab.example");
        assert_eq!(u.voice_policy(), Some("HybridVoice"));
        assert_eq!(
            b.find_user("Frank F").unwrap().sip_address,
            "frank@lab.example"
        );
        assert_eq!(b.users(Some("*corp.example")).unwrap().len(), 1);
        assert_eq!(b.users(Some("*@lab.example")).unwrap().len(), 6);
        assert!(a
            .add_user("frank@lab.example", &UserPatch::default())
            .is_err());
        a.set_mediation_server("lab-ms", "mediation.lab.example", "ap.lab.example")
            .unwrap();
        assert_eq!(b.mediation_servers().unwrap().len(), 1);
        assert!(glob("a*e", "alice") && !glob("a*x", "alice") && glob("*", ""));
    }
}
