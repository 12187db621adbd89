//! The directory: users, the tenant's hybrid configuration and mediation-server
//! registrations — what the routing policy reads as a [`crate::routing::Directory`] snapshot
//! and the CLI and admin API change.
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | errors, change sets (patches) and input validation shared by every store; the watcher's entry point |
//! | [`store`] | [`Store`]: the operations, their validation and precedence, over a [`Backend`] |
//! | [`sqlite`] | the embedded store of one appliance (SQLite, WAL) and its change watcher |
//! | [`postgres`] | the store several appliances share (`[directory] url`), LISTEN/NOTIFY watcher |
//! | [`cache`] | the shared directory's last snapshot on disk, to start while the database is down |
//!
//! Both the proxy's composition root (`server`) and the admin CLI/API use it; it knows nothing
//! of either.

pub mod cache;
pub mod postgres;
pub mod sqlite;
pub mod store;

pub use sqlite::store_path;
pub use store::{Backend, Store};

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, Fqdn, VoiceRoutingPolicy};
use crate::routing::Directory;

/// Keeps `handle` on the store's current snapshot for the process's life: a change made by any
/// CLI, API or (with PostgreSQL) any appliance is swapped in within a second. The SQLite
/// watcher is a thread; the PostgreSQL one a task of the current tokio runtime, which it
/// needs.
pub fn spawn_watcher(
    cfg: &Config,
    handle: Arc<arc_swap::ArcSwap<Directory>>,
) -> Result<(), StoreError> {
    match &cfg.directory {
        Some(d) => {
            postgres::spawn_watcher(d, cfg.appliance.state_dir.clone(), handle);
            Ok(())
        }
        None => sqlite::spawn_watcher(store_path(&cfg.appliance.state_dir), handle).map(drop),
    }
}

/// Why a directory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("directory store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Invalid input: which argument, why.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The shared directory database is unreachable: changes are refused until it returns
    /// (the running proxy keeps routing from its last snapshot).
    #[error("directory database {url} is unreachable ({reason}): changes are refused until it returns; running appliances keep routing from their last snapshot")]
    Unavailable { url: String, reason: String },
    /// The database answered with an error.
    #[error("directory database {url}: {reason}")]
    Database { url: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

impl StoreError {
    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
    /// The HTTP status this error maps to.
    pub fn http_status(&self) -> u16 {
        match self {
            StoreError::Invalid { .. } => 400,
            StoreError::NotFound(_) => 404,
            StoreError::Conflict(_) => 409,
            StoreError::Unavailable { .. } => 503,
            _ => 500,
        }
    }
}

/// A change to a user; `None` fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPatch {
    pub upn: Option<Option<String>>,
    pub display_name: Option<Option<String>>,
    pub enterprise_voice: Option<bool>,
    pub hosted_voicemail: Option<bool>,
    pub line_uri: Option<Option<String>>,
    pub voice_routing_policy: Option<VoiceRoutingPolicy>,
    pub pstn_site: Option<Option<String>>,
}

/// A change to the tenant's hybrid configuration; `None` fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantPatch {
    /// `Some(None)` clears it.
    pub peer_destination: Option<Option<String>>,
    pub use_on_prem_dial_plan: Option<bool>,
    pub shared_sip_address_space: Option<bool>,
}

/// `user@domain`, lower-cased, `sip:` prefix allowed.
pub(crate) fn validate_sip_address(s: &str) -> Result<String, StoreError> {
    let a = s.trim();
    let a = a
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("sip:"))
        .and_then(|_| a.get(4..))
        .unwrap_or(a)
        .to_ascii_lowercase();
    let ok = a.split_once('@').is_some_and(|(user, dom)| {
        !user.is_empty()
            && user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'+".contains(&b))
            && Fqdn::parse(dom).is_ok()
    });
    if ok {
        Ok(a)
    } else {
        Err(StoreError::invalid(
            "sip_address",
            format!("{s:?} is not of the form user@domain"),
        ))
    }
}

pub(crate) fn validate_fqdn_port(s: &str) -> Result<(), String> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    Fqdn::parse(host)?;
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => {}
            _ => return Err(format!("{p:?} is not a port number")),
        }
    }
    Ok(())
}

/// Case-insensitive `*` wildcard match.
pub(crate) fn glob(pattern: &str, s: &str) -> bool {
    let p = pattern.to_ascii_lowercase();
    let s = s.to_ascii_lowercase();
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == s;
    }
    let mut rest = s.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(k) => rest = rest.get(k + part.len()..).unwrap_or(""),
                None => return false,
            }
        }
    }
    true
}
