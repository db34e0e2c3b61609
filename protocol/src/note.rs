//! C2SP signed notes (<https://c2sp.org/signed-note>), the envelope of log checkpoints.
//!
//! A signed note is a text ending in a newline, a blank line, then one or more signature lines
//!
//! ```text
//! — <key name> <base64(4-byte key ID || signature)>
//! ```
//!
//! (an em dash, U+2014, then a space). The text a signature covers includes its final newline
//! but not the blank line. The whole note is UTF-8 with no ASCII control characters other than
//! newline; the text is separated from the signatures by the *last* blank line, so the text may
//! itself contain blank lines.
//!
//! A key ID is the first four bytes of `SHA-256(key name || 0x0A || signature type || public
//! key)`; signature type 0x01 is a plain Ed25519 signature over the text, 0x04 a timestamped
//! witness cosignature (see [`crate::witness`]). A verifier considers only lines whose key name
//! and key ID both match a key it knows, ignores the rest, and rejects the note if any line by a
//! known key fails to verify.
//!
//! Keys are shown and configured as C2SP verifier keys ("vkeys"),
//! `<name>+<8 hex digits of key ID>+<base64(signature type || public key)>`; see
//! [`VerifierKey`].
//!
//! Sources and deliberate differences: the note format and key IDs follow the C2SP
//! signed-note text. The vkey form is not spelt out in the version of that text consulted; it
//! follows the Go reference (`golang.org/x/mod/sumdb/note`), whose published example key and
//! note are this module's test vectors. Where Go skips a repeated line by an already-seen key,
//! this module checks every line by the key and rejects the note if any fails (the spec says
//! clients SHOULD reject a note with a failing known-key signature). Ed25519 signatures are
//! verified strictly (non-canonical and small-order forms refused), which honest signers never
//! produce.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::keys::{KeyError, PublicKey, SecretKey};

/// The largest signed note accepted, in bytes.
pub const MAX_NOTE_SIZE: usize = 1 << 20;
/// The most signature lines accepted in one note (the spec requires accepting at least 16).
pub const MAX_SIGNATURES: usize = 100;
/// Signature type byte of a plain Ed25519 note signature.
pub const SIG_TYPE_ED25519: u8 = 0x01;
/// Signature type byte of a timestamped Ed25519 witness cosignature (c2sp.org/tlog-cosignature).
pub const SIG_TYPE_COSIGNATURE_V1: u8 = 0x04;
/// The prefix of every signature line: an em dash (U+2014) and a space.
pub const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Why a note, signature line or verifier key is malformed, or a signature is missing or bad.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The note is larger than [`MAX_NOTE_SIZE`].
    #[error("the note is {len} bytes, over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// The note is not valid UTF-8.
    #[error("the note is not valid UTF-8")]
    NotUtf8,
    /// The note holds an ASCII control character other than newline.
    #[error("control character 0x{byte:02x} at byte {offset} of the note")]
    ControlCharacter { byte: u8, offset: usize },
    /// The note text is empty or does not end with a newline.
    #[error("the note text must end with a newline")]
    TextMissingNewline,
    /// No blank line followed by signature lines: the note is unsigned or truncated.
    #[error("the note has no signature block (a blank line followed by signature lines)")]
    NoSignatureBlock,
    /// A signature line does not have the form `— <name> <base64>`.
    #[error("signature line {line} is malformed: {reason}")]
    MalformedSignatureLine {
        /// The line's position among the signature lines, from 1.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A key name is empty or contains a Unicode space or a plus sign.
    #[error("key name {0:?} is not allowed: it must be non-empty, without spaces or '+'")]
    InvalidKeyName(String),
    /// The note has more than [`MAX_SIGNATURES`] signature lines.
    #[error("{count} signature lines, over the limit of {max}")]
    TooManySignatures {
        /// Lines found (or that there would be).
        count: usize,
        max: usize,
    },
    /// No signature line by the expected key (matching key name and key ID).
    #[error("no signature by key {name}+{key_id}")]
    MissingSignature {
        /// The key name looked for.
        name: String,
        /// The key ID looked for, as 8 hex digits.
        key_id: String,
    },
    /// A signature line by the expected key does not verify.
    #[error("the signature by key {name}+{key_id} does not verify")]
    BadSignature {
        name: String,
        /// The key ID, as 8 hex digits.
        key_id: String,
    },
    /// A verifier key string is not `<name>+<8 hex digits>+<base64>`.
    #[error("malformed verifier key: {0}")]
    MalformedVerifierKey(&'static str),
    /// A verifier key's key ID does not match its name and key.
    #[error("verifier key ID {given} does not match its name and key (expected {computed})")]
    VerifierKeyIdMismatch {
        /// The key ID written in the verifier key.
        given: String,
        /// The key ID computed from its name and key.
        computed: String,
    },
    /// A verifier key of a signature type this crate does not handle.
    #[error("unsupported signature type 0x{0:02x}")]
    UnsupportedSignatureType(u8),
    /// A verifier key's public key is not a usable Ed25519 key.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Whether `name` is a valid key name: non-empty, without Unicode spaces, '+' or ASCII control
/// characters (which no note may contain anyway).
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c < ' ')
}

fn check_key_name(name: &str) -> Result<(), NoteError> {
    if is_valid_key_name(name) {
        Ok(())
    } else {
        Err(NoteError::InvalidKeyName(name.chars().take(80).collect()))
    }
}

/// The C2SP key ID: the first four bytes of `SHA-256(name || 0x0A || sig_type || public_key)`.
pub fn key_id(name: &str, sig_type: u8, public_key: &[u8]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', sig_type]);
    h.update(public_key);
    let d = h.finalize();
    let mut id = [0u8; 4];
    id.copy_from_slice(d.get(..4).unwrap_or(&[0; 4]));
    id
}

/// The key ID of a plain Ed25519 note-signing key (signature type 0x01).
pub fn ed25519_key_id(name: &str, key: &PublicKey) -> [u8; 4] {
    key_id(name, SIG_TYPE_ED25519, key.as_bytes())
}

/// Checks the character rules of a whole note or a note text: no ASCII control character other
/// than newline.
fn check_characters(s: &str) -> Result<(), NoteError> {
    match s.bytes().enumerate().find(|&(_, b)| b < 0x20 && b != b'\n') {
        Some((offset, byte)) => Err(NoteError::ControlCharacter { byte, offset }),
        None => Ok(()),
    }
}

/// One signature line of a note, verified or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The signing key's name.
    pub name: String,
    /// The signing key's 4-byte ID.
    pub key_id: [u8; 4],
    /// The signature bytes after the key ID (for Ed25519, 64 bytes; for a cosignature, an
    /// 8-byte timestamp and 64 bytes).
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// The line as it appears in a note, with its final newline.
    pub fn to_line(&self) -> String {
        let mut payload = Vec::with_capacity(4 + self.signature.len());
        payload.extend_from_slice(&self.key_id);
        payload.extend_from_slice(&self.signature);
        format!("{SIGNATURE_PREFIX}{} {}\n", self.name, B64.encode(payload))
    }

    /// Parses one line (without its newline). `line_no` is used in errors.
    /// Parses one signature line (with or without its trailing newline), e.g. a cosignature a
    /// witness returned.
    pub fn parse(line: &str) -> Result<NoteSignature, NoteError> {
        NoteSignature::parse_line(line.strip_suffix('\n').unwrap_or(line), 1)
    }

    fn parse_line(line: &str, line_no: usize) -> Result<NoteSignature, NoteError> {
        let bad = |reason| NoteError::MalformedSignatureLine {
            line: line_no,
            reason,
        };
        let rest = line
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or_else(|| bad("it does not start with an em dash and a space"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or_else(|| bad("no space between key name and signature"))?;
        if !is_valid_key_name(name) {
            return Err(bad("invalid key name"));
        }
        if b64.is_empty() {
            return Err(bad("empty signature"));
        }
        let raw = B64
            .decode(b64)
            .map_err(|_| bad("the signature is not canonical padded base64"))?;
        if raw.len() < 5 {
            return Err(bad("the signature is shorter than a key ID and one byte"));
        }
        let (id, sig) = raw.split_at(4);
        let key_id: [u8; 4] = id.try_into().map_err(|_| bad("no key ID"))?;
        Ok(NoteSignature {
            name: name.to_owned(),
            key_id,
            signature: sig.to_vec(),
        })
    }

    fn key_id_hex(&self) -> String {
        hex::encode(self.key_id)
    }
}

/// A note text and its signature lines (unverified until [`SignedNote::verify`] says so).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    text: String,
    signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// An unsigned note with the given text, which must end with a newline and contain no ASCII
    /// control characters other than newline.
    pub fn new(text: impl Into<String>) -> Result<SignedNote, NoteError> {
        let text = text.into();
        if !text.ends_with('\n') {
            return Err(NoteError::TextMissingNewline);
        }
        check_characters(&text)?;
        if text.len() >= MAX_NOTE_SIZE {
            return Err(NoteError::TooLarge {
                len: text.len(),
                max: MAX_NOTE_SIZE,
            });
        }
        Ok(SignedNote {
            text,
            signatures: Vec::new(),
        })
    }

    /// Parses a signed note, refusing more than [`MAX_NOTE_SIZE`] bytes and more than
    /// [`MAX_SIGNATURES`] signature lines. Signatures are not verified here.
    pub fn parse(input: &[u8]) -> Result<SignedNote, NoteError> {
        if input.len() > MAX_NOTE_SIZE {
            return Err(NoteError::TooLarge {
                len: input.len(),
                max: MAX_NOTE_SIZE,
            });
        }
        let s = std::str::from_utf8(input).map_err(|_| NoteError::NotUtf8)?;
        check_characters(s)?;
        let split = s.rfind("\n\n").ok_or(NoteError::NoSignatureBlock)?;
        let text = s.get(..split + 1).ok_or(NoteError::NoSignatureBlock)?;
        let block = s.get(split + 2..).ok_or(NoteError::NoSignatureBlock)?;
        if block.is_empty() {
            return Err(NoteError::NoSignatureBlock);
        }
        let Some(block) = block.strip_suffix('\n') else {
            return Err(NoteError::MalformedSignatureLine {
                line: block.split('\n').count(),
                reason: "the last signature line does not end with a newline",
            });
        };
        let mut signatures = Vec::new();
        for (i, line) in block.split('\n').enumerate() {
            if i >= MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures {
                    count: block.split('\n').count(),
                    max: MAX_SIGNATURES,
                });
            }
            signatures.push(NoteSignature::parse_line(line, i + 1)?);
        }
        Ok(SignedNote {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The signed text, including its final newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signature lines, in order.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Adds a signature line. A line by the same key (same name and key ID) is replaced, so
    /// re-signing never duplicates a key.
    ///
    /// Refuses a line that [`SignedNote::parse`] would not read back: an invalid key name, an
    /// empty signature, a line beyond [`MAX_SIGNATURES`] or past [`MAX_NOTE_SIZE`].
    pub fn add_signature(&mut self, sig: NoteSignature) -> Result<(), NoteError> {
        check_key_name(&sig.name)?;
        let mut kept: Vec<NoteSignature> = self
            .signatures
            .iter()
            .filter(|s| !(s.name == sig.name && s.key_id == sig.key_id))
            .cloned()
            .collect();
        let line_no = kept.len() + 1;
        if sig.signature.is_empty() {
            return Err(NoteError::MalformedSignatureLine {
                line: line_no,
                reason: "empty signature",
            });
        }
        if line_no > MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures {
                count: line_no,
                max: MAX_SIGNATURES,
            });
        }
        kept.push(sig);
        let len = self.text.len() + 1 + kept.iter().map(|s| s.to_line().len()).sum::<usize>();
        if len > MAX_NOTE_SIZE {
            return Err(NoteError::TooLarge {
                len,
                max: MAX_NOTE_SIZE,
            });
        }
        self.signatures = kept;
        Ok(())
    }

    /// Signs the text with `key` as an Ed25519 note signature under `name`, and adds the line.
    pub fn sign(&mut self, name: &str, key: &SecretKey) -> Result<(), NoteError> {
        check_key_name(name)?;
        let signature = key.sign(self.text.as_bytes()).to_vec();
        self.add_signature(NoteSignature {
            name: name.to_owned(),
            key_id: ed25519_key_id(name, &key.public()),
            signature,
        })
    }

    /// The signature lines by the key with this name and key ID.
    pub fn signatures_by<'a>(
        &'a self,
        name: &'a str,
        key_id: [u8; 4],
    ) -> impl Iterator<Item = &'a NoteSignature> + 'a {
        self.signatures
            .iter()
            .filter(move |s| s.name == name && s.key_id == key_id)
    }

    /// Verifies that the Ed25519 key `key`, named `name`, signed the text.
    ///
    /// Lines by other keys are ignored. Every line by this key (matching name and key ID) must
    /// verify, strictly; there must be at least one.
    pub fn verify(&self, name: &str, key: &PublicKey) -> Result<(), NoteError> {
        self.verify_cached(name, key, None)
    }

    /// [`SignedNote::verify`], remembering successes in `cache` (a checkpoint is seen once per
    /// response in its commit batch).
    pub fn verify_cached(
        &self,
        name: &str,
        key: &PublicKey,
        cache: Option<&crate::sigcache::SigCache>,
    ) -> Result<(), NoteError> {
        let id = ed25519_key_id(name, key);
        let mut found = false;
        for s in self.signatures_by(name, id) {
            let ok = <&[u8; 64]>::try_from(s.signature.as_slice()).is_ok_and(|sig| {
                crate::sigcache::verify_strict(cache, key, self.text.as_bytes(), sig)
            });
            if !ok {
                return Err(NoteError::BadSignature {
                    name: name.to_owned(),
                    key_id: s.key_id_hex(),
                });
            }
            found = true;
        }
        if found {
            Ok(())
        } else {
            Err(NoteError::MissingSignature {
                name: name.to_owned(),
                key_id: hex::encode(id),
            })
        }
    }

    /// Verifies against a verifier key of signature type 0x01 (see [`VerifierKey`]).
    pub fn verify_with(&self, vkey: &VerifierKey) -> Result<(), NoteError> {
        if vkey.sig_type != SIG_TYPE_ED25519 {
            return Err(NoteError::UnsupportedSignatureType(vkey.sig_type));
        }
        self.verify(&vkey.name, &vkey.key)
    }

    /// The whole note: text, blank line, signature lines.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 1 + 120 * self.signatures.len());
        out.push_str(&self.text);
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.to_line());
        }
        out
    }
}

impl fmt::Display for SignedNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// A C2SP verifier key: a key name, a signature type and an Ed25519 public key, written
/// `<name>+<8 hex digits of key ID>+<base64(signature type || public key)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    /// The key name.
    pub name: String,
    /// The signature type: [`SIG_TYPE_ED25519`] or [`SIG_TYPE_COSIGNATURE_V1`].
    pub sig_type: u8,
    /// The Ed25519 public key.
    pub key: PublicKey,
}

impl VerifierKey {
    /// A note-signing (type 0x01) verifier key.
    pub fn ed25519(name: &str, key: PublicKey) -> Result<VerifierKey, NoteError> {
        check_key_name(name)?;
        Ok(VerifierKey {
            name: name.to_owned(),
            sig_type: SIG_TYPE_ED25519,
            key,
        })
    }

    /// A witness cosignature (type 0x04) verifier key.
    pub fn cosignature_v1(name: &str, key: PublicKey) -> Result<VerifierKey, NoteError> {
        check_key_name(name)?;
        Ok(VerifierKey {
            name: name.to_owned(),
            sig_type: SIG_TYPE_COSIGNATURE_V1,
            key,
        })
    }

    /// The 4-byte key ID.
    pub fn key_id(&self) -> [u8; 4] {
        key_id(&self.name, self.sig_type, self.key.as_bytes())
    }

    /// Parses `<name>+<8 hex digits>+<base64(type || key)>`, checking the key ID. Signature
    /// types 0x01 and 0x04 with 32-byte Ed25519 keys are accepted.
    pub fn parse(s: &str) -> Result<VerifierKey, NoteError> {
        let s = s.trim();
        let (name, rest) = s
            .split_once('+')
            .ok_or(NoteError::MalformedVerifierKey("expected name+keyid+key"))?;
        // The base64 part may itself contain '+', so split only twice.
        let (id_hex, key_b64) = rest
            .split_once('+')
            .ok_or(NoteError::MalformedVerifierKey("expected name+keyid+key"))?;
        check_key_name(name)?;
        if id_hex.len() != 8 {
            return Err(NoteError::MalformedVerifierKey(
                "the key ID is not 8 hex digits",
            ));
        }
        let mut given = [0u8; 4];
        hex::decode_to_slice(id_hex, &mut given)
            .map_err(|_| NoteError::MalformedVerifierKey("the key ID is not 8 hex digits"))?;
        let raw = B64
            .decode(key_b64)
            .map_err(|_| NoteError::MalformedVerifierKey("the key is not padded base64"))?;
        let (&sig_type, key) = raw
            .split_first()
            .ok_or(NoteError::MalformedVerifierKey("the key is empty"))?;
        if sig_type != SIG_TYPE_ED25519 && sig_type != SIG_TYPE_COSIGNATURE_V1 {
            return Err(NoteError::UnsupportedSignatureType(sig_type));
        }
        let computed = key_id(name, sig_type, key);
        if computed != given {
            return Err(NoteError::VerifierKeyIdMismatch {
                given: hex::encode(given),
                computed: hex::encode(computed),
            });
        }
        let key = PublicKey::from_slice(key)?;
        Ok(VerifierKey {
            name: name.to_owned(),
            sig_type,
            key,
        })
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(33);
        raw.push(self.sig_type);
        raw.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_id()),
            B64.encode(raw)
        )
    }
}

impl std::str::FromStr for VerifierKey {
    type Err = NoteError;
    fn from_str(s: &str) -> Result<Self, NoteError> {
        VerifierKey::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // From the documentation of golang.org/x/mod/sumdb/note (BSD licence): a signer key, its
    // verifier key and a note it signed. Ed25519 is deterministic, so our signature must be
    // byte-identical.
    const GO_SKEY_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n";
    const GO_SIG_LINE: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn go_key() -> SecretKey {
        let raw = B64.decode(GO_SKEY_B64).unwrap();
        assert_eq!(raw[0], SIG_TYPE_ED25519);
        SecretKey::from_seed(&raw[1..].try_into().unwrap())
    }

    #[test]
    fn matches_the_go_reference_note() {
        let key = go_key();
        let vkey = VerifierKey::parse(GO_VKEY).unwrap();
        assert_eq!(vkey.key, key.public());
        assert_eq!(vkey.name, "PeterNeumann");
        assert_eq!(hex::encode(vkey.key_id()), "c74f20a3");
        assert_eq!(vkey.to_string(), GO_VKEY);

        let mut note = SignedNote::new(GO_TEXT).unwrap();
        note.sign("PeterNeumann", &key).unwrap();
        let expected = format!("{GO_TEXT}\n{GO_SIG_LINE}");
        assert_eq!(note.to_text(), expected);

        let parsed = SignedNote::parse(expected.as_bytes()).unwrap();
        assert_eq!(parsed, note);
        parsed.verify_with(&vkey).unwrap();
        parsed.verify("PeterNeumann", &key.public()).unwrap();
    }

    #[test]
    fn vkeys_from_other_implementations() {
        // From transparency-dev/formats tests: a type-0x01 key whose base64 contains '+', and a
        // type-0x04 (cosignature) key.
        let a = VerifierKey::parse("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6")
            .unwrap();
        assert_eq!(a.sig_type, SIG_TYPE_ED25519);
        assert_eq!(
            a.to_string(),
            "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6"
        );
        let b = VerifierKey::parse(
            "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
        )
        .unwrap();
        assert_eq!(b.sig_type, SIG_TYPE_COSIGNATURE_V1);
        assert!(matches!(
            VerifierKey::parse("rekor.sigstore.dev+12345678+AwEB"),
            Err(NoteError::UnsupportedSignatureType(3))
        ));
        assert!(VerifierKey::parse("bananas.sigstore.dev+12344556").is_err());
        assert!(VerifierKey::parse("x+12345678+THIS_IS_NOT_BASE64!").is_err());
        assert!(matches!(
            VerifierKey::parse("TEST+00000000+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6"),
            Err(NoteError::VerifierKeyIdMismatch { .. })
        ));
        assert!(
            VerifierKey::parse("TE ST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6")
                .is_err()
        );
    }

    #[test]
    fn verification_ignores_other_keys_and_rejects_bad_lines() {
        let (a, b) = (
            SecretKey::from_seed(&[1; 32]),
            SecretKey::from_seed(&[2; 32]),
        );
        let mut note = SignedNote::new("hello\n\nworld\n").unwrap();
        note.sign("a.example/log", &a).unwrap();
        note.sign("b.example/log", &b).unwrap();
        // Re-signing replaces rather than duplicates.
        note.sign("a.example/log", &a).unwrap();
        assert_eq!(note.signatures().len(), 2);
        let parsed = SignedNote::parse(note.to_text().as_bytes()).unwrap();
        assert_eq!(parsed.text(), "hello\n\nworld\n");
        parsed.verify("a.example/log", &a.public()).unwrap();
        parsed.verify("b.example/log", &b.public()).unwrap();
        // Right key, wrong name; right name, wrong key: no signature by that key.
        assert!(matches!(
            parsed.verify("c.example/log", &a.public()),
            Err(NoteError::MissingSignature { .. })
        ));
        assert!(matches!(
            parsed.verify("a.example/log", &b.public()),
            Err(NoteError::MissingSignature { .. })
        ));
        // A tampered text fails.
        let tampered = note.to_text().replacen("world", "wurld", 1);
        assert!(matches!(
            SignedNote::parse(tampered.as_bytes())
                .unwrap()
                .verify("a.example/log", &a.public()),
            Err(NoteError::BadSignature { .. })
        ));
        // A second, bad line by a known key rejects the note even if another line verifies.
        let mut forged = parsed.clone();
        let mut bad = forged
            .signatures()
            .iter()
            .find(|s| s.name == "a.example/log")
            .unwrap()
            .clone();
        bad.signature[0] ^= 1;
        forged.signatures.push(bad);
        assert!(matches!(
            forged.verify("a.example/log", &a.public()),
            Err(NoteError::BadSignature { .. })
        ));
    }

    #[test]
    fn parse_rejects_malformed_notes() {
        let key = SecretKey::from_seed(&[3; 32]);
        let mut note = SignedNote::new("text\n").unwrap();
        note.sign("k", &key).unwrap();
        let good = note.to_text();
        assert!(SignedNote::parse(good.as_bytes()).is_ok());

        let cases: Vec<(String, &str)> = vec![
            ("text\n".into(), "no blank line"),
            ("text\n\n".into(), "no signatures"),
            (good.trim_end_matches('\n').into(), "no final newline"),
            (good.replace('\u{2014}', "-"), "hyphen instead of em dash"),
            (good.replace("\u{2014} k ", "\u{2014} k  "), "two spaces"),
            (good.replace("\u{2014} k ", "\u{2014}  "), "empty name"),
            (good.replace("\u{2014} k ", "\u{2014} k+1 "), "plus in name"),
            (good.replace("text", "te\rxt"), "control character"),
            (good.replace("text", "te\txt"), "tab"),
            (format!("{good}\u{2014} k AAAA\n"), "signature too short"),
            (format!("{good}\u{2014} k !!!!\n"), "not base64"),
            (format!("{good}\u{2014} k QUJDREU\n"), "unpadded base64"),
            (format!("{good}\n"), "trailing blank line"),
        ];
        for (input, what) in cases {
            assert!(
                SignedNote::parse(input.as_bytes()).is_err(),
                "{what}: {input:?}"
            );
        }
        assert_eq!(SignedNote::parse(b"\xff\n\n"), Err(NoteError::NotUtf8));
        let big = vec![b'a'; MAX_NOTE_SIZE + 1];
        assert!(matches!(
            SignedNote::parse(&big),
            Err(NoteError::TooLarge { .. })
        ));
        let line = note.signatures()[0].to_line();
        let many = format!("text\n\n{}", line.repeat(MAX_SIGNATURES + 1));
        assert!(matches!(
            SignedNote::parse(many.as_bytes()),
            Err(NoteError::TooManySignatures { .. })
        ));
        let hundred = format!("text\n\n{}", line.repeat(MAX_SIGNATURES));
        assert!(SignedNote::parse(hundred.as_bytes()).is_ok());
    }

    #[test]
    fn new_and_sign_refuse_bad_input() {
        let key = SecretKey::from_seed(&[4; 32]);
        assert_eq!(SignedNote::new("x"), Err(NoteError::TextMissingNewline));
        assert_eq!(SignedNote::new(""), Err(NoteError::TextMissingNewline));
        assert!(matches!(
            SignedNote::new("a\u{1b}b\n"),
            Err(NoteError::ControlCharacter { .. })
        ));
        let mut note = SignedNote::new("x\n").unwrap();
        for bad in ["", "a b", "a+b", "a\u{a0}b", "a\nb"] {
            assert!(matches!(
                note.sign(bad, &key),
                Err(NoteError::InvalidKeyName(_))
            ));
        }
        assert!(note.signatures().is_empty());
        let empty = NoteSignature {
            name: "k".into(),
            key_id: [0; 4],
            signature: vec![],
        };
        assert!(note.add_signature(empty).is_err());
        let huge = NoteSignature {
            name: "k".into(),
            key_id: [0; 4],
            signature: vec![0; MAX_NOTE_SIZE],
        };
        assert!(matches!(
            note.add_signature(huge),
            Err(NoteError::TooLarge { .. })
        ));
        for i in 0..MAX_SIGNATURES {
            note.sign(&format!("k{i}"), &key).unwrap();
        }
        assert!(matches!(
            note.sign("one-more", &key),
            Err(NoteError::TooManySignatures { .. })
        ));
        // Re-signing by a key already present still works at the limit.
        note.sign("k0", &key).unwrap();
        assert_eq!(note.signatures().len(), MAX_SIGNATURES);
        assert!(SignedNote::parse(note.to_text().as_bytes()).is_ok());
    }
}
