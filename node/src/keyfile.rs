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
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read or written.
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is readable or writable by group or others.
    #[error(
        "{path} is accessible by other users (mode {mode:o}); run `chmod 600 {path}` and try again"
    )]
    Permissions {
        path: PathBuf,
        mode: u32,
    },
    /// The file is not an Ed25519 PKCS#8 PEM private key.
    #[error("{path} is not an Ed25519 private key in PKCS#8 PEM form: {detail}")]
    Format {
        path: PathBuf,
        detail: String,
    },
    /// Refusing to overwrite an existing key.
    #[error("{path} already exists; refusing to overwrite a key (move it away first)")]
    Exists {
        path: PathBuf,
    },
    /// The file is larger than any key file.
    #[error("{path} is too large to be a key file")]
    TooLarge {
        path: PathBuf,
    },
    /// The key is protected by a passphrase and none was given.
    #[error("{path} is protected by a passphrase; set TG_PASSPHRASE or enter it when asked")]
    Locked {
        path: PathBuf,
    },
    /// The passphrase does not open the key.
    #[error("{path}: the passphrase is wrong (or the file is damaged)")]
    WrongPassphrase {
        path: PathBuf,
    },
}

/// The environment variable a passphrase for protected key files may be given in.
pub const PASSPHRASE_ENV: &str = "TG_PASSPHRASE";

const AGE_ARMOR: &str = "-----BEGIN AGE ENCRYPTED FILE-----";

/// Whether the key file at `path` is passphrase-protected (age, armored).
pub fn is_protected(path: &Path) -> bool {
    read_private_file(path, MAX_KEY_FILE)
        .map(|b| b.starts_with(AGE_ARMOR.as_bytes()))
        .unwrap_or(false)
}

/// Writes `key` to a new file at `path` with mode 0600, encrypted with `passphrase` (age,
/// scrypt, ASCII armor).
pub fn write_secret_key_protected(
    path: &Path,
    key: &SecretKey,
    passphrase: &str,
) -> Result<(), KeyFileError> {
    use std::io::Write as _;
    if path.exists() {
        return Err(KeyFileError::Exists {
            path: path.to_path_buf(),
        });
    }
    let fmt = |e: &dyn std::fmt::Display| KeyFileError::Format {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let pem = key
        .signing_key()
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| fmt(&e))?;
    let encryptor = age::Encryptor::with_user_passphrase(age::secrecy::SecretString::from(
        passphrase.to_owned(),
    ));
    let mut out = Vec::new();
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
        .map_err(|e| fmt(&e))?;
    let mut w = encryptor.wrap_output(armor).map_err(|e| fmt(&e))?;
    w.write_all(pem.as_bytes()).map_err(|e| fmt(&e))?;
    w.finish().and_then(|a| a.finish()).map_err(|e| fmt(&e))?;
    write_private_file(path, &out)
}

fn decrypt(path: &Path, bytes: &[u8], passphrase: &str) -> Result<Vec<u8>, KeyFileError> {
    use std::io::Read as _;
    let d = age::Decryptor::new(age::armor::ArmoredReader::new(bytes)).map_err(|e| {
        KeyFileError::Format {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }
    })?;
    let identity =
        age::scrypt::Identity::new(age::secrecy::SecretString::from(passphrase.to_owned()));
    let mut r = d
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|_| KeyFileError::WrongPassphrase {
            path: path.to_path_buf(),
        })?;
    let mut out = Vec::new();
    r.read_to_end(&mut out)
        .map_err(|_| KeyFileError::WrongPassphrase {
            path: path.to_path_buf(),
        })?;
    Ok(out)
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
///
/// A passphrase-protected key is opened with the passphrase in `TG_PASSPHRASE`; without one it
/// is [`KeyFileError::Locked`].
pub fn read_secret_key(path: &Path) -> Result<SecretKey, KeyFileError> {
    read_secret_key_with(path, std::env::var(PASSPHRASE_ENV).ok().as_deref())
}

/// Reads a private key file, opening a passphrase-protected one with `passphrase`.
pub fn read_secret_key_with(
    path: &Path,
    passphrase: Option<&str>,
) -> Result<SecretKey, KeyFileError> {
    let mut bytes = read_private_file(path, MAX_KEY_FILE)?;
    if bytes.starts_with(AGE_ARMOR.as_bytes()) {
        let pass = passphrase.ok_or_else(|| KeyFileError::Locked {
            path: path.to_path_buf(),
        })?;
        bytes = decrypt(path, &bytes, pass)?;
    }
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
    fn passphrase_protected_keys_open_only_with_the_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cw.key");
        let k = SecretKey::generate();
        write_secret_key_protected(&p, &k, "correct horse").unwrap();
        assert!(is_protected(&p));
        assert!(!std::fs::read_to_string(&p).unwrap().contains("PRIVATE KEY"));
        assert!(matches!(
            read_secret_key_with(&p, None),
            Err(KeyFileError::Locked { .. })
        ));
        assert!(matches!(
            read_secret_key_with(&p, Some("wrong")),
            Err(KeyFileError::WrongPassphrase { .. })
        ));
        assert_eq!(
            read_secret_key_with(&p, Some("correct horse"))
                .unwrap()
                .public(),
            k.public()
        );
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
