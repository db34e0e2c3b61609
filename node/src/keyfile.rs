//! Key files: Ed25519 private keys as PKCS#8 PEM (readable by OpenSSL and other stacks),
//! written with mode 0600 and refused when readable by group or others.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use throughgate_protocol::keys::SecretKey;

/// The largest key file read.
const MAX_KEY_FILE: u64 = 16 * 1024;

/// A key file problem.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is readable or writable by group or others.
    #[error(
        "{path} is accessible by other users (mode {mode:o}); run `chmod 600 {path}` and try again"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not an Ed25519 PKCS#8 PEM private key.
    #[error("{path} is not an Ed25519 private key in PKCS#8 PEM form: {detail}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// Refusing to overwrite an existing key.
    #[error("{path} already exists; refusing to overwrite a key (move it away first)")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The file is larger than any key file.
    #[error("{path} is too large to be a key file")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
    move |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `key` to a new file at `path` with mode 0600 (atomically: temp file, then rename).
pub fn write_secret_key(path: &Path, key: &SecretKey) -> Result<(), KeyFileError> {
    if path.exists() {
        return Err(KeyFileError::Exists {
            path: path.to_path_buf(),
        });
    }
    let pem = key
        .signing_key()
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| KeyFileError::Format {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    write_private_file(path, pem.as_bytes())
}

/// Writes `bytes` to `path` with mode 0600, atomically (replacing any existing file).
pub fn write_private_file(path: &Path, bytes: &[u8]) -> Result<(), KeyFileError> {
    let tmp = path.with_extension("tmp-write");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let _ = fs::remove_file(&tmp);
    let mut f = opts.open(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
}

/// Reads a file that must not be accessible by group or others, at most `max` bytes.
pub fn read_private_file(path: &Path, max: u64) -> Result<Vec<u8>, KeyFileError> {
    let meta = fs::metadata(path).map_err(io(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    if meta.len() > max {
        return Err(KeyFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    fs::read(path).map_err(io(path))
}

/// Reads a private key file, refusing one that others can read.
pub fn read_secret_key(path: &Path) -> Result<SecretKey, KeyFileError> {
    let bytes = read_private_file(path, MAX_KEY_FILE)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| KeyFileError::Format {
        path: path.to_path_buf(),
        detail: "not UTF-8 text".into(),
    })?;
    let sk = ed25519_dalek::SigningKey::from_pkcs8_pem(text).map_err(|e| KeyFileError::Format {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    Ok(SecretKey::from_seed(&sk.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("node.key");
        let k = SecretKey::generate();
        write_secret_key(&p, &k).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert_eq!(read_secret_key(&p).unwrap().public(), k.public());
        assert!(matches!(
            write_secret_key(&p, &k),
            Err(KeyFileError::Exists { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn refuses_a_key_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        write_secret_key(&p, &SecretKey::generate()).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret_key(&p).unwrap_err();
        assert!(matches!(err, KeyFileError::Permissions { mode: 0o644, .. }));
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.key");
        write_private_file(&p, b"not a key").unwrap();
        assert!(matches!(
            read_secret_key(&p),
            Err(KeyFileError::Format { .. })
        ));
    }
}
