//! File helpers: atomic writes with explicit modes, errors naming the path.

use std::fs::{self, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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

/// An exclusive lock on a directory held by a `.lock` file (created with
/// O_EXCL), released on drop. Serialises index/CRL updates between
/// concurrent `sipedge ca` invocations and the running appliance. A lock
/// older than [`STALE_LOCK`] is considered left over by a crashed process.
/// Blocking (polls up to ~5 s): call from `spawn_blocking` in async code.
#[derive(Debug)]
pub(crate) struct DirLock {
    path: PathBuf,
}

pub(crate) const STALE_LOCK: std::time::Duration = std::time::Duration::from_secs(120);

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, PkiError> {
        let path = dir.join(".lock");
        for _ in 0..50 {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(SECRET)
                .open(&path)
            {
                Ok(mut f) => {
                    let _ = writeln!(f, "{}", std::process::id());
                    return Ok(DirLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > STALE_LOCK);
                    if stale {
                        tracing::warn!(lock = %path.display(), "removing stale CA lock");
                        let _ = fs::remove_file(&path);
                        continue;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Err(PkiError::Invalid {
            what: path.display().to_string(),
            reason: "the CA is locked by another sipedge process (delete the file if no other process runs)".into(),
        })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
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
        let other = std::thread::spawn({
            let d = dir.path().to_path_buf();
            move || DirLock::acquire(&d).map(|_| std::time::Instant::now())
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        let released = std::time::Instant::now();
        drop(lock);
        let got = other.join().expect("join").expect("second lock");
        assert!(got >= released, "second holder must wait for the first");
        assert!(!lock_file.exists());
    }
}
