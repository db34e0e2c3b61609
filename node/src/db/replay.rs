use throughgate_protocol::ids::QueryId;
use throughgate_protocol::time::Timestamp;

use super::{key, Db};
use crate::store::{StoreError, WriteBatch};

impl Db {
    /// Records a query id as seen until `expires_at`; returns false if it was already seen.
    pub fn mark_query_seen(&self, id: &QueryId, expires_at: Timestamp) -> Result<bool, StoreError> {
        self.store
            .insert_if_absent(&key(&["rpl/", id.as_str()]), &expires_at.0.to_be_bytes())
    }

    /// Forgets seen query ids that expired before `now` (they would be refused as expired
    /// anyway); returns how many were removed.
    pub fn prune_replay_cache(&self, now: Timestamp) -> Result<usize, StoreError> {
        let mut removed = 0;
        let mut start: Option<Vec<u8>> = None;
        loop {
            let page = self.store.scan(b"rpl/", start.as_deref(), 1000)?;
            let Some((last_key, _)) = page.last() else {
                break;
            };
            let mut next = last_key.clone();
            next.push(0);
            let mut b = WriteBatch::new();
            for (k, v) in &page {
                let exp = v.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0);
                if exp < now.0 {
                    b.delete(k.clone());
                }
            }
            removed += b.len();
            if !b.is_empty() {
                self.store.apply(b)?;
            }
            if page.len() < 1000 {
                break;
            }
            start = Some(next);
        }
        Ok(removed)
    }
}
