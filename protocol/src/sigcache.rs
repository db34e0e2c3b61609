//! A bounded memo of Ed25519 verifications that succeeded, for signatures a party sees again and
//! again: a caseworker's credential (on every query they send) and a holder's audit checkpoint
//! (shared by every response in one commit batch). A party may also sign through it
//! ([`SigCache::sign`]), so that its own signature coming back to it (a client's query in the
//! bundle it receives) is not verified again.
//!
//! Verification is a pure function of (key, message, signature), so remembering a success
//! changes no outcome: a hit is keyed by SHA-256 over the key, the signature and the whole
//! message, domain-separated, and a failure is never remembered. Each party keeps its own cache
//! (a node, a client); nothing here is global, so a benchmark with many nodes in one process
//! still pays each node's verification once per node.

use std::collections::HashSet;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::keys::{PublicKey, SecretKey};

/// Domain separation for cache keys.
const DOMAIN: &[u8] = b"throughgate\0sigcache\0";

/// The default number of remembered verifications (32 bytes each).
pub const DEFAULT_CAPACITY: usize = 16_384;

/// Remembered successful verifications, at most `capacity` (cleared when full).
#[derive(Debug)]
pub struct SigCache {
    seen: Mutex<HashSet<[u8; 32]>>,
    capacity: usize,
}

impl Default for SigCache {
    fn default() -> SigCache {
        SigCache::new(DEFAULT_CAPACITY)
    }
}

impl SigCache {
    /// A cache remembering at most `capacity` verifications.
    pub fn new(capacity: usize) -> SigCache {
        SigCache {
            seen: Mutex::new(HashSet::new()),
            capacity,
        }
    }

    /// Number of verifications remembered.
    pub fn len(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Verifies `signature` by `key` over `message` strictly, as [`PublicKey::verify_strict`],
    /// consulting and filling the cache.
    pub fn verify_strict(&self, key: &PublicKey, message: &[u8], signature: &[u8; 64]) -> bool {
        let id = cache_key(key, message, signature);
        if self.seen.lock().is_ok_and(|s| s.contains(&id)) {
            return true;
        }
        let ok = key.verify_strict(message, signature);
        if ok {
            self.remember(id);
        }
        ok
    }

    /// Signs `message` with `key` and remembers the signature as verified, so that this party
    /// does not verify its own signature when the same bytes come back to it (a client reading
    /// its query back in a passport bundle). Sound because a signature made here verifies
    /// strictly: Ed25519 signing is deterministic, and the public key of a secret key is never
    /// a small-order point. Different bytes are still a miss, verified in full.
    pub fn sign(&self, key: &SecretKey, message: &[u8]) -> [u8; 64] {
        let signature = key.sign(message);
        self.remember(cache_key(&key.public(), message, &signature));
        signature
    }

    fn remember(&self, id: [u8; 32]) {
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() >= self.capacity {
                seen.clear();
            }
            seen.insert(id);
        }
    }
}

/// Verifies through `cache` when there is one, directly otherwise.
pub fn verify_strict(
    cache: Option<&SigCache>,
    key: &PublicKey,
    message: &[u8],
    signature: &[u8; 64],
) -> bool {
    match cache {
        Some(c) => c.verify_strict(key, message, signature),
        None => key.verify_strict(message, signature),
    }
}

fn cache_key(key: &PublicKey, message: &[u8], signature: &[u8; 64]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(key.as_bytes());
    h.update(signature);
    h.update((message.len() as u64).to_be_bytes());
    h.update(message);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer;

    fn signed(msg: &[u8]) -> (PublicKey, [u8; 64]) {
        let k = SecretKey::from_seed(&[3; 32]);
        (k.public(), k.signing_key().sign(msg).to_bytes())
    }

    #[test]
    fn remembers_successes_only() {
        let cache = SigCache::new(8);
        let (key, sig) = signed(b"checkpoint");
        assert!(cache.verify_strict(&key, b"checkpoint", &sig));
        assert_eq!(cache.len(), 1);
        assert!(cache.verify_strict(&key, b"checkpoint", &sig));
        assert_eq!(cache.len(), 1);
        assert!(!cache.verify_strict(&key, b"checkpoinT", &sig));
        let mut bad = sig;
        bad[0] ^= 1;
        assert!(!cache.verify_strict(&key, b"checkpoint", &bad));
        assert_eq!(cache.len(), 1, "failures are not remembered");
    }

    #[test]
    fn a_hit_needs_the_same_key_message_and_signature() {
        let cache = SigCache::new(8);
        let (key, sig) = signed(b"one");
        assert!(cache.verify_strict(&key, b"one", &sig));
        let other = SecretKey::from_seed(&[4; 32]).public();
        assert!(!cache.verify_strict(&other, b"one", &sig));
        assert!(!cache.verify_strict(&key, b"two", &sig));
    }

    #[test]
    fn own_signatures_are_remembered_under_the_key_verification_looks_up() {
        let cache = SigCache::new(8);
        let k = SecretKey::from_seed(&[5; 32]);
        let sig = cache.sign(&k, b"query");
        assert_eq!(cache.len(), 1);
        assert!(k.public().verify_strict(b"query", &sig), "a real signature");
        // A hit adds nothing; a miss would have added a second entry.
        assert!(cache.verify_strict(&k.public(), b"query", &sig));
        assert_eq!(cache.len(), 1);
        assert!(!cache.verify_strict(&k.public(), b"querY", &sig));
        let mut bad = sig;
        bad[63] ^= 1;
        assert!(!cache.verify_strict(&k.public(), b"query", &bad));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn stays_within_capacity() {
        let cache = SigCache::new(3);
        for i in 0..10u8 {
            let msg = [i; 4];
            let (key, sig) = signed(&msg);
            assert!(cache.verify_strict(&key, &msg, &sig));
            assert!(cache.len() <= 3);
        }
    }
}
