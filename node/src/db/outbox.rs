use serde::{Deserialize, Serialize};
use throughgate_protocol::envelope::Envelope;
use throughgate_protocol::ids::{AgencyId, ConsentId, PersonId};
use throughgate_protocol::messages::{AckSubject, ConsentDelivery, DeliveryState};
use throughgate_protocol::time::Timestamp;

use super::{decode, encode, key, Db};
use crate::store::{StoreError, WriteBatch};

/// What an outbox item carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxPayload {
    /// A signed `consent_grant` envelope for one recipient.
    Grant {
        /// The consent.
        consent_id: ConsentId,
        /// The signed grant.
        envelope: Envelope,
    },
    /// A signed `consent_revoke` envelope.
    Revoke {
        /// The consent.
        consent_id: ConsentId,
        /// The signed revocation.
        envelope: Envelope,
    },
    /// A signed `credential_revoke` envelope.
    CredentialRevoke {
        /// The member of staff.
        person_id: PersonId,
        /// The signed revocation.
        envelope: Envelope,
    },
}

impl OutboxPayload {
    /// The signed message to deliver.
    pub fn envelope(&self) -> &Envelope {
        match self {
            OutboxPayload::Grant { envelope, .. }
            | OutboxPayload::Revoke { envelope, .. }
            | OutboxPayload::CredentialRevoke { envelope, .. } => envelope,
        }
    }

    /// The consent concerned, for consent messages.
    pub fn consent_id(&self) -> Option<&ConsentId> {
        match self {
            OutboxPayload::Grant { consent_id, .. } | OutboxPayload::Revoke { consent_id, .. } => {
                Some(consent_id)
            }
            OutboxPayload::CredentialRevoke { .. } => None,
        }
    }

    /// Grant or revocation, for consent messages.
    pub fn subject(&self) -> Option<AckSubject> {
        match self {
            OutboxPayload::Grant { .. } => Some(AckSubject::Grant),
            OutboxPayload::Revoke { .. } => Some(AckSubject::Revoke),
            OutboxPayload::CredentialRevoke { .. } => None,
        }
    }

    /// A short description for logs (ids only).
    pub fn describe(&self) -> String {
        match self {
            OutboxPayload::Grant { consent_id, .. } => format!("grant of {consent_id}"),
            OutboxPayload::Revoke { consent_id, .. } => format!("revocation of {consent_id}"),
            OutboxPayload::CredentialRevoke { person_id, .. } => {
                format!("credential revocation of {person_id}")
            }
        }
    }
}

/// One pending delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItem {
    /// Sequence number (the key).
    pub seq: u64,
    /// The recipient.
    pub recipient: AgencyId,
    /// What to deliver.
    pub payload: OutboxPayload,
    /// Attempts so far.
    pub attempts: u32,
    /// Not before this instant (backoff).
    pub next_attempt: Timestamp,
    /// When it was queued.
    pub queued_at: Timestamp,
    /// The last failure.
    pub last_error: Option<String>,
}

fn outbox_key(seq: u64) -> Vec<u8> {
    key(&["obx/", &format!("{seq:020}")])
}

fn delivery_key(item: &OutboxItem) -> Option<Vec<u8>> {
    let consent = item.payload.consent_id()?;
    let s = match item.payload.subject()? {
        AckSubject::Grant => "grant",
        AckSubject::Revoke => "revoke",
    };
    Some(key(&[
        "dlv/",
        consent.as_str(),
        "/",
        item.recipient.as_str(),
        "/",
        s,
    ]))
}

fn lease_key(recipient: &AgencyId) -> Vec<u8> {
    key(&["obl/", recipient.as_str()])
}

/// A replica's claim on the deliveries to one recipient: which process holds it and until when
/// (Unix seconds), stored as `{holder}\0{until}`.
fn decode_lease(value: &[u8]) -> Option<(&[u8], u64)> {
    let split = value.iter().position(|b| *b == 0)?;
    let (holder, until) = (value.get(..split)?, value.get(split + 1..)?);
    let until = std::str::from_utf8(until).ok()?.parse().ok()?;
    Some((holder, until))
}

/// The next outbox sequence number to give (8 bytes, big-endian). Outside `obx/`, so scans of
/// the queue never see it.
pub const OUTBOX_SEQ: &[u8] = b"obx-seq";

impl Db {
    /// The next free outbox sequence number after the last queued item.
    fn next_outbox_seq(&self) -> Result<u64, StoreError> {
        Ok(match self.store.last(b"obx/")? {
            Some((k, _)) => String::from_utf8_lossy(k.get(4..).unwrap_or_default())
                .parse::<u64>()
                .map(|n| n + 1)
                .unwrap_or(0),
            None => 0,
        })
    }

    /// Queues deliveries (and, for consent messages, records them as pending), atomically with
    /// `extra` writes (e.g. the consent itself), then flushes. Returns the queued items.
    ///
    /// Sequence numbers come from the counter stored under `obx-seq`, read afresh and advanced
    /// with [`Store::apply_if`](crate::store::Store::apply_if) in the same batch as the items,
    /// so replicas sharing a store never give two items one number (which would overwrite one).
    pub fn enqueue(
        &self,
        items: Vec<(AgencyId, OutboxPayload)>,
        extra: WriteBatch,
        now: Timestamp,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        // Serialises this process's enqueues, so they do not race each other for the counter.
        // A poisoned lock only means another enqueue panicked; it guards no data.
        let _one = self
            .outbox_seq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            let stored = self.store.get(OUTBOX_SEQ)?;
            let first = match &stored {
                Some(v) => u64::from_be_bytes(v.as_slice().try_into().map_err(|_| {
                    StoreError::Corrupt {
                        what: "outbox sequence counter",
                        key: String::from_utf8_lossy(OUTBOX_SEQ).into_owned(),
                        detail: format!("{} bytes, not 8", v.len()),
                    }
                })?),
                // Stores written before the counter existed: after the last queued item.
                None => self.next_outbox_seq()?,
            };
            let mut batch = extra.clone();
            let mut out = Vec::new();
            for (seq, (recipient, payload)) in (first..).zip(items.iter().cloned()) {
                let item = OutboxItem {
                    seq,
                    recipient,
                    payload,
                    attempts: 0,
                    next_attempt: now,
                    queued_at: now,
                    last_error: None,
                };
                batch.put(outbox_key(seq), encode(&item));
                if let (Some(dk), Some(subject)) = (delivery_key(&item), item.payload.subject()) {
                    let d = ConsentDelivery {
                        agency: item.recipient.clone(),
                        subject,
                        state: DeliveryState::Pending,
                        since: now,
                        attempts: 0,
                        ack: None,
                        last_error: None,
                    };
                    batch.put(dk, encode(&d));
                }
                out.push(item);
            }
            // Numbers only move forward, even past items already delivered and deleted.
            let next = first.saturating_add(out.len() as u64);
            batch.put(OUTBOX_SEQ.to_vec(), next.to_be_bytes().to_vec());
            if self.store.apply_if(OUTBOX_SEQ, stored.as_deref(), batch)? {
                self.store.flush()?;
                return Ok(out);
            }
        }
    }

    /// Pending outbox items in queue order, at most `limit`.
    pub fn outbox_items(&self, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        self.store
            .scan(b"obx/", None, limit)?
            .into_iter()
            .map(|(k, v)| decode("outbox item", &k, &v))
            .collect()
    }

    /// Makes every pending item due at `now` (an operator's "retry now").
    pub fn outbox_retry_all(&self, now: Timestamp) -> Result<usize, StoreError> {
        let items = self.outbox_items(usize::MAX)?;
        let mut b = WriteBatch::new();
        for mut item in items {
            item.next_attempt = now;
            b.put(outbox_key(item.seq), encode(&item));
        }
        let n = b.len();
        self.store.apply(b)?;
        Ok(n)
    }

    /// Number of pending outbox items.
    pub fn outbox_len(&self) -> Result<u64, StoreError> {
        self.store.count(b"obx/")
    }

    /// Claims (or renews this process's claim on) the deliveries to `recipient` until
    /// `now + lease_secs`; returns whether this process holds the claim. Replicas sharing a
    /// store take turns per recipient, so each item is delivered by one replica, in queue order;
    /// a claim whose holder died lapses at its expiry. The claim is a compare-and-set on the
    /// lease key ([`Store::apply_if`](crate::store::Store::apply_if): on PostgreSQL a
    /// `SELECT … FOR UPDATE` of that row in the same transaction).
    pub fn outbox_claim(
        &self,
        recipient: &AgencyId,
        now: Timestamp,
        lease_secs: u64,
    ) -> Result<bool, StoreError> {
        let key = lease_key(recipient);
        let current = self.store.get(&key)?;
        if let Some((holder, until)) = current.as_deref().and_then(decode_lease) {
            if holder != self.instance.as_bytes() && until > now.0 {
                return Ok(false);
            }
        }
        let mut value = self.instance.as_bytes().to_vec();
        value.push(0);
        value.extend_from_slice(now.0.saturating_add(lease_secs).to_string().as_bytes());
        let mut b = WriteBatch::new();
        b.put(key.clone(), value);
        self.store.apply_if(&key, current.as_deref(), b)
    }

    /// Whether `item` is still queued exactly as read.
    pub fn outbox_unchanged(&self, item: &OutboxItem) -> Result<bool, StoreError> {
        Ok(self.store.get(&outbox_key(item.seq))?.as_deref() == Some(encode(item).as_slice()))
    }

    /// Gives up this process's claim on the deliveries to `recipient`, if it holds it.
    pub fn outbox_release(&self, recipient: &AgencyId) -> Result<(), StoreError> {
        let key = lease_key(recipient);
        let Some(current) = self.store.get(&key)? else {
            return Ok(());
        };
        if decode_lease(&current).is_some_and(|(holder, _)| holder == self.instance.as_bytes()) {
            let mut b = WriteBatch::new();
            b.delete(key.clone());
            self.store.apply_if(&key, Some(&current), b)?;
        }
        Ok(())
    }

    /// Records a failed attempt with its backoff, unless the item changed or left the queue
    /// meanwhile (another replica delivered it after this one's claim lapsed): a stale retry
    /// must never put a delivered item back.
    pub fn outbox_retry(
        &self,
        item: &OutboxItem,
        error: &str,
        next: Timestamp,
    ) -> Result<(), StoreError> {
        let original = encode(item);
        let mut item = item.clone();
        item.attempts = item.attempts.saturating_add(1);
        item.next_attempt = next;
        item.last_error = Some(error.chars().take(300).collect());
        let mut b = WriteBatch::new();
        b.put(outbox_key(item.seq), encode(&item));
        if let Some(dk) = delivery_key(&item) {
            if let Some(mut d) = self.get_decoded::<ConsentDelivery>("delivery", &dk)? {
                d.attempts = item.attempts;
                d.last_error = item.last_error.clone();
                b.put(dk, encode(&d));
            }
        }
        self.store
            .apply_if(&outbox_key(item.seq), Some(&original), b)
            .map(|_| ())
    }

    /// Records a delivery's acknowledgement and removes it from the outbox, atomically; flushes.
    pub fn outbox_done(
        &self,
        item: &OutboxItem,
        state: DeliveryState,
        ack: Envelope,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut b = WriteBatch::new();
        b.delete(outbox_key(item.seq));
        if let (Some(dk), Some(subject)) = (delivery_key(item), item.payload.subject()) {
            let d = ConsentDelivery {
                agency: item.recipient.clone(),
                subject,
                state,
                since: now,
                attempts: item.attempts.saturating_add(1),
                ack: Some(ack),
                last_error: None,
            };
            b.put(dk, encode(&d));
        }
        self.store.apply(b)?;
        self.store.flush()
    }

    /// The deliveries of one consent (grants and revocations), by recipient.
    pub fn deliveries(&self, consent: &ConsentId) -> Result<Vec<ConsentDelivery>, StoreError> {
        let prefix = key(&["dlv/", consent.as_str(), "/"]);
        self.store
            .scan(&prefix, None, usize::MAX)?
            .into_iter()
            .map(|(k, v)| decode("delivery", &k, &v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use throughgate_protocol::envelope::{Envelope, MessageKind, SignerRole};
    use throughgate_protocol::keys::SecretKey;

    use super::*;
    use crate::store::MemoryStore;

    fn revocation(n: usize, key: &SecretKey) -> OutboxPayload {
        OutboxPayload::CredentialRevoke {
            person_id: PersonId::new(format!("cw-{n:04}")).expect("valid id"),
            envelope: Envelope::seal_bytes(
                MessageKind::CredentialRevoke,
                vec![0],
                &[(SignerRole::Node, key)],
            ),
        }
    }

    #[test]
    fn concurrent_enqueues_never_share_a_sequence_number() {
        let db = Db::new(Arc::new(MemoryStore::new()));
        let key = Arc::new(SecretKey::from_seed(&[7; 32]));
        let to = AgencyId::new("nhs-leeds").expect("valid id");
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (db, key, to) = (db.clone(), key.clone(), to.clone());
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let item = (to.clone(), revocation(t * 100 + i, &key));
                        db.enqueue(vec![item], WriteBatch::new(), Timestamp(1))
                            .expect("enqueue");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let items = db.outbox_items(usize::MAX).expect("items");
        assert_eq!(items.len(), 200, "every queued item is kept");
        let mut people: Vec<_> = items
            .iter()
            .filter_map(|i| match &i.payload {
                OutboxPayload::CredentialRevoke { person_id, .. } => Some(person_id.clone()),
                _ => None,
            })
            .collect();
        people.sort();
        people.dedup();
        assert_eq!(people.len(), 200);
    }

    #[test]
    fn sequence_numbers_keep_rising_after_delivery() {
        let db = Db::new(Arc::new(MemoryStore::new()));
        let key = SecretKey::from_seed(&[7; 32]);
        let to = AgencyId::new("nhs-leeds").expect("valid id");
        let first = db
            .enqueue(
                vec![(to.clone(), revocation(1, &key))],
                WriteBatch::new(),
                Timestamp(1),
            )
            .expect("enqueue");
        let mut b = WriteBatch::new();
        b.delete(outbox_key(first[0].seq));
        db.store.apply(b).expect("delete");
        let second = db
            .enqueue(
                vec![(to, revocation(2, &key))],
                WriteBatch::new(),
                Timestamp(1),
            )
            .expect("enqueue");
        assert!(second[0].seq > first[0].seq);
    }
}
