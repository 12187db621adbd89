//! Maintenance mode (Cloud Connector's Enter-CcUpdate / Exit-CcUpdate): the switch the admin
//! API and `sipedge maintenance enter|exit|status` turn. In maintenance the core refuses new
//! calls and OPTIONS with 503 and Retry-After (see `proxy::core::service`), `/readyz` answers
//! 503, `sipedge_maintenance` is 1 — and calls in progress go on until they end.
//!
//! The state is kept in `<state_dir>/maintenance` (mode 0600; present: in maintenance, its text
//! the Unix time it was entered), so an appliance taken out of service stays out across a
//! restart until `maintenance exit`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tracing::info;

use crate::stats::Readiness;

/// The file that keeps the state.
pub const FILE: &str = "maintenance";

/// When maintenance was entered (Unix seconds), as kept in `state_dir`; `None`: in service.
pub fn load(state_dir: &Path) -> std::io::Result<Option<u64>> {
    match std::fs::read_to_string(state_dir.join(FILE)) {
        Ok(t) => Ok(Some(t.trim().parse().unwrap_or(0))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Keeps the state in `state_dir`: the file written (0600, synced) or removed.
fn store(state_dir: &Path, since: Option<u64>) -> std::io::Result<()> {
    let path = state_dir.join(FILE);
    match since {
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        Some(t) => {
            std::fs::create_dir_all(state_dir)?;
            let tmp = state_dir.join(format!("{FILE}.tmp"));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(format!("{t}\n").as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        }
    }
}

/// The switch: the persisted state, readiness and the core's view (a watch) move together.
#[derive(Debug)]
pub struct Maintenance {
    state_dir: PathBuf,
    since: Mutex<Option<u64>>,
    tx: watch::Sender<bool>,
    readiness: Arc<Readiness>,
}

/// What `GET /maintenance` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    pub maintenance: bool,
    /// When it was entered (Unix seconds).
    pub since: Option<u64>,
}

impl Maintenance {
    /// The switch over the state kept in `state_dir`, and the receiver the core's driver
    /// watches (its first value: the kept state).
    pub fn open(
        state_dir: &Path,
        readiness: Arc<Readiness>,
    ) -> std::io::Result<(Maintenance, watch::Receiver<bool>)> {
        let since = load(state_dir)?;
        if since.is_some() {
            info!("in maintenance since before the restart: new calls refused until `maintenance exit`");
        }
        readiness.set_maintenance(since.is_some());
        let (tx, rx) = watch::channel(since.is_some());
        Ok((
            Maintenance {
                state_dir: state_dir.to_owned(),
                since: Mutex::new(since),
                tx,
                readiness,
            },
            rx,
        ))
    }

    pub fn status(&self) -> Status {
        let since = *self.since.lock().unwrap_or_else(|e| e.into_inner());
        Status {
            maintenance: since.is_some(),
            since,
        }
    }

    /// Enters (true) or leaves (false) maintenance: kept on disk first (an error leaves the
    /// state as it was), then in force. Entering twice keeps the first time.
    pub fn set(&self, on: bool) -> std::io::Result<Status> {
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        let next = match (on, *since) {
            (true, Some(t)) => Some(t),
            (true, None) => Some(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            ),
            (false, _) => None,
        };
        if next != *since {
            store(&self.state_dir, next)?;
            info!(
                maintenance = on,
                "maintenance {}",
                if on { "entered" } else { "left" }
            );
        }
        *since = next;
        self.readiness.set_maintenance(on);
        self.tx.send_replace(on);
        Ok(Status {
            maintenance: on,
            since: next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn kept_0600_across_opens_and_removed_on_exit() {
        let tmp = tempfile::tempdir().unwrap();
        let readiness = Arc::new(Readiness::default());
        let (m, mut rx) = Maintenance::open(tmp.path(), readiness.clone()).unwrap();
        assert!(!*rx.borrow_and_update());
        assert!(!m.status().maintenance);
        let s = m.set(true).unwrap();
        assert!(s.maintenance && s.since.is_some());
        assert!(*rx.borrow_and_update());
        assert_eq!(
            readiness.not_ready(),
            ["listeners not bound", "directory not loaded", "maintenance"]
        );
        let mode = std::fs::metadata(tmp.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Entering again keeps the first time.
        assert_eq!(m.set(true).unwrap().since, s.since);
        drop(m);

        // A restart: still in maintenance, readiness says so from the start.
        let readiness = Arc::new(Readiness::default());
        let (m, rx) = Maintenance::open(tmp.path(), readiness.clone()).unwrap();
        assert!(*rx.borrow());
        assert_eq!(m.status().since, s.since);
        assert!(readiness.maintenance());
        assert!(!m.set(false).unwrap().maintenance);
        assert!(!tmp.path().join(FILE).exists());
        assert!(!readiness.maintenance());
        assert_eq!(load(tmp.path()).unwrap(), None);
    }
}
