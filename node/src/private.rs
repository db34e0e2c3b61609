//! Files and folders that hold personal data or secrets: folders 0700, files 0600 whatever the
//! umask, created exclusively (`O_CREAT | O_EXCL`, which never follows a symbolic link, so a link
//! planted where a file is to be written is refused rather than written through), and published
//! under their final name without replacing anything unless asked to.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// A folder's mode: its owner only.
pub const DIR_MODE: u32 = 0o700;
/// A file's mode: its owner only.
pub const FILE_MODE: u32 = 0o600;

/// A failure creating a private file or folder.
#[derive(Debug, thiserror::Error)]
pub enum PrivateError {
    /// The file is already there (or a link is there in its place).
    #[error("{} exists; choose another name, or pass --force to replace it", .0.display())]
    Exists(PathBuf),
    /// Another I/O failure.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PrivateError + '_ {
    move |source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            PrivateError::Exists(path.to_path_buf())
        } else {
            PrivateError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// Creates `dir` (and missing parents) and makes `dir` itself 0700.
pub fn create_dir(dir: &Path) -> Result<(), PrivateError> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, DIR_MODE);
    b.create(dir).map_err(io(dir))?;
    set_mode(dir, DIR_MODE)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), PrivateError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> Result<(), PrivateError> {
    Ok(())
}

/// Creates `path` as a new 0600 file; refuses one that exists, or a link in its place.
pub fn create_new(path: &Path) -> Result<File, PrivateError> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, FILE_MODE);
    let f = o.open(path).map_err(io(path))?;
    // The mode given at creation is narrowed by the umask; set it exactly.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
            .map_err(io(path))?;
    }
    Ok(f)
}

/// A temporary file beside `out`, created as by [`create_new`] under a name no one can guess,
/// to write into and then [`publish`].
pub fn create_temp(out: &Path) -> Result<(File, PathBuf), PrivateError> {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = out.with_file_name(format!(".{name}.{:016x}.partial", rand::random::<u64>()));
    let f = create_new(&tmp)?;
    Ok((f, tmp))
}

/// Gives the finished temporary file `tmp` its final name `out`. Without `force` an existing
/// `out` (file or link) is refused and left alone; with it, `out` itself is replaced (a link
/// there is replaced, its target never written). `tmp` is removed either way.
pub fn publish(tmp: &Path, out: &Path, force: bool) -> Result<(), PrivateError> {
    let r = if force {
        std::fs::rename(tmp, out).map_err(io(out))
    } else {
        // A hard link is created exclusively: it fails if anything is at `out`.
        std::fs::hard_link(tmp, out).map_err(io(out))
    };
    let _ = std::fs::remove_file(tmp);
    r
}

/// Writes `bytes` to a new private file `out` (through a temporary file, so `out` appears only
/// whole). See [`publish`] for `force`.
pub fn write_new(out: &Path, bytes: &[u8], force: bool) -> Result<(), PrivateError> {
    if !force && std::fs::symlink_metadata(out).is_ok() {
        return Err(PrivateError::Exists(out.to_path_buf()));
    }
    let (mut f, tmp) = create_temp(out)?;
    let written = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp));
    drop(f);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    publish(&tmp, out, force)
}

/// Makes `dir` and every folder under it 0700 and every file 0600, without following links:
/// for a store whose files a library creates with the default mode.
pub fn tighten_tree(dir: &Path) -> Result<(), PrivateError> {
    let meta = std::fs::symlink_metadata(dir).map_err(io(dir))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    if meta.is_dir() {
        set_mode(dir, DIR_MODE)?;
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            tighten_tree(&entry.path())?;
        }
    } else if meta.is_file() {
        set_mode(dir, FILE_MODE)?;
    }
    Ok(())
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn files_are_0600_and_folders_0700() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        create_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        let f = d.join("x");
        write_new(&f, b"secret", false).unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read(&f).unwrap(), b"secret");
        let leftovers: Vec<_> = std::fs::read_dir(&d).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "the temporary file is gone");
    }

    #[test]
    fn an_existing_file_or_link_is_refused_unless_forced_and_links_are_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("elsewhere");
        std::fs::write(&target, b"keep").unwrap();
        let out = t.path().join("out");
        std::os::unix::fs::symlink(&target, &out).unwrap();
        assert!(matches!(
            write_new(&out, b"data", false),
            Err(PrivateError::Exists(_))
        ));
        assert!(matches!(create_new(&out), Err(PrivateError::Exists(_))));
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        // Forced: the link itself is replaced; its target is untouched.
        write_new(&out, b"data", true).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(!std::fs::symlink_metadata(&out)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&out).unwrap(), b"data");
        assert_eq!(mode(&out), 0o600);
    }

    #[test]
    fn trees_are_tightened() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("store");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/f"), b"x").unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(d.join("sub/f"), std::fs::Permissions::from_mode(0o644)).unwrap();
        tighten_tree(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&d.join("sub")), 0o700);
        assert_eq!(mode(&d.join("sub/f")), 0o600);
    }
}
