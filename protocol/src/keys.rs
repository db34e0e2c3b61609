//! Ed25519 keys: node keys, staff keys and governance keys are all this one type.

use std::fmt;
use std::sync::atomic::Ordering;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// An Ed25519 public key, 32 bytes (a CBOR byte string on the wire, hex in text).
///
/// Holds the point already decompressed and checked, so that verifying a signature does not
/// decode the key again. Equality, order and hashing are over the 32 bytes.
#[derive(Clone, Copy)]
pub struct PublicKey(VerifyingKey);

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes() == other.0.as_bytes()
    }
}

impl Eq for PublicKey {}

impl PartialOrd for PublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PublicKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.as_bytes().cmp(other.0.as_bytes())
    }
}

impl std::hash::Hash for PublicKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.as_bytes().hash(state);
    }
}

/// A key that does not parse or is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is not 64 hex digits.
    #[error("a public key is 64 hex digits; got {0} characters")]
    HexLength(usize),
    /// The bytes are not a valid Ed25519 point, or a weak (small-order) one.
    #[error("not a valid Ed25519 public key (invalid or small-order point)")]
    InvalidPoint,
    /// A byte string of the wrong length.
    #[error("a public key is 32 bytes; got {0}")]
    ByteLength(usize),
}

impl PublicKey {
    /// Wraps 32 bytes, checking they are a usable (valid, not small-order) Ed25519 point.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<PublicKey, KeyError> {
        if let Some(vk) = decoded::get(&bytes) {
            return Ok(PublicKey(vk));
        }
        let vk = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::InvalidPoint)?;
        if vk.is_weak() {
            return Err(KeyError::InvalidPoint);
        }
        decoded::put(vk);
        Ok(PublicKey(vk))
    }

    /// Parses a key from a byte slice of length 32.
    pub fn from_slice(bytes: &[u8]) -> Result<PublicKey, KeyError> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::ByteLength(bytes.len()))?;
        PublicKey::from_bytes(arr)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<PublicKey, KeyError> {
        let s = s.trim();
        if s.len() != 64 {
            return Err(KeyError::HexLength(s.len()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| KeyError::HexLength(s.len()))?;
        PublicKey::from_bytes(out)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// A short fingerprint for people and logs: the first 8 bytes of SHA-256 of the key, hex.
    pub fn fingerprint(&self) -> String {
        let d = Sha256::digest(self.0.as_bytes());
        hex::encode(d.get(..8).unwrap_or_default())
    }

    /// Verifies a signature strictly (rejects malleable and small-order forms).
    pub fn verify_strict(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        counts::VERIFIES.fetch_add(1, Ordering::Relaxed);
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.0.verify_strict(message, &sig).is_ok()
    }

    /// The decoded dalek verifying key.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.0
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::str::FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        PublicKey::from_hex(s)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            s.serialize_bytes(self.0.as_bytes())
        }
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            PublicKey::from_hex(&s).map_err(serde::de::Error::custom)
        } else {
            let b: serde_bytes::ByteBuf = serde_bytes::ByteBuf::deserialize(d)?;
            PublicKey::from_slice(&b).map_err(serde::de::Error::custom)
        }
    }
}

/// Keys already decoded, remembered by their exact 32 bytes.
///
/// Decoding a key (decompressing the point and checking it is not of small order) costs about
/// as much as a fifth of a signature verification, and every envelope, credential and stored
/// consent carries keys that a node has seen many times before (its peers' node keys, its
/// caseworkers' keys). Decoding is a pure function of the bytes, so a remembered result is the
/// result: a hit requires the stored key's bytes to equal the bytes being decoded, and only keys
/// that passed both checks are remembered. The table is small and direct-mapped; a collision
/// evicts, which costs a decode and changes nothing else.
mod decoded {
    use std::sync::Mutex;

    use ed25519_dalek::VerifyingKey;

    /// Slots in the table (a power of two).
    const SLOTS: usize = 256;

    static TABLE: [Mutex<Option<VerifyingKey>>; SLOTS] = [const { Mutex::new(None) }; SLOTS];

    fn slot(bytes: &[u8; 32]) -> Option<&'static Mutex<Option<VerifyingKey>>> {
        let mut h = 0u64;
        for b in bytes.iter().take(8) {
            h = (h << 8) | u64::from(*b);
        }
        let i = (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize;
        TABLE.get(i % SLOTS)
    }

    /// The decoded key whose encoding is exactly `bytes`, if remembered.
    pub(super) fn get(bytes: &[u8; 32]) -> Option<VerifyingKey> {
        let entry = slot(bytes)?.lock().ok()?;
        entry.filter(|vk| vk.as_bytes() == bytes)
    }

    /// Remembers a key that decoded and passed the small-order check.
    pub(super) fn put(vk: VerifyingKey) {
        if let Some(Ok(mut entry)) = slot(vk.as_bytes()).map(Mutex::lock) {
            *entry = Some(vk);
        }
    }
}

/// Process-wide counts of signatures made and verified through this crate, for benchmarks
/// that report the signature work a passport really costs. Counting only; nothing depends on
/// them.
pub mod counts {
    use std::sync::atomic::{AtomicU64, Ordering};

    pub(super) static SIGNS: AtomicU64 = AtomicU64::new(0);
    pub(super) static VERIFIES: AtomicU64 = AtomicU64::new(0);

    /// Signatures made and signatures verified (cache hits excluded) so far in this process.
    pub fn get() -> (u64, u64) {
        (
            SIGNS.load(Ordering::Relaxed),
            VERIFIES.load(Ordering::Relaxed),
        )
    }
}

/// An Ed25519 signing key. Never serialised by this crate; key files are the node's concern.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A fresh key from operating-system randomness.
    pub fn generate() -> SecretKey {
        SecretKey(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// A key from a 32-byte seed (deterministic: for tests, vectors and synthetic data).
    pub fn from_seed(seed: &[u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(seed))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs a message (the caller builds the domain-separated message).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        counts::SIGNS.fetch_add(1, Ordering::Relaxed);
        self.0.sign(message).to_bytes()
    }

    /// The 32-byte seed, for writing a key file.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The dalek signing key (for PKCS#8 export in the node crate).
    pub fn signing_key(&self) -> &SigningKey {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public().fingerprint())
    }
}

/// A 64-byte Ed25519 signature as a CBOR byte string.
pub mod sig_bytes {
    use serde::{Deserializer, Serializer};

    /// Serialises a signature as a byte string (hex when human-readable).
    pub fn serialize<S: Serializer>(sig: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        super::fixed_bytes::serialize(sig, s)
    }

    /// Deserialises a byte string (hex when human-readable) of exactly 64 bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        super::fixed_bytes::deserialize(d)
    }
}

/// A fixed-size byte array (hashes, salts, nonces): a CBOR byte string on the wire, lowercase
/// hex in human-readable formats (the CLI's `--json`), so people read digests, not number lists.
pub mod fixed_bytes {
    use serde::{Deserializer, Serializer};

    /// Serialises the array as a byte string, or hex when the format is human-readable.
    pub fn serialize<S: Serializer, const N: usize>(b: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(b))
        } else {
            s.serialize_bytes(b)
        }
    }

    /// Deserialises exactly N bytes: a byte string, or hex when the format is human-readable.
    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let b = super::vec_bytes::deserialize(d)?;
        b.as_slice()
            .try_into()
            .map_err(|_| serde::de::Error::invalid_length(b.len(), &"a fixed-length byte string"))
    }
}

/// A variable-length byte string (envelope bodies, log entries): CBOR bytes on the wire, hex in
/// human-readable formats.
pub mod vec_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises the bytes as a byte string, or hex when the format is human-readable.
    pub fn serialize<S: Serializer, T: AsRef<[u8]> + ?Sized>(
        b: &T,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(b.as_ref()))
        } else {
            s.serialize_bytes(b.as_ref())
        }
    }

    /// Deserialises a byte string, or hex when the format is human-readable.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            hex::decode(text.as_bytes())
                .map_err(|_| serde::de::Error::custom("expected bytes as hex digits"))
        } else {
            Ok(serde_bytes::ByteBuf::deserialize(d)?.into_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_fields_are_hex_in_json_and_bytes_in_cbor() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct T {
            #[serde(with = "fixed_bytes")]
            h: [u8; 2],
            #[serde(with = "vec_bytes")]
            v: Vec<u8>,
        }
        let t = T {
            h: [0xab, 0x01],
            v: vec![0xff],
        };
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"{"h":"ab01","v":"ff"}"#);
        assert_eq!(serde_json::from_str::<T>(&json).unwrap(), t);
        assert!(serde_json::from_str::<T>(r#"{"h":"ab","v":"ff"}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"h":"zz01","v":"ff"}"#).is_err());
        let cbor = crate::cbor::to_vec(&t);
        // {"h": h'ab01', "v": h'ff'}: byte strings (major type 2), not arrays.
        assert_eq!(
            cbor,
            [0xa2, 0x61, b'h', 0x42, 0xab, 0x01, 0x61, b'v', 0x41, 0xff]
        );
    }

    #[test]
    fn remembered_keys_decode_as_fresh_ones_and_bad_keys_stay_bad() {
        let keys: Vec<SecretKey> = (0..600u32)
            .map(|i| {
                let mut seed = [7u8; 32];
                seed[..4].copy_from_slice(&i.to_be_bytes());
                SecretKey::from_seed(&seed)
            })
            .collect();
        // More keys than slots: every decode, remembered or evicted, gives the same key.
        for _ in 0..3 {
            for k in &keys {
                let pk = k.public();
                let again = PublicKey::from_bytes(*pk.as_bytes()).unwrap();
                assert_eq!(again, pk);
                assert_eq!(again.verifying_key(), pk.verifying_key());
                let msg = b"remembered";
                assert!(again.verify_strict(msg, &k.sign(msg)));
            }
        }
        // The identity point (small order) and a non-point are refused every time.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let not_a_point = (2u8..)
            .map(|y| {
                let mut b = [0u8; 32];
                b[0] = y;
                b
            })
            .find(|b| VerifyingKey::from_bytes(b).is_err())
            .unwrap();
        for _ in 0..2 {
            assert_eq!(PublicKey::from_bytes(identity), Err(KeyError::InvalidPoint));
            assert!(PublicKey::from_bytes(not_a_point).is_err());
        }
    }

    #[test]
    fn sign_and_verify() {
        let k = SecretKey::from_seed(&[7u8; 32]);
        let sig = k.sign(b"hello");
        assert!(k.public().verify_strict(b"hello", &sig));
        assert!(!k.public().verify_strict(b"hellp", &sig));
    }

    #[test]
    fn hex_round_trip_and_rejects_weak_points() {
        let k = SecretKey::from_seed(&[1u8; 32]).public();
        assert_eq!(PublicKey::from_hex(&k.to_hex()).unwrap(), k);
        assert!(PublicKey::from_hex("00").is_err());
        // The identity point is small-order: unusable as a key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(PublicKey::from_bytes(identity), Err(KeyError::InvalidPoint));
    }
}
