//! Reading the suite's key files (SPEC section 19): an Ed25519 private key as PKCS#8 PEM
//! (`BEGIN PRIVATE KEY`, as `openssl genpkey -algorithm ed25519` writes), or as encrypted
//! PKCS#8 (`BEGIN ENCRYPTED PRIVATE KEY`, PBES2 with scrypt or PBKDF2), opened with the
//! passphrase in `TG_PASSPHRASE`. A file that group or others may read is refused.

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::DecodePrivateKey;
use pkcs8::pkcs5::{pbes2, EncryptionScheme};
use throughgate_protocol::keys::SecretKey;

/// The environment variable holding the passphrase of protected key files.
pub const PASSPHRASE_ENV: &str = "TG_PASSPHRASE";

/// The largest key file read.
const MAX_KEY_FILE: u64 = 16 * 1024;

/// The PEM label of an encrypted PKCS#8 key.
const ENCRYPTED_LABEL: &str = "ENCRYPTED PRIVATE KEY";

/// The largest key-derivation cost accepted (SPEC 19): a damaged or hostile file must not take
/// gigabytes or hours to try.
const MAX_SCRYPT_N: u64 = 1 << 20;
const MAX_SCRYPT_R: u16 = 32;
const MAX_SCRYPT_P: u16 = 16;
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// Why a key file could not be read.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("cannot read key file {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Group or others may read or write the file.
    #[error(
        "key file {path} is accessible by other users (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    /// The file is larger than any key file.
    #[error("{path} is too large to be a key file")]
    TooLarge { path: PathBuf },
    /// The file is not an Ed25519 private key in (encrypted) PKCS#8 PEM form.
    #[error("{path} is not an Ed25519 private key in PKCS#8 PEM form: {detail}")]
    Format { path: PathBuf, detail: String },
    /// The key is protected and no (or an empty) passphrase was given.
    #[error("{path} is protected by a passphrase; set TG_PASSPHRASE to it")]
    Locked { path: PathBuf },
    /// The passphrase does not open the key.
    #[error("{path}: the passphrase is wrong (or the file is damaged)")]
    WrongPassphrase { path: PathBuf },
}

/// Reads a key file, opening a protected one with the passphrase in `TG_PASSPHRASE`.
pub fn read_secret_key(path: &Path) -> Result<SecretKey, KeyFileError> {
    read_secret_key_with(path, std::env::var(PASSPHRASE_ENV).ok().as_deref())
}

/// Reads a key file, opening a protected one with `passphrase`.
pub fn read_secret_key_with(
    path: &Path,
    passphrase: Option<&str>,
) -> Result<SecretKey, KeyFileError> {
    let bytes = zeroize::Zeroizing::new(read_private(path)?);
    let format = |detail: String| KeyFileError::Format {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| format("not UTF-8 text".into()))?;
    let signing = if text.starts_with(&format!("-----BEGIN {ENCRYPTED_LABEL}-----")) {
        let pass = match passphrase {
            None | Some("") => {
                return Err(KeyFileError::Locked {
                    path: path.to_path_buf(),
                })
            }
            Some(p) => p,
        };
        decrypt(path, text, pass)?
    } else {
        ed25519_dalek::SigningKey::from_pkcs8_pem(text).map_err(|e| format(e.to_string()))?
    };
    Ok(SecretKey::from_seed(&signing.to_bytes()))
}

fn read_private(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
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
    if meta.len() > MAX_KEY_FILE {
        return Err(KeyFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    std::fs::read(path).map_err(io)
}

fn decrypt(
    path: &Path,
    text: &str,
    passphrase: &str,
) -> Result<ed25519_dalek::SigningKey, KeyFileError> {
    let format = |detail: String| KeyFileError::Format {
        path: path.to_path_buf(),
        detail,
    };
    let (label, doc) = pkcs8::SecretDocument::from_pem(text).map_err(|e| format(e.to_string()))?;
    if label != ENCRYPTED_LABEL {
        return Err(format(format!("unexpected PEM label {label}")));
    }
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
        .map_err(|e| format(e.to_string()))?;
    let EncryptionScheme::Pbes2(params) = &info.encryption_algorithm else {
        return Err(format(
            "encrypted with PBES1; only PBES2 is accepted".into(),
        ));
    };
    let within = match &params.kdf {
        pbes2::Kdf::Scrypt(s) => {
            s.cost_parameter <= MAX_SCRYPT_N
                && s.block_size <= MAX_SCRYPT_R
                && s.parallelization <= MAX_SCRYPT_P
        }
        pbes2::Kdf::Pbkdf2(p) => p.iteration_count <= MAX_PBKDF2_ITERATIONS,
        _ => false,
    };
    if !within {
        return Err(format(
            "its key-derivation cost is beyond what is accepted".into(),
        ));
    }
    // With CBC a wrong passphrase shows as bad padding, or as valid padding around bytes that
    // are not DER: both mean the passphrase (or the file) is wrong.
    let plain = info.decrypt(passphrase.as_bytes()).map_err(|e| match e {
        pkcs8::Error::EncryptedPrivateKey(
            pkcs8::pkcs5::Error::DecryptFailed | pkcs8::pkcs5::Error::EncryptFailed,
        )
        | pkcs8::Error::Asn1(_) => KeyFileError::WrongPassphrase {
            path: path.to_path_buf(),
        },
        other => format(other.to_string()),
    })?;
    ed25519_dalek::SigningKey::from_pkcs8_der(plain.as_bytes()).map_err(|e| format(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[cfg(unix)]
    fn chmod(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn openssl(args: &[&str]) -> Option<std::process::Output> {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .ok()?;
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(out)
    }

    /// The raw Ed25519 public key OpenSSL derives from a key file (the last 32 bytes of its
    /// SubjectPublicKeyInfo).
    fn openssl_public(file: &Path, extra: &[&str]) -> Vec<u8> {
        let f = file.to_str().unwrap();
        let mut args = vec!["pkey", "-in", f, "-pubout", "-outform", "DER"];
        args.extend_from_slice(extra);
        let der = openssl(&args).unwrap().stdout;
        der.get(der.len() - 32..).unwrap().to_vec()
    }

    /// Key files written by OpenSSL (plain, and encrypted with scrypt and with PBKDF2) are read
    /// as the key OpenSSL itself sees. Skipped when `openssl` is not installed; `reads_files_the_node_writes`
    /// covers the reader against another writer then.
    #[cfg(unix)]
    #[test]
    fn reads_key_files_openssl_writes() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("openssl.key");
        let p = plain.to_str().unwrap();
        if openssl(&["genpkey", "-algorithm", "ed25519", "-out", p]).is_none() {
            eprintln!("SKIP reads_key_files_openssl_writes: openssl is not installed");
            return;
        }
        chmod(&plain, 0o600);
        let expected = openssl_public(&plain, &[]);
        let k = read_secret_key_with(&plain, None).unwrap();
        assert_eq!(k.public().as_bytes().to_vec(), expected);

        let pass = "suite test passphrase";
        for (name, extra) in [("scrypt", &["-scrypt"][..]), ("pbkdf2", &[][..])] {
            let enc = dir.path().join(format!("openssl-{name}.key"));
            let mut args = vec!["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", p];
            args.extend_from_slice(extra);
            let passout = format!("pass:{pass}");
            args.extend_from_slice(&["-passout", &passout, "-out", enc.to_str().unwrap()]);
            openssl(&args).unwrap();
            chmod(&enc, 0o600);
            assert!(matches!(
                read_secret_key_with(&enc, None),
                Err(KeyFileError::Locked { .. })
            ));
            assert!(matches!(
                read_secret_key_with(&enc, Some("not the passphrase")),
                Err(KeyFileError::WrongPassphrase { .. })
            ));
            let k = read_secret_key_with(&enc, Some(pass)).unwrap();
            assert_eq!(k.public().as_bytes().to_vec(), expected, "{name}");
        }
    }

    /// The node's writer and the suite's reader are independent implementations of SPEC 19;
    /// each plain and protected file one writes, the other reads.
    #[test]
    fn reads_files_the_node_writes() {
        let dir = tempfile::tempdir().unwrap();
        let k = SecretKey::generate();
        let plain = dir.path().join("plain.key");
        throughgate_node::keyfile::write_secret_key(&plain, &k).unwrap();
        assert_eq!(
            read_secret_key_with(&plain, None).unwrap().public(),
            k.public()
        );
        let enc = dir.path().join("enc.key");
        let pass = "a long passphrase";
        throughgate_node::keyfile::write_secret_key_protected(&enc, &k, pass).unwrap();
        assert!(matches!(
            read_secret_key_with(&enc, Some("")),
            Err(KeyFileError::Locked { .. })
        ));
        assert_eq!(
            read_secret_key_with(&enc, Some(pass)).unwrap().public(),
            k.public()
        );
    }

    #[cfg(unix)]
    #[test]
    fn refuses_files_others_can_read_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        std::fs::write(&p, b"not a key").unwrap();
        chmod(&p, 0o644);
        let err = read_secret_key_with(&p, None).unwrap_err();
        assert!(matches!(err, KeyFileError::Permissions { mode: 0o644, .. }));
        assert!(err.to_string().contains("chmod 600"));
        chmod(&p, 0o600);
        assert!(matches!(
            read_secret_key_with(&p, None),
            Err(KeyFileError::Format { .. })
        ));
    }
}
