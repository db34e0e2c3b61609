//! Token buckets kept in the store, so that replicas sharing it share each allowance (a
//! caseworker's hourly consent recordings, say) instead of granting it once per replica.

use super::{key, Db};
use crate::store::{StoreError, WriteBatch};

/// Attempts at one bucket before giving up under contention (then the request is refused).
const ATTEMPTS: usize = 16;

impl Db {
    /// Takes one token from the bucket `scope`, which refills at `rate` tokens a second up to
    /// `burst`, at time `now_ms` (milliseconds since the epoch). Returns whether a token was
    /// taken. Read and written with [`Store::apply_if`](crate::store::Store::apply_if), so
    /// replicas taking tokens at once never both spend the last one; a bucket that keeps
    /// changing under this caller refuses rather than waits.
    pub fn take_token(
        &self,
        scope: &str,
        rate: f64,
        burst: f64,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let k = key(&["alw/", scope]);
        for _ in 0..ATTEMPTS {
            let stored = self.store.get(&k)?;
            let (tokens, last) = stored
                .as_deref()
                .and_then(decode_bucket)
                .unwrap_or((burst, now_ms));
            #[allow(clippy::cast_precision_loss)] // milliseconds: far below 2^52
            let elapsed = now_ms.saturating_sub(last) as f64 / 1000.0;
            let tokens = (tokens + elapsed * rate).min(burst);
            if tokens < 1.0 {
                return Ok(false);
            }
            let mut b = WriteBatch::new();
            b.put(k.clone(), encode_bucket(tokens - 1.0, now_ms.max(last)));
            if self.store.apply_if(&k, stored.as_deref(), b)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn encode_bucket(tokens: f64, last_ms: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&tokens.to_be_bytes());
    v.extend_from_slice(&last_ms.to_be_bytes());
    v
}

fn decode_bucket(v: &[u8]) -> Option<(f64, u64)> {
    let tokens = f64::from_be_bytes(v.get(..8)?.try_into().ok()?);
    let last = u64::from_be_bytes(v.get(8..16)?.try_into().ok()?);
    (v.len() == 16 && tokens.is_finite()).then_some((tokens, last))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn a_bucket_spends_its_burst_then_refills_at_its_rate() {
        let db = Db::new(Arc::new(MemoryStore::new()));
        let t = 1_000_000;
        assert!(db.take_token("cw", 1.0, 2.0, t).unwrap());
        assert!(db.take_token("cw", 1.0, 2.0, t).unwrap());
        assert!(!db.take_token("cw", 1.0, 2.0, t).unwrap());
        assert!(
            db.take_token("other", 1.0, 2.0, t).unwrap(),
            "buckets are apart"
        );
        assert!(!db.take_token("cw", 1.0, 2.0, t + 500).unwrap());
        assert!(db.take_token("cw", 1.0, 2.0, t + 1000).unwrap());
        // A clock that steps back refills nothing.
        assert!(!db.take_token("cw", 1.0, 2.0, t).unwrap());
    }

    #[test]
    fn a_damaged_bucket_starts_full_rather_than_failing() {
        let db = Db::new(Arc::new(MemoryStore::new()));
        let mut b = WriteBatch::new();
        b.put(key(&["alw/", "cw"]), b"junk".to_vec());
        db.store.apply(b).unwrap();
        assert!(db.take_token("cw", 1.0, 1.0, 5).unwrap());
        assert!(!db.take_token("cw", 1.0, 1.0, 5).unwrap());
    }
}
