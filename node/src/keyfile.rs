//! Key files: Ed25519 private keys as PKCS#8 PEM (RFC 5208/5958, `BEGIN PRIVATE KEY`), or, when
//! protected by a passphrase, as encrypted PKCS#8 (`BEGIN ENCRYPTED PRIVATE KEY`: PBES2 with
//! scrypt and AES-256-CBC), both readable by OpenSSL (`openssl pkey -in FILE`) and other stacks.
//! Written with mode 0600 and refused when readable by group or others.
//!
//! Protected key files written by earlier versions (age format) are still opened, and rewritten
//! as encrypted PKCS#8 with the same passphrase the first time they are (`keyfile/legacy_age.rs`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use pkcs8::der::pem::LineEnding;
use pkcs8::pkcs5::{pbes2, EncryptionScheme};
use rand::RngCore as _;
use throughgate_protocol::keys::SecretKey;

mod legacy_age;

/// The largest key file read.
const MAX_KEY_FILE: u64 = 16 * 1024;

/// The PEM label of an encrypted PKCS#8 key.
const ENCRYPTED_LABEL: &str = "ENCRYPTED PRIVATE KEY";

/// scrypt's cost for new protected key files: N = 2^14, r = 8, p = 1 (16 MiB, a fraction of a
/// second). OpenSSL refuses to derive a PBES2 key with more than 32 MiB of scrypt memory, so
/// this is the largest N a file `openssl pkey` can open may use.
const SCRYPT_LOG_N: u8 = 14;

/// The largest key-derivation cost accepted when opening a file (the file says what to use;
/// these keep a damaged or hostile file from taking gigabytes or hours).
const MAX_SCRYPT_N: u64 = 1 << 20;
const MAX_SCRYPT_R: u16 = 32;
const MAX_SCRYPT_P: u16 = 16;
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// The fewest characters a new passphrase may have.
pub const MIN_PASSPHRASE_CHARS: usize = 12;

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
    Permissions { path: PathBuf, mode: u32 },
    /// The file is not an Ed25519 PKCS#8 PEM private key.
    #[error("{path} is not an Ed25519 private key in PKCS#8 PEM form: {detail}")]
    Format { path: PathBuf, detail: String },
    /// Refusing to overwrite an existing key.
    #[error("{path} already exists; refusing to overwrite a key (move it away first)")]
    Exists { path: PathBuf },
    /// The file is larger than any key file.
    #[error("{path} is too large to be a key file")]
    TooLarge { path: PathBuf },
    /// The key is protected by a passphrase and none was given.
    #[error("{path} is protected by a passphrase; set TG_PASSPHRASE or enter it when asked")]
    Locked { path: PathBuf },
    /// An empty passphrase was given to open a protected key.
    #[error("{path} is protected by a passphrase and the one given is empty; give the key's passphrase (typed, or in TG_PASSPHRASE)")]
    EmptyPassphrase { path: PathBuf },
    /// The passphrase does not open the key.
    #[error("{path}: the passphrase is wrong (or the file is damaged)")]
    WrongPassphrase { path: PathBuf },
    /// A new passphrase does not meet the rules.
    #[error(transparent)]
    Passphrase(#[from] PassphraseError),
}

/// Why a new passphrase is refused. The same rules apply however it is given (typed, or in
/// `TG_PASSPHRASE`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassphraseError {
    /// Empty.
    #[error("the passphrase is empty; choose one of at least {MIN_PASSPHRASE_CHARS} characters")]
    Empty,
    /// Fewer than [`MIN_PASSPHRASE_CHARS`] characters.
    #[error("the passphrase has {0} characters; use at least {MIN_PASSPHRASE_CHARS}")]
    TooShort(usize),
}

/// Checks a new passphrase against the rules: not empty, at least [`MIN_PASSPHRASE_CHARS`]
/// characters.
pub fn check_new_passphrase(passphrase: &str) -> Result<(), PassphraseError> {
    match passphrase.chars().count() {
        0 => Err(PassphraseError::Empty),
        n if n < MIN_PASSPHRASE_CHARS => Err(PassphraseError::TooShort(n)),
        _ => Ok(()),
    }
}

/// The environment variable a passphrase for protected key files may be given in.
pub const PASSPHRASE_ENV: &str = "TG_PASSPHRASE";

/// Whether the key file at `path` is passphrase-protected (encrypted PKCS#8, or the age format
/// of earlier versions).
pub fn is_protected(path: &Path) -> bool {
    read_private_file(path, MAX_KEY_FILE)
        .map(|b| is_encrypted_pem(&b) || b.starts_with(legacy_age::ARMOR_BEGIN.as_bytes()))
        .unwrap_or(false)
}

fn is_encrypted_pem(bytes: &[u8]) -> bool {
    bytes.starts_with(format!("-----BEGIN {ENCRYPTED_LABEL}-----").as_bytes())
}

/// Writes `key` to a new file at `path` with mode 0600 as encrypted PKCS#8 under `passphrase`,
/// which must meet [`check_new_passphrase`].
pub fn write_secret_key_protected(
    path: &Path,
    key: &SecretKey,
    passphrase: &str,
) -> Result<(), KeyFileError> {
    check_new_passphrase(passphrase)?;
    if path.exists() {
        return Err(KeyFileError::Exists {
            path: path.to_path_buf(),
        });
    }
    write_private_file(path, encrypt(path, key, passphrase)?.as_bytes())
}

/// `key` for PKCS#8 version 1 (RFC 5208: the seed, without the optional public key of version
/// 2), the form OpenSSL 3.0 and every other PKCS#8 reader accept.
fn pkcs8_v1(key: &SecretKey) -> ed25519_dalek::pkcs8::KeypairBytes {
    ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.signing_key().to_bytes(),
        public_key: None,
    }
}

/// `key` as encrypted PKCS#8 PEM: PBES2, scrypt (N = 2^14, r = 8, p = 1) and AES-256-CBC, with a
/// fresh salt and IV.
fn encrypt(
    path: &Path,
    key: &SecretKey,
    passphrase: &str,
) -> Result<zeroize::Zeroizing<String>, KeyFileError> {
    let fmt = |e: &dyn std::fmt::Display| KeyFileError::Format {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let der = pkcs8_v1(key).to_pkcs8_der().map_err(|e| fmt(&e))?;
    let info = pkcs8::PrivateKeyInfo::try_from(der.as_bytes()).map_err(|e| fmt(&e))?;
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut iv);
    let scrypt = scrypt::Params::new(SCRYPT_LOG_N, 8, 1, 32).map_err(|e| fmt(&e))?;
    let params = pbes2::Parameters::scrypt_aes256cbc(scrypt, &salt, &iv).map_err(|e| fmt(&e))?;
    let doc = info
        .encrypt_with_params(params, passphrase.as_bytes())
        .map_err(|e| fmt(&e))?;
    doc.to_pem(ENCRYPTED_LABEL, LineEnding::LF)
        .map_err(|e| fmt(&e))
}

/// Opens encrypted PKCS#8 PEM `text` with `passphrase`, refusing key-derivation costs beyond
/// the limits above before deriving anything.
fn decrypt_pkcs8(
    path: &Path,
    text: &str,
    passphrase: &str,
) -> Result<ed25519_dalek::SigningKey, KeyFileError> {
    let fmt = |detail: String| KeyFileError::Format {
        path: path.to_path_buf(),
        detail,
    };
    let (label, doc) = pkcs8::SecretDocument::from_pem(text).map_err(|e| fmt(e.to_string()))?;
    if label != ENCRYPTED_LABEL {
        return Err(fmt(format!("unexpected PEM label {label}")));
    }
    let info =
        pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes()).map_err(|e| fmt(e.to_string()))?;
    let EncryptionScheme::Pbes2(params) = &info.encryption_algorithm else {
        return Err(fmt("encrypted with PBES1; only PBES2 is accepted".into()));
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
        return Err(fmt(
            "its key-derivation cost is beyond what is accepted".into()
        ));
    }
    // With CBC a wrong passphrase shows as bad padding (which pkcs5 0.7 reports as
    // `EncryptFailed`) or, rarely, as padding that happens to be valid around bytes that are not
    // DER; all mean the passphrase (or the ciphertext) is wrong.
    let plain = info.decrypt(passphrase.as_bytes()).map_err(|e| match e {
        pkcs8::Error::EncryptedPrivateKey(
            pkcs8::pkcs5::Error::DecryptFailed | pkcs8::pkcs5::Error::EncryptFailed,
        )
        | pkcs8::Error::Asn1(_) => KeyFileError::WrongPassphrase {
            path: path.to_path_buf(),
        },
        other => fmt(other.to_string()),
    })?;
    ed25519_dalek::SigningKey::from_pkcs8_der(plain.as_bytes()).map_err(|e| fmt(e.to_string()))
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
    let pem = pkcs8_v1(key)
        .to_pkcs8_pem(LineEnding::LF)
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
///
/// A protected file in the age format of earlier versions is rewritten, once opened, as
/// encrypted PKCS#8 under the same passphrase (atomically; if that fails the key is still
/// returned and the file left as it was).
pub fn read_secret_key_with(
    path: &Path,
    passphrase: Option<&str>,
) -> Result<SecretKey, KeyFileError> {
    let bytes = zeroize::Zeroizing::new(read_private_file(path, MAX_KEY_FILE)?);
    let legacy = bytes.starts_with(legacy_age::ARMOR_BEGIN.as_bytes());
    let protected = legacy || is_encrypted_pem(&bytes);
    let pass = if protected {
        match passphrase {
            None => {
                return Err(KeyFileError::Locked {
                    path: path.to_path_buf(),
                })
            }
            Some("") => {
                return Err(KeyFileError::EmptyPassphrase {
                    path: path.to_path_buf(),
                })
            }
            Some(p) => p,
        }
    } else {
        ""
    };
    let format = |detail: String| KeyFileError::Format {
        path: path.to_path_buf(),
        detail,
    };
    let sk = if legacy {
        let pem =
            zeroize::Zeroizing::new(legacy_age::decrypt(&bytes, pass).map_err(|e| match e {
                legacy_age::AgeError::Decrypt => KeyFileError::WrongPassphrase {
                    path: path.to_path_buf(),
                },
                other => format(other.to_string()),
            })?);
        let text = std::str::from_utf8(&pem).map_err(|_| format("not UTF-8 text".into()))?;
        ed25519_dalek::SigningKey::from_pkcs8_pem(text).map_err(|e| format(e.to_string()))?
    } else {
        let text = std::str::from_utf8(&bytes).map_err(|_| format("not UTF-8 text".into()))?;
        if protected {
            decrypt_pkcs8(path, text, pass)?
        } else {
            ed25519_dalek::SigningKey::from_pkcs8_pem(text).map_err(|e| format(e.to_string()))?
        }
    };
    let key = SecretKey::from_seed(&sk.to_bytes());
    if legacy {
        match encrypt(path, &key, pass).and_then(|pem| write_private_file(path, pem.as_bytes())) {
            Ok(()) => tracing::info!(
                file = %path.display(),
                "key file converted from the age format to encrypted PKCS#8"
            ),
            Err(e) => tracing::warn!(
                file = %path.display(),
                error = %e,
                "could not convert the key file from the age format; it stays as it was"
            ),
        }
    }
    Ok(key)
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
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        assert!(!text.contains("BEGIN PRIVATE KEY"));
        assert!(matches!(
            read_secret_key_with(&p, None),
            Err(KeyFileError::Locked { .. })
        ));
        let wrong = read_secret_key_with(&p, Some("wrong"));
        assert!(
            matches!(wrong, Err(KeyFileError::WrongPassphrase { .. })),
            "{wrong:?}"
        );
        assert_eq!(
            read_secret_key_with(&p, Some("correct horse"))
                .unwrap()
                .public(),
            k.public()
        );
    }

    #[test]
    fn protected_keys_are_encrypted_pkcs8() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cw.key");
        write_secret_key_protected(&p, &SecretKey::generate(), "a long passphrase").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));
        let (_, doc) = pkcs8::SecretDocument::from_pem(&text).unwrap();
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes()).unwrap();
        let EncryptionScheme::Pbes2(params) = info.encryption_algorithm else {
            panic!("not PBES2")
        };
        assert!(matches!(params.kdf, pbes2::Kdf::Scrypt(_)));
        assert!(matches!(
            params.encryption,
            pbes2::EncryptionScheme::Aes256Cbc { .. }
        ));
    }

    #[test]
    fn new_passphrases_follow_the_rules_and_empty_ones_never_open_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cw.key");
        let k = SecretKey::generate();
        assert!(matches!(
            write_secret_key_protected(&p, &k, ""),
            Err(KeyFileError::Passphrase(PassphraseError::Empty))
        ));
        assert!(matches!(
            write_secret_key_protected(&p, &k, "elevenchars"),
            Err(KeyFileError::Passphrase(PassphraseError::TooShort(11)))
        ));
        assert!(!p.exists(), "nothing is written for a refused passphrase");
        // Twelve characters, counted as characters, not bytes.
        assert_eq!(
            check_new_passphrase("ééééééééééé"),
            Err(PassphraseError::TooShort(11))
        );
        write_secret_key_protected(&p, &k, "twelve chars").unwrap();
        assert!(matches!(
            read_secret_key_with(&p, Some("")),
            Err(KeyFileError::EmptyPassphrase { .. })
        ));
        // An unprotected key needs no passphrase, so an empty one does not matter there.
        let plain = dir.path().join("plain.key");
        write_secret_key(&plain, &k).unwrap();
        assert_eq!(
            read_secret_key_with(&plain, Some("")).unwrap().public(),
            k.public()
        );
    }

    #[cfg(unix)]
    #[test]
    fn age_key_files_of_earlier_versions_open_and_become_encrypted_pkcs8() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("old.key");
        write_private_file(&p, legacy_age::tests::FIXTURE.as_bytes()).unwrap();
        let expected = SecretKey::from_seed(&[7u8; 32]).public();
        assert!(is_protected(&p));
        assert!(matches!(
            read_secret_key_with(&p, Some("legacy passphrase 2")),
            Err(KeyFileError::WrongPassphrase { .. })
        ));
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            legacy_age::tests::FIXTURE,
            "a failed attempt leaves the file alone"
        );
        let k = read_secret_key_with(&p, Some("legacy passphrase 1")).unwrap();
        assert_eq!(k.public(), expected);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(is_protected(&p));
        assert_eq!(
            read_secret_key_with(&p, Some("legacy passphrase 1"))
                .unwrap()
                .public(),
            expected
        );
    }

    /// The key files are the standard formats: OpenSSL reads ours (plain and encrypted), and we
    /// read OpenSSL's encrypted ones (scrypt and PBKDF2). Skipped when `openssl` is not installed.
    #[cfg(unix)]
    #[test]
    fn openssl_reads_our_key_files_and_we_read_its() {
        use std::os::unix::fs::PermissionsExt;
        use std::process::Command;
        let Ok(out) = Command::new("openssl").arg("version").output() else {
            eprintln!("SKIP openssl_reads_our_key_files_and_we_read_its: openssl is not installed");
            return;
        };
        assert!(out.status.success());
        let dir = tempfile::tempdir().unwrap();
        let k = SecretKey::generate();
        let pass = "openssl test passphrase";
        let raw_public = |file: &Path, args: &[&str]| -> Vec<u8> {
            let out = Command::new("openssl")
                .args(["pkey", "-in"])
                .arg(file)
                .args(args)
                .args(["-pubout", "-outform", "DER"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl pkey failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // SubjectPublicKeyInfo for Ed25519: a 12-byte prefix, then the 32-byte key.
            out.stdout[12..].to_vec()
        };
        let plain = dir.path().join("plain.key");
        write_secret_key(&plain, &k).unwrap();
        assert_eq!(raw_public(&plain, &[]), k.public().as_bytes().to_vec());
        let enc = dir.path().join("enc.key");
        write_secret_key_protected(&enc, &k, pass).unwrap();
        assert_eq!(
            raw_public(&enc, &["-passin", &format!("pass:{pass}")]),
            k.public().as_bytes().to_vec()
        );
        // The wrong passphrase fails in OpenSSL too.
        let wrong = Command::new("openssl")
            .args(["pkey", "-in"])
            .arg(&enc)
            .args(["-passin", "pass:not the passphrase", "-noout"])
            .output()
            .unwrap();
        assert!(!wrong.status.success());
        for (name, extra) in [("scrypt", &["-scrypt"][..]), ("pbkdf2", &[][..])] {
            let theirs = dir.path().join(format!("openssl-{name}.key"));
            let status = Command::new("openssl")
                .args(["pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in"])
                .arg(&plain)
                .args(extra)
                .args(["-passout", &format!("pass:{pass}"), "-out"])
                .arg(&theirs)
                .status()
                .unwrap();
            assert!(status.success());
            fs::set_permissions(&theirs, fs::Permissions::from_mode(0o600)).unwrap();
            assert_eq!(
                read_secret_key_with(&theirs, Some(pass)).unwrap().public(),
                k.public(),
                "{name}"
            );
        }
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
