//! Small files in `STATE_DIR`: read whole, written atomically (temporary file, fsync,
//! rename, fsync of the folder) with mode 0600, because they may hold a token.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// Set by `--dry-run` and `--check`: `STATE_DIR` is read where it can be, never written.
static READ_ONLY: AtomicBool = AtomicBool::new(false);

/// From now on nothing is written or changed in `STATE_DIR` (`--dry-run`, `--check`): a
/// trial run as another user, or beside the service, leaves its files as they are.
pub fn read_only() {
    READ_ONLY.store(true, Ordering::Relaxed);
}

pub fn is_read_only() -> bool {
    READ_ONLY.load(Ordering::Relaxed)
}

/// The file's text, `None` if it does not exist. A file readable by others is tightened
/// to 0600 first, with a warning, since it may hold a secret.
pub fn read(path: &Path) -> Result<Option<String>> {
    match fs::metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) if is_read_only() => return unreadable(path, &e),
        Err(e) => return Err(Error::file("read", path, &e)),
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 && !is_read_only() => {
            log::warn!(
                "{} was readable by other users (mode {:o}); set it back to 0600",
                path.display(),
                meta.permissions().mode() & 0o777
            );
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::file("tighten the mode of", path, &e))?;
        }
        Ok(_) => {}
    }
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if is_read_only() => unreadable(path, &e),
        Err(e) => Err(Error::file("read", path, &e)),
    }
}

/// In a read-only run, a file this user may not read is as good as absent.
fn unreadable(path: &Path, e: &std::io::Error) -> Result<Option<String>> {
    log::info!("{} cannot be read ({e}): going without it", path.display());
    Ok(None)
}

/// Replaces `path` with `data` atomically, mode 0600, creating the folder (0700) if needed.
pub fn write(path: &Path, data: &[u8]) -> Result<()> {
    if is_read_only() {
        log::debug!("not writing {} (--dry-run or --check)", path.display());
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::file("create the folder", dir, &e))?;
    }
    let tmp = path.with_extension("tmp");
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // An older temporary file may have been created with wider permissions.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::file("write", path, &e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_0600_atomically_and_tightens_on_read() {
        let dir = std::env::temp_dir().join(format!("envoy2mqtt-state-{}", std::process::id()));
        let path = dir.join("sub/file");
        assert_eq!(read(&path).unwrap(), None);
        write(&path, b"one").unwrap();
        write(&path, b"two").unwrap();
        assert_eq!(read(&path).unwrap().as_deref(), Some("two"));
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!path.with_extension("tmp").exists());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read(&path).unwrap().as_deref(), Some("two"));
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
