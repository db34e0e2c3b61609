//! Witness cosignatures on checkpoints: C2SP tlog-cosignature, Ed25519 `cosignature/v1`
//! (<https://c2sp.org/tlog-cosignature>).
//!
//! A witness that has checked a checkpoint is consistent with everything it saw before signs
//!
//! ```text
//! cosignature/v1
//! time <POSIX seconds, decimal, no leading zeros>
//! <the checkpoint's note text, with its final newline>
//! ```
//!
//! with Ed25519, and the cosignature is added to the checkpoint's note as the line
//!
//! ```text
//! — <witness name> base64(key ID (4) || timestamp (8, big-endian) || signature (64))
//! ```
//!
//! where the key ID is `SHA-256(name || "\n" || 0x04 || public key)[:4]`: signature type 0x04,
//! so a witness key's cosignatures can never be confused with plain note signatures by the same
//! key. The statement is: "as of this time, this is the largest consistent tree head I have
//! seen for this log". The message does not commit to the witness's name, so one key must
//! never serve two witnesses. Extension lines are signed but carry no witness statement.
//!
//! Verifiers may refuse timestamps in the future; this crate never reads a clock, so the
//! verification functions return the timestamp for the caller to compare with its own time.

use crate::checkpoint::{Checkpoint, CheckpointError, SignedCheckpoint};
use crate::keys::{PublicKey, SecretKey};
use crate::note::{self, NoteError, NoteSignature, VerifierKey, SIG_TYPE_COSIGNATURE_V1};

/// The header line of the cosigned message (its domain separation).
pub const COSIGNATURE_V1_HEADER: &str = "cosignature/v1";
/// The largest timestamp allowed, 2^63 - 1.
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;
/// Bytes of a cosignature after the key ID: an 8-byte timestamp and a 64-byte signature.
pub const COSIGNATURE_LEN: usize = 8 + 64;

/// Why a cosignature cannot be made or does not verify.
#[allow(missing_docs)] // variant fields are named by the #[error] message
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessError {
    /// The checkpoint cannot be written or parsed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The signed-note layer refused: an invalid witness name, or a verifier key that is not
    /// of the cosignature type.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The timestamp is above 2^63 - 1.
    #[error("timestamp {0} is above 2^63 - 1")]
    TimestampTooLarge(u64),
    /// No cosignature line by this witness (matching name and type-0x04 key ID).
    #[error("no cosignature by witness {name}")]
    MissingCosignature {
        /// The witness name looked for.
        name: String,
    },
    /// A cosignature line by this witness is not 72 bytes after the key ID.
    #[error("the cosignature by witness {name} is {len} bytes after the key ID; 72 expected")]
    MalformedCosignature { name: String, len: usize },
    /// A cosignature line by this witness does not verify.
    #[error("the cosignature by witness {name} does not verify")]
    BadCosignature { name: String },
    /// Fewer distinct witnesses cosigned validly than the policy requires.
    #[error("{valid} valid witness cosignatures; {threshold} required")]
    BelowThreshold { valid: usize, threshold: usize },
}

/// The key ID of a witness's cosignature key: `SHA-256(name || 0x0A || 0x04 || key)[:4]`.
pub fn cosignature_key_id(witness_name: &str, key: &PublicKey) -> [u8; 4] {
    note::key_id(witness_name, SIG_TYPE_COSIGNATURE_V1, key.as_bytes())
}

/// The exact bytes a `cosignature/v1` signature covers, for a checkpoint's note text.
pub fn cosigned_message(checkpoint_text: &str, timestamp: u64) -> Vec<u8> {
    format!("{COSIGNATURE_V1_HEADER}\ntime {timestamp}\n{checkpoint_text}").into_bytes()
}

/// A cosignature by `key`, named `witness_name`, over the checkpoint's note text at
/// `timestamp` (POSIX seconds), as a note signature line to add to the signed checkpoint.
///
/// The caller (the witness) must first have checked the checkpoint's log signature and its
/// consistency with the last checkpoint it cosigned for that origin.
pub fn cosign(
    checkpoint: &Checkpoint,
    witness_name: &str,
    key: &SecretKey,
    timestamp: u64,
) -> Result<NoteSignature, WitnessError> {
    checkpoint.validate()?;
    cosign_text(&checkpoint.to_note_text(), witness_name, key, timestamp)
}

/// Like [`cosign`], over note text exactly as received (e.g. [`SignedCheckpoint::note`]'s text).
pub fn cosign_text(
    checkpoint_text: &str,
    witness_name: &str,
    key: &SecretKey,
    timestamp: u64,
) -> Result<NoteSignature, WitnessError> {
    if !note::is_valid_key_name(witness_name) {
        return Err(NoteError::InvalidKeyName(witness_name.chars().take(80).collect()).into());
    }
    if timestamp > MAX_TIMESTAMP {
        return Err(WitnessError::TimestampTooLarge(timestamp));
    }
    let sig = key.sign(&cosigned_message(checkpoint_text, timestamp));
    let mut signature = Vec::with_capacity(COSIGNATURE_LEN);
    signature.extend_from_slice(&timestamp.to_be_bytes());
    signature.extend_from_slice(&sig);
    Ok(NoteSignature {
        name: witness_name.to_owned(),
        key_id: cosignature_key_id(witness_name, &key.public()),
        signature,
    })
}

/// Verifies one cosignature line over `checkpoint_text` by the witness `witness_name` with
/// `key`, returning its timestamp. The line's name and key ID must match the witness.
pub fn verify_cosignature(
    checkpoint_text: &str,
    sig: &NoteSignature,
    witness_name: &str,
    key: &PublicKey,
) -> Result<u64, WitnessError> {
    verify_cosignature_cached(checkpoint_text, sig, witness_name, key, None)
}

/// [`verify_cosignature`], remembering verified signatures in `cache` (the same cosignature
/// comes back on every response carrying that checkpoint).
pub fn verify_cosignature_cached(
    checkpoint_text: &str,
    sig: &NoteSignature,
    witness_name: &str,
    key: &PublicKey,
    cache: Option<&crate::sigcache::SigCache>,
) -> Result<u64, WitnessError> {
    if sig.name != witness_name || sig.key_id != cosignature_key_id(witness_name, key) {
        return Err(WitnessError::MissingCosignature {
            name: witness_name.to_owned(),
        });
    }
    let malformed = || WitnessError::MalformedCosignature {
        name: witness_name.to_owned(),
        len: sig.signature.len(),
    };
    if sig.signature.len() != COSIGNATURE_LEN {
        return Err(malformed());
    }
    let (ts, ed) = sig.signature.split_at(8);
    let timestamp = u64::from_be_bytes(ts.try_into().map_err(|_| malformed())?);
    let ed: &[u8; 64] = ed.try_into().map_err(|_| malformed())?;
    if timestamp > MAX_TIMESTAMP {
        return Err(WitnessError::TimestampTooLarge(timestamp));
    }
    if crate::sigcache::verify_strict(
        cache,
        key,
        &cosigned_message(checkpoint_text, timestamp),
        ed,
    ) {
        Ok(timestamp)
    } else {
        Err(WitnessError::BadCosignature {
            name: witness_name.to_owned(),
        })
    }
}

/// Verifies the cosignature of witness `witness_name` with `key` on a signed checkpoint, over
/// the note text received, and returns its timestamp.
///
/// Other lines are ignored. Every line by this witness must verify; if there are several, the
/// latest timestamp is returned.
pub fn verify_cosigned(
    signed: &SignedCheckpoint,
    witness_name: &str,
    key: &PublicKey,
) -> Result<u64, WitnessError> {
    verify_cosigned_cached(signed, witness_name, key, None)
}

/// [`verify_cosigned`], remembering verified cosignatures in `cache`.
pub fn verify_cosigned_cached(
    signed: &SignedCheckpoint,
    witness_name: &str,
    key: &PublicKey,
    cache: Option<&crate::sigcache::SigCache>,
) -> Result<u64, WitnessError> {
    let id = cosignature_key_id(witness_name, key);
    let text = signed.note().text();
    let mut latest: Option<u64> = None;
    for sig in signed.note().signatures_by(witness_name, id) {
        let t = verify_cosignature_cached(text, sig, witness_name, key, cache)?;
        latest = Some(latest.map_or(t, |l| l.max(t)));
    }
    latest.ok_or_else(|| WitnessError::MissingCosignature {
        name: witness_name.to_owned(),
    })
}

/// Like [`verify_cosigned`], for a witness configured as a verifier key, which must be of
/// signature type 0x04 ([`SIG_TYPE_COSIGNATURE_V1`]).
pub fn verify_cosigned_vkey(
    signed: &SignedCheckpoint,
    vkey: &VerifierKey,
) -> Result<u64, WitnessError> {
    if vkey.sig_type != SIG_TYPE_COSIGNATURE_V1 {
        return Err(NoteError::UnsupportedSignatureType(vkey.sig_type).into());
    }
    verify_cosigned(signed, &vkey.name, &vkey.key)
}

/// Counts the witnesses in `witnesses` (name and key) that validly cosigned `signed`, and
/// requires at least `threshold` (which must be at least 1). A witness listed twice counts once;
/// an invalid line by a listed witness is an error, as the signed-note rules ask.
pub fn verify_cosignature_threshold(
    signed: &SignedCheckpoint,
    witnesses: &[(&str, PublicKey)],
    threshold: usize,
) -> Result<usize, WitnessError> {
    let mut counted: Vec<(&str, PublicKey)> = Vec::new();
    for &(name, key) in witnesses {
        if counted.iter().any(|&(n, k)| n == name && k == key) {
            continue;
        }
        match verify_cosigned(signed, name, &key) {
            Ok(_) => counted.push((name, key)),
            Err(WitnessError::MissingCosignature { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    if threshold == 0 || counted.len() < threshold {
        return Err(WitnessError::BelowThreshold {
            valid: counted.len(),
            threshold,
        });
    }
    Ok(counted.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::SignedNote;

    const TEXT: &str = "example.com/behind-the-sofa\n20852163\n\
                        CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";

    fn signed_checkpoint() -> (SignedCheckpoint, SecretKey) {
        let log = SecretKey::from_seed(&[1; 32]);
        let c = Checkpoint::from_note_text(TEXT).unwrap();
        (c.sign("example.com/behind-the-sofa", &log).unwrap(), log)
    }

    #[test]
    fn message_matches_the_spec_example() {
        assert_eq!(
            cosigned_message(TEXT, 1679315147),
            b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n\
              CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
        );
        assert!(cosigned_message(TEXT, 0).starts_with(b"cosignature/v1\ntime 0\n"));
    }

    #[test]
    fn the_spec_example_line_has_the_right_shape() {
        // From c2sp.org/tlog-cosignature: key ID, then the timestamp 1679315147, then 64 bytes.
        let note = format!(
            "{TEXT}\n\u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
        );
        let n = SignedNote::parse(note.as_bytes()).unwrap();
        let sig = &n.signatures()[0];
        assert_eq!(sig.signature.len(), COSIGNATURE_LEN);
        assert_eq!(
            u64::from_be_bytes(sig.signature[..8].try_into().unwrap()),
            1679315147
        );
    }

    #[test]
    fn cosign_and_verify() {
        let (mut signed, log) = signed_checkpoint();
        let w1 = SecretKey::from_seed(&[21; 32]);
        let w2 = SecretKey::from_seed(&[22; 32]);
        let line1 = cosign(signed.checkpoint(), "w1.example", &w1, 1_700_000_000).unwrap();
        assert_eq!(line1.key_id, cosignature_key_id("w1.example", &w1.public()));
        assert_eq!(
            line1.key_id,
            VerifierKey::cosignature_v1("w1.example", w1.public())
                .unwrap()
                .key_id()
        );
        assert_ne!(
            line1.key_id,
            note::ed25519_key_id("w1.example", &w1.public())
        );
        signed.add_signature(line1).unwrap();
        let line2 = cosign_text(signed.note().text(), "w2.example", &w2, 1_700_000_005).unwrap();
        signed.add_signature(line2).unwrap();

        // Through text and back.
        let parsed = SignedCheckpoint::parse(signed.to_text().as_bytes()).unwrap();
        parsed
            .verify("example.com/behind-the-sofa", &log.public())
            .unwrap();
        assert_eq!(
            verify_cosigned(&parsed, "w1.example", &w1.public()),
            Ok(1_700_000_000)
        );
        assert_eq!(
            verify_cosigned(&parsed, "w2.example", &w2.public()),
            Ok(1_700_000_005)
        );
        let vkey = VerifierKey::cosignature_v1("w2.example", w2.public()).unwrap();
        let vkey = VerifierKey::parse(&vkey.to_string()).unwrap();
        assert_eq!(verify_cosigned_vkey(&parsed, &vkey), Ok(1_700_000_005));
        let plain = VerifierKey::ed25519("w2.example", w2.public()).unwrap();
        assert!(verify_cosigned_vkey(&parsed, &plain).is_err());
        // Wrong key or name: no cosignature by that witness.
        assert!(matches!(
            verify_cosigned(&parsed, "w1.example", &w2.public()),
            Err(WitnessError::MissingCosignature { .. })
        ));
        assert!(matches!(
            verify_cosigned(&parsed, "w3.example", &w1.public()),
            Err(WitnessError::MissingCosignature { .. })
        ));
        // A cosignature is not a log signature, even by the same key under the same name.
        assert!(parsed.verify("w1.example", &w1.public()).is_err());

        let ws = [
            ("w1.example", w1.public()),
            ("w2.example", w2.public()),
            ("w1.example", w1.public()),
            ("w3.example", SecretKey::from_seed(&[23; 32]).public()),
        ];
        assert_eq!(verify_cosignature_threshold(&parsed, &ws, 2), Ok(2));
        assert!(matches!(
            verify_cosignature_threshold(&parsed, &ws, 3),
            Err(WitnessError::BelowThreshold { valid: 2, .. })
        ));
        assert!(verify_cosignature_threshold(&parsed, &ws, 0).is_err());
    }

    #[test]
    fn a_cached_cosignature_is_verified_once_and_a_changed_one_still_fails() {
        let (mut signed, _) = signed_checkpoint();
        let w = SecretKey::from_seed(&[31; 32]);
        let line = cosign(signed.checkpoint(), "w.example", &w, 1234).unwrap();
        signed.add_signature(line.clone()).unwrap();
        let cache = crate::sigcache::SigCache::default();
        let check = |s: &SignedCheckpoint| {
            verify_cosigned_cached(s, "w.example", &w.public(), Some(&cache))
        };
        assert_eq!(check(&signed).unwrap(), 1234);
        assert_eq!(cache.len(), 1, "remembered");
        assert_eq!(check(&signed).unwrap(), 1234);
        assert_eq!(cache.len(), 1, "answered from the cache");
        // Other bytes are never answered from the cache: a moved timestamp fails.
        let mut moved = line;
        moved.signature[7] ^= 1;
        assert!(matches!(
            verify_cosignature_cached(
                signed.note().text(),
                &moved,
                "w.example",
                &w.public(),
                Some(&cache)
            ),
            Err(WitnessError::BadCosignature { .. })
        ));
    }

    #[test]
    fn tampering_is_detected() {
        let (mut signed, _) = signed_checkpoint();
        let w = SecretKey::from_seed(&[30; 32]);
        let line = cosign(signed.checkpoint(), "w.example", &w, 1234).unwrap();
        signed.add_signature(line.clone()).unwrap();
        let text = signed.to_text();

        // A different timestamp in the line (signature unchanged).
        let mut moved = line.clone();
        moved.signature[7] ^= 1;
        assert!(matches!(
            verify_cosignature(signed.note().text(), &moved, "w.example", &w.public()),
            Err(WitnessError::BadCosignature { .. })
        ));
        // A different checkpoint.
        let other = text.replacen("20852163", "20852164", 1);
        let other = SignedCheckpoint::parse(other.as_bytes()).unwrap();
        assert!(matches!(
            verify_cosigned(&other, "w.example", &w.public()),
            Err(WitnessError::BadCosignature { .. })
        ));
        // Wrong length after the key ID.
        let mut short = line.clone();
        short.signature.pop();
        assert!(matches!(
            verify_cosignature(signed.note().text(), &short, "w.example", &w.public()),
            Err(WitnessError::MalformedCosignature { len: 71, .. })
        ));
        // Timestamps above 2^63 - 1 are refused both ways.
        assert!(matches!(
            cosign(signed.checkpoint(), "w.example", &w, MAX_TIMESTAMP + 1),
            Err(WitnessError::TimestampTooLarge(_))
        ));
        let mut future = line;
        future.signature[..8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(
            verify_cosignature(signed.note().text(), &future, "w.example", &w.public()),
            Err(WitnessError::TimestampTooLarge(_))
        ));
        assert!(cosign(signed.checkpoint(), "bad name", &w, 1).is_err());
    }
}
