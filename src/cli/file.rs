//! Replacing files safely: the new content goes to a temporary file in the
//! same directory, gets the owner and mode it must have, is flushed to disk,
//! and is renamed over the old file; then the directory is flushed too. A
//! crash or a full disk leaves either the old file or the new one, never
//! half of one.
//!
//! Keys and certificates ([`stage_private`]) are stricter: their directory
//! must be writable by its owner only, and that owner root or the writer
//! (whoever else can write there can swap the file under the service), and
//! a symlink at their path is replaced, never written through.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};

/// Owner and mode of a file to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Keep the owner and mode of the file being replaced; a new file gets
    /// this mode and the writer's owner.
    Keep { new_mode: u32 },
    /// Exactly this owner, group and mode, whatever the old file had.
    Exactly { uid: u32, gid: u32, mode: u32 },
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot write {path}: {source}{hint}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("refusing to write {path}: {why}")]
    UnsafeDirectory { path: PathBuf, why: String },
}

fn hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => " (run it as root: sudo nbctl ...)",
        std::io::ErrorKind::NotFound => " (its directory does not exist)",
        _ => match e.raw_os_error() {
            Some(libc::EROFS) => " (the file system is read-only)",
            Some(libc::ENOSPC) => " (the disk is full)",
            Some(libc::EPERM) => " (not allowed to give it its owner: run it as root)",
            _ => "",
        },
    }
}

/// A file written to its temporary name, waiting to be renamed into place.
pub struct Staged {
    temp: tempfile::NamedTempFile,
    target: PathBuf,
}

/// Writes `contents` next to `path`, with the owner and mode `access` says,
/// flushed to disk. Nothing visible changes until [`Staged::commit`].
/// A symlink at `path` is followed: what it points at is replaced (an
/// administrator's link from /etc to a managed config keeps working).
pub fn stage(path: &Path, contents: &[u8], access: Access) -> Result<Staged, FileError> {
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path),
        _ => Ok(path.to_owned()),
    }
    .map_err(|e| err(path, e))?;
    let (uid, gid, mode) = match access {
        Access::Exactly { uid, gid, mode } => (Some(uid), Some(gid), mode),
        Access::Keep { new_mode } => match std::fs::metadata(&target) {
            Ok(m) => (Some(m.uid()), Some(m.gid()), m.mode() & 0o7777),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None, new_mode),
            Err(e) => return Err(err(&target, e)),
        },
    };
    stage_at(target, contents, uid, gid, mode)
}

/// [`stage`] for a private key or a certificate: refused when the
/// directory of `path` is writable by group or others (sticky bit or not)
/// or owned by someone other than root or the writer, and a symlink at
/// `path` is replaced by the new file, never followed (`Access::Keep`
/// keeps only what a regular file there had).
pub fn stage_private(path: &Path, contents: &[u8], access: Access) -> Result<Staged, FileError> {
    crate::front::tls::check_private_dir(&dir_of(path)).map_err(|why| {
        FileError::UnsafeDirectory {
            path: path.to_owned(),
            why,
        }
    })?;
    let (uid, gid, mode) = match access {
        Access::Exactly { uid, gid, mode } => (Some(uid), Some(gid), mode),
        Access::Keep { new_mode } => match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_file() => (Some(m.uid()), Some(m.gid()), m.mode() & 0o7777),
            Ok(_) => (None, None, new_mode),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None, new_mode),
            Err(e) => return Err(err(path, e)),
        },
    };
    stage_at(path.to_owned(), contents, uid, gid, mode)
}

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn stage_at(
    target: PathBuf,
    contents: &[u8],
    uid: Option<u32>,
    gid: Option<u32>,
    mode: u32,
) -> Result<Staged, FileError> {
    let dir = dir_of(&target);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(&dir)
        .map_err(|e| err(&target, e))?;
    let file = temp.as_file_mut();
    file.write_all(contents).map_err(|e| err(&target, e))?;
    let current = file.metadata().map_err(|e| err(&target, e))?;
    let want_uid = uid.filter(|&u| u != current.uid()).map(Uid::from_raw);
    let want_gid = gid.filter(|&g| g != current.gid()).map(Gid::from_raw);
    if want_uid.is_some() || want_gid.is_some() {
        nix::unistd::fchown(file.as_raw_fd(), want_uid, want_gid)
            .map_err(|e| err(&target, std::io::Error::from(e)))?;
    }
    // After fchown, which may clear set-id bits.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| err(&target, e))?;
    file.sync_all().map_err(|e| err(&target, e))?;
    Ok(Staged { temp, target })
}

impl Staged {
    /// Renames the file into place and flushes its directory.
    pub fn commit(self) -> Result<(), FileError> {
        let target = self.target;
        self.temp
            .persist(&target)
            .map_err(|e| err(&target, e.error))?;
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| err(&target, e))?;
        }
        Ok(())
    }

    pub fn target(&self) -> &Path {
        &self.target
    }
}

/// [`stage`] and [`Staged::commit`] in one step.
pub fn write_atomic(path: &Path, contents: &[u8], access: Access) -> Result<(), FileError> {
    stage(path, contents, access)?.commit()
}

fn err(path: &Path, source: std::io::Error) -> FileError {
    FileError::Write {
        path: path.to_owned(),
        hint: hint(&source),
        source,
    }
}

/// Who owns a private key: root and group `notebook` (mode 0640) when run as
/// root and that group exists, so the service can read it; otherwise only
/// the writer (0600).
pub fn key_access() -> Access {
    let me = Uid::effective();
    let notebook = nix::unistd::Group::from_name("notebook").ok().flatten();
    match notebook {
        Some(group) if me.is_root() => Access::Exactly {
            uid: 0,
            gid: group.gid.as_raw(),
            mode: 0o640,
        },
        _ => Access::Exactly {
            uid: me.as_raw(),
            gid: Gid::effective().as_raw(),
            mode: 0o600,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_mode_and_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notebook.toml");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"new", Access::Keep { new_mode: 0o644 }).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn new_file_gets_the_new_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert.pem");
        write_atomic(&path, b"x", Access::Keep { new_mode: 0o644 }).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o644);
    }

    #[test]
    fn writes_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.toml");
        let link = dir.path().join("link.toml");
        std::fs::write(&real, "old").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_atomic(&link, b"new", Access::Keep { new_mode: 0o644 }).unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new");
    }
    #[test]
    fn a_private_file_replaces_a_symlink_and_leaves_its_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("shadow");
        std::fs::write(&outside, "secret").unwrap();
        let key = dir.path().join("key.pem");
        std::os::unix::fs::symlink(&outside, &key).unwrap();
        stage_private(&key, b"new key", Access::Keep { new_mode: 0o600 })
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "secret");
        let m = std::fs::symlink_metadata(&key).unwrap();
        assert!(m.file_type().is_file());
        assert_eq!(m.mode() & 0o7777, 0o600);
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "new key");
    }

    #[test]
    fn a_private_file_is_refused_where_others_can_write() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        for mode in [0o777, 0o1777, 0o770, 0o720] {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            let e = stage_private(&key, b"k", Access::Keep { new_mode: 0o600 })
                .err()
                .unwrap_or_else(|| panic!("mode {mode:o} accepted"))
                .to_string();
            assert!(e.contains("chmod go-w"), "{e}");
            assert!(!key.exists());
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(crate::front::tls::check_private_dir(dir.path()).is_ok());
        stage_private(&key, b"k", Access::Keep { new_mode: 0o600 })
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "k");
    }
}
