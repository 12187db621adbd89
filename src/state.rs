//! Secrets the appliance keeps in its state directory: random, created at first use with mode
//! 0600, read back afterwards (so they survive restarts), never logged.
//!
//! | file | what it keys |
//! |---|---|
//! | `admin.token` | the admin API's bearer token |
//! | `dialog.key` | our Record-Route tokens (dialogs survive a restart) |

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The secret in `state_dir/name` (64 lower-case hex digits: 32 random bytes), created when
/// absent or empty.
pub fn secret(state_dir: &Path, name: &str) -> std::io::Result<String> {
    let path = state_dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(state_dir)?;
    let bytes: [u8; 32] = rand::random();
    let secret = data_encoding::HEXLOWER.encode(&bytes);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_0600_then_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let a = secret(tmp.path(), "x.key").unwrap();
        assert_eq!(a.len(), 64);
        let mode = std::fs::metadata(tmp.path().join("x.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(secret(tmp.path(), "x.key").unwrap(), a);
        assert_ne!(secret(tmp.path(), "y.key").unwrap(), a);
    }
}
