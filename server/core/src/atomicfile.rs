//! Atomic file replacement: write a temporary file beside the target,
//! fsync it, rename it into place (`tempfile`'s `persist`), fsync the
//! directory. A reader, or the next start after a crash, sees the old file
//! or the new one, never a truncated mix; on failure the temporary file is
//! removed and the target is left as it was.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// The temporary file type [`temp_beside`] returns, for callers that write
/// it in their own way (streaming) before [`persist`].
pub use tempfile::NamedTempFile;

/// Who may read the written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The owner only (0600 on Unix): keys, secrets, files with openids.
    Private,
    /// What `std::fs::write` creates: 0666 less the process umask on Unix
    /// (usually 0644).
    Shared,
}

/// A new temporary file in `path`'s directory named `.NAME.RANDOM.part`
/// (so a leftover is recognisable), with `access`. Removed when dropped
/// unless [`persist`]ed.
pub fn temp_beside(path: &Path, access: Access) -> io::Result<NamedTempFile> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let prefix = format!(".{}.", name.to_string_lossy());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".part");
    #[cfg(unix)]
    if access == Access::Shared {
        use std::os::unix::fs::PermissionsExt;
        // Passed to open(2), so the umask applies as it does for fs::write.
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    #[cfg(not(unix))]
    let _ = access;
    builder.tempfile_in(parent_dir(path))
}

/// Makes `tmp` durable and moves it to `path`: fsync, rename over any
/// existing file, then fsync the directory so the rename survives a crash
/// (best effort: the file is already complete and in place, and not every
/// platform can open a directory). On error `tmp` is removed.
pub fn persist(tmp: NamedTempFile, path: &Path) -> io::Result<()> {
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(dir) = File::open(parent_dir(path)) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically (see the module docs).
pub fn write(path: &Path, bytes: &[u8], access: Access) -> io::Result<()> {
    let mut tmp = temp_beside(path, access)?;
    tmp.write_all(bytes)?;
    persist(tmp, path)
}

/// Makes an existing file owner-only (0600 on Unix; nothing elsewhere):
/// a secret kept across runs may have been created, or copied in, with a
/// looser mode, and [`write()`] only fixes the files it writes.
pub fn restrict_to_owner(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o777 != 0o600 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        write(&path, b"one", Access::Shared).unwrap();
        write(&path, b"two", Access::Shared).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(entries(dir.path()), ["report.json"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write(&path, b"old", Access::Private).unwrap();
        // Renaming a file over a non-empty directory fails.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"").unwrap();
        assert!(write(&blocked, b"new", Access::Private).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(entries(dir.path()), ["blocked", "key.pem"]);
        assert!(write(&dir.path().join("no/such/file"), b"", Access::Private).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn modes_match_the_access() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

        let private = dir.path().join("secret.txt");
        // A looser existing file is replaced by an owner-only one.
        std::fs::write(&private, b"old").unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&private, b"s", Access::Private).unwrap();
        assert_eq!(mode(&private), 0o600);

        // Shared: exactly what fs::write gives under this process's umask.
        let reference = dir.path().join("reference");
        std::fs::write(&reference, b"").unwrap();
        let shared = dir.path().join("shared.json");
        write(&shared, b"{}", Access::Shared).unwrap();
        assert_eq!(mode(&shared), mode(&reference));
    }

    #[cfg(unix)]
    #[test]
    fn restrict_to_owner_tightens_an_existing_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let kept = dir.path().join("token.txt");
        std::fs::write(&kept, b"t").unwrap();
        std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o644)).unwrap();
        restrict_to_owner(&kept).unwrap();
        assert_eq!(mode(&kept), 0o600);
        assert_eq!(std::fs::read(&kept).unwrap(), b"t");
        assert!(restrict_to_owner(&dir.path().join("missing")).is_err());
    }
}
