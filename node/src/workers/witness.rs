//! Witnessing (C2SP tlog-witness semantics over our QUIC protocol): every node offers its newest
//! checkpoint, with a consistency proof from the last one each peer cosigned, to every peer;
//! each peer checks the signature and the consistency with what it last saw from that node,
//! stores the new checkpoint, and returns a cosignature. A checkpoint that contradicts one
//! already witnessed is refused and raised as an alarm: a node that rewrites or forks its log is
//! caught by its peers.
//!
//! The witness's side ([`handle_request`], alarms, [`reset_baseline`]) uses a [`Witness`]; the
//! log's side ([`offer`], [`record_cosigned`]) an [`Offering`]. The periodic task ([`run`]) and
//! a round of offers ([`offer_all`]) start from the whole node state and hand each step its
//! part.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use throughgate_protocol::audit::{origin, AuditEvent, ProofHash};
use throughgate_protocol::bundle::verify_link;
use throughgate_protocol::checkpoint::SignedCheckpoint;
use throughgate_protocol::envelope::{Envelope, SignerRole};
use throughgate_protocol::ids::AgencyId;
use throughgate_protocol::merkle::verify_consistency;
use throughgate_protocol::messages::{
    ErrorCode, Response, WitnessOutcome, WitnessRequest, WitnessResponse,
};
use throughgate_protocol::note::NoteSignature;
use throughgate_protocol::witness::{cosign_text, verify_cosignature};

use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::db::Db;
use crate::keyring::NodeKey;
use crate::metrics::Metrics;
use crate::peers::Peers;
use crate::state::NodeState;
use crate::trust::Trust;

/// What witnessing other members' logs uses of the node, and nothing else.
#[derive(Clone, Copy)]
pub struct Witness<'a> {
    /// This agency (the witness's name).
    pub agency: &'a AgencyId,
    /// Signs answers and cosignatures.
    pub key: &'a NodeKey,
    /// Checkpoints witnessed and standing alarms.
    pub db: &'a Db,
    /// The manifest: members and their node keys.
    pub trust: &'a Trust,
    /// The clock (the cosignature's time).
    pub clock: &'a Clock,
    /// The alarm counter.
    pub metrics: &'a Metrics,
    /// Where alarms and baseline resets are logged.
    pub audit: &'a AuditLog,
    /// Witness alarms raised since start.
    pub witness_alarms: &'a AtomicU64,
}

impl<'a> Witness<'a> {
    /// The parts of `state` that witnessing uses.
    pub fn of(state: &'a NodeState) -> Self {
        Witness {
            agency: &state.agency,
            key: &state.key,
            db: &state.db,
            trust: &state.trust,
            clock: &state.clock,
            metrics: &state.metrics,
            audit: &state.audit,
            witness_alarms: &state.witness_alarms,
        }
    }
}

/// What having this node's log witnessed uses of the node, and nothing else.
#[derive(Clone, Copy)]
pub struct Offering<'a> {
    /// This agency.
    pub agency: &'a AgencyId,
    /// Signs the offers.
    pub key: &'a NodeKey,
    /// The request timeout.
    pub config: &'a NodeConfig,
    /// Cosignatures collected and the checkpoints they sign.
    pub db: &'a Db,
    /// The manifest: members, their node keys and the witness threshold.
    pub trust: &'a Trust,
    /// The log offered: its newest checkpoint and consistency proofs.
    pub audit: &'a AuditLog,
    /// Connections to the witnesses.
    pub peers: &'a Peers,
}

impl<'a> Offering<'a> {
    /// The parts of `state` that offering its log for witnessing uses.
    pub fn of(state: &'a NodeState) -> Self {
        Offering {
            agency: &state.agency,
            key: &state.key,
            config: &state.config,
            db: &state.db,
            trust: &state.trust,
            audit: &state.audit,
            peers: &state.peers,
        }
    }
}

/// The name a node cosigns under: `throughgate/<agency>/witness`.
pub fn witness_name(agency: &AgencyId) -> String {
    throughgate_protocol::bundle::witness_name(agency)
}

fn answer(
    node: &Witness<'_>,
    outcome: WitnessOutcome,
    cosignature: Option<String>,
    known_size: Option<u64>,
    detail: Option<String>,
) -> Envelope {
    node.key.seal(&WitnessResponse {
        outcome,
        cosignature,
        known_size,
        detail,
    })
}

async fn alarm(node: &Witness<'_>, peer: &AgencyId, detail: String) -> Envelope {
    tracing::error!(peer = %peer, detail = %detail, "WITNESS ALARM: checkpoint inconsistent with one already witnessed");
    node.witness_alarms.fetch_add(1, Ordering::Relaxed);
    node.metrics.witness_alarms.inc();
    if let Err(e) = node.db.put_witness_alarm(peer, &detail) {
        tracing::error!(error = %e, "could not record the witness alarm");
    }
    if let Err(e) = node
        .audit
        .append(AuditEvent::WitnessAlarm {
            peer: peer.clone(),
            detail: detail.clone(),
        })
        .await
    {
        tracing::error!(error = %e, "could not log the witness alarm");
    }
    answer(node, WitnessOutcome::Refused, None, None, Some(detail))
}

/// Compares the checkpoint of a receipt `peer` gave this node (as a requester, in a verified
/// `response`) with what this node has witnessed of `peer`'s log, and returns the alarm's
/// words if `peer` shows requesters a log that is not an extension of (nor extended by) the
/// one its witnesses see.
///
/// The receipt's checkpoint R is compared with the newest checkpoint W witnessed here: the same
/// size needs the same root; otherwise the response's `requester_view` proof must link R to
/// the checkpoint of the size it names, which must be one this node cosigned (its root is
/// remembered), in whichever order the sizes come. A response without that proof is linked
/// through its cosigned checkpoint when that is of W's size. A `requester_view` naming a size
/// this node never cosigned is not compared (the holder's record of cosignatures lags by at
/// most a round when an answer is lost); the next receipt is.
pub fn receipt_view_conflict(db: &Db, peer: &AgencyId, response: &Response) -> Option<String> {
    let (w_size, text) = db.witnessed(peer).ok()??;
    let witnessed = SignedCheckpoint::parse(text.as_bytes()).ok()?;
    let shown = SignedCheckpoint::parse(response.receipt.checkpoint.as_bytes()).ok()?;
    let (w, r) = (witnessed.checkpoint(), shown.checkpoint());
    let split =
        |how: String| format!("{how}: the log shows requesters and witnesses different views");
    if w.size == r.size {
        return (w.root_hash != r.root_hash).then(|| {
            split(format!(
                "a receipt shows a different root for size {} than the checkpoint of that size this node witnessed",
                r.size
            ))
        });
    }
    if let Some(view) = &response.requester_view {
        let root = if view.size == w_size {
            Some(w.root_hash)
        } else {
            db.witnessed_root(peer, view.size).ok().flatten()
        };
        if let Some(root) = root {
            return verify_link((view.size, &root), (r.size, &r.root_hash), &view.consistency)
                .err()
                .map(|e| {
                    split(format!(
                        "a receipt's checkpoint of size {} is not consistent with the checkpoint of size {} this node witnessed ({e})",
                        r.size, view.size
                    ))
                });
        }
    }
    // Through the cosigned checkpoint, whose link to the receipt verify_response checked.
    let cosigned = response
        .witnessed
        .as_ref()
        .and_then(|c| SignedCheckpoint::parse(c.checkpoint.as_bytes()).ok())?;
    let c = cosigned.checkpoint();
    let root = if c.size == w_size {
        Some(w.root_hash)
    } else {
        db.witnessed_root(peer, c.size).ok().flatten()
    }?;
    (root != c.root_hash).then(|| {
        split(format!(
            "a response's cosigned checkpoint shows a different root for size {} than the checkpoint of that size this node witnessed",
            c.size
        ))
    })
}

/// As a log: after a round of offers, records the newest of our checkpoints any witness
/// cosigned, and the newest cosigned by the manifest's witness threshold, each as a signed note
/// carrying every cosignature line collected for it, for responses to carry (section 16.3).
pub fn record_cosigned(node: &Offering<'_>) -> Result<(), String> {
    let Some(manifest) = node.trust.manifest() else {
        return Ok(());
    };
    let lines: Vec<(AgencyId, u64, String)> = node
        .db
        .cosignatures()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|(w, _, _)| w != node.agency && manifest.member(w).is_some())
        .collect();
    let mut sizes: Vec<u64> = lines.iter().map(|(_, s, _)| *s).collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes.dedup();
    let threshold = manifest.witness_threshold as usize;
    let (known, known_quorum) = node.db.cosigned_notes().map_err(|e| e.to_string())?;
    for (i, size) in sizes.into_iter().enumerate() {
        let Some(text) = node.db.audit_checkpoint(size).map_err(|e| e.to_string())? else {
            continue;
        };
        let mut signed = SignedCheckpoint::parse(text.as_bytes()).map_err(|e| e.to_string())?;
        let mut count = 0usize;
        for (_, _, line) in lines.iter().filter(|(_, s, _)| *s == size) {
            if let Ok(sig) = NoteSignature::parse(line) {
                if signed.add_signature(sig).is_ok() {
                    count += 1;
                }
            }
        }
        let quorum = threshold > 0 && count >= threshold;
        let newer = |k: &Option<(u64, String)>| {
            k.as_ref()
                .is_none_or(|(s, t)| *s < size || (*s == size && t.len() < signed.to_text().len()))
        };
        if (i == 0 && newer(&known)) || (quorum && newer(&known_quorum)) {
            node.db
                .put_cosigned_note(size, &signed.to_text(), quorum)
                .map_err(|e| e.to_string())?;
        }
        if quorum || threshold == 0 {
            break;
        }
    }
    Ok(())
}

/// Raises a split-view alarm about `peer` (logged, counted, kept as the standing alarm).
pub async fn split_view_alarm(node: &Witness<'_>, peer: &AgencyId, detail: String) {
    let _ = alarm(node, peer, detail).await;
}

/// As a witness: handles `peer`'s offer of its newest checkpoint.
pub async fn handle_request(node: &Witness<'_>, peer: &AgencyId, env: &Envelope) -> Envelope {
    let manifest = match node.trust.check_peer_signed(peer, env) {
        Ok(m) => m,
        Err((code, why)) => return node.key.error(code, why),
    };
    let Some(member) = manifest.member(peer) else {
        return node
            .key
            .error(ErrorCode::Forbidden, "the sender is not a member");
    };
    let req: WitnessRequest = match env.open() {
        Ok(r) => r,
        Err(e) => return node.key.error(ErrorCode::Malformed, e.to_string()),
    };
    let log_origin = origin(peer);
    let signed = match SignedCheckpoint::parse(req.checkpoint.as_bytes()) {
        Ok(s) => s,
        Err(e) => {
            return answer(
                node,
                WitnessOutcome::Refused,
                None,
                None,
                Some(format!("checkpoint: {e}")),
            )
        }
    };
    if signed.checkpoint().origin != log_origin
        || !member
            .node_keys
            .iter()
            .any(|k| signed.verify(&log_origin, k).is_ok())
    {
        return answer(
            node,
            WitnessOutcome::Refused,
            None,
            None,
            Some("checkpoint is not signed by the sending node's log key".into()),
        );
    }
    let new = signed.checkpoint().clone();
    // Once a log has contradicted what was witnessed, it stays refused (and is not re-alarmed
    // on every offer) until a DPO or operator here resets the baseline.
    match node.db.witness_alarm(peer) {
        Ok(Some(standing)) => {
            let detail = format!(
                "in alarm ({standing}); a DPO or operator of this witness must reset the baseline"
            );
            return answer(node, WitnessOutcome::Refused, None, None, Some(detail));
        }
        Ok(None) => {}
        Err(e) => return node.key.error(ErrorCode::Internal, e.to_string()),
    }
    let known = match node.db.witnessed(peer) {
        Ok(k) => k,
        Err(e) => return node.key.error(ErrorCode::Internal, e.to_string()),
    };
    let known_size = known.as_ref().map_or(0, |(s, _)| *s);
    if req.old_size != known_size {
        return answer(node, WitnessOutcome::Conflict, None, Some(known_size), None);
    }
    if let Some((old_size, old_text)) = &known {
        let old = match SignedCheckpoint::parse(old_text.as_bytes()) {
            Ok(o) => o.checkpoint().clone(),
            Err(e) => {
                return node
                    .key
                    .error(ErrorCode::Internal, format!("stored checkpoint: {e}"))
            }
        };
        if new.size < *old_size {
            return alarm(
                node,
                peer,
                format!(
                    "offered size {} is smaller than the witnessed size {old_size}: the log shrank",
                    new.size
                ),
            )
            .await;
        }
        if new.size == *old_size {
            if new.root_hash != old.root_hash {
                return alarm(
                    node,
                    peer,
                    format!("two different roots for size {old_size}: the log forked"),
                )
                .await;
            }
        } else if let Err(e) = verify_consistency(
            *old_size,
            new.size,
            &req.consistency,
            &old.root_hash,
            &new.root_hash,
        ) {
            return alarm(node, peer, format!("size {} is not consistent with witnessed size {old_size} ({e}): the log was rewritten", new.size)).await;
        }
    }
    if let Err(e) = node.db.put_witnessed(peer, new.size, &req.checkpoint) {
        return node.key.error(ErrorCode::Internal, e.to_string());
    }
    let now = node.clock.now().0;
    let body = signed.note().text().to_owned();
    match cosign_text(&body, &witness_name(node.agency), &node.key.current(), now) {
        Ok(sig) => answer(
            node,
            WitnessOutcome::Cosigned,
            Some(sig.to_line()),
            None,
            None,
        ),
        Err(e) => node.key.error(ErrorCode::Internal, e.to_string()),
    }
}

/// The note text (the signed body, without signature lines) of a signed checkpoint.
fn note_text(checkpoint: &str) -> Option<String> {
    SignedCheckpoint::parse(checkpoint.as_bytes())
        .ok()
        .map(|s| s.note().text().to_owned())
}

/// As a log: offers our newest checkpoint to `peer`; returns the size it cosigned.
pub async fn offer(node: &Offering<'_>, peer: &AgencyId) -> Result<u64, String> {
    let Some((size, text)) = node.audit.latest() else {
        return Ok(0);
    };
    let manifest = node.trust.manifest().ok_or("no manifest")?;
    let member = manifest.member(peer).ok_or("not a member")?;
    let cosigned = node.db.cosignatures().map_err(|e| e.to_string())?;
    let mut old = cosigned
        .iter()
        .find(|(a, _, _)| a == peer)
        .map_or(0, |(_, s, _)| *s);
    if old == size {
        return Ok(size);
    }
    for _attempt in 0..2 {
        let consistency: Vec<ProofHash> = if old == 0 || old > size {
            Vec::new()
        } else {
            node.audit
                .consistency_proof(old, size)
                .map_err(|e| e.to_string())?
        };
        let req = WitnessRequest {
            old_size: old,
            consistency,
            checkpoint: text.clone(),
        };
        let answer = node
            .peers
            .request(
                peer,
                &node.key.seal(&req),
                node.config.limits.request_timeout(),
            )
            .await
            .map_err(|e| e.to_string())?;
        answer
            .verify_by_any(SignerRole::Node, &member.node_keys)
            .map_err(|e| e.to_string())?;
        let resp: WitnessResponse = answer.open().map_err(|e| e.to_string())?;
        match resp.outcome {
            WitnessOutcome::Cosigned => {
                let line = resp.cosignature.ok_or("cosigned without a cosignature")?;
                let sig = NoteSignature::parse(&line).map_err(|e| e.to_string())?;
                let body = note_text(&text).ok_or("our own checkpoint does not parse")?;
                let name = witness_name(peer);
                let ok = member
                    .node_keys
                    .iter()
                    .any(|k| verify_cosignature(&body, &sig, &name, k).is_ok());
                if !ok {
                    return Err("the cosignature does not verify".into());
                }
                node.db
                    .put_cosignature(peer, size, &line)
                    .map_err(|e| e.to_string())?;
                return Ok(size);
            }
            WitnessOutcome::Conflict => {
                old = resp.known_size.unwrap_or(0);
            }
            WitnessOutcome::Refused => {
                return Err(format!("refused: {}", resp.detail.unwrap_or_default()));
            }
        }
    }
    Err("witness kept reporting a conflict".into())
}

/// Offers our newest checkpoint to every peer, every `limits.witness_interval_secs`.
pub async fn run(state: Arc<NodeState>) {
    let period = Duration::from_secs(state.config.limits.witness_interval_secs);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tick.tick().await;
        offer_all(&state).await;
    }
}

/// One round of offers to every peer, concurrently.
pub async fn offer_all(state: &NodeState) {
    let node = Offering::of(state);
    let Some(manifest) = node.trust.manifest() else {
        return;
    };
    let peers: Vec<AgencyId> = manifest
        .members
        .iter()
        .map(|m| m.id.clone())
        .filter(|a| a != node.agency)
        .collect();
    let offers = peers
        .iter()
        .map(|p| async move { (p, offer(&node, p).await) });
    for (peer, r) in futures::future::join_all(offers).await {
        match r {
            Ok(size) => tracing::debug!(witness = %peer, size, "checkpoint witnessed"),
            Err(e) => tracing::info!(witness = %peer, error = %e, "checkpoint not witnessed"),
        }
    }
    if let Err(e) = record_cosigned(&node) {
        tracing::warn!(error = %e, "could not record the cosigned checkpoint");
    }
}

/// Why a witness baseline was not reset.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// The request names no peer this node witnesses, or a peer whose log raised no alarm.
    #[error("{0}")]
    Refused(String),
    /// Storage or logging failed.
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
}

impl From<crate::store::StoreError> for ResetError {
    fn from(e: crate::store::StoreError) -> ResetError {
        ResetError::Node(e.into())
    }
}

impl From<crate::audit::AuditError> for ResetError {
    fn from(e: crate::audit::AuditError) -> ResetError {
        ResetError::Node(e.into())
    }
}

/// As a witness: accepts `peer`'s next checkpoint as a new baseline (after a restore from backup
/// legitimately shortened its log, say). Only for a member whose log raised a witness alarm: a
/// healthy peer's baseline is what detects a fork, so it is never reset. Logged, with the alarm
/// that stood.
pub async fn reset_baseline(
    node: &Witness<'_>,
    peer: &AgencyId,
    by: &throughgate_protocol::ids::PersonId,
) -> Result<(), ResetError> {
    let members: Vec<String> = node
        .trust
        .manifest()
        .map(|m| {
            m.members
                .iter()
                .filter(|x| x.id != *node.agency)
                .map(|x| x.id.to_string())
                .collect()
        })
        .unwrap_or_default();
    if !members.iter().any(|m| m == peer.as_str()) {
        return Err(ResetError::Refused(format!(
            "{peer} is not another member of the federation; the members are: {}",
            members.join(", ")
        )));
    }
    let standing = node.db.witness_alarm(peer)?;
    if standing.is_none() {
        return Err(ResetError::Refused(format!(
            "{peer}'s log raised no witness alarm here, so its baseline is healthy and is kept \
             (it is what detects a rewritten log); reset only a peer named by an alarm in \
             `tg audit checkpoints`"
        )));
    }
    let had = node.db.witnessed(peer)?.map(|(s, _)| s);
    node.db.reset_witnessed(peer)?;
    node.audit
        .log_admin(
            Some(by),
            "witness_baseline_reset",
            format!(
                "{peer}'s log: witnessed size {} forgotten; alarm: {}",
                had.map_or_else(|| "none".to_owned(), |s| s.to_string()),
                standing.unwrap_or_else(|| "none".into())
            ),
        )
        .await?;
    tracing::warn!(peer = %peer, by = %by, "witness baseline reset");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use throughgate_protocol::audit::AuditEntry;

    use super::*;
    use crate::testing::{self, agency, Parts, HOLDER, REQUESTER};

    /// Offers `log`'s newest checkpoint to the holder as the requester, witnessed at `old_size`.
    async fn offer_to(parts: &Parts, log: &AuditLog, old_size: u64) -> WitnessResponse {
        let (_, checkpoint) = log.latest().unwrap();
        let req = testing::from_requester(&WitnessRequest {
            old_size,
            consistency: Vec::new(),
            checkpoint,
        });
        let answer = handle_request(&parts.witness(), &agency(REQUESTER), &req).await;
        answer
            .verify_by(SignerRole::Node, &parts.public_key())
            .unwrap();
        answer.open().unwrap()
    }

    #[tokio::test]
    async fn a_log_is_cosigned_then_a_fork_of_it_raises_a_logged_alarm() {
        let parts = Parts::new();
        let (log, fork) = (
            testing::requester_log(1).await,
            testing::requester_log(1).await,
        );
        let first = offer_to(&parts, &log, 0).await;
        assert_eq!(first.outcome, WitnessOutcome::Cosigned);
        let line = first.cosignature.unwrap();
        let body = note_text(&log.latest().unwrap().1).unwrap();
        verify_cosignature(
            &body,
            &NoteSignature::parse(&line).unwrap(),
            &witness_name(&agency(HOLDER)),
            &parts.public_key(),
        )
        .unwrap();
        // Another log of the same size under the same key: two roots for size 1.
        let forked = offer_to(&parts, &fork, 1).await;
        assert_eq!(forked.outcome, WitnessOutcome::Refused);
        assert!(forked.detail.unwrap().contains("forked"));
        assert_eq!(parts.witness_alarms.load(Ordering::Relaxed), 1);
        assert!(parts
            .db
            .witness_alarm(&agency(REQUESTER))
            .unwrap()
            .is_some());
        let logged = AuditEntry::from_bytes(&parts.db.audit_entry(0).unwrap().unwrap()).unwrap();
        assert!(
            matches!(&logged.event, AuditEvent::WitnessAlarm { peer, .. } if *peer == agency(REQUESTER))
        );
        // The first log, offered again, stays refused without a second alarm.
        let again = offer_to(&parts, &log, 1).await;
        assert_eq!(again.outcome, WitnessOutcome::Refused);
        assert_eq!(parts.witness_alarms.load(Ordering::Relaxed), 1);
    }
}
