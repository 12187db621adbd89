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

use super::store::Backend;
use super::StoreError;
use crate::config::VoiceRoutingPolicy;
use crate::routing::{DirUser, Directory, HybridMediationServer, TenantHybridConfig};

/// The store's file in a state directory.
pub fn store_path(state_dir: &Path) -> PathBuf {
    state_dir.join("directory.sqlite")
}

/// The SQLite file of one appliance.
pub struct SqliteBackend {
    conn: Connection,
    path: PathBuf,
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

impl SqliteBackend {
    /// Opens (creating if needed) `<state_dir>/directory.sqlite`.
    pub fn open(state_dir: &Path) -> Result<SqliteBackend, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::Io {
            path: state_dir.to_owned(),
            source,
        })?;
        let path = store_path(state_dir);
        let conn = open_conn(&path)?;
        Ok(SqliteBackend { conn, path })
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Runs `f` in one transaction.
    fn in_tx(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(), rusqlite::Error>,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sql)?;
        f(&tx).map_err(sql)?;
        tx.commit().map_err(sql)
    }
}

impl Backend for SqliteBackend {
    fn snapshot(&mut self) -> Result<Directory, StoreError> {
        read_snapshot(&self.conn).map_err(|e| self.sql(e))
    }

    fn import(
        &mut self,
        peer_destination: Option<&str>,
        users: &[DirUser],
    ) -> Result<(), StoreError> {
        self.in_tx(|tx| {
            let has_tenant: bool =
                tx.query_row("SELECT COUNT(*) FROM tenant", [], |r| r.get::<_, i64>(0))? > 0;
            if !has_tenant {
                tx.execute(
                    "INSERT INTO tenant (id, peer_destination, use_on_prem_dial_plan, shared_sip_address_space) VALUES (1, ?1, 0, 1)",
                    params![peer_destination],
                )?;
            }
            for u in users {
                let removed: bool = tx.query_row(
                    "SELECT COUNT(*) FROM removed_users WHERE sip_address = ?1",
                    params![u.sip_address],
                    |r| r.get::<_, i64>(0),
                )? > 0;
                if !removed {
                    tx.execute(
                        "INSERT OR IGNORE INTO users (sip_address, upn, display_name, enterprise_voice, hosted_voicemail, line_uri, voice_routing_policy, pstn_site) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        user_params(u).as_slice(),
                    )?;
                }
            }
            Ok(())
        })
    }

    fn insert_user(&mut self, u: &DirUser) -> Result<(), StoreError> {
        let r = self.in_tx(|tx| {
            tx.execute(
                "INSERT INTO users (sip_address, upn, display_name, enterprise_voice, hosted_voicemail, line_uri, voice_routing_policy, pstn_site) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                user_params(u).as_slice(),
            )?;
            tx.execute(
                "DELETE FROM removed_users WHERE sip_address = ?1",
                params![u.sip_address],
            )?;
            Ok(())
        });
        match r {
            Err(StoreError::Sqlite {
                source: rusqlite::Error::SqliteFailure(e, _),
                ..
            }) if e.code == rusqlite::ErrorCode::ConstraintViolation => Err(StoreError::Conflict(
                format!("sip_address: user {} already exists", u.sip_address),
            )),
            r => r,
        }
    }

    fn delete_user(&mut self, sip_address: &str) -> Result<(), StoreError> {
        self.in_tx(|tx| {
            tx.execute(
                "DELETE FROM users WHERE sip_address = ?1",
                params![sip_address],
            )?;
            tx.execute(
                "INSERT OR IGNORE INTO removed_users (sip_address) VALUES (?1)",
                params![sip_address],
            )?;
            Ok(())
        })
    }

    fn update_user(&mut self, before: &DirUser, after: &DirUser) -> Result<bool, StoreError> {
        let a = user_params(after);
        let b = user_params(before);
        let params: Vec<&dyn rusqlite::ToSql> = a.iter().chain(b.iter().skip(1)).copied().collect();
        self.conn
            .execute(
                "UPDATE users SET upn = ?2, display_name = ?3, enterprise_voice = ?4, hosted_voicemail = ?5, line_uri = ?6, voice_routing_policy = ?7, pstn_site = ?8 WHERE sip_address = ?1 AND upn IS ?9 AND display_name IS ?10 AND enterprise_voice IS ?11 AND hosted_voicemail IS ?12 AND line_uri IS ?13 AND voice_routing_policy IS ?14 AND pstn_site IS ?15",
                params.as_slice(),
            )
            .map(|n| n == 1)
            .map_err(|e| self.sql(e))
    }

    fn update_tenant(
        &mut self,
        before: &TenantHybridConfig,
        t: &TenantHybridConfig,
    ) -> Result<bool, StoreError> {
        let mut done = false;
        self.in_tx(|tx| {
            let n = tx.execute(
                "UPDATE tenant SET peer_destination = ?1, use_on_prem_dial_plan = ?2, shared_sip_address_space = ?3 WHERE id = 1 AND peer_destination IS ?4 AND use_on_prem_dial_plan IS ?5 AND shared_sip_address_space IS ?6",
                params![
                    t.peer_destination,
                    t.use_on_prem_dial_plan,
                    t.shared_sip_address_space,
                    before.peer_destination,
                    before.use_on_prem_dial_plan,
                    before.shared_sip_address_space
                ],
            )?;
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO tenant (id, peer_destination, use_on_prem_dial_plan, shared_sip_address_space) VALUES (1, ?1, ?2, ?3)",
                params![t.peer_destination, t.use_on_prem_dial_plan, t.shared_sip_address_space],
            )?;
            done = n + inserted == 1;
            Ok(())
        })?;
        Ok(done)
    }

    fn write_mediation_server(&mut self, m: &HybridMediationServer) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO mediation_servers (identity, fqdn, access_proxy_external_fqdn) VALUES (?1, ?2, ?3)",
                params![m.identity, m.fqdn, m.access_proxy_external_fqdn],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    fn location(&self) -> String {
        self.path.display().to_string()
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
    use crate::config::Config;
    use crate::directory::{glob, Backend, Store, TenantPatch, UserPatch};

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
        let mut s = Store::open(&c).unwrap();
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
        let mut b = Store::open(&c).unwrap();
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
        // Compare and set: a write from a stale read is refused.
        let mut raw = SqliteBackend::open(tmp.path()).unwrap();
        let bob = raw
            .snapshot()
            .unwrap()
            .user_by_address("bob@lab.example")
            .cloned()
            .unwrap();
        let mut changed = bob.clone();
        changed.hosted_voicemail = !bob.hosted_voicemail;
        assert!(raw.update_user(&bob, &changed).unwrap());
        assert!(!raw.update_user(&bob, &changed).unwrap());
        let t = raw.snapshot().unwrap().tenant;
        let mut t2 = t.clone();
        t2.use_on_prem_dial_plan = true;
        assert!(raw.update_tenant(&t, &t2).unwrap());
        assert!(!raw.update_tenant(&t, &t2).unwrap());
        assert!(b.tenant().unwrap().use_on_prem_dial_plan);
    }
}
