//! File helpers: atomic writes with explicit modes, errors naming the path.

use std::fs::{self, File, OpenOptions, Permissions, TryLockError};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::PkiError;

pub(crate) const SECRET: u32 = 0o600;
pub(crate) const PUBLIC: u32 = 0o644;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, PkiError> {
    fs::read(path).map_err(io_err(path))
}

pub(crate) fn read_string(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(io_err(path))
}

pub(crate) fn create_dir(path: &Path, mode: u32) -> Result<(), PkiError> {
    fs::create_dir_all(path).map_err(io_err(path))?;
    fs::set_permissions(path, Permissions::from_mode(mode)).map_err(io_err(path))
}

/// Write `data` to `path` through a temporary file in the same directory and
/// a rename, so readers (and a crash) see either the old or the new content.
/// The temporary file is created with `mode` (no window with a wider mode).
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(io_err(&parent))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = parent.join(format!(".{file_name}.tmp{}", rand::random::<u32>()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.write_all(data).map_err(io_err(&tmp))?;
        // The umask may have narrowed (never widened) the mode; make it exact.
        fs::set_permissions(&tmp, Permissions::from_mode(mode)).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// An exclusive lock on a directory: an OS advisory lock ([`File::try_lock`],
/// `flock(2)` on Linux) on its `.lock` file, released on drop and by the
/// kernel when the holding process dies, so a crashed process leaves nothing
/// behind and a live holder's lock is never taken over. Serialises
/// index/CRL updates between concurrent `sipedge ca` invocations and the
/// running appliance. Blocking (polls up to ~5 s): call from
/// `spawn_blocking` in async code.
///
/// The `.lock` file itself stays (it holds the last holder's process id, for
/// people only): deleting it on release would let a waiter that opened the
/// old file and a newcomer that creates a new one hold "the" lock together.
#[derive(Debug)]
pub(crate) struct DirLock {
    file: File,
}

/// Attempts, [`LOCK_POLL`] apart, before [`DirLock::acquire`] gives up.
const LOCK_ATTEMPTS: u32 = 50;
const LOCK_POLL: Duration = Duration::from_millis(100);

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, PkiError> {
        Self::acquire_within(dir, LOCK_ATTEMPTS)
    }

    fn acquire_within(dir: &Path, attempts: u32) -> Result<DirLock, PkiError> {
        let path = dir.join(".lock");
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(SECRET)
            .open(&path)
            .map_err(io_err(&path))?;
        for _ in 0..attempts {
            match file.try_lock() {
                Ok(()) => {
                    let _ = file
                        .set_len(0)
                        .and_then(|()| writeln!(file, "{}", std::process::id()));
                    return Ok(DirLock { file });
                }
                Err(TryLockError::WouldBlock) => std::thread::sleep(LOCK_POLL),
                Err(TryLockError::Error(e)) => return Err(io_err(&path)(e)),
            }
        }
        Err(PkiError::Invalid {
            what: path.display().to_string(),
            reason: "the CA is locked by another running sipedge process".into(),
        })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Closing the descriptor releases the lock as well, unless a forked
        // child still shares it; unlocking releases it regardless.
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sub/secret.key");
        write_atomic(&p, b"one", SECRET).expect("write");
        write_atomic(&p, b"two", SECRET).expect("rewrite");
        assert_eq!(read(&p).expect("read"), b"two");
        let mode = fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary files left behind.
        let entries = fs::read_dir(p.parent().expect("parent"))
            .expect("readdir")
            .count();
        assert_eq!(entries, 1);
    }

    #[test]
    fn dir_lock_is_exclusive_and_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = DirLock::acquire(dir.path()).expect("lock");
        let lock_file = dir.path().join(".lock");
        assert!(lock_file.exists());
        let mode = fs::metadata(&lock_file).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode & !SECRET, 0, "lock file mode {mode:o}");
        let other = std::thread::spawn({
            let d = dir.path().to_path_buf();
            move || DirLock::acquire(&d).map(|_| std::time::Instant::now())
        });
        std::thread::sleep(Duration::from_millis(300));
        let released = std::time::Instant::now();
        drop(lock);
        let got = other.join().expect("join").expect("second lock");
        assert!(got >= released, "second holder must wait for the first");
    }

    #[test]
    fn held_lock_is_never_stolen_and_free_after_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = DirLock::acquire(dir.path()).expect("lock");
        // An old lock file used to count as left over by a crashed process;
        // a held lock is held however old its file is.
        let long_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(dir.path().join(".lock"))
            .and_then(|f| f.set_modified(long_ago))
            .expect("age the lock file");
        let err = DirLock::acquire_within(dir.path(), 3).expect_err("held elsewhere");
        assert!(err.to_string().contains("locked by another"), "{err}");
        drop(lock);
        let again = DirLock::acquire_within(dir.path(), 1).expect("free after drop");
        drop(again);
    }

    #[test]
    fn leftover_lock_file_without_holder_is_free() {
        // What a process that died while holding the lock leaves behind.
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(".lock"), "4194304\n").expect("write");
        let lock = DirLock::acquire_within(dir.path(), 1).expect("lock");
        let pid = fs::read_to_string(dir.path().join(".lock")).expect("read");
        assert_eq!(pid, format!("{}\n", std::process::id()));
        drop(lock);
    }
}
