//! The shared directory: PostgreSQL (`[directory] url`), one database for every appliance of
//! a site (or a fleet), through `tokio-postgres` without TLS (the database sits next to the
//! appliances).
//!
//! - **Schema**: created and migrated by sipedge at open, under an advisory lock so appliances
//!   starting together do not race; `schema_version` holds the version. A database whose
//!   version is newer than this build knows is refused (upgrade sipedge first).
//! - **Precedence**: as for the SQLite store (the configuration's users imported when absent,
//!   tombstones for removed users, the tenant imported once).
//! - **Live changes**: every write commits with `NOTIFY sipedge_directory`; [`spawn_watcher`]
//!   LISTENs and swaps a fresh snapshot into the running proxy as soon as one arrives, so a
//!   change made through any appliance is in force on every appliance well within a second.
//! - **Database down**: the proxy keeps routing from its last snapshot; operations answer
//!   [`StoreError::Unavailable`] (CLI exit status 1, API 503) after at most [`CONNECT_TIMEOUT`]
//!   or [`OP_TIMEOUT`]. The watcher reconnects with backoff (250 ms doubling to
//!   [`MAX_BACKOFF`]) and reloads the snapshot when it is back; the store reconnects at its
//!   next operation. No restart is needed.
//!
//! The store's operations are synchronous like the SQLite store's (the CLI calls them
//! directly, the admin API on blocking threads): on a tokio runtime's blocking thread they run
//! on that runtime, elsewhere on a small runtime of their own.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::runtime::{Handle, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, NoTls};
use tracing::{info, warn};

use super::store::Backend;
use super::StoreError;
use crate::config::{DirectorySettings, VoiceRoutingPolicy};
use crate::routing::{DirUser, Directory, HybridMediationServer, TenantHybridConfig};

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one operation (a snapshot, a write) may take before the database counts as down.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// The watcher's longest pause between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often the watcher checks that its connection is alive between notifications.
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// The notification channel every write signals.
const CHANNEL: &str = "sipedge_directory";
/// Serialises schema migrations across appliances (an arbitrary constant: "sipedge" in ASCII).
const MIGRATION_LOCK: i64 = 0x0073_6970_6564_6765;

/// The schema, one entry per version; entry `n` migrates version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &["
CREATE TABLE tenant (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    peer_destination TEXT,
    use_on_prem_dial_plan BOOLEAN NOT NULL,
    shared_sip_address_space BOOLEAN NOT NULL
);
CREATE TABLE users (
    sip_address TEXT PRIMARY KEY,
    upn TEXT,
    display_name TEXT,
    enterprise_voice BOOLEAN NOT NULL,
    hosted_voicemail BOOLEAN NOT NULL,
    line_uri TEXT,
    voice_routing_policy TEXT NOT NULL,
    pstn_site TEXT
);
CREATE TABLE removed_users (sip_address TEXT PRIMARY KEY);
CREATE TABLE mediation_servers (
    identity TEXT PRIMARY KEY,
    fqdn TEXT NOT NULL UNIQUE,
    access_proxy_external_fqdn TEXT NOT NULL
);
"];

/// The schema version this build creates and understands.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

type PgError = tokio_postgres::Error;

/// Why an operation failed before the error is classified.
enum OpError {
    Pg(PgError),
    Timeout,
    Schema(String),
}

impl From<PgError> for OpError {
    fn from(e: PgError) -> OpError {
        OpError::Pg(e)
    }
}

/// The PostgreSQL store.
pub struct PgBackend {
    /// The URL without password, for messages.
    url: String,
    pg: tokio_postgres::Config,
    /// Our own runtime when opened outside one (the CLI).
    rt: Option<Runtime>,
    handle: Handle,
    client: Option<Client>,
    migrated: bool,
}

/// Parses the validated URL and bounds connection attempts.
fn pg_config(d: &DirectorySettings) -> Result<tokio_postgres::Config, StoreError> {
    let mut pg: tokio_postgres::Config = d.url.parse().map_err(|e| StoreError::Database {
        url: d.display_url(),
        reason: format!("invalid URL: {e}"),
    })?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(CONNECT_TIMEOUT);
    }
    pg.application_name("sipedge");
    Ok(pg)
}

/// Connects and drives the connection on the current runtime.
async fn connect(pg: &tokio_postgres::Config) -> Result<Client, OpError> {
    let (client, conn) = tokio::time::timeout(CONNECT_TIMEOUT, pg.connect(NoTls))
        .await
        .map_err(|_| OpError::Timeout)??;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "directory database connection ended");
        }
    });
    Ok(client)
}

/// Runs `f` on our runtime, or on the caller's from one of its blocking threads.
fn block<F: Future>(rt: &Option<Runtime>, handle: &Handle, f: F) -> F::Output {
    match rt {
        Some(rt) => rt.block_on(f),
        None => handle.block_on(f),
    }
}

impl PgBackend {
    /// Connects, creates or migrates the schema. Outside a tokio runtime it starts a small one
    /// of its own; inside one it must be called from a blocking thread (`spawn_blocking`).
    pub fn open(d: &DirectorySettings) -> Result<PgBackend, StoreError> {
        let mut b = PgBackend::offline(d)?;
        b.ensure_connected()?;
        Ok(b)
    }

    /// The store without connecting yet: its first operation connects (and migrates).
    pub fn offline(d: &DirectorySettings) -> Result<PgBackend, StoreError> {
        let pg = pg_config(d)?;
        let (rt, handle) = match Handle::try_current() {
            Ok(h) => (None, h),
            Err(_) => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| StoreError::Database {
                        url: d.display_url(),
                        reason: format!("cannot start a runtime: {e}"),
                    })?;
                let h = rt.handle().clone();
                (Some(rt), h)
            }
        };
        Ok(PgBackend {
            url: d.display_url(),
            pg,
            rt,
            handle,
            client: None,
            migrated: false,
        })
    }

    /// A live connection (reconnecting when the last one closed), the schema migrated once.
    fn ensure_connected(&mut self) -> Result<(), StoreError> {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        self.client = None;
        let migrate = !self.migrated;
        let pg = self.pg.clone();
        let r = block(&self.rt, &self.handle, async move {
            let mut c = connect(&pg).await?;
            if migrate {
                tokio::time::timeout(OP_TIMEOUT, migrate_schema(&mut c))
                    .await
                    .map_err(|_| OpError::Timeout)??;
            }
            Ok::<Client, OpError>(c)
        });
        let c = self.finish(r)?;
        self.migrated = true;
        self.client = Some(c);
        Ok(())
    }

    /// Classifies an operation's outcome; a connection problem drops the client so the next
    /// operation reconnects.
    fn finish<T>(&mut self, r: Result<T, OpError>) -> Result<T, StoreError> {
        let e = match r {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let err = match e {
            OpError::Timeout => StoreError::Unavailable {
                url: self.url.clone(),
                reason: "no answer in time".into(),
            },
            OpError::Schema(reason) => StoreError::Database {
                url: self.url.clone(),
                reason,
            },
            OpError::Pg(e) => classify(&self.url, &e),
        };
        if matches!(err, StoreError::Unavailable { .. }) {
            self.client = None;
        }
        Err(err)
    }
}

/// Runs one operation on the live client, bounded by [`OP_TIMEOUT`].
macro_rules! with_client {
    ($self:ident, |$c:ident| $body:expr) => {{
        $self.ensure_connected()?;
        let r = match $self.client.as_mut() {
            Some($c) => block(&$self.rt, &$self.handle, async {
                tokio::time::timeout(OP_TIMEOUT, $body)
                    .await
                    .map_err(|_| OpError::Timeout)?
                    .map_err(OpError::Pg)
            }),
            None => Err(OpError::Timeout),
        };
        $self.finish(r)
    }};
}

/// A database error by blame: the connection (unavailable), a constraint (conflict), or the
/// database's answer.
fn classify(url: &str, e: &PgError) -> StoreError {
    match e.code() {
        None => StoreError::Unavailable {
            url: url.to_owned(),
            reason: error_chain(e),
        },
        // Class 57: operator intervention (shutdown in progress, cannot connect now); 08:
        // connection exceptions.
        Some(c) if c.code().starts_with("57") || c.code().starts_with("08") => {
            StoreError::Unavailable {
                url: url.to_owned(),
                reason: error_chain(e),
            }
        }
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => {
            StoreError::Conflict(format!("already exists: {}", error_chain(e)))
        }
        Some(_) => StoreError::Database {
            url: url.to_owned(),
            reason: error_chain(e),
        },
    }
}

/// The error with its causes ("error connecting to server: Connection refused").
fn error_chain(e: &PgError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}

async fn migrate_schema(c: &mut Client) -> Result<(), OpError> {
    let tx = c.transaction().await?;
    tx.query_one("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    // Created when absent (checked first: no NOTICE at every start).
    let exists: bool = tx
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await?
        .try_get(0)?;
    if !exists {
        tx.batch_execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            .await?;
    }
    let v: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .await?
        .try_get(0)?;
    if v > SCHEMA_VERSION {
        return Err(OpError::Schema(format!(
            "the database's schema is version {v}, newer than this sipedge knows ({SCHEMA_VERSION}): upgrade sipedge"
        )));
    }
    if v == SCHEMA_VERSION {
        return Ok(tx.commit().await?);
    }
    for sql in MIGRATIONS.iter().skip(usize::try_from(v).unwrap_or(0)) {
        tx.batch_execute(sql).await?;
    }
    tx.execute("DELETE FROM schema_version", &[]).await?;
    tx.execute(
        "INSERT INTO schema_version (version) VALUES ($1)",
        &[&SCHEMA_VERSION],
    )
    .await?;
    tx.commit().await?;
    info!(from = v, to = SCHEMA_VERSION, "directory schema migrated");
    Ok(())
}

fn policy_name(p: VoiceRoutingPolicy) -> &'static &'static str {
    match p {
        VoiceRoutingPolicy::InternationalCallsAllowed => &"InternationalCallsAllowed",
        VoiceRoutingPolicy::InternationalCallsDisallowed => &"InternationalCallsDisallowed",
    }
}

fn user_params(u: &DirUser) -> [&(dyn ToSql + Sync); 8] {
    [
        &u.sip_address,
        &u.upn,
        &u.display_name,
        &u.enterprise_voice,
        &u.hosted_voicemail,
        &u.line_uri,
        policy_name(u.voice_routing_policy),
        &u.pstn_site,
    ]
}

const INSERT_USER: &str = "INSERT INTO users (sip_address, upn, display_name, enterprise_voice, hosted_voicemail, line_uri, voice_routing_policy, pstn_site) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
const NOTIFY: &str = "NOTIFY sipedge_directory";

/// The whole directory, read in one consistent snapshot.
async fn read_snapshot(c: &mut Client) -> Result<Directory, PgError> {
    let tx = c
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let tenant = match tx
        .query_opt(
            "SELECT peer_destination, use_on_prem_dial_plan, shared_sip_address_space FROM tenant WHERE id = 1",
            &[],
        )
        .await?
    {
        Some(r) => TenantHybridConfig {
            peer_destination: r.try_get(0)?,
            use_on_prem_dial_plan: r.try_get(1)?,
            shared_sip_address_space: r.try_get(2)?,
        },
        None => TenantHybridConfig::default(),
    };
    let mut users = Vec::new();
    for r in tx
        .query(
            "SELECT sip_address, upn, display_name, enterprise_voice, hosted_voicemail, line_uri, voice_routing_policy, pstn_site FROM users ORDER BY sip_address",
            &[],
        )
        .await?
    {
        let policy: String = r.try_get(6)?;
        users.push(DirUser {
            sip_address: r.try_get(0)?,
            upn: r.try_get(1)?,
            display_name: r.try_get(2)?,
            enterprise_voice: r.try_get(3)?,
            hosted_voicemail: r.try_get(4)?,
            line_uri: r.try_get(5)?,
            voice_routing_policy: VoiceRoutingPolicy::parse(&policy)
                .unwrap_or(VoiceRoutingPolicy::InternationalCallsDisallowed),
            pstn_site: r.try_get(7)?,
        });
    }
    let mut servers = Vec::new();
    for r in tx
        .query(
            "SELECT identity, fqdn, access_proxy_external_fqdn FROM mediation_servers ORDER BY identity",
            &[],
        )
        .await?
    {
        servers.push(HybridMediationServer {
            identity: r.try_get(0)?,
            fqdn: r.try_get(1)?,
            access_proxy_external_fqdn: r.try_get(2)?,
        });
    }
    tx.commit().await?;
    Ok(Directory::new(tenant, users, servers))
}

async fn import(
    c: &mut Client,
    peer_destination: Option<&str>,
    users: &[DirUser],
) -> Result<(), PgError> {
    let tx = c.transaction().await?;
    let mut changed = tx
        .execute(
            "INSERT INTO tenant (id, peer_destination, use_on_prem_dial_plan, shared_sip_address_space) VALUES (1, $1, false, true) ON CONFLICT (id) DO NOTHING",
            &[&peer_destination],
        )
        .await?;
    for u in users {
        let removed = tx
            .query_opt(
                "SELECT 1 FROM removed_users WHERE sip_address = $1",
                &[&u.sip_address],
            )
            .await?
            .is_some();
        if !removed {
            changed += tx
                .execute(
                    &format!("{INSERT_USER} ON CONFLICT (sip_address) DO NOTHING"),
                    &user_params(u),
                )
                .await?;
        }
    }
    if changed > 0 {
        tx.batch_execute(NOTIFY).await?;
    }
    tx.commit().await
}

async fn insert_user(c: &mut Client, u: &DirUser) -> Result<(), PgError> {
    let tx = c.transaction().await?;
    tx.execute(INSERT_USER, &user_params(u)).await?;
    tx.execute(
        "DELETE FROM removed_users WHERE sip_address = $1",
        &[&u.sip_address],
    )
    .await?;
    tx.batch_execute(NOTIFY).await?;
    tx.commit().await
}

async fn delete_user(c: &mut Client, addr: &str) -> Result<(), PgError> {
    let tx = c.transaction().await?;
    tx.execute("DELETE FROM users WHERE sip_address = $1", &[&addr])
        .await?;
    tx.execute(
        "INSERT INTO removed_users (sip_address) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&addr],
    )
    .await?;
    tx.batch_execute(NOTIFY).await?;
    tx.commit().await
}

/// Compare and set: the row is written only if it is still `before`.
async fn update_user(c: &mut Client, before: &DirUser, after: &DirUser) -> Result<bool, PgError> {
    let a = user_params(after);
    let b = user_params(before);
    let params: Vec<&(dyn ToSql + Sync)> = a.iter().chain(b.iter().skip(1)).copied().collect();
    let tx = c.transaction().await?;
    let n = tx
        .execute(
            "UPDATE users SET upn = $2, display_name = $3, enterprise_voice = $4, hosted_voicemail = $5, line_uri = $6, voice_routing_policy = $7, pstn_site = $8 WHERE sip_address = $1 AND upn IS NOT DISTINCT FROM $9 AND display_name IS NOT DISTINCT FROM $10 AND enterprise_voice = $11 AND hosted_voicemail = $12 AND line_uri IS NOT DISTINCT FROM $13 AND voice_routing_policy = $14 AND pstn_site IS NOT DISTINCT FROM $15",
            &params,
        )
        .await?;
    if n != 1 {
        return Ok(false);
    }
    tx.batch_execute(NOTIFY).await?;
    tx.commit().await?;
    Ok(true)
}

/// Compare and set on the tenant's row (inserted when absent).
async fn update_tenant(
    c: &mut Client,
    before: &TenantHybridConfig,
    t: &TenantHybridConfig,
) -> Result<bool, PgError> {
    let tx = c.transaction().await?;
    let n = tx
        .execute(
            "UPDATE tenant SET peer_destination = $1, use_on_prem_dial_plan = $2, shared_sip_address_space = $3 WHERE id = 1 AND peer_destination IS NOT DISTINCT FROM $4 AND use_on_prem_dial_plan = $5 AND shared_sip_address_space = $6",
            &[
                &t.peer_destination,
                &t.use_on_prem_dial_plan,
                &t.shared_sip_address_space,
                &before.peer_destination,
                &before.use_on_prem_dial_plan,
                &before.shared_sip_address_space,
            ],
        )
        .await?;
    let inserted = tx
        .execute(
            "INSERT INTO tenant (id, peer_destination, use_on_prem_dial_plan, shared_sip_address_space) VALUES (1, $1, $2, $3) ON CONFLICT (id) DO NOTHING",
            &[
                &t.peer_destination,
                &t.use_on_prem_dial_plan,
                &t.shared_sip_address_space,
            ],
        )
        .await?;
    if n + inserted != 1 {
        return Ok(false);
    }
    tx.batch_execute(NOTIFY).await?;
    tx.commit().await?;
    Ok(true)
}

/// One statement and its notification, committed together.
async fn write(c: &mut Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<(), PgError> {
    let tx = c.transaction().await?;
    tx.execute(sql, params).await?;
    tx.batch_execute(NOTIFY).await?;
    tx.commit().await
}

impl Backend for PgBackend {
    fn snapshot(&mut self) -> Result<Directory, StoreError> {
        with_client!(self, |c| read_snapshot(c))
    }

    fn import(
        &mut self,
        peer_destination: Option<&str>,
        users: &[DirUser],
    ) -> Result<(), StoreError> {
        with_client!(self, |c| import(c, peer_destination, users))
    }

    fn insert_user(&mut self, u: &DirUser) -> Result<(), StoreError> {
        match with_client!(self, |c| insert_user(c, u)) {
            Err(StoreError::Conflict(_)) => Err(StoreError::Conflict(format!(
                "sip_address: user {} already exists",
                u.sip_address
            ))),
            r => r,
        }
    }

    fn delete_user(&mut self, sip_address: &str) -> Result<(), StoreError> {
        with_client!(self, |c| delete_user(c, sip_address))
    }

    fn update_user(&mut self, before: &DirUser, after: &DirUser) -> Result<bool, StoreError> {
        with_client!(self, |c| update_user(c, before, after))
    }

    fn update_tenant(
        &mut self,
        before: &TenantHybridConfig,
        after: &TenantHybridConfig,
    ) -> Result<bool, StoreError> {
        with_client!(self, |c| update_tenant(c, before, after))
    }

    fn write_mediation_server(&mut self, m: &HybridMediationServer) -> Result<(), StoreError> {
        with_client!(self, |c| {
            write(
            c,
            "INSERT INTO mediation_servers (identity, fqdn, access_proxy_external_fqdn) VALUES ($1, $2, $3) ON CONFLICT (identity) DO UPDATE SET fqdn = EXCLUDED.fqdn, access_proxy_external_fqdn = EXCLUDED.access_proxy_external_fqdn",
            &[&m.identity, &m.fqdn, &m.access_proxy_external_fqdn],
        )
        })
    }

    fn location(&self) -> String {
        self.url.clone()
    }
}

/// Reaches the database without changing anything (for `doctor`): its schema version and
/// how many users it holds.
pub fn probe(d: &DirectorySettings) -> Result<String, StoreError> {
    let mut b = PgBackend::offline(d)?;
    // Connected without migrating: a read-only look.
    b.migrated = true;
    with_client!(b, |c| async {
        let exists: bool = c
            .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
            .await?
            .try_get(0)?;
        if !exists {
            return Ok("reachable; no schema yet (created at the first start)".to_owned());
        }
        let v: i32 = c
            .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
            .await?
            .try_get(0)?;
        let users: i64 = if v >= 1 {
            c.query_one("SELECT COUNT(*) FROM users", &[])
                .await?
                .try_get(0)?
        } else {
            0
        };
        Ok(format!(
            "reachable; schema version {v} (this sipedge: {SCHEMA_VERSION}), {users} users"
        ))
    })
}

/// LISTENs for changes and keeps `handle` on the database's current snapshot, reconnecting
/// with backoff while the database is unreachable (the last snapshot stays in use). Each
/// snapshot loaded is also kept in `state_dir` ([`super::cache`]). A task of the current tokio
/// runtime, for the process's life.
pub fn spawn_watcher(d: &DirectorySettings, state_dir: PathBuf, handle: Arc<ArcSwap<Directory>>) {
    let url = d.display_url();
    let pg = match pg_config(d) {
        Ok(pg) => pg,
        Err(e) => {
            tracing::error!(error = %e, "directory watcher not started");
            return;
        }
    };
    tokio::spawn(async move {
        let min = Duration::from_millis(250);
        let mut backoff = min;
        let mut was_down = false;
        loop {
            let (connected, why) = watch(&pg, &handle, &state_dir, was_down).await;
            if connected {
                backoff = min;
            }
            if !was_down || connected {
                warn!(
                    url = %url,
                    error = %why,
                    "directory database unreachable: routing from the last snapshot, changes refused until it returns"
                );
            }
            was_down = true;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
}

/// Aborts the task driving a connection when the watcher lets it go.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One connection's life: LISTEN, load, reload at each notification. Returns whether it got
/// connected and why it ended.
async fn watch(
    pg: &tokio_postgres::Config,
    handle: &ArcSwap<Directory>,
    state_dir: &Path,
    was_down: bool,
) -> (bool, String) {
    let (mut client, mut conn) =
        match tokio::time::timeout(CONNECT_TIMEOUT, pg.connect(NoTls)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return (false, error_chain(&e)),
            Err(_) => return (false, "no answer in time".into()),
        };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    // The connection is driven here; notifications become wake-ups.
    let _driver = AbortOnDrop(tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "directory watcher connection failed");
                    return;
                }
                None => return,
            }
        }
    }));
    let listen = format!("LISTEN {CHANNEL}");
    match tokio::time::timeout(OP_TIMEOUT, client.batch_execute(&listen)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return (false, error_chain(&e)),
        Err(_) => return (false, "no answer in time".into()),
    }
    if let Err(why) = load(&mut client, handle, state_dir).await {
        return (false, why);
    }
    if was_down {
        info!("directory database reachable again: snapshot reloaded, changes accepted");
    }
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    loop {
        tokio::select! {
            m = rx.recv() => {
                if m.is_none() {
                    return (true, "connection closed".into());
                }
                // A burst of changes: one reload.
                while rx.try_recv().is_ok() {}
                if let Err(why) = load(&mut client, handle, state_dir).await {
                    return (true, why);
                }
            }
            _ = ping.tick() => {
                match tokio::time::timeout(OP_TIMEOUT, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return (true, error_chain(&e)),
                    Err(_) => return (true, "no answer in time".into()),
                }
            }
        }
    }
}

/// Reads the snapshot, swaps it in and keeps it on disk.
async fn load(
    client: &mut Client,
    handle: &ArcSwap<Directory>,
    state_dir: &Path,
) -> Result<(), String> {
    match tokio::time::timeout(OP_TIMEOUT, read_snapshot(client)).await {
        Ok(Ok(d)) => {
            let cached = d.clone();
            let dir = state_dir.to_owned();
            let saved =
                tokio::task::spawn_blocking(move || super::cache::save(&dir, &cached)).await;
            if let Ok(Err(e)) = saved {
                warn!(error = %e, "cannot keep the directory snapshot in the state directory");
            }
            if **handle.load() != d {
                info!(
                    users = d.users.len(),
                    mediation_servers = d.mediation_servers.len(),
                    "directory changed: new snapshot in use"
                );
                handle.store(Arc::new(d));
            }
            Ok(())
        }
        Ok(Err(e)) => Err(error_chain(&e)),
        Err(_) => Err("no answer in time".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::directory::{Backend, Store, UserPatch};
    use std::path::Path;

    const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

    /// A fresh database on the machine's PostgreSQL, dropped with the guard; `None` (with one
    /// skip line) when there is none — a failure under CI, which starts it.
    struct TestDb {
        name: String,
    }

    fn admin(sql: &str) -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pg: tokio_postgres::Config = ADMIN_URL.parse().unwrap();
            let c = connect(&pg).await.map_err(|e| match e {
                OpError::Pg(e) => error_chain(&e),
                _ => "timeout".into(),
            })?;
            c.batch_execute(sql).await.map_err(|e| error_chain(&e))
        })
    }

    impl TestDb {
        fn create(tag: &str) -> Option<TestDb> {
            let name = format!("sipedge_unit_{tag}_{}", std::process::id());
            let _ = admin(&format!("DROP DATABASE IF EXISTS {name}"));
            match admin(&format!("CREATE DATABASE {name}")) {
                Ok(()) => Some(TestDb { name }),
                Err(e) if std::env::var_os("CI").is_some() => {
                    panic!("PostgreSQL on 127.0.0.1:5432 is required under CI: {e}")
                }
                Err(e) => {
                    eprintln!("SKIP: no PostgreSQL on 127.0.0.1:5432 ({e})");
                    None
                }
            }
        }
        fn url(&self) -> String {
            format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
        }
    }

    impl Drop for TestDb {
        fn drop(&mut self) {
            let _ = admin(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }

    fn cfg(dir: &Path, url: &str) -> Config {
        let text = include_str!("../../config/sipedge.toml").replace(
            "state_dir = \"../state\"",
            &format!("state_dir = {:?}", dir.display().to_string()),
        );
        let text = format!("{text}\n[directory]\nurl = {url:?}\n");
        Config::from_toml(Path::new("x.toml"), &text).unwrap()
    }

    #[test]
    fn two_stores_share_one_database_and_a_dead_one_is_unavailable() {
        let Some(db) = TestDb::create("share") else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let c = cfg(tmp.path(), &db.url());
        let mut a = Store::open(&c).unwrap();
        let mut b = Store::open(&c).unwrap();
        assert!(a
            .location()
            .starts_with("postgres://postgres@127.0.0.1:5432/"));
        let d = b.snapshot().unwrap();
        assert_eq!(d.users.len(), 5);
        assert_eq!(d.tenant.peer_destination.as_deref(), Some("ap.lab.example"));
        a.set_user(
            "bob@lab.example",
            &UserPatch {
                voice_routing_policy: Some(VoiceRoutingPolicy::InternationalCallsAllowed),
                ..Default::default()
            },
        )
        .unwrap();
        a.remove_user("dave@lab.example").unwrap();
        assert_eq!(
            b.find_user("bob@lab.example").unwrap().voice_routing_policy,
            VoiceRoutingPolicy::InternationalCallsAllowed
        );
        assert!(b
            .add_user("bob@lab.example", &UserPatch::default())
            .is_err());
        a.set_mediation_server("ms1", "mediation.lab.example", "ap.lab.example")
            .unwrap();
        a.set_mediation_server("ms1", "mediation2.lab.example", "ap.lab.example")
            .unwrap();
        assert_eq!(
            b.mediation_servers().unwrap()[0].fqdn,
            "mediation2.lab.example"
        );
        drop(b);
        // A restart imports again: dave stays removed, bob keeps the database's policy; the
        // schema is at its version.
        let mut b = Store::open(&c).unwrap();
        let d = b.snapshot().unwrap();
        assert!(d.user_by_address("dave@lab.example").is_none());
        assert_eq!(
            d.user_by_address("bob@lab.example")
                .unwrap()
                .voice_routing_policy,
            VoiceRoutingPolicy::InternationalCallsAllowed
        );
        // Compare and set: a write from a stale read is refused, and a patch keeps what
        // another appliance changed meanwhile.
        let settings = c.directory.clone().unwrap();
        let mut raw = PgBackend::open(&settings).unwrap();
        let bob = raw
            .snapshot()
            .unwrap()
            .user_by_address("bob@lab.example")
            .cloned()
            .unwrap();
        let mut changed = bob.clone();
        changed.hosted_voicemail = !bob.hosted_voicemail;
        assert!(raw.update_user(&bob, &changed).unwrap());
        let mut stale = bob.clone();
        stale.display_name = Some("Bob".into());
        assert!(!raw.update_user(&bob, &stale).unwrap());
        let u = b
            .set_user(
                "bob@lab.example",
                &UserPatch {
                    display_name: Some(Some("Bob".into())),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(u.hosted_voicemail, changed.hosted_voicemail);
        let t = raw.snapshot().unwrap().tenant;
        let mut t2 = t.clone();
        t2.use_on_prem_dial_plan = !t.use_on_prem_dial_plan;
        assert!(raw.update_tenant(&t, &t2).unwrap());
        assert!(!raw.update_tenant(&t, &t2).unwrap());
        let t3 = b
            .set_tenant(&crate::directory::TenantPatch {
                shared_sip_address_space: Some(false),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(t3.use_on_prem_dial_plan, t2.use_on_prem_dial_plan);
        // An unreachable database: a clear, 503-class error, quickly.
        let dead = cfg(tmp.path(), "postgres://postgres@127.0.0.1:9/none");
        let t = std::time::Instant::now();
        let e = Store::open(&dead).err().unwrap();
        assert_eq!(e.http_status(), 503, "{e}");
        // doctor's look, read-only.
        let p = probe(&settings).unwrap();
        assert!(
            p.contains("schema version 1") && p.contains("4 users"),
            "{p}"
        );
        let e = probe(dead.directory.as_ref().unwrap()).unwrap_err();
        assert_eq!(e.http_status(), 503, "{e}");
        assert!(e.to_string().contains("unreachable"), "{e}");
        assert!(t.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(1));
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let Some(db) = TestDb::create("schema") else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let c = cfg(tmp.path(), &db.url());
        drop(Store::open(&c).unwrap());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let pg: tokio_postgres::Config = db.url().parse().unwrap();
            let cl = connect(&pg).await.ok().unwrap();
            cl.batch_execute("UPDATE schema_version SET version = version + 1")
                .await
                .unwrap();
        });
        let e = Store::open(&c).err().unwrap();
        assert!(e.to_string().contains("upgrade sipedge"), "{e}");
    }
}
