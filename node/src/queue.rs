//! The outbox's queue: what handlers use to queue deliveries (stored, then the delivery worker
//! in the `outbox` module woken). Apart from the worker, so that the node's state can hold it
//! without depending on delivery.

use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::time::Timestamp;
use tokio::sync::Notify;

use crate::db::{Db, OutboxItem, OutboxPayload};
use crate::store::{StoreError, WriteBatch};

/// The queue of deliveries and the wake-up of the worker that delivers them. Queueing goes
/// through [`Outbox::enqueue`], which wakes the worker once the items are stored, so nothing
/// queued waits for the worker's next timed pass.
#[derive(Debug)]
pub struct Outbox {
    db: Db,
    wake: Notify,
}

impl Outbox {
    /// An outbox whose queue lives in `db`.
    pub fn new(db: Db) -> Outbox {
        Outbox {
            db,
            wake: Notify::new(),
        }
    }

    /// Stores `items` in one atomic write together with `writes` (the change that caused
    /// them), then wakes the worker. Returns the items as queued.
    pub fn enqueue(
        &self,
        items: Vec<(AgencyId, OutboxPayload)>,
        writes: WriteBatch,
        now: Timestamp,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let queued = self.db.enqueue(items, writes, now)?;
        self.wake.notify_one();
        Ok(queued)
    }

    /// Wakes the worker without queueing anything: an item already queued may be due sooner
    /// than its recorded retry time (a peer came back, or a test moved the clock).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Completes once something has been queued (or [`Outbox::wake`] called) since the last
    /// wait completed; a wake-up given while nobody waits is kept for the next wait.
    pub fn wait(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use throughgate_protocol::envelope::{Envelope, MessageKind, SignerRole};
    use throughgate_protocol::ids::{AgencyId, PersonId};
    use throughgate_protocol::keys::SecretKey;
    use throughgate_protocol::time::Timestamp;

    use super::Outbox;
    use crate::db::{Db, OutboxPayload};
    use crate::store::{MemoryStore, WriteBatch};

    fn payload(n: u32) -> (AgencyId, OutboxPayload) {
        let key = SecretKey::from_seed(&[7; 32]);
        (
            AgencyId::new("probation-nw").unwrap(),
            OutboxPayload::CredentialRevoke {
                person_id: PersonId::new(format!("cw-{n}")).unwrap(),
                envelope: Envelope::seal_bytes(
                    MessageKind::CredentialRevoke,
                    vec![0],
                    &[(SignerRole::Node, &key)],
                ),
            },
        )
    }

    #[tokio::test]
    async fn enqueue_stores_the_items_and_wakes_a_waiting_worker() {
        let db = Db::new(Arc::new(MemoryStore::new()));
        let outbox = Arc::new(Outbox::new(db.clone()));
        let (parked_tx, parked_rx) = tokio::sync::oneshot::channel();
        let worker = tokio::spawn({
            let outbox = outbox.clone();
            async move {
                let woken = outbox.wait();
                tokio::pin!(woken);
                // Registered as a waiter before the enqueue below can run.
                woken.as_mut().enable();
                let _ = parked_tx.send(());
                woken.await;
                // What woke the worker is already stored.
                db.outbox_items(10).unwrap().len()
            }
        });
        parked_rx.await.unwrap();
        outbox
            .enqueue(vec![payload(1)], WriteBatch::new(), Timestamp(1))
            .unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(10), worker)
            .await
            .expect("the enqueue woke the worker")
            .unwrap();
        assert_eq!(seen, 1);
    }

    #[tokio::test]
    async fn a_wake_given_before_the_worker_waits_is_kept() {
        let outbox = Outbox::new(Db::new(Arc::new(MemoryStore::new())));
        outbox
            .enqueue(vec![payload(1)], WriteBatch::new(), Timestamp(1))
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), outbox.wait())
            .await
            .expect("the earlier enqueue's wake-up was kept");
    }
}
