//! C2SP transparency-log checkpoints (<https://c2sp.org/tlog-checkpoint>): the signed tree head
//! of an agency's audit log.
//!
//! A checkpoint is a [signed note](crate::note) whose text is
//!
//! ```text
//! <origin>
//! <tree size, decimal, no leading zeros>
//! <root hash, base64>
//! [extension lines...]
//! ```
//!
//! every line ending in a newline, none empty. The log signs it with its Ed25519 key; witnesses
//! add cosignature lines (see [`crate::witness`]). Parsing is strict, so a parsed checkpoint
//! re-serialises to exactly the text that was signed; signatures are nonetheless always checked
//! over the text received.
//!
//! Throughgate's convention for an agency's audit-log origin is
//! `<federation host>/<agency id>/audit` (see [`audit_origin`]), used as the log key's name too.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::ids::AgencyId;
use crate::keys::{PublicKey, SecretKey};
use crate::merkle::Hash;
use crate::note::{NoteError, NoteSignature, SignedNote};

/// Why a checkpoint is malformed, unsigned or from the wrong log.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The signed-note layer refused it (format, size, signature).
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The checkpoint text does not end with a newline.
    #[error("the checkpoint text must end with a newline")]
    MissingNewline,
    /// Fewer than the three mandatory lines (origin, size, root hash).
    #[error("a checkpoint has at least 3 lines; this one has {0}")]
    TooFewLines(usize),
    /// The origin line is empty.
    #[error("the origin line is empty")]
    EmptyOrigin,
    /// The origin or an extension line contains a newline or another control character.
    #[error("line {line} contains a control character")]
    ControlCharacter {
        /// The line number, from 1.
        line: usize,
    },
    /// An empty line inside the checkpoint text (extension lines must be non-empty).
    #[error("line {0} of the checkpoint is empty")]
    EmptyLine(usize),
    /// The tree size is not a decimal number without leading zeros that fits in 64 bits.
    #[error("the tree size {0:?} is not a decimal number without leading zeros")]
    InvalidSize(String),
    /// The root hash is not the canonical base64 of exactly 32 bytes.
    #[error("the root hash {0:?} is not base64 of 32 bytes")]
    InvalidRootHash(String),
    /// The checkpoint is for a different log than expected.
    #[error("checkpoint origin is {got:?}, expected {expected:?}")]
    WrongOrigin {
        expected: String,
        /// The origin in the checkpoint.
        got: String,
    },
}

/// The Throughgate origin (and log key name) of an agency's audit log:
/// `<host>/<agency id>/audit`, e.g. `throughgate.example/hmp-leeds/audit`.
pub fn audit_origin(host: &str, agency: &AgencyId) -> String {
    format!("{host}/{agency}/audit")
}

/// A log's tree head: origin, size, root hash and optional extension lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, e.g. `throughgate.example/hmp-leeds/audit`.
    pub origin: String,
    /// The number of leaves in the tree.
    pub size: u64,
    /// The RFC 6962 root hash of the tree at that size.
    pub root_hash: Hash,
    /// Extension lines (without newlines), opaque and usually empty.
    pub extensions: Vec<String>,
}

fn truncated(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Checks one line: non-empty, no control characters (so in particular no newline).
fn check_line(line_no: usize, line: &str) -> Result<(), CheckpointError> {
    if line.is_empty() {
        return Err(if line_no == 1 {
            CheckpointError::EmptyOrigin
        } else {
            CheckpointError::EmptyLine(line_no)
        });
    }
    if line.chars().any(|c| c < ' ') {
        return Err(CheckpointError::ControlCharacter { line: line_no });
    }
    Ok(())
}

fn parse_size(s: &str) -> Result<u64, CheckpointError> {
    let bad = || CheckpointError::InvalidSize(truncated(s));
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return Err(bad());
    }
    s.parse().map_err(|_| bad())
}

fn parse_root(s: &str) -> Result<Hash, CheckpointError> {
    let bad = || CheckpointError::InvalidRootHash(truncated(s));
    // The standard engine refuses missing or extra padding and non-zero trailing bits, so only
    // the one canonical spelling of each hash is accepted.
    let raw = B64.decode(s).map_err(|_| bad())?;
    raw.as_slice().try_into().map_err(|_| bad())
}

impl Checkpoint {
    /// A checkpoint without extension lines.
    pub fn new(origin: impl Into<String>, size: u64, root_hash: Hash) -> Checkpoint {
        Checkpoint {
            origin: origin.into(),
            size,
            root_hash,
            extensions: Vec::new(),
        }
    }

    /// Checks the origin and extension lines can be written as a checkpoint.
    pub fn validate(&self) -> Result<(), CheckpointError> {
        check_line(1, &self.origin)?;
        for (i, ext) in self.extensions.iter().enumerate() {
            check_line(i + 4, ext)?;
        }
        Ok(())
    }

    /// The note text: origin, size, base64 root hash and extension lines, each newline-ended.
    /// Call [`Checkpoint::validate`] first if the fields come from elsewhere; signing does.
    pub fn to_note_text(&self) -> String {
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root_hash)
        );
        for ext in &self.extensions {
            out.push_str(ext);
            out.push('\n');
        }
        out
    }

    /// Parses a checkpoint from note text (a [`SignedNote::text`]), strictly: at least three
    /// lines, no empty line, a decimal size without leading zeros, and the canonical base64 of
    /// a 32-byte root hash.
    pub fn from_note_text(text: &str) -> Result<Checkpoint, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::MissingNewline)?;
        let lines: Vec<&str> = body.split('\n').collect();
        let [origin, size, root, extensions @ ..] = lines.as_slice() else {
            return Err(CheckpointError::TooFewLines(lines.len()));
        };
        for (i, line) in lines.iter().enumerate() {
            check_line(i + 1, line)?;
        }
        Ok(Checkpoint {
            origin: (*origin).to_owned(),
            size: parse_size(size)?,
            root_hash: parse_root(root)?,
            extensions: extensions.iter().map(|s| (*s).to_owned()).collect(),
        })
    }

    /// Signs the checkpoint with the log's key, named `key_name` (by convention the origin).
    pub fn sign(
        &self,
        key_name: &str,
        key: &SecretKey,
    ) -> Result<SignedCheckpoint, CheckpointError> {
        SignedCheckpoint::sign(self.clone(), key_name, key)
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_note_text())
    }
}

/// A checkpoint together with its signed note (the log's signature and any cosignatures).
///
/// The note's text is always exactly the checkpoint's text: both are built together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    checkpoint: Checkpoint,
    note: SignedNote,
}

impl SignedCheckpoint {
    /// Builds the note for `checkpoint` and signs it with the log's key named `key_name`.
    pub fn sign(
        checkpoint: Checkpoint,
        key_name: &str,
        key: &SecretKey,
    ) -> Result<SignedCheckpoint, CheckpointError> {
        checkpoint.validate()?;
        let mut note = SignedNote::new(checkpoint.to_note_text())?;
        note.sign(key_name, key)?;
        Ok(SignedCheckpoint { checkpoint, note })
    }

    /// Parses a signed checkpoint (signatures unverified), within the signed-note limits.
    pub fn parse(input: &[u8]) -> Result<SignedCheckpoint, CheckpointError> {
        let note = SignedNote::parse(input)?;
        SignedCheckpoint::from_note(note)
    }

    /// Reads the checkpoint out of an already-parsed note.
    pub fn from_note(note: SignedNote) -> Result<SignedCheckpoint, CheckpointError> {
        let checkpoint = Checkpoint::from_note_text(note.text())?;
        Ok(SignedCheckpoint { checkpoint, note })
    }

    /// Parses, checks the origin is `origin`, and verifies the log's signature by `key` under
    /// `key_name`: what a node does with a checkpoint received from another node.
    pub fn open(
        input: &[u8],
        origin: &str,
        key_name: &str,
        key: &PublicKey,
    ) -> Result<SignedCheckpoint, CheckpointError> {
        let signed = SignedCheckpoint::parse(input)?;
        if signed.checkpoint.origin != origin {
            return Err(CheckpointError::WrongOrigin {
                expected: truncated(origin),
                got: truncated(&signed.checkpoint.origin),
            });
        }
        signed.verify(key_name, key)?;
        Ok(signed)
    }

    /// Verifies the log's Ed25519 signature by `key` named `key_name`, over the text received.
    /// Lines by other keys (such as witness cosignatures) are ignored.
    pub fn verify(&self, key_name: &str, key: &PublicKey) -> Result<(), CheckpointError> {
        self.verify_cached(key_name, key, None)
    }

    /// [`SignedCheckpoint::verify`], remembering successes in `cache`.
    pub fn verify_cached(
        &self,
        key_name: &str,
        key: &PublicKey,
        cache: Option<&crate::sigcache::SigCache>,
    ) -> Result<(), CheckpointError> {
        self.note
            .verify_cached(key_name, key, cache)
            .map_err(CheckpointError::from)
    }

    /// The checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The signed note (text and every signature line).
    pub fn note(&self) -> &SignedNote {
        &self.note
    }

    /// Adds a signature line, e.g. a witness cosignature from [`crate::witness::cosign`].
    pub fn add_signature(&mut self, sig: NoteSignature) -> Result<(), CheckpointError> {
        self.note.add_signature(sig).map_err(CheckpointError::from)
    }

    /// The whole signed note as text.
    pub fn to_text(&self) -> String {
        self.note.to_text()
    }
}

impl fmt::Display for SignedCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle;

    const SPEC_TEXT: &str = "example.com/behind-the-sofa\n20852163\n\
                             CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

    #[test]
    fn parses_the_spec_example_and_round_trips() {
        let c = Checkpoint::from_note_text(SPEC_TEXT).unwrap();
        assert_eq!(c.origin, "example.com/behind-the-sofa");
        assert_eq!(c.size, 20852163);
        assert!(c.extensions.is_empty());
        assert_eq!(c.to_note_text(), SPEC_TEXT);

        let with_ext = format!("{SPEC_TEXT}ext one\nanother\n");
        let c = Checkpoint::from_note_text(&with_ext).unwrap();
        assert_eq!(c.extensions, vec!["ext one", "another"]);
        assert_eq!(c.to_note_text(), with_ext);

        // The spec's example signed checkpoint parses (its key is not published).
        let signed = format!(
            "{SPEC_TEXT}\n\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
        );
        let s = SignedCheckpoint::parse(signed.as_bytes()).unwrap();
        assert_eq!(s.checkpoint().size, 20852163);
        assert_eq!(s.to_text(), signed);
    }

    #[test]
    fn strict_parsing() {
        let root = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=";
        let bad = [
            format!("o\n1\n{root}"),                      // no final newline
            "o\n1\n".to_owned(),                          // two lines
            format!("\n1\n{root}\n"),                     // empty origin
            format!("o\n01\n{root}\n"),                   // leading zero
            format!("o\n+1\n{root}\n"),                   // sign
            format!("o\n 1\n{root}\n"),                   // space
            format!("o\n1.0\n{root}\n"),                  // not an integer
            format!("o\n\n{root}\n"),                     // empty size
            format!("o\n18446744073709551616\n{root}\n"), // 2^64
            "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n".to_owned(), // unpadded
            "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=\n".to_owned(), // trailing bits
            "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jx\n".to_owned(), // 30 bytes
            "o\n1\nCsUYapGGPo4dkMgIAUqom_Xajj7h2fB2MPA3j2jxq2I=\n".to_owned(), // URL alphabet
            format!("o\n1\n{root}\n\n"),                  // blank line after the body
            format!("o\n1\n{root}\n\next\n"),             // blank extension line
            format!("o\n1\n{root}\ne\rx\n"),              // control character
        ];
        for text in bad {
            assert!(Checkpoint::from_note_text(&text).is_err(), "{text:?}");
        }
        assert_eq!(
            Checkpoint::from_note_text(&format!("o\n0\n{root}\n"))
                .unwrap()
                .size,
            0
        );
        assert_eq!(
            Checkpoint::from_note_text(&format!("o\n18446744073709551615\n{root}\n"))
                .unwrap()
                .size,
            u64::MAX
        );
    }

    #[test]
    fn sign_open_and_reject() {
        let agency = AgencyId::new("hmp-leeds").unwrap();
        let origin = audit_origin("throughgate.example", &agency);
        assert_eq!(origin, "throughgate.example/hmp-leeds/audit");
        let key = SecretKey::from_seed(&[9; 32]);
        let leaves: Vec<_> = (0u8..5).map(|i| merkle::leaf_hash(&[i])).collect();
        let c = Checkpoint::new(&origin, 5, merkle::root_from_leaves(&leaves));
        let signed = c.sign(&origin, &key).unwrap();
        let text = signed.to_text();

        let opened =
            SignedCheckpoint::open(text.as_bytes(), &origin, &origin, &key.public()).unwrap();
        assert_eq!(opened.checkpoint(), &c);
        assert_eq!(opened, signed);

        assert!(matches!(
            SignedCheckpoint::open(text.as_bytes(), "other/log", &origin, &key.public()),
            Err(CheckpointError::WrongOrigin { .. })
        ));
        let other = SecretKey::from_seed(&[10; 32]);
        assert!(matches!(
            SignedCheckpoint::open(text.as_bytes(), &origin, &origin, &other.public()),
            Err(CheckpointError::Note(NoteError::MissingSignature { .. }))
        ));
        // Changing the size breaks the signature.
        let forged = text.replacen("\n5\n", "\n6\n", 1);
        assert!(matches!(
            SignedCheckpoint::open(forged.as_bytes(), &origin, &origin, &key.public()),
            Err(CheckpointError::Note(NoteError::BadSignature { .. }))
        ));

        // Fields that cannot be written are refused when signing.
        let mut bad = c.clone();
        bad.origin = "two\nlines".into();
        assert!(bad.sign("k", &key).is_err());
        let mut bad = c.clone();
        bad.extensions.push(String::new());
        assert!(bad.sign("k", &key).is_err());
        assert!(matches!(
            c.sign("has space", &key),
            Err(CheckpointError::Note(NoteError::InvalidKeyName(_)))
        ));
    }
}
