//! The durable outbox: consent grants and revocations are queued in the same atomic write as
//! the consent change itself, then delivered to every recipient with retries and backoff until
//! each answers with a signed acknowledgement. Items to one recipient go strictly in queue
//! order (a revocation never overtakes its grant). Nothing is lost across restarts: the queue
//! lives in the store. Replicas sharing a store take turns per recipient through a leased
//! claim, so each item goes out from one replica. Items are queued through
//! [`crate::queue::Outbox`], which wakes this worker.
//!
//! The worker ([`run`]) keeps the whole node state and hands each pass a [`Courier`]: the parts
//! delivering uses, and this node's own receiving handlers ([`Receive`]) for the items it
//! queued for itself.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use throughgate_protocol::credential::CredentialAck;
use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::messages::{Ack, AckOutcome, DeliveryState};

use futures::future::{BoxFuture, FutureExt};

use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::db::{Db, OutboxItem, OutboxPayload};
use crate::metrics::Metrics;
use crate::peer::consent_in::ConsentIn;
use crate::peers::Peers;
use crate::state::NodeState;
use crate::store::StoreError;
use crate::trust::Trust;

/// What delivering the queue uses of the node, and nothing else.
#[derive(Clone, Copy)]
pub struct Courier<'a> {
    /// This agency (items addressed to it are received here, not sent).
    pub agency: &'a AgencyId,
    /// The request timeout.
    pub config: &'a NodeConfig,
    /// The queue, its claims and delivery states.
    pub db: &'a Db,
    /// The clock.
    pub clock: &'a Clock,
    /// Attempts.
    pub metrics: &'a Metrics,
    /// Connections to recipients.
    pub peers: &'a Peers,
    /// The manifest: recipients' node keys.
    pub trust: &'a Trust,
    /// Receives items this node queued for itself.
    pub here: &'a dyn Receive,
}

impl<'a> Courier<'a> {
    /// The parts of `state` that delivering the queue uses; items for this node itself are
    /// received by its own handlers.
    pub fn of(state: &'a NodeState) -> Self {
        Courier {
            agency: &state.agency,
            config: &state.config,
            db: &state.db,
            clock: &state.clock,
            metrics: &state.metrics,
            peers: &state.peers,
            trust: &state.trust,
            here: state,
        }
    }
}

/// Receives an item this node queued for itself, as the handler of its kind would receive it
/// from the recording agency, and gives the signed answer.
pub trait Receive: Send + Sync {
    /// The answer to `payload`, delivered to this node by itself.
    fn receive<'a>(&'a self, payload: &'a OutboxPayload) -> BoxFuture<'a, Envelope>;
}

impl Receive for NodeState {
    fn receive<'a>(&'a self, payload: &'a OutboxPayload) -> BoxFuture<'a, Envelope> {
        async move {
            match payload {
                OutboxPayload::Grant { envelope, .. } => {
                    crate::peer::consent_in::grant(&ConsentIn::of(self), &self.agency, envelope)
                        .await
                }
                OutboxPayload::Revoke { envelope, .. } => {
                    crate::peer::consent_in::revoke(&ConsentIn::of(self), &self.agency, envelope)
                        .await
                }
                OutboxPayload::CredentialRevoke { envelope, .. } => {
                    crate::staff::receive_revocation(
                        &crate::staff::Staffing::of(self),
                        &self.agency,
                        envelope,
                    )
                    .await
                }
            }
        }
        .boxed()
    }
}

/// Longest wait between attempts, in seconds.
pub const MAX_BACKOFF_SECS: u64 = 30;

/// Seconds a replica's claim on a recipient's deliveries outlasts the request timeout.
pub const LEASE_MARGIN_SECS: u64 = 30;

/// Runs the delivery loop forever.
pub async fn run(state: Arc<NodeState>) {
    loop {
        if let Err(e) = deliver_due(&Courier::of(&state)).await {
            tracing::error!(error = %e, "outbox pass failed");
        }
        tokio::select! {
            () = state.outbox.wait() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One pass: delivers every item that is due and not blocked behind an earlier item to the
/// same recipient. Recipients are served concurrently.
pub async fn deliver_due(node: &Courier<'_>) -> Result<(), StoreError> {
    let now = node.clock.now();
    let items = node.db.outbox_items(10_000)?;
    let mut blocked = HashSet::new();
    let mut chains: Vec<Vec<OutboxItem>> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for item in items {
        let r = item.recipient.to_string();
        if blocked.contains(&r) {
            continue;
        }
        if item.next_attempt > now {
            blocked.insert(r);
            continue;
        }
        let slot = *index.entry(r).or_insert_with(|| {
            chains.push(Vec::new());
            chains.len() - 1
        });
        if let Some(chain) = chains.get_mut(slot) {
            chain.push(item);
        }
    }
    // A claim outlasts one attempt (the request timeout) with room for clock skew between
    // replicas; it is renewed before each item.
    let lease_secs = node
        .config
        .limits
        .request_timeout()
        .as_secs()
        .saturating_add(LEASE_MARGIN_SECS);
    let tasks = chains.into_iter().map(|chain| {
        let st = *node;
        async move {
            let Some(recipient) = chain.first().map(|i| i.recipient.clone()) else {
                return;
            };
            for item in chain {
                match st.db.outbox_claim(&recipient, st.clock.now(), lease_secs) {
                    Ok(true) => {}
                    // Another replica is delivering to this recipient.
                    Ok(false) => return,
                    Err(e) => {
                        tracing::error!(error = %e, "could not claim outbox deliveries");
                        return;
                    }
                }
                // The queue was read before the claim: another replica may have delivered
                // this item, or retried it, meanwhile.
                match st.db.outbox_unchanged(&item) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "could not read the outbox");
                        break;
                    }
                }
                if !attempt(&st, &item).await {
                    break;
                }
            }
            if let Err(e) = st.db.outbox_release(&recipient) {
                tracing::error!(error = %e, "could not release outbox claim");
            }
        }
    });
    futures::future::join_all(tasks).await;
    Ok(())
}

/// Tries one item; returns whether it left the queue.
async fn attempt(node: &Courier<'_>, item: &OutboxItem) -> bool {
    let now = node.clock.now();
    node.metrics.outbox_attempts.inc();
    match deliver(node, item).await {
        Ok((delivery, ack)) => {
            if let Err(e) = node.db.outbox_done(item, delivery, ack, now) {
                tracing::error!(error = %e, "could not record delivery");
                return false;
            }
            tracing::info!(what = %item.payload.describe(), recipient = %item.recipient, node = delivery.as_str(), "delivered");
            true
        }
        Err(e) => {
            let backoff = 1u64
                .checked_shl(item.attempts)
                .unwrap_or(MAX_BACKOFF_SECS)
                .min(MAX_BACKOFF_SECS);
            tracing::info!(what = %item.payload.describe(), recipient = %item.recipient, attempts = item.attempts + 1, error = %e, "delivery failed; will retry");
            if let Err(e) = node.db.outbox_retry(item, &e, now.plus_secs(backoff)) {
                tracing::error!(error = %e, "could not record delivery failure");
            }
            false
        }
    }
}

async fn deliver(
    node: &Courier<'_>,
    item: &OutboxItem,
) -> Result<(DeliveryState, Envelope), String> {
    let env = item.payload.envelope();
    let answer = if item.recipient == *node.agency {
        node.here.receive(&item.payload).await
    } else {
        node.peers
            .request(&item.recipient, env, node.config.limits.request_timeout())
            .await
            .map_err(|e| e.to_string())?
    };
    let manifest = node.trust.manifest().ok_or("no manifest")?;
    let member = manifest
        .member(&item.recipient)
        .ok_or("recipient left the federation")?;
    answer
        .verify_by_any(SignerRole::Node, &member.node_keys)
        .map_err(|e| format!("acknowledgement signature: {e}"))?;
    if let OutboxPayload::CredentialRevoke { person_id, .. } = &item.payload {
        let ack: CredentialAck = answer.open().map_err(|e| format!("acknowledgement: {e}"))?;
        if &ack.person_id != person_id || ack.agency != item.recipient {
            return Err("acknowledgement is for something else".into());
        }
        return Ok((DeliveryState::Delivered, answer));
    }
    let ack: Ack = answer.open().map_err(|e| format!("acknowledgement: {e}"))?;
    if Some(&ack.consent_id) != item.payload.consent_id()
        || ack.agency != item.recipient
        || Some(ack.subject) != item.payload.subject()
    {
        return Err("acknowledgement is for something else".into());
    }
    let delivery = if ack.outcome == AckOutcome::Rejected {
        DeliveryState::Rejected
    } else {
        DeliveryState::Delivered
    };
    Ok((delivery, answer))
}
